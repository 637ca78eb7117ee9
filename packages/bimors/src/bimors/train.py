"""BiMoRS training on ``rs_shared.training`` and the protocol runner behind ``bimors-train`` (spec §2, §4, §6.2).

One configuration (:class:`BiMoRSTrainConfig`) describes a whole protocol: for every training run of the protocol
and every seed, the prompt learner is trained on 16 shots per class and evaluated; the seed-averaged results (micro
accuracy primary, macro accuracy extra, H for base-to-new) are written with a zero-shot CLIP baseline row.

The recipe (spec §2, the defaults here): SGD lr 0.009, momentum 0.9, weight decay 5e-4 on every trainable parameter
(Dassl), batch 4, 10 epochs; the learning rate changes once per epoch — epoch 0 a constant 1e-5, then a cosine with
T = 10 epochs whose counting restarts after the warm-up (``warmup_mode: constant``, ``interval: epoch``), so epochs
0–9 run at 1e-5, 0.009, 0.008780, …, 0.000859. Only ``requires_grad`` parameters (the prompt learner) are optimised.
Each seed seeds Python, NumPy and torch before its data and model are built.

Model selection (spec §2, §6.2): ``last`` (default) evaluates the last epoch everywhere. ``best_on_test`` is the
official behaviour and selects on the **test set**: after every epoch the run's own test split is scored and the best
epoch kept; the run's own evaluation (base classes, or the source) reports the last epoch, every other evaluation
(new classes, targets) the best one.

Layout of ``train.output_dir``::

    train_config.yaml, results.json, results.md
    <dataset>-<subsample>/seed<k>/            rs_shared.training run: log.jsonl, checkpoints/, final/
                                               (<dataset>: a dataset path's folder name)
        model/                                 save_pretrained + training.json (dataset, class names, …)
                                               + train_config.yaml + README.md (model card)
        best/                                  best_on_test only: the selected epoch (+ its model card)
        evaluations.json                       this seed's metrics

Each model card (:func:`rs_shared.hub.write_model_card`) lists the training data, the resolved configuration and,
for every evaluation that scored that directory, the ``bimors-eval`` command that reproduces it with its metrics.

Deviations from the official code: fp32 master weights (the official prompt learner is fp16 with plain SGD); the
caption projection is saved with the model.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from accelerate.utils import set_seed
from rs_shared.data.common import atomic_path, write_json
from rs_shared.hub import CardEvaluation, write_model_card
from rs_shared.training import (
    GroupRule,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
    build_accelerator,
    config_to_dict,
    save_config,
    train,
)

from safetensors.torch import save_file

from .configuration import BiMoRSConfig
from .data import open_caption_cache, protocol_dataset
from .datasets import (SYNTHETIC, SYNTHETIC_N, SceneDataset, dataset_dir, dataset_label, is_dataset_path,
                       load_dataset)
from .evaluation import evaluate
from .modeling import BiMoRSModel
from .pretrain import PretrainSettings
from .protocols import (
    NUM_SHOTS,
    SEEDS,
    Evaluation,
    Protocol,
    TrainingRun,
    get_protocol,
    results_markdown,
    summarize_base_to_new,
    summarize_transfer,
    write_results,
)

DEFAULT_SYNTHETIC_ROOT = "data/bimors"
TRAINING_INFO = "training.json"
RESULTS_JSON, RESULTS_MD = "results.json", "results.md"
METHODS = ("BiMoRS", "zero-shot CLIP")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class ModelSection:
    """the network and the CLIP weights it starts from"""

    preset: Literal["tiny", "paper"] = field(default="tiny", metadata=_help(
        "tiny: the toy CLIP of BiMoRSConfig.tiny() (CPU); paper: OpenAI CLIP ViT-B/16, the official network"))
    clip: str = field(default="", metadata=_help(
        "local open_clip checkpoint of the preset's CLIP (paper: required, e.g. open_clip_model.safetensors of "
        "timm/vit_base_patch16_clip_224.openai); tiny: '' = the contrastively pre-trained tiny CLIP (bimors.pretrain)"))
    random_clip: bool = field(default=False, metadata=_help(
        "tiny only: keep CLIP at random initialisation (smoke tests; zero-shot is then at chance)"))
    tiny_clip_steps: int = field(default=PretrainSettings.steps, metadata=_help(
        "tiny: contrastive pre-training steps of the tiny CLIP"))
    tiny_clip_pairs: int = field(default=PretrainSettings.num_pairs, metadata=_help(
        "tiny: synthetic image–caption pairs the tiny CLIP is pre-trained on"))
    tiny_clip_cache: str = field(default="", metadata=_help(
        "tiny: cache directory of the pre-trained tiny CLIP ('' = $BIMORS_CACHE_DIR or ~/.cache/rs-vlm/bimors)"))
    caption_proj: Literal["frozen", "trainable"] = field(default="frozen", metadata=_help(
        "frozen: the official random caption projection (parity) | trainable: the clean variant"))

    def validate(self) -> None:
        if self.random_clip and (self.preset != "tiny" or self.clip):
            raise ValueError("model.random_clip is for the tiny preset without model.clip")
        if self.tiny_clip_steps < 1 or self.tiny_clip_pairs < PretrainSettings.batch_size:
            raise ValueError(f"model.tiny_clip_steps must be >= 1 and model.tiny_clip_pairs >= "
                             f"{PretrainSettings.batch_size} (one batch), got {self.tiny_clip_steps}, "
                             f"{self.tiny_clip_pairs}")


@dataclass
class DataSection:
    """datasets, caption cache and few-shot sampling"""

    root: str = field(default="", metadata=_help(
        f"datasets root holding <Dir>/images and the split JSONs (spec §3.1); '' = {DEFAULT_SYNTHETIC_ROOT} for the "
        "synthetic dataset (generated there), required for the datasets of the spec, unused for a dataset given by path"))
    captions: str = field(default="", metadata=_help(
        "caption cache directory built by bimors-caption (required for a dataset given by path); '' = for the "
        "synthetic dataset, "
        "<root>/synthetic/captions-d<caption_dim> built from the generator's own captions"))
    shots: int = field(default=NUM_SHOTS, metadata=_help("training images per class (Dassl few-shot sampling)"))
    shots_dir: str = field(default="", metadata=_help("write/read the shots JSONs under SHOTS_DIR/<Dir>/ "
                                                      "('' = beside each dataset)"))
    clean_names: bool = field(default=False, metadata=_help("split glued class names (storagetanks → storage tanks)"))
    synthetic_n: int = field(default=SYNTHETIC_N, metadata=_help("images of the synthetic dataset (11 classes)"))
    eval_batch_size: int = field(default=100, metadata=_help("test batch size"))

    def validate(self) -> None:
        if self.shots < 1 or self.eval_batch_size < 1 or self.synthetic_n < 11:
            raise ValueError("data.shots and data.eval_batch_size must be >= 1 and data.synthetic_n >= 11")


@dataclass
class ProtocolSection:
    """the evaluation protocol (spec §2, §4): its datasets, seeds and model selection"""

    name: Literal["base2new", "cross_dataset", "dg"] = field(default="base2new", metadata=_help(
        "base2new: train on base classes, test base + new; cross_dataset: train on a source (all classes), test "
        "other datasets; dg: the same on the v2 datasets"))
    datasets: tuple[str, ...] = field(default=(), metadata=_help(
        "base2new: the datasets ('' = PatternNet, RSICD, RESISC45, MLRSNet; synthetic = the embedded dataset; a path "
        "= your own dataset folder (images/ + CoOp split JSON, e.g. from rs-data convert labels-to-scene) or its JSON)"))
    source: str = field(default="", metadata=_help("cross_dataset / dg: the training dataset ('' = the protocol's)"))
    targets: tuple[str, ...] = field(default=(), metadata=_help(
        "cross_dataset / dg: the evaluated datasets besides the source ('' = the protocol's)"))
    seeds: tuple[int, ...] = field(default=SEEDS, metadata=_help("one training run per seed"))
    model_selection: Literal["last", "best_on_test"] = field(default="last", metadata=_help(
        "last: the last epoch (clean) | best_on_test: the official test-set selection (other evaluations use the "
        "epoch with the best accuracy on the run's own test split)"))
    zero_shot: bool = field(default=True, metadata=_help("also evaluate zero-shot CLIP ('a photo of a {}.')"))

    def validate(self) -> None:
        if not self.seeds or any(s < 0 for s in self.seeds):
            raise ValueError(f"protocol.seeds must be one or more seeds >= 0, got {self.seeds}")
        if self.name == "base2new" and (self.source or self.targets):
            raise ValueError("protocol.source / protocol.targets are for cross_dataset and dg; base2new uses "
                             "protocol.datasets")
        if self.name != "base2new" and self.datasets:
            raise ValueError("protocol.datasets is for base2new; cross_dataset and dg use protocol.source/targets")


def _recipe() -> TrainConfig:
    """The spec §2 recipe (``vit_b16_c4_ep10_batch1_ctxv1``)."""
    return TrainConfig(
        output_dir="runs/bimors", epochs=10, batch_size=4, log_every=20, keep_last=1, tensorboard=False,
        optim=OptimConfig(name="sgd", lr=0.009, weight_decay=5e-4, momentum=0.9),
        schedule=ScheduleConfig(name="cosine", warmup_steps=1, warmup_start=1e-5, warmup_mode="constant",
                                interval="epoch"))


@dataclass
class BiMoRSTrainConfig:
    """A whole bimors-train run: the training loop, the model, the data and the protocol."""

    train: TrainConfig = field(default_factory=_recipe, metadata=_help(
        "training loop (train.seed is replaced by each of protocol.seeds)"))
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    protocol: ProtocolSection = field(default_factory=ProtocolSection)


# --- building blocks -------------------------------------------------------------------------------------------

def build_protocol(section: ProtocolSection) -> Protocol:
    """The protocol of spec §2 with the section's datasets and seeds."""
    base = get_protocol(section.name)
    if section.name == "base2new":
        names = section.datasets or tuple(run.dataset for run in base.runs)
        runs = tuple(TrainingRun(d, "base", (Evaluation(d, "base", "base"), Evaluation(d, "new", "new")))
                     for d in names)
    else:
        run = base.runs[0]
        source = section.source or run.dataset
        targets = section.targets or tuple(e.dataset for e in run.evaluations if e.role == "target")
        runs = (TrainingRun(source, "all", (Evaluation(source, "all", "source"),
                                            *(Evaluation(t, "all", "target") for t in targets if t != source))),)
    return Protocol(base.name, base.description, runs, tuple(section.seeds), base.num_shots)


def data_root(data: DataSection, dataset: str) -> Path:
    if data.root:
        return Path(data.root)
    if dataset == SYNTHETIC:
        return Path(DEFAULT_SYNTHETIC_ROOT)
    if is_dataset_path(dataset):
        return dataset_dir(None, dataset).parent
    raise FileNotFoundError(f"data.root is not set: the {dataset} dataset is read from <root>/{dataset}/ (images/ and "
                            f"the split JSON, spec §3.1); pass --data.root DIR")


def load(data: DataSection, name: str) -> SceneDataset:
    """Dataset ``name`` under the configured root (the synthetic one is generated when absent)."""
    return load_dataset(name, data_root(data, name), clean_names=data.clean_names, synthetic_n=data.synthetic_n)


def clip_checkpoint(section: ModelSection, output_dir: str | os.PathLike, progress: bool = True) -> Path:
    """The CLIP weights every seed starts from: ``model.clip``; else (tiny) the cached contrastively pre-trained tiny
    CLIP, or with ``random_clip`` one random tiny CLIP (seed 0) saved as ``<output_dir>/random_clip.safetensors`` so
    that all seeds and the zero-shot baseline share it. Raises a clear error for the paper preset without weights."""
    from .modeling import CLIP_CHECKPOINT_HINT

    if section.clip:
        if not Path(section.clip).is_file():
            raise FileNotFoundError(f"model.clip: {section.clip} is not a file; expected {CLIP_CHECKPOINT_HINT}")
        return Path(section.clip)
    if section.preset == "paper":
        raise FileNotFoundError(f"model.clip is not set: the paper preset starts from OpenAI CLIP ViT-B/16; expected "
                                f"{CLIP_CHECKPOINT_HINT}. Nothing is downloaded.")
    from .pretrain import build_tiny_clip, pretrained_tiny_clip

    if not section.random_clip:
        return pretrained_tiny_clip(section.tiny_clip_cache or None, steps=section.tiny_clip_steps,
                                    num_pairs=section.tiny_clip_pairs, progress=progress)
    path = Path(output_dir) / "random_clip.safetensors"
    if not path.is_file():
        clip = build_tiny_clip(0, model_config(section))
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, tmp)
    return path


def model_config(section: ModelSection) -> BiMoRSConfig:
    preset = BiMoRSConfig.tiny if section.preset == "tiny" else BiMoRSConfig.paper
    return preset(caption_proj=section.caption_proj)


def build_model(section: ModelSection, clip: Path) -> BiMoRSModel:
    """A fresh BiMoRS around the CLIP weights of ``clip``; the prompt learner draws from torch's RNG."""
    return BiMoRSModel.from_clip(clip, model_config(section))


def image_size(model: BiMoRSModel) -> int:
    return model.clip.visual.image_size[0]


def param_groups(weight_decay: float) -> list[GroupRule]:
    """Dassl's SGD: every trainable parameter decays (biases, LayerNorms and ctx included)."""
    return [GroupRule(r"", weight_decay=weight_decay)]


def save_model(model: BiMoRSModel, directory: Path, cfg: BiMoRSTrainConfig, info: dict[str, Any]) -> Path:
    """``save_pretrained`` + ``training.json`` (``info``: dataset, class names, seed, …) + ``train_config.yaml``."""
    model.save_pretrained(directory)
    write_json(directory / TRAINING_INFO, info, indent=2)
    save_config(directory / "train_config.yaml", cfg)
    return directory


def read_training_info(model_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``training.json`` of a model directory written by ``bimors-train``."""
    path = Path(model_dir) / TRAINING_INFO
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {model_dir} is not a model directory written by bimors-train")
    return json.loads(path.read_text(encoding="utf-8"))


class _KeepBest:
    """best_on_test: saves ``<run>/best`` whenever the accuracy on the run's own test split improves (Dassl: ``>``)."""

    def __init__(self, directory: Path, save):
        self.directory, self.save = directory, save
        info = directory / TRAINING_INFO
        self.best = json.loads(info.read_text())["selection"]["accuracy"] if info.is_file() else -1.0  # resumed run

    def on_step_end(self, state) -> None:
        if state.eval_history and state.eval_history[-1]["step"] == state.step:
            accuracy = state.eval_history[-1]["accuracy"]
            if accuracy > self.best:
                self.best = accuracy
                self.save(self.directory, {"step": state.step, "epoch": state.epoch, "accuracy": accuracy})


# --- one run -----------------------------------------------------------------------------------------------------

def train_run(cfg: BiMoRSTrainConfig, run: TrainingRun, seed: int, clip: Path, *, accelerator=None,
              callbacks=(), progress: bool = True) -> dict[str, Any]:
    """Train BiMoRS for one (run, seed) and evaluate it on the run's evaluations.

    Returns ``{"model": <dir>, "best": <dir> | None, "evaluations": [{"dataset", "subsample", "role", "checkpoint",
    **metrics}, …]}`` and writes ``evaluations.json`` beside the model.
    """
    out = Path(cfg.train.output_dir) / f"{dataset_label(run.dataset)}-{run.subsample}" / f"seed{seed}"
    accelerator = accelerator or build_accelerator(cfg.train)
    set_seed(seed)  # spec §2: before the dataset and the model are built
    dataset = load(cfg.data, run.dataset)
    model = build_model(cfg.model, clip)
    captions = open_caption_cache(dataset, cfg.data.captions, model.config.caption_dim)
    size = image_size(model)
    shots = {"num_shots": cfg.data.shots, "shots_dir": cfg.data.shots_dir or None}
    train_set = protocol_dataset(dataset, "train", run.subsample, seed, size, captions, **shots)
    own_test = protocol_dataset(dataset, "test", run.subsample, seed, size, captions, **shots)
    model.set_class_names(train_set.classnames)
    info = {  # training.json: what bimors-eval / bimors-predict need to find the data, captions and classes
        "dataset": run.dataset, "root": str(data_root(cfg.data, run.dataset)), "subsample": run.subsample,
        "seed": seed, "num_shots": cfg.data.shots, "shots_dir": cfg.data.shots_dir, "clean_names": cfg.data.clean_names,
        "synthetic_n": cfg.data.synthetic_n, "class_names": list(train_set.classnames), "train_images": len(train_set),
        "captions": cfg.data.captions, "caption_cache": str(captions.directory),
        "bert": captions.manifest.get("embedding", {}).get("path"), "clip": str(clip),
        "model_selection": cfg.protocol.model_selection}

    def save(directory: Path, selection: dict | None = None) -> None:
        if accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(model)
            save_model(unwrapped, directory, cfg, {**info, "selection": selection})
        accelerator.wait_for_everyone()

    def step_fn(model, batch):
        return model(batch["pixel_values"], batch["caption_embeds"], labels=batch["labels"]).loss

    eval_fn, callbacks = None, list(callbacks)
    best = cfg.protocol.model_selection == "best_on_test"
    if best:  # official: score the run's own test split after every epoch (test-set model selection)
        def eval_fn(model, accelerator):
            unwrapped = accelerator.unwrap_model(model)
            return {"accuracy": evaluate(unwrapped, own_test, batch_size=cfg.data.eval_batch_size,
                                         progress=False)["accuracy"]}

        callbacks.insert(0, _KeepBest(out / "best", save))
    train_cfg = dataclasses.replace(cfg.train, output_dir=str(out), seed=seed)
    result = train(train_cfg, model, train_set, step_fn, eval_fn=eval_fn, param_groups=param_groups(
        cfg.train.optim.weight_decay), callbacks=callbacks, accelerator=accelerator)
    model = accelerator.unwrap_model(model)
    save(out / "model", {"step": result.step, "epoch": "last"})
    accelerator.free_memory()

    evaluations, selected = [], None
    for evaluation in run.evaluations:
        own = (evaluation.dataset, evaluation.subsample) == (run.dataset, run.subsample)
        chosen = "last" if own or not best else "best"
        if chosen == "best" and selected is None:
            selected = BiMoRSModel.from_pretrained(out / "best").to(accelerator.device)
        scored = model if chosen == "last" else selected
        if own:
            test_set = own_test
        else:
            target = load(cfg.data, evaluation.dataset)
            target_captions = open_caption_cache(target, cfg.data.captions, model.config.caption_dim)
            test_set = protocol_dataset(target, "test", evaluation.subsample, seed, size, target_captions, **shots)
        metrics = evaluate(scored, test_set, batch_size=cfg.data.eval_batch_size, progress=progress,
                           desc=f"{evaluation.dataset} {evaluation.subsample} seed {seed}")
        evaluations.append({**dataclasses.asdict(evaluation), "checkpoint": chosen, **metrics})
    if accelerator.is_main_process:
        write_json(out / "evaluations.json", evaluations, indent=2)
        for checkpoint in ("last", "best") if best else ("last",):
            write_card(cfg, out / ("model" if checkpoint == "last" else "best"), info, seed,
                       [e for e in evaluations if e["checkpoint"] == checkpoint])
    return {"model": out / "model", "best": out / "best" if best else None, "evaluations": evaluations}


def evaluation_command(cfg: BiMoRSTrainConfig, model_dir: Path, evaluation: dict[str, Any]) -> list[str]:
    """The ``bimors-eval`` command line (program first) that scores ``model_dir`` on one of the run's evaluations
    exactly as :func:`train_run` did (the data root, seed, shots and class split come from ``training.json``)."""
    argv = ["bimors-eval", "--model", str(model_dir), "--dataset", evaluation["dataset"],
            "--subsample", evaluation["subsample"], "--batch-size", str(cfg.data.eval_batch_size)]
    return argv + (["--captions", cfg.data.captions] if cfg.data.captions else [])


def write_card(cfg: BiMoRSTrainConfig, model_dir: Path, info: dict[str, Any], seed: int,
               evaluations: list[dict[str, Any]]) -> Path:
    """The model card of one seed's ``model/`` (or ``best/``) directory, quoting ``evaluations`` (rows of
    :func:`train_run` that scored this directory)."""
    training_data = {k: info[k] for k in ("dataset", "root", "subsample", "num_shots", "train_images", "seed",
                                          "caption_cache", "clip")}
    training_data["class_names"] = ", ".join(info["class_names"])
    if info["dataset"] == SYNTHETIC:
        training_data.update(synthetic_n=cfg.data.synthetic_n, synthetic_seed=0)
    config = config_to_dict(cfg)
    config["train"].update(seed=seed, output_dir=str(model_dir.parent))
    cards = [CardEvaluation(tuple(evaluation_command(cfg, model_dir, e)),
                            {k: e[k] for k in ("accuracy", "macro_accuracy", "macro_f1", "n")},
                            f"{e['dataset']}, {e['subsample']} classes ({e['role']}); micro top-1 accuracy "
                            "(primary), macro accuracy and macro-F1 as fractions:") for e in evaluations]
    selection = ("the last epoch" if model_dir.name == "model"
                 else "the epoch with the best accuracy on the run's own test split (the official selection)")
    return write_model_card(model_dir, model_name="BiMoRS", preset=cfg.model.preset, package="rs-bimors",
                            training_data=training_data, config=config, evaluations=cards,
                            notes=[f"Protocol {cfg.protocol.name}, seed {seed}: {selection}."])


# --- the protocol ------------------------------------------------------------------------------------------------

def zero_shot_results(cfg: BiMoRSTrainConfig, protocol: Protocol, clip: Path,
                      progress: bool = True) -> dict[tuple[str, str], dict[int, dict]]:
    """Zero-shot CLIP on every evaluation and seed: ``{(dataset, subsample): {seed: metrics}}``. A test set is
    scored once per distinct class list (base/new classes come from each seed's shots, normally the same)."""
    model = build_model(cfg.model, clip)
    size, scored, out = image_size(model), {}, {}
    for run in protocol.runs:
        for evaluation in run.evaluations:
            dataset = load(cfg.data, evaluation.dataset)
            for seed in protocol.seeds:
                test_set = protocol_dataset(dataset, "test", evaluation.subsample, seed, size, None,
                                            cfg.data.shots, cfg.data.shots_dir or None)
                key = (evaluation.dataset, evaluation.subsample, test_set.classnames)
                if key not in scored:
                    scored[key] = evaluate(model, test_set, batch_size=cfg.data.eval_batch_size, zero_shot=True,
                                           progress=progress, desc=f"{evaluation.dataset} {evaluation.subsample}")
                out.setdefault((evaluation.dataset, evaluation.subsample), {})[seed] = scored[key]
    return out


def summarize(protocol: Protocol, per_seed: dict[tuple[str, str], dict[int, dict]]) -> dict:
    """The protocol table (:func:`summarize_base_to_new` or :func:`summarize_transfer`) of
    ``{(dataset, subsample): {seed: metrics}}``."""
    if protocol.name == "base2new":
        return summarize_base_to_new({run.dataset: {seed: {"base": per_seed[(run.dataset, "base")][seed],
                                                           "new": per_seed[(run.dataset, "new")][seed]}
                                                    for seed in protocol.seeds} for run in protocol.runs})
    run = protocol.runs[0]
    return summarize_transfer({e.dataset: per_seed[(e.dataset, e.subsample)] for e in run.evaluations}, run.dataset)


def results_text(protocol: Protocol, summaries: dict[str, dict], cfg: BiMoRSTrainConfig) -> str:
    """``results.md``: one table per method (percent; micro accuracy primary)."""
    what = "base / new / H: micro top-1 accuracy, H from seed-averaged Base and New; *_macro: macro accuracy" \
        if protocol.name == "base2new" else "micro top-1 accuracy (mean ± std over seeds), macro accuracy, macro-F1"
    lines = [f"# BiMoRS {protocol.name}", "", f"{protocol.description}.", "",
             f"Seeds {', '.join(map(str, protocol.seeds))}; {cfg.data.shots} shots; model preset {cfg.model.preset}; "
             f"model selection {cfg.protocol.model_selection}; {what}.", ""]
    for method, summary in summaries.items():
        lines += [f"## {method}", "", results_markdown(summary), ""]
    return "\n".join(lines)


def run(cfg: BiMoRSTrainConfig, *, callbacks=(), progress: bool = True) -> dict[str, Any]:
    """Run the configured protocol over its seeds; write ``results.json`` / ``results.md``; return the summaries.

    Every dataset (and the CLIP checkpoint) is checked before the first run starts.
    """
    protocol = build_protocol(cfg.protocol)
    out = Path(cfg.train.output_dir)
    accelerator = build_accelerator(cfg.train)
    caption_dim = model_config(cfg.model).caption_dim
    with accelerator.main_process_first():  # generates the synthetic data / pre-trains the tiny CLIP once
        datasets = [load(cfg.data, name)
                    for name in dict.fromkeys(e.dataset for r in protocol.runs for e in (r, *r.evaluations))]
        clip = clip_checkpoint(cfg.model, out, progress=progress)
        for dataset in datasets:
            open_caption_cache(dataset, cfg.data.captions, caption_dim)
    if accelerator.is_main_process:
        save_config(out / "train_config.yaml", cfg)

    per_seed: dict[str, dict] = {method: {} for method in METHODS}
    models = []
    for training in protocol.runs:
        for seed in protocol.seeds:
            result = train_run(cfg, training, seed, clip, accelerator=accelerator, callbacks=callbacks,
                               progress=progress)
            models.append(str(result["model"]))
            for row in result["evaluations"]:
                metrics = {k: row[k] for k in ("accuracy", "macro_accuracy", "macro_f1", "n")}
                per_seed["BiMoRS"].setdefault((row["dataset"], row["subsample"]), {})[seed] = metrics
    if cfg.protocol.zero_shot:
        per_seed["zero-shot CLIP"] = zero_shot_results(cfg, protocol, clip, progress=progress)
    else:
        del per_seed["zero-shot CLIP"]
    summaries = {method: summarize(protocol, rows) for method, rows in per_seed.items()}
    if accelerator.is_main_process:
        raw = {method: {f"{d}/{s}": rows for (d, s), rows in table.items()} for method, table in per_seed.items()}
        write_results(out / RESULTS_JSON, protocol, summaries, per_seed=raw, config=config_to_dict(cfg))
        (out / RESULTS_MD).write_text(results_text(protocol, summaries, cfg), encoding="utf-8")
    accelerator.wait_for_everyone()
    return {"summaries": summaries, "per_seed": per_seed, "models": models, "results": out / RESULTS_JSON,
            "markdown": out / RESULTS_MD}


__all__ = [
    "BiMoRSTrainConfig", "DataSection", "ModelSection", "ProtocolSection", "build_model", "build_protocol",
    "clip_checkpoint", "evaluation_command", "read_training_info", "run", "save_model", "summarize", "train_run",
    "write_card", "zero_shot_results",
]
