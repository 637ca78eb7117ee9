"""Box-prompted pre-training of the tiny SAM2: prompts frame their targets, it learns, and the cache is reused."""

import json

import numpy as np
import pytest
import torch
from rs_shared.data.synthetic import OBJECT_SCENE_CLASSES, make_scene
from transformers import Sam2Model

from clvnet import pretrain
from clvnet.pretrain import SamPretrainSettings, boxed_scene, mask_loss, pretrained_tiny_sam2, train_sam
from clvnet.processing import sam_transform


def test_boxed_scenes_frame_their_targets_and_use_seeds_above_the_datasets():
    for index in range(14):
        scene = boxed_scene(index, seed=0, size=128, sam_size=64)
        assert scene.pixels.shape == (3, 64, 64) and scene.masks.shape[1:] == (128, 128)
        assert len(scene.boxes) == len(scene.masks) >= 1
        for box, mask in zip(scene.boxes * 2, scene.masks, strict=True):  # SAM2 input pixels → image pixels
            ys, xs = np.nonzero(mask.numpy())
            assert len(xs) and box[0] <= xs.min() and box[1] <= ys.min() and xs.max() <= box[2] and ys.max() <= box[3]
    expected = make_scene((1 << 32) + 3, (128, 128), OBJECT_SCENE_CLASSES[3])  # synthesize() seeds are < 2³²
    torch.testing.assert_close(boxed_scene(3, 0, 128, 128).pixels, sam_transform(expected.image, 128))


def test_settings_are_checked():
    with pytest.raises(ValueError, match="steps=0"):
        SamPretrainSettings(steps=0)
    with pytest.raises(TypeError, match="unknown SAM2 pre-training setting"):
        pretrained_tiny_sam2(None, steps=1, epochs=2)


def test_it_learns_and_the_cache_is_reused(make_config, tmp_path, monkeypatch):
    sam_config = make_config().sam_config
    settings = dict(steps=60, batch_size=4, num_scenes=4, num_eval_scenes=4, lr=3e-3, warmup_steps=5)
    state = pretrained_tiny_sam2(sam_config, tmp_path, progress=False, **settings)
    manifest = json.loads(next(tmp_path.glob("tiny-sam2-*/manifest.json")).read_text())
    assert manifest["train"]["final_loss"] < 0.6 * manifest["train"]["first_loss"], manifest["train"]
    assert 0.0 <= manifest["held_out"]["mask_iou"] <= 1.0 and manifest["held_out"]["scenes"] == 4

    monkeypatch.setattr(pretrain, "train_sam", lambda *args, **kwargs: pytest.fail("the cache was not used"))
    again = pretrained_tiny_sam2(sam_config, tmp_path, progress=False, **settings)
    assert set(again) == set(state) and all(torch.equal(again[k], state[k]) for k in state)
    model = Sam2Model(sam_config)
    model.load_state_dict(again)  # strict: a complete Sam2Model state dict
    scenes = [boxed_scene(i, 0, 128, 128) for i in range(4)]
    with torch.no_grad():
        loss, logits = mask_loss(model.eval(), scenes)
    assert [tuple(x.shape) for x in logits] == [tuple(s.masks.shape) for s in scenes]
    assert loss < manifest["train"]["first_loss"]


def test_train_sam_cycles_through_the_pool(make_config):
    torch.manual_seed(0)
    model = Sam2Model(make_config().sam_config)
    pool = [boxed_scene(i, 1, 128, 128) for i in range(3)]
    losses = train_sam(model, pool, SamPretrainSettings(steps=4, batch_size=2, num_scenes=3, warmup_steps=0),
                       progress=False)
    assert len(losses) == 4 and all(np.isfinite(losses))
