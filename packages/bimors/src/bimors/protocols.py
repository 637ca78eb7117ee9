"""The three evaluation protocols of BiMoRS as data, their few-shot splits, and the aggregation of results
(spec §2 "Protocols as scripted", §3.5, §3.7, §4).

* **Base-to-new** — train on the base half of each of PatternNet, RSICD, RESISC45 and MLRSNet; evaluate
  on the base and on the new test classes. H = 2·B·N/(B+N) from the seed-averaged Base and New; the
  "Average" row averages Base and New across datasets first.
* **Cross-dataset** — train on PatternNet (all 38 classes); evaluate on the full test splits of RSICD,
  RESISC45 and MLRSNet with their own class names (and on the source's test split).
* **Single-source DG** — the same with PatternNetv2 → RSICDv2, RESISC45v2, MLRSNetv2 (one label space).

Every run is repeated with seeds 1, 2, 3 on 16 shots per class, sampled with Dassl's semantics
(:func:`rs_shared.data.scene_cls.few_shot`) **before** the base/new subsampling, so base-to-new and
cross-dataset runs of one dataset and seed share their shots. Shots are stored once as JSON beside the
dataset (``shots/``; ``split_few_shots/`` for RSICD) and read back on every later run. Test sets are
always the full test split (of the selected classes).

Metrics are fractions, as :mod:`rs_shared.metrics.classification` returns them: micro top-1 accuracy
(``accuracy``, the primary number), ``macro_accuracy`` and ``macro_f1``; tables print them ×100.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from rs_shared.data.scene_cls import SceneSplit, few_shot, load_shots, save_shots, subsample_classes
from rs_shared.metrics.classification import base_new_average, base_new_summary
from rs_shared.metrics.report import markdown_table, write_report

from .datasets import SceneDataset

SEEDS = (1, 2, 3)
NUM_SHOTS = 16
METRICS = ("accuracy", "macro_accuracy", "macro_f1")  # accuracy (micro top-1) is the primary metric
Subsample = Literal["all", "base", "new"]


@dataclass(frozen=True)
class Evaluation:
    """One test set of a run: ``dataset``'s full test split restricted to ``subsample`` classes.
    ``role`` is ``"base"``/``"new"`` (base-to-new) or ``"source"``/``"target"`` (transfer)."""

    dataset: str
    subsample: Subsample
    role: Literal["base", "new", "source", "target"]


@dataclass(frozen=True)
class TrainingRun:
    """Train on ``dataset`` restricted to ``subsample`` classes, then run ``evaluations``."""

    dataset: str
    subsample: Subsample
    evaluations: tuple[Evaluation, ...]


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    runs: tuple[TrainingRun, ...]
    seeds: tuple[int, ...] = SEEDS
    num_shots: int = NUM_SHOTS


BASE_TO_NEW_DATASETS = ("PatternNet", "RSICD", "RESISC45", "MLRSNet")
CROSS_DATASET_SOURCE, CROSS_DATASET_TARGETS = "PatternNet", ("RSICD", "RESISC45", "MLRSNet")
DG_SOURCE, DG_TARGETS = "PatternNetv2", ("RSICDv2", "RESISC45v2", "MLRSNetv2")


def _transfer(source: str, targets: Sequence[str]) -> tuple[TrainingRun, ...]:
    evaluations = (Evaluation(source, "all", "source"), *(Evaluation(t, "all", "target") for t in targets))
    return (TrainingRun(source, "all", evaluations),)


BASE_TO_NEW = Protocol(
    "base2new", "train on the base classes; evaluate on base and new test classes; H from seed-averaged Base/New",
    tuple(TrainingRun(d, "base", (Evaluation(d, "base", "base"), Evaluation(d, "new", "new")))
          for d in BASE_TO_NEW_DATASETS))
CROSS_DATASET = Protocol(
    "cross_dataset", "train on PatternNet (all classes); evaluate on the full test splits of RSICD, RESISC45, "
                     "MLRSNet", _transfer(CROSS_DATASET_SOURCE, CROSS_DATASET_TARGETS))
DOMAIN_GENERALIZATION = Protocol(
    "dg", "single-source DG: train on PatternNetv2 (16 classes); evaluate on RSICDv2, RESISC45v2, MLRSNetv2",
    _transfer(DG_SOURCE, DG_TARGETS))
PROTOCOLS = {p.name: p for p in (BASE_TO_NEW, CROSS_DATASET, DOMAIN_GENERALIZATION)}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise KeyError(f"unknown protocol {name!r}; expected one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


# --- splits ------------------------------------------------------------------------------------------------

def shots_file(dataset: SceneDataset, num_shots: int, seed: int) -> Path:
    """``<Dir>/<shots folder>/shot_<K>-seed_<S>.json`` (the folder is ``split_few_shots`` for RSICD)."""
    return dataset.directory / dataset.facts.shots_folder / f"shot_{num_shots}-seed_{seed}.json"


def fewshot_split(dataset: SceneDataset, num_shots: int = NUM_SHOTS, seed: int = 1,
                  shots_dir: str | os.PathLike | None = None) -> SceneSplit:
    """Dassl's few-shot split of ``dataset`` for ``(num_shots, seed)``: read from its shots JSON when that
    exists (checked against the split), else sampled and written there once. ``shots_dir`` replaces the
    dataset's folder by ``<shots_dir>/<Dir>/`` (e.g. for a read-only dataset copy); ``num_shots=0`` returns
    the full split."""
    if num_shots == 0:
        return dataset.split
    path = shots_file(dataset, num_shots, seed)
    if shots_dir is not None:
        path = Path(shots_dir) / dataset.directory.name / path.name
    if path.exists():
        return load_shots(path, dataset.split, num_shots=num_shots, seed=seed)
    shots = few_shot(dataset.split, num_shots, seed)
    save_shots(path, shots, num_shots=num_shots, seed=seed)
    return shots


def training_split(dataset: SceneDataset, subsample: Subsample, seed: int, num_shots: int = NUM_SHOTS,
                   shots_dir: str | os.PathLike | None = None) -> SceneSplit:
    """The split a run trains on: few-shot train/val (then test kept whole), restricted to ``subsample``
    classes and relabelled ``0..k-1`` (CoOp: sampling first, then base/new)."""
    return subsample_classes(fewshot_split(dataset, num_shots, seed, shots_dir), subsample)


def evaluation_split(dataset: SceneDataset, subsample: Subsample, seed: int, num_shots: int = NUM_SHOTS,
                     shots_dir: str | os.PathLike | None = None) -> SceneSplit:
    """The split an evaluation reads (its ``test`` list and ``classnames``): for ``"all"`` the whole split,
    for ``"base"``/``"new"`` the classes the base/new rule picks from the run's few-shot train labels."""
    if subsample == "all":
        return dataset.split
    return training_split(dataset, subsample, seed, num_shots, shots_dir)


# --- aggregation -------------------------------------------------------------------------------------------

def mean_over_seeds(per_seed: Mapping[int, Mapping[str, float]],
                    metrics: Sequence[str] = METRICS) -> dict[str, float | int]:
    """``{seed: {metric: value}}`` → ``{metric: mean, metric_std: population std, "n_seeds": S}``
    for each of ``metrics`` present in every seed."""
    if not per_seed:
        raise ValueError("no seeds given")
    out: dict[str, float | int] = {}
    for metric in metrics:
        values = [row.get(metric) for row in per_seed.values()]
        if any(v is None for v in values):
            continue
        out[metric] = float(np.mean(values))
        out[f"{metric}_std"] = float(np.std(values))
    out["n_seeds"] = len(per_seed)
    return out


def summarize_base_to_new(results: Mapping[str, Mapping[int, Mapping[str, Mapping[str, float]]]]
                          ) -> dict[str, list[dict]]:
    """Base-to-new table: ``{dataset: {seed: {"base": metrics, "new": metrics}}}`` → ``{"rows": [...]}``.

    Each row holds ``base``, ``new``, ``H`` (micro top-1, primary) and ``base_macro``, ``new_macro``,
    ``H_macro`` (macro accuracy), Base and New averaged over seeds before H
    (:func:`rs_shared.metrics.classification.base_new_summary`); a last ``"Average"`` row averages Base and
    New across datasets and then takes H (:func:`~rs_shared.metrics.classification.base_new_average`).
    """
    if not results:
        raise ValueError("no datasets given")
    rows: list[dict] = []
    for dataset, per_seed in results.items():
        row: dict = {"dataset": dataset}
        for metric, suffix in (("accuracy", ""), ("macro_accuracy", "_macro")):
            summary = base_new_summary({seed: {"base": _metric(r, "base", metric, dataset, seed),
                                               "new": _metric(r, "new", metric, dataset, seed)}
                                        for seed, r in per_seed.items()})
            row.update({f"base{suffix}": summary["base"], f"new{suffix}": summary["new"], f"H{suffix}": summary["H"]})
        row["n_seeds"] = len(per_seed)
        rows.append(row)
    average: dict = {"dataset": "Average"}
    for suffix in ("", "_macro"):
        avg = base_new_average({r["dataset"]: {"base": r[f"base{suffix}"], "new": r[f"new{suffix}"]} for r in rows})
        average.update({f"base{suffix}": avg["base"], f"new{suffix}": avg["new"], f"H{suffix}": avg["H"]})
    return {"rows": [*rows, average]}


def summarize_transfer(results: Mapping[str, Mapping[int, Mapping[str, float]]], source: str
                       ) -> dict[str, list[dict]]:
    """Cross-dataset / DG table: ``{dataset: {seed: metrics}}`` (source and targets) → ``{"rows": [...]}``,
    one row per dataset (role, seed means and stds of :data:`METRICS`) and a last ``"Average (targets)"``
    row: the mean over the targets of their seed means (CoCoOp convention, source excluded)."""
    if source not in results:
        raise ValueError(f"results have no entry for the source dataset {source!r}")
    rows = [{"dataset": name, "role": "source" if name == source else "target", **mean_over_seeds(per_seed)}
            for name, per_seed in results.items()]
    targets = [r for r in rows if r["role"] == "target"]
    if targets:
        rows.append({"dataset": "Average (targets)", "role": "average",
                     **{m: float(np.mean([r[m] for r in targets])) for m in METRICS if all(m in r for r in targets)}})
    return {"rows": rows}


def results_markdown(summary: Mapping[str, Sequence[Mapping]], digits: int = 2) -> str:
    """A Markdown table of a :func:`summarize_base_to_new` or :func:`summarize_transfer` result, in percent."""
    rows = summary["rows"]
    if rows and "H" in rows[0]:
        columns = ("dataset", "base", "new", "H", "base_macro", "new_macro", "H_macro")
    else:
        columns = ("dataset", "role", "accuracy", "accuracy_std", "macro_accuracy", "macro_f1")
    scaled = [{k: 100 * v if isinstance(v, float) else v for k, v in row.items()} for row in rows]
    return markdown_table(scaled, columns, digits=digits)


def write_results(path: str | os.PathLike, protocol: Protocol, summary: Mapping, *,
                  per_seed: Mapping | None = None, config: dict | None = None) -> dict:
    """Write the protocol's results as a report JSON (:func:`rs_shared.metrics.report.write_report`): the
    summary rows (fractions), the raw per-seed metrics and the protocol description."""
    return write_report(path, {"summary": summary, "per_seed": per_seed},
                        protocol=f"BiMoRS {protocol.name}: {protocol.description}; {protocol.num_shots} shots; "
                                 "micro top-1 accuracy over the full test split (Dassl), macro accuracy extra",
                        seeds=list(protocol.seeds), config=config)


def _metric(result: Mapping[str, Mapping[str, float]], part: str, metric: str, dataset: str, seed: int) -> float:
    try:
        return float(result[part][metric])
    except (KeyError, TypeError):
        raise ValueError(f"{dataset} seed {seed}: expected {{'base': {{...}}, 'new': {{...}}}} with "
                         f"{metric!r} in each, got {result!r}") from None
