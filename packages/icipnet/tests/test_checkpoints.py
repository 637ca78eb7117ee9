"""Checkpoints a user can trust: strict from_pretrained (removed key, extra key, wrong shape) and the model card of
icipnet-train, whose icipnet-eval command reproduces the card's metrics."""

import json

import pytest
import torch
from rs_shared.hub import WeightsMismatchError, read_model_card
from safetensors.torch import load_file, save_file

from icipnet import IcipNetConfig, IcipNetModel
from icipnet.cli import eval_main, train_main

KEY = "decoder.classifier.bias"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny model's save_pretrained directory and its state dict."""
    path = tmp_path_factory.mktemp("icipnet-saved")
    torch.manual_seed(0)
    IcipNetModel(IcipNetConfig.tiny()).save_pretrained(path)
    return path, load_file(path / "model.safetensors")


def write_edited(saved, tmp_path, edit):
    source, state = saved
    for name in ("config.json",):
        (tmp_path / name).write_bytes((source / name).read_bytes())
    state = dict(state)
    edit(state)
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    return tmp_path


def test_round_trip_is_exact(saved):
    path, state = saved
    loaded = IcipNetModel.from_pretrained(path)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())


@pytest.mark.parametrize("edit, expected", [
    (lambda s: s.pop(KEY), rf"missing keys \(in the model, not in the file\) \[1\]: {KEY}"),
    (lambda s: s.__setitem__("decoder.surplus.weight", torch.zeros(3)),
     r"unexpected keys \(in the file, not in the model\) \[1\]: decoder\.surplus\.weight"),
    (lambda s: s.__setitem__(KEY, torch.zeros(5)),
     rf"wrong shapes \[1\]: {KEY}: \(5\) in the file, \(2\) in the model"),
])
def test_from_pretrained_is_strict(saved, tmp_path, edit, expected):
    path = write_edited(saved, tmp_path, edit)
    with pytest.raises(WeightsMismatchError, match=expected) as info:
        IcipNetModel.from_pretrained(path)
    assert str(info.value).startswith(f"{path / 'model.safetensors'} does not match IcipNetModel")


def test_model_card_evaluation_reproduces(tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main(["--config", "tiny-synthetic", "--train.max_steps", "3", "--train.batch_size", "4",
                       "--train.eval_every", "0", "--train.save_every", "0", "--train.tensorboard", "false",
                       "--data.synthetic_n", "40", "--data.synthetic_dir", str(tmp_path / "data"),
                       "--data.eval_batch_size", "8", "--train.output_dir", str(out)]) == 0
    assert "model card:" in capsys.readouterr().out
    card = read_model_card(out / "model")
    assert (card.model_name, card.preset, card.package) == ("ICIPNet", "tiny", "rs-icipnet")
    assert card.training_data["synthetic_n"] == 40 and card.training_data["split"] == "train"
    (evaluation,) = card.evaluations
    assert evaluation.command[:3] == ("icipnet-eval", "--model", str(out / "model"))
    assert "--split" in evaluation.command and evaluation.command[evaluation.command.index("--split") + 1] == "test"
    assert set(evaluation.metrics) == {"mIoU", "oIoU", "P@0.5", "P@0.7", "P@0.9", "n"} and evaluation.metrics["n"] > 0
    text = (out / "model" / "README.md").read_text()
    assert "test_split: test" in text and "max_steps: 3" in text
    report = out / "model" / "eval-test" / "report.json"
    report.unlink()
    assert eval_main(list(evaluation.command[1:])) == 0
    results = json.loads(report.read_text())["results"]["model"]
    for name, value in evaluation.metrics.items():
        assert results[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
