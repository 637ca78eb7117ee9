"""A GeoPixel checkpoint → a CLV-Net ``save_pretrained`` directory (clvnet.official, ``clvnet-convert --src``).

The "GeoPixel checkpoint" is written from a random tiny CLVNetModel (full LLM training, Partial LoRA r 4) with the
inverse of the conversion tables; its tokenizer knows [SEG] <p> </p> but not CLV-Net's <BOX> <IMAGE>.
"""

import json
import logging
import re

import numpy as np
import pytest
import torch
from rs_shared.data.errors import DataFormatError
from safetensors.torch import load_file, save_file

from clvnet.configuration import CLVNetConfig
from clvnet.convert import main
from clvnet.modeling import CLVNetModel
from clvnet.official import build_from_geopixel
from clvnet.processing import CLVNetProcessor
from clvnet.tokenizer import TokenIds, build_tiny_tokenizer, load_tokenizer
from clvnet.train import ModelSection, build_model
from transformers import AutoTokenizer

NEW_TOKENS = ("<BOX>", "<IMAGE>")
TO_INTERNLM2 = {"self_attn.o_proj": "attention.wo", "mlp.gate_proj": "feed_forward.w1",
                "mlp.up_proj": "feed_forward.w3", "mlp.down_proj": "feed_forward.w2",
                "input_layernorm": "attention_norm", "post_attention_layernorm": "ffn_norm"}
TO_PLORA = {"o_proj": "attention.wo", "gate_proj": "feed_forward.w1", "up_proj": "feed_forward.w3",
            "down_proj": "feed_forward.w2"}
CLVNET_LAYER = re.compile(r"language_model\.model\.layers\.(?P<i>\d+)\.(?P<m>[\w.]+)\.weight")
PARTIAL_LORA = re.compile(r"partial_lora\.(?P<i>\d+)\.(?P<p>\w+)\.lora_(?P<ab>[AB])\.weight")


def pack_wqkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """InternLM2's packing: per KV head, its query heads, then its key head, then its value head."""
    head_dim = k.shape[0] // kv_heads
    groups = q.shape[0] // head_dim // kv_heads
    parts = [t.reshape(kv_heads, n, head_dim, -1) for t, n in ((q, groups), (k, 1), (v, 1))]
    return torch.cat(parts, dim=1).reshape(-1, q.shape[-1])


def clvnet_to_geopixel(sd: dict[str, torch.Tensor], rows: int, kv_heads: int, to_meta) -> dict[str, torch.Tensor]:
    """GeoPixel's checkpoint names for a CLVNetModel state dict (``rows`` token rows; CLV-Net-only modules left
    out; q/k/v Partial-LoRA A must be equal, as in IXC-2.5's shared wqkv adapter)."""
    out, sam = {}, {}
    layers = "model.layers."
    for key, tensor in sd.items():
        tensor = tensor.clone()
        if key.startswith("sam."):
            sam[key.removeprefix("sam.")] = tensor
        elif key.startswith("vision_tower."):  # IXC-2.5 was saved with an older CLIPVisionModel
            out["vit.vision_tower.vision_model." + key.removeprefix("vision_tower.")] = tensor
        elif key.startswith("vision_proj."):
            out[key] = tensor
        elif key in ("global_separator", "row_separator"):
            out["plora_glb_GN" if key == "global_separator" else "plora_sub_GN"] = tensor.reshape(1, 1, -1)
        elif key.startswith("text_projector."):
            out["model.text_hidden_fcs.0." + key.removeprefix("text_projector.")] = tensor
        elif key == "language_model.model.embed_tokens.weight":
            out["model.tok_embeddings.weight"] = tensor[:rows].clone()
        elif key == "language_model.lm_head.weight":
            out["output.weight"] = tensor[:rows].clone()
        elif key == "language_model.model.norm.weight":
            out["model.norm.weight"] = tensor
        elif m := CLVNET_LAYER.fullmatch(key):
            if m["m"] == "self_attn.q_proj":
                attn = f"language_model.model.layers.{m['i']}.self_attn."
                qkv = [sd[f"{attn}{p}_proj.weight"] for p in "qkv"]
                out[f"{layers}{m['i']}.attention.wqkv.weight"] = pack_wqkv(*qkv, kv_heads)
            elif m["m"] in TO_INTERNLM2:
                out[f"{layers}{m['i']}.{TO_INTERNLM2[m['m']]}.weight"] = tensor
        elif m := PARTIAL_LORA.fullmatch(key):
            i, proj, ab = m["i"], m["p"], m["ab"]
            if proj == "q_proj" and ab == "A":
                out[f"{layers}{i}.attention.wqkv.Plora_A.weight"] = tensor
            elif proj == "q_proj":
                qkv = [sd[f"partial_lora.{i}.{p}_proj.lora_B.weight"] for p in "qkv"]
                out[f"{layers}{i}.attention.wqkv.Plora_B.weight"] = pack_wqkv(*qkv, kv_heads)
            elif proj in TO_PLORA:
                out[f"{layers}{i}.{TO_PLORA[proj]}.Plora_{ab}.weight"] = tensor
    out.update({f"model.visual_model.{k}": v for k, v in to_meta(sam).items()})
    out["model.visual_model.maskmem_tpos_enc"] = torch.zeros(7, 1, 1, 8)  # video tracking: dropped
    return out


def without_tokens(full_dir, out_dir, tokens):
    """A copy of a saved tokenizer that lacks the added ``tokens`` (they are the last ids)."""
    out_dir.mkdir()
    for name in ("tokenizer_config.json", "tokenizer.json"):
        data = json.loads((full_dir / name).read_text())
        if name == "tokenizer.json":
            data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] not in tokens]
        (out_dir / name).write_text(json.dumps(data))
    return out_dir


@pytest.fixture(scope="module")
def geopixel(tmp_path_factory, sam2_to_meta):
    """``(source CLVNetModel, its config, checkpoint path, reduced tokenizer dir, rows)``."""
    root = tmp_path_factory.mktemp("geopixel")
    full = build_tiny_tokenizer(root / "full")
    reduced = without_tokens(root / "full", root / "tokenizer", NEW_TOKENS)
    rows = len(full) - len(NEW_TOKENS)
    assert len(AutoTokenizer.from_pretrained(str(reduced))) == rows
    assert full.convert_tokens_to_ids(list(NEW_TOKENS)) == [rows, rows + 1]  # the tokens GeoPixel lacks are last

    config = CLVNetConfig.tiny(**TokenIds.of(full).config_kwargs(), partial_lora_rank=4)
    config.text_config.vocab_size = len(full)
    torch.manual_seed(0)
    source = CLVNetModel(config).eval()
    with torch.no_grad():
        for param in source.parameters():  # distinct values everywhere (the init zeroes some)
            param.copy_(torch.randn_like(param) * 0.1)
        for deltas in source.partial_lora:  # IXC-2.5 shares one Partial-LoRA A among q, k and v
            deltas.k_proj.lora_A.weight.copy_(deltas.q_proj.lora_A.weight)
            deltas.v_proj.lora_A.weight.copy_(deltas.q_proj.lora_A.weight)
        sam = source.sam  # Meta keeps one positional matrix for both uses
        sam.prompt_encoder.shared_embedding.positional_embedding.copy_(sam.shared_image_embedding.positional_embedding)
        for matrix in (source.language_model.model.embed_tokens.weight, source.language_model.lm_head.weight):
            matrix[rows:] = matrix[:rows].mean(0)  # what the conversion gives the new tokens
    checkpoint = root / "geopixel.safetensors"
    save_file(clvnet_to_geopixel(source.state_dict(), rows, config.text_config.num_key_value_heads, sam2_to_meta),
              checkpoint)
    return source, config, checkpoint, reduced, rows


def grounded_batch(config, tokenizer):
    """One teacher-forced sample with two phrases on a 40 × 56 image."""
    image = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    masks = np.zeros((2, 40, 56), bool)
    masks[0, 4:20, 6:30] = masks[1, 22:38, 30:50] = True
    processor = CLVNetProcessor.from_config(config, tokenizer)
    sample = processor(image, answer="<p> a plane </p> [SEG] near <p> a car </p> [SEG] .", masks=masks)
    return processor.collate([sample])


CLVNET_ONLY = ("cgformer.", "region_box_embed.", "sralign.")


@pytest.mark.parametrize("llm_training", ["full", "lora"])
def test_build_from_geopixel_keeps_every_mapped_weight(geopixel, tmp_path, caplog, llm_training):
    source, _, checkpoint, tokenizer_dir, rows = geopixel
    target = CLVNetConfig.tiny(partial_lora_rank=4, llm_training=llm_training)  # ids and vocab: from the tokenizer
    with caplog.at_level(logging.INFO, logger="clvnet"):
        out = build_from_geopixel(checkpoint, tokenizer_dir, tmp_path / "clvnet", config=target)
    assert "2 tokens added to the tokenizer, 2 new token rows" in caplog.text
    assert target.bos_token_id is None  # the given config is not modified

    model = CLVNetModel.from_pretrained(out).eval()
    tokenizer = load_tokenizer(out)
    assert len(tokenizer) == model.config.text_config.vocab_size == rows + 2
    assert tokenizer.convert_tokens_to_ids(list(NEW_TOKENS)) == [rows, rows + 1]
    ids = TokenIds.of(tokenizer).config_kwargs()
    assert {k: getattr(model.config, k) for k in ids} == ids
    assert model.config.llm_training == llm_training

    loaded = model.state_dict()
    for key, tensor in source.state_dict().items():
        if key.startswith(CLVNET_ONLY):  # CLV-Net's own modules: present, freshly initialised
            assert loaded[key].shape == tensor.shape and torch.isfinite(loaded[key]).all(), key
            continue
        name = key if key in loaded else key.replace(".weight", ".base_layer.weight")  # peft wraps the linears
        assert torch.equal(loaded[name], tensor), key  # LLM q/k/v unpacked, SAM2, CLIP, projectors, Partial LoRA
    official = load_file(checkpoint)
    for name, matrix in (("model.tok_embeddings.weight", model.language_model.model.embed_tokens.weight),
                         ("output.weight", model.language_model.lm_head.weight)):
        assert torch.equal(matrix[:rows], official[name])
        torch.testing.assert_close(matrix[rows:], official[name].mean(0).expand(2, -1))
    assert torch.equal(model.cgformer.cross_attention.in_proj_bias, torch.zeros(3 * 128))  # torch's MHA init
    assert model.sralign.scale().item() == pytest.approx(1 / target.csc_temperature)
    peft_lora = {k: v for k, v in loaded.items() if k.startswith("language_model.") and ".lora_" in k}
    assert len(peft_lora) == (2 * 7 * 2 if llm_training == "lora" else 0)
    assert all(not v.any() for k, v in peft_lora.items() if ".lora_B." in k)  # the adapter starts as the identity
    assert all(v.abs().sum() > 0 for k, v in peft_lora.items() if ".lora_A." in k)

    batch = grounded_batch(model.config, tokenizer)
    with torch.no_grad():
        fresh = model(**batch)
        assert torch.isfinite(fresh.loss) and fresh.pred_masks[0].shape == (2, 40, 56)
        # with the source's CLV-Net modules the converted model computes exactly what the source does
        model.load_state_dict({k: v for k, v in source.state_dict().items() if k.startswith(CLVNET_ONLY)},
                              strict=False)
        expected, got = source(**batch), model(**batch)
    torch.testing.assert_close(got.loss_caption, expected.loss_caption)
    torch.testing.assert_close(got.pred_masks[0], expected.pred_masks[0])


def test_build_from_geopixel_lists_every_difference(geopixel, tmp_path):
    _, _, checkpoint, tokenizer_dir, rows = geopixel
    official = load_file(checkpoint)
    del official["model.layers.1.ffn_norm.weight"]
    official["model.layers.2.attention_norm.weight"] = torch.ones(128)  # a layer the config does not have
    official["vision_proj.2.bias"] = torch.zeros(7)
    save_file(official, tmp_path / "bad.safetensors")
    with pytest.raises(DataFormatError) as info:
        build_from_geopixel(tmp_path / "bad.safetensors", tokenizer_dir, tmp_path / "out",
                            config=CLVNetConfig.tiny(partial_lora_rank=4))
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'bad.safetensors'}: does not fit CLVNetModel(config): ")
    assert "missing keys (1): [language_model.model.layers.1.post_attention_layernorm.weight]" in message
    assert "unexpected keys (1): [language_model.model.layers.2.input_layernorm.weight]" in message
    assert "shape mismatches (1): [vision_proj.2.bias (7,) ≠ model (128,)]" in message
    assert not (tmp_path / "out").exists()

    # Partial LoRA the config lacks is not dropped silently: all 28 keys are listed
    with pytest.raises(DataFormatError, match=r"unexpected keys \(28\): \[partial_lora\.0\.down_proj\.lora_A"
                                              r"[^…]*partial_lora\.1\.v_proj\.lora_B\.weight\]$"):
        build_from_geopixel(checkpoint, tokenizer_dir, tmp_path / "out", config=CLVNetConfig.tiny())

    official = load_file(checkpoint)
    for name in ("model.tok_embeddings.weight", "output.weight"):
        official[name] = torch.cat([official[name], torch.zeros(5, 128)])
    save_file(official, tmp_path / "more_rows.safetensors")
    with pytest.raises(DataFormatError, match=rf"lm_head\.weight \({rows + 5}, 128\) ≠ model \({rows + 2}, 128\).*"
                                              r"more token rows than the tokenizer has tokens"):
        build_from_geopixel(tmp_path / "more_rows.safetensors", tokenizer_dir, tmp_path / "out",
                            config=CLVNetConfig.tiny(partial_lora_rank=4))


def test_build_from_geopixel_refuses_remote_code_tokenizers(geopixel, tmp_path):
    _, _, checkpoint, tokenizer_dir, _ = geopixel
    remote = without_tokens(tokenizer_dir, tmp_path / "internlm2", ())
    config = json.loads((remote / "tokenizer_config.json").read_text())
    config.update(tokenizer_class="InternLM2Tokenizer",  # as in InternLM2's own files
                  auto_map={"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]})
    (remote / "tokenizer_config.json").write_text(json.dumps(config))
    (remote / "tokenization_internlm2.py").write_text("raise RuntimeError('remote code ran')\n")
    with pytest.raises(DataFormatError, match=r"internlm2: the tokenizer can only be loaded with remote code"):
        build_from_geopixel(checkpoint, remote, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="tokenizer directory not found"):
        build_from_geopixel(checkpoint, tmp_path / "nowhere", tmp_path / "out")


def test_cli_builds_a_clvnet_directory(geopixel, tmp_path, capsys):
    _, _, checkpoint, tokenizer_dir, rows = geopixel
    CLVNetConfig.tiny(partial_lora_rank=4, llm_training="lora").save_pretrained(tmp_path / "config")
    out = tmp_path / "clvnet"
    args = ["--src", str(checkpoint), "--kind", "geopixel", "--tokenizer", str(tokenizer_dir), "--out", str(out),
            "--config", str(tmp_path / "config" / "config.json")]
    assert main(args) == 0
    assert capsys.readouterr().out == f"geopixel: CLV-Net model and tokenizer written to {out}\n"
    model, tokenizer = build_model(ModelSection(init=str(out)), tmp_path / "unused")  # clvnet-train --model.init
    assert model.config.llm_training == "lora" and model.config.text_config.vocab_size == len(tokenizer) == rows + 2
    for bad in (["--kind", "sam2", "--tokenizer", str(tokenizer_dir)], ["--config", "config.json"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["--src", str(checkpoint), "--out", str(tmp_path / "x.safetensors"), *bad])
        assert exit_info.value.code == 2
