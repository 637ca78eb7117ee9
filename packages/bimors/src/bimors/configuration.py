"""BiMoRS configuration: the frozen CLIP, the prompt learner's sizes and the parity switches, and two presets.

``BiMoRSConfig.paper()`` is the network of the official code (spec §1): OpenAI CLIP ViT-B/16 with QuickGELU,
M = 4 context tokens initialised from "a photo of a", a meta-net 768 → 48 → 512, one 4-head cross-attention
refiner and a 768 → 512 caption projection. ``BiMoRSConfig.tiny()`` is the same network around a toy CLIP
(inline open_clip model config) that builds and runs on a CPU in well under a second; it keeps CLIP's BPE
vocabulary and context length, so open_clip's bundled tokenizer works offline.
"""

from __future__ import annotations

import copy

import open_clip
from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

CAPTION_PROJ_MODES = ("frozen", "trainable")
# Only the OpenAI-style CLIP class exposes what the prompt learner needs: a ViT with ``visual.transformer``
# (the pre-ln_post tokens Z) and a causal text tower with argmax (EOS) pooling (spec §1.2, §6.2).
_UNSUPPORTED_CLIP_KEYS = {
    "": ("custom_text", "multimodal_cfg"),
    "vision_cfg": ("timm_model_name",),
    "text_cfg": ("hf_model_name", "hf_tokenizer_name"),
}


@strict
class BiMoRSConfig(PreTrainedConfig):
    r"""
    clip_model (`str | dict`): the frozen CLIP, as an open_clip built-in model name (``"ViT-B-16-quickgelu"``) or an
        inline open_clip model config (``{"embed_dim", "quick_gelu", "vision_cfg", "text_cfg"}``). It is built without
        weights; :meth:`~bimors.BiMoRSModel.from_clip` loads a local checkpoint into it.
    n_ctx (`int`): learnable context tokens M.
    ctx_init (`str`): the words whose CLIP token embeddings initialise the context; must be M BPE tokens and the
        first M tokens of ``template``.
    template (`str`): class prompt, ``{}`` is the class name ("_" replaced by a space); the context replaces the
        tokens at positions 1 … M.
    meta_hidden (`int`): hidden width of the meta-net (visual key token), ``V → meta_hidden → D``.
    refiner_heads (`int`): heads of the cross-attention prompt refiner (embed dim = CLIP text width D).
    caption_dim (`int`): width of the caption embedding (mean-pooled bert-base-uncased: 768).
    caption_proj (`str`): ``"frozen"`` — the official random caption projection, never trained (parity; unlike the
        official code it is saved with the model); ``"trainable"`` — the clean variant, trained with the prompts.
    caption_proj_seed (`int`): seed of the caption projection's PyTorch-default initialisation (its own generator,
        so it does not depend on the order in which other modules are built).
    logit_scale (`float`): ``exp`` of CLIP's frozen logit scale; logits are ``logit_scale · cos`` (100 for OpenAI CLIP).
    text_chunk_size (`int`): most prompt sequences per text-encoder call (``B · C`` prompts are split into chunks).
    """

    model_type = "bimors"

    clip_model: str | dict = "ViT-B-16-quickgelu"
    n_ctx: int = 4
    ctx_init: str = "a photo of a"
    template: str = "a photo of a {}."
    meta_hidden: int = 48
    refiner_heads: int = 4
    caption_dim: int = 768
    caption_proj: str = "frozen"
    caption_proj_seed: int = 0
    logit_scale: float = 100.0
    text_chunk_size: int = 4096

    def validate_architecture(self):
        """Reject settings the network cannot be built with (run by ``@strict`` on construction)."""
        super().validate_architecture()
        clip = self.clip_config()  # raises for an unknown name
        found = [f"{section}.{key}" if section else key for section, keys in _UNSUPPORTED_CLIP_KEYS.items()
                 for key in keys if (clip.get(section, {}) if section else clip).get(key)]
        if found:
            raise ValueError(f"clip_model: BiMoRS needs an OpenAI-style CLIP (ViT image tower, causal text tower with "
                             f"the CLIP BPE tokenizer); the model config sets {found}")
        width = self.text_width
        if self.n_ctx < 1:
            raise ValueError(f"n_ctx must be ≥ 1, got {self.n_ctx}")
        if width % self.refiner_heads:
            raise ValueError(f"refiner_heads {self.refiner_heads} must divide the CLIP text width {width}")
        if self.caption_proj not in CAPTION_PROJ_MODES:
            raise ValueError(f"caption_proj must be one of {CAPTION_PROJ_MODES}, got {self.caption_proj!r}")
        if self.template.count("{}") != 1:
            raise ValueError(f"template must contain exactly one '{{}}' for the class name, got {self.template!r}")
        if self.logit_scale <= 0 or self.text_chunk_size < 1 or self.meta_hidden < 1 or self.caption_dim < 1:
            raise ValueError("logit_scale, text_chunk_size, meta_hidden and caption_dim must be positive")

    def clip_config(self) -> dict:
        """The open_clip model config of ``clip_model`` (a copy): ``embed_dim``, ``vision_cfg``, ``text_cfg`` …"""
        if isinstance(self.clip_model, dict):
            return copy.deepcopy(self.clip_model)
        config = open_clip.get_model_config(self.clip_model)
        if config is None:
            raise ValueError(f"clip_model {self.clip_model!r} is not an open_clip built-in model name "
                             f"(see open_clip.list_models()); pass a name or an open_clip model-config dict")
        return config

    @property
    def text_width(self) -> int:
        """D: CLIP text width = width of the context tokens, the refiner and the caption/visual key tokens."""
        return self.clip_config()["text_cfg"].get("width", 512)

    @property
    def context_length(self) -> int:
        """L: CLIP text context length (77)."""
        return self.clip_config()["text_cfg"].get("context_length", 77)

    @classmethod
    def paper(cls, **overrides) -> BiMoRSConfig:
        """The official network (spec §1): OpenAI CLIP ViT-B/16 (QuickGELU), M = 4, meta-net 768 → 48 → 512."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides) -> BiMoRSConfig:
        """A toy CLIP (32² images, patch 8, two-layer towers of width 64/32, joint dim 48) for CPU tests.

        The text tower keeps CLIP's vocabulary (49,408) and context (77) so the real BPE tokenizer applies. Text
        width (32) and joint dim (48) differ on purpose: they are different quantities in the paper's shapes.
        ``caption_dim`` is 64, the width of the tiny synthetic caption BERT
        (:func:`bimors.synthetic_captions.ensure_synthetic_caption_cache`) instead of BERT-base's 768.
        """
        clip = {
            "embed_dim": 48,
            "quick_gelu": True,
            "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
        }
        return cls(**{"clip_model": clip, "meta_hidden": 16, "caption_dim": 64, **overrides})


__all__ = ["BiMoRSConfig", "CAPTION_PROJ_MODES"]
