"""CLV-Net (box-prompted grounded captioning with a mask per phrase): the tiny preset trained briefly through
``clvnet.train.run`` on synthetic GeoPixelD tiles, scored on the held-out test tiles against its control, the same
architecture untrained.

Quality is the package's learning check: the teacher-forced caption loss on the test tiles (lower is better) and
the mask loss (the model's 2·BCE + 0.5·Dice); mask IoU needs far longer runs than this budget (package README), so
the GCG mIoU of generated captions is listed only as an extra. Inference latency is one
``clvnet.predict.predict_image`` call (generation + masks for one tile and its union box); the picture shows the
predicted masks and captions of four test tiles.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .measure import LOOP_OVERRIDES, Stages, latency, parameter_count, training_speed

# Allowed rise of the held-out caption loss above the baseline (the untrained model scores about 7).
TOLERANCE = 0.5


@dataclass(frozen=True)
class Budget:
    steps: int  # optimiser steps (batch size: the preset's)
    tiles: int  # synthetic GeoPixelD tiles (80 % train, 20 % test)
    latency_calls: int
    sam_steps: int  # box-prompted pre-training of the tiny SAM2 (cached after the first run; 0: a random SAM2)


BUDGETS = {"smoke": Budget(steps=4, tiles=10, latency_calls=2, sam_steps=0),
           "quick": Budget(steps=120, tiles=60, latency_calls=6, sam_steps=0),
           "full": Budget(steps=600, tiles=300, latency_calls=12, sam_steps=2000)}


def teacher_forced_losses(model, dataset) -> dict[str, float]:
    """Mean ``loss_caption`` and ``loss_mask`` of ``model`` over a ``GCGEvalDataset(with_answer=True)``."""
    import torch

    model.eval()
    caption, mask = [], []
    with torch.no_grad():
        for start in range(0, len(dataset), 8):
            batch = dataset.processor.collate([dataset[i] for i in range(start, min(start + 8, len(dataset)))])
            out = model(**batch)
            caption.append(float(out.loss_caption))
            mask.append(float(out.loss_mask))
    return {"caption_loss": sum(caption) / len(caption), "mask_loss": sum(mask) / len(mask)}


def union_box(record) -> list[float]:
    """The evaluation box prompt of a tile: the union box of its masks (``xyxy`` pixels), the whole tile if none."""
    union = record.union_box()
    return union.data[0].tolist() if len(union) else [0.0, 0.0, *map(float, record.image_size)]


def run(work: Path, budget: str, seed: int, stages: Stages) -> dict[str, Any]:
    import torch
    from clvnet.cli_train import CONFIG_DIR
    from clvnet.data import GCGEvalDataset
    from clvnet.evaluation import evaluate_gcg
    from clvnet.modeling import CLVNetModel
    from clvnet.predict import load_for_inference, overlay, predict_image
    from clvnet.train import CLVNetTrainConfig, training_data
    from clvnet.train import run as train
    from rs_shared.training import load_config
    from rs_shared.viz import compose, save_png

    b = BUDGETS[budget]
    cfg = load_config(CLVNetTrainConfig, CONFIG_DIR / "tiny-synthetic.yaml", [
        *LOOP_OVERRIDES, f"train.output_dir={work / 'run'}", f"train.seed={seed}", f"train.max_steps={b.steps}",
        f"train.schedule.warmup_steps={b.steps // 10}", f"model.seed={seed}",
        f"data.synthetic_dir={work / 'data'}", f"data.synthetic_n={b.tiles}", f"data.synthetic_seed={seed}",
        f"model.tiny_sam_steps={b.sam_steps}"])
    with stages("data", f"{b.tiles} synthetic GeoPixelD tiles"):
        root = training_data(cfg.data)
    with stages("train", f"{b.steps} steps × batch {cfg.train.batch_size}"):
        result = train(cfg)
    model, processor = load_for_inference(result["model"])
    with stages("evaluate", "teacher-forced losses of the trained and an untrained model, GCG mIoU"):
        held_out = GCGEvalDataset(root, processor, split="test", with_answer=True)
        trained = teacher_forced_losses(model, held_out)
        torch.manual_seed(seed)
        untrained = teacher_forced_losses(CLVNetModel(model.config), held_out)
        gcg = evaluate_gcg(model, GCGEvalDataset(root, processor, split="test"), caption_metrics=False,
                           progress=False)
    with stages("inference", f"{b.latency_calls} single-tile predictions"):
        tiles = [(r.load()["image"], union_box(r)) for r in held_out.records[:b.latency_calls]]
        speed = latency(lambda tile: predict_image(model, processor, tile[0], tile[1]), tiles)
    panels = [overlay(predict_image(model, processor, image, box), image, box) for image, box in tiles[:4]]
    picture = save_png(compose(panels, ncols=2), work / "predictions.png")

    return {
        "preset": "tiny", "parameters": parameter_count(model),
        "train": training_speed(work / "run" / "log.jsonl", cfg.train.batch_size),
        "inference": {**speed, "unit": "one tile + box prompt (generation and masks)"},
        "quality": {"metric": "caption loss", "value": trained["caption_loss"],
                    "higher_is_better": False, "tolerance": TOLERANCE,
                    "control": "untrained model", "control_value": untrained["caption_loss"],
                    "split": "test tiles (teacher forced)", "samples": len(held_out),
                    "extra": {"mask loss": trained["mask_loss"], "untrained mask loss": untrained["mask_loss"],
                              "GCG mIoU": gcg["mIoU"], "GCG AP50": gcg["AP50"]}},
        "picture": picture,
        "settings": asdict(b),
    }
