"""``clvnet-predict``: box-prompted grounded caption and masks for one image with a saved CLV-Net (spec §1.6).

Writes ``<out>/<name>.json`` ({text, caption, phrases, masks as COCO RLE, mask_scores, box}) and
``<out>/<name>.png`` (masks, the prompt box in white, the caption with each phrase in its mask's colour), and
prints the caption.

Exit codes: 0 done; 2 bad arguments, missing files or an invalid box.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import predict

EXIT_BAD_INPUT = 2


def parse_box(text: str) -> list[float]:
    """``"x1,y1,x2,y2"`` → four floats (argparse type)."""
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"expected x1,y1,x2,y2 (four numbers in pixels), got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clvnet-predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="saved CLV-Net directory (save_pretrained output + tokenizer)")
    parser.add_argument("--image", required=True, help="input image (PNG/JPEG/TIFF …; converted to RGB)")
    parser.add_argument("--box", type=parse_box, help="box prompt x1,y1,x2,y2 in image pixels (default: whole image)")
    parser.add_argument("--out", default="clvnet_predict", help="output directory (default: %(default)s)")
    parser.add_argument("--name", help="output file stem (default: the image's stem)")
    parser.add_argument("--max-new-tokens", type=int, help="generation budget (default: the model config's)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    return parser


def run(args: argparse.Namespace) -> dict[str, Path]:
    """Predict as the parsed ``args`` say; returns the written paths (``json``, ``png``)."""
    image_path = Path(args.image)
    if not image_path.is_file():
        raise FileNotFoundError(f"--image {image_path} does not exist")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    image = predict.read_rgb(image_path)
    box = predict.prompt_box(args.box, image.shape[1], image.shape[0])  # check before the slow model load
    model, processor = predict.load_for_inference(args.model, args.device)
    pred = predict.predict_image(model, processor, image, box, max_new_tokens=args.max_new_tokens)
    paths = predict.write_prediction(pred, image, box, args.out, args.name or image_path.stem)
    print(pred.caption)
    return paths


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        paths = run(args)
    except (FileNotFoundError, ValueError) as e:  # incl. DataFormatError (unreadable image)
        print(f"clvnet-predict: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {paths['json']} and {paths['png']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
