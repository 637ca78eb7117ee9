"""A CLV-Net model directory from an official GeoPixel-7B / IXC-2.5 checkpoint (spec §5).

:func:`build_from_geopixel` reads the checkpoint (:func:`clvnet.convert.load_official_state_dict`), rewrites its
keys (:func:`clvnet.convert.geopixel_to_clvnet`), adds the CLV-Net tokens to the local InternLM2 tokenizer (new
embedding/output rows = the mean of the checkpoint's rows), builds :class:`~clvnet.modeling.CLVNetModel` on the meta
device and loads the weights in place. Only what a GeoPixel checkpoint cannot hold may be missing — CLV-Net's new
modules (CGFormer, the region-box MLP, the SRAlign heads) and the fresh peft LoRA adapters (B = 0); any other missing
or unexpected key or shape mismatch raises with the full list. The result is a ``save_pretrained`` directory that
``CLVNetModel.from_pretrained`` and ``clvnet-train --model.init`` read.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from peft.tuners.lora import LoraLayer
from rs_shared.data.errors import DataFormatError
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from .configuration import CLVNetConfig
from .convert import _GEOPIXEL_SAM_PREFIX, StateDict, _listing, geopixel_to_clvnet, load_official_state_dict
from .modeling import CLVNetModel
from .tokenizer import TokenIds, add_clvnet_tokens

logger = logging.getLogger(__name__)

# §5: what a GeoPixel checkpoint cannot hold: CLV-Net's new modules and the peft LoRA wrapped around the LLM linears
_CLVNET_ONLY = re.compile(r"(?:cgformer|region_box_embed|sralign)\..+"
                          r"|language_model\..+\.lora_[AB]\.[^.]+\.(?:weight|bias)")
_TOKEN_ROWS = ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight")


def load_local_tokenizer(tokenizer_dir: str | os.PathLike) -> PreTrainedTokenizerBase:
    """The tokenizer in the local directory ``tokenizer_dir`` (``trust_remote_code=False``, nothing downloaded).

    InternLM2's own tokenizer files point at remote code (``auto_map`` → ``tokenization_internlm2.py``); such a
    directory raises :class:`DataFormatError` saying so — give its fast form instead (``tokenizer.json`` plus a
    ``tokenizer_config.json`` without ``auto_map``).
    """
    path = Path(tokenizer_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer directory not found: {path}")
    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False, local_files_only=True)
    except (ValueError, OSError, TypeError, KeyError, ImportError) as err:
        try:
            auto_map = json.loads((path / "tokenizer_config.json").read_text()).get("auto_map")
        except (OSError, ValueError, AttributeError):
            auto_map = None
        if auto_map or "custom code" in str(err):
            raise DataFormatError(path, f"the tokenizer can only be loaded with remote code (auto_map {auto_map}); "
                                        "clvnet never runs remote code: give the fast tokenizer instead "
                                        "(tokenizer.json and a tokenizer_config.json without 'auto_map')") from err
        raise DataFormatError(path, f"no loadable tokenizer ({type(err).__name__}: {str(err)[:200]})") from err


def _grow_token_rows(state: StateDict, vocab: int) -> int:
    """§1.2 "New tokens": append rows for the tokens the checkpoint lacks to the input embedding and the LM head,
    each the mean of the checkpoint's rows. Returns how many rows were added (0 when the checkpoint has ≥ vocab
    rows: more rows are left for the shape check to report)."""
    added = 0
    for key in _TOKEN_ROWS:
        rows = state.get(key)
        if rows is None or rows.dim() != 2 or rows.shape[0] >= vocab:
            continue
        added = vocab - rows.shape[0]
        mean = rows.mean(0, keepdim=True, dtype=torch.float32).to(rows.dtype)
        state[key] = torch.cat([rows, mean.expand(added, -1)])
    return added


def _fit_to_model(state: StateDict, expected: Mapping[str, torch.Size], source: str | os.PathLike) -> StateDict:
    """Rename plain linear keys onto peft's ``…base_layer.*`` where LoRA wraps the linear, then raise listing every
    missing key (other than :data:`_CLVNET_ONLY`), unexpected key and shape mismatch."""
    fitted: StateDict = {}
    for key, tensor in state.items():
        stem, _, param = key.rpartition(".")
        wrapped = f"{stem}.base_layer.{param}"
        fitted[wrapped if key not in expected and wrapped in expected else key] = tensor
    missing = [k for k in expected if k not in fitted and not _CLVNET_ONLY.fullmatch(k)]
    unexpected = [k for k in fitted if k not in expected]
    shapes = [f"{k} {tuple(t.shape)} ≠ model {tuple(expected[k])}" for k, t in fitted.items()
              if k in expected and t.shape != expected[k]]
    problems = [_listing(label, items, limit=None) for label, items in
                (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)) if items]
    if any(k in fitted and fitted[k].shape[0] > expected[k][0] for k in _TOKEN_ROWS if k in expected):
        problems.append("the checkpoint has more token rows than the tokenizer has tokens (not its tokenizer?)")
    if problems:
        raise DataFormatError(source, f"does not fit CLVNetModel(config): {'; '.join(problems)}")
    return fitted


def _materialise(model: nn.Module, loaded: set[str], dtype: torch.dtype) -> list[str]:
    """Give every parameter/buffer still on the meta device CPU storage (floating parameters in ``dtype``) and
    initialise those only, as ``CLVNetModel(config)`` would (transformers' ``initialize_weights`` skips modules and
    tensors flagged ``_is_hf_initialized``); peft's LoRA gets peft's own init (B = 0: it starts as the identity).
    Returns the materialised state-dict keys."""
    for module in model.modules():
        fresh = False
        for name, param in list(module.named_parameters(recurse=False)):
            if param.is_meta:
                kind = dtype if param.is_floating_point() else param.dtype
                setattr(module, name, nn.Parameter(torch.empty(param.shape, dtype=kind), param.requires_grad))
                fresh = True
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer.is_meta:
                module._buffers[name] = torch.empty(buffer.shape, dtype=buffer.dtype)  # keeps the persistent flag
                fresh = True
        module._is_hf_initialized = not fresh
    for key, tensor in model.state_dict(keep_vars=True).items():
        tensor._is_hf_initialized = key in loaded
    model.initialize_weights()
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for adapter in module.lora_A:
                module.reset_lora_parameters(adapter, True)
    return [k for k in model.state_dict() if k not in loaded]


def build_from_geopixel(src: str | os.PathLike, tokenizer_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                        config: CLVNetConfig | None = None, ignore: Iterable[str] = (),
                        sam_prefix: str = _GEOPIXEL_SAM_PREFIX) -> Path:
    """A GeoPixel-7B checkpoint + its InternLM2 tokenizer → a CLV-Net ``save_pretrained`` directory (§5, §6).

    ``src``: anything :func:`load_official_state_dict` reads; ``tokenizer_dir``: local tokenizer files
    (:func:`load_local_tokenizer`), extended with :func:`~clvnet.tokenizer.add_clvnet_tokens`. ``config`` (default
    :meth:`CLVNetConfig.paper`) gets the tokenizer's special-token ids and ``text_config.vocab_size =
    len(tokenizer)``. The embedding and LM-head rows of tokens the checkpoint lacks start at the mean of its rows.
    The model is built on the meta device and takes the converted tensors as they are (``assign=True``, their
    dtype); only CLV-Net's own modules (CGFormer, region-box MLP, SRAlign heads) and peft's LoRA may be missing and
    are initialised fresh — any other missing key, unexpected key or shape mismatch raises
    :class:`DataFormatError` listing all of them. Writes the model (safetensors) and the tokenizer into
    ``out_dir`` (read by ``CLVNetModel.from_pretrained`` and ``clvnet-train --model.init``); returns it.
    """
    tokenizer = load_local_tokenizer(tokenizer_dir)
    new_tokens = add_clvnet_tokens(tokenizer)
    ids = TokenIds.of(tokenizer)
    config = copy.deepcopy(config) if config is not None else CLVNetConfig.paper()
    config.update(ids.config_kwargs())
    config.text_config.vocab_size = len(tokenizer)
    text = config.text_config

    state = geopixel_to_clvnet(load_official_state_dict(src), num_heads=text.num_attention_heads,
                               num_kv_heads=text.num_key_value_heads, sam_prefix=sam_prefix, ignore=ignore,
                               source=src)
    new_rows = _grow_token_rows(state, len(tokenizer))
    with torch.device("meta"):
        model = CLVNetModel(config)
    state = _fit_to_model(state, {k: t.shape for k, t in model.state_dict().items()}, src)
    dtype = state[_TOKEN_ROWS[0]].dtype
    model.load_state_dict(state, strict=False, assign=True)
    fresh = _materialise(model, set(state), dtype)
    del state

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(str(out))
    modules = sorted({"peft LoRA" if k.startswith("language_model.") else k.split(".")[0] for k in fresh})
    logger.info("%s → %s: %d tokens added to the tokenizer, %d new token rows (mean-initialised), %d tensors "
                "initialised fresh (%s)", src, out, new_tokens, new_rows, len(fresh), ", ".join(modules))
    return out


__all__ = ["build_from_geopixel", "load_local_tokenizer"]
