"""Command-line tools: ``bimors-train`` (a whole protocol over seeds) and ``bimors-eval`` (one model, one test set).

``bimors-train`` reads a packaged preset by name (``tiny-synthetic`` — the default —, ``base2new``,
``cross_dataset``, ``dg``) or a YAML file, then ``--key value`` overrides (``--protocol.seeds 1``,
``--data.root /data``). ``bimors-eval`` scores a model directory written by ``bimors-train`` (``…/seed1/model``);
where to find the data, the captions and the shots defaults to what the model was trained with.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rs_shared.data.errors import DataFormatError
from rs_shared.training import CheckpointError, resolve_preset

from .caption import CaptionCacheError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_PRESET = "tiny-synthetic"
ERRORS = (CaptionCacheError, CheckpointError, DataFormatError, FileNotFoundError, KeyError, ValueError)


def preset_path(name: str) -> Path:
    """A config path as given, else a packaged preset by name (``base2new``) or as ``configs/base2new.yaml``."""
    return resolve_preset(name, CONFIG_DIR)


def _fail(prog: str, error: BaseException, code: int = 1) -> int:
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


# --- bimors-train ------------------------------------------------------------------------------------------------

TRAIN_DESCRIPTION = (
    "Train BiMoRS (caption-conditioned prompt learning for CLIP) under one protocol, once per seed, and write "
    "<train.output_dir>/results.json and results.md: micro top-1 accuracy (primary), macro accuracy, H (base-to-new) "
    "for BiMoRS and for zero-shot CLIP ('a photo of a {}.'), plus a save_pretrained model per seed "
    "(<dataset>-<subsample>/seed<k>/model) for bimors-eval, with a model card (README.md) quoting the bimors-eval "
    "commands that reproduce its metrics. --config takes a YAML file or a packaged preset: "
    f"{DEFAULT_PRESET} (the default: tiny CLIP on the synthetic dataset, CPU), base2new, cross_dataset, dg (the "
    "paper's protocols; set --data.root, --data.captions and --model.clip). Every option below overrides the config, "
    "e.g. --protocol.seeds 1 --train.epochs 2. Resume interrupted runs with --train.resume auto.")


def train_main(argv: Sequence[str] | None = None) -> int:
    from rs_shared.training import parse_config

    from .train import BiMoRSTrainConfig, run

    argv = list(sys.argv[1:] if argv is None else argv)
    chooser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    chooser.add_argument("--config", default=DEFAULT_PRESET)
    chosen, rest = chooser.parse_known_args(argv)
    try:
        config_file = preset_path(chosen.config)
    except FileNotFoundError as error:
        return _fail("bimors-train", error, 2)
    cfg = parse_config(BiMoRSTrainConfig, ["--config", str(config_file), *rest], prog="bimors-train",
                       description=TRAIN_DESCRIPTION)
    try:
        result = run(cfg)
    except ERRORS as error:
        return _fail("bimors-train", error)
    print(result["markdown"].read_text(encoding="utf-8"))
    print(f"results: {result['results']}")
    print(f"models: {', '.join(result['models'])}")
    return 0


# --- bimors-eval -------------------------------------------------------------------------------------------------

def eval_parser() -> argparse.ArgumentParser:
    from .evaluation import EVAL_BATCH_SIZE

    parser = argparse.ArgumentParser(
        prog="bimors-eval",
        description="Evaluate a BiMoRS model written by bimors-train on one dataset's full test split (restricted to "
                    "the base or new classes with --subsample): micro top-1 accuracy (primary), macro accuracy and "
                    "macro-F1. Writes <out>/eval.json (results, protocol, versions) and <out>/eval.md.")
    parser.add_argument("--model", required=True, help="model directory written by bimors-train, e.g. "
                                                       "runs/bimors-tiny/synthetic-base/seed1/model")
    parser.add_argument("--dataset", help="dataset name, case-sensitive, or the path of a dataset folder (images/ + "
                                          "CoOp split JSON) or its JSON (default: the one the model was trained on)")
    parser.add_argument("--root", help="datasets root holding <Dir>/images and the split JSONs (default: the "
                                       "training root; unused for a dataset given by path)")
    parser.add_argument("--subsample", choices=("all", "base", "new"), default="all",
                        help="test classes: all, or the base / new half picked by the seed's shots (default all)")
    parser.add_argument("--captions", help="caption cache directory (default: the training one; the synthetic "
                                           "dataset builds its own)")
    parser.add_argument("--seed", type=int, help="seed whose shots decide the base/new classes (default: the "
                                                 "training seed)")
    parser.add_argument("--shots", type=int, help="shots per class of that split (default: the training value)")
    parser.add_argument("--shots-dir", help="directory of the shots JSONs (default: the training one)")
    parser.add_argument("--zero-shot", action="store_true",
                        help="also evaluate zero-shot CLIP with the model's CLIP and the template 'a photo of a {}.'")
    parser.add_argument("--batch-size", type=int, default=EVAL_BATCH_SIZE,
                        help=f"test batch size (default {EVAL_BATCH_SIZE})")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, … (default cpu)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's choice)")
    parser.add_argument("--out", help="output directory (default: <model>/eval-<dataset>-<subsample>, <dataset> "
                                      "being a dataset path's folder name)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def eval_main(argv: Sequence[str] | None = None) -> int:
    args = eval_parser().parse_args(argv)
    try:
        report, markdown = evaluate_command(args)
    except ERRORS as error:
        return _fail("bimors-eval", error)
    print(markdown)
    print(f"report: {report}")
    return 0


def evaluate_command(args: argparse.Namespace) -> tuple[Path, str]:
    """Run ``bimors-eval``; returns the report path and its Markdown table."""
    import torch
    from rs_shared.metrics.report import write_report

    from .data import open_caption_cache, protocol_dataset
    from .datasets import SYNTHETIC, SYNTHETIC_N, dataset_label, load_dataset
    from .evaluation import PROTOCOL, evaluate, metrics_markdown
    from .modeling import BiMoRSModel
    from .train import read_training_info

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = Path(args.model)
    info = read_training_info(model_dir)
    name = args.dataset or info["dataset"]
    root = args.root or info["root"]
    captions = args.captions if args.captions is not None else (info["captions"] if name != SYNTHETIC else "")
    seed = info["seed"] if args.seed is None else args.seed
    shots = info["num_shots"] if args.shots is None else args.shots
    shots_dir = args.shots_dir if args.shots_dir is not None else info.get("shots_dir") or None
    dataset = load_dataset(name, root, clean_names=info.get("clean_names", False),
                           synthetic_n=info.get("synthetic_n", SYNTHETIC_N))
    model = BiMoRSModel.from_pretrained(model_dir).to(torch.device(args.device))
    size = model.clip.visual.image_size[0]
    captions_cache = open_caption_cache(dataset, captions, model.config.caption_dim)
    test_set = protocol_dataset(dataset, "test", args.subsample, seed, size, captions_cache, shots, shots_dir)
    results = {"BiMoRS": evaluate(model, test_set, batch_size=args.batch_size, progress=not args.no_progress)}
    if args.zero_shot:
        results["zero-shot CLIP"] = evaluate(model, test_set, batch_size=args.batch_size, zero_shot=True,
                                             progress=not args.no_progress)
    out = Path(args.out) if args.out else model_dir / f"eval-{dataset_label(name)}-{args.subsample}"
    rows = [{"method": method, **metrics} for method, metrics in results.items()]
    markdown = metrics_markdown(rows)
    report = out / "eval.json"
    write_report(report, results, protocol=PROTOCOL, seeds=[seed], extra={
        "model": str(model_dir), "dataset": name, "root": str(root), "subsample": args.subsample,
        "class_names": list(test_set.classnames), "num_shots": shots, "captions": captions or None,
        "template": model.config.template})
    (out / "eval.md").write_text(f"# bimors-eval: {model_dir} on {name} ({args.subsample} classes, seed {seed})\n\n"
                                 f"{markdown}\n", encoding="utf-8")
    return report, markdown


__all__ = ["eval_main", "eval_parser", "evaluate_command", "preset_path", "train_main"]
