"""``clvnet-eval``: score a saved CLV-Net on GeoPixelD-format tiles by the GCG protocol (spec §4) and write
``metrics.json``, ``metrics.md`` and ``predictions.jsonl`` into ``--out``.

What a tile is scored against follows the model's ``box_targets`` (or ``--box-targets``): with ``full`` each tile
is prompted with the union box of its ground-truth masks and scored against its holistic caption (§8); with
``in_box`` it is prompted with its first region's box and scored against that region's caption and masks (the
tiles' box-conditioned ``regions``). ``--wrong-box`` uses the next tile's box of the same kind instead (a control: a
model that reads the box should lose mIoU). Recall compares phrases with
GLaMM's BERT similarity when ``--bert`` names a local bert-base-uncased directory; otherwise with exact phrase
matching (non-standard; fine for synthetic data). METEOR and CIDEr need Java >= 8 (``--no-caption-metrics``
skips them).

Exit codes: 0 done; 2 bad arguments, missing files or unreadable data; 3 Java needed but missing.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from rs_shared.metrics.captioning import JavaNotFoundError
from torch.utils.data import DataLoader, Subset

from . import predict
from .evaluation import evaluate_gcg, write_report

EXIT_BAD_INPUT = 2
EXIT_NO_JAVA = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clvnet-eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="saved CLV-Net directory (save_pretrained output + tokenizer)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="GeoPixelD.json, a directory holding it, or a directory of per-tile files")
    source.add_argument("--synthetic", action="store_true",
                        help="evaluate on the embedded synthetic GeoPixelD set (generated into <out>/data)")
    parser.add_argument("--split", help="only tiles whose image lies in a directory of this name (e.g. test); "
                                        "default: all tiles of --data, 'test' with --synthetic")
    parser.add_argument("--bert", help="local bert-base-uncased directory for recall's phrase similarity (GLaMM); "
                                       "default: exact phrase matching (non-standard)")
    parser.add_argument("--box-targets", choices=("full", "in_box"),
                        help="full: union box, holistic caption; in_box: the tile's region 0 box and its caption "
                             "(needs 'regions' in the tile files); default: the model config's box_targets")
    parser.add_argument("--wrong-box", action="store_true",
                        help="prompt each tile with the next tile's box (control experiment)")
    parser.add_argument("--out", default="clvnet_eval", help="output directory (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per generation call (default: 1)")
    parser.add_argument("--max-samples", type=int, help="evaluate only the first N tiles")
    parser.add_argument("--max-new-tokens", type=int, help="generation budget (default: the model config's)")
    parser.add_argument("--no-caption-metrics", action="store_true", help="skip METEOR and CIDEr (no Java needed)")
    parser.add_argument("--caption-tokenizer", choices=("ptb", "simple"), default="ptb",
                        help="PTB tokenizer (standard, Java) or the simple one (non-standard, CIDEr without Java)")
    parser.add_argument("--synthetic-samples", type=int, default=40, help="tiles of the synthetic set (80/20 split)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic set")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    for name in ("batch_size", "max_samples", "max_new_tokens", "synthetic_samples"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    for name in ("data", "bert"):
        value = getattr(args, name)
        if value is not None and not Path(value).exists():
            raise FileNotFoundError(f"--{name} {value} does not exist")
    if not Path(args.model).is_dir():
        raise FileNotFoundError(f"--model {args.model} is not a directory")


def run(args: argparse.Namespace) -> dict:
    """Evaluate as the parsed ``args`` say and write the report; returns the :func:`evaluate_gcg` result."""
    from .data import SYNTHETIC_REGIONS, GCGEvalDataset, collate_with_records, ensure_synthetic_gcg

    _check_args(args)
    out = Path(args.out)
    data, split = args.data, args.split
    if args.synthetic:
        data = ensure_synthetic_gcg(out / "data", args.synthetic_samples, args.seed, regions=SYNTHETIC_REGIONS)
        split = split or "test"
    model, processor = predict.load_for_inference(args.model, args.device)
    processor.box_targets = args.box_targets or processor.box_targets
    dataset = GCGEvalDataset(data, processor, split=split, wrong_box=args.wrong_box)
    items = Subset(dataset, range(min(args.max_samples or len(dataset), len(dataset))))
    loader = DataLoader(items, batch_size=args.batch_size, shuffle=False,
                        collate_fn=functools.partial(collate_with_records, processor))
    if args.bert is None:
        print("clvnet-eval: recall uses exact phrase matching (non-standard); pass --bert DIR for GLaMM's "
              "BERT similarity", file=sys.stderr)
    result = evaluate_gcg(model, loader, similarity=args.bert, caption_metrics=not args.no_caption_metrics,
                          caption_tokenizer=args.caption_tokenizer, tokenizer=processor.tokenizer,
                          max_new_tokens=args.max_new_tokens, progress=not args.no_progress)
    config = {**vars(args), "data": str(data), "split": split, "box_targets": processor.box_targets,
              "num_tiles": len(items)}
    write_report(result, out, config=config)
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except JavaNotFoundError as e:
        print(f"clvnet-eval: {e}\nUse --no-caption-metrics to skip METEOR and CIDEr.", file=sys.stderr)
        return EXIT_NO_JAVA
    except (FileNotFoundError, ValueError) as e:  # incl. DataFormatError
        print(f"clvnet-eval: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print((Path(args.out) / "metrics.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
