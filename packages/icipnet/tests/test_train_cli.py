"""Training recipe, evaluation controls and the three CLIs, end to end on tiny synthetic runs."""

import json
import re

import numpy as np
import pytest
import torch
from icipnet import IcipNetConfig, IcipNetModel
from icipnet.cli import eval_main, predict_main, resolve_config, train_main
from icipnet.data import RefSegEvalDataset, load_split
from icipnet.evaluation import category_oracle, derangement, evaluate
from icipnet.inference import ReferringSegmenter
from icipnet.tokenizer import build_synthetic_tokenizer, load_tokenizer
from icipnet.train import IcipNetTrainConfig, ModelSection, build_model, param_groups
from PIL import Image
from rs_shared.training import build_optimizer, build_scheduler, load_config
from safetensors.torch import load_file

TINY_RUN = ["--config", "configs/tiny-synthetic.yaml", "--train.max_steps", "4", "--train.batch_size", "4",
            "--train.eval_every", "2", "--train.save_every", "0", "--train.log_every", "1",
            "--train.tensorboard", "false", "--data.synthetic_n", "40", "--data.eval_batch_size", "8"]


def _train(tmp, name, *extra):
    out = tmp / name
    argv = [*TINY_RUN, "--data.synthetic_dir", str(tmp / "data"), "--train.output_dir", str(out), *extra]
    assert train_main(argv) == 0
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("icipnet-cli"), "run")


def test_train_cli_writes_model_best_config_and_log(run_dir, capsys):
    for name in ("model", "best"):
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (run_dir / name).iterdir()}
    assert json.loads((run_dir / "best" / "eval.json").read_text())["step"] in (2, 4)
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1, 2, 3, 4]
    assert {"oIoU", "mIoU", "P@0.5"} <= set(log[1]["eval"])
    saved = load_config(IcipNetTrainConfig, run_dir / "train_config.yaml")
    assert saved.train.max_steps == 4 and saved.model.preset == "tiny" and not saved.data.random_boxes
    model = IcipNetModel.from_pretrained(run_dir / "model")
    assert model.config.text_config.vocab_size == len(load_tokenizer(run_dir / "model"))


def test_packaged_presets_resolve_by_name_and_path():
    assert resolve_config("rrsisd") == resolve_config("configs/rrsisd.yaml")
    paper = load_config(IcipNetTrainConfig, resolve_config("refsegrs"))  # _base_: rrsisd.yaml
    assert (paper.train.optim.lr, paper.train.optim.weight_decay, paper.train.epochs, paper.train.batch_size,
            paper.train.seed) == (3e-5, 0.01, 40, 4, 2014)
    assert paper.train.schedule.name == "poly" and paper.train.schedule.power == 0.9
    assert paper.model.preset == "paper" and paper.data.random_boxes and paper.data.box_size == 32
    with pytest.raises(FileNotFoundError, match="packaged presets: refsegrs, rrsisd, tiny-synthetic"):
        resolve_config("configs/nope.yaml")


def test_train_cli_rejects_bad_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--config", "tiny-synthetic", "--train.optim.lrr", "1"])
    assert exit_info.value.code == 2 and "did you mean 'train.optim.lr'" in capsys.readouterr().err
    assert train_main(["--config", "missing-preset"]) == 2
    assert "not found" in capsys.readouterr().err


def test_paper_preset_needs_pretrained_backbones_or_an_explicit_random_init():
    with pytest.raises(FileNotFoundError, match="model.swin"):
        build_model(ModelSection(preset="paper"))
    with pytest.raises(ValueError, match="give both"):
        build_model(ModelSection(preset="paper", swin="swin.safetensors"))


def test_ablation_switches_run_from_the_cli(tmp_path):
    out = _train(tmp_path, "rmsin-like", "--model.use_icip", "false", "--model.use_bif", "false",
                 "--model.decoder_norm", "batchnorm", "--train.max_steps", "2")
    config = IcipNetConfig.from_pretrained(out / "model")
    assert (config.use_icip, config.use_bif, config.decoder_norm) == (False, False, "batchnorm")
    names = load_file(out / "model" / "model.safetensors").keys()
    assert not any(".icip." in k or ".bif." in k for k in names)


# --- the optimisation recipe (spec §4, §9) ----------------------------------------------------------------

def _paper_optimizer(model, total_steps):
    cfg = IcipNetTrainConfig()
    optimizer = build_optimizer(model, cfg.train.optim, param_groups(cfg.train.optim.weight_decay))
    return optimizer, build_scheduler(optimizer, cfg.train.schedule, total_steps, total_steps)


def test_poly_learning_rate_sequence_is_the_same_for_every_group():
    model = IcipNetModel(IcipNetConfig.tiny())
    optimizer, scheduler = _paper_optimizer(model, total_steps=10)
    assert len(optimizer.param_groups) >= 2
    for k in range(10):
        for group in optimizer.param_groups:
            assert group["lr"] == pytest.approx(3e-5 * (1 - k / 10) ** 0.9, rel=1e-9)
        optimizer.step()
        scheduler.step()


def test_no_decay_groups_and_frozen_bert_parts():
    model = IcipNetModel(IcipNetConfig.tiny())
    optimizer, _ = _paper_optimizer(model, total_steps=10)
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)]: g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    for name, wd in decay.items():
        # the official rule on the official names: Swin's norms and tables and the stage output norms (norm{i})
        no_decay = (name.startswith("swin.") and ("norm" in name or "relative_position_bias_table" in name)) or (
            re.match(r"fusion\.\d\.norm\.", name) is not None)
        assert wd == (0.0 if no_decay else 0.01), name
    assert any("relative_position_bias_table" in n for n in decay) and any(n.startswith("decoder.") for n in decay)
    assert decay["decoder.classifier.bias"] == 0.01  # the official groups decay biases outside Swin
    assert not any(n.startswith("text_encoder.embeddings.") for n in decay)
    assert set(decay) == {n for n, p in model.named_parameters() if p.requires_grad}


def test_relative_position_tables_can_learn_faster():
    model = IcipNetModel(IcipNetConfig.tiny())
    names = {id(p): n for n, p in model.named_parameters()}
    optim = IcipNetTrainConfig().train.optim
    for scale in (1.0, 20.0):
        optimizer = build_optimizer(model, optim, param_groups(optim.weight_decay, position_lr_scale=scale))
        for group in optimizer.param_groups:
            tables = {"relative_position_bias_table" in names[id(p)] for p in group["params"]}
            assert len(tables) == 1  # the tables have a group of their own
            expected = scale * optim.lr if tables == {True} else optim.lr
            assert group["lr"] == pytest.approx(expected), group["name"]
            assert tables == {False} or group["weight_decay"] == 0.0
    tiny = load_config(IcipNetTrainConfig, resolve_config("tiny-synthetic"))
    assert tiny.model.position_lr_scale == 20 and IcipNetTrainConfig().model.position_lr_scale == 1.0
    with pytest.raises(ValueError, match="position_lr_scale"):
        ModelSection(position_lr_scale=0).validate()


def test_training_leaves_bert_embeddings_unchanged(tmp_path):
    start = IcipNetModel(IcipNetConfig.tiny(vocab_size=len(build_synthetic_tokenizer(tmp_path / "init"))))
    start.save_pretrained(tmp_path / "init")
    out = _train(tmp_path, "from-init", "--model.init", str(tmp_path / "init"), "--train.max_steps", "2",
                 "--train.optim.lr", "1e-2")
    before, after = start.state_dict(), IcipNetModel.from_pretrained(out / "model").state_dict()
    embeddings = [k for k in before if k.startswith("text_encoder.embeddings.")]
    assert embeddings and all(torch.equal(before[k], after[k]) for k in embeddings)
    assert not torch.equal(before["text_encoder.encoder.layer.0.attention.self.query.weight"],
                           after["text_encoder.encoder.layer.0.attention.self.query.weight"])


# --- evaluation and its controls -------------------------------------------------------------------------

def test_derangement_has_no_fixed_point():
    for n in (2, 3, 10, 101):
        perm = derangement(n, seed=n)
        assert sorted(perm) == list(range(n)) and not np.any(perm == np.arange(n))


class _EchoModel(torch.nn.Module):
    """Predicts foreground everywhere iff the second token id is odd: the output depends on the text only."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, pixel_values, input_ids, attention_mask):
        fg = (input_ids[:, 1] % 2 == 1).float()[:, None, None] * 2 - 1
        logits = torch.stack([torch.zeros_like(pixel_values[:, 0]), fg.expand_as(pixel_values[:, 0])], 1)
        return type("Out", (), {"logits": logits})()


class _Samples(torch.utils.data.Dataset):
    def __init__(self, token_ids, masks):
        self.input_ids = torch.tensor([[101, t, 102] for t in token_ids])
        self.attention_mask = torch.ones_like(self.input_ids)
        self.rows, self.masks = list(range(len(token_ids))), masks

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return {"pixel_values": torch.zeros(3, 4, 4), "input_ids": self.input_ids[i],
                "attention_mask": self.attention_mask[i], "labels": torch.as_tensor(self.masks[i], dtype=torch.long),
                "ref_id": i, "sent_id": i, "expression": ""}


def test_evaluate_scores_empty_ground_truth_and_empty_prediction_as_zero():
    full, empty = np.ones((4, 4), bool), np.zeros((4, 4), bool)
    metrics = evaluate(_EchoModel(), _Samples([1, 2, 1], [full, empty, empty]), batch_size=2)
    assert metrics.ious.tolist() == [1.0, 0.0, 0.0]
    assert metrics.unions.tolist() == [16, 0, 16]  # an empty pair adds nothing to ΣU
    assert metrics.compute()["oIoU"] == pytest.approx(16 / 32)


def test_shuffled_evaluation_pairs_each_image_with_another_expression():
    full, empty = np.ones((4, 4), bool), np.zeros((4, 4), bool)
    samples = _Samples([1, 2, 3, 4, 5, 6], [full, empty] * 3)  # only odd tokens mark "foreground"
    assert evaluate(_EchoModel(), samples, batch_size=4).compute()["mIoU"] == pytest.approx(0.5)
    shuffled = evaluate(_EchoModel(), samples, batch_size=4, shuffle_expressions=True, seed=3)
    partner = derangement(6, 3)
    expected = [1.0 if samples.input_ids[partner[i], 1] % 2 == 1 and i % 2 == 0 else 0.0 for i in range(6)]
    assert shuffled.ious.tolist() == expected


def test_category_oracle_is_exact_on_unique_categories_and_ambiguous_on_most_samples(run_dir):
    root = run_dir.parent / "data"
    tokenizer = load_tokenizer(run_dir / "model")
    dataset = RefSegEvalDataset(load_split(root, "test"), tokenizer, 64, 16, mode="all")
    oracle, ambiguous = category_oracle(root, dataset, seed=0)
    assert len(oracle.ious) == len(dataset) and 0.5 <= ambiguous.mean() < 1.0
    assert np.all(oracle.ious[~ambiguous] == 1.0)
    assert oracle.ious[ambiguous].mean() < 0.9
    labels = torch.stack([dataset[i]["labels"] for i in range(len(dataset))]).bool()
    assert np.array_equal(oracle.unions[~ambiguous], labels.sum((1, 2)).numpy()[~ambiguous])


# --- icipnet-eval and icipnet-predict ---------------------------------------------------------------------

def test_eval_cli_writes_report_markdown_and_examples(run_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    assert eval_main(["--model", str(run_dir / "best"), "--controls", "--examples", "3", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    results = report["results"]
    assert {"model", "shuffled_expressions", "language_gap_mIoU", "category_oracle", "ambiguous"} <= set(results)
    assert results["model"]["n"] == 8  # 20 % of 40 synthetic images are the test split
    assert report["extra"]["data"] == str(run_dir.parent / "data")  # read from the run's train_config.yaml
    assert "category-only oracle" in (out / "report.md").read_text()
    assert Image.open(out / "examples.png").size[0] > 3 * 64
    # the same numbers from the Python API
    segmenter = ReferringSegmenter.from_pretrained(run_dir / "best")
    dataset = RefSegEvalDataset(load_split(run_dir.parent / "data", "test"), segmenter.tokenizer, 64, 16)
    assert evaluate(segmenter.model, dataset).compute()["mIoU"] == pytest.approx(results["model"]["mIoU"])
    assert re.search(r"\| ICIPNet +\|", capsys.readouterr().out)


def test_eval_cli_errors_name_the_problem(run_dir, tmp_path, capsys):
    assert eval_main(["--model", str(tmp_path / "nothing"), "--data", str(run_dir.parent / "data")]) == 1
    assert eval_main(["--model", str(run_dir / "best"), "--data", str(tmp_path)]) == 1
    assert "neither an RRSIS-D layout" in capsys.readouterr().err


def test_predict_cli_writes_mask_overlay_and_json_at_the_image_size(run_dir, tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")
    out = tmp_path / "pred"
    assert predict_main(["--model", str(run_dir / "best"), "--image", str(tmp_path / "x.png"), "--text",
                         "the red car", "--text", "the largest ship", "--out", str(out)]) == 0
    prediction = json.loads((out / "prediction.json").read_text())
    assert prediction["size"] == [70, 50] and [p["text"] for p in prediction["predictions"]] == [
        "the red car", "the largest ship"]
    for k, entry in enumerate(prediction["predictions"]):
        mask = np.asarray(Image.open(out / entry["mask"]))
        assert mask.shape == (50, 70) and set(np.unique(mask)) <= {0, 255}
        assert entry["area_fraction"] == pytest.approx((mask > 0).mean())
        assert Image.open(out / f"overlay_{k}.png").size[0] >= 70
    # the mask is the model's argmax at its input size, nearest-resized to the image
    segmenter = ReferringSegmenter.from_pretrained(run_dir / "best")
    result = segmenter(image, ["the red car"])
    assert np.array_equal(result.masks[0], np.asarray(Image.open(out / "mask_0.png")) > 0)


def test_predict_cli_reports_a_missing_image(run_dir, tmp_path, capsys):
    assert predict_main(["--model", str(run_dir / "best"), "--image", str(tmp_path / "no.png"), "--text", "x"]) == 1
    assert "no.png" in capsys.readouterr().err
