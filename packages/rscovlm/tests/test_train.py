"""Training (spec §1): one SFT step on a mixed batch, the label mask of a batch, resume, the rscovlm-train CLI
(tiny budget end to end), LoRA (adapters only, merged save) and the packaged presets."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rs_shared.training import load_config
from safetensors.torch import load_file

from rscovlm.cli_train import CONFIG_DIR, main
from rscovlm.mixture import ensure_synthetic_sft
from rscovlm.model_factory import LoadedModel, load_pretrained, save_pretrained
from rscovlm.train import RSCoVLMTrainConfig, add_lora, build_datasets, build_model, lora_targets, run, training_records


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic") / "sft"
    ensure_synthetic_sft(root, 12, seed=0)
    return root


def tiny_config(synthetic_dir, out, *overrides):
    return load_config(RSCoVLMTrainConfig, CONFIG_DIR / "tiny-synthetic.yaml", [
        f"train.output_dir={out}", f"data.synthetic_dir={synthetic_dir}", "data.synthetic_n=12",
        "train.max_steps=4", "train.batch_size=4", "train.log_every=1", "train.save_every=2", "train.keep_last=3",
        "eval.synthetic_samples=2", "eval.max_new_tokens=4", *overrides])


def test_one_step_on_a_mixed_batch_masks_all_but_assistant_tokens(synthetic_dir, tmp_path):
    cfg = tiny_config(synthetic_dir, tmp_path)
    loaded = build_model(cfg.model)
    records = training_records(cfg.data)
    grouped, collate_fn = build_datasets(cfg, loaded, records)
    items = [grouped[k] for k in range(len(grouped))]
    batch = collate_fn(items[:1])
    sources = {s.meta["source"] for batch_items in items for s in batch_items}
    assert sources == {"synthetic:qa", "synthetic:detection", "synthetic:grounding"}
    for row, sample in enumerate(items[0]):  # the batch's supervised tokens are exactly the assistant answers
        record = records[sample.meta["index"]]
        answers = grouped.dataset.messages(sample.meta["index"])
        expected = "".join(m["content"][0]["text"] + "<|im_end|>" for m in answers if m["role"] == "assistant")
        labels = batch["labels"][row]
        assert loaded.tokenizer.decode(labels[labels != -100]) == expected, record.id
        assert not (batch["mm_token_type_ids"][row].bool() & (labels != -100)).any()
    loss = loaded.model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in loaded.model.parameters() if p.grad is not None)


def test_resume_continues_exactly(synthetic_dir, tmp_path):
    full = run(tiny_config(synthetic_dir, tmp_path / "full"))
    assert full["step"] == 4
    resumed = run(tiny_config(synthetic_dir, tmp_path / "resumed",
                              f"train.resume={tmp_path / 'full' / 'checkpoints' / 'step_000002'}"))
    assert resumed["step"] == 4
    a, b = (load_file(tmp_path / d / "final" / "model.safetensors") for d in ("full", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cli_help_and_errors(capsys, tmp_path):
    script = Path(sys.executable).parent / "rscovlm-train"
    help_text = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True).stdout
    assert "--data.recipe" in help_text and "--lora.enabled" in help_text and "deepspeed_zero1" in help_text
    assert main(["--config", "absent-preset"]) == 2
    assert "packaged presets: paper, tiny-synthetic" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", "tiny-synthetic", "--train.lrr", "1"])
    assert exit_info.value.code == 2
    assert main(["--config", "paper", "--train.output_dir", str(tmp_path)]) == 1
    assert "needs model.path" in capsys.readouterr().err
    assert main(["--config", "paper", "--model.path", str(tmp_path / "absent"),
                 "--train.output_dir", str(tmp_path)]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_cli_trains_the_tiny_preset_end_to_end(synthetic_dir, tmp_path, capsys, rgb):
    out = tmp_path / "run"
    code = main(["--config", "tiny-synthetic", "--train.output_dir", str(out), "--data.synthetic_dir",
                 str(synthetic_dir), "--data.synthetic_n", "12", "--train.max_steps", "3", "--train.log_every", "1",
                 "--eval.tasks", "cls", "--eval.synthetic_samples", "2", "--eval.max_new_tokens", "4"])
    assert code == 0 and "trained 3 steps on 12 mixture samples" in capsys.readouterr().out
    loaded = load_pretrained(out / "model")
    assert loaded.image_settings.max_pixels == 28 * 28 * 64
    losses = [line for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 3
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many ships are there?"}]}]
    sample = loaded.renderer().render(messages, [rgb(224, 224)], add_generation_prompt=True)
    with torch.no_grad():
        generated = loaded.model.generate(input_ids=sample.input_ids[None], attention_mask=torch.ones(1, len(sample)),
                                          mm_token_type_ids=sample.mm_token_type_ids[None],
                                          pixel_values=sample.pixel_values, image_grid_thw=sample.image_grid_thw,
                                          max_new_tokens=4)
    assert generated.shape[1] > len(sample)


def test_lora_trains_only_adapters_and_merges(synthetic_dir, tmp_path):
    cfg = tiny_config(synthetic_dir, tmp_path / "lora", "lora.enabled=true", "lora.r=4", "train.max_steps=2")
    base = build_model(cfg.model)
    targets = lora_targets(base.model)
    assert targets and not any("visual" in t for t in targets) and "lm_head" not in targets  # tiny: tied embeddings
    assert any(t.endswith("q_proj") for t in targets) and any(t.endswith("down_proj") for t in targets)
    reference = copy.deepcopy(base.model.state_dict())
    peft_model = add_lora(base.model, cfg.lora)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # one large step so the adapters are non-zero, then the merged, saved and reloaded model equals the peft model
    records = training_records(cfg.data)
    dataset, collate_fn = build_datasets(cfg, base, records)
    batch = collate_fn([dataset[0]])
    optimizer = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=1.0)
    peft_model(**batch).loss.backward()
    optimizer.step()
    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(**batch).logits
    merged = peft_model.merge_and_unload()
    save_pretrained(LoadedModel(merged, base.tokenizer, base.image_settings), tmp_path / "merged")
    reloaded = load_pretrained(tmp_path / "merged")
    with torch.no_grad():
        torch.testing.assert_close(reloaded.model(**batch).logits, expected, atol=1e-4, rtol=1e-4)
    # through run(): the saved model differs from the base only outside the ViT
    result = run(cfg)
    saved = load_pretrained(result["model"]).model.state_dict()
    changed = [k for k in saved if not torch.equal(saved[k], reference[k])]
    assert changed and not any("visual" in k for k in changed)
