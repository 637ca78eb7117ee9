"""clvnet-export: LoRA merged into the base weights gives a plain directory that loads strictly with the same
outputs; a model without LoRA is refused."""

import json

import pytest
import torch
from safetensors import safe_open

from clvnet import export
from clvnet.modeling import CLVNetModel
from clvnet.tokenizer import load_tokenizer


def lora_model(make_model):
    """A tiny LoRA-mode model whose adapters are not the identity."""
    model = make_model(llm_training="lora")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    return model


@torch.no_grad()
def test_export_merges_lora_with_equal_outputs(make_model, tokenizer, train_batch, tmp_path, capsys):
    model = lora_model(make_model)
    source, out = tmp_path / "lora", tmp_path / "merged"
    model.save_pretrained(source)
    tokenizer.save_pretrained(source)
    (source / "README.md").write_text("card\n")
    before = model(**train_batch)

    assert export.main(["--model", str(source), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["llm_training"] == "full"
    with safe_open(out / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert not [k for k in keys if "lora_" in k or "base_layer" in k]
    assert "language_model.model.layers.0.self_attn.q_proj.weight" in keys
    assert "Export" in (out / "README.md").read_text()
    assert len(load_tokenizer(out)) == len(tokenizer)

    merged = CLVNetModel.from_pretrained(out).eval()  # strict: a stray adapter key would raise
    after = merged(**train_batch)
    torch.testing.assert_close(after.loss, before.loss, rtol=1e-5, atol=1e-5)
    for a, b in zip(after.pred_masks, before.pred_masks, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    delta = model.language_model.model.layers[0].self_attn.q_proj
    assert not torch.equal(merged.language_model.model.layers[0].self_attn.q_proj.weight, delta.base_layer.weight)


def test_merge_lora_in_memory_and_refusals(make_model, tokenizer, tmp_path, capsys):
    model = lora_model(make_model)
    merged = export.merge_lora(model)
    assert merged.config.llm_training == "full"
    assert all(p.requires_grad for p in merged.language_model.parameters())  # full mode trains the whole LLM
    with pytest.raises(ValueError, match="no LoRA adapters"):
        export.merge_lora(merged)
    plain = tmp_path / "plain"
    make_model().save_pretrained(plain)
    tokenizer.save_pretrained(plain)
    assert export.main(["--model", str(plain), "--out", str(tmp_path / "x")]) == 2
    assert "no LoRA adapters" in capsys.readouterr().err
    assert export.main(["--model", str(tmp_path / "absent"), "--out", str(tmp_path / "y")]) == 2
    assert "no config.json" in capsys.readouterr().err
