"""The tiny preset learns to read the expression (a short, CI-sized version of the README's learning run).

In 300 steps the full synthetic expression mix is only partly learned (the model first segments salient
objects; spatial and relational words come last), so this check uses the same generator restricted to
category and colour expressions (see shared/specs/synthetic-learning.md, "CI-colour"). Thresholds are about
two thirds of what such a run reaches, leaving room for seed-to-seed variance. The full-mix numbers (the
≤ 10-minute run) are in the package README.
"""

import json

import pytest
from icipnet.cli import resolve_config
from icipnet.data import RefSegEvalDataset, load_split
from icipnet.evaluation import evaluate
from icipnet.inference import ReferringSegmenter
from icipnet.train import IcipNetTrainConfig, run
from rs_shared.data.refseg import RRSISDImage, RRSISDObject, write_rrsisd
from rs_shared.data.synthetic.export import SPLIT_FRACTIONS, split_of
from rs_shared.data.synthetic.scene import make_referring_scene
from rs_shared.data.synthetic.shapes import CATEGORIES, REFERRING_CATEGORIES
from rs_shared.training import load_config

N_IMAGES, STEPS = 2000, 300


def _write_colour_category_data(root):
    images = []
    for i in range(N_IMAGES):
        scene, expr = make_referring_scene(10_000 + i, (64, 64), kinds=("category", "colour"))
        objects = [RRSISDObject(CATEGORIES[o.category].noun, [o.polygon], [expr.text] if j == expr.target else [])
                   for j, o in enumerate(scene.objects)]
        images.append(RRSISDImage(f"{i:06d}.jpg", scene.image, split_of(i, N_IMAGES, SPLIT_FRACTIONS), objects))
    write_rrsisd(root, images, [CATEGORIES[c].noun for c in REFERRING_CATEGORIES])


@pytest.mark.slow
def test_tiny_preset_learns_to_use_the_expression(tmp_path):
    data = tmp_path / "data"
    _write_colour_category_data(data)
    cfg = load_config(IcipNetTrainConfig, resolve_config("tiny-synthetic"), [
        f"train.output_dir={tmp_path / 'run'}", f"data.root={data}", f"train.max_steps={STEPS}",
        "train.optim.lr=2e-3", "train.schedule.warmup_steps=30", "train.eval_every=0", "train.save_every=0",
        "train.tensorboard=false", "data.val_max=0"])
    result = run(cfg)

    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < 0.6 * log[0]["loss"]
    segmenter = ReferringSegmenter.from_pretrained(result["model"])
    val = RefSegEvalDataset(load_split(data, "val"), segmenter.tokenizer, 64, 16, mode="per_ref")
    miou = evaluate(segmenter.model, val, batch_size=64).compute()["mIoU"]
    shuffled = evaluate(segmenter.model, val, batch_size=64, shuffle_expressions=True).compute()["mIoU"]
    print(f"val mIoU {miou:.3f}, shuffled {shuffled:.3f}")
    assert miou >= 0.30
    assert miou - shuffled >= 0.10
