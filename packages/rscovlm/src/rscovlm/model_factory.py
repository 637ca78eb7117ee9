"""The model: transformers' own ``Qwen2_5_VLForConditionalGeneration`` in two presets (spec §1, §8).

- ``tiny``: a random ~180k-parameter Qwen2.5-VL with the locally trained tokenizer of
  :mod:`rscovlm.tokenizer`, built fully offline (:func:`build_tiny_model`, :func:`build_tiny` writes it to a
  directory that ``from_pretrained`` reads back). Images use ``min_pixels = 56²`` and
  ``max_pixels = 28²·64``, so at most 64 tokens per image.
- ``paper``: Qwen2.5-VL-7B-Instruct read from a local directory (:func:`load_paper`; nothing downloads, no
  remote code), with the recipe's pixel bounds 50,176 / 1,016,064. :func:`paper_config` is its architecture,
  for building it without weights.

Every checkpoint directory holds ``config.json`` + weights, the tokenizer files and
``preprocessor_config.json`` (:class:`rscovlm.render.ImageSettings`, the one source of the pixel bounds, §3.2).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from rs_shared.hub import strict_from_pretrained
from transformers import GenerationConfig, PreTrainedTokenizerBase, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from .render import ChatRenderer, ImageSettings
from .resize import PAPER_MAX_PIXELS, PAPER_MIN_PIXELS
from .tokenizer import TokenIds, build_tiny_tokenizer, load_tokenizer

TINY_IMAGE_SETTINGS = ImageSettings(min_pixels=56 * 56, max_pixels=28 * 28 * 64)
PAPER_IMAGE_SETTINGS = ImageSettings(min_pixels=PAPER_MIN_PIXELS, max_pixels=PAPER_MAX_PIXELS)
SPATIAL_PATCH_SIZE = 14  # read by the official zoom code from vision_config, absent from a default config (§9.7)


@dataclass
class LoadedModel:
    """A model with the tokenizer and image settings of its checkpoint."""

    model: Qwen2_5_VLForConditionalGeneration
    tokenizer: PreTrainedTokenizerBase
    image_settings: ImageSettings

    def renderer(self, max_length: int | None = None) -> ChatRenderer:
        """A :class:`ChatRenderer` over this tokenizer and these image settings."""
        return ChatRenderer(self.tokenizer, self.image_settings, max_length=max_length)


def tiny_config(tokenizer: PreTrainedTokenizerBase) -> Qwen2_5_VLConfig:
    """The §8 tiny architecture, token ids taken from ``tokenizer``: text hidden 64, 2 layers, 4 heads
    (head_dim 16, mRoPE sections [2, 3, 3] summing to head_dim / 2), 2 KV heads, tied embeddings; vision
    depth 2, hidden 32, patch 14, merge 2, temporal 2, window 56, full attention in block 1."""
    ids = TokenIds.of(tokenizer)
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            bos_token_id=ids.pad, eos_token_id=ids.im_end, pad_token_id=ids.pad, tie_word_embeddings=True,
        ),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=14,
            spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1],
            tokens_per_second=2, spatial_patch_size=SPATIAL_PATCH_SIZE,
        ),
        image_token_id=ids.image, video_token_id=ids.video, vision_start_token_id=ids.vision_start,
        vision_end_token_id=ids.vision_end, tie_word_embeddings=True,
    )


def paper_config() -> Qwen2_5_VLConfig:
    """Qwen2.5-VL-7B-Instruct's architecture (§1): text hidden 3584, 28 layers, 28 heads, 4 KV heads,
    mRoPE [16, 24, 24], vocab 152,064; ViT depth 32, hidden 1280, patch 14, merge 2, temporal 2, window 112,
    full attention in blocks 7/15/23/31. For meta-device builds and checks; weights come from
    :func:`load_paper`."""
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
            num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
            bos_token_id=151643, eos_token_id=151645, max_window_layers=28, sliding_window=32768,
            tie_word_embeddings=False,
        ),
        vision_config=dict(
            depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584, patch_size=14,
            spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31],
            tokens_per_second=2, spatial_patch_size=SPATIAL_PATCH_SIZE,
        ),
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
        tie_word_embeddings=False,
    )


def build_tiny_model(seed: int = 0, tokenizer: PreTrainedTokenizerBase | None = None,
                     attn_implementation: str = "sdpa") -> LoadedModel:
    """A random tiny model in memory (weights drawn from ``seed`` without touching the global RNG), its
    tokenizer (built by :func:`rscovlm.tokenizer.build_tiny_tokenizer` unless given) and
    :data:`TINY_IMAGE_SETTINGS`."""
    tokenizer = tokenizer if tokenizer is not None else build_tiny_tokenizer()
    config = tiny_config(tokenizer)
    config._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    ids = TokenIds.of(tokenizer)
    model.generation_config = GenerationConfig(eos_token_id=[ids.im_end, ids.pad], pad_token_id=ids.pad,
                                               bos_token_id=ids.pad, do_sample=False)
    return LoadedModel(model.eval(), tokenizer, TINY_IMAGE_SETTINGS)


def save_pretrained(loaded: LoadedModel, out_dir: str | os.PathLike) -> Path:
    """Write model (safetensors), generation config, tokenizer and ``preprocessor_config.json`` to
    ``out_dir``; :func:`load_pretrained` reads it back."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded.model.save_pretrained(str(out))
    loaded.tokenizer.save_pretrained(str(out))
    loaded.image_settings.save_pretrained(out)
    return out


def build_tiny(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Build the tiny preset (:func:`build_tiny_model`) and save it to ``out_dir``, offline."""
    return save_pretrained(build_tiny_model(seed), out_dir)


def load_pretrained(model_dir: str | os.PathLike, dtype: torch.dtype | str | None = None,
                    attn_implementation: str = "sdpa", **image_overrides: int) -> LoadedModel:
    """Load a Qwen2.5-VL checkpoint from the local directory ``model_dir`` (never the hub, never remote code):
    model, tokenizer (:func:`rscovlm.tokenizer.load_tokenizer`) and image settings from its
    ``preprocessor_config.json``, with ``image_overrides`` (``min_pixels=…``, ``max_pixels=…``) applied.
    ``vision_config.spatial_patch_size`` is set to 14 when the config lacks it. Loading is strict: a missing or
    unexpected weight or a wrong shape raises :class:`rs_shared.hub.WeightsMismatchError` listing them all."""
    path = _checkpoint_dir(model_dir, "checkpoint")
    model = strict_from_pretrained(Qwen2_5_VLForConditionalGeneration.from_pretrained, str(path), dtype=dtype,
                                   attn_implementation=attn_implementation, local_files_only=True)
    if getattr(model.config.vision_config, "spatial_patch_size", None) is None:
        model.config.vision_config.spatial_patch_size = SPATIAL_PATCH_SIZE
    tokenizer = load_tokenizer(path)
    return LoadedModel(model.eval(), tokenizer, ImageSettings.from_pretrained(path, **image_overrides))


def load_paper(model_dir: str | os.PathLike, dtype: torch.dtype | str | None = torch.bfloat16,
               attn_implementation: str = "sdpa", min_pixels: int = PAPER_MIN_PIXELS,
               max_pixels: int = PAPER_MAX_PIXELS) -> LoadedModel:
    """The ``paper`` preset: Qwen2.5-VL-7B-Instruct (or a fine-tuned RSCoVLM) from a local directory, in
    bf16, with the recipe's pixel bounds (§1). Raises ``FileNotFoundError`` explaining how to obtain the
    weights when the directory is absent or incomplete."""
    _checkpoint_dir(model_dir, "Qwen2.5-VL-7B-Instruct")
    return load_pretrained(model_dir, dtype=dtype, attn_implementation=attn_implementation,
                           min_pixels=min_pixels, max_pixels=max_pixels)


def _checkpoint_dir(model_dir: str | os.PathLike, what: str) -> Path:
    path = Path(model_dir)
    hint = (f"expected a local {what} directory with config.json, *.safetensors, the tokenizer files and "
            "preprocessor_config.json (e.g. a copy of Qwen/Qwen2.5-VL-7B-Instruct made where the hub is "
            "reachable); nothing is downloaded")
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist: {hint}")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} is missing: {hint}")
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{config_file}: not a JSON object ({e})") from None
    if model_type != "qwen2_5_vl":
        raise ValueError(f"{config_file}: model_type is {model_type!r}, expected 'qwen2_5_vl'")
    if not any(path.glob("*.safetensors")):
        raise FileNotFoundError(f"{path} holds no *.safetensors weights: {hint}")
    return path


__all__ = [
    "PAPER_IMAGE_SETTINGS", "SPATIAL_PATCH_SIZE", "TINY_IMAGE_SETTINGS", "LoadedModel", "build_tiny",
    "build_tiny_model", "load_paper", "load_pretrained", "paper_config", "save_pretrained", "tiny_config",
]
