"""``rs-demo``: one Gradio app, one tab per model, on CPU in one process.

Models given on the command line are loaded from their directories; for each one that is not, the package's tiny
preset is trained briefly on synthetic data by the package's own training command and cached
(:mod:`rs_demo.fallback`), so the demo works on a fresh clone: a few minutes the first time, seconds afterwards.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .fallback import (
    BUDGETS,
    DEFAULT_BUDGET,
    PACKAGES,
    FallbackError,
    default_cache_dir,
    ensure_fallback,
    fallback_entry,
)

logger = logging.getLogger("rs_demo")

EXPECTED = {
    "bimors": "a bimors-train model directory (<output_dir>/<dataset>-<subsample>/seed<k>/model, with its "
              "training.json)",
    "icipnet": "an icipnet-train output directory (<output_dir>/model or <output_dir>/best)",
    "clvnet": "a clvnet-train output directory (<output_dir>/model) or a clvnet-convert output",
    "rscovlm": "an rscovlm-train output directory (<output_dir>/model) or a local Qwen2.5-VL checkpoint with "
               "preprocessor_config.json",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rs-demo", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve one Gradio app with a tab per model: scene classification (BiMoRS), referring "
                    "segmentation (ICIPNet), box-prompted grounded captions with masks (CLV-Net) and chat with "
                    "zoom-in and detection boxes (RSCoVLM). Runs on CPU in one process; nothing is downloaded.",
        epilog="A model not given is replaced by its package's tiny preset trained for a short while on synthetic "
               "data (by <pkg>-train, cached under --cache-dir; a few minutes the first time). Those fallbacks are "
               "untrained-scale toys: they show the interface, not the papers' results.\n\n"
               "Example:\n  rs-demo --icipnet runs/icipnet-tiny/best --port 7860")
    for package in PACKAGES:
        parser.add_argument(f"--{package}", metavar="DIR", type=Path,
                            help=f"{EXPECTED[package]}; default: the cached fallback")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help=f"where fallback models are built and kept (default: {default_cache_dir()})")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default=DEFAULT_BUDGET,
                        help="training budget of the fallbacks: demo (default; 1-2 minutes per package on 2 cores) "
                             "or smoke (a few steps: only checks that everything runs)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for inference and for building fallbacks (default 1)")
    parser.add_argument("--prepare-only", action="store_true",
                        help="build or check the fallbacks, load every model, then exit without serving")
    return parser


def load_models(args: argparse.Namespace) -> tuple[dict, dict[str, str]]:
    """``(models, sources)``: each package's model from its ``--<pkg>`` directory or its fallback, and one line per
    package saying which."""
    from .models import GroundedCaptioner, ModelLoadError, ReferringSegmenter, SceneClassifier, ZoomChat

    loaders = {"bimors": SceneClassifier, "icipnet": ReferringSegmenter, "clvnet": GroundedCaptioner,
               "rscovlm": ZoomChat}
    cache_dir = args.cache_dir or default_cache_dir()
    models, sources = {}, {}
    for package in PACKAGES:
        given = getattr(args, package)
        if given is not None:
            directory, sources[package] = given, f"checkpoint `{given}`"
        else:
            directory = ensure_fallback(package, cache_dir, args.budget, args.threads)
            logger.warning("%s: no --%s given; using the fallback: the tiny preset trained briefly on synthetic "
                           "data (%s budget), an untrained-scale toy, not the paper's model: %s",
                           package, package, args.budget, directory)
            sources[package] = (f"fallback `{directory}`: tiny preset trained briefly on synthetic data "
                                f"({args.budget} budget), an untrained-scale toy")
        logger.info("%s: loading %s", package, directory)
        try:
            models[package] = loaders[package](directory)
        except ModelLoadError:
            raise
        except (RuntimeError, ValueError, KeyError, OSError) as e:  # what a package's strict loading raises
            hint = f"expected {EXPECTED[package]}" if given is not None else \
                f"delete {fallback_entry(package, cache_dir, args.budget)} to rebuild the fallback"
            raise ModelLoadError(f"{package}: {directory} does not load with the installed rs-{package} "
                                 f"({type(e).__name__}: {e}); {hint}") from e
    return models, sources


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("rs-demo: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import torch

    from .models import ModelLoadError

    torch.set_num_threads(args.threads)
    for package in PACKAGES:
        given = getattr(args, package)
        if given is not None and not given.is_dir():
            print(f"rs-demo: error: --{package} {given} is not a directory; expected {EXPECTED[package]}",
                  file=sys.stderr)
            return 2
    try:
        models, sources = load_models(args)
    except (FallbackError, ModelLoadError, FileNotFoundError, OSError) as e:
        print(f"rs-demo: error: {e}", file=sys.stderr)
        return 1
    if args.prepare_only:
        logger.info("every model is loaded; --prepare-only: not serving")
        return 0
    from .ui import CSS, THEME, build_app

    app = build_app(models, sources)
    logger.info("serving on http://%s:%d", args.host, args.port)
    app.launch(server_name=args.host, server_port=args.port, theme=THEME, css=CSS, ssr_mode=False, footer_links=[],
               show_error=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
