"""It learns (short CI schedule; the full runs and their mIoU are in the README): the tiny preset (box-conditioned
targets, with a random SAM2 here: its pre-training is tested in test_pretrain.py) trained through ``clvnet-train`` on
32 synthetic tiles fits the captions (teacher-forced caption loss far below its start) and its mask loss (BCE + Dice,
teacher-forced) falls well below the untrained model's. Mask IoU needs far longer runs than a test can afford
(README)."""

import torch

from clvnet import cli_train
from clvnet.data import GCGTrainDataset
from clvnet.modeling import CLVNetModel
from clvnet.predict import load_for_inference


def fit(model: CLVNetModel, processor, root) -> tuple[float, float]:
    """Teacher-forced caption loss and mask loss (the model's 2·BCE + 0.5·Dice) over the training tiles."""
    data = GCGTrainDataset(root, processor, split="train", seed=0)
    model.eval()
    losses, masks = [], []
    with torch.no_grad():
        for start in range(0, len(data), 8):
            batch = processor.collate([data[i] for i in range(start, min(start + 8, len(data)))])
            out = model(**batch)
            losses.append(float(out.loss_caption))
            masks.append(float(out.loss_mask))
    return sum(losses) / len(losses), sum(masks) / len(masks)


def test_tiny_model_fits_captions_and_masks(tmp_path, gcg_root):
    out = tmp_path / "run"
    argv = ["--config", "tiny-synthetic", "--model.tiny_sam_steps", "0", "--train.output_dir", str(out),
            "--train.max_steps", "200",
            "--train.batch_size", "8", "--train.log_every", "50", "--train.save_every", "0",
            "--train.tensorboard", "false", "--train.schedule.warmup_steps", "20",
            "--data.synthetic_dir", str(gcg_root), "--data.synthetic_n", "40"]
    assert cli_train.main(argv) == 0
    trained, processor = load_for_inference(out / "model")
    untrained = CLVNetModel(trained.config)
    caption0, mask0 = fit(untrained, processor, gcg_root)
    caption1, mask1 = fit(trained, processor, gcg_root)
    assert caption1 < 0.25 * caption0, (caption0, caption1)
    assert mask1 < 0.75 * mask0, (mask0, mask1)
