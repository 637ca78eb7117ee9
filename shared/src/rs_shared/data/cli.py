"""``rs-data``: generate, validate, look at and convert remote-sensing datasets.

Exit codes: 0 success; 1 the data has problems (``check``) or a conversion failed on bad input; 2 usage
errors (bad arguments, unknown format).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from .errors import DataFormatError, Problems

TASKS = ("scene", "refseg", "gcg", "dota", "sft")
EPILOG = """examples:
  rs-data synth --task refseg --out data/refseg -n 200 --seed 0
  rs-data check data/refseg
  rs-data show data/refseg --index 3 --out refseg_3.png
  rs-data convert dota-to-sft data/dota data/dota_sft/sft.json
  rs-data convert masks-to-refsegrs my_refseg/refs.csv data/my_refseg
  rs-data quickstart --out runs/quickstart
"""


OWN_DATA = {  # conversion: (help, description, example of the annotation file, default p_train, p_val, seed)
    "labels-to-scene": (
        "your images + an image,label table -> scene classification (CoOp split JSON)",
        "Copy the images into OUT/images/<label>/ and write the CoOp split OUT/<name>.json (class indices follow "
        "the sorted labels). Without a 'split' column each class is split CoOp's way: a seeded shuffle, P_TRAIN "
        "train, P_VAL val, the rest test.",
        "Table (paths relative to the table's folder):\n"
        "  image,label\n  images/0001.jpg,airport\n  images/0002.jpg,forest",
        (0.5, 0.2, 1)),
    "masks-to-refsegrs": (
        "your images + object masks + an image,mask,expression table -> referring segmentation (RefSegRS)",
        "Write the RefSegRS layout (images/<id>.tif, masks/<id>.tif, output_phrase_<split>.txt) with one id per "
        "(image, mask) pair. A mask has two values: 0 is background, the other value the object (PNG, not JPEG). "
        "All rows of an image go to one split.",
        "Table (paths relative to the table's folder):\n  image,mask,expression\n"
        "  images/0001.png,masks/0001_car.png,the red car left of the truck\n"
        "  images/0001.png,masks/0001_car.png,the leftmost car",
        (0.7, 0.1, 0)),
    "captions-to-geopixeld": (
        "your images + captions whose phrases carry polygons (JSON) -> grounded captions (GeoPixelD)",
        "Write the GeoPixelD layout (GeoPixelD.json, <split>/<tile>.png and .json). Each phrase's text must occur "
        "in the caption, in order; it is marked up as <p> text </p> [SEG]. Polygons are COCO-style flat "
        "[x1, y1, x2, y2, ...] pixel lists, one per object the phrase names.",
        "One record per image (a JSON list, or one object per line):\n"
        '  {"image": "images/0001.png", "caption": "Two planes are parked beside a hangar.",\n'
        '   "phrases": [{"text": "Two planes", "polygons": [[x1, y1, ...], [x1, y1, ...]]},\n'
        '               {"text": "a hangar", "polygons": [[x1, y1, ...]]}]}',
        (0.8, 0.0, 0)),
    "qa-to-sft": (
        "your images + an image,question,answer table -> chat/SFT conversations (LLaVA JSON)",
        "Copy the images into OUT/images/, write one single-turn conversation per pair to OUT/<split>.json and the "
        "held-out pairs to OUT/qa/<split>.jsonl (the form VQA evaluators read). Optional field: id. For DOTA "
        "detection labels use dota-to-sft instead.",
        "Table (JSON lines here; CSV with the same columns works too):\n"
        '  {"image": "images/0001.png", "question": "How many planes are there?", "answer": "3"}\n'
        '  {"image": "images/0001.png", "question": "Is there a hangar?", "answer": "yes"}',
        (0.8, 0.0, 0)),
}
OWN_DATA_COMMON = ("An optional 'split' field (train, val or test) in every row fixes the splits; without it images "
                   "are drawn into splits with --p-train, --p-val and --seed, all rows of an image together. Errors "
                   "name the table's file and row. Exit code 1 on bad input, 2 on bad arguments or a non-empty OUT.")


def _size(text: str) -> tuple[int, int]:
    """``64`` or ``96x64`` (width x height)."""
    try:
        w, _, h = text.lower().partition("x")
        size = (int(w), int(h or w))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be N or WxH, got {text!r}") from None
    if min(size) < 16:
        raise argparse.ArgumentTypeError(f"size must be at least 16 pixels, got {text!r}")
    return size


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rs-data", description=__doc__.split("\n\n")[0], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="generate a synthetic RS dataset in a real on-disk format",
                       description="Generate procedural aerial scenes with complete ground truth and write them "
                                   "in the official layout of a real dataset, plus manifest.json (counts, "
                                   "checksums, generator version and seed) that `rs-data check` verifies.")
    p.add_argument("--task", required=True, choices=TASKS,
                   help="scene: scene classification (CoOp split); refseg: referring segmentation; gcg: grounded "
                        "captions with masks (GeoPixelD); dota: oriented boxes (DOTA labelTxt); sft: chat "
                        "records (LLaVA JSON) with counting/presence/location QA, grounding and detection")
    p.add_argument("--out", required=True, type=Path, help="output directory (created; must be empty or absent)")
    p.add_argument("-n", type=int, default=100, help="number of images (default 100)")
    p.add_argument("--seed", type=int, default=0, help="generator seed; the same seed gives identical files")
    p.add_argument("--size", type=_size, default=None,
                   help="image size N or WxH (defaults: scene/refseg 64, gcg 128, sft 224, dota 1024)")
    p.add_argument("--layout", choices=("rrsisd", "refsegrs"), default="rrsisd",
                   help="refseg only: RRSIS-D (REFER pickle + COCO JSON) or RefSegRS (TIFF + phrase files)")
    p.add_argument("--object-scale", type=float, default=1.0,
                   help="refseg only: draw objects this many times larger than the default (e.g. 1.3)")
    p.add_argument("--regions", type=int, default=0,
                   help="gcg only: box-conditioned captions per tile besides the holistic one (the objects in a "
                        "random region and the box around them; CLV-Net's in_box targets)")

    p = sub.add_parser("check", help="detect a dataset's format and validate every record",
                       description="Detect the format of DIR, validate every record and the manifest (when "
                                   "present), print counts and every problem. Exit code 1 if any problem.")
    p.add_argument("dir", type=Path)
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = sub.add_parser("show", help="draw one record (image with masks/boxes/caption) to a PNG",
                       description="Draw record INDEX of the dataset at DIR (all splits in order, or one --split) "
                                   "with its annotations to a PNG.")
    p.add_argument("dir", type=Path)
    p.add_argument("--index", type=int, default=0, help="record index (default 0)")
    p.add_argument("--split", default=None, help="only records of this split (e.g. train, test)")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")

    p = sub.add_parser("convert", help="convert between formats",
                       description="Convert a dataset into another format where that makes sense.")
    conv = p.add_subparsers(dest="conversion", required=True, metavar="CONVERSION")
    c = conv.add_parser("folders-to-split", help="a folder of class sub-folders -> CoOp split JSON")
    c.add_argument("image_dir", type=Path, help="folder with one sub-folder of images per class")
    c.add_argument("out_json", type=Path, help="split JSON to write (place it next to image_dir, named images/)")
    c.add_argument("--p-train", type=float, default=0.5)
    c.add_argument("--p-val", type=float, default=0.2)
    c.add_argument("--seed", type=int, default=1)
    c = conv.add_parser("dota-tiles", help="DOTA images -> overlapping DOTA tiles (devkit split rule)")
    c.add_argument("src", type=Path)
    c.add_argument("out", type=Path)
    c.add_argument("--size", type=int, default=1024, help="tile side in pixels (default 1024)")
    c.add_argument("--gap", type=int, default=200, help="overlap between tiles (default 200)")
    c.add_argument("--iof-thr", type=float, default=0.7,
                   help="cut objects keeping less than this fraction of their area are marked difficult=2")
    c.add_argument("--classes", default="DOTA-v1.0", choices=("DOTA-v1.0", "DOTA-v1.5", "DOTA-v2.0"))
    c = conv.add_parser("dota-to-sft", help="DOTA -> chat detection records (LLaVA JSON, pixel coordinates)")
    c.add_argument("src", type=Path)
    c.add_argument("out_json", type=Path)
    c.add_argument("--classes", default="DOTA-v1.0", choices=("DOTA-v1.0", "DOTA-v1.5", "DOTA-v2.0"))
    c = conv.add_parser("geopixeld-to-rrsisd", help="GeoPixelD grounded phrases -> RRSIS-D referring data")
    c.add_argument("src", type=Path)
    c.add_argument("out", type=Path)
    c = conv.add_parser("to-arrow", help="any supported dataset -> HF datasets DatasetDict (Arrow) on disk")
    c.add_argument("src", type=Path)
    c.add_argument("out", type=Path)
    for name, (help_text, description, example, split_defaults) in OWN_DATA.items():
        text = "\n\n".join([textwrap.fill(description, 100), example, textwrap.fill(OWN_DATA_COMMON, 100)])
        c = conv.add_parser(name, help=help_text, description=text,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        c.add_argument("table", type=Path, help="the annotation file (" + (
            "JSON list or JSON lines" if name == "captions-to-geopixeld" else "CSV, TSV, JSON list or JSON lines")
            + ")")
        c.add_argument("out", type=Path, help="output directory (created; must be empty or absent)")
        c.add_argument("--root", type=Path, default=None,
                       help="folder the table's relative paths start from (default: the table's folder)")
        c.add_argument("--p-train", type=float, default=split_defaults[0],
                       help=f"share of images in train when the table has no 'split' column (default "
                            f"{split_defaults[0]})")
        c.add_argument("--p-val", type=float, default=split_defaults[1],
                       help=f"share of images in val, likewise (default {split_defaults[1]}); test gets the rest")
        c.add_argument("--seed", type=int, default=split_defaults[2],
                       help=f"seed of the split draw (default {split_defaults[2]})")
        if name == "labels-to-scene":
            c.add_argument("--name", default=None,
                           help="split JSON name, written as OUT/NAME.json (default: OUT's folder name, lower case)")

    p = sub.add_parser("quickstart", help="generate, check and draw one small synthetic dataset of every task",
                       description="The embedded default end to end: for every task, generate a small synthetic "
                                   "dataset in its real format, validate it and draw a record.")
    p.add_argument("--out", type=Path, default=Path("runs/quickstart"))
    p.add_argument("-n", type=int, default=20, help="images per task (default 20)")
    p.add_argument("--seed", type=int, default=0)
    return parser


def _print_report(report: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=1))
        return
    print(f"{report['dir']}: {report['format']} ({report['description']})")
    for key, value in report["counts"].items():
        print(f"  {key}: {value}")
    if report.get("manifest"):
        print(f"  manifest: generator seed {report['manifest'].get('seed')}, "
              f"{report['manifest'].get('files')} files verified")
    print(f"{len(report['problems'])} problem(s)")
    for problem in report["problems"]:
        print(f"  - {problem}")


def check_dir(root: Path) -> dict:
    """Detect the format at ``root``, validate it and its manifest; the report ``rs-data check`` prints."""
    from .formats import detect_format
    from .manifest import verify_manifest

    fmt = detect_format(root)
    if fmt is None:
        raise DataFormatError(root, "no known dataset format here; expected one of: RRSIS-D, RefSegRS, "
                                    "GeoPixelD, DOTA, CoOp scene classification, chat/SFT JSON")
    problems = Problems(strict=False)
    counts = fmt.validate(root, problems)
    manifest = verify_manifest(root, problems)
    if manifest is not None and manifest.get("format") not in (None, fmt.name):
        problems.add(root / "manifest.json", f"manifest says format {manifest.get('format')!r}, "
                                             f"but the files are {fmt.name!r}")
    summary = None
    if manifest is not None:
        summary = {"seed": manifest.get("generator", {}).get("seed"), "files": len(manifest.get("files", {}))}
        for key, expected in manifest.get("counts", {}).items():
            if key in counts and counts[key] != expected:
                problems.add(root / "manifest.json", f"count {key!r} is {counts[key]}, manifest says {expected}")
    return {"dir": str(root), "format": fmt.name, "task": fmt.task, "description": fmt.description,
            "counts": counts, "manifest": summary, "problems": [str(p) for p in problems.items]}


def show(root: Path, index: int, out: Path, split: str | None = None) -> Path:
    from .. import viz
    from .formats import detect_format

    fmt = detect_format(root)
    if fmt is None:
        raise DataFormatError(root, "no known dataset format here (run `rs-data check` for details)")
    by_split = fmt.read(root)
    if split is not None and split not in by_split:
        raise DataFormatError(root, f"no split {split!r}; this dataset has {sorted(by_split)}")
    records = by_split[split] if split is not None else [r for rs in by_split.values() for r in rs]
    if not -len(records) <= index < len(records):
        raise DataFormatError(root, f"--index {index} is out of range: the dataset has {len(records)} records")
    return viz.save_png(fmt.preview(records[index]), out)


def _convert_own_data(args: argparse.Namespace) -> dict[str, int]:
    from . import ingest

    split = {"root": args.root, "p_train": args.p_train, "p_val": args.p_val, "seed": args.seed}
    if args.conversion == "labels-to-scene":
        return ingest.labels_to_scene(args.table, args.out, name=args.name, **split)
    convert = {"masks-to-refsegrs": ingest.masks_to_refsegrs, "captions-to-geopixeld": ingest.captions_to_geopixeld,
               "qa-to-sft": ingest.qa_to_sft}[args.conversion]
    return convert(args.table, args.out, **split)


def quickstart(out: Path, n: int, seed: int) -> int:
    from .synthetic.export import synthesize

    failed = 0
    for task in TASKS:
        root = out / task
        synthesize(task, root, n=n, seed=seed)
        report = check_dir(root)
        picture = show(root, 0, out / f"{task}.png")
        status = "ok" if not report["problems"] else f"{len(report['problems'])} problem(s)"
        failed += bool(report["problems"])
        counts = ", ".join(f"{k} {v}" for k, v in report["counts"].items() if isinstance(v, int))
        print(f"{task:7s} {report['format']:9s} {counts}; check: {status}; picture: {picture}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "synth":
            from .synthetic.export import synthesize

            counts = synthesize(args.task, args.out, n=args.n, seed=args.seed, size=args.size, layout=args.layout,
                                object_scale=args.object_scale, regions=args.regions)
            print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        elif args.command == "check":
            report = check_dir(args.dir)
            _print_report(report, args.json)
            return 1 if report["problems"] else 0
        elif args.command == "show":
            print(show(args.dir, args.index, args.out, args.split))
        elif args.command == "convert":
            from . import convert

            if args.conversion == "folders-to-split":
                counts = convert.folders_to_split(args.image_dir, args.out_json, args.p_train, args.p_val, args.seed)
            elif args.conversion == "dota-tiles":
                counts = convert.dota_tiles(args.src, args.out, args.size, args.gap, args.iof_thr, args.classes)
            elif args.conversion == "dota-to-sft":
                counts = convert.dota_to_sft(args.src, args.out_json, args.classes)
            elif args.conversion == "geopixeld-to-rrsisd":
                counts = convert.geopixeld_to_rrsisd(args.src, args.out)
            elif args.conversion in OWN_DATA:
                counts = _convert_own_data(args)
            else:
                counts = convert.to_arrow(args.src, args.out)
            print(", ".join(f"{k} {v}" for k, v in counts.items()))
        elif args.command == "quickstart":
            return quickstart(args.out, args.n, args.seed)
    except DataFormatError as e:
        print(f"rs-data: error: {e}", file=sys.stderr)
        return 1
    except (FileExistsError, ValueError) as e:  # bad arguments: a non-empty --out, -n 0, fractions > 1, ...
        print(f"rs-data: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
