"""CLV-Net training on ``rs_shared.training`` (spec §2, §5): configuration, model/data construction and the run.

The paper recipe (``configs/paper.yaml``): AdamW (β2 0.95, weight decay 0, GeoPixel's), linear warm-up to 3e-4
over 150 steps then cosine decay, 10 epochs, batch 8, bf16; LoRA on the LLM plus the trainable heads (CGFormer,
P, SRAlign heads, the SAM2 mask decoder, the token-embedding and output matrices); CLIP and the SAM2 image
encoder frozen. Loss: caption CE + 2·BCE + 0.5·Dice + λ·(L_rec + L_csc), λ = 1.

``configs/tiny-synthetic.yaml`` trains the tiny preset (every weight; SAM2 first pre-trained by box prompts,
:mod:`clvnet.pretrain`) on synthetic GCG tiles written by ``rs_shared`` (the embedded default) with box-conditioned
targets (``model.box_targets: in_box``). ``model.ablation`` applies one ablation row of the paper
(Tables II–V) to either preset.

Output (``<train.output_dir>``): ``model/`` (``save_pretrained`` weights + config + tokenizer, read by
``clvnet-eval``/``clvnet-predict``, with a model card ``README.md`` and the report of the evaluation it quotes in
``model/eval/``), ``train_config.yaml``, ``log.jsonl``, ``checkpoints/`` (resume with ``--train.resume auto``).

The model card (:func:`rs_shared.hub.write_model_card`) lists the training data, the resolved configuration, and the
exact ``clvnet-eval`` command run on the saved directory at the end of training with the metrics it gave (section
``eval``: the synthetic tiles' test split by default; with real training data, ``eval.data`` names the test data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rs_shared.hub import CardEvaluation, write_model_card
from rs_shared.metrics.captioning import check_caption_options
from rs_shared.training import (
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
    build_accelerator,
    config_to_dict,
    save_config,
    train,
)

from .configuration import CLVNetConfig
from .data import GCGTrainDataset, ensure_synthetic_gcg
from .evaluation import CAPTION_METRICS, HEADLINE
from .modeling import CLVNetModel
from .processing import CLVNetProcessor
from .tokenizer import TokenIds, build_tiny_tokenizer, load_tokenizer

PRESETS = {"tiny": CLVNetConfig.tiny, "paper": CLVNetConfig.paper, "paper_1p8b": CLVNetConfig.paper_1p8b}
ABLATIONS = {"": {}, "no_box": {"use_box_prompt": False}, "no_cgformer": {"use_cgformer": False},
             "lambda0": {"sralign_weight": 0.0}, "lambda0.5": {"sralign_weight": 0.5},
             "lambda5": {"sralign_weight": 5.0}, "csc_only": {"use_rec": False}, "rec_only": {"use_csc": False}}


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class ModelSection:
    preset: str = field(default="tiny", metadata=_help(
        "tiny (random, CPU, trains every weight), paper (IXC-2.5 7B + SAM2-L, LoRA) or paper_1p8b"))
    ablation: str = field(default="", metadata=_help(
        "one ablation row of the paper: no_box, no_cgformer, lambda0, lambda0.5, lambda5, csc_only, rec_only"))
    init: str = field(default="", metadata=_help(
        "start from a CLV-Net save_pretrained directory (weights, config and tokenizer; e.g. the output of "
        "clvnet-convert or an earlier run); required for the paper presets"))
    box_targets: str = field(default="full", metadata=_help(
        "what the answer to a box prompt describes (spec §8): full (the tile's holistic caption, every phrase; "
        "GeoPixelD) or in_box (only the phrases inside the box: needs box-conditioned captions, the 'regions' of "
        "the synthetic tiles, see data.synthetic_regions); also applied to a model.init directory"))
    sam_box_prompt: bool = field(default=False, metadata=_help(
        "also give the box prompt to SAM2's prompt encoder next to each [SEG] prompt (not in the spec)"))
    seed: int = field(default=0, metadata=_help("seed of the tiny preset's random weights"))
    tiny_sam_steps: int = field(default=0, metadata=_help(
        "tiny preset: start from a SAM2 pre-trained for this many steps by box prompts on synthetic scenes "
        "(clvnet.pretrain; trained once, then read from the cache); 0: a random SAM2"))
    tiny_sam_cache: str = field(default="", metadata=_help(
        "cache directory of the pre-trained tiny SAM2; empty: $CLVNET_CACHE_DIR or ~/.cache/rs-vlm/clvnet"))
    gradient_checkpointing: bool = field(default=False, metadata=_help("gradient checkpointing in the LLM"))

    def validate(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"model.preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if self.ablation not in ABLATIONS:
            raise ValueError(f"model.ablation must be one of {sorted(a for a in ABLATIONS if a)} or empty, "
                             f"got {self.ablation!r}")
        if self.box_targets not in ("full", "in_box"):
            raise ValueError(f"model.box_targets must be full or in_box, got {self.box_targets!r}")
        if self.tiny_sam_steps < 0 or (self.tiny_sam_steps and (self.preset != "tiny" or self.init)):
            raise ValueError(f"model.tiny_sam_steps must be >= 0 and is only for the tiny preset without model.init, "
                             f"got {self.tiny_sam_steps}")
        if self.preset != "tiny" and not self.init:
            raise ValueError(f"model.preset {self.preset} needs model.init: a CLV-Net directory made by "
                             "clvnet-convert from GeoPixel/IXC-2.5 weights (nothing is downloaded)")


@dataclass
class DataSection:
    train: str = field(default="", metadata=_help(
        "GeoPixelD training data: GeoPixelD.json, its directory, or a directory of per-tile files; empty: the "
        "synthetic GCG tiles"))
    split: str = field(default="train", metadata=_help(
        "train on the tiles whose image lies in a directory of this name (GeoPixelD keeps train/ and test/ tiles in "
        "one index); empty: every tile of data.train"))
    synthetic_dir: str = field(default="data/clvnet-synthetic", metadata=_help(
        "where the synthetic GCG tiles are written (reused when they exist)"))
    synthetic_n: int = field(default=6000, metadata=_help("synthetic tiles (80 % train, 20 % test)"))
    synthetic_seed: int = field(default=0, metadata=_help("seed of the synthetic tiles"))
    synthetic_regions: int = field(default=0, metadata=_help(
        "box-conditioned captions per synthetic tile (objects in a random region + their union box), besides the "
        "holistic one; model.box_targets in_box needs them"))


@dataclass
class EvalSection:
    data: str = field(default="", metadata=_help(
        "GeoPixelD-format test data of the evaluation at the end of training (quoted in the model card); empty: "
        "the synthetic tiles (data.synthetic_dir) when data.train is empty, else no evaluation"))
    split: str = field(default="test", metadata=_help(
        "only tiles whose image lies in a directory of this name; empty: every tile of the evaluation data"))
    max_samples: int = field(default=0, metadata=_help("evaluate the first N tiles only; 0: all"))
    batch_size: int = field(default=8, metadata=_help("images per generation call"))
    caption_metrics: bool = field(default=True, metadata=_help("METEOR and CIDEr (need Java)"))

    def validate(self) -> None:
        if self.max_samples < 0 or self.batch_size < 1:
            raise ValueError(f"eval.max_samples must be >= 0 and eval.batch_size >= 1, got {self.max_samples}, "
                             f"{self.batch_size}")


@dataclass
class CLVNetTrainConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        output_dir="runs/clvnet", seed=0, epochs=10, batch_size=8, clip_grad_norm=1.0, log_every=10,
        optim=OptimConfig(name="adamw", lr=3e-4, weight_decay=0.0, betas=(0.9, 0.95)),
        schedule=ScheduleConfig(name="cosine", warmup_steps=150)))
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    eval: EvalSection = field(default_factory=EvalSection)


def build_model(section: ModelSection, tokenizer_dir: Path) -> tuple[CLVNetModel, Any]:
    """``(model, tokenizer)`` in train mode with the trainable parameters set: a saved CLV-Net (``init``) or the
    random tiny preset (its tokenizer is built offline into ``tokenizer_dir``; its SAM2 pre-trained with
    ``tiny_sam_steps``)."""
    overrides = {**ABLATIONS[section.ablation], "box_targets": section.box_targets,
                 "sam_box_prompt": section.sam_box_prompt}
    if section.init:
        path = Path(section.init)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model.init {path} is not a CLV-Net save_pretrained directory (no config.json)")
        config = CLVNetConfig.from_pretrained(path)
        for key, value in overrides.items():
            setattr(config, key, value)
        model = CLVNetModel.from_pretrained(path, config=config)
        tokenizer = load_tokenizer(path)
    else:
        tokenizer = build_tiny_tokenizer(tokenizer_dir)
        ids = TokenIds.of(tokenizer)
        config = PRESETS[section.preset](**{**ids.config_kwargs(), **overrides})
        config.text_config.vocab_size = len(tokenizer)
        torch.manual_seed(section.seed)
        model = CLVNetModel(config)
        if section.tiny_sam_steps:
            from .pretrain import pretrained_tiny_sam2

            model.sam.load_state_dict(pretrained_tiny_sam2(config.sam_config, section.tiny_sam_cache or None,
                                                           steps=section.tiny_sam_steps))
    if section.gradient_checkpointing:
        model.language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.set_trainable_parameters()
    model.train()
    return model, tokenizer


def training_data(cfg: DataSection) -> Path:
    """The training GeoPixelD index or tile directory (the synthetic tiles' when ``train`` is empty)."""
    if cfg.train:
        path = Path(cfg.train)
        if not path.exists():
            raise FileNotFoundError(f"data.train {path} does not exist: give GeoPixelD.json, its directory or a "
                                    "directory of per-tile files")
        return path
    return ensure_synthetic_gcg(cfg.synthetic_dir, cfg.synthetic_n, cfg.synthetic_seed,
                                regions=cfg.synthetic_regions)


def save_model(model: CLVNetModel, tokenizer, out: Path) -> Path:
    """``save_pretrained`` of the model (safetensors) and its tokenizer in one directory."""
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def evaluation_command(cfg: CLVNetTrainConfig, model_dir: Path) -> list[str] | None:
    """The ``clvnet-eval`` command line (program first) of the model card, or ``None`` when there is no test data
    (real training data without ``eval.data``). Its report goes to ``<model_dir>/eval``."""
    if not (cfg.eval.data or not cfg.data.train):
        return None
    argv = ["clvnet-eval", "--model", str(model_dir), "--data", cfg.eval.data or cfg.data.synthetic_dir]
    if cfg.eval.split:
        argv += ["--split", cfg.eval.split]
    argv += ["--batch-size", str(cfg.eval.batch_size), "--out", str(model_dir / "eval")]
    if cfg.eval.max_samples:
        argv += ["--max-samples", str(cfg.eval.max_samples)]
    if not cfg.eval.caption_metrics:
        argv.append("--no-caption-metrics")
    return argv


def evaluate_for_card(argv: list[str]) -> CardEvaluation:
    """Run the ``clvnet-eval`` command ``argv`` in this process; its headline numbers (fractions)."""
    from . import cli_eval

    result = cli_eval.run(cli_eval.build_parser().parse_args(argv[1:]))
    keys = ("num_images", *HEADLINE, "mean_phrases", "parse_problem_rate")
    return CardEvaluation(tuple(argv), {k: result[k] for k in keys if k in result},
                          "GLaMM's GCG protocol (fractions; recall by exact phrase match unless --bert is given):")


def training_summary(cfg: CLVNetTrainConfig, data: Path, tiles: int) -> dict[str, Any]:
    """The model card's training-data table."""
    split = cfg.data.split or "all tiles"
    if cfg.data.train:
        return {"data": str(data), "split": split, "tiles": tiles}
    return {"data": f"synthetic GeoPixelD tiles (rs_shared generator) in {data}", "split": split, "tiles": tiles,
            "synthetic_n": cfg.data.synthetic_n, "synthetic_seed": cfg.data.synthetic_seed,
            "synthetic_regions": cfg.data.synthetic_regions}


def run(cfg: CLVNetTrainConfig) -> dict[str, Any]:
    """Train as ``cfg`` says, save the model with its model card; returns the step count, the last logs, the saved
    model directory and the card's evaluation (``None`` without test data)."""
    out = Path(cfg.train.output_dir)
    final = out / "model"
    command = evaluation_command(cfg, final)
    if command is not None and cfg.eval.caption_metrics:
        check_caption_options(CAPTION_METRICS, "ptb")  # Java missing: fail now, not after training
    accelerator = build_accelerator(cfg.train)
    with accelerator.main_process_first():
        model, tokenizer = build_model(cfg.model, out / "tokenizer")
        data = training_data(cfg.data)
    processor = CLVNetProcessor.from_config(model.config, tokenizer)
    dataset = GCGTrainDataset(data, processor, split=cfg.data.split or None, seed=cfg.train.seed)
    if accelerator.is_main_process:
        save_config(out / "train_config.yaml", cfg)

    def step_fn(model, batch):
        output = model(**batch)
        logs = {name: getattr(output, name).item() for name in
                ("loss_caption", "loss_bce", "loss_dice", "loss_csc", "loss_rec")}
        return output.loss, logs

    result = train(cfg.train, model, dataset, step_fn, collate_fn=processor.collate, accelerator=accelerator)
    evaluation = None
    if accelerator.is_main_process:
        save_model(accelerator.unwrap_model(model), tokenizer, final)
        evaluation = evaluate_for_card(command) if command is not None else None
        preset = cfg.model.preset + (f" ({cfg.model.ablation})" if cfg.model.ablation else "")
        write_model_card(final, model_name="CLV-Net", preset=preset, package="rs-clvnet",
                         training_data=training_summary(cfg, data, len(dataset)), config=config_to_dict(cfg),
                         evaluations=[evaluation] if evaluation else [],
                         notes=[] if evaluation else ["Evaluate it with `clvnet-eval --model <this directory> --data "
                                                      "<GeoPixelD test data>` (no eval.data was given)."])
    accelerator.wait_for_everyone()
    return {"step": result.step, "logs": result.logs, "model": str(final), "samples": len(dataset),
            "processes": accelerator.num_processes, "main_process": accelerator.is_main_process,
            "evaluation": evaluation}


__all__ = ["ABLATIONS", "CLVNetTrainConfig", "DataSection", "EvalSection", "ModelSection", "PRESETS", "build_model",
           "evaluation_command", "run", "save_model", "training_data"]
