"""Official checkpoints → this package's names (clvnet.convert).

The official state dicts are written here from tiny transformers models with an independent inverse table (Meta's
SAM2 names, InternLM2's packed wqkv), converted back and loaded with ``strict=True``; the wqkv split is checked
against a hand-written InternLM2-style unpacking of the projections.
"""

import json
import logging

import pytest
import torch
from rs_shared.data.errors import DataFormatError
from safetensors.torch import load_file, save_file
from torch import nn

from clvnet.convert import (
    geopixel_to_clvnet,
    internlm2_to_llama,
    load_official_state_dict,
    main,
    sam2_meta_to_hf,
    split_wqkv,
)
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    Sam2Config,
    Sam2HieraDetConfig,
    Sam2MaskDecoderConfig,
    Sam2Model,
    Sam2PromptEncoderConfig,
    Sam2VisionConfig,
)

D, HEADS, KV_HEADS, LAYERS, FFN, VOCAB, RANK = 64, 4, 2, 2, 128, 50, 8
HEAD_DIM = D // HEADS
GROUPS = HEADS // KV_HEADS
PLORA = {"attention.wqkv": (D, (HEADS + 2 * KV_HEADS) * HEAD_DIM), "attention.wo": (D, D),
         "feed_forward.w1": (D, FFN), "feed_forward.w3": (D, FFN), "feed_forward.w2": (FFN, D)}  # (in, out)


class NotATensor:
    """A class instance a weights-only load must refuse."""


def internlm2_state_dict(prefix: str = "model.", plora: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random InternLM2 (IXC-2.5 with Partial-LoRA when ``plora``) state dict with D=64, 4 heads, 2 KV heads."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g)

    sd = {f"{prefix}tok_embeddings.weight": rand(VOCAB, D), f"{prefix}norm.weight": rand(D),
          "output.weight": rand(VOCAB, D)}
    for i in range(LAYERS):
        layer = f"{prefix}layers.{i}."
        sd[layer + "attention_norm.weight"] = rand(D)
        sd[layer + "ffn_norm.weight"] = rand(D)
        for linear, (fan_in, fan_out) in PLORA.items():
            sd[f"{layer}{linear}.weight"] = rand(fan_out, fan_in)
            if plora:
                sd[f"{layer}{linear}.Plora_A.weight"] = rand(RANK, fan_in)
                sd[f"{layer}{linear}.Plora_B.weight"] = rand(fan_out, RANK)
    return sd


def tiny_llama() -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=D, intermediate_size=FFN, num_hidden_layers=LAYERS,
                         num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


def internlm2_qkv(wqkv: torch.Tensor, x: torch.Tensor):
    """InternLM2's attention input projection, written out: (…, kv_heads, groups + 2, head_dim) → q, k, v."""
    packed = (x @ wqkv.T).reshape(*x.shape[:-1], KV_HEADS, GROUPS + 2, HEAD_DIM)
    q = packed[..., :GROUPS, :].reshape(*x.shape[:-1], HEADS * HEAD_DIM)  # query head = kv_head · groups + g
    return q, packed[..., GROUPS, :].reshape(*x.shape[:-1], -1), packed[..., GROUPS + 1, :].reshape(*x.shape[:-1], -1)


# ------------------------------------------------------------------------------------------------ InternLM2 → Llama
def test_internlm2_to_llama_loads_strict_and_splits_wqkv_like_internlm2():
    official = internlm2_state_dict(plora=False)
    model = tiny_llama()
    model.load_state_dict(internlm2_to_llama(official, num_heads=HEADS, num_kv_heads=KV_HEADS), strict=True)

    x = torch.randn(3, 5, D)
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            q, k, v = internlm2_qkv(official[f"model.layers.{i}.attention.wqkv.weight"], x)
            torch.testing.assert_close(layer.self_attn.q_proj(x), q)
            torch.testing.assert_close(layer.self_attn.k_proj(x), k)
            torch.testing.assert_close(layer.self_attn.v_proj(x), v)
            ffn = f"model.layers.{i}.feed_forward."  # InternLM2: w2(silu(w1 x) · w3 x)
            gate, up = x @ official[ffn + "w1.weight"].T, x @ official[ffn + "w3.weight"].T
            expected = (torch.nn.functional.silu(gate) * up) @ official[ffn + "w2.weight"].T
            torch.testing.assert_close(layer.mlp(x), expected)
            wo = official[f"model.layers.{i}.attention.wo.weight"]
            torch.testing.assert_close(layer.self_attn.o_proj(x), x @ wo.T)
        assert torch.equal(model.lm_head.weight, official["output.weight"])
        assert torch.equal(model.model.embed_tokens.weight, official["model.tok_embeddings.weight"])
        assert torch.equal(model.model.norm.weight, official["model.norm.weight"])
        assert torch.equal(model.model.layers[1].input_layernorm.weight,
                           official["model.layers.1.attention_norm.weight"])
        assert torch.equal(model.model.layers[1].post_attention_layernorm.weight,
                           official["model.layers.1.ffn_norm.weight"])
        assert model(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, VOCAB)


def test_split_wqkv_hand_computed_rows():
    # 2 heads, 1 KV head, head_dim 1: rows are [q0, q1, k, v]
    q, k, v = split_wqkv(torch.arange(4.0)[:, None], num_heads=2, num_kv_heads=1)
    assert q.flatten().tolist() == [0.0, 1.0] and k.item() == 2.0 and v.item() == 3.0
    # 2 heads, 2 KV heads (no grouping): [q0, k0, v0, q1, k1, v1]
    q, k, v = split_wqkv(torch.arange(6.0)[:, None], num_heads=2, num_kv_heads=2)
    assert q.flatten().tolist() == [0.0, 3.0] and k.flatten().tolist() == [1.0, 4.0]
    assert v.flatten().tolist() == [2.0, 5.0]
    with pytest.raises(DataFormatError, match="wqkv: shape \\(5, 1\\)"):
        split_wqkv(torch.zeros(5, 1), num_heads=2, num_kv_heads=1)
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        split_wqkv(torch.zeros(6, 1), num_heads=3, num_kv_heads=2)


def test_partial_lora_keys():
    official = internlm2_state_dict()
    out = internlm2_to_llama(official, num_heads=HEADS, num_kv_heads=KV_HEADS)
    lora = {k: v for k, v in out.items() if k.startswith("partial_lora.")}
    assert len(lora) == LAYERS * 7 * 2
    layer = "model.layers.1."
    for proj in ("q_proj", "k_proj", "v_proj"):  # the packed wqkv's down-projection is shared
        assert torch.equal(lora[f"partial_lora.1.{proj}.lora_A.weight"],
                           official[layer + "attention.wqkv.Plora_A.weight"])
    a = official[layer + "attention.wqkv.Plora_A.weight"]
    x = torch.randn(4, D)
    q, k, v = internlm2_qkv(official[layer + "attention.wqkv.Plora_B.weight"] @ a, x)  # the delta B·A as a wqkv
    torch.testing.assert_close(x @ (lora["partial_lora.1.q_proj.lora_B.weight"] @ a).T, q)
    torch.testing.assert_close(x @ (lora["partial_lora.1.k_proj.lora_B.weight"] @ a).T, k)
    torch.testing.assert_close(x @ (lora["partial_lora.1.v_proj.lora_B.weight"] @ a).T, v)
    for official_name, proj in (("attention.wo", "o_proj"), ("feed_forward.w1", "gate_proj"),
                                ("feed_forward.w3", "up_proj"), ("feed_forward.w2", "down_proj")):
        for part, lora_part in (("Plora_A", "lora_A"), ("Plora_B", "lora_B")):
            assert torch.equal(lora[f"partial_lora.1.{proj}.{lora_part}.weight"],
                               official[f"{layer}{official_name}.{part}.weight"])
    assert lora["partial_lora.0.down_proj.lora_A.weight"].shape == (RANK, FFN)
    assert lora["partial_lora.0.q_proj.lora_B.weight"].shape == (HEADS * HEAD_DIM, RANK)


def test_internlm2_unknown_keys_are_listed_unless_ignored():
    official = internlm2_state_dict(plora=False)
    official["model.layers.0.attention.wqkv.bias"] = torch.zeros(1)
    official["model.something_else"] = torch.zeros(1)
    with pytest.raises(DataFormatError, match=r"ckpt\.bin: .*unknown keys \(2\).*model\.layers\.0\.attention\.wqkv"
                                              r"\.bias, model\.something_else"):
        internlm2_to_llama(official, num_heads=HEADS, num_kv_heads=KV_HEADS, source="ckpt.bin")
    out = internlm2_to_llama(official, num_heads=HEADS, num_kv_heads=KV_HEADS, ignore=[r".*\.bias", r"model\.some.*"])
    tiny_llama().load_state_dict(out, strict=True)
    bare = {k.removeprefix("model."): v for k, v in internlm2_state_dict(plora=False).items()}
    tiny_llama().load_state_dict(internlm2_to_llama(bare, num_heads=HEADS, num_kv_heads=KV_HEADS, prefix=""))


# ------------------------------------------------------------------------------------------------ SAM2
def tiny_sam2_config() -> Sam2Config:
    """Spec §6 "verified tiny SAM2"."""
    backbone = Sam2HieraDetConfig(hidden_size=16, blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[16, 32, 64, 128],
                                  num_attention_heads_per_stage=[1, 1, 1, 1], window_size_per_stage=[4, 2, 2, 2],
                                  global_attention_blocks=[3], window_positional_embedding_background_size=[2, 2],
                                  image_size=[128, 128])
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[128, 64, 32, 16],
                              backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]], fpn_hidden_size=32)
    return Sam2Config(vision_config=vision,
                      prompt_encoder_config=Sam2PromptEncoderConfig(hidden_size=32, image_size=128, patch_size=16),
                      mask_decoder_config=Sam2MaskDecoderConfig(hidden_size=32, mlp_dim=64, num_hidden_layers=2,
                                                                num_attention_heads=2, iou_head_hidden_dim=32))


def hiera_large_config() -> Sam2Config:
    """SAM2-Hiera-L (sam2_hiera_l.yaml) at 1024²."""
    backbone = Sam2HieraDetConfig(hidden_size=144, blocks_per_stage=[2, 6, 36, 4],
                                  embed_dim_per_stage=[144, 288, 576, 1152],
                                  num_attention_heads_per_stage=[2, 4, 8, 16],
                                  window_size_per_stage=[8, 4, 16, 8], global_attention_blocks=[23, 33, 43],
                                  window_positional_embedding_background_size=[7, 7])
    return Sam2Config(vision_config=Sam2VisionConfig(backbone_config=backbone,
                                                     backbone_channel_list=[1152, 576, 288, 144]))


TRACKING = {  # a few of Meta's video-tracking tensors (dropped)
    "memory_attention.layers.0.self_attn.q_proj.weight": (32, 32), "memory_encoder.out_proj.weight": (8, 32, 1, 1),
    "maskmem_tpos_enc": (7, 1, 1, 8), "no_mem_pos_enc": (1, 1, 32), "no_obj_ptr": (1, 32),
    "obj_ptr_proj.layers.0.weight": (32, 32), "mask_downsample.weight": (1, 1, 4, 4),
}


def test_sam2_meta_round_trip_tiny(caplog, sam2_to_meta):
    torch.manual_seed(0)
    source = Sam2Model(tiny_sam2_config())
    with torch.no_grad():  # distinct values everywhere (the init zeroes some tensors)
        for tensor in source.state_dict().values():
            tensor.copy_(torch.randn_like(tensor))
        # Meta keeps one positional matrix for both uses
        source.prompt_encoder.shared_embedding.positional_embedding.copy_(source.shared_image_embedding.positional_embedding)
    hf = source.state_dict()
    assert len({tensor.flatten()[0].item() for tensor in hf.values()}) > len(hf) - 2  # no accidental equal tensors
    meta = sam2_to_meta(hf)
    assert "image_encoder.trunk.blocks.0.mlp.layers.1.weight" in meta
    assert "sam_mask_decoder.pred_obj_score_head.layers.2.bias" in meta
    meta.update({k: torch.zeros(shape) for k, shape in TRACKING.items()})

    with caplog.at_level(logging.INFO, logger="clvnet.convert"):
        converted = sam2_meta_to_hf(meta, source="sam2_tiny.pt")
    assert "dropped 7 SAM2 video-tracking tensors" in caplog.text and "memory_attention" in caplog.text

    target = Sam2Model(tiny_sam2_config())
    target.load_state_dict(converted, strict=True)
    for key, tensor in target.state_dict().items():
        assert torch.equal(tensor, hf[key]), key


def test_sam2_table_covers_hiera_large(sam2_to_meta):
    with torch.device("meta"):
        hf = Sam2Model(hiera_large_config()).state_dict()
    meta = sam2_to_meta(hf)
    # hand count: trunk 4 + 48 blocks × 12 + 3 stage projections × 2, neck 8, no-memory + PE 2, prompt encoder 14,
    # mask decoder 131 = 741; Meta: one PE matrix instead of two, 4 point embeddings instead of 1 → 743
    assert len(hf) == 741 and len(meta) == 743
    assert "image_encoder.trunk.blocks.47.mlp.layers.1.weight" in meta
    converted = sam2_meta_to_hf(meta)
    assert converted.keys() == hf.keys()
    assert all(converted[k].shape == hf[k].shape for k in hf)


def test_sam2_unknown_keys():
    # a Linear object-score head (pred_obj_scores_mlp=False) has no Sam2Model counterpart
    meta = {"image_encoder.trunk.pos_embed": torch.zeros(1),
            "sam_mask_decoder.pred_obj_score_head.weight": torch.zeros(1)}
    with pytest.raises(DataFormatError,
                       match=r"sam\.pt: .*unknown keys \(1\): \[sam_mask_decoder\.pred_obj_score_head"):
        sam2_meta_to_hf(meta, source="sam.pt")
    assert sam2_meta_to_hf(meta, ignore=[r".*pred_obj_score_head.*"]).keys() == {"vision_encoder.backbone.pos_embed"}


# ------------------------------------------------------------------------------------------------ GeoPixel
class LoraPair(nn.Module):
    def __init__(self, fan_in, fan_out):
        super().__init__()
        self.lora_A = nn.Linear(fan_in, RANK, bias=False)
        self.lora_B = nn.Linear(RANK, fan_out, bias=False)


class CLVNetStandIn(nn.Module):
    """The CLVNetModel parts a GeoPixel checkpoint fills, under the interface names."""

    def __init__(self):
        super().__init__()
        self.vision_tower = CLIPVisionModel(CLIPVisionConfig(image_size=56, patch_size=14, hidden_size=32,
                                                             intermediate_size=64, num_hidden_layers=2,
                                                             num_attention_heads=2))
        self.vision_proj = nn.Sequential(nn.Linear(4 * 32, D), nn.GELU(), nn.Linear(D, D))
        self.global_separator = nn.Parameter(torch.zeros(D))
        self.row_separator = nn.Parameter(torch.zeros(D))
        self.language_model = tiny_llama()
        sizes = {"q_proj": (D, HEADS * HEAD_DIM), "k_proj": (D, KV_HEADS * HEAD_DIM),
                 "v_proj": (D, KV_HEADS * HEAD_DIM), "o_proj": (D, D), "gate_proj": (D, FFN), "up_proj": (D, FFN),
                 "down_proj": (FFN, D)}
        self.partial_lora = nn.ModuleList(nn.ModuleDict({n: LoraPair(*s) for n, s in sizes.items()})
                                          for _ in range(LAYERS))
        self.text_projector = nn.Sequential(nn.Linear(D, D), nn.ReLU(), nn.Linear(D, 256), nn.Dropout(0.0))
        self.sam = Sam2Model(tiny_sam2_config())


def geopixel_state_dict(layout: str, to_meta) -> dict[str, torch.Tensor]:
    """GeoPixelForCausalLM keys: ``plain`` as GeoPixel saves them, ``wrapped`` with an extra ``model.``, ``bare``
    with the LLM, SAM2 and text projector lacking their leading ``model.``."""
    torch.manual_seed(1)
    inner = "" if layout == "bare" else "model."
    sd = internlm2_state_dict(prefix=inner)
    clip = CLIPVisionModel(CLIPVisionConfig(image_size=56, patch_size=14, hidden_size=32, intermediate_size=64,
                                            num_hidden_layers=2, num_attention_heads=2)).state_dict()
    sd.update({f"vit.vision_tower.vision_model.{k}": v for k, v in clip.items()})  # IXC-2.5 (older transformers)
    sd["vit.vision_tower.vision_model.embeddings.position_ids"] = torch.arange(17)[None]
    sd.update({"vision_proj.0.weight": torch.randn(D, 128), "vision_proj.0.bias": torch.randn(D),
               "vision_proj.2.weight": torch.randn(D, D), "vision_proj.2.bias": torch.randn(D),
               "plora_glb_GN": torch.randn(1, 1, D), "plora_sub_GN": torch.randn(1, 1, D)})
    fcs = f"{inner}text_hidden_fcs.0."
    sd.update({fcs + "0.weight": torch.randn(D, D), fcs + "0.bias": torch.randn(D),
               fcs + "2.weight": torch.randn(256, D), fcs + "2.bias": torch.randn(256)})
    sam = Sam2Model(tiny_sam2_config()).state_dict()
    sam["prompt_encoder.shared_embedding.positional_embedding"] = sam["shared_image_embedding.positional_embedding"]
    sd.update({f"{inner}visual_model.{k}": v for k, v in to_meta(sam).items()})
    sd[f"{inner}visual_model.maskmem_tpos_enc"] = torch.zeros(7, 1, 1, 8)
    return {f"model.{k}": v for k, v in sd.items()} if layout == "wrapped" else sd


@pytest.mark.parametrize("layout", ["plain", "wrapped", "bare"])
def test_geopixel_to_clvnet_fills_the_interface_modules(layout, sam2_to_meta):
    official = geopixel_state_dict(layout, sam2_to_meta)
    converted = geopixel_to_clvnet(official, num_heads=HEADS, num_kv_heads=KV_HEADS, source="geopixel")
    model = CLVNetStandIn()
    model.load_state_dict(converted, strict=True)

    plain = geopixel_state_dict("plain", sam2_to_meta)
    assert torch.equal(model.global_separator, plain["plora_glb_GN"].flatten())
    assert torch.equal(model.row_separator, plain["plora_sub_GN"].flatten())
    assert torch.equal(model.text_projector[2].weight, plain["model.text_hidden_fcs.0.2.weight"])
    assert torch.equal(model.vision_proj[0].bias, plain["vision_proj.0.bias"])
    assert torch.equal(model.vision_tower.post_layernorm.weight,
                       plain["vit.vision_tower.vision_model.post_layernorm.weight"])
    assert torch.equal(model.language_model.lm_head.weight, plain["output.weight"])
    assert torch.equal(model.partial_lora[1].up_proj.lora_B.weight,
                       plain["model.layers.1.feed_forward.w3.Plora_B.weight"])
    assert torch.equal(model.sam.mask_decoder.iou_token.weight,
                       plain["model.visual_model.sam_mask_decoder.iou_token.weight"])
    q, _, _ = internlm2_qkv(plain["model.layers.0.attention.wqkv.weight"], torch.eye(D))
    torch.testing.assert_close(model.language_model.model.layers[0].self_attn.q_proj.weight.T, q)


def test_geopixel_sam_prefix_and_unknown_keys(sam2_to_meta):
    official = {k.replace("model.visual_model.", "grounding_encoder."): v
                for k, v in geopixel_state_dict("plain", sam2_to_meta).items()}
    with pytest.raises(DataFormatError, match=r"gp: not a GeoPixel/IXC-2\.5 checkpoint: unknown keys \(\d+\): "
                                              r"\[grounding_encoder\."):
        geopixel_to_clvnet(official, num_heads=HEADS, num_kv_heads=KV_HEADS, source="gp")
    converted = geopixel_to_clvnet(official, num_heads=HEADS, num_kv_heads=KV_HEADS, sam_prefix="grounding_encoder.")
    CLVNetStandIn().load_state_dict(converted, strict=True)
    official["plora_glb_GN"] = torch.zeros(D)
    with pytest.raises(DataFormatError, match=r"plora_glb_GN: expected shape \(1, 1, D\), got \(64,\)"):
        geopixel_to_clvnet(official, num_heads=HEADS, num_kv_heads=KV_HEADS, sam_prefix="grounding_encoder.")


# ------------------------------------------------------------------------------------------------ files and CLI
def test_load_official_state_dict_formats(tmp_path):
    a, b = {"x": torch.arange(3.0)}, {"y": torch.ones(2, 2)}
    save_file(a, tmp_path / "model-00001-of-00002.safetensors")
    save_file(b, tmp_path / "model-00002-of-00002.safetensors")
    index = {"metadata": {}, "weight_map": {"x": "model-00001-of-00002.safetensors",
                                            "y": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    for src in (tmp_path, tmp_path / "model.safetensors.index.json"):
        state = load_official_state_dict(src)
        assert state.keys() == {"x", "y"} and torch.equal(state["y"], b["y"])

    torch.save({"model": a, "epoch": 3}, tmp_path / "sam2.pt")  # Meta's SAM2 wrapper
    assert torch.equal(load_official_state_dict(tmp_path / "sam2.pt")["x"], a["x"])
    torch.save({"model": a, "args": NotATensor()}, tmp_path / "pickled.bin")
    with pytest.raises(DataFormatError, match=r"pickled\.bin: refused: holds objects other than tensors"):
        load_official_state_dict(tmp_path / "pickled.bin")
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(DataFormatError, match=r"weights\.npz: unsupported checkpoint type '\.npz'"):
        load_official_state_dict(tmp_path / "weights.npz")
    index["weight_map"]["z"] = "model-00002-of-00002.safetensors"
    (tmp_path / "bad.index.json").write_text(json.dumps(index))
    with pytest.raises(DataFormatError, match=r"absent from the shards \(1\): \[z\]"):
        load_official_state_dict(tmp_path / "bad.index.json")
    with pytest.raises(FileNotFoundError):
        load_official_state_dict(tmp_path / "missing.safetensors")


def test_cli_converts_sam2_and_internlm2(tmp_path, capsys, sam2_to_meta):
    hf = Sam2Model(tiny_sam2_config()).state_dict()
    hf["prompt_encoder.shared_embedding.positional_embedding"] = hf["shared_image_embedding.positional_embedding"]
    torch.save({"model": sam2_to_meta(hf)}, tmp_path / "sam2_tiny.pt")
    assert main(["--src", str(tmp_path / "sam2_tiny.pt"), "--out", str(tmp_path / "sam.safetensors")]) == 0
    assert capsys.readouterr().out.startswith("sam2: ")
    Sam2Model(tiny_sam2_config()).load_state_dict(load_file(tmp_path / "sam.safetensors"), strict=True)

    llm_dir = tmp_path / "internlm2"
    llm_dir.mkdir()
    torch.save(internlm2_state_dict(plora=False), llm_dir / "pytorch_model.bin")
    (llm_dir / "config.json").write_text(json.dumps({"num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS}))
    assert main(["--src", str(llm_dir), "--out", str(tmp_path / "llm.safetensors"), "--kind", "internlm2"]) == 0
    tiny_llama().load_state_dict(load_file(tmp_path / "llm.safetensors"), strict=True)


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--kind {internlm2,sam2,geopixel}" in capsys.readouterr().out


