"""``rscovlm-chat``: ask one question about one image, optionally with the Zoom-in Chain (spec §4.3).

Prints the answer; writes ``chat.json`` (every round: prompt, output, parsed tool call or its failure, crop
box) and, when the answer parses as detection/grounding lines, ``overlay.png`` with the boxes drawn on the
image (``rs_shared.viz``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from rs_shared.data.geometry import Boxes, xyxy_to_quad
from rs_shared.viz import draw_boxes, save_png

from .inference import HFGenerator, load_model, single_turn
from .parsing import parse_detection
from .templates import DEFAULT_SYSTEM_PROMPT, SYSTEM_PROMPTS
from .zoom import CROP_SOURCES, ZoomRound, run_zoom_chain

SYSTEMS = {"default": DEFAULT_SYSTEM_PROMPT, **SYSTEM_PROMPTS}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rscovlm-chat", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help="a local checkpoint directory (config.json, weights, tokenizer, preprocessor_config.json) "
                             "or 'tiny' for the random offline tiny preset")
    parser.add_argument("--image", required=True, help="the image file (any format PIL reads)")
    parser.add_argument("--prompt", required=True, help="the question or instruction, e.g. 'find the plane'")
    parser.add_argument("--zoom", type=int, default=0, metavar="N",
                        help="max zoom-in steps (0: a plain single-turn answer; N > 0: the tool prompt and up to N "
                             "crops, §4.3)")
    parser.add_argument("--crop-source", choices=CROP_SOURCES, default="resized",
                        help="crop the zoom region from the resized image (official parity) or the original one "
                             "(paper intent)")
    parser.add_argument("--system", choices=sorted(SYSTEMS), default="default",
                        help="system turn when --zoom 0: default assistant, or the hbb/poly/obb detector prompts")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="generation budget per round")
    parser.add_argument("--min-pixels", type=int, help="override the checkpoint's min_pixels")
    parser.add_argument("--max-pixels", type=int, help="override the checkpoint's max_pixels")
    parser.add_argument("--out", default="rscovlm_chat", help="directory for chat.json and overlay.png")
    return parser


def _overlay_boxes(answer: str, frame) -> tuple[np.ndarray, list[str]]:
    """Quads (original frame) and labels of the answer read as polygon lines, else as HBB lines."""
    for kind in ("poly", "hbb"):
        parsed = parse_detection(answer, frame=frame, kind=kind)
        if parsed.objects:
            coords = np.array([o.coords for o in parsed.objects], dtype=np.float64)
            quads = coords if kind == "poly" else xyxy_to_quad(coords)
            return quads, [o.raw_label for o in parsed.objects]
    return np.zeros((0, 8)), []


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.zoom < 0 or args.max_new_tokens < 1:
        print("rscovlm-chat: --zoom must be >= 0 and --max-new-tokens >= 1", file=sys.stderr)
        return 2
    try:
        with Image.open(args.image) as opened:
            image = opened.convert("RGB")
    except OSError as e:
        print(f"rscovlm-chat: cannot read {args.image}: {e}", file=sys.stderr)
        return 2
    generator = HFGenerator(load_model(args.model, args.min_pixels, args.max_pixels), args.max_new_tokens)
    if args.zoom > 0:
        chain = run_zoom_chain(generator, [args.prompt], [image], args.zoom, args.crop_source)[0]
        record = chain.to_dict()
        answer, frame = chain.answer, chain.frame
    else:
        answer = generator.generate([single_turn(args.prompt, image, SYSTEMS[args.system])])[0]
        frame = generator.image_settings.frame(*image.size)
        record = {"answer": answer, "capped": False, "original_size": list(frame.original),
                  "resized_size": list(frame.resized), "rounds": [dataclasses.asdict(ZoomRound(args.prompt, answer))]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    quads, labels = _overlay_boxes(answer, frame)
    overlay = None
    if len(quads):
        overlay = save_png(draw_boxes(image, Boxes(quads, "quad", "pixel", image.size), labels), out / "overlay.png")
    record.update(model=args.model, image=str(args.image), prompt=args.prompt, zoom=args.zoom,
                  crop_source=args.crop_source, boxes=quads.tolist(), labels=labels,
                  overlay=str(overlay) if overlay else None)
    (out / "chat.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
