"""BiMoRS (caption-conditioned prompt learning for CLIP): the tiny preset under the base-to-new protocol on the
synthetic scene dataset, scored against its control, zero-shot CLIP with the same weights.

The tiny CLIP that BiMoRS starts from is first pre-trained contrastively on synthetic image–caption pairs
(``bimors.pretrain``, cached in the work directory), with a budget far below the package default's 1 500 steps; then
``bimors.train.run`` trains one seed of the packaged ``tiny-synthetic`` preset. Inference latency is
one ``bimors.predict.predict_top_k`` call (one image and its caption embedding). The picture shows the top-5 classes of
four base-class test images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .measure import LOOP_OVERRIDES, Stages, latency, parameter_count, training_speed

# Allowed drop of the base accuracy below the baseline (72 test images: one image is 1.4 points).
TOLERANCE = 0.15


@dataclass(frozen=True)
class Budget:
    clip_steps: int  # contrastive pre-training steps of the tiny CLIP (batch 128)
    clip_pairs: int  # synthetic image–caption pairs it is pre-trained on
    images: int  # synthetic scene images (11 classes, 70 % train, 10 % val, 20 % test)
    epochs: int  # BiMoRS epochs over the 16-shot base-class training set (the preset's: 10)
    latency_calls: int


BUDGETS = {"smoke": Budget(clip_steps=4, clip_pairs=128, images=110, epochs=1, latency_calls=2),
           "quick": Budget(clip_steps=150, clip_pairs=1024, images=660, epochs=10, latency_calls=16),
           "full": Budget(clip_steps=600, clip_pairs=4096, images=1320, epochs=10, latency_calls=32)}


def run(work: Path, budget: str, seed: int, stages: Stages) -> dict[str, Any]:
    from bimors.caption import read_captions
    from bimors.cli import preset_path
    from bimors.data import open_caption_cache, protocol_dataset
    from bimors.datasets import SYNTHETIC
    from bimors.modeling import BiMoRSModel
    from bimors.predict import draw_prediction, predict_top_k
    from bimors.train import BiMoRSTrainConfig, clip_checkpoint, load
    from bimors.train import run as train
    from rs_shared.data.common import read_image
    from rs_shared.training import load_config
    from rs_shared.viz import compose, save_png

    b = BUDGETS[budget]
    cfg = load_config(BiMoRSTrainConfig, preset_path("tiny-synthetic"), [
        *LOOP_OVERRIDES, f"train.output_dir={work / 'run'}", f"train.epochs={b.epochs}", f"protocol.seeds={seed}",
        f"data.root={work / 'data'}", f"data.synthetic_n={b.images}", f"model.tiny_clip_steps={b.clip_steps}",
        f"model.tiny_clip_pairs={b.clip_pairs}", f"model.tiny_clip_cache={work / 'clip-cache'}"])
    with stages("data", f"{b.images} synthetic scene images"):
        dataset = load(cfg.data, SYNTHETIC)
    with stages("pretrain CLIP", f"{b.clip_steps} contrastive steps on {b.clip_pairs} pairs"):
        clip_checkpoint(cfg.model, work / "run", progress=False)
    with stages("train", f"{cfg.train.epochs} epochs × {cfg.data.shots} shots of the base classes, "
                         f"batch {cfg.train.batch_size}"):
        result = train(cfg, progress=False)
    summaries = result["summaries"]
    bimors, zero_shot = summaries["BiMoRS"]["rows"][0], summaries["zero-shot CLIP"]["rows"][0]

    with stages("inference", f"{b.latency_calls} single-image predictions"):
        model = BiMoRSModel.from_pretrained(result["models"][0]).eval()
        captions = open_caption_cache(dataset, cfg.data.captions, model.config.caption_dim)
        test = protocol_dataset(dataset, "test", "base", seed, model.clip.visual.image_size[0], captions)
        items = [test[i] for i in range(min(b.latency_calls, len(test)))]
        classes = list(test.classnames)
        speed = latency(lambda item: predict_top_k(model, item["pixel_values"][None], item["caption_embeds"][None],
                                                   classes), items)
    texts = read_captions(captions.directory)
    panels = []
    for index, item in enumerate(items[:4]):
        sample = test.samples[index]
        top = predict_top_k(model, item["pixel_values"][None], item["caption_embeds"][None], classes)
        panels.append(draw_prediction(read_image(sample.path), texts[captions.key(sample.path)]["caption"], top))
    picture = save_png(compose(panels, ncols=2), work / "predictions.png")

    seed_dir = work / "run" / f"{SYNTHETIC}-base" / f"seed{seed}"
    return {
        "preset": "tiny", "parameters": parameter_count(model),
        "train": training_speed(seed_dir / "log.jsonl", cfg.train.batch_size),
        "inference": {**speed, "unit": "one image + its caption embedding"},
        "quality": {"metric": "base accuracy", "value": bimors["base"],
                    "higher_is_better": True, "tolerance": TOLERANCE,
                    "control": "zero-shot CLIP", "control_value": zero_shot["base"],
                    "split": "test (base classes)", "samples": len(test),
                    "extra": {"new accuracy": bimors["new"], "H": bimors["H"],
                              "zero-shot new accuracy": zero_shot["new"]}},
        "picture": picture,
        "settings": asdict(b),
    }
