"""Official checkpoints → this package's names (clvnet.convert).

The official state dicts are written here from tiny transformers models with an independent inverse table (Meta's
SAM2 names, InternLM2's packed wqkv), converted back and loaded with ``strict=True``; the wqkv split is checked
against a hand-written InternLM2-style unpacking of the projections.
"""

import json
import logging
import re

import numpy as np
import pytest
import torch
from rs_shared.data.errors import DataFormatError
from safetensors.torch import load_file, save_file
from torch import nn

from clvnet.configuration import CLVNetConfig
from clvnet.convert import (
    geopixel_to_clvnet,
    internlm2_to_llama,
    load_official_state_dict,
    main,
    sam2_meta_to_hf,
    split_wqkv,
)
from clvnet.modeling import CLVNetModel
from clvnet.official import build_from_geopixel
from clvnet.processing import CLVNetProcessor
from clvnet.tokenizer import TokenIds, build_tiny_tokenizer, load_tokenizer
from clvnet.train import ModelSection, build_model
from transformers import (
    AutoTokenizer,
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


# HF → Meta, written from Meta's module attributes (sam2/modeling/*): the first matching prefix is replaced, then
# the inner names
META_PREFIXES = [
    ("vision_encoder.backbone.patch_embed.projection.", "image_encoder.trunk.patch_embed.proj."),
    ("vision_encoder.backbone.", "image_encoder.trunk."),
    ("prompt_encoder.mask_embed.conv1.", "sam_prompt_encoder.mask_downscaling.0."),
    ("prompt_encoder.mask_embed.layer_norm1.", "sam_prompt_encoder.mask_downscaling.1."),
    ("prompt_encoder.mask_embed.conv2.", "sam_prompt_encoder.mask_downscaling.3."),
    ("prompt_encoder.mask_embed.layer_norm2.", "sam_prompt_encoder.mask_downscaling.4."),
    ("prompt_encoder.mask_embed.conv3.", "sam_prompt_encoder.mask_downscaling.6."),
    ("prompt_encoder.", "sam_prompt_encoder."),
    ("mask_decoder.upscale_conv1.", "sam_mask_decoder.output_upscaling.0."),
    ("mask_decoder.upscale_layer_norm.", "sam_mask_decoder.output_upscaling.1."),
    ("mask_decoder.upscale_conv2.", "sam_mask_decoder.output_upscaling.3."),
    ("mask_decoder.transformer.layer_norm_final_attn.", "sam_mask_decoder.transformer.norm_final_attn."),
    ("mask_decoder.", "sam_mask_decoder."),
]
META_INNER = [(".layer_norm1.", ".norm1."), (".layer_norm2.", ".norm2."), (".layer_norm3.", ".norm3."),
              (".layer_norm4.", ".norm4."), (".o_proj.", ".out_proj.")]
HF_MLP = re.compile(r"(?P<mlp>.+)\.(?:(?P<end>proj_in|proj_out)|layers\.(?P<j>\d+))\.(?P<p>weight|bias)")


def meta_state_dict(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta's SAM2 checkpoint layout of an HF Sam2Model state dict (image parts only)."""
    middle: dict[str, int] = {}
    for key in hf:
        if (m := HF_MLP.fullmatch(key)) and m["j"] is not None:
            middle[m["mlp"]] = max(middle.get(m["mlp"], 0), int(m["j"]) + 1)
    meta = {}
    for key, tensor in hf.items():
        if key == "shared_image_embedding.positional_embedding":
            meta["sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = tensor
            continue
        if key == "prompt_encoder.shared_embedding.positional_embedding":
            continue  # Meta has one matrix
        if key == "prompt_encoder.point_embed.weight":
            for n in range(tensor.shape[0]):
                meta[f"sam_prompt_encoder.point_embeddings.{n}.weight"] = tensor[n:n + 1]
            continue
        if key == "no_memory_embedding":
            meta["no_mem_embed"] = tensor
            continue
        if (m := HF_MLP.fullmatch(key)) and key.split(".")[0] != "prompt_encoder":
            j = 0 if m["end"] == "proj_in" else middle.get(m["mlp"], 0) + 1 if m["end"] else int(m["j"]) + 1
            key = f"{m['mlp']}.layers.{j}.{m['p']}"
        if key.startswith("vision_encoder.neck.convs."):
            key = key.replace("vision_encoder.neck.convs.", "image_encoder.neck.convs.")
            index, param = key.rsplit(".", 2)[1:]
            meta[f"image_encoder.neck.convs.{index}.conv.{param}"] = tensor
            continue
        hf_prefix, meta_prefix = next((h, m) for h, m in META_PREFIXES if key.startswith(h))
        key = meta_prefix + key[len(hf_prefix):]
        for hf_part, meta_part in META_INNER:
            key = key.replace(hf_part, meta_part)
        meta[key] = tensor
    return meta


TRACKING = {  # a few of Meta's video-tracking tensors (dropped)
    "memory_attention.layers.0.self_attn.q_proj.weight": (32, 32), "memory_encoder.out_proj.weight": (8, 32, 1, 1),
    "maskmem_tpos_enc": (7, 1, 1, 8), "no_mem_pos_enc": (1, 1, 32), "no_obj_ptr": (1, 32),
    "obj_ptr_proj.layers.0.weight": (32, 32), "mask_downsample.weight": (1, 1, 4, 4),
}


def test_sam2_meta_round_trip_tiny(caplog):
    torch.manual_seed(0)
    source = Sam2Model(tiny_sam2_config())
    with torch.no_grad():  # distinct values everywhere (the init zeroes some tensors)
        for tensor in source.state_dict().values():
            tensor.copy_(torch.randn_like(tensor))
        # Meta keeps one positional matrix for both uses
        source.prompt_encoder.shared_embedding.positional_embedding.copy_(source.shared_image_embedding.positional_embedding)
    hf = source.state_dict()
    assert len({tensor.flatten()[0].item() for tensor in hf.values()}) > len(hf) - 2  # no accidental equal tensors
    meta = meta_state_dict(hf)
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


def test_sam2_table_covers_hiera_large():
    with torch.device("meta"):
        hf = Sam2Model(hiera_large_config()).state_dict()
    meta = meta_state_dict(hf)
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


def geopixel_state_dict(layout: str) -> dict[str, torch.Tensor]:
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
    sd.update({f"{inner}visual_model.{k}": v for k, v in meta_state_dict(sam).items()})
    sd[f"{inner}visual_model.maskmem_tpos_enc"] = torch.zeros(7, 1, 1, 8)
    return {f"model.{k}": v for k, v in sd.items()} if layout == "wrapped" else sd


@pytest.mark.parametrize("layout", ["plain", "wrapped", "bare"])
def test_geopixel_to_clvnet_fills_the_interface_modules(layout):
    official = geopixel_state_dict(layout)
    converted = geopixel_to_clvnet(official, num_heads=HEADS, num_kv_heads=KV_HEADS, source="geopixel")
    model = CLVNetStandIn()
    model.load_state_dict(converted, strict=True)

    plain = geopixel_state_dict("plain")
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


def test_geopixel_sam_prefix_and_unknown_keys():
    official = {k.replace("model.visual_model.", "grounding_encoder."): v
                for k, v in geopixel_state_dict("plain").items()}
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


def test_cli_converts_sam2_and_internlm2(tmp_path, capsys):
    hf = Sam2Model(tiny_sam2_config()).state_dict()
    hf["prompt_encoder.shared_embedding.positional_embedding"] = hf["shared_image_embedding.positional_embedding"]
    torch.save({"model": meta_state_dict(hf)}, tmp_path / "sam2_tiny.pt")
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


# ------------------------------------------------------------------------------------------------ GeoPixel → CLV-Net dir
# The "GeoPixel checkpoint" is written from a random tiny CLVNetModel (full LLM training, Partial LoRA r 4) with the
# inverse of the conversion tables; its tokenizer knows [SEG] <p> </p> but not CLV-Net's <BOX> <IMAGE>.
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


def clvnet_to_geopixel(sd: dict[str, torch.Tensor], rows: int, kv_heads: int) -> dict[str, torch.Tensor]:
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
    out.update({f"model.visual_model.{k}": v for k, v in meta_state_dict(sam).items()})
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
def geopixel(tmp_path_factory):
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
    save_file(clvnet_to_geopixel(source.state_dict(), rows, config.text_config.num_key_value_heads), checkpoint)
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
