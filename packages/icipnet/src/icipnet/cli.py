"""Command-line tools: ``icipnet-train``, ``icipnet-eval``, ``icipnet-predict`` and ``icipnet-convert``.

``icipnet-convert`` turns an official ICIPNet/RMSIN checkpoint into a ``save_pretrained`` directory that
the other two tools read. ``icipnet-train --config configs/tiny-synthetic.yaml`` trains on the embedded
synthetic data; the packaged presets (``tiny-synthetic``, ``rrsisd``, ``refsegrs``) are found by name or as
``configs/<name>.yaml`` from any directory. ``icipnet-eval`` scores a trained model by the official
protocol (with the language controls) and writes ``report.json``, ``report.md`` and a picture of
examples; ``icipnet-predict`` segments one image for one or more expressions.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from rs_shared.data.common import atomic_path, read_image, write_json
from rs_shared.data.errors import DataFormatError
from rs_shared.metrics.report import markdown_table, write_report
from rs_shared.training import ConfigError, load_config, parse_config, resolve_config_argument, resolve_preset
from rs_shared.viz import compose, draw_caption, draw_masks, save_png

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
PROTOCOL = ("RRSIS official test script (LAVT/RMSIN): prediction = argmax of the 2 logits at the model input "
            "size, ground truth nearest-resized to it; oIoU = ΣI/ΣU, mIoU = mean IoU (IoU 0 when U = 0), P@X")
METRIC_COLUMNS = ("mIoU", "oIoU", "P@0.5", "P@0.7", "P@0.9", "n")
PRED_COLOR, GT_COLOR = (230, 57, 70), (46, 204, 113)


def resolve_config(name: str) -> Path:
    """A config path as given, else a packaged preset by name (``rrsisd``) or as ``configs/rrsisd.yaml``."""
    return resolve_preset(name, CONFIG_DIR)


def _fail(prog: str, error: Exception, code: int = 1) -> int:
    print(f"{prog}: error: {error}", file=sys.stderr)
    return code


# --- icipnet-train ----------------------------------------------------------------------------------------

def train_main(argv: Sequence[str] | None = None) -> int:
    from .train import IcipNetTrainConfig, run

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = resolve_config_argument(argv, CONFIG_DIR)  # packaged presets by name
    except FileNotFoundError as e:
        return _fail("icipnet-train", e, 2)
    cfg = parse_config(IcipNetTrainConfig, argv, prog="icipnet-train", description=(
        "Train ICIPNet (referring remote-sensing image segmentation). Presets: --config tiny-synthetic (CPU, "
        "synthetic data, the default job), rrsisd, refsegrs (the paper's recipe; set --data.root, --model.swin, "
        "--model.bert). Every option below overrides the config file; e.g. the ICIP/BIF ablation: "
        "--model.use_icip false --model.use_bif false. Resume a run with --train.resume auto. The final model "
        "(<train.output_dir>/model) gets a model card (README.md) quoting the icipnet-eval command run on "
        "--data.test_split at the end of training and its metrics."))
    try:
        result = run(cfg)
    except (DataFormatError, FileNotFoundError, ValueError) as e:
        return _fail("icipnet-train", e)
    metrics = {k: v for k, v in result["eval"].items() if k in METRIC_COLUMNS}
    print(f"trained {result['step']} steps; final validation " +
          ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    print(f"model: {result['model']}  (best validation oIoU {result['best_oIoU']:.4f}: {result['best']})")
    evaluation = result["evaluation"]
    if evaluation is not None:
        print(f"model card: {result['model']}/README.md; {evaluation.command_line}: " +
              ", ".join(f"{k} {v:.4f}" for k, v in evaluation.metrics.items() if k != "n"))
    return 0


# --- icipnet-eval -----------------------------------------------------------------------------------------

def eval_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icipnet-eval", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate a trained ICIPNet by the official RRSIS protocol: oIoU, mIoU and P@0.5…0.9 at the "
                    "model's input size. Writes <out>/report.json (results, protocol, versions), <out>/report.md "
                    "and <out>/examples.png (predictions in red, ground truth in green).",
        epilog="Language controls (--controls): the same model with the expressions shuffled across samples "
               "(a derangement), and on RRSIS-D-layout data the category-only oracle: a perfect mask of a random "
               "instance of the named category, compared on the samples whose category is ambiguous.")
    parser.add_argument("--model", required=True, help="icipnet-train output (e.g. runs/icipnet-tiny/best)")
    parser.add_argument("--data", help="RRSIS-D or RefSegRS root (default: the dataset the model was trained on, "
                                       "read from the run's train_config.yaml)")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--mode", choices=("all", "per_ref"), default="all",
                        help="all: every expression of every ref (the test protocol); per_ref: one per ref")
    parser.add_argument("--overlap", choices=("union", "official"), default="union",
                        help="RRSIS-D masks with overlapping parts: union, or the official loader's sum == 1")
    parser.add_argument("--controls", action="store_true",
                        help="also evaluate with shuffled expressions and the category-only oracle")
    parser.add_argument("--max-samples", type=int, default=0, help="evaluate the first N samples only (0 = all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--examples", type=int, default=8, help="example predictions drawn (0 = none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffle and of the oracle's picks")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, …")
    parser.add_argument("--out", help="output directory (default: <model>/eval-<split>)")
    return parser


def eval_main(argv: Sequence[str] | None = None) -> int:
    args = eval_parser().parse_args(argv)
    try:
        report, markdown = evaluate_command(args)
    except (DataFormatError, FileNotFoundError, ValueError, OSError) as e:
        return _fail("icipnet-eval", e)
    print(markdown)
    print(f"report: {report}")
    return 0


def _training_data_root(model_dir: Path) -> Path:
    """The data root of the run that produced ``model_dir`` (``<run>/best`` or ``<run>/model``)."""
    from .train import IcipNetTrainConfig

    config_file = model_dir.parent / "train_config.yaml"
    if not config_file.exists():
        raise FileNotFoundError(f"no --data given and no {config_file} to read the training data from")
    try:
        data = load_config(IcipNetTrainConfig, config_file).data
    except ConfigError as e:
        raise ValueError(f"{config_file}: {e}") from None
    return Path(data.root or data.synthetic_dir)


def evaluate_command(args: argparse.Namespace) -> tuple[Path, str]:
    """Run ``icipnet-eval``; returns the report path and its markdown table."""
    import torch

    from .data import RefSegEvalDataset, load_split
    from .evaluation import category_oracle, evaluate, subset
    from .inference import ReferringSegmenter

    model_dir = Path(args.model)
    root = Path(args.data) if args.data else _training_data_root(model_dir)
    out = Path(args.out) if args.out else model_dir / f"eval-{args.split}"
    segmenter = ReferringSegmenter.from_pretrained(model_dir, torch.device(args.device))
    config = segmenter.model.config
    records = load_split(root, args.split, args.overlap)
    dataset = RefSegEvalDataset(records, segmenter.tokenizer, config.image_size, config.max_text_len, mode=args.mode,
                                seed=args.seed)
    if args.max_samples:
        dataset.rows = dataset.rows[:args.max_samples]
    if not len(dataset):
        raise ValueError(f"{root}: split {args.split!r} has no samples")
    evaluated = evaluate(segmenter.model, dataset, batch_size=args.batch_size, progress=True)
    results = {"model": evaluated.compute()}
    rows = [{"run": "ICIPNet", **results["model"]}]
    if args.controls:
        shuffled = evaluate(segmenter.model, dataset, batch_size=args.batch_size, shuffle_expressions=True,
                            seed=args.seed, progress=True)
        results["shuffled_expressions"] = shuffled.compute()
        results["language_gap_mIoU"] = results["model"]["mIoU"] - results["shuffled_expressions"]["mIoU"]
        rows.append({"run": "shuffled expressions", **results["shuffled_expressions"]})
        if (root / "rrsisd" / "instances.json").exists():
            oracle, ambiguous = category_oracle(root, dataset, seed=args.seed)
            results["category_oracle"] = oracle.compute()
            results["ambiguous"] = {"fraction": float(ambiguous.mean()),
                                    "model": subset(evaluated, ambiguous).compute(),
                                    "category_oracle": subset(oracle, ambiguous).compute()}
            rows += [{"run": "category-only oracle", **results["category_oracle"]},
                     {"run": "ICIPNet, ambiguous category", **results["ambiguous"]["model"]},
                     {"run": "oracle, ambiguous category", **results["ambiguous"]["category_oracle"]}]
    markdown = markdown_table(rows, ("run", *METRIC_COLUMNS), digits=4)
    report_path = out / "report.json"
    write_report(report_path, results, protocol=PROTOCOL, extra={
        "model": str(model_dir), "data": str(root), "split": args.split, "mode": args.mode, "overlap": args.overlap,
        "image_size": config.image_size, "seed": args.seed})
    (out / "report.md").write_text(f"# icipnet-eval: {model_dir} on {root} ({args.split})\n\n{markdown}\n")
    if args.examples:
        save_png(_examples(segmenter, dataset, args.examples), out / "examples.png")
    return report_path, markdown


def _examples(segmenter, dataset, n: int) -> Image.Image:
    """Predictions (red) and ground truth (green) of the first ``n`` samples, with their expressions."""
    panels = []
    for index in range(min(n, len(dataset))):
        record = dataset.records[dataset.rows[index]]
        sample = record.load()
        result = segmenter(sample["image"], [record.expression])
        picture = draw_masks(sample["image"], [sample["mask"], result.masks[0]], colors=[GT_COLOR, PRED_COLOR])
        panels.append(draw_caption(picture, record.expression))
    return compose(panels, ncols=min(4, len(panels)))


# --- icipnet-predict --------------------------------------------------------------------------------------

def predict_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icipnet-predict",
        description="Segment the object an expression refers to. For each --text writes <out>/mask_<k>.png (0/255 "
                    "at the image size), <out>/overlay_<k>.png and one <out>/prediction.json (expressions, mask "
                    "files, foreground area, bounding box, mean foreground probability).")
    parser.add_argument("--model", required=True, help="icipnet-train output (e.g. runs/icipnet-tiny/best)")
    parser.add_argument("--image", required=True, help="an RGB image (any size; resized to the model's input)")
    parser.add_argument("--text", required=True, action="append", help="referring expression (repeatable)")
    parser.add_argument("--out", default="prediction", help="output directory (default: ./prediction)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, …")
    return parser


def predict_main(argv: Sequence[str] | None = None) -> int:
    args = predict_parser().parse_args(argv)
    try:
        path = predict_command(args)
    except (DataFormatError, FileNotFoundError, ValueError, OSError) as e:
        return _fail("icipnet-predict", e)
    print(f"wrote {path}")
    return 0


def predict_command(args: argparse.Namespace) -> Path:
    """Run ``icipnet-predict``; returns the path of ``prediction.json``."""
    from .inference import ReferringSegmenter

    image = np.asarray(read_image(args.image))
    segmenter = ReferringSegmenter.from_pretrained(args.model, args.device)
    result = segmenter(image, args.text)
    out = Path(args.out)
    entries = []
    for k, (text, mask, prob) in enumerate(zip(result.expressions, result.masks, result.probabilities)):
        mask_path = out / f"mask_{k}.png"
        with atomic_path(mask_path) as tmp:  # single channel 0/255, like the RefSegRS masks
            Image.fromarray(mask.astype(np.uint8) * 255, "L").save(tmp, format="PNG")
        overlay_path = save_png(draw_caption(draw_masks(image, mask[None], colors=[PRED_COLOR]), text),
                                out / f"overlay_{k}.png")
        ys, xs = np.nonzero(mask)
        entries.append({
            "text": text, "mask": mask_path.name, "overlay": overlay_path.name,
            "area_fraction": float(mask.mean()),
            "bbox_xyxy": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else None,
            "mean_foreground_probability": float(prob[mask].mean()) if mask.any() else None,
        })
    path = out / "prediction.json"
    write_json(path, {"image": str(args.image), "model": str(args.model), "size": [image.shape[1], image.shape[0]],
                      "predictions": entries}, indent=2)
    return path


# --- icipnet-convert --------------------------------------------------------------------------------------

def convert_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icipnet-convert",
        description="Convert a checkpoint of the official ICIPNet (Ren-by/ICIPNet) or RMSIN (Lsan2401/RMSIN) code into "
                    "a save_pretrained directory (safetensors + config + tokenizer) for icipnet-eval / -predict. "
                    "The file is read with torch.load(weights_only=True); every key and shape is checked.")
    parser.add_argument("--checkpoint", required=True, help="the official .pth file (e.g. model_best_rrsisd.pth)")
    parser.add_argument("--preset", choices=("paper", "rmsin"), default="paper",
                        help="the checkpoint's network: paper (ICIPNet) or rmsin (the RMSIN baseline)")
    parser.add_argument("--model-config", help="an IcipNetConfig config.json instead of --preset (e.g. a run with "
                                               "num_prompts=5, the paper's ablation setting)")
    parser.add_argument("--tokenizer", required=True, help="local bert-base-uncased directory (its tokenizer files)")
    parser.add_argument("--out", required=True, help="output directory")
    return parser


def convert_main(argv: Sequence[str] | None = None) -> int:
    from .configuration import IcipNetConfig
    from .convert import from_official
    from .tokenizer import load_tokenizer

    args = convert_parser().parse_args(argv)
    try:
        tokenizer = load_tokenizer(args.tokenizer)
        if args.model_config:
            config = IcipNetConfig.from_json_file(args.model_config)
        else:
            config = IcipNetConfig.paper() if args.preset == "paper" else IcipNetConfig.rmsin()
        if len(tokenizer) > config.text_config.vocab_size:
            raise ValueError(f"{args.tokenizer}: the tokenizer has {len(tokenizer)} ids but the model's BERT only "
                             f"{config.text_config.vocab_size} (use the tokenizer the checkpoint was trained with)")
        model = from_official(args.checkpoint, config)
    except (DataFormatError, FileNotFoundError, ValueError, OSError) as e:
        return _fail("icipnet-convert", e)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    print(f"wrote {args.out}")
    return 0
