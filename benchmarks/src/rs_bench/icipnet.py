"""ICIPNet (referring segmentation): the tiny preset trained briefly on synthetic RRSIS-D data, scored by
``icipnet-eval`` on the test split against its control, the same model shown constant grey images.

The training config is the packaged ``tiny-synthetic`` preset (model size, data options, optimiser) with only the
step budget, the dataset size, the peak learning rate and the warm-up changed. ``icipnet-eval --controls`` also
scores the language controls (expressions shuffled across samples; the category-only oracle): they are reported as
extras, since a run this short segments salient objects but does not yet read the expression (the package README
shows when it does). Inference latency is one ``ReferringSegmenter`` call (one image, one expression).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .measure import LOOP_OVERRIDES, Stages, latency, parameter_count, training_speed

LR = 2e-3  # short runs need a higher peak learning rate than the preset's 1e-3 (as in the package's learning test)
# Allowed drop of the test mIoU below the baseline before it counts as a regression (seed-to-seed and
# machine-to-machine spread of a quick run is a few points).
TOLERANCE = 0.06


@dataclass(frozen=True)
class Budget:
    steps: int  # optimiser steps (batch size: the preset's)
    images: int  # synthetic RRSIS-D images (70 % train, 10 % val, 20 % test)
    eval_samples: int  # test expressions scored
    latency_calls: int


BUDGETS = {"smoke": Budget(steps=4, images=60, eval_samples=16, latency_calls=2),
           "quick": Budget(steps=80, images=1000, eval_samples=200, latency_calls=8),
           "full": Budget(steps=600, images=4000, eval_samples=800, latency_calls=16)}


class BlankImages(torch.utils.data.Dataset):
    """The items of an ``icipnet.data.RefSegEvalDataset`` with every image replaced by a constant grey one of the
    model's input size (``pixel_values`` ``(3, S, S)``): the control that shows whether the model looks at the image."""

    def __init__(self, dataset, image_size: int):
        from icipnet.data import image_to_tensor

        self.dataset = dataset
        self.blank = image_to_tensor(np.full((image_size, image_size, 3), 128, np.uint8), image_size)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return {**self.dataset[index], "pixel_values": self.blank}


def run(work: Path, budget: str, seed: int, stages: Stages) -> dict[str, Any]:
    from icipnet.cli import eval_parser, evaluate_command, resolve_config
    from icipnet.data import RefSegEvalDataset, load_split
    from icipnet.evaluation import evaluate
    from icipnet.inference import ReferringSegmenter
    from icipnet.train import IcipNetTrainConfig, data_root, model_config
    from icipnet.train import run as train
    from rs_shared.training import load_config

    b = BUDGETS[budget]
    cfg = load_config(IcipNetTrainConfig, resolve_config("tiny-synthetic"), [
        *LOOP_OVERRIDES, f"train.output_dir={work / 'run'}", f"train.seed={seed}", f"train.max_steps={b.steps}",
        f"train.eval_every={b.steps}", f"train.optim.lr={LR}", f"train.schedule.warmup_steps={b.steps // 10}",
        f"data.synthetic_dir={work / 'data'}", f"data.synthetic_n={b.images}", f"data.synthetic_seed={seed}",
        "data.val_max=50"])
    with stages("data", f"{b.images} synthetic RRSIS-D images"):
        root = data_root(cfg, model_config(cfg.model).image_size)
    with stages("train", f"{b.steps} steps × batch {cfg.train.batch_size}"):
        result = train(cfg)
    with stages("evaluate", f"{b.eval_samples} test expressions: real, blank images, shuffled expressions"):
        args = eval_parser().parse_args(["--model", result["model"], "--data", str(root), "--controls",
                                         "--max-samples", str(b.eval_samples), "--examples", "4",
                                         "--seed", str(seed), "--out", str(work / "eval")])
        report_path, _ = evaluate_command(args)
        segmenter = ReferringSegmenter.from_pretrained(result["model"])
        config = segmenter.model.config
        test = RefSegEvalDataset(load_split(root, "test"), segmenter.tokenizer, config.image_size,
                                 config.max_text_len, mode="all", seed=seed)
        test.rows = test.rows[:b.eval_samples]  # the samples icipnet-eval --max-samples scored
        blank = evaluate(segmenter.model, BlankImages(test, config.image_size), batch_size=32).compute()
    with stages("inference", f"{b.latency_calls} single-expression calls"):
        samples = [(r.load()["image"], r.expression) for r in load_split(root, "test")[:b.latency_calls]]
        speed = latency(lambda sample: segmenter(sample[0], [sample[1]]), samples)

    results = json.loads(report_path.read_text())["results"]
    model, shuffled = results["model"], results["shuffled_expressions"]
    return {
        "preset": "tiny", "parameters": parameter_count(segmenter.model),
        "train": training_speed(work / "run" / "log.jsonl", cfg.train.batch_size),
        "inference": {**speed, "unit": "one image + one expression"},
        "quality": {"metric": "mIoU", "value": model["mIoU"],
                    "higher_is_better": True, "tolerance": TOLERANCE,
                    "control": "blank images", "control_value": blank["mIoU"],
                    "split": "test", "samples": model["n"],
                    "extra": {"oIoU": model["oIoU"], "P@0.5": model["P@0.5"],
                              "shuffled-expressions mIoU": shuffled["mIoU"],
                              "category-only oracle mIoU": results.get("category_oracle", {}).get("mIoU")}},
        "picture": work / "eval" / "examples.png",
        "settings": {**asdict(b), "image_size": config.image_size},
    }
