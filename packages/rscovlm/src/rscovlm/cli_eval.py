"""``rscovlm-eval``: score a checkpoint on one task and write ``report.json``, ``report.md`` and
``predictions.jsonl`` into ``--out`` (spec §5, §6).

Tasks: ``det`` (DOTA directory → APnc50/75/50:95 after tiling and merging), ``vg`` (grounding JSONL →
Acc@0.5), ``cap`` (captions → BLEU/METEOR/ROUGE-L/CIDEr), ``vqa`` and ``cls`` (answer accuracy under a §6 matcher).
Every score comes with its parse-failure rate. Without ``--data`` a small synthetic set is generated into
``<out>/data`` (see ``rscovlm.eval_data`` for the file formats) and reused when the same command runs again.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rs_shared.metrics.captioning import JavaNotFoundError
from rs_shared.metrics.report import markdown_table, write_report

from .eval_data import TASKS, load_eval_set, synthesize_eval_set
from .evaluation import MATCHERS, evaluate_detection_set, evaluate_grounding_set, evaluate_text_set
from .inference import HFGenerator, load_model
from .zoom import CROP_SOURCES

PROTOCOLS = {
    "det": "RSCoVLM DOTA APnc (spec §5): plain polygon answers, §5.2 parser with fuzzy labels, min-area rectangles, "
           "tiles merged by per-class rotated NMS 0.1, VOC07 11-point AP with every score 1, difficult counted, "
           "stable tie order (tile, line)",
    "vg": "RSCoVLM grounding (spec §6): first line x1,y1,x2,y2 label, failure = [0,0,0,0], Acc@0.5 with IoU > 0.5 "
          "and the 1-px overlap rule",
    "cap": "COCO caption metrics (pycocoevalcap, no SPICE): BLEU-1..4, METEOR, ROUGE-L, CIDEr-D with the PTB "
           "tokenizer; BLEU, ROUGE-L, CIDEr-D only with the simple one (non-standard numbers)",
    "vqa": "RSCoVLM VQA answer accuracy (spec §6 matcher)",
    "cls": "RSCoVLM scene classification accuracy (spec §6 matcher)",
}
HEADLINE = {"det": ("APnc50", "APnc75", "APnc50:95"), "vg": ("Acc@0.5",),
            "cap": ("BLEU-4", "METEOR", "ROUGE_L", "CIDEr"), "vqa": ("accuracy",), "cls": ("accuracy",)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rscovlm-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a local checkpoint directory, or 'tiny' (random tiny preset)")
    parser.add_argument("--task", required=True, choices=TASKS, help="what to evaluate")
    parser.add_argument("--data", help="det: a DOTA directory (images/, labelTxt/); other tasks: a JSON-lines file "
                                       "(or a directory holding eval.jsonl). Default: a synthetic set")
    parser.add_argument("--max-samples", type=int, help="evaluate only the first N samples (images for det)")
    parser.add_argument("--batch-size", type=int, default=1, help="prompts per generate call (left padding)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="generation budget per answer")
    parser.add_argument("--out", default="rscovlm_eval", help="output directory for the report and predictions")
    parser.add_argument("--min-pixels", type=int, help="override the checkpoint's min_pixels")
    parser.add_argument("--max-pixels", type=int,
                        help="override the checkpoint's max_pixels (min = max = cap is the 'Max Mode' of §5.1)")
    parser.add_argument("--synthetic-samples", type=int, default=8, help="size of the default synthetic set")
    parser.add_argument("--synthetic-size", type=int, help="image side of the synthetic set (det 1024, else 224)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic set")
    det = parser.add_argument_group("det")
    det.add_argument("--box-kind", choices=("poly", "hbb"), default="poly", help="answer grammar asked for")
    det.add_argument("--tile-size", type=int, default=512, help="images larger than this are tiled (DOTA windows)")
    det.add_argument("--tile-gap", type=int, default=200, help="overlap of neighbouring windows")
    text = parser.add_argument_group("cls / vqa / cap")
    text.add_argument("--match", choices=sorted(MATCHERS),
                      help="answer matcher (default: bidirectional for cls, wups for vqa)")
    text.add_argument("--classes", help="cls: comma-separated class names (default: the reference answers seen)")
    text.add_argument("--zoom", type=int, default=0, help="vqa: max zoom-in steps (0 = no zoom chain)")
    text.add_argument("--crop-source", choices=CROP_SOURCES, default="resized", help="vqa zoom crop source")
    text.add_argument("--caption-tokenizer", choices=("ptb", "simple"), default="ptb",
                      help="cap: PTB tokenizer (standard, needs Java; METEOR too) or the simple one "
                           "(no Java, no METEOR, non-standard numbers)")
    return parser


def synthetic_set(args: argparse.Namespace, directory: Path) -> Path:
    """The default synthetic set of ``args.task`` in ``directory``: written once, with ``synthetic.json`` recording
    how, and reused by a later run with the same task, size, seed and count (so a command can be re-run as is)."""
    spec = {"task": args.task, "samples": args.synthetic_samples, "seed": args.seed, "size": args.synthetic_size}
    marker = directory / "synthetic.json"
    if marker.is_file():
        saved = json.loads(marker.read_text(encoding="utf-8"))
        if saved.get("spec") != spec:
            raise FileExistsError(f"{directory} holds the synthetic set {saved.get('spec')}, not {spec}: choose "
                                  "another --out")
        return directory / saved["path"]
    path = synthesize_eval_set(args.task, directory, args.synthetic_samples, args.seed, args.synthetic_size)
    marker.write_text(json.dumps({"spec": spec, "path": str(path.relative_to(directory))}), encoding="utf-8")
    return path


def run(args: argparse.Namespace) -> dict:
    """Evaluate as the parsed ``args`` say; returns the written report."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = args.data if args.data is not None else synthetic_set(args, out / "data")
    samples = load_eval_set(args.task, data)
    if args.max_samples is not None:
        samples = samples[:args.max_samples]
    if not samples:
        raise ValueError(f"{data}: no {args.task} samples to evaluate")
    generator = HFGenerator(load_model(args.model, args.min_pixels, args.max_pixels), args.max_new_tokens,
                            args.batch_size)
    if args.task == "det":
        results, records = evaluate_detection_set(generator, samples, tile_size=args.tile_size, gap=args.tile_gap,
                                                  kind=args.box_kind)
    elif args.task == "vg":
        results, records = evaluate_grounding_set(generator, samples)
    else:
        classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
        results, records = evaluate_text_set(generator, samples, args.task, args.match, classes, args.zoom,
                                             args.crop_source, args.caption_tokenizer)
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    config = {k: v for k, v in vars(args).items()}
    config.update(data=str(data), image_settings=vars(generator.image_settings))
    report = write_report(out / "report.json", results, protocol=PROTOCOLS[args.task], seeds=[args.seed],
                          config=config)
    row = {"task": args.task, "samples": len(samples),
           **{k: 100 * results[k] for k in HEADLINE[args.task] if k in results},
           "parse failure %": 100 * results["parse_failure_rate"]}
    (out / "report.md").write_text(f"# rscovlm-eval: {args.task}\n\n{PROTOCOLS[args.task]}\n\n"
                                   + markdown_table([row], list(row)) + "\n", encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1 or args.max_new_tokens < 1 or args.zoom < 0:
        print("rscovlm-eval: --batch-size and --max-new-tokens must be >= 1, --zoom >= 0", file=sys.stderr)
        return 2
    try:
        run(args)
    except (FileNotFoundError, FileExistsError, ValueError, JavaNotFoundError) as e:
        print(f"rscovlm-eval: {e}", file=sys.stderr)
        return 2
    print((Path(args.out) / "report.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
