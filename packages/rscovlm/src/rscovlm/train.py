"""RSCoVLM supervised fine-tuning on ``rs_shared.training`` (spec §1, §2).

The paper recipe (``configs/paper.yaml``): full fine-tuning of Qwen2.5-VL-7B-Instruct (ViT, merger and LLM)
with AdamW (betas 0.9/0.999, eps 1e-8, weight decay 0.1), peak lr 2e-6, cosine schedule with 5 % warm-up,
gradient clipping 1.0, one epoch, bf16, global batch 32, ``max_length`` 6144, random resizing of every
detection/grounding sample, DeepSpeed ZeRO-1 (``accelerate launch --config_file`` the shared
``deepspeed_zero1.yaml``). ``lora.enabled`` trains LoRA adapters instead (r 64, alpha 16, dropout 0.05 on
every ``nn.Linear`` / ``nn.Embedding`` outside ``visual``) and merges them into the saved model.

``configs/tiny-synthetic.yaml`` trains the random tiny preset on the synthetic SFT mixture on CPU.

Output (``<train.output_dir>``): ``model/`` (a ``save_pretrained`` directory: weights, tokenizer and
``preprocessor_config.json``, read by :func:`rscovlm.model_factory.load_pretrained`, with a model card ``README.md``
and the reports it quotes in ``model/eval/<task>/``), ``train_config.yaml``, ``log.jsonl``, ``checkpoints/``
(resume with ``--train.resume auto``; ``rscovlm-export`` turns one into a model directory).

The model card (:func:`rs_shared.hub.write_model_card`) lists the training mixture, the resolved configuration and,
for each task of ``eval.tasks``, the exact ``rscovlm-eval`` command run on ``model/`` at the end of training with
its metrics (synthetic evaluation sets by default, ``eval.data`` for your own).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rs_shared.hub import CardEvaluation, write_model_card
from rs_shared.training import (
    GroupRule,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
    build_accelerator,
    config_to_dict,
    save_config,
    train,
)

from .collate import collate
from .mixture import (
    SYNTHETIC_SOURCE,
    LengthGroupedBatches,
    SFTDataset,
    build_mixture,
    ensure_synthetic_sft,
    load_sources,
    parse_sources,
)
from .model_factory import LoadedModel, build_tiny_model, load_paper, load_pretrained, save_pretrained

PRESETS = ("tiny", "paper")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class ModelSection:
    preset: str = field(default="tiny", metadata=_help(
        "tiny (random ~180k-parameter Qwen2.5-VL, local tokenizer) or paper (Qwen2.5-VL-7B-Instruct from model.path)"))
    path: str = field(default="", metadata=_help(
        "paper: local Qwen2.5-VL-7B-Instruct directory (required); tiny: optional saved model to start from"))
    seed: int = field(default=0, metadata=_help("seed of the tiny preset's random weights"))
    dtype: str = field(default="float32", metadata=_help(
        "weights dtype when loading a checkpoint: float32 | bfloat16 | float16 (mixed precision is train.mixed_precision)"))
    attn_implementation: str = field(default="sdpa", metadata=_help("sdpa | eager | flash_attention_2"))
    gradient_checkpointing: bool = field(default=False, metadata=_help("non-reentrant gradient checkpointing (§1)"))
    decay_all: bool = field(default=False, metadata=_help(
        "weight decay on every parameter, norms and biases included (the official DeepSpeed optimizer, pitfall "
        "§9.4); default: no decay for biases and norms"))

    def validate(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"model.preset must be one of {PRESETS}, got {self.preset!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")


@dataclass
class LoraSection:
    enabled: bool = field(default=False, metadata=_help("train LoRA adapters only (the base model is frozen)"))
    r: int = field(default=64, metadata=_help("LoRA rank"))
    alpha: int = field(default=16, metadata=_help("LoRA alpha"))
    dropout: float = field(default=0.05, metadata=_help("LoRA dropout"))

    def validate(self) -> None:
        if self.r < 1 or self.alpha < 1 or not 0 <= self.dropout < 1:
            raise ValueError(f"lora needs r >= 1, alpha >= 1 and 0 <= dropout < 1, got {self.r}, {self.alpha}, "
                             f"{self.dropout}")


@dataclass
class DataSection:
    sources: tuple[str, ...] = field(default=(), metadata=_help(
        "NAME=PATH conversation sources (LLaVA-style or unified JSON/JSONL file or directory); the name "
        "'synthetic' is the generated synthetic SFT set unless given here"))
    recipe: tuple[str, ...] = field(default=("synthetic",), metadata=_help(
        "mixture: NAME (once), NAME*K (K copies) or NAME%P (random P % subset), §2.1"))
    mixture_seed: int = field(default=42, metadata=_help("seed of the NAME%P subsets (random.Random)"))
    synthetic_dir: str = field(default="data/rscovlm-synthetic", metadata=_help(
        "where the synthetic SFT set is written (reused when it exists)"))
    synthetic_n: int = field(default=2000, metadata=_help(
        "synthetic SFT records (1/3 each: QA, detection, grounding)"))
    synthetic_seed: int = field(default=0, metadata=_help("seed of the synthetic SFT set"))
    max_length: int = field(default=6144, metadata=_help("samples are truncated to this many tokens"))
    random_resize_prob: float = field(default=1.0, metadata=_help(
        "probability of random resizing for samples with boxes (§3.4)"))
    area_as_linear: bool = field(default=True, metadata=_help(
        "random resize draws the area ratio and uses it as a linear scale (official, pitfall §9.2)"))
    group_by_length: bool = field(default=True, metadata=_help(
        "micro-batches of samples with similar lengths (less padding)"))

    def validate(self) -> None:
        if self.max_length < 1 or self.synthetic_n < 1:
            raise ValueError("data.max_length and data.synthetic_n must be positive")
        if not 0 <= self.random_resize_prob <= 1:
            raise ValueError(f"data.random_resize_prob must be in [0, 1], got {self.random_resize_prob}")


@dataclass
class EvalSection:
    tasks: tuple[str, ...] = field(default=("cls", "vqa"), metadata=_help(
        "rscovlm-eval tasks (det, vg, cap, vqa, cls) run on the saved model at the end of training; the model card "
        "quotes their commands and metrics"))
    data: tuple[str, ...] = field(default=(), metadata=_help(
        "TASK=PATH evaluation sets (rscovlm-eval --data); a task without one is scored on a synthetic set"))
    synthetic_samples: int = field(default=32, metadata=_help("samples of each synthetic evaluation set"))
    seed: int = field(default=1000, metadata=_help(
        "seed of the synthetic evaluation sets (must differ from data.synthetic_seed: no training scene is scored)"))
    max_new_tokens: int = field(default=64, metadata=_help("generation budget per answer"))
    batch_size: int = field(default=8, metadata=_help("prompts per generate call"))

    def validate(self) -> None:
        from .eval_data import TASKS

        unknown = [t for t in (*self.tasks, *self.datasets()) if t not in TASKS]
        if unknown:
            raise ValueError(f"eval.tasks / eval.data name unknown tasks {unknown}; choose from {TASKS}")
        if min(self.synthetic_samples, self.max_new_tokens, self.batch_size) < 1:
            raise ValueError("eval.synthetic_samples, eval.max_new_tokens and eval.batch_size must be >= 1")

    def datasets(self) -> dict[str, str]:
        """``eval.data`` as ``{task: path}``."""
        pairs = [entry.partition("=") for entry in self.data]
        bad = [entry for entry, (task, eq, path) in zip(self.data, pairs, strict=True) if not (eq and task and path)]
        if bad:
            raise ValueError(f"eval.data entries must be TASK=PATH, got {bad}")
        return {task.strip(): path.strip() for task, _, path in pairs}


@dataclass
class RSCoVLMTrainConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        output_dir="runs/rscovlm", seed=42, epochs=1, batch_size=1, clip_grad_norm=1.0, log_every=1,
        save_every=5000, optim=OptimConfig(name="adamw", lr=2e-6, weight_decay=0.1, betas=(0.9, 0.999), eps=1e-8),
        schedule=ScheduleConfig(name="cosine")))
    model: ModelSection = field(default_factory=ModelSection)
    lora: LoraSection = field(default_factory=LoraSection)
    data: DataSection = field(default_factory=DataSection)
    eval: EvalSection = field(default_factory=EvalSection)
    warmup_ratio: float = field(default=0.05, metadata=_help(
        "warm-up as a fraction of the total steps (overrides train.schedule.warmup_steps when > 0)"))

    def validate(self) -> None:
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.eval.seed == self.data.synthetic_seed:
            raise ValueError(f"eval.seed {self.eval.seed} equals data.synthetic_seed: the synthetic evaluation sets "
                             "would hold training scenes; pick another eval.seed")


def build_model(section: ModelSection) -> LoadedModel:
    """The model to fine-tune, in train mode: the paper checkpoint (a clear error when ``path`` is absent),
    a saved model (``path`` with the tiny preset) or the random tiny preset."""
    dtype = DTYPES[section.dtype]
    check_model_path(section)
    if section.preset == "paper":
        loaded = load_paper(section.path, dtype=dtype, attn_implementation=section.attn_implementation)
    elif section.path:
        loaded = load_pretrained(section.path, dtype=dtype, attn_implementation=section.attn_implementation)
    else:
        loaded = build_tiny_model(section.seed, attn_implementation=section.attn_implementation)
    loaded.model.config.use_cache = False  # §1
    if section.gradient_checkpointing:
        loaded.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    loaded.model.train()
    return loaded


def check_model_path(section: ModelSection) -> None:
    """Fail early (before any process group or accelerator exists) when the model directory is missing."""
    hint = ("a local Qwen2.5-VL-7B-Instruct directory (config.json, *.safetensors, tokenizer files, "
            "preprocessor_config.json); nothing is downloaded")
    if section.preset == "paper" and not section.path:
        raise FileNotFoundError(f"the paper preset needs model.path: {hint}")
    if section.path and not Path(section.path).is_dir():
        raise FileNotFoundError(f"model.path {section.path} does not exist: expected {hint}")


def lora_targets(model: torch.nn.Module) -> list[str]:
    """Names of every ``nn.Linear`` / ``nn.Embedding`` outside the ViT (§1 LoRA row). With tied input and
    output embeddings (the tiny preset; not the 7B model) ``embed_tokens`` and ``lm_head`` are left out: they
    share one weight, so an adapter trained on one use would be merged into both."""
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    return [name for name, module in model.named_modules()
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)) and "visual" not in name.split(".")
            and not (tied and name.split(".")[-1] in ("lm_head", "embed_tokens"))]


def add_lora(model: torch.nn.Module, section: LoraSection) -> torch.nn.Module:
    """Wrap ``model`` with LoRA adapters (peft); only the adapters stay trainable."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=section.r, lora_alpha=section.alpha, lora_dropout=section.dropout, bias="none",
                        target_modules=lora_targets(model))
    return get_peft_model(model, config)


def training_records(cfg: DataSection) -> list:
    """The mixture of ``cfg.recipe`` over ``cfg.sources`` (plus the synthetic set when the recipe names it
    and no source of that name is given)."""
    paths = parse_sources(cfg.sources)
    names = {entry.split("*")[0].split("%")[0].strip() for entry in cfg.recipe}
    if SYNTHETIC_SOURCE in names and SYNTHETIC_SOURCE not in paths:
        paths[SYNTHETIC_SOURCE] = ensure_synthetic_sft(cfg.synthetic_dir, cfg.synthetic_n, cfg.synthetic_seed)
    return build_mixture(load_sources({n: p for n, p in paths.items() if n in names}), cfg.recipe, cfg.mixture_seed)


def build_datasets(cfg: RSCoVLMTrainConfig, loaded: LoadedModel, records: list) -> tuple[Any, Any]:
    """``(dataset, collate_fn)`` for the loop; with length grouping each item is a whole micro-batch."""
    dataset = SFTDataset(records, loaded.renderer(cfg.data.max_length), cfg.data.random_resize_prob,
                         cfg.data.area_as_linear, seed=cfg.train.seed)
    pad = loaded.tokenizer.pad_token_id
    if cfg.data.group_by_length and cfg.train.batch_size > 1:
        return (LengthGroupedBatches(dataset, cfg.train.batch_size, seed=cfg.train.seed),
                lambda items: collate([s for batch in items for s in batch], pad))
    return dataset, lambda items: collate(items, pad)


def loop_config(cfg: RSCoVLMTrainConfig, grouped: bool, n_items: int, num_processes: int) -> TrainConfig:
    """The shared loop's config: batch size 1 when each item is a grouped micro-batch; warm-up steps from
    ``warmup_ratio`` of the total (HF's ``ceil(ratio · total)``)."""
    train_cfg = dataclasses.replace(cfg.train, batch_size=1 if grouped else cfg.train.batch_size)
    if cfg.warmup_ratio > 0:
        per_epoch = math.ceil(n_items / (train_cfg.batch_size * num_processes)) // train_cfg.grad_accum
        total = train_cfg.max_steps or train_cfg.epochs * max(per_epoch, 1)
        schedule = dataclasses.replace(cfg.train.schedule, warmup_steps=math.ceil(cfg.warmup_ratio * total))
        train_cfg = dataclasses.replace(train_cfg, schedule=schedule)
    return train_cfg


def run(cfg: RSCoVLMTrainConfig) -> dict[str, Any]:
    """Train as ``cfg`` says; returns the step count, the last logs and the saved model directory."""
    out = Path(cfg.train.output_dir)
    check_model_path(cfg.model)
    accelerator = build_accelerator(cfg.train)
    with accelerator.main_process_first():
        loaded = build_model(cfg.model)
        records = training_records(cfg.data)
    model = add_lora(loaded.model, cfg.lora) if cfg.lora.enabled else loaded.model
    if accelerator.is_main_process:
        save_config(out / "train_config.yaml", cfg)
    dataset, collate_fn = build_datasets(cfg, loaded, records)
    grouped = isinstance(dataset, LengthGroupedBatches)
    train_cfg = loop_config(cfg, grouped, len(dataset), accelerator.num_processes)
    rules = [GroupRule(r"", weight_decay=cfg.train.optim.weight_decay)] if cfg.model.decay_all else None

    def step_fn(model, batch):
        output = model(**batch)
        return output.loss, {"tokens": float((batch["labels"] != -100).sum())}

    result = train(train_cfg, model, dataset, step_fn, collate_fn=collate_fn, param_groups=rules,
                   accelerator=accelerator)
    final, evaluations = out / "model", []
    if accelerator.is_main_process:
        trained = accelerator.unwrap_model(model)
        if cfg.lora.enabled:
            trained = trained.merge_and_unload()
        trained.config.use_cache = True
        save_pretrained(LoadedModel(trained, loaded.tokenizer, loaded.image_settings), final)
        evaluations = [evaluate_for_card(argv) for argv in evaluation_commands(cfg.eval, final)]
        write_model_card(final, model_name="RSCoVLM", preset=cfg.model.preset, package="rs-rscovlm",
                         training_data=training_summary(cfg, len(records)), config=config_to_dict(cfg),
                         evaluations=evaluations, notes=[] if not cfg.lora.enabled else [
                             "Trained with LoRA; the adapters are merged into these weights."])
    accelerator.wait_for_everyone()
    return {"step": result.step, "logs": result.logs, "model": str(final), "samples": len(records),
            "processes": accelerator.num_processes, "main_process": accelerator.is_main_process,
            "evaluations": evaluations}


def evaluation_commands(section: EvalSection, model_dir: Path) -> list[list[str]]:
    """The model card's ``rscovlm-eval`` command lines (program first), one per task; reports go to
    ``<model_dir>/eval/<task>``."""
    datasets, commands = section.datasets(), []
    for task in dict.fromkeys((*section.tasks, *section.datasets())):
        source = (["--data", datasets[task]] if task in datasets else
                  ["--synthetic-samples", str(section.synthetic_samples), "--seed", str(section.seed)])
        commands.append(["rscovlm-eval", "--model", str(model_dir), "--task", task, *source, "--max-new-tokens",
                         str(section.max_new_tokens), "--batch-size", str(section.batch_size), "--out",
                         str(model_dir / "eval" / task)])
    return commands


def evaluate_for_card(argv: list[str]) -> CardEvaluation:
    """Run the ``rscovlm-eval`` command ``argv`` in this process; its headline scores and parse-failure rate."""
    from . import cli_eval

    args = cli_eval.build_parser().parse_args(argv[1:])
    results = cli_eval.run(args)["results"]
    keys = (*cli_eval.HEADLINE[args.task], "parse_failure_rate")
    return CardEvaluation(tuple(argv), {k: results[k] for k in keys if k in results},
                          f"{args.task}: {cli_eval.PROTOCOLS[args.task]}. Fractions:")


def training_summary(cfg: RSCoVLMTrainConfig, samples: int | None) -> dict[str, Any]:
    """The model card's training-data table: the mixture recipe, its sources and (when known) its size."""
    summary: dict[str, Any] = {"recipe": ", ".join(cfg.data.recipe), "sources": ", ".join(cfg.data.sources) or "-",
                               "mixture_seed": cfg.data.mixture_seed}
    if samples is not None:
        summary["mixture samples"] = samples
    if any(entry.split("*")[0].split("%")[0].strip() == SYNTHETIC_SOURCE for entry in cfg.data.recipe) and \
            not any(s.partition("=")[0].strip() == SYNTHETIC_SOURCE for s in cfg.data.sources):
        summary.update({"synthetic": f"rs_shared SFT generator in {cfg.data.synthetic_dir}",
                        "synthetic_n": cfg.data.synthetic_n, "synthetic_seed": cfg.data.synthetic_seed})
    return summary


__all__ = ["DTYPES", "PRESETS", "DataSection", "EvalSection", "LoraSection", "ModelSection", "RSCoVLMTrainConfig",
           "add_lora", "build_datasets", "build_model", "check_model_path", "evaluation_commands", "lora_targets",
           "loop_config", "run", "training_records", "training_summary"]
