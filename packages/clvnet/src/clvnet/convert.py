"""Official checkpoints → the names of this package: InternLM2 → Llama, Meta SAM2 → ``Sam2Model``, GeoPixel → CLV-Net.

transformers has no native InternLM2 and GeoPixel stores SAM2 in Meta's original layout (spec §5, §6), so real weights
reach :class:`~clvnet.modeling.CLVNetModel` through a key rewrite.

**InternLM2 / IXC-2.5 → transformers Llama** (:func:`internlm2_to_llama`; ``P`` = ``prefix``, ``i`` = layer):

=============================================================  ======================================================
InternLM2                                                      Llama
=============================================================  ======================================================
``P tok_embeddings.weight`` / ``P norm.weight`` / ``output``   ``model.embed_tokens`` / ``model.norm`` / ``lm_head``
``P layers.i.attention.wqkv.weight``                           ``model.layers.i.self_attn.{q,k,v}_proj.weight``
  rows = kv_heads × [q × heads/kv_heads, k, v] × head_dim        (split per KV-head group)
``… attention.wo`` / ``feed_forward.w1`` / ``w3`` / ``w2``     ``… self_attn.o_proj`` / ``mlp.gate_proj`` / ``up_proj``
                                                               / ``down_proj``
``… attention_norm`` / ``ffn_norm``                            ``… input_layernorm`` / ``post_attention_layernorm``
``… <linear>.Plora_A.weight`` ``(r, in)``                      ``partial_lora.i.<proj>.lora_A.weight`` (wqkv's is
                                                               copied to q, k and v)
``… <linear>.Plora_B.weight`` ``(out, r)``                     ``partial_lora.i.<proj>.lora_B.weight`` (wqkv's is
                                                               split by rows like wqkv)
``… attention.rotary_emb.inv_freq``                            dropped (rebuilt from the config)
=============================================================  ======================================================

**Meta SAM2 → transformers Sam2Model** (:func:`sam2_meta_to_hf`; ``trunk`` = ``image_encoder.trunk``; every Meta
``MLP.layers.j`` becomes ``proj_in`` (j = 0), ``layers.{j-1}`` (middle) or ``proj_out`` (last)):

=================================================================  ==================================================
Meta (facebookresearch/sam2)                                       transformers
=================================================================  ==================================================
``trunk.patch_embed.proj``                                         ``vision_encoder.backbone.patch_embed.projection``
``trunk.pos_embed`` / ``trunk.pos_embed_window``                   ``vision_encoder.backbone.pos_embed`` / ``…_window``
``trunk.blocks.b.{norm1,norm2}``                                   ``vision_encoder.backbone.blocks.b.layer_norm{1,2}``
``trunk.blocks.b.{attn.qkv,attn.proj,proj,mlp}``                   ``vision_encoder.backbone.blocks.b.`` (same names)
``image_encoder.neck.convs.n.conv``                                ``vision_encoder.neck.convs.n``
``no_mem_embed``                                                   ``no_memory_embedding``
``sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix``  ``shared_image_embedding.positional_embedding`` and
                                                                   ``prompt_encoder.shared_embedding.…`` (both)
``sam_prompt_encoder.point_embeddings.{0..3}.weight`` ``(1, C)``   ``prompt_encoder.point_embed.weight`` ``(4, C)``
``sam_prompt_encoder.{not_a_point_embed,no_mask_embed}``           ``prompt_encoder.`` (same names)
``sam_prompt_encoder.mask_downscaling.{0,1,3,4,6}``                ``prompt_encoder.mask_embed.{conv1,layer_norm1,conv2,
                                                                   layer_norm2,conv3}``
``sam_mask_decoder.{iou_token,mask_tokens,obj_score_token}``       ``mask_decoder.`` (same names)
``sam_mask_decoder.transformer.layers.l.<attn>.out_proj``          ``mask_decoder.transformer.layers.l.<attn>.o_proj``
  (``q/k/v_proj`` keep their names; also ``final_attn_token_to_image``)
``sam_mask_decoder.transformer.layers.l.norm{1..4}`` / ``.mlp``    ``… layer_norm{1..4}`` / ``.mlp``
``sam_mask_decoder.transformer.norm_final_attn``                   ``mask_decoder.transformer.layer_norm_final_attn``
``sam_mask_decoder.output_upscaling.{0,1,3}``                      ``mask_decoder.{upscale_conv1,upscale_layer_norm,
                                                                   upscale_conv2}``
``sam_mask_decoder.{conv_s0,conv_s1,output_hypernetworks_mlps.m,   ``mask_decoder.`` (same names)
iou_prediction_head,pred_obj_score_head}``
``memory_attention.*``, ``memory_encoder.*``, ``obj_ptr_proj.*``,  dropped (video tracking only; listed in the log)
``obj_ptr_tpos_proj.*``, ``mask_downsample.*``, ``maskmem_tpos_enc``,
``no_mem_pos_enc``, ``no_obj_ptr``, ``no_obj_embed_spatial``
=================================================================  ==================================================

**GeoPixel-7B / IXC-2.5 → CLVNetModel** (:func:`geopixel_to_clvnet`): ``vit.vision_tower.[vision_model.]*`` →
``vision_tower.*`` (transformers 5's ``CLIPVisionModel`` keys: ``embeddings.*``, ``encoder.*``, ``post_layernorm.*``);
``vision_proj.*`` unchanged; ``plora_glb_GN`` / ``plora_sub_GN`` ``(1, 1, D)`` → ``global_separator`` /
``row_separator`` ``(D,)``; the LLM as above under ``language_model.`` (Partial-LoRA at the top level);
SAM2 (``model.visual_model.*``) as above under ``sam.``; ``model.text_hidden_fcs.0.{0,2}`` → ``text_projector.{0,2}``.
Unknown keys raise a :class:`DataFormatError` listing them, unless matched by an ``ignore`` regex (full match).

**GeoPixel-7B → a CLV-Net model directory** (:func:`build_from_geopixel`, ``clvnet-convert --kind geopixel
--tokenizer DIR --out DIR``): the rewrite above, CLV-Net's tokens added to the tokenizer (their embedding and LM-head
rows start at the mean of the checkpoint's rows), the weights taken into a model built on the meta device, only the
modules CLV-Net adds fresh; ``save_pretrained`` output for ``clvnet-train --model.init``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from rs_shared.data.errors import DataFormatError
from safetensors.torch import load_file, save_file

from .configuration import CLVNetConfig

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
_LIST_LIMIT = 20  # keys shown per problem in error messages

# ---------------------------------------------------------------------------------------------------------- InternLM2
# §6 "LLM": InternLM2 linear → (Llama module inside a decoder layer, Partial-LoRA projection name)
_INTERNLM2_LINEARS = {
    "attention.wo": ("self_attn.o_proj", "o_proj"),
    "feed_forward.w1": ("mlp.gate_proj", "gate_proj"),
    "feed_forward.w3": ("mlp.up_proj", "up_proj"),
    "feed_forward.w2": ("mlp.down_proj", "down_proj"),
}
_INTERNLM2_NORMS = {"attention_norm.weight": "input_layernorm.weight",
                    "ffn_norm.weight": "post_attention_layernorm.weight"}
_INTERNLM2_LAYER_KEY = re.compile(
    r"layers\.(?P<i>\d+)\.(?:(?P<linear>attention\.wqkv|attention\.wo|feed_forward\.w[123])\.(?P<part>weight|Plora_A"
    r"\.weight|Plora_B\.weight)|(?P<norm>attention_norm\.weight|ffn_norm\.weight)|(?P<rope>attention\.rotary_emb\."
    r"inv_freq))"
)


def _listing(label: str, items: Iterable[str], limit: int | None = _LIST_LIMIT) -> str:
    """``label (n): [a, b, …]``, sorted, at most ``limit`` items shown (None: all)."""
    items = sorted(items)
    shown = items if limit is None else items[:limit]
    more = f", … and {len(items) - len(shown)} more" if len(shown) < len(items) else ""
    return f"{label} ({len(items)}): [{', '.join(shown)}{more}]"


def _raise_unknown(unknown: Iterable[str], ignore: Iterable[str], source: str | os.PathLike, what: str) -> None:
    """Raise for the keys no rule maps and no ``ignore`` regex (full match) excuses."""
    patterns = [re.compile(p) for p in ignore]
    left = [k for k in unknown if not any(p.fullmatch(k) for p in patterns)]
    if left:
        hint = " (peft LoRA keys: merge the adapter into the weights first)" if any("lora_" in k for k in left) else ""
        raise DataFormatError(source, f"not a {what} checkpoint: {_listing('unknown keys', left)}{hint}")


def split_wqkv(weight: torch.Tensor, *, num_heads: int, num_kv_heads: int,
               source: str | os.PathLike = "<state dict>", key: str = "wqkv") -> tuple[torch.Tensor, ...]:
    """Split InternLM2's packed ``wqkv`` rows into ``(q, k, v)`` (also used for its Partial-LoRA ``Plora_B``).

    ``weight`` ``(kv_heads·(g + 2)·head_dim, X)`` with g = heads / kv_heads: for each KV head, g query heads, then its
    key head, then its value head (§6). Returns ``q`` ``(heads·head_dim, X)``, ``k`` and ``v`` ``(kv_heads·head_dim,
    X)`` (new tensors), query heads in the order Llama's grouped attention expects (head h uses KV head h // g).
    """
    if num_heads <= 0 or num_kv_heads <= 0 or num_heads % num_kv_heads:
        raise ValueError(f"num_heads ({num_heads}) must be a positive multiple of num_kv_heads ({num_kv_heads})")
    groups = num_heads // num_kv_heads
    rows = weight.shape[0]
    if weight.dim() != 2 or rows % (num_kv_heads * (groups + 2)):
        raise DataFormatError(source, f"{key}: shape {tuple(weight.shape)} is not {num_kv_heads} KV groups × "
                                      f"({groups} q + k + v) heads of equal size")
    head_dim = rows // (num_kv_heads * (groups + 2))
    packed = weight.reshape(num_kv_heads, groups + 2, head_dim, weight.shape[1])
    q = packed[:, :groups].reshape(num_heads * head_dim, -1).clone()
    k = packed[:, groups].reshape(num_kv_heads * head_dim, -1).clone()
    v = packed[:, groups + 1].reshape(num_kv_heads * head_dim, -1).clone()
    return q, k, v


def _internlm2_keys(state_dict: Mapping[str, torch.Tensor], num_heads: int, num_kv_heads: int, prefix: str,
                    source: str | os.PathLike) -> tuple[StateDict, list[str]]:
    """Converted tensors and the keys no rule maps."""
    out: StateDict = {}
    unknown: list[str] = []
    for key, tensor in state_dict.items():
        if key == "output.weight":
            out["lm_head.weight"] = tensor
            continue
        rest = key[len(prefix):] if key.startswith(prefix) else None
        if rest == "tok_embeddings.weight":
            out["model.embed_tokens.weight"] = tensor
            continue
        if rest == "norm.weight":
            out["model.norm.weight"] = tensor
            continue
        match = _INTERNLM2_LAYER_KEY.fullmatch(rest) if rest is not None else None
        if match is None:
            unknown.append(key)
            continue
        i, linear, part = match["i"], match["linear"], match["part"]
        layer, lora = f"model.layers.{i}.", f"partial_lora.{i}."
        if match["norm"]:
            out[layer + _INTERNLM2_NORMS[match["norm"]]] = tensor
        elif match["rope"]:
            continue  # non-learned buffer, rebuilt by LlamaRotaryEmbedding
        elif linear == "attention.wqkv" and part == "Plora_A.weight":
            for proj in ("q_proj", "k_proj", "v_proj"):  # one shared down-projection → one copy per projection
                out[f"{lora}{proj}.lora_A.weight"] = tensor.clone()
        elif linear == "attention.wqkv":
            parts = split_wqkv(tensor, num_heads=num_heads, num_kv_heads=num_kv_heads, source=source, key=key)
            for proj, piece in zip(("q_proj", "k_proj", "v_proj"), parts):
                out[f"{layer}self_attn.{proj}.weight" if part == "weight" else f"{lora}{proj}.lora_B.weight"] = piece
        else:
            module, proj = _INTERNLM2_LINEARS[linear]
            target = {"weight": f"{layer}{module}.weight", "Plora_A.weight": f"{lora}{proj}.lora_A.weight",
                      "Plora_B.weight": f"{lora}{proj}.lora_B.weight"}[part]
            out[target] = tensor
    return out, unknown


def internlm2_to_llama(state_dict: Mapping[str, torch.Tensor], *, num_heads: int, num_kv_heads: int,
                       prefix: str = "model.", ignore: Iterable[str] = (),
                       source: str | os.PathLike = "<state dict>") -> StateDict:
    """InternLM2 (or IXC-2.5) LLM weights → ``LlamaForCausalLM`` keys plus ``partial_lora.*`` (§1.2, §6 "LLM").

    ``state_dict``: ``{prefix}tok_embeddings.weight``, ``{prefix}layers.{i}.…``, ``{prefix}norm.weight``,
    ``output.weight`` (see the module table). ``num_heads`` / ``num_kv_heads``: the InternLM2 config's
    ``num_attention_heads`` / ``num_key_value_heads`` (7B: 32 / 8). Keys outside the table raise
    :class:`DataFormatError` naming ``source`` unless an ``ignore`` regex matches them in full.
    """
    out, unknown = _internlm2_keys(state_dict, num_heads, num_kv_heads, prefix, source)
    _raise_unknown(unknown, ignore, source, "InternLM2")
    return out


# ---------------------------------------------------------------------------------------------------------- SAM2
_SAM2_DROPPED = re.compile(  # video-tracking parts, unused for single images (§1.3)
    r"(?:memory_attention|memory_encoder|obj_ptr_proj|obj_ptr_tpos_proj|mask_downsample)\..+"
    r"|maskmem_tpos_enc|no_mem_pos_enc|no_obj_ptr|no_obj_embed_spatial"
)
_SAM2_MLP_LAYER = re.compile(
    r"(?P<mlp>.+\.(?:mlp|output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head))"
    r"\.layers\.(?P<j>\d+)\.(?P<p>weight|bias)"
)
_WB = r"(?P<p>weight|bias)"
_MLP = rf"(?P<m>proj_in|proj_out|layers\.\d+)\.{_WB}"
_DEC = r"sam_mask_decoder\."
_ATTN = (r"(?P<a>(?:layers\.\d+\.)?"
         r"(?:self_attn|cross_attn_token_to_image|cross_attn_image_to_token|final_attn_token_to_image))")
_SAM2_RULES = [(re.compile(pattern), template) for pattern, template in (  # (Meta key after MLP renaming, HF key)
    (rf"image_encoder\.trunk\.patch_embed\.proj\.{_WB}", r"vision_encoder.backbone.patch_embed.projection.\g<p>"),
    (r"image_encoder\.trunk\.(?P<n>pos_embed|pos_embed_window)", r"vision_encoder.backbone.\g<n>"),
    (rf"image_encoder\.trunk\.blocks\.(?P<b>\d+)\.norm(?P<n>[12])\.{_WB}",
     r"vision_encoder.backbone.blocks.\g<b>.layer_norm\g<n>.\g<p>"),
    (rf"image_encoder\.trunk\.blocks\.(?P<b>\d+)\.(?P<n>attn\.qkv|attn\.proj|proj)\.{_WB}",
     r"vision_encoder.backbone.blocks.\g<b>.\g<n>.\g<p>"),
    (rf"image_encoder\.trunk\.blocks\.(?P<b>\d+)\.mlp\.{_MLP}",
     r"vision_encoder.backbone.blocks.\g<b>.mlp.\g<m>.\g<p>"),
    (rf"image_encoder\.neck\.convs\.(?P<n>\d+)\.conv\.{_WB}", r"vision_encoder.neck.convs.\g<n>.\g<p>"),
    (r"no_mem_embed", "no_memory_embedding"),
    (r"sam_prompt_encoder\.(?P<n>not_a_point_embed|no_mask_embed)\.weight", r"prompt_encoder.\g<n>.weight"),
    *((rf"sam_prompt_encoder\.mask_downscaling\.{index}\.{_WB}", rf"prompt_encoder.mask_embed.{name}.\g<p>")
      for index, name in (("0", "conv1"), ("1", "layer_norm1"), ("3", "conv2"), ("4", "layer_norm2"), ("6", "conv3"))),
    (_DEC + r"(?P<n>iou_token|mask_tokens|obj_score_token)\.weight", r"mask_decoder.\g<n>.weight"),
    (_DEC + rf"transformer\.{_ATTN}\.(?P<q>[qkv])_proj\.{_WB}", r"mask_decoder.transformer.\g<a>.\g<q>_proj.\g<p>"),
    (_DEC + rf"transformer\.{_ATTN}\.out_proj\.{_WB}", r"mask_decoder.transformer.\g<a>.o_proj.\g<p>"),
    (_DEC + rf"transformer\.layers\.(?P<l>\d+)\.norm(?P<n>[1-4])\.{_WB}",
     r"mask_decoder.transformer.layers.\g<l>.layer_norm\g<n>.\g<p>"),
    (_DEC + rf"transformer\.layers\.(?P<l>\d+)\.mlp\.{_MLP}", r"mask_decoder.transformer.layers.\g<l>.mlp.\g<m>.\g<p>"),
    (_DEC + rf"transformer\.norm_final_attn\.{_WB}", r"mask_decoder.transformer.layer_norm_final_attn.\g<p>"),
    *((_DEC + rf"output_upscaling\.{index}\.{_WB}", rf"mask_decoder.{name}.\g<p>")
      for index, name in (("0", "upscale_conv1"), ("1", "upscale_layer_norm"), ("3", "upscale_conv2"))),
    (_DEC + rf"(?P<n>conv_s0|conv_s1)\.{_WB}", r"mask_decoder.\g<n>.\g<p>"),
    (_DEC + rf"(?P<n>output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head)\.{_MLP}",
     r"mask_decoder.\g<n>.\g<m>.\g<p>"),
)]
_SAM2_PE = "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
_SAM2_PE_TARGETS = ("shared_image_embedding.positional_embedding",
                    "prompt_encoder.shared_embedding.positional_embedding")
_SAM2_POINT = re.compile(r"sam_prompt_encoder\.point_embeddings\.(?P<n>\d+)\.weight")


def _sam2_mlp_names(keys: Iterable[str]) -> dict[str, str]:
    """Meta ``<mlp>.layers.j.{weight,bias}`` → ``<mlp>.{proj_in | layers.(j-1) | proj_out}.…`` (HF FeedForward)."""
    matches = [(key, m) for key in keys if (m := _SAM2_MLP_LAYER.fullmatch(key))]
    depth: dict[str, int] = {}
    for _, m in matches:
        depth[m["mlp"]] = max(depth.get(m["mlp"], 0), int(m["j"]) + 1)
    renamed = {}
    for key, m in matches:
        j, last = int(m["j"]), depth[m["mlp"]] - 1
        part = "proj_in" if j == 0 else "proj_out" if j == last else f"layers.{j - 1}"
        renamed[key] = f"{m['mlp']}.{part}.{m['p']}"
    return renamed


def sam2_meta_to_hf(state_dict: Mapping[str, torch.Tensor], *, ignore: Iterable[str] = (),
                    source: str | os.PathLike = "<state dict>") -> StateDict:
    """Meta's SAM2 state dict (``image_encoder.*``, ``sam_prompt_encoder.*``, ``sam_mask_decoder.*``, …) →
    ``transformers.Sam2Model`` keys (§5; the table is in the module docstring).

    The video-tracking tensors (memory attention/encoder, object pointers, …) are dropped and logged at INFO level.
    Keys outside the table raise :class:`DataFormatError` naming ``source`` unless an ``ignore`` regex matches them.
    """
    mlp_names = _sam2_mlp_names(state_dict)
    out: StateDict = {}
    points: dict[int, torch.Tensor] = {}
    dropped, unknown = [], []
    for key, tensor in state_dict.items():
        if _SAM2_DROPPED.fullmatch(key):
            dropped.append(key)
        elif key == _SAM2_PE:  # Meta has one random-Fourier matrix; Sam2Model keeps two copies
            for target in _SAM2_PE_TARGETS:
                out[target] = tensor.clone()
        elif point := _SAM2_POINT.fullmatch(key):
            points[int(point["n"])] = tensor
        else:
            name = mlp_names.get(key, key)
            target = next((m.expand(t) for p, t in _SAM2_RULES if (m := p.fullmatch(name))), None)
            if target is None:
                unknown.append(key)
            else:
                out[target] = tensor
    _raise_unknown(unknown, ignore, source, "SAM2 (Meta layout)")
    if points:
        if sorted(points) != list(range(len(points))):
            raise DataFormatError(source, f"sam_prompt_encoder.point_embeddings: indices {sorted(points)} are not "
                                          f"0..{len(points) - 1}")
        out["prompt_encoder.point_embed.weight"] = torch.cat([points[n] for n in range(len(points))], dim=0)
    if dropped:
        groups = sorted({k.split(".")[0] for k in dropped})
        logger.info("%s: dropped %d SAM2 video-tracking tensors (%s)", source, len(dropped), ", ".join(groups))
    return out


# ---------------------------------------------------------------------------------------------------------- GeoPixel
_GEOPIXEL_SAM_PREFIX = "model.visual_model."  # assumption: GeoPixelForCausalLM.model.visual_model (GeoPixelMetaModel)
_GEOPIXEL_DIRECT = [(re.compile(p), t) for p, t in (
    (r"vit\.vision_tower\.(?:vision_model\.)?embeddings\.position_ids", None),  # buffer, rebuilt by CLIP
    # transformers 5 CLIPVisionModel has no "vision_model." level; IXC-2.5 files (older transformers) do
    (r"vit\.vision_tower\.(?:vision_model\.)?(?P<r>.+)", r"vision_tower.\g<r>"),
    (r"vision_proj\.(?P<r>[02]\.(?:weight|bias))", r"vision_proj.\g<r>"),
    (r"(?:model\.)?text_hidden_fcs\.0\.(?P<r>[02]\.(?:weight|bias))", r"text_projector.\g<r>"),
)]
_GEOPIXEL_SEPARATORS = {"plora_glb_GN": "global_separator", "plora_sub_GN": "row_separator"}


def _strip_wrapper(keys: Iterable[str]) -> bool:
    """Whether every key carries one extra leading ``model.`` around a whole GeoPixel/IXC model."""
    keys = list(keys)
    return bool(keys) and all(k.startswith("model.") for k in keys) and any(
        k.startswith(("model.model.", "model.vit.", "model.vision_proj.")) or k == "model.output.weight" for k in keys)


def geopixel_to_clvnet(state_dict: Mapping[str, torch.Tensor], *, num_heads: int, num_kv_heads: int,
                       sam_prefix: str = _GEOPIXEL_SAM_PREFIX, ignore: Iterable[str] = (),
                       source: str | os.PathLike = "<state dict>") -> StateDict:
    """A whole GeoPixel-7B (or IXC-2.5) checkpoint → ``CLVNetModel`` keys (§5; module docstring table).

    Accepted layouts: GeoPixel's (``model.layers.*``, ``output.weight``, ``vit.*``, ``vision_proj.*``,
    ``plora_*_GN``, ``model.visual_model.*``, ``model.text_hidden_fcs.*``), the same with one extra leading
    ``model.`` on every key, and the LLM / SAM2 / text projector without their leading ``model.``. ``sam_prefix``
    (default ``model.visual_model.``, an assumption read from GeoPixel's model code) is also tried without its
    leading ``model.``. An IXC-2.5 checkpoint (no SAM2, no text projector) converts to the parts it has.
    Returns vision_tower.*, vision_proj.*, global/row_separator ``(D,)``, language_model.*, partial_lora.*, sam.*,
    text_projector.*; the CLV-Net-only modules (CGFormer, region-box MLP, SRAlign) are not in the result.
    """
    if _strip_wrapper(state_dict):
        state_dict = {k[len("model."):]: v for k, v in state_dict.items()}
    if not any(k.startswith(sam_prefix) for k in state_dict) and sam_prefix.startswith("model."):
        sam_prefix = sam_prefix[len("model."):]
    llm_prefix = "" if "tok_embeddings.weight" in state_dict else "model."

    out: StateDict = {}
    sam: StateDict = {}
    llm: StateDict = {}
    for key, tensor in state_dict.items():
        if key.startswith(sam_prefix):
            sam[key[len(sam_prefix):]] = tensor
        elif key in _GEOPIXEL_SEPARATORS:
            if tensor.dim() != 3 or tensor.shape[:2] != (1, 1):
                raise DataFormatError(source, f"{key}: expected shape (1, 1, D), got {tuple(tensor.shape)}")
            out[_GEOPIXEL_SEPARATORS[key]] = tensor.reshape(-1)
        else:
            rule = next(((m, t) for p, t in _GEOPIXEL_DIRECT if (m := p.fullmatch(key))), None)
            if rule is None:
                llm[key] = tensor  # the LLM converter reports whatever is not an LLM key
            elif rule[1] is not None:
                out[rule[0].expand(rule[1])] = tensor
    converted, unknown = _internlm2_keys(llm, num_heads, num_kv_heads, llm_prefix, source)
    _raise_unknown(unknown, ignore, source, "GeoPixel/IXC-2.5")
    for key, tensor in converted.items():
        out[key if key.startswith("partial_lora.") else f"language_model.{key}"] = tensor
    for key, tensor in sam2_meta_to_hf(sam, ignore=ignore, source=source).items():
        out[f"sam.{key}"] = tensor
    return out


# ---------------------------------------------------------------------------------------------------------- files
_INDEX_NAMES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json",
                "pytorch_model.bin")
_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _load_single(path: Path) -> StateDict:
    if path.suffix == ".safetensors":
        try:
            return load_file(path, device="cpu")
        except Exception as err:  # safetensors raises SafetensorError, OSError, …
            raise DataFormatError(path, f"not a safetensors file ({type(err).__name__}: {str(err)[:200]})") from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)  # safe: tensors and plain data only
    except Exception as err:  # UnpicklingError, RuntimeError, EOFError, …
        reason = "holds objects other than tensors and plain data" if "Weights only load failed" in str(err) \
            else f"not a PyTorch checkpoint ({type(err).__name__}: {str(err)[:200]})"
        raise DataFormatError(path, f"refused: {reason}; read with torch.load(weights_only=True)") from err
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        obj = next((obj[k] for k in ("model", "state_dict", "module") if isinstance(obj.get(k), Mapping)), obj)
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)] if isinstance(obj, Mapping) else None
    if bad is None or bad or not obj:
        detail = f"a {type(obj).__name__}" if bad is None else _listing("non-tensor entries", bad) if bad else "empty"
        raise DataFormatError(path, f"not a state dict of tensors: {detail}")
    return dict(obj)


def _load_index(path: Path) -> StateDict:
    try:
        weight_map = json.loads(path.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataFormatError(path, f"not a sharded-checkpoint index with a 'weight_map' ({err})") from err
    state: StateDict = {}
    for shard in sorted(set(weight_map.values())):
        state.update(_load_single(path.parent / shard))
    missing = set(weight_map) - state.keys()
    if missing:
        raise DataFormatError(path, _listing("keys listed in weight_map but absent from the shards", missing))
    return state


def load_official_state_dict(path: str | os.PathLike) -> StateDict:
    """Read a checkpoint into a flat ``{key: tensor}`` dict on the CPU.

    ``path``: a ``*.safetensors`` file, a ``*.index.json`` of shards (safetensors or ``.bin``), a ``*.bin`` /
    ``*.pt`` / ``*.pth`` file (``torch.load(weights_only=True)``; a ``{"model": state_dict}`` wrapper as in Meta's
    SAM2 files is unwrapped), or a directory holding one of ``model.safetensors[.index.json]``,
    ``pytorch_model.bin[.index.json]`` or exactly one checkpoint file. Anything else raises
    :class:`DataFormatError` (or :class:`FileNotFoundError`) naming the path.
    """
    path = Path(path)
    if path.is_dir():
        found = next((path / n for n in _INDEX_NAMES if (path / n).is_file()), None)
        candidates = sorted(p for p in path.iterdir() if p.name.endswith(_SUFFIXES + (".index.json",)))
        if found is None and len(candidates) != 1:
            raise DataFormatError(path, f"expected one checkpoint (or {_INDEX_NAMES[0]}) in the directory, found "
                                        f"{[p.name for p in candidates]}")
        path = found or candidates[0]
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.name.endswith(".index.json"):
        return _load_index(path)
    if path.suffix not in _SUFFIXES:
        raise DataFormatError(path, f"unsupported checkpoint type {path.suffix!r}: expected one of "
                                    f"{', '.join(_SUFFIXES)} or a *.index.json")
    return _load_single(path)


# ---------------------------------------------------------------------------------------------------------- CLI
def _detect_kind(keys: Iterable[str]) -> str:
    keys = list(keys)
    if any(k.startswith(("image_encoder.trunk.", "sam_mask_decoder.")) for k in keys):
        return "sam2"
    if any(".visual_model." in k or k.startswith(("visual_model.", "vit.", "model.vit.")) for k in keys):
        return "geopixel"
    return "internlm2"


def _head_counts(args: argparse.Namespace, src: Path) -> tuple[int, int]:
    """``--num-heads`` / ``--num-kv-heads``, else ``num_attention_heads`` / ``num_key_value_heads`` of config.json."""
    config_file = (src if src.is_dir() else src.parent) / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    heads = args.num_heads or config.get("num_attention_heads")
    kv_heads = args.num_kv_heads or config.get("num_key_value_heads", heads)
    if not heads:
        raise SystemExit(f"clvnet-convert: --num-heads is required (no num_attention_heads in {config_file})")
    return int(heads), int(kv_heads)


def _unshared(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Contiguous tensors with no two on one storage (safetensors refuses shared memory, e.g. tied weights)."""
    seen: set[int] = set()
    out = {}
    for key, tensor in state.items():
        pointer = tensor.untyped_storage().data_ptr()
        out[key] = tensor.contiguous() if pointer not in seen else tensor.clone(memory_format=torch.contiguous_format)
        seen.add(pointer)
    return out


def main(argv: list[str] | None = None) -> int:
    """``clvnet-convert``: rewrite an InternLM2 / Meta SAM2 / GeoPixel checkpoint into one safetensors file, or
    (``--tokenizer``) build a CLV-Net model directory from GeoPixel (:func:`build_from_geopixel`)."""
    parser = argparse.ArgumentParser(
        prog="clvnet-convert",
        description="Rewrite an InternLM2, Meta SAM2 or GeoPixel checkpoint into this package's key names (one "
                    "safetensors file), or with --tokenizer build a CLV-Net model directory from GeoPixel-7B.",
        epilog="kinds: internlm2 → LlamaForCausalLM keys (+ partial_lora.*); sam2 → transformers Sam2Model keys; "
               "geopixel → CLVNetModel keys. Head counts default to config.json next to --src. "
               "--kind geopixel --tokenizer DIR --out DIR writes a directory for clvnet-train --model.init.")
    parser.add_argument("--src", required=True, help="checkpoint file, *.index.json or directory")
    parser.add_argument("--out", required=True,
                        help="output *.safetensors file (with --tokenizer: the CLV-Net model directory)")
    parser.add_argument("--tokenizer", metavar="DIR",
                        help="geopixel: GeoPixel's InternLM2 tokenizer (local, fast form) → build a CLV-Net model")
    parser.add_argument("--config", metavar="FILE",
                        help="with --tokenizer: a CLVNetConfig config.json (default: the paper preset; its "
                             "text_config gives the head counts)")
    parser.add_argument("--kind", choices=("internlm2", "sam2", "geopixel"), help="default: detected from the keys")
    parser.add_argument("--num-heads", type=int, help="InternLM2 num_attention_heads (7B: 32)")
    parser.add_argument("--num-kv-heads", type=int, help="InternLM2 num_key_value_heads (7B: 8)")
    parser.add_argument("--prefix", default="model.", help="internlm2: prefix of the transformer keys")
    parser.add_argument("--sam-prefix", default=_GEOPIXEL_SAM_PREFIX, help="geopixel: prefix of the SAM2 keys")
    parser.add_argument("--ignore", action="append", default=[], metavar="REGEX",
                        help="source keys to skip (full match; repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    src, out = Path(args.src), Path(args.out)
    if args.tokenizer:
        if args.kind not in (None, "geopixel"):
            parser.error(f"--tokenizer builds a CLV-Net model from GeoPixel; --kind {args.kind} takes no tokenizer")
        config = CLVNetConfig.from_pretrained(args.config) if args.config else None
        from .official import build_from_geopixel  # the model stack is only needed here

        build_from_geopixel(src, args.tokenizer, out, config=config, ignore=args.ignore, sam_prefix=args.sam_prefix)
        print(f"geopixel: CLV-Net model and tokenizer written to {out}")
        return 0
    if args.config:
        parser.error("--config needs --tokenizer (it configures the CLV-Net model directory)")
    if out.suffix != ".safetensors":
        parser.error(f"--out must end in .safetensors, got {out}")
    state = load_official_state_dict(src)
    kind = args.kind or _detect_kind(state)
    if kind == "sam2":
        converted = sam2_meta_to_hf(state, ignore=args.ignore, source=src)
    else:
        heads, kv_heads = _head_counts(args, src)
        if kind == "internlm2":
            converted = internlm2_to_llama(state, num_heads=heads, num_kv_heads=kv_heads, prefix=args.prefix,
                                           ignore=args.ignore, source=src)
        else:
            converted = geopixel_to_clvnet(state, num_heads=heads, num_kv_heads=kv_heads,
                                           sam_prefix=args.sam_prefix, ignore=args.ignore, source=src)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(_unshared(converted), out, metadata={"format": "pt", "kind": kind})
    print(f"{kind}: {len(state)} tensors in {src} → {len(converted)} tensors in {out}")
    return 0


__all__ = ["geopixel_to_clvnet", "internlm2_to_llama",
           "load_official_state_dict", "main", "sam2_meta_to_hf", "split_wqkv"]
