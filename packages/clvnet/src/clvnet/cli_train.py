"""``clvnet-train``: train CLV-Net (spec §2, §5).

Presets are found by name or as ``configs/<name>.yaml``: ``tiny-synthetic`` (the tiny random model on synthetic
GCG tiles, CPU) and ``paper`` (the paper recipe from a converted GeoPixel/IXC-2.5 checkpoint given as
``--model.init``). Every ``--key value`` option overrides the config file; ``--model.ablation`` runs one ablation row
of the paper (e.g. ``no_cgformer``). Multi-process runs go through ``accelerate launch --config_file <rs_shared
accelerate config> -m clvnet.cli_train …``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from rs_shared.data.errors import DataFormatError
from rs_shared.metrics.captioning import JavaNotFoundError
from rs_shared.training import CheckpointError, ConfigError, parse_config, resolve_config_argument

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
PROG = "clvnet-train"
DESCRIPTION = (
    "Train CLV-Net (box-prompted grounded captioning with masks). Presets: --config tiny-synthetic (tiny random "
    "model trained from scratch on synthetic GeoPixelD-format tiles, CPU) and --config paper (the paper recipe: "
    "set --model.init to a directory made by clvnet-convert and --data.train to GeoPixelD.json). Ablations: "
    "--model.ablation no_box|no_cgformer|lambda0|lambda0.5|lambda5|csc_only|rec_only. Resume: --train.resume auto. "
    "The trained model is written to <train.output_dir>/model (read by clvnet-eval / clvnet-predict) with a model "
    "card (README.md: training data, configuration, and the clvnet-eval command run at the end of training with its "
    "metrics; options --eval.*).")


def main(argv: Sequence[str] | None = None) -> int:
    from clvnet.train import CLVNetTrainConfig, run  # absolute: the file is also launched as a script

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = resolve_config_argument(argv, CONFIG_DIR)  # packaged presets by name
    except FileNotFoundError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    cfg = parse_config(CLVNetTrainConfig, argv, prog=PROG, description=DESCRIPTION)
    try:
        result = run(cfg)
    except (CheckpointError, ConfigError, DataFormatError, FileNotFoundError, JavaNotFoundError, ValueError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    if not result["main_process"]:
        return 0
    print(f"trained {result['step']} steps on {result['samples']} tiles ({result['processes']} process(es)); "
          f"last loss {result['logs']['loss']:.4f}")
    print(f"model: {result['model']}  (model card: README.md)")
    if result["evaluation"] is not None:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in result["evaluation"].metrics.items() if k != "num_images")
        print(f"evaluation: {result['evaluation'].command_line}\n  {metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
