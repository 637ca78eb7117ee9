"""``rscovlm-data``: convert the recipe's real datasets into conversation sources for ``rscovlm-train
--data.sources NAME=OUT`` (spec §2.1, §2.4), or with ``--eval`` into ``rscovlm-eval --data`` sets.

OUT ending in ``.json`` is written as a LLaVA-style list, ``.jsonl`` as unified records (lrs-vqa-zoom needs
``.jsonl``: its image items carry the resized size). Image paths are written relative to OUT's folder, so
keep the images where they are (or move them together with OUT). Boxes stay in the files' own frame and
each record says which (``coords``); training rewrites them into the resized frame.

Exit codes: 0 success; 1 bad input data (the message names the file, line or record and the field); 2 bad
arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rs_shared.data.dota import CLASS_LISTS
from rs_shared.data.errors import DataFormatError
from rs_shared.data.scene_cls import SPLITS

from .resize import PAPER_MAX_PIXELS, PAPER_MIN_PIXELS
from .sources import (
    BOX_KINDS,
    detection_conversations,
    geochat_conversations,
    grounding_conversations,
    grounding_eval_records,
    read_dior_rsvg,
    read_refgeo,
    write_eval_jsonl,
    write_source,
)
from .sources_qa import (
    lrs_zoom_conversations,
    qa_conversations,
    qa_eval_records,
    read_captions,
    read_rsvqa,
    read_scene,
)

EPILOG = """examples (see the package README for the whole table):
  rscovlm-data refgeo refGeo/train.jsonl data/refgeo_hbb.json --kind hbb
  rscovlm-data dota DOTA-v1.0/trainval512 data/dota_poly.json --kind poly
  rscovlm-data geochat GeoChat_Instruct.json data/geochat.json --image-root GeoChat/images
  rscovlm-data captions RSICD/dataset_rsicd.json data/rsicd_test.jsonl --images RSICD/RSICD_images --split test --eval
  rscovlm-train --config paper --data.sources refgeo_hbb=data/refgeo_hbb.json,dota_poly=data/dota_poly.json \\
      --data.recipe refgeo_hbb,dota_poly*25
"""
EVAL_HELP = "write an rscovlm-eval set (JSON lines, task {task}) instead of training conversations"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rscovlm-data", description=__doc__.split("\n\n")[0],
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")

    def add(name: str, help: str, source: str, metavar: str, input_help: str,
            eval_task: str | None = None) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("input", type=Path, metavar=metavar, help=input_help)
        p.add_argument("out", type=Path, metavar="OUT", help="file to write: .json (LLaVA list) or .jsonl (unified)")
        p.add_argument("--source", default=source, help=f"source name stored in each record (default {source})")
        if eval_task:
            p.add_argument("--eval", action="store_true", help=EVAL_HELP.format(task=eval_task))
        return p

    p = add("refgeo", "refGeo JSON lines -> grounding (HBB or polygon)", "refgeo", "JSONL",
            "refGeo JSON-lines file", "vg")
    p.add_argument("--image-root", type=Path, help="folder holding images/<dataset>/<image_id> (default: the "
                                                   "file's folder)")
    p.add_argument("--kind", choices=BOX_KINDS, default="hbb",
                   help="hbb: x1,y1,x2,y2 answers (refgeo_hbb); poly: 8-number polygons (refgeo_poly)")

    p = add("dior-rsvg", "DIOR-RSVG (Annotations/*.xml + JPEGImages/) -> HBB grounding", "dior_rsvg", "ROOT",
            "DIOR-RSVG folder", "vg")
    p.add_argument("--split-file", type=Path, help="annotation ids to convert, one per line (e.g. train.txt); "
                                                   "default every XML file")

    p = add("dota", "DOTA (images/ + labelTxt/) -> detection of every class", "dota", "ROOT",
            "DOTA folder; the recipe uses 512-pixel tiles: `rs-data convert dota-tiles SRC ROOT --size 512`")
    p.add_argument("--kind", choices=BOX_KINDS, default="poly",
                   help="poly: quadrilateral answers (dota_poly); hbb: horizontal boxes (dota_hbb)")
    p.add_argument("--classes", choices=sorted(CLASS_LISTS), default="DOTA-v1.0", help="class list of the labels")

    p = add("geochat", "GeoChat / TEOChatlas instruct JSON (0-100 boxes) -> conversations", "geochat", "JSON",
            "LLaVA-style instruct JSON")
    p.add_argument("--image-root", type=Path, help="folder the records' image paths are relative to "
                                                   "(default: the file's folder)")

    p = add("rsvqa", "RSVQA (LR or HR) questions/answers JSON -> VQA", "rsvqa", "ROOT",
            "folder holding <prefix>_questions.json and _answers.json", "vqa")
    p.add_argument("--prefix", required=True, help="file prefix of the split, e.g. LR_split_train or USGS_split_test")
    p.add_argument("--images", type=Path, required=True, help="folder of <img_id>.tif images (e.g. ROOT/Images_LR)")

    p = add("scene", "scene classification folders (UCM, NWPU-RESISC45, AID, ...) -> classification", "scene",
            "PATH", "folder of class sub-folders, or a CoOp split JSON", "cls")
    p.add_argument("--split", choices=SPLITS, help="split of the CoOp JSON to convert (required for a JSON)")

    p = add("captions", "RSICD / UCM-captions / Sydney-captions Karpathy JSON -> captioning", "captions", "JSON",
            "Karpathy-style dataset_*.json", "cap")
    p.add_argument("--images", type=Path, required=True, help="folder of the images named by 'filename'")
    p.add_argument("--split", help="only images of this split (train, val, test); default all")

    p = add("lrs-vqa-zoom", "LRS-VQA-Zoom JSON -> zoom-in chain conversations (crops written beside OUT)",
            "lrsvqa_zoom", "JSON", "LRS-VQA-Zoom JSON list")
    p.add_argument("--images", type=Path, required=True, help="folder the records' 'image' paths are relative to")
    p.add_argument("--min-pixels", type=int, default=PAPER_MIN_PIXELS,
                   help=f"smart_resize lower bound of the training run (default {PAPER_MIN_PIXELS})")
    p.add_argument("--max-pixels", type=int, default=PAPER_MAX_PIXELS,
                   help=f"smart_resize upper bound of the training run (default {PAPER_MAX_PIXELS}); the tool "
                        "call's box is written in this resized frame")
    return parser


def convert(args: argparse.Namespace) -> tuple[Path, int]:
    """Run the conversion ``args`` describe; returns the written file and its record count."""
    fmt, evaluate = args.format, getattr(args, "eval", False)
    if fmt in ("refgeo", "dior-rsvg"):
        items = (read_refgeo(args.input, args.image_root) if fmt == "refgeo"
                 else read_dior_rsvg(args.input, args.split_file))
        if evaluate:
            return write_eval_jsonl(args.out, grounding_eval_records(items)), len(items)
        conversations = grounding_conversations(items, getattr(args, "kind", "hbb"), args.source)
    elif fmt == "dota":
        conversations = detection_conversations(args.input, args.kind, args.classes, args.source)
    elif fmt == "geochat":
        conversations = geochat_conversations(args.input, args.image_root, args.source)
    elif fmt == "lrs-vqa-zoom":
        if args.out.suffix != ".jsonl":
            raise ValueError(f"{args.out}: lrs-vqa-zoom writes unified records; name the output *.jsonl")
        conversations = lrs_zoom_conversations(args.input, args.images, args.out.parent / f"{args.out.stem}_crops",
                                               args.min_pixels, args.max_pixels, args.source)
    else:
        task = {"rsvqa": "vqa", "scene": "cls", "captions": "cap"}[fmt]
        if fmt == "rsvqa":
            items = read_rsvqa(args.input, args.prefix, args.images)
        elif fmt == "scene":
            items = read_scene(args.input, args.split)
        else:
            items = read_captions(args.input, args.images, args.split)
        if evaluate:
            return write_eval_jsonl(args.out, qa_eval_records(items, task)), len(items)
        conversations = qa_conversations(items, args.source)
    return write_source(args.out, conversations), len(conversations)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        path, count = convert(args)
    except DataFormatError as e:
        print(f"rscovlm-data: {e}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as e:
        print(f"rscovlm-data: {e}", file=sys.stderr)
        return 2
    if getattr(args, "eval", False):
        print(f"wrote {count} records to {path}; evaluate with rscovlm-eval --data {path}")
    else:
        print(f"wrote {count} conversations to {path}; train with --data.sources {args.source}={path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
