"""Checkpoints a user can trust: strict from_pretrained (removed key, extra key, wrong shape) and the model cards of
bimors-train, whose bimors-eval commands reproduce the cards' metrics (last and best-on-test directories)."""

import json

import pytest
import torch
from rs_shared.hub import WeightsMismatchError, read_model_card
from safetensors.torch import load_file, save_file

from bimors.cli import eval_main, train_main
from bimors.configuration import BiMoRSConfig
from bimors.datasets import load_dataset
from bimors.modeling import BiMoRSModel

KEY = "caption_projection.bias"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("bimors-saved")
    torch.manual_seed(0)
    BiMoRSModel(BiMoRSConfig.tiny()).save_pretrained(path)
    return path, load_file(path / "model.safetensors")


@pytest.mark.parametrize("edit, expected", [
    (lambda s: s.pop(KEY), rf"missing keys \(in the model, not in the file\) \[1\]: {KEY}"),
    (lambda s: s.__setitem__("prompt_learner.surplus", torch.zeros(3)),
     r"unexpected keys \(in the file, not in the model\) \[1\]: prompt_learner\.surplus"),
    (lambda s: s.__setitem__(KEY, torch.zeros(5)),
     rf"wrong shapes \[1\]: {KEY}: \(5\) in the file, \(\d+\) in the model"),
])
def test_from_pretrained_is_strict(saved, tmp_path, edit, expected):
    source, state = saved
    (tmp_path / "config.json").write_bytes((source / "config.json").read_bytes())
    state = dict(state)
    edit(state)
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsMismatchError, match=expected) as info:
        BiMoRSModel.from_pretrained(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'model.safetensors'} does not match BiMoRSModel")
    loaded = BiMoRSModel.from_pretrained(source)  # the untouched directory still loads
    assert torch.equal(loaded.state_dict()[KEY], saved[1][KEY])


def test_model_cards_reproduce_their_metrics(tmp_path, capsys):
    root = tmp_path / "data"
    load_dataset("synthetic", root)
    out = tmp_path / "run"
    assert train_main(["--config", "tiny-synthetic", "--train.output_dir", str(out), "--data.root", str(root),
                       "--model.random_clip", "true", "--data.shots", "4", "--protocol.seeds", "1",
                       "--train.max_steps", "2", "--protocol.zero_shot", "false",
                       "--protocol.model_selection", "best_on_test"]) == 0
    capsys.readouterr()
    seed_dir = out / "synthetic-base" / "seed1"
    subsamples = {}
    for name, checkpoint in (("model", "last"), ("best", "best")):
        card = read_model_card(seed_dir / name)
        assert (card.model_name, card.preset, card.package) == ("BiMoRS", "tiny", "rs-bimors")
        assert card.training_data["train_images"] == 24 and card.training_data["synthetic_seed"] == 0
        (evaluation,) = card.evaluations
        assert evaluation.command[:3] == ("bimors-eval", "--model", str(seed_dir / name))
        subsamples[checkpoint] = evaluation.command[evaluation.command.index("--subsample") + 1]
        rows = [r for r in json.loads((seed_dir / "evaluations.json").read_text()) if r["checkpoint"] == checkpoint]
        assert evaluation.metrics == {k: rows[0][k] for k in ("accuracy", "macro_accuracy", "macro_f1", "n")}
        assert eval_main(list(evaluation.command[1:])) == 0
        report = seed_dir / name / f"eval-synthetic-{subsamples[checkpoint]}" / "eval.json"
        results = json.loads(report.read_text())["results"]["BiMoRS"]
        for metric, value in evaluation.metrics.items():
            assert results[metric] == pytest.approx(value, rel=1e-6, abs=1e-9), (name, metric)
    assert subsamples == {"last": "base", "best": "new"}  # best_on_test: the other evaluations use the best epoch
