"""bimors-train / bimors-eval: --help, presets by name, an end-to-end protocol run whose model bimors-eval reloads
and reproduces, and clear failures."""

import argparse
import json
from importlib.metadata import entry_points

import pytest
from rs_shared.training import add_config_arguments

from bimors.cli import eval_main, eval_parser, preset_path, train_main
from bimors.datasets import load_dataset
from bimors.train import BiMoRSTrainConfig


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    load_dataset("synthetic", root)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    """``bimors-train --config tiny-synthetic`` with a tiny budget: one seed, 4 shots, 2 epochs (12 steps), and a
    random tiny CLIP (the pre-trained one is exercised by test_learning.py)."""
    out = tmp_path_factory.mktemp("run")
    code = train_main(["--config", "tiny-synthetic", "--train.output_dir", str(out), "--data.root", str(data_root),
                       "--model.random_clip", "true", "--protocol.seeds", "1", "--data.shots", "4",
                       "--train.epochs", "2"])
    assert code == 0
    return out


def test_entry_points_are_installed():
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts") if ep.name.startswith("bimors-")}
    assert scripts["bimors-train"] == "bimors.cli:train_main" and scripts["bimors-eval"] == "bimors.cli:eval_main"


@pytest.mark.parametrize(("main", "options"), [
    (train_main, ("--config", "--protocol.name", "--protocol.seeds", "--protocol.model_selection", "--model.clip",
                  "--model.random_clip", "--data.root", "--data.captions", "--train.optim.lr", "--train.resume",
                  "tiny-synthetic", "best_on_test")),
    (eval_main, ("--model", "--dataset", "--root", "--subsample", "--captions", "--seed", "--shots", "--zero-shot",
                 "--batch-size", "--device", "--out", "--no-progress")),
])
def test_help_explains_every_option(main, options, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in options:
        assert option in text


def test_every_option_has_help_text():
    train_parser = argparse.ArgumentParser()
    add_config_arguments(train_parser, BiMoRSTrainConfig)
    for parser in (train_parser, eval_parser()):
        assert [a.option_strings for a in parser._actions if not (a.help and a.help.strip(" []"))] == []


def test_presets_are_found_by_name_or_file(tmp_path):
    assert preset_path("base2new") == preset_path("base2new.yaml")
    own = tmp_path / "mine.yaml"
    own.write_text("protocol: {seeds: [1]}\n")
    assert preset_path(str(own)) == own
    with pytest.raises(FileNotFoundError, match="cross_dataset, dg, tiny-synthetic"):
        preset_path("imagenet")


def test_train_writes_results_and_models(trained):
    report = json.loads((trained / "results.json").read_text())
    assert report["seeds"] == [1] and "micro top-1" in report["protocol"]
    summary = report["results"]["summary"]
    assert set(summary) == {"BiMoRS", "zero-shot CLIP"}
    for method in summary:
        synthetic, average = summary[method]["rows"]
        assert synthetic["dataset"] == "synthetic" and average["dataset"] == "Average"
        assert 0 <= synthetic["base"] <= 1 and 0 <= synthetic["new"] <= 1
        assert synthetic["H"] == pytest.approx(2 * synthetic["base"] * synthetic["new"]
                                               / max(synthetic["base"] + synthetic["new"], 1e-12))
    per_seed = report["results"]["per_seed"]["BiMoRS"]
    assert per_seed["synthetic/base"]["1"]["n"] == 36 and per_seed["synthetic/new"]["1"]["n"] == 30
    markdown = (trained / "results.md").read_text()
    assert "## BiMoRS" in markdown and "## zero-shot CLIP" in markdown and "| synthetic |" in markdown
    model = trained / "synthetic-base" / "seed1" / "model"
    assert {p.name for p in model.iterdir()} >= {"config.json", "model.safetensors", "training.json",
                                                  "train_config.yaml"}


def test_eval_reloads_and_reproduces_the_training_results(trained, tmp_path, capsys):
    per_seed = json.loads((trained / "results.json").read_text())["results"]["per_seed"]
    model = trained / "synthetic-base" / "seed1" / "model"
    for subsample in ("base", "new"):
        out = tmp_path / subsample
        assert eval_main(["--model", str(model), "--subsample", subsample, "--zero-shot", "--out", str(out),
                          "--batch-size", "7", "--no-progress"]) == 0
        results = json.loads((out / "eval.json").read_text())["results"]
        for method in ("BiMoRS", "zero-shot CLIP"):
            expected = per_seed[method][f"synthetic/{subsample}"]["1"]
            for metric in ("accuracy", "macro_accuracy", "macro_f1", "n"):
                assert results[method][metric] == pytest.approx(expected[metric], abs=1e-9)
        assert "| BiMoRS" in (out / "eval.md").read_text()
    assert "zero-shot CLIP" in capsys.readouterr().out


def test_eval_fails_clearly_on_a_directory_that_is_not_a_model(tmp_path, capsys):
    assert eval_main(["--model", str(tmp_path)]) == 1
    assert "training.json is missing" in capsys.readouterr().err


def test_train_fails_clearly(tmp_path, capsys):
    assert train_main(["--config", "base2new", "--train.output_dir", str(tmp_path)]) == 1
    assert "data.root is not set" in capsys.readouterr().err
    assert train_main(["--config", "nonexistent"]) == 2
    assert "packaged preset" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--config", "tiny-synthetic", "--protocol.model_selection", "best"])
    assert exit_info.value.code == 2
    assert "protocol.model_selection" in capsys.readouterr().err
