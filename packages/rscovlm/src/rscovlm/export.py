"""``rscovlm-export``: a training checkpoint → a model directory, LoRA adapters merged into the base weights.

``rscovlm-train`` writes ``<output_dir>/model`` at the end of a run (LoRA already merged). Its checkpoints
(``checkpoints/step_<N>/model.safetensors``) hold the model as it trains: with ``lora.enabled``, the peft wrapper's
base weights and adapters (``…q_proj.base_layer.weight``, ``…q_proj.lora_A.default.weight``), which no model loader
reads. This tool rebuilds the run's model from its ``train_config.yaml`` (same preset, base checkpoint and LoRA
layout), loads the checkpoint's weights strictly, merges the adapters (peft ``merge_and_unload``: ``W + s·B·A``) and
saves a plain ``save_pretrained`` directory (weights, tokenizer, ``preprocessor_config.json``, a model card) that
:func:`rscovlm.model_factory.load_pretrained` and ``rscovlm-eval`` read strictly. Checkpoints of full fine-tuning
are exported the same way, without a merge.

Exit codes: 0 done; 2 bad arguments, an incomplete checkpoint, a missing or invalid run config, or weights that do
not fit it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rs_shared.hub import load_state_dict_strict, write_model_card
from rs_shared.training import ConfigError, checkpoint_problem, config_to_dict, load_config
from safetensors.torch import load_file

from .model_factory import LoadedModel, save_pretrained
from .train import RSCoVLMTrainConfig, add_lora, build_model, training_summary

EXIT_BAD_INPUT = 2


def export_checkpoint(checkpoint: str | Path, out: str | Path, config: str | Path | None = None) -> Path:
    """Write checkpoint ``checkpoint`` of an ``rscovlm-train`` run as a model directory ``out`` (LoRA merged).
    ``config`` is the run's ``train_config.yaml`` (default: ``<checkpoint>/../../train_config.yaml``)."""
    checkpoint, out = Path(checkpoint), Path(out)
    problem = checkpoint_problem(checkpoint)
    if problem is not None:
        raise FileNotFoundError(f"--checkpoint {checkpoint} is not a complete training checkpoint: {problem}")
    config_file = Path(config) if config else checkpoint.parent.parent / "train_config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} does not exist: pass --config with the run's train_config.yaml")
    try:
        cfg = load_config(RSCoVLMTrainConfig, config_file)
    except ConfigError as e:
        raise ValueError(f"{config_file}: {e}") from None
    loaded = build_model(cfg.model)
    model = add_lora(loaded.model, cfg.lora) if cfg.lora.enabled else loaded.model
    weights = checkpoint / "model.safetensors"
    load_state_dict_strict(model, load_file(weights), weights)
    if cfg.lora.enabled:
        model = model.merge_and_unload()
    model.config.use_cache = True
    save_pretrained(LoadedModel(model.eval(), loaded.tokenizer, loaded.image_settings), out)
    step = json.loads((checkpoint / "complete.json").read_text(encoding="utf-8"))["step"]
    merged = " with its LoRA adapters merged into the base weights" if cfg.lora.enabled else ""
    write_model_card(out, model_name="RSCoVLM", preset=cfg.model.preset, package="rs-rscovlm",
                     training_data=training_summary(cfg, None), config=config_to_dict(cfg),
                     evaluations=[], notes=[f"Exported by `rscovlm-export` from the training checkpoint `{checkpoint}` "
                                            f"(step {step}){merged}. Evaluate it with `rscovlm-eval --model {out} "
                                            "--task TASK`."])
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rscovlm-export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="a complete training checkpoint, e.g. runs/rscovlm/checkpoints/step_001000")
    parser.add_argument("--out", required=True, help="output model directory")
    parser.add_argument("--config", help="the run's train_config.yaml (default: two levels above --checkpoint)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = export_checkpoint(args.checkpoint, args.out, args.config)
    except (FileNotFoundError, ValueError) as e:  # incl. WeightsMismatchError
        print(f"rscovlm-export: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
