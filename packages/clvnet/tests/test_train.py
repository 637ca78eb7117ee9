"""clvnet-train (spec §2, §5): a few-step tiny run writes the model directory and the log; ablations, bad options,
--help and resume."""

import json

import pytest
import torch

from rs_shared.hub import read_model_card

from clvnet import cli_eval, cli_train
from clvnet.configuration import CLVNetConfig
from clvnet.modeling import CLVNetModel
from clvnet.tokenizer import load_tokenizer


def args(out, gcg_root, *extra) -> list[str]:
    """The tiny-synthetic preset cut to 2 steps of batch 2 on the session's 40 synthetic tiles, with a random SAM2
    (no pre-training); the model card's evaluation on 2 test tiles without caption metrics."""
    return ["--config", "tiny-synthetic", "--model.tiny_sam_steps", "0", "--train.output_dir", str(out),
            "--train.max_steps", "2",
            "--train.batch_size", "2", "--train.log_every", "1", "--train.tensorboard", "false",
            "--data.synthetic_dir", str(gcg_root), "--data.synthetic_n", "40", "--eval.caption_metrics", "false",
            "--eval.max_samples", "2", *extra]


def log_steps(out) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]


def test_tiny_run_writes_model_and_log(tmp_path, gcg_root, capsys):
    out = tmp_path / "run"
    assert cli_train.main(args(out, gcg_root)) == 0
    assert "trained 2 steps on 32 tiles" in capsys.readouterr().out
    model_dir = out / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (model_dir / name).is_file(), name
    assert (out / "train_config.yaml").is_file()
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for key in ("loss_caption", "loss_bce", "loss_dice", "loss_csc", "loss_rec"):
        assert key in records[-1]["logs"]
    model = CLVNetModel.from_pretrained(model_dir)
    config = CLVNetConfig.from_pretrained(model_dir)
    assert config.use_cgformer and config.llm_training == "full"
    assert model.config.text_config.vocab_size == len(load_tokenizer(model_dir))
    assert torch.isfinite(torch.tensor(records[-1]["loss"]))


def test_ablation_no_cgformer_runs(tmp_path, gcg_root):
    out = tmp_path / "run"
    assert cli_train.main(args(out, gcg_root, "--model.ablation", "no_cgformer", "--train.max_steps", "1")) == 0
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["use_cgformer"] is False
    assert log_steps(out) == [1]


def test_bad_ablation_is_a_usage_error(tmp_path, gcg_root, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_train.main(args(tmp_path / "run", gcg_root, "--model.ablation", "no_such_row"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "model.ablation" in err and "no_such_row" in err and "no_cgformer" in err
    assert not (tmp_path / "run").exists()


def test_unknown_preset_and_paper_without_init(tmp_path, gcg_root, capsys):
    assert cli_train.main(["--config", "no-such-preset"]) == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli_train.main(args(tmp_path / "run", gcg_root, "--model.preset", "paper"))
    assert exit_info.value.code == 2 and "model.init" in capsys.readouterr().err


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_train.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--model.ablation", "--model.init", "--train.resume", "--data.synthetic_dir", "tiny-synthetic"):
        assert option in text, option


def test_resume_continues_the_run(tmp_path, gcg_root, capsys):
    out = tmp_path / "run"
    assert cli_train.main(args(out, gcg_root, "--train.save_every", "1")) == 0
    assert log_steps(out) == [1, 2]
    capsys.readouterr()
    assert cli_train.main(args(out, gcg_root, "--train.save_every", "1", "--train.max_steps", "3",
                               "--train.resume", "auto")) == 0
    assert "trained 3 steps" in capsys.readouterr().out
    assert log_steps(out) == [1, 2, 3]
    # starting afresh over a run's checkpoints is refused with a message (not a traceback)
    assert cli_train.main(args(out, gcg_root, "--train.max_steps", "3")) == 1
    assert "resume" in capsys.readouterr().err


def test_model_card_evaluation_reproduces(tmp_path, gcg_root, capsys):
    """train → save_pretrained dir with README.md → the card's clvnet-eval command gives the card's metrics."""
    out = tmp_path / "run"
    assert cli_train.main(args(out, gcg_root, "--eval.caption_metrics", "true", "--eval.max_samples", "3")) == 0
    assert "evaluation: clvnet-eval --model" in capsys.readouterr().out
    card = read_model_card(out / "model")
    assert (card.model_name, card.preset, card.package) == ("CLV-Net", "tiny", "rs-clvnet")
    assert card.training_data["tiles"] == 32 and card.training_data["synthetic_seed"] == 0
    (evaluation,) = card.evaluations
    assert evaluation.command[:3] == ("clvnet-eval", "--model", str(out / "model"))
    assert {"num_images", "mIoU", "AP50", "recall", "METEOR", "CIDEr"} <= evaluation.metrics.keys()
    assert evaluation.metrics["num_images"] == 3
    text = (out / "model" / "README.md").read_text()
    assert "max_steps: 2" in text and evaluation.command_line in text
    report = out / "model" / "eval" / "metrics.json"
    report.unlink()
    assert cli_eval.main(list(evaluation.command[1:])) == 0
    results = json.loads(report.read_text())["results"]
    for name, value in evaluation.metrics.items():
        assert results[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name


def test_real_data_without_eval_data_writes_a_card_without_metrics(tmp_path, gcg_root):
    out = tmp_path / "run"
    assert cli_train.main(args(out, gcg_root, "--data.train", str(gcg_root), "--train.max_steps", "1")) == 0
    card = read_model_card(out / "model")
    assert card.evaluations == () and card.training_data["split"] == "train"  # data.split keeps the train/ tiles of the index
    assert "no eval.data was given" in (out / "model" / "README.md").read_text()
