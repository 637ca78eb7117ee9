"""Training memory per GPU of the paper presets: weights, gradients, optimizer states, activations, and whether a
configuration fits in 24 / 48 / 80 GB. Prints one Markdown table per package (the tables of the package READMEs).

**Parameters** are counted on the models themselves, built on the meta device (no weights needed): all of them and
the trainable ones of each configuration (``set_trainable_parameters``; LoRA adapters counted from the targeted
layers' shapes). **States** follow from the counts, per parameter:

- fp32: 4 B per frozen parameter; 16 B per trainable one with AdamW (weight 4 + gradient 4 + moments 8; SGD with
  momentum: 12).
- bf16: 2 B per frozen parameter; 16 B per trainable one with AdamW (weight 2 + gradient 2 + fp32 master copy 4 +
  moments 8; DeepSpeed's bf16 mode). Plain autocast keeps fp32 weights: 2 B more per frozen parameter.

DeepSpeed ZeRO over ``g`` GPUs divides the optimizer states (stage 1), then the gradients too (stage 2), by ``g``.

**Activations** (what autograd keeps for the backward pass) are *measured* where the paper model runs on this CPU
(icipnet, bimors): one fp32 forward with the loss, counting every distinct tensor storage saved for backward that
is not a parameter (``torch.autograd.graph.saved_tensors_hooks``); other batch sizes scale it linearly and bf16
halves it (*computed*). For the 7B-class models (clvnet, rscovlm) they are *computed* from layer shapes and token
counts, per token and decoder layer of width ``h`` (key/value width ``h_kv``, MLP width ``i``), in elements:
``8h + 2h_kv + 4i`` (norm inputs/outputs, q/k/v before and after the rotary embedding, attention output with a
flash/SDPA kernel — no ``L²`` scores —, SwiGLU gate/up/product), plus, for each set of LoRA-style adapters with
dropout on the 7 projections, the dropped inputs ``6h + i`` (+ 1-byte masks) and the rank-``r`` outputs ``7r``.
Gradient checkpointing keeps each layer's input (``h``) and one layer's activations during recomputation. The
causal-LM loss keeps the fp32 log-softmax of the logits (``4V`` bytes per supervised token) and about ``4h`` elements
around the final norm. Frozen encoders fed by inputs without gradients keep nothing. ``--check`` measures a small
Llama (plain, with LoRA, with gradient checkpointing) against these formulas.

**Fits** when weights + gradients + optimizer states + activations + 2 GB (CUDA context, allocator slack, the
transient buffers of the largest op) ≤ the GPU's memory.

    uv run python benchmarks/memory_table.py [--packages icipnet,bimors,clvnet,rscovlm] [--no-measure] [--check]
        [--gpus 8] [--json memory.json]

A full run (both CPU measurements included) took under 3 minutes on this busy 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict, dataclass

import torch

GB = 1e9
OVERHEAD_GB = 2.0
CAPACITIES = (24, 48, 80)
PACKAGES = ("icipnet", "bimors", "clvnet", "rscovlm")


@dataclass(frozen=True)
class Row:
    """One configuration of a package and its memory per GPU (GB)."""

    config: str
    precision: str
    zero: str
    weights: float
    grads: float
    optimizer: float
    activations: float
    source: str  # "measured" | "computed"

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.activations

    def fits(self, capacity: int) -> bool:
        return self.total + OVERHEAD_GB <= capacity


def state_gb(total: int, trainable: int, precision: str, optimizer: str = "adamw", zero: int = 0,
             gpus: int = 1) -> tuple[float, float, float]:
    """(weights, gradients, optimizer states) in GB per GPU, by the table of the module docstring."""
    element = 2 if precision == "bf16" else 4
    moments = {"adamw": 8, "sgd": 4}[optimizer] + (4 if precision == "bf16" else 0)  # + fp32 master in bf16
    weights, grads, states = total * element, trainable * element, trainable * moments
    if zero >= 1:
        states /= gpus
    if zero >= 2:
        grads /= gpus
    return weights / GB, grads / GB, states / GB


def decoder_activations(tokens: int, layers: int, hidden: int, kv_hidden: int, intermediate: int, element: int,
                        checkpointing: bool, adapters: tuple[int, ...] = ()) -> float:
    """Bytes autograd keeps for ``layers`` pre-norm SwiGLU decoder layers over ``tokens`` tokens (module docstring);
    ``adapters`` lists the ranks of the adapter sets with dropout on the 7 projections of each layer."""
    per_token = (8 * hidden + 2 * kv_hidden + 4 * intermediate) * element
    for rank in adapters:
        dropped = 6 * hidden + intermediate
        per_token += dropped * (element + 1) + 7 * rank * element
    if checkpointing:
        return tokens * (layers * hidden * element + per_token)
    return tokens * layers * per_token


def loss_activations(tokens: int, vocab: int, hidden: int, element: int) -> float:
    """Bytes kept by the final norm and the causal-LM loss over ``tokens`` supervised tokens (fp32 log-softmax)."""
    return tokens * (4 * vocab + 4 * hidden * element)


def count(model: torch.nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def saved_bytes(model: torch.nn.Module, forward) -> int:
    """Bytes of the distinct non-parameter storages autograd saves while ``forward()`` runs (a forward + loss)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    return sum(saved.values())


# --------------------------------------------------------------------------------------------------------------
# packages


def icipnet_rows(measure: bool, gpus: int) -> list[Row]:
    from icipnet import IcipNetConfig, IcipNetModel
    from icipnet.loss import icipnet_loss

    config = IcipNetConfig.paper()
    with torch.device("meta"):
        meta = IcipNetModel(config)
    total, trainable = count(meta), count(meta, trainable=True)
    size = config.image_size
    if measure:
        torch.manual_seed(0)
        model = IcipNetModel(config).train()
        pixels = torch.randn(1, 3, size, size)
        ids = torch.randint(1, config.text_config.vocab_size, (1, config.max_text_len))
        mask = torch.ones_like(ids)
        labels = torch.randint(0, 2, (1, size, size))
        act = saved_bytes(model, lambda: icipnet_loss(model(pixels, ids, mask).logits, labels, config.ce_weights,
                                                      config.dice_weight)) / GB
        del model
    else:
        act = float("nan")
    rows = []
    for batch, precision in ((1, "fp32"), (4, "fp32"), (4, "bf16"), (8, "bf16")):
        scale = batch / (2 if precision == "bf16" else 1)
        source = "measured" if (batch, precision) == (1, "fp32") else "computed"
        rows.append(Row(f"{size}², batch {batch}", precision, "-", *state_gb(total, trainable, precision),
                        act * scale, source))
    w, g, o = state_gb(total, trainable, "bf16", zero=2, gpus=gpus)
    rows.append(Row(f"{size}², batch 4", "bf16", f"ZeRO-2 × {gpus}", w, g, o, act * 2, "computed"))
    return rows


def bimors_rows(measure: bool) -> list[Row]:
    from bimors import BiMoRSConfig, BiMoRSModel
    from bimors.datasets import PATTERNNET_CLASSES

    config = BiMoRSConfig.paper()
    torch.manual_seed(0)
    model = BiMoRSModel(config).train()  # 150 M parameters: built for real (open_clip initialises eagerly)
    total, trainable = count(model), count(model, trainable=True)
    classes = list(PATTERNNET_CLASSES[:19])  # B2N PatternNet base classes
    model.set_class_names(classes)
    batch, size = 4, model.clip.visual.image_size[0]
    if measure:
        pixels, captions = torch.randn(batch, 3, size, size), torch.randn(batch, config.caption_dim)
        labels = torch.randint(0, len(classes), (batch,))
        act = saved_bytes(model, lambda: model(pixels, captions, labels=labels).loss) / GB
    else:
        act = float("nan")
    rows = []
    for b, precision in ((4, "fp32"), (4, "bf16"), (32, "fp32"), (32, "bf16")):
        scale = b / batch / (2 if precision == "bf16" else 1)
        rows.append(Row(f"{size}², batch {b} × 19 classes", precision, "-",
                        *state_gb(total, trainable, precision, optimizer="sgd"), act * scale,
                        "measured" if (b, precision) == (4, "fp32") else "computed"))
    return rows


def clvnet_rows(gpus: int, text_tokens: int = 512) -> list[Row]:
    from clvnet.configuration import CLVNetConfig
    from clvnet.modeling import CLVNetModel
    from clvnet.processing import num_image_tokens
    from clvnet.tokenizer import TokenIds, build_tiny_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        ids = TokenIds.of(build_tiny_tokenizer(tmp)).config_kwargs()
    models = {}
    for mode in ("lora", "full"):
        with torch.device("meta"):
            models[mode] = CLVNetModel(CLVNetConfig.paper(**ids, llm_training=mode))
        models[mode].set_trainable_parameters()
    config = models["lora"].config
    text = config.text_config
    kv = text.num_key_value_heads * text.hidden_size // text.num_attention_heads
    per_side = config.view_tokens_side
    rows = []
    for mode, hd_num, precision, checkpointing, zero in (
            ("lora", 9, "bf16", True, 0), ("lora", 9, "bf16", False, 0), ("lora", 9, "fp32", True, 0),
            ("lora", 1, "bf16", True, 0), ("full", 9, "bf16", True, 2), ("full", 9, "bf16", True, 1)):
        model = models[mode]
        grid = {9: (3, 3), 1: (1, 1)}[hd_num]  # a square image
        image_tokens = num_image_tokens(grid, per_side)
        tokens = image_tokens + config.region_tokens + text_tokens
        element = 2 if precision == "bf16" else 4
        adapters = (config.partial_lora_rank,) + ((config.lora_r,) if mode == "lora" else ())
        act = decoder_activations(tokens, text.num_hidden_layers, text.hidden_size, kv, text.intermediate_size,
                                  element, checkpointing, adapters)
        act += loss_activations(text_tokens, text.vocab_size, text.hidden_size, element)  # answer tokens only
        act += image_tokens * (4 * config.vision_config.hidden_size + 2 * text.hidden_size) * element  # φ_l
        label = (f"{'LoRA r 8' if mode == 'lora' else 'full LLM'}, hd_num {hd_num} ({tokens} tokens), "
                 f"grad. ckpt {'on' if checkpointing else 'off'}")
        w, g, o = state_gb(count(model), count(model, trainable=True), precision, zero=zero, gpus=gpus)
        rows.append(Row(label, precision, f"ZeRO-{zero} × {gpus}" if zero else "-", w, g, o, act / GB, "computed"))
    return rows


def rscovlm_rows(gpus: int) -> list[Row]:
    from transformers import Qwen2_5_VLForConditionalGeneration

    from rscovlm.model_factory import paper_config
    from rscovlm.resize import PAPER_MAX_PIXELS
    from rscovlm.train import lora_targets

    config = paper_config()
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    total = count(model)
    lora_rank = 64
    shapes = {name: module.weight.shape for name, module in model.named_modules() if name in set(lora_targets(model))}
    lora = sum(lora_rank * (shape[0] + shape[1]) for shape in shapes.values())
    text, vision = config.text_config, config.vision_config
    kv = text.num_key_value_heads * text.hidden_size // text.num_attention_heads
    rows = []
    for lora_on, max_pixels, max_length, precision, checkpointing, zero in (
            (False, PAPER_MAX_PIXELS, 6144, "bf16", True, 1), (False, PAPER_MAX_PIXELS, 6144, "bf16", True, 2),
            (False, PAPER_MAX_PIXELS, 6144, "bf16", False, 1), (False, PAPER_MAX_PIXELS, 6144, "bf16", True, 0),
            (True, PAPER_MAX_PIXELS, 6144, "bf16", True, 0), (True, PAPER_MAX_PIXELS, 6144, "bf16", False, 0),
            (True, 512 * 512, 2048, "bf16", True, 0), (True, PAPER_MAX_PIXELS, 6144, "fp32", True, 0)):
        element = 2 if precision == "bf16" else 4
        patches = max_pixels // (vision.patch_size ** 2)
        act = decoder_activations(max_length, text.num_hidden_layers, text.hidden_size, kv, text.intermediate_size,
                                  element, checkpointing, (lora_rank,) if lora_on else ())
        act += loss_activations(max_length, text.vocab_size, text.hidden_size, element)
        if not lora_on:  # full fine-tuning trains the ViT too (LoRA leaves it frozen: nothing kept)
            act += decoder_activations(patches, vision.depth, vision.hidden_size, vision.hidden_size,
                                       vision.intermediate_size, element, checkpointing)
        trainable = lora if lora_on else total
        label = (f"{'LoRA r 64' if lora_on else 'full'}, max_pixels {max_pixels:,} ({patches} patches), "
                 f"max_length {max_length}, grad. ckpt {'on' if checkpointing else 'off'}")
        w, g, o = state_gb(total + (lora if lora_on else 0), trainable, precision, zero=zero, gpus=gpus)
        rows.append(Row(label, precision, f"ZeRO-{zero} × {gpus}" if zero else "-", w, g, o, act / GB, "computed"))
    return rows


# --------------------------------------------------------------------------------------------------------------
# formula check and output


def check_formula(tokens: int = 512) -> dict[str, float]:
    """Measured / computed activations of a small Llama (SDPA, fp32, 4 layers, loss on every token): plain, with
    peft LoRA r 8 (dropout 0.05 on the 7 projections; the first layer, whose input needs no gradient, keeps less), and
    with gradient checkpointing (forward only: the recomputation peak of one layer is not seen by the hook)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    layers, hidden, kv, intermediate = 4, 256, 128, 704
    config = LlamaConfig(vocab_size=4096, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, attn_implementation="sdpa")
    torch.manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (1, tokens))
    loss = loss_activations(tokens, config.vocab_size, hidden, 4)
    cases = {"plain": (0, False), "lora": (8, False), "checkpointing": (0, True)}
    out = {}
    for name, (rank, checkpointing) in cases.items():
        model = LlamaForCausalLM(config).train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if rank:
            targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
            model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=8, lora_dropout=0.05, target_modules=targets))
        measured = saved_bytes(model, lambda m=model: m(input_ids=ids, labels=ids).loss)
        computed = (tokens * layers * hidden * 4 if checkpointing else
                    decoder_activations(tokens, layers, hidden, kv, intermediate, 4, False, (rank,) if rank else ()))
        out[name] = measured / (computed + loss)
    return out


def markdown(package: str, rows: list[Row]) -> str:
    lines = ["| configuration | precision | ZeRO | weights | grads | optimizer | activations | total | "
             + " | ".join(f"{c} GB" for c in CAPACITIES) + " |",
             "|---|---|---|---:|---:|---:|---:|---:|" + "---|" * len(CAPACITIES)]
    for r in rows:
        known = r.activations == r.activations  # NaN without the CPU measurement (--no-measure)
        act, total = (f"{r.activations:.1f} ({r.source})", f"{r.total:.1f}") if known else ("not measured", "?")
        fits = " | ".join(("yes" if r.fits(c) else "no") if known else "?" for c in CAPACITIES)
        lines.append(f"| {r.config} | {r.precision} | {r.zero} | {r.weights:.1f} | {r.grads:.1f} | {r.optimizer:.1f} "
                     f"| {act} | {total} | {fits} |")
    return f"### {package}\n\n" + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--packages", default=",".join(PACKAGES),
                        help=f"comma-separated subset of {','.join(PACKAGES)} (default: all)")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs the ZeRO rows shard over (default 8)")
    parser.add_argument("--no-measure", action="store_true", help="skip the CPU measurements (icipnet, bimors)")
    parser.add_argument("--check", action="store_true", help="also print measured / computed for a small Llama")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    args = parser.parse_args()
    packages = [p.strip() for p in args.packages.split(",") if p.strip()]
    unknown = sorted(set(packages) - set(PACKAGES))
    if unknown or args.gpus < 1:
        parser.error(f"unknown packages {unknown}" if unknown else "--gpus must be >= 1")
    torch.set_num_threads(args.threads)
    builders = {"icipnet": lambda: icipnet_rows(not args.no_measure, args.gpus),
                "bimors": lambda: bimors_rows(not args.no_measure), "clvnet": lambda: clvnet_rows(args.gpus),
                "rscovlm": lambda: rscovlm_rows(args.gpus)}
    report = {}
    for package in packages:
        rows = builders[package]()
        report[package] = [{**asdict(r), "total": r.total} for r in rows]
        print(markdown(package, rows))
    if args.check:
        ratios = check_formula()
        report["check"] = ratios
        print("measured / computed activations, small Llama: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
