"""``rscovlm-train``: supervised fine-tuning of RSCoVLM (spec §1, §2).

Presets are found by name or as ``configs/<name>.yaml``: ``tiny-synthetic`` (the tiny random model on the
synthetic SFT mixture, CPU) and ``paper`` (Qwen2.5-VL-7B-Instruct from a local ``--model.path``, the paper
recipe). Every ``--key value`` option overrides the config file. Multi-process runs go through
``accelerate launch --config_file <rs_shared accelerate config> -m rscovlm.cli_train …`` (e.g. DeepSpeed
ZeRO-1 for the paper preset).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from rs_shared.data.errors import DataFormatError
from rs_shared.training import ConfigError, parse_config, resolve_config_argument

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
PROG = "rscovlm-train"
DESCRIPTION = (
    "Fine-tune RSCoVLM (Qwen2.5-VL) on an SFT mixture. Presets: --config tiny-synthetic (tiny random model, "
    "synthetic counting/classification/detection/grounding data, CPU) and --config paper (the paper recipe; "
    "set --model.path to a local Qwen2.5-VL-7B-Instruct directory and launch with accelerate + the "
    "deepspeed_zero1 config). Mixture: --data.sources NAME=PATH,... --data.recipe NAME*K,NAME%P,... "
    "LoRA: --lora.enabled true. Resume: --train.resume auto. The trained model is written to "
    "<train.output_dir>/model (readable by rscovlm-eval / rscovlm-chat) with a model card (README.md) quoting the "
    "rscovlm-eval commands of --eval.tasks run at the end of training and their metrics. rscovlm-export turns a "
    "checkpoint (LoRA merged) into a model directory.")


def main(argv: Sequence[str] | None = None) -> int:
    from rscovlm.train import RSCoVLMTrainConfig, run  # absolute: the file is also launched as a script

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = resolve_config_argument(argv, CONFIG_DIR)  # packaged presets by name
    except FileNotFoundError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    cfg = parse_config(RSCoVLMTrainConfig, argv, prog=PROG, description=DESCRIPTION)
    try:
        result = run(cfg)
    except (ConfigError, DataFormatError, FileNotFoundError, KeyError, ValueError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    if not result["main_process"]:
        return 0
    print(f"trained {result['step']} steps on {result['samples']} mixture samples "
          f"({result['processes']} process(es)); last loss {result['logs']['loss']:.4f}")
    print(f"model: {result['model']}  (model card: README.md)")
    for evaluation in result["evaluations"]:
        print(f"evaluation: {evaluation.command_line}\n  " +
              ", ".join(f"{k} {v:.4f}" for k, v in evaluation.metrics.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
