"""ICIPNet training on ``rs_shared.training``: configuration, model/data construction and the run.

The recipe of the paper (spec §4) is the ``refsegrs.yaml`` / ``rrsisd.yaml`` preset: AdamW lr 3e-5, weight
decay 0.01 except Swin's norms and relative-position tables and the per-stage output norms, poly decay
(power 0.9) per iteration, 40 epochs, batch 4, loss 0.9·weighted CE + 0.1·Dice, BERT embeddings and its
last two layers frozen, model selection by validation oIoU (one expression per ref). Without a dataset
root it trains on synthetic RRSIS-D data written by ``rs_shared`` (the embedded default).

Output (``<train.output_dir>``): ``model/`` (the final weights: ``save_pretrained`` + tokenizer, with a model card
``README.md`` and, in ``model/eval-<split>/``, the report of the evaluation the card quotes), ``best/`` (the best
validation oIoU), ``train_config.yaml``, ``log.jsonl``, ``checkpoints/``. The card
(:func:`rs_shared.hub.write_model_card`) lists the training data, the resolved configuration and the exact
``icipnet-eval`` command run on ``model/`` at the end of training (split ``data.test_split``) with its metrics.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

from .configuration import IcipNetConfig
from .data import RandomBoxes, RefSegEvalDataset, RefSegTrainDataset, collate, ensure_synthetic, load_split
from .evaluation import evaluate
from .loss import icipnet_loss
from .modeling import IcipNetModel
from .tokenizer import build_synthetic_tokenizer, load_tokenizer

PRESETS = {"tiny": IcipNetConfig.tiny, "paper": IcipNetConfig.paper, "rmsin": IcipNetConfig.rmsin}



def param_groups(weight_decay: float, position_lr_scale: float = 1.0) -> list[GroupRule]:
    """The official optimiser's groups (spec §4): only Swin's norms and relative-position tables and the
    per-stage output LayerNorms (the official ``backbone.norm{i}``) skip weight decay; everything else,
    biases and the decoder included, decays. ``position_lr_scale`` multiplies the learning rate of the
    relative-position tables (1 in the official recipe)."""
    return [GroupRule(r"^swin\..*relative_position_bias_table", weight_decay=0.0, lr_scale=position_lr_scale),
            GroupRule(r"^swin\..*(norm|absolute_pos_embed)", weight_decay=0.0),
            GroupRule(r"^fusion\.\d+\.norm\.", weight_decay=0.0),
            GroupRule(r"", weight_decay=weight_decay)]


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class ModelSection:
    preset: str = field(default="tiny", metadata=_help("tiny (CPU, synthetic), paper (Swin-B + BERT-base) or rmsin "
                                                       "(the RMSIN baseline)"))
    use_icip: bool | None = field(default=None, metadata=_help("image-conditioned instance prompts (default: preset)"))
    use_bif: bool | None = field(default=None, metadata=_help("bilateral information fusion (default: preset)"))
    icip_condition: bool | None = field(default=None, metadata=_help("paper eq. 4 (true) or the code's raw "
                                                                     "prompts (false)"))
    num_prompts: int | None = field(default=None, metadata=_help("instance prompts M per stage"))
    decoder_norm: str | None = field(default=None, metadata=_help("dyt (ICIPNet) or batchnorm (RMSIN)"))
    swin: str = field(default="", metadata=_help("local Swin-B weights: timm safetensors file (e.g. "
                                                 "timm/swin_base_patch4_window12_384.ms_in22k) or the official "
                                                 "swin_base_patch4_window12_384_22k.pth"))
    bert: str = field(default="", metadata=_help("local bert-base-uncased directory (weights + tokenizer)"))
    init: str = field(default="", metadata=_help("start from a trained ICIPNet (save_pretrained directory)"))
    random_init: bool = field(default=False, metadata=_help("allow the paper preset without pretrained backbones"))
    position_lr_scale: float = field(default=1.0, metadata=_help(
        "learning-rate multiplier of Swin's relative-position bias tables (1 = the official recipe; from random "
        "initialisation an Adam step moves a table entry by about lr, so the tables stay near their 0.02 init)"))

    def validate(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"model.preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if not self.position_lr_scale > 0:
            raise ValueError(f"model.position_lr_scale must be > 0, got {self.position_lr_scale}")


@dataclass
class DataSection:
    root: str = field(default="", metadata=_help("RRSIS-D or RefSegRS root; empty: synthetic RRSIS-D data"))
    synthetic_dir: str = field(default="data/icipnet-synthetic",
                               metadata=_help("where the synthetic dataset is written (reused when it exists)"))
    synthetic_n: int = field(default=4000, metadata=_help("synthetic images (70 % train, 10 % val, 20 % test)"))
    synthetic_seed: int = field(default=0, metadata=_help("seed of the synthetic dataset"))
    synthetic_object_scale: float = field(default=1.0, metadata=_help("synthetic objects this many times larger "
                                                                      "than the generator's default"))
    train_split: str = field(default="train", metadata=_help("split to train on"))
    val_split: str = field(default="val", metadata=_help("split for model selection (one expression per ref)"))
    test_split: str = field(default="test", metadata=_help(
        "split of the evaluation at the end of training that the model card quotes (every expression)"))
    overlap: str = field(default="union", metadata=_help("RRSIS-D mask parts: union, or official (sum == 1)"))
    random_boxes: bool = field(default=True, metadata=_help("RMSIN's black-box augmentation on 20 percent of the refs"))
    box_size: int = field(default=32, metadata=_help("side of the black boxes in original-image pixels"))
    tokenizer: str = field(default="", metadata=_help("BERT tokenizer directory (default: model.bert, or a "
                                                      "tokenizer built for the synthetic vocabulary)"))
    cache: bool = field(default=False, metadata=_help("keep decoded images and masks in memory after first use "
                                                      "(small datasets such as the synthetic one)"))
    val_max: int = field(default=0, metadata=_help("validate on the first N refs of val_split only; 0 = all"))
    eval_batch_size: int = field(default=16, metadata=_help("batch size of validation"))


@dataclass
class IcipNetTrainConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        output_dir="runs/icipnet", seed=2014, epochs=40, batch_size=4, log_every=20,
        optim=OptimConfig(name="adamw", lr=3e-5, weight_decay=0.01),
        schedule=ScheduleConfig(name="poly", power=0.9)))
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)


def model_config(section: ModelSection, vocab_size: int | None = None) -> IcipNetConfig:
    """The :class:`IcipNetConfig` of a preset with the section's switches applied."""
    overrides = {k: v for k, v in dataclasses.asdict(section).items()
                 if k in ("use_icip", "use_bif", "icip_condition", "num_prompts", "decoder_norm") and v is not None}
    if section.preset == "tiny":
        return IcipNetConfig.tiny(**({"vocab_size": vocab_size} if vocab_size else {}), **overrides)
    return PRESETS[section.preset](**overrides)


def build_model(section: ModelSection, vocab_size: int | None = None) -> IcipNetModel:
    """A model to train: from a trained ICIPNet, from pretrained backbones, or (tiny / explicitly asked)
    randomly initialised. The paper presets refuse to start from random backbones unless ``random_init``."""
    if section.init:
        return IcipNetModel.from_pretrained(section.init)
    config = model_config(section, vocab_size)
    if section.swin or section.bert:
        if not (section.swin and section.bert):
            raise ValueError("give both model.swin (Swin-B weights) and model.bert (bert-base-uncased directory)")
        return IcipNetModel.from_backbones(config, swin=section.swin, bert=section.bert)
    if section.preset != "tiny" and not section.random_init:
        raise FileNotFoundError(
            f"the {section.preset} preset starts from pretrained backbones: set model.swin to a local Swin-B "
            "file (timm/swin_base_patch4_window12_384.ms_in22k model.safetensors) and model.bert to a local "
            "bert-base-uncased directory, or model.random_init=true to train from scratch")
    return IcipNetModel(config)


def tokenizer_for(cfg: IcipNetTrainConfig, out: Path):
    """The BERT tokenizer: data.tokenizer, else model.bert, else one built for the synthetic vocabulary."""
    if cfg.data.tokenizer or cfg.model.bert:
        return load_tokenizer(cfg.data.tokenizer or cfg.model.bert)
    if cfg.model.init:
        return load_tokenizer(cfg.model.init)
    return build_synthetic_tokenizer(out / "tokenizer")


def data_root(cfg: IcipNetTrainConfig, image_size: int) -> Path:
    if cfg.data.root:
        return Path(cfg.data.root)
    return ensure_synthetic(cfg.data.synthetic_dir, cfg.data.synthetic_n, cfg.data.synthetic_seed, image_size,
                            cfg.data.synthetic_object_scale)


class _KeepBest:
    """Saves ``<output_dir>/best`` (save_pretrained + tokenizer) whenever validation oIoU improves."""

    def __init__(self, model, tokenizer, out: Path, accelerator):
        self.model, self.tokenizer, self.out, self.accelerator = model, tokenizer, out, accelerator
        self.best = -1.0

    def on_step_end(self, state) -> None:
        if not state.eval_history or state.eval_history[-1]["step"] != state.step:
            return
        score = state.eval_history[-1]["oIoU"]
        if score > self.best:
            self.best = score
            if self.accelerator.is_main_process:
                self.accelerator.unwrap_model(self.model).save_pretrained(self.out / "best")
                self.tokenizer.save_pretrained(self.out / "best")
                (self.out / "best" / "eval.json").write_text(json.dumps(state.eval_history[-1], indent=1))


def run(cfg: IcipNetTrainConfig) -> dict[str, Any]:
    """Train as ``cfg`` says; returns the final and best validation metrics and the output paths."""
    out = Path(cfg.train.output_dir)
    accelerator = build_accelerator(cfg.train)
    with accelerator.main_process_first():
        tokenizer = tokenizer_for(cfg, out)
        model = build_model(cfg.model, vocab_size=len(tokenizer))
        size = model.config.image_size
        root = data_root(cfg, size)
    if accelerator.is_main_process:
        save_config(out / "train_config.yaml", cfg)
    n_text = model.config.max_text_len
    train_set = RefSegTrainDataset(
        load_split(root, cfg.data.train_split, cfg.data.overlap), tokenizer, size, n_text, seed=cfg.train.seed,
        random_boxes=RandomBoxes(size=cfg.data.box_size) if cfg.data.random_boxes else None, cache=cfg.data.cache)
    val_records = load_split(root, cfg.data.val_split, cfg.data.overlap)
    if cfg.data.val_max:
        keep = set(sorted({r.ref_id for r in val_records})[:cfg.data.val_max])
        val_records = [r for r in val_records if r.ref_id in keep]
    val_set = RefSegEvalDataset(val_records, tokenizer, size, n_text, mode="per_ref", seed=cfg.train.seed,
                                cache=cfg.data.cache)
    ce_weights, dice_weight = model.config.ce_weights, model.config.dice_weight

    def step_fn(model, batch):
        logits = model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"]).logits
        return icipnet_loss(logits, batch["labels"], ce_weights, dice_weight)

    def eval_fn(model, accelerator):
        metrics = evaluate(accelerator.unwrap_model(model), val_set, batch_size=cfg.data.eval_batch_size,
                           accelerator=accelerator)
        return {k: v for k, v in metrics.compute().items() if k != "n"}

    best = _KeepBest(model, tokenizer, out, accelerator)
    groups = param_groups(cfg.train.optim.weight_decay, cfg.model.position_lr_scale)
    result = train(cfg.train, model, train_set, step_fn, collate_fn=collate, eval_fn=eval_fn, param_groups=groups,
                   callbacks=[best], accelerator=accelerator)
    final, evaluation = out / "model", None
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(final)
        tokenizer.save_pretrained(final)
        evaluation = evaluate_for_card(evaluation_command(cfg, final, root))
        write_model_card(final, model_name="ICIPNet", preset=cfg.model.preset, package="rs-icipnet",
                         training_data=training_summary(cfg, root, len(train_set), size), config=config_to_dict(cfg),
                         evaluations=[evaluation],
                         notes=[f"Final weights after {result.step} steps; `{out / 'best'}` holds the best "
                                "validation oIoU."])
    accelerator.wait_for_everyone()
    return {"step": result.step, "eval": result.eval, "best_oIoU": best.best, "model": str(final),
            "best": str(out / "best"), "data": str(root), "evaluation": evaluation}


def evaluation_command(cfg: IcipNetTrainConfig, model_dir: Path, root: Path) -> list[str]:
    """The model card's ``icipnet-eval`` command line (program first): every expression of ``data.test_split``;
    the report goes to ``<model_dir>/eval-<split>``."""
    return ["icipnet-eval", "--model", str(model_dir), "--data", str(root), "--split", cfg.data.test_split,
            "--overlap", cfg.data.overlap, "--batch-size", str(cfg.data.eval_batch_size)]


def evaluate_for_card(argv: list[str]) -> CardEvaluation:
    """Run the ``icipnet-eval`` command ``argv`` in this process; its metrics (fractions, ``n`` samples)."""
    from .cli import METRIC_COLUMNS, eval_parser, evaluate_command

    report, _ = evaluate_command(eval_parser().parse_args(argv[1:]))
    metrics = json.loads(report.read_text(encoding="utf-8"))["results"]["model"]
    return CardEvaluation(tuple(argv), {k: metrics[k] for k in METRIC_COLUMNS},
                          "The RRSIS test protocol (LAVT/RMSIN) at the model's input size; fractions:")


def training_summary(cfg: IcipNetTrainConfig, root: Path, samples: int, image_size: int) -> dict[str, Any]:
    """The model card's training-data table."""
    summary: dict[str, Any] = {"data": str(root), "split": cfg.data.train_split, "training refs": samples,
                               "image size": image_size, "overlap": cfg.data.overlap,
                               "random boxes": cfg.data.random_boxes}
    if not cfg.data.root:
        summary.update({"data": f"synthetic RRSIS-D (rs_shared generator) in {root}",
                        "synthetic_n": cfg.data.synthetic_n, "synthetic_seed": cfg.data.synthetic_seed,
                        "synthetic_object_scale": cfg.data.synthetic_object_scale})
    return summary
