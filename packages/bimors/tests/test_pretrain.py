"""Contrastive pre-training of the tiny CLIP: deterministic pairs disjoint from the scene dataset, the truncated text
encoder, the augmentation, a few steps lowering the loss, and the cache (loadable, reused, keyed by the settings)."""

import json

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from rs_shared.data.synthetic import SCENE_CLASSES
from rs_shared.data.synthetic.export import sample_seed
from safetensors.torch import load_file

from bimors import BiMoRSConfig, BiMoRSModel
from bimors import pretrain
from bimors.pretrain import (
    PretrainSettings,
    build_tiny_clip,
    cache_key,
    encode_text,
    evaluate_alignment,
    pair_seed,
    preprocess_images,
    pretrained_tiny_clip,
    random_dihedral,
    read_manifest,
    synthetic_pairs,
    tokenize_captions,
    train_contrastive,
)

QUICK = {"steps": 3, "batch_size": 8, "num_pairs": 16, "num_eval_pairs": 11, "warmup_steps": 1, "progress": False}
CLASS_WORDS = {"airport": "airport", "harbor": "harbor", "parking_lot": "parking lot", "storage_tanks": "storage tanks",
               "dense_residential": "dense residential", "farmland": "farmland", "forest": "forest", "river": "river",
               "beach": "beach", "sports_field": "sports", "freeway": "freeway"}


def test_pairs_are_deterministic_balanced_and_captioned():
    pairs = synthetic_pairs(13, seed=0)
    again = synthetic_pairs(13, seed=0)
    assert pairs.images.shape == (13, 64, 64, 3) and pairs.images.dtype == np.uint8
    assert np.array_equal(pairs.images, again.images) and pairs.captions == again.captions
    assert pairs.labels.tolist() == [i % 11 for i in range(13)]
    for caption, label in zip(pairs.captions, pairs.labels, strict=True):
        assert CLASS_WORDS[SCENE_CLASSES[label]] in caption.lower()
    # a window of the stream is the same pairs, another seed other pairs
    window = synthetic_pairs(3, seed=0, start=10)
    assert np.array_equal(window.images, pairs.images[10:]) and window.captions == pairs.captions[10:]
    other = synthetic_pairs(2, seed=1)
    assert not np.array_equal(other.images, pairs.images[:2])


def test_pair_seeds_never_meet_the_scene_dataset():
    dataset_seeds = {sample_seed(seed, "scene", i) for seed in range(3) for i in range(2000)}
    assert max(dataset_seeds) < 2 ** 32
    pairs = synthetic_pairs(4, seed=0)
    assert all(s >= 2 ** 32 for s in pairs.seeds) and not dataset_seeds & set(pairs.seeds)
    assert pair_seed(0, 5) != pair_seed(1, 5)
    with pytest.raises(ValueError, match="index"):
        pair_seed(0, 2 ** 32)


def test_preprocess_is_the_clip_eval_transform():
    images = synthetic_pairs(2).images
    pixel_values = preprocess_images(images, 32)
    assert pixel_values.shape == (2, 3, 32, 32) and pixel_values.dtype == torch.float32
    # a uniform image keeps its colour: (v/255 - mean) / std per channel
    grey = np.full((64, 64, 3), 128, np.uint8)
    expected = (128 / 255 - torch.tensor(open_clip.OPENAI_DATASET_MEAN)) / torch.tensor(open_clip.OPENAI_DATASET_STD)
    torch.testing.assert_close(preprocess_images([grey], 32)[0, :, 5, 7], expected.float())


def test_truncated_text_encoder_equals_open_clip():
    clip = build_tiny_clip(0).eval()
    ids = tokenize_captions(["An aerial view of a dense forest.", "a photo of a parking lot.", "beach"])
    assert int(ids.argmax(-1).max()) < 20  # the truncation actually drops most of the 77 positions
    with torch.no_grad():
        torch.testing.assert_close(encode_text(clip, ids), clip.encode_text(ids), rtol=1e-5, atol=1e-5)


def test_random_dihedral_applies_one_of_the_eight_symmetries():
    x = torch.randn(16, 3, 8, 8)
    out = random_dihedral(x, torch.Generator().manual_seed(0))
    for image, turned in zip(x, out, strict=True):
        candidates = [torch.rot90(image, k, dims=(1, 2)) for k in range(4)]
        candidates += [c.flip(2) for c in candidates]
        assert any(torch.equal(turned, c) for c in candidates)
    assert not torch.equal(out, x)
    torch.testing.assert_close(random_dihedral(x, torch.Generator().manual_seed(0)), out)


def test_a_few_steps_lower_the_contrastive_loss():
    pairs = synthetic_pairs(32, seed=3)
    clip = build_tiny_clip(0)
    assert clip.logit_scale.exp().item() == pytest.approx(1 / 0.07)
    pixel_values, ids = preprocess_images(pairs.images, 32), tokenize_captions(pairs.captions)

    def pool_loss():
        with torch.no_grad():
            image = F.normalize(clip.encode_image(pixel_values), dim=-1)
            text = F.normalize(encode_text(clip, ids), dim=-1)
            return open_clip.ClipLoss()(image, text, clip.logit_scale.exp()).item()

    before = pool_loss()
    settings = PretrainSettings(steps=12, batch_size=16, num_pairs=32, lr=2e-3, warmup_steps=0, augment=False)
    losses = train_contrastive(clip, pixel_values, ids, settings)
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert pool_loss() < before - 0.3
    assert not clip.training


def test_training_is_deterministic():
    pairs = synthetic_pairs(16, seed=0)
    pixel_values, ids = preprocess_images(pairs.images, 32), tokenize_captions(pairs.captions)
    settings = PretrainSettings(steps=4, batch_size=8, num_pairs=16, warmup_steps=1)
    runs = []
    for _ in range(2):
        clip = build_tiny_clip(0)
        runs.append((train_contrastive(clip, pixel_values, ids, settings), clip.state_dict()))
    assert runs[0][0] == runs[1][0]
    for key, value in runs[0][1].items():
        assert torch.equal(value, runs[1][1][key]), key


def test_evaluate_alignment_metrics_are_fractions():
    clip = build_tiny_clip(0)
    metrics = evaluate_alignment(clip, synthetic_pairs(11, seed=0, start=100), batch_size=4)
    assert set(metrics) == {"loss", "retrieval_accuracy", "zero_shot_accuracy"}
    assert metrics["loss"] > 0 and 0 <= metrics["retrieval_accuracy"] <= 1 and 0 <= metrics["zero_shot_accuracy"] <= 1


def test_cached_checkpoint_loads_into_bimors_and_is_reused(tmp_path, monkeypatch):
    path = pretrained_tiny_clip(tmp_path, **QUICK)
    assert path.name == "open_clip_model.safetensors" and path.parent.parent == tmp_path
    manifest = read_manifest(path)
    assert manifest["settings"]["steps"] == 3 and manifest["held_out"]["pairs"] == 11
    assert manifest["train"]["final_loss"] > 0 and 0 <= manifest["held_out"]["zero_shot_accuracy"] <= 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["manifest.json", "open_clip_model.safetensors"]

    model = BiMoRSModel.from_clip(path, BiMoRSConfig.tiny())  # strict: every key and shape must match
    trained = build_tiny_clip(0)
    state = load_file(path)
    trained.load_state_dict(state)
    torch.testing.assert_close(model.clip.visual.conv1.weight, trained.visual.conv1.weight)
    assert model.logit_scale.item() == pytest.approx(100.0)  # BiMoRS keeps its frozen logit scale
    assert state["logit_scale"].shape == model.clip.logit_scale.shape

    stamp = (path.stat().st_mtime_ns, path.with_name("manifest.json").stat().st_mtime_ns)

    def no_training(*args, **kwargs):
        raise AssertionError("a cached entry was trained again")

    monkeypatch.setattr(pretrain, "train_contrastive", no_training)
    assert pretrained_tiny_clip(tmp_path, **QUICK) == path
    assert (path.stat().st_mtime_ns, path.with_name("manifest.json").stat().st_mtime_ns) == stamp


def test_an_incomplete_entry_is_trained_again(tmp_path):
    path = pretrained_tiny_clip(tmp_path, **QUICK)
    path.with_name("manifest.json").unlink()  # the manifest is written last: without it the entry is incomplete
    assert pretrained_tiny_clip(tmp_path, **QUICK) == path
    assert read_manifest(path)["settings"]["num_pairs"] == 16


def test_cache_key_follows_every_setting():
    base = PretrainSettings()
    assert cache_key(base) == cache_key(PretrainSettings())
    keys = {cache_key(base)}
    for change in ({"steps": 7}, {"seed": 1}, {"lr": 1e-3}, {"num_pairs": 512}, {"augment": False},
                   {"batch_size": 64}, {"render_size": 32}):
        keys.add(cache_key(PretrainSettings(**change)))
    assert len(keys) == 8
    assert cache_key(base, BiMoRSConfig.tiny(clip_model={**BiMoRSConfig.tiny().clip_config(), "embed_dim": 40})) \
        not in keys


def test_default_cache_dir_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("BIMORS_CACHE_DIR", str(tmp_path / "mine"))
    assert pretrain.default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("BIMORS_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pretrain.default_cache_dir() == tmp_path / "xdg" / "rs-vlm" / "bimors"


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="steps=0"):
        PretrainSettings(steps=0)
    with pytest.raises(TypeError, match="unknown pre-training setting.*'step'"):
        pretrained_tiny_clip(tmp_path, step=3)
    with pytest.raises(ValueError, match="batch_size 64 is larger than num_pairs 32"):
        PretrainSettings(batch_size=64, num_pairs=32)


def test_cli(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        pretrain.main(["--help"])
    assert exit_info.value.code == 0
    assert "--steps" in capsys.readouterr().out
    argv = ["--out", str(tmp_path), "--steps", "2", "--batch-size", "8", "--num-pairs", "16", "--num-eval-pairs",
            "4", "--warmup-steps", "0", "--quiet"]
    assert pretrain.main(argv) == 0
    out = capsys.readouterr().out
    checkpoint = next(tmp_path.glob("tiny-clip-*/open_clip_model.safetensors"))
    assert f"checkpoint: {checkpoint}" in out and "zero-shot" in out
    assert json.loads(checkpoint.with_name("manifest.json").read_text())["settings"]["steps"] == 2
    assert pretrain.main(argv[:-1] + ["--no-augment", "--quiet"]) == 0
    assert len(list(tmp_path.glob("tiny-clip-*"))) == 2
    assert pretrain.main(["--out", str(tmp_path), "--steps", "0", "--quiet"]) == 2
    assert "steps=0" in capsys.readouterr().err
