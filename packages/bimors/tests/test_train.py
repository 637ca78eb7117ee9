"""BiMoRS training: the spec §2 learning-rate sequence, the trainable set, exact resume, test-set model selection,
the protocols and presets, and the data pipeline (transforms, caption lookup, collation)."""

import json

import pytest
import torch
from PIL import Image
from rs_shared.data.scene_cls import SceneSample
from rs_shared.training import load_config
from safetensors.torch import load_file

import bimors.train as train_module
from bimors.caption import CaptionCacheError
from bimors.cli import preset_path
from bimors.data import BiMoRSDataset, collate, eval_transform, open_caption_cache, protocol_dataset, train_transform
from bimors.datasets import DATASETS, SceneDataset, load_dataset
from bimors.train import (
    BiMoRSTrainConfig,
    ModelSection,
    build_protocol,
    clip_checkpoint,
    read_training_info,
    run,
    train_run,
)

SPEC_LR = [1e-5, 0.009, 0.008780, 0.008141, 0.007145, 0.005891, 0.0045, 0.003109, 0.001855, 0.000859]  # spec §2


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    load_dataset("synthetic", root)  # generated once for the module
    return root


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A random tiny CLIP checkpoint (what model.random_clip=true trains on)."""
    return clip_checkpoint(ModelSection(random_clip=True), tmp_path_factory.mktemp("clip"))


def config(tmp_path, data_root, *overrides, preset="tiny-synthetic"):
    """The preset with a random tiny CLIP, 4 shots (6 base classes → 24 images, 6 steps per epoch) and one seed."""
    return load_config(BiMoRSTrainConfig, preset_path(preset), [
        f"train.output_dir={tmp_path / 'run'}", f"data.root={data_root}", "model.random_clip=true", "data.shots=4",
        "protocol.seeds=1", "train.log_every=1", *overrides])


def base_run(cfg):
    return build_protocol(cfg.protocol).runs[0]


def read_log(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_learning_rate_per_epoch_follows_the_spec(tmp_path, data_root, clip):
    cfg = config(tmp_path, data_root, "protocol.zero_shot=false")
    assert cfg.train.epochs == 10 and cfg.train.batch_size == 4
    train_run(cfg, base_run(cfg), 1, clip, progress=False)
    log = read_log(tmp_path / "run" / "synthetic-base" / "seed1")
    assert len(log) == 60  # 10 epochs × 6 steps
    per_epoch = [[row["lr"] for row in log[6 * e:6 * e + 6]] for e in range(10)]
    assert all(len(set(lrs)) == 1 for lrs in per_epoch)  # stepped once per epoch
    assert [lrs[0] for lrs in per_epoch] == pytest.approx(SPEC_LR, abs=5e-7)


@pytest.mark.parametrize("caption_proj", ["frozen", "trainable"])
def test_one_step_changes_only_the_trainable_parameters(tmp_path, data_root, clip, monkeypatch, caption_proj):
    initial = {}
    build = train_module.build_model

    def recording(section, clip):
        model = build(section, clip)
        initial.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return model

    monkeypatch.setattr(train_module, "build_model", recording)
    cfg = config(tmp_path, data_root, "train.max_steps=1", f"model.caption_proj={caption_proj}")
    result = train_run(cfg, base_run(cfg), 1, clip, progress=False)
    trained = load_file(result["model"] / "model.safetensors")
    assert trained.keys() == initial.keys()
    changed = {k for k in trained if not torch.equal(trained[k], initial[k])}
    expected = {k for k in trained if k.startswith("prompt_learner.")}
    if caption_proj == "trainable":
        expected |= {"caption_projection.weight", "caption_projection.bias"}
    assert changed == expected
    assert read_log(tmp_path / "run" / "synthetic-base" / "seed1")[0]["lr"] == pytest.approx(1e-5)


class Crash(RuntimeError):
    pass


class CrashAt:
    def __init__(self, step):
        self.step = step

    def on_step_end(self, state):
        if state.step == self.step:
            raise Crash(f"simulated crash after step {state.step}")


def test_an_interrupted_run_resumes_exactly(tmp_path, data_root, clip):
    budget = ("train.epochs=2", "train.save_every=4", "protocol.zero_shot=false")
    straight = config(tmp_path / "a", data_root, *budget)
    train_run(straight, base_run(straight), 1, clip, progress=False)

    interrupted = config(tmp_path / "b", data_root, *budget)
    with pytest.raises(Crash):
        train_run(interrupted, base_run(interrupted), 1, clip, callbacks=[CrashAt(7)], progress=False)
    resumed = config(tmp_path / "b", data_root, *budget, "train.resume=auto")
    result = train_run(resumed, base_run(resumed), 1, clip, progress=False)

    a = load_file(tmp_path / "a" / "run" / "synthetic-base" / "seed1" / "model" / "model.safetensors")
    b = load_file(result["model"] / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [[row["loss"] for row in read_log(p / "run" / "synthetic-base" / "seed1")] for p in (tmp_path / "a",
                                                                                                 tmp_path / "b")]
    assert len(losses[0]) == 12 and losses[0] == losses[1]


def test_best_on_test_keeps_the_best_epoch_for_the_other_evaluations(tmp_path, data_root, clip):
    cfg = config(tmp_path, data_root, "train.epochs=3", "protocol.model_selection=best_on_test",
                 "protocol.zero_shot=false")
    result = train_run(cfg, base_run(cfg), 1, clip, progress=False)
    history = [row["eval"]["accuracy"] for row in read_log(tmp_path / "run" / "synthetic-base" / "seed1")
               if "eval" in row]
    assert len(history) == 3  # after every epoch
    selection = read_training_info(result["best"])["selection"]
    assert selection["accuracy"] == max(history) and selection["epoch"] == history.index(max(history)) + 1
    checkpoints = {row["role"]: row["checkpoint"] for row in result["evaluations"]}
    assert checkpoints == {"base": "last", "new": "best"}
    assert result["evaluations"][0]["accuracy"] == pytest.approx(history[-1])  # base: the last epoch

    plain = config(tmp_path / "last", data_root, "train.epochs=3", "protocol.zero_shot=false")
    last = train_run(plain, base_run(plain), 1, clip, progress=False)  # the per-epoch test runs leave training alone
    a, b = load_file(result["model"] / "model.safetensors"), load_file(last["model"] / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_model_directory_records_the_training(tmp_path, data_root, clip):
    cfg = config(tmp_path, data_root, "train.max_steps=2", "protocol.zero_shot=false")
    result = train_run(cfg, base_run(cfg), 1, clip, progress=False)
    info = read_training_info(result["model"])
    assert info["dataset"] == "synthetic" and info["subsample"] == "base" and info["seed"] == 1
    assert info["class_names"] == ["airport", "harbor", "parking_lot", "storage_tanks", "dense_residential", "farmland"]
    assert info["train_images"] == 24 and info["selection"] == {"step": 2, "epoch": "last"}
    assert (result["model"] / "config.json").is_file() and (result["model"] / "train_config.yaml").is_file()
    saved = load_config(BiMoRSTrainConfig, result["model"] / "train_config.yaml")
    assert saved.data.shots == 4 and saved.model.random_clip


def test_protocols():
    cfg = load_config(BiMoRSTrainConfig, preset_path("base2new"))
    protocol = build_protocol(cfg.protocol)
    assert [r.dataset for r in protocol.runs] == ["PatternNet", "RSICD", "RESISC45", "MLRSNet"]
    assert all(r.subsample == "base" and [e.subsample for e in r.evaluations] == ["base", "new"]
               for r in protocol.runs)
    assert protocol.seeds == (1, 2, 3)
    cross = build_protocol(load_config(BiMoRSTrainConfig, preset_path("cross_dataset")).protocol)
    assert [(e.dataset, e.subsample, e.role) for e in cross.runs[0].evaluations] == [
        ("PatternNet", "all", "source"), ("RSICD", "all", "target"), ("RESISC45", "all", "target"),
        ("MLRSNet", "all", "target")]
    dg = build_protocol(load_config(BiMoRSTrainConfig, preset_path("dg"), ["protocol.targets=RSICDv2"]).protocol)
    assert dg.runs[0].dataset == "PatternNetv2" and [e.dataset for e in dg.runs[0].evaluations] == [
        "PatternNetv2", "RSICDv2"]


def test_presets_follow_the_spec_recipe():
    for name in ("tiny-synthetic", "base2new", "cross_dataset", "dg"):
        cfg = load_config(BiMoRSTrainConfig, preset_path(name))
        train, optim, schedule = cfg.train, cfg.train.optim, cfg.train.schedule
        assert (train.epochs, train.batch_size, cfg.data.shots, cfg.protocol.seeds) == (10, 4, 16, (1, 2, 3))
        assert (optim.name, optim.lr, optim.momentum, optim.weight_decay, optim.nesterov) == ("sgd", 0.009, 0.9, 5e-4,
                                                                                             False)
        assert (schedule.name, schedule.warmup_steps, schedule.warmup_start, schedule.warmup_mode,
                schedule.interval) == ("cosine", 1, 1e-5, "constant", "epoch")
        assert cfg.protocol.model_selection == "last" and cfg.data.eval_batch_size == 100
        assert cfg.model.preset == ("tiny" if name == "tiny-synthetic" else "paper")


def test_paper_presets_name_the_missing_paths(tmp_path, data_root):
    cfg = load_config(BiMoRSTrainConfig, preset_path("base2new"), [f"train.output_dir={tmp_path}"])
    with pytest.raises(FileNotFoundError, match="data.root is not set"):
        run(cfg, progress=False)
    cfg = load_config(BiMoRSTrainConfig, preset_path("base2new"), [f"data.root={tmp_path / 'nowhere'}"])
    with pytest.raises(FileNotFoundError, match="PatternNet: dataset directory .*nowhere/PatternNet does not exist"):
        run(cfg, progress=False)
    cfg = load_config(BiMoRSTrainConfig, preset_path("dg"), [f"data.root={data_root}", "protocol.source=synthetic",
                                                             "protocol.targets=synthetic"])
    with pytest.raises(FileNotFoundError, match="model.clip is not set.*ViT-B/16"):
        run(cfg, progress=False)
    cfg = load_config(BiMoRSTrainConfig, preset_path("dg"), [f"data.root={data_root}", "protocol.source=synthetic",
                                                             "protocol.targets=synthetic",
                                                             f"model.clip={tmp_path / 'clip.safetensors'}"])
    with pytest.raises(FileNotFoundError, match="model.clip: .*clip.safetensors is not a file"):
        run(cfg, progress=False)


def test_transforms_and_collation(data_root):
    image = Image.new("RGB", (64, 48), (255, 0, 0))
    torch.manual_seed(0)
    x = train_transform(32)(image)
    assert x.shape == (3, 32, 32)
    y = eval_transform(32)(image)  # shorter side → 32, centre crop
    red = (1 - 0.48145466) / 0.26862954
    assert y.shape == (3, 32, 32) and torch.allclose(y[0], torch.full((32, 32), red), atol=1e-4)

    dataset = load_dataset("synthetic", data_root)
    captions = open_caption_cache(dataset, None, 64)
    train_set = protocol_dataset(dataset, "train", "base", 1, 32, captions, num_shots=4)
    test_set = protocol_dataset(dataset, "test", "new", 1, 32, captions, num_shots=4)
    assert len(train_set) == 24 and train_set.classnames == dataset.classnames[:6]
    assert test_set.classnames == dataset.classnames[6:] and len(test_set) == 5 * 6
    batch = collate([train_set[i] for i in range(3)])
    assert batch["pixel_values"].shape == (3, 3, 32, 32) and batch["caption_embeds"].shape == (3, 64)
    assert batch["labels"].dtype == torch.long and batch["labels"].max() < 6
    assert torch.equal(batch["caption_embeds"][1], captions.lookup(train_set.samples[1].path))


def test_missing_captions_name_the_cache_and_the_command(tmp_path, data_root):
    dataset = load_dataset("synthetic", data_root)
    captions = open_caption_cache(dataset, None, 64)
    foreign = tmp_path / "other.png"
    Image.new("RGB", (8, 8)).save(foreign)
    sample = SceneSample(foreign, 0, "airport", "airport/other.png")
    with pytest.raises(CaptionCacheError, match=r"extra \(eval\): caption cache .* bimors-caption --cache"):
        BiMoRSDataset([sample], ["airport"], 32, "eval", captions, name="extra (eval)")
    rsicd = SceneDataset("RSICD", tmp_path / "RSICD", dataset.split, DATASETS["RSICD"])  # a real dataset, no cache
    with pytest.raises(CaptionCacheError, match="RSICD: no caption cache given.*bimors-caption --cache DIR"):
        open_caption_cache(rsicd, "", 768)


def test_a_transfer_protocol_reports_the_source_row(tmp_path, data_root):
    cfg = config(tmp_path, data_root, "protocol.name=cross_dataset", "protocol.datasets=", "protocol.source=synthetic",
                 "protocol.targets=synthetic", "train.epochs=1")
    result = run(cfg, progress=False)
    for method in ("BiMoRS", "zero-shot CLIP"):
        (row,) = result["summaries"][method]["rows"]  # the target equal to the source is dropped: no average row
        assert row["dataset"] == "synthetic" and row["role"] == "source" and row["n_seeds"] == 1
    assert result["per_seed"]["BiMoRS"][("synthetic", "all")][1]["n"] == 66  # all 11 classes, full test split
    assert "| synthetic | source |" in result["markdown"].read_text()
    assert (tmp_path / "run" / "synthetic-all" / "seed1" / "model" / "training.json").is_file()
