"""Checkpoints a user can trust: strict load_pretrained (removed key, extra key, wrong shape), the model card of
rscovlm-train (its rscovlm-eval commands reproduce its metrics) and rscovlm-export (a LoRA checkpoint merged into
a plain directory with the same outputs)."""

import json

import pytest
import torch
from rs_shared.hub import WeightsMismatchError, read_model_card
from rs_shared.training import load_config
from safetensors.torch import load_file, save_file

from rscovlm import cli_eval, export
from rscovlm.cli_train import CONFIG_DIR
from rscovlm.mixture import ensure_synthetic_sft
from rscovlm.model_factory import build_tiny, build_tiny_model, load_pretrained
from rscovlm.train import RSCoVLMTrainConfig, add_lora, build_datasets, build_model, run, training_records

FILE_KEY, KEY = "model.norm.weight", "model.language_model.norm.weight"  # saved in the original checkpoint layout


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = build_tiny(tmp_path_factory.mktemp("rscovlm-saved") / "tiny")
    return path, load_file(path / "model.safetensors")


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic") / "sft"
    ensure_synthetic_sft(root, 12, seed=0)
    return root


def tiny_config(synthetic_dir, out, *overrides):
    return load_config(RSCoVLMTrainConfig, CONFIG_DIR / "tiny-synthetic.yaml", [
        f"train.output_dir={out}", f"data.synthetic_dir={synthetic_dir}", "data.synthetic_n=12", "train.max_steps=2",
        "train.batch_size=4", "train.log_every=1", "eval.synthetic_samples=3", "eval.max_new_tokens=6",
        "eval.batch_size=2", *overrides])


def test_round_trip_keeps_tied_weights(saved):
    model = load_pretrained(saved[0]).model  # tied lm_head: not reported as missing
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight
    reference = build_tiny_model(0).model.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("edit, expected", [
    (lambda s: s.pop(FILE_KEY), rf"missing keys \(in the model, not in the file\) \[1\]: {KEY}"),
    (lambda s: s.__setitem__("visual.surplus", torch.zeros(3)),
     r"unexpected keys \(in the file, not in the model\) \[1\]: model\.visual\.surplus"),
    (lambda s: s.__setitem__(FILE_KEY, torch.zeros(5)),
     rf"wrong shapes \[1\]: {KEY}: \(5\) in the file, \(64\) in the model"),
])
def test_load_pretrained_is_strict(saved, tmp_path, edit, expected):
    source, state = saved
    for file in source.iterdir():
        (tmp_path / file.name).write_bytes(file.read_bytes())
    state = dict(state)
    edit(state)
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsMismatchError, match=expected) as info:
        load_pretrained(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'model.safetensors'} does not match")


def test_model_card_evaluations_reproduce(synthetic_dir, tmp_path):
    result = run(tiny_config(synthetic_dir, tmp_path / "run", "eval.tasks=cls,vg"))
    model_dir = tmp_path / "run" / "model"
    card = read_model_card(model_dir)
    assert (card.model_name, card.preset, card.package) == ("RSCoVLM", "tiny", "rs-rscovlm")
    assert card.training_data["mixture samples"] == 12 and card.training_data["synthetic_seed"] == 0
    assert [e.command[e.command.index("--task") + 1] for e in card.evaluations] == ["cls", "vg"]
    assert [e.metrics for e in card.evaluations] == [e.metrics for e in result["evaluations"]]
    for evaluation in card.evaluations:
        assert "--seed" in evaluation.command and "parse_failure_rate" in evaluation.metrics
        report = model_dir / "eval" / evaluation.command[evaluation.command.index("--task") + 1] / "report.json"
        report.unlink()
        assert cli_eval.main(list(evaluation.command[1:])) == 0  # the same synthetic set, reused
        results = json.loads(report.read_text())["results"]
        for name, value in evaluation.metrics.items():
            assert results[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name


def test_eval_seed_must_differ_from_the_training_seed(synthetic_dir, tmp_path):
    with pytest.raises(Exception, match="eval.seed 0 equals data.synthetic_seed"):
        tiny_config(synthetic_dir, tmp_path, "eval.seed=0")


def test_export_merges_a_lora_checkpoint(synthetic_dir, tmp_path, capsys):
    cfg = tiny_config(synthetic_dir, tmp_path / "run", "lora.enabled=true", "lora.r=4", "train.optim.lr=0.05",
                      "train.save_every=1", "train.keep_last=3", "eval.tasks=")
    run(cfg)
    checkpoint = tmp_path / "run" / "checkpoints" / "step_000002"
    assert any("lora_A" in k for k in load_file(checkpoint / "model.safetensors"))
    out = tmp_path / "exported"
    assert export.main(["--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert not [k for k in load_file(out / "model.safetensors") if "lora_" in k or "base_layer" in k]
    assert "step 2" in (out / "README.md").read_text()

    loaded = build_model(cfg.model)  # the peft model of the checkpoint, before merging
    peft_model = add_lora(loaded.model, cfg.lora)
    peft_model.load_state_dict(load_file(checkpoint / "model.safetensors"))
    dataset, collate_fn = build_datasets(cfg, loaded, training_records(cfg.data))
    batch = collate_fn([dataset[0]])
    exported, final = load_pretrained(out).model, load_pretrained(tmp_path / "run" / "model").model
    with torch.no_grad():
        expected = peft_model.eval()(**batch).logits
        torch.testing.assert_close(exported(**batch).logits, expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(final(**batch).logits, exported(**batch).logits, atol=0, rtol=0)
        merged_away = peft_model.base_model.model.model.language_model.layers[0].self_attn.q_proj
        assert not torch.equal(exported.model.language_model.layers[0].self_attn.q_proj.weight,
                               merged_away.base_layer.weight)  # the adapters did change the weights


def test_export_errors(tmp_path, capsys):
    assert export.main(["--checkpoint", str(tmp_path / "absent"), "--out", str(tmp_path / "o")]) == 2
    assert "not a complete training checkpoint" in capsys.readouterr().err
