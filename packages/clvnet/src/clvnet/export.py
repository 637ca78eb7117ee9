"""``clvnet-export``: merge the LLM's peft LoRA adapters into its base weights and save a plain model directory.

A model trained with ``llm_training="lora"`` (the paper recipe) holds, for every targeted Llama linear,
``…q_proj.base_layer.weight`` plus ``lora_A``/``lora_B``. :func:`merge_lora` adds ``scale · B·A`` to each base weight
and puts the plain ``nn.Linear`` back in place; the config then says ``llm_training="full"``, so the exported
directory loads strictly as an ordinary CLV-Net with the same outputs (up to float rounding) and no peft wrapper
(faster inference, any tool that reads Llama weights can read it). IXC-2.5's Partial LoRA is not merged: its delta
applies at image positions only (:mod:`clvnet.partial_lora`), so it stays a module of its own.

Exit codes: 0 done; 2 bad arguments, a missing directory, or a model without LoRA adapters.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from rs_shared.hub import CARD_FILE

from .modeling import CLVNetModel

EXIT_BAD_INPUT = 2


def merge_lora(model: CLVNetModel) -> CLVNetModel:
    """Merge ``model.language_model``'s LoRA adapters into the base weights, in place, and return the model with
    ``config.llm_training = "full"`` and the trainable parameters of that mode. ``ValueError`` if it has none."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    if model.config.llm_training != "lora":
        raise ValueError(f"the model has no LoRA adapters to merge (llm_training={model.config.llm_training!r}): "
                         "it is already a plain model")
    llm = model.language_model
    wrapped = [(name, module) for name, module in llm.named_modules() if isinstance(module, BaseTunerLayer)]
    for name, module in wrapped:
        module.merge(safe_merge=True)  # raises on non-finite merged weights
        parent, _, child = name.rpartition(".")
        setattr(llm.get_submodule(parent), child, module.get_base_layer())
    model.config.llm_training = "full"
    model.set_trainable_parameters()
    return model


def export(model_dir: str | Path, out: str | Path) -> Path:
    """Load ``model_dir`` (strictly), merge its LoRA adapters and write model, tokenizer and model card to ``out``.
    The card, if there is one, is copied with a section saying what was merged; its metrics still apply."""
    from .tokenizer import load_tokenizer

    model_dir, out = Path(model_dir), Path(out)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"--model {model_dir} is not a CLV-Net save_pretrained directory (no config.json)")
    if out.resolve() == model_dir.resolve():
        raise ValueError("--out must differ from --model (the original directory is kept)")
    model = merge_lora(CLVNetModel.from_pretrained(model_dir).eval())
    model.save_pretrained(out)
    load_tokenizer(model_dir).save_pretrained(out)
    card = model_dir / CARD_FILE
    if card.is_file():
        shutil.copyfile(card, out / CARD_FILE)
        with open(out / CARD_FILE, "a", encoding="utf-8") as f:
            f.write(f"\n## Export\n\n`clvnet-export` merged the LLM's LoRA adapters into its base weights "
                    f"(`llm_training: full` in config.json) from `{model_dir}`. Outputs equal the original's up to "
                    "float rounding; the evaluation above names the original directory.\n")
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clvnet-export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help="CLV-Net directory trained with LoRA (e.g. <clvnet-train output>/model)")
    parser.add_argument("--out", required=True, help="output directory of the merged model (weights, config, "
                                                     "tokenizer, model card)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = export(args.model, args.out)
    except (FileNotFoundError, ValueError) as e:  # incl. WeightsMismatchError
        print(f"clvnet-export: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
