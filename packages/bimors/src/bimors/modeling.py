"""BiMoRS as a transformers ``PreTrainedModel`` (spec §1).

``BiMoRSModel(config)(pixel_values, caption_embeds, class_names=[...]).logits`` → ``(B, C)``. The network:

* a frozen open_clip CLIP (everything, logit scale included) gives the image embedding ``f`` ``(B, E)`` and, through
  a forward hook on ``visual.transformer``, the tokens ``Z`` ``(B, T, V)`` before ``ln_post`` (spec §1.2);
* the caption projection maps the offline caption embedding ``e`` ``(B, 1, 768)`` to ``c`` ``(B, 1, D)`` (§1.4);
* :class:`BiMoRSPromptLearner` turns ``Z`` into the visual key token ``v`` (meta-net on every token, then the mean,
  §1.5) and refines the shared context ``ctx`` ``(M, D)`` by cross-attention over ``[v; c]`` into ``ctx'``
  ``(B, M, D)`` (§1.6);
* every class prompt is ``[SOS] ctx'_b [class tokens] . [EOS]`` and goes through CLIP's frozen text tower with
  injected embeddings, giving ``g`` ``(B, C, E)`` (§1.7); ``logits = 100 · ⟨f_b, g_{b,k}⟩`` (§1.8).

All ``B · C`` prompts run as one batch (in chunks of ``config.text_chunk_size``), cut after the last EOS of the
class list: CLIP's text transformer is causal and only the EOS row is read, so this equals the 77-token result
(spec §8). :meth:`BiMoRSModel.from_clip` loads real CLIP weights from a local open_clip checkpoint.
"""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import open_clip
import torch
import torch.nn.functional as F
from rs_shared.hub import compare_state_dict, strict_from_pretrained
from safetensors.torch import load_file
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration import BiMoRSConfig

CLIP_CHECKPOINT_HINT = (
    "an open_clip state dict (.safetensors, or .bin/.pt/.pth readable with torch.load(weights_only=True)) of the "
    "architecture of config.clip_model; for the paper's OpenAI ViT-B/16: open_clip_model.safetensors of the Hugging "
    "Face repository timm/vit_base_patch16_clip_224.openai (hf download timm/vit_base_patch16_clip_224.openai "
    "open_clip_model.safetensors --local-dir DIR)"
)
_OPENAI_JIT_EXTRAS = ("input_resolution", "context_length", "vocab_size")


@lru_cache(maxsize=4)
def clip_tokenizer(context_length: int) -> open_clip.SimpleTokenizer:
    """open_clip's CLIP BPE tokenizer (vocabulary bundled with open_clip: offline), lower-casing, zero-padded."""
    return open_clip.SimpleTokenizer(context_length=context_length)


def causal_mask(length: int) -> torch.Tensor:
    """CLIP's additive causal attention mask ``(L, L)``: 0 on and below the diagonal, −inf above."""
    return torch.full((length, length), float("-inf")).triu_(1)


@dataclass
class BiMoRSOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, returned with `labels`): mean cross-entropy of the logits.
    logits (`torch.FloatTensor` of shape `(batch_size, num_classes)`): ``logit_scale · cos(f_b, g_{b,k})``.
    image_features (`torch.FloatTensor` of shape `(batch_size, embed_dim)`): L2-normalised CLIP image embedding f.
    text_features (`torch.FloatTensor` of shape `(batch_size, num_classes, embed_dim)`): L2-normalised class
        prompt embeddings g, one set per image.
    context (`torch.FloatTensor` of shape `(batch_size, n_ctx, text_width)`): the refined context ctx'.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    image_features: torch.FloatTensor | None = None
    text_features: torch.FloatTensor | None = None
    context: torch.FloatTensor | None = None


class MetaNet(nn.Module):
    """The meta-net of the visual key token (spec §1.5): ``Linear(V → h) → ReLU → Linear(h → D)``, per token."""

    def __init__(self, vision_width: int, hidden: int, text_width: int):
        super().__init__()
        self.linear1 = nn.Linear(vision_width, hidden)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(hidden, text_width)

    def reset_parameters(self) -> None:
        self.linear1.reset_parameters()
        self.linear2.reset_parameters()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, T, V)`` → ``(B, T, D)``."""
        return self.linear2(self.relu(self.linear1(tokens)))


class CrossAttentionPromptRefiner(nn.Module):
    """One pre-norm cross-attention layer from the context to the key/value tokens (spec §1.6).

    ``ctx' = ctx + MHA(LN_q(ctx), LN_kv(S), LN_kv(S))`` with separate LayerNorms, no FFN, no output norm.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm_q = nn.LayerNorm(width, eps=1e-5)
        self.norm_kv = nn.LayerNorm(width, eps=1e-5)
        self.attn = nn.MultiheadAttention(width, heads, dropout=0.0, batch_first=True)

    def reset_parameters(self) -> None:
        """PyTorch defaults: LN 1/0, in-projection Xavier with zero bias, out-projection kaiming with zero bias."""
        self.norm_q.reset_parameters()
        self.norm_kv.reset_parameters()
        self.attn.out_proj.reset_parameters()
        self.attn._reset_parameters()  # after out_proj: it zeroes the out-projection bias

    def forward(self, context: torch.Tensor, key_value: torch.Tensor) -> torch.Tensor:
        """context ``(B, M, D)``, key_value ``(B, S, D)`` → ``(B, M, D)``."""
        query, memory = self.norm_q(context), self.norm_kv(key_value)
        return context + self.attn(query, memory, memory, need_weights=False)[0]


class BiMoRSPromptLearner(nn.Module):
    """The trainable part (spec §1.9): the shared context, the meta-net and the cross-attention refiner.

    ``ctx`` ``(M, D)`` is initialised by :class:`BiMoRSModel` from CLIP's token embeddings of ``config.ctx_init``.
    """

    def __init__(self, config: BiMoRSConfig, vision_width: int, text_width: int):
        super().__init__()
        self.ctx = nn.Parameter(torch.empty(config.n_ctx, text_width))
        self.meta_net = MetaNet(vision_width, config.meta_hidden, text_width)
        self.refiner = CrossAttentionPromptRefiner(text_width, config.refiner_heads)

    def reset_parameters(self) -> None:
        self.meta_net.reset_parameters()
        self.refiner.reset_parameters()

    def visual_key(self, visual_tokens: torch.Tensor) -> torch.Tensor:
        """v: the meta-net on every token of Z, then the mean over tokens (CLS included).

        ``(B, T, V)`` → ``(B, 1, D)``.
        """
        return self.meta_net(visual_tokens).mean(dim=1, keepdim=True)

    def forward(self, visual_tokens: torch.Tensor, caption_token: torch.Tensor) -> torch.Tensor:
        """ctx' from Z ``(B, T, V)`` and c ``(B, 1, D)``: the refiner over S = [v; c] ``(B, 2, D)`` → ``(B, M, D)``."""
        key_value = torch.cat([self.visual_key(visual_tokens), caption_token], dim=1)
        context = self.ctx.unsqueeze(0).expand(key_value.shape[0], -1, -1)
        return self.refiner(context, key_value)

    @staticmethod
    def construct_prompts(context: torch.Tensor, prefix: torch.Tensor, suffix: torch.Tensor) -> torch.Tensor:
        """P = [prefix; ctx'_b; suffix] for every image and class (spec §1.7).

        context ``(B, M, D)``, prefix ``(C, 1, D)``, suffix ``(C, n − 1 − M, D)`` → ``(B, C, n, D)``.
        """
        B, M, D = context.shape
        C = prefix.shape[0]
        return torch.cat([
            prefix.unsqueeze(0).expand(B, -1, -1, -1),
            context.unsqueeze(1).expand(B, C, M, D),
            suffix.unsqueeze(0).expand(B, -1, -1, -1),
        ], dim=2)


class BiMoRSModel(PreTrainedModel):
    """BiMoRS: CoCoOp-style prompts conditioned on the image and its caption, on a frozen CLIP (spec §0).

    Submodules: ``clip`` (open_clip ``CLIP``, frozen), ``caption_projection`` (``Linear(caption_dim → D)``, frozen
    unless ``config.caption_proj == "trainable"``) and ``prompt_learner`` (:class:`BiMoRSPromptLearner`, trainable).
    Class prompts are built for a class list with :meth:`set_class_names` (or ``forward(class_names=…)``); they are
    non-persistent buffers, so a checkpoint is class-agnostic.
    """

    config_class = BiMoRSConfig
    main_input_name = "pixel_values"

    def __init__(self, config: BiMoRSConfig):
        super().__init__(config)
        self.clip = open_clip.CLIP(**config.clip_config())
        vision_width = self.clip.visual.transformer.width
        text_width = self.clip.transformer.width
        self.caption_projection = nn.Linear(config.caption_dim, text_width)
        self.prompt_learner = BiMoRSPromptLearner(config, vision_width, text_width)
        self.tokenizer = clip_tokenizer(self.clip.context_length)
        self._ctx_init_ids = self.tokenizer.encode(config.ctx_init)  # BPE ids, plain ints (safe on meta)
        if len(self._ctx_init_ids) != config.n_ctx:
            raise ValueError(f"ctx_init {config.ctx_init!r} is {len(self._ctx_init_ids)} BPE tokens; n_ctx is "
                             f"{config.n_ctx}: they must match (the context replaces those tokens of the template)")
        self.class_names: list[str] | None = None
        self.truncate_prompts = True
        for name in ("token_prefix", "token_suffix", "eos_index"):
            self.register_buffer(name, None, persistent=False)
        self.set_trainable_parameters()
        self.post_init()

    # ----------------------------------------------------------------------------------------------------------
    # parameters: trainable set and initialisation
    # ----------------------------------------------------------------------------------------------------------

    def set_trainable_parameters(self) -> None:
        """Only the prompt learner trains (+ the caption projection when ``caption_proj="trainable"``); CLIP, its
        logit scale included, is frozen. Called on construction and after ``from_pretrained``."""
        self.requires_grad_(False)
        self.prompt_learner.requires_grad_(True)
        self.caption_projection.requires_grad_(self.config.caption_proj == "trainable")

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """``PreTrainedModel.from_pretrained``, strict (a missing or unexpected key or a wrong shape raises
        :class:`~rs_shared.hub.WeightsMismatchError` listing them all), then :meth:`set_trainable_parameters`
        (loading makes all trainable)."""
        loaded = strict_from_pretrained(super().from_pretrained, *args, **kwargs)
        (loaded[0] if isinstance(loaded, tuple) else loaded).set_trainable_parameters()
        return loaded

    @classmethod
    def is_custom_code(cls) -> bool:
        """Visit every module on initialisation (the root included): all inits below go through transformers'
        guarded functions, so loaded weights are never overwritten."""
        return False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """open_clip initialises CLIP when it is built; here only what loading does not restore, and our modules.

        * CLIP: the non-persistent causal mask, and the logit scale ``log(config.logit_scale)`` (spec §8: a CLIP built
          without weights has exp = 14.3);
        * the prompt learner: PyTorch's default initialisation (spec §1.6);
        * the root: ctx ← CLIP token embeddings of ``ctx_init`` (positions 1 … M of the prompt), and the caption
          projection at PyTorch's default ``Linear`` initialisation drawn from its own generator
          (``caption_proj_seed``), so it is reproducible however the rest was built.
        """
        if isinstance(module, open_clip.CLIP):
            init.copy_(module.attn_mask, causal_mask(module.attn_mask.shape[0]))
            init.constant_(module.logit_scale, math.log(self.config.logit_scale))
        elif isinstance(module, BiMoRSPromptLearner):
            module.reset_parameters()
        elif module is self:
            init.copy_(self.prompt_learner.ctx, self._ctx_init_embedding())
            weight, bias = self.caption_projection.weight, self.caption_projection.bias
            generator = torch.Generator().manual_seed(self.config.caption_proj_seed)
            bound = 1.0 / math.sqrt(weight.shape[1])  # = kaiming_uniform(a=√5) and nn.Linear's bias rule
            init.copy_(weight, torch.empty(weight.shape).uniform_(-bound, bound, generator=generator))
            init.copy_(bias, torch.empty(bias.shape).uniform_(-bound, bound, generator=generator))

    def _ctx_init_embedding(self) -> torch.Tensor:
        """CLIP token embeddings of the ``ctx_init`` tokens ``(M, D)``."""
        weight = self.clip.token_embedding.weight
        return weight[torch.tensor(self._ctx_init_ids, device=weight.device)].detach().clone()

    # ----------------------------------------------------------------------------------------------------------
    # class prompts
    # ----------------------------------------------------------------------------------------------------------

    def tokenize_prompts(self, class_names: Sequence[str]) -> torch.LongTensor:
        """CLIP token ids ``(C, L)`` of ``template.format(name.replace("_", " "))``, checked against the context."""
        if isinstance(class_names, str) or not class_names or not all(isinstance(n, str) for n in class_names):
            raise ValueError(f"class_names must be a non-empty list of strings, got {class_names!r}")
        texts = [self.config.template.format(name.replace("_", " ")) for name in class_names]
        limit = self.clip.context_length
        for name, text in zip(class_names, texts):
            if len(self.tokenizer.encode(text)) + 2 > limit:
                raise ValueError(f"class {name!r}: the prompt {text!r} is longer than CLIP's {limit} tokens")
        ids = self.tokenizer(texts)
        M = self.config.n_ctx
        expected = torch.tensor(self._ctx_init_ids)
        for name, row in zip(class_names, ids):
            if not torch.equal(row[1:1 + M], expected):
                raise ValueError(f"class {name!r}: tokens 1…{M} of {self.config.template.format(name)!r} are not "
                                 f"ctx_init {self.config.ctx_init!r}; the template must start with ctx_init")
        return ids

    @torch.no_grad()
    def set_class_names(self, class_names: Sequence[str], truncate: bool = True) -> None:
        """Build the frozen class-prompt buffers for a class list (spec §1.7).

        ``token_prefix`` ``(C, 1, D)`` (SOS), ``token_suffix`` ``(C, n − 1 − M, D)`` (class tokens, ".", EOS, pads) and
        ``eos_index`` ``(C,)``. With ``truncate`` the prompts end after the last EOS of the list (``n`` = that + 1),
        otherwise ``n = L = 77``; both give the same features (causal text transformer, only the EOS row is read).
        """
        ids = self.tokenize_prompts(class_names)
        eos_index = ids.argmax(dim=-1)
        if truncate:
            ids = ids[:, : int(eos_index.max()) + 1]
        weight = self.clip.token_embedding.weight
        embedding = self.clip.token_embedding(ids.to(weight.device))  # (C, n, D)
        self.token_prefix = embedding[:, :1].clone()
        self.token_suffix = embedding[:, 1 + self.config.n_ctx:].clone()
        self.eos_index = eos_index.to(weight.device)
        self.class_names, self.truncate_prompts = list(class_names), truncate

    def _require_class_names(self, class_names: Sequence[str] | None) -> None:
        if class_names is not None and list(class_names) != self.class_names:
            self.set_class_names(class_names)
        if self.class_names is None:
            raise ValueError("no class names: call set_class_names([...]) or pass class_names=[...]")

    # ----------------------------------------------------------------------------------------------------------
    # the two towers
    # ----------------------------------------------------------------------------------------------------------

    @property
    def logit_scale(self) -> torch.Tensor:
        """``exp`` of CLIP's frozen logit scale (``config.logit_scale``, 100)."""
        return self.clip.logit_scale.exp()

    def encode_image(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f ``(B, E)`` (L2-normalised CLIP embedding) and Z ``(B, T, V)`` (last block's tokens, before ln_post).

        pixel_values: ``(B, 3, S, S)`` normalised with CLIP's mean/std, ``S`` = the CLIP image size.
        """
        size = self.clip.visual.image_size
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != (3, *size):
            raise ValueError(f"pixel_values must be (B, 3, {size[0]}, {size[1]}) (the CLIP image size), got "
                             f"{tuple(pixel_values.shape)}")
        captured = []
        hook = self.clip.visual.transformer.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            pooled = self.clip.visual(pixel_values.to(self.clip.visual.conv1.weight.dtype))
        finally:
            hook.remove()
        tokens = captured[0]
        if tokens.shape[0] != pixel_values.shape[0]:  # open_clip ≥ 3 returns batch-first from the transformer
            raise RuntimeError(f"visual.transformer returned {tuple(tokens.shape)}, expected batch-first (B, T, V)")
        return F.normalize(pooled, dim=-1), tokens

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """f: L2-normalised CLIP image embeddings ``(B, E)``."""
        return self.encode_image(pixel_values)[0]

    def conditional_context(self, visual_tokens: torch.Tensor, caption_embeds: torch.Tensor) -> torch.Tensor:
        """ctx' ``(B, M, D)`` from Z ``(B, T, V)`` and caption embeddings e, ``(B, caption_dim)`` or ``(B, 1, …)``.

        The caption projection gives c ``(B, 1, D)``; the prompt learner refines ctx over [v; c].
        """
        B, dim = visual_tokens.shape[0], self.config.caption_dim
        if caption_embeds.dim() == 2:
            caption_embeds = caption_embeds.unsqueeze(1)
        if tuple(caption_embeds.shape) != (B, 1, dim):
            raise ValueError(f"caption_embeds must be ({B}, {dim}) or ({B}, 1, {dim}) (one caption embedding per "
                             f"image), got {tuple(caption_embeds.shape)}")
        caption_token = self.caption_projection(caption_embeds.to(self.caption_projection.weight.dtype))  # c
        return self.prompt_learner(visual_tokens, caption_token)

    def encode_prompts(self, context: torch.Tensor) -> torch.Tensor:
        """g: the class prompts with context ``(B, M, D)`` (or a shared ``(M, D)``) through CLIP's text tower.

        Returns L2-normalised features ``(B, C, E)`` (or ``(C, E)`` for a shared context). All ``B · C`` prompts run
        as one batch, in chunks of ``config.text_chunk_size`` sequences.
        """
        if self.class_names is None:
            raise ValueError("no class names: call set_class_names([...]) first")
        shared = context.dim() == 2
        context = context.unsqueeze(0) if shared else context
        B, C = context.shape[0], self.token_prefix.shape[0]
        prompts = BiMoRSPromptLearner.construct_prompts(context, self.token_prefix, self.token_suffix)
        prompts = prompts.flatten(0, 1)  # (B·C, n, D)
        eos_index = self.eos_index.repeat(B)
        step = self.config.text_chunk_size
        features = torch.cat([self._text_tower(prompts[i:i + step], eos_index[i:i + step])
                              for i in range(0, prompts.shape[0], step)])
        features = F.normalize(features, dim=-1).view(B, C, -1)
        return features[0] if shared else features

    def _text_tower(self, prompts: torch.Tensor, eos_index: torch.Tensor) -> torch.Tensor:
        """CLIP's text encoder on injected embeddings ``(N, n, D)`` → EOS rows projected ``(N, E)`` (spec §6.2)."""
        n = prompts.shape[1]
        x = prompts.to(self.clip.transformer.get_cast_dtype()) + self.clip.positional_embedding[:n]
        x = self.clip.transformer(x, attn_mask=self.clip.attn_mask[:n, :n])
        x = self.clip.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eos_index]
        projection = self.clip.text_projection
        return projection(x) if isinstance(projection, nn.Linear) else x @ projection

    def compute_logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """``logit_scale · ⟨f_b, g_{b,k}⟩``: f ``(B, E)`` with g ``(B, C, E)`` or shared ``(C, E)`` → ``(B, C)``."""
        if text_features.dim() == 2:
            return self.logit_scale * image_features @ text_features.t()
        return self.logit_scale * torch.einsum("be,bce->bc", image_features, text_features)

    @torch.no_grad()
    def get_zero_shot_text_features(self, class_names: Sequence[str] | None = None) -> torch.Tensor:
        """Zero-shot CLIP: ``encode_text`` of ``template.format(name)`` (L2-normalised) ``(C, E)``."""
        names = class_names if class_names is not None else self.class_names
        if names is None:
            raise ValueError("no class names: pass class_names=[...] or call set_class_names([...]) first")
        ids = self.tokenize_prompts(names).to(self.clip.token_embedding.weight.device)
        return F.normalize(self.clip.encode_text(ids), dim=-1)

    def forward(
        self,
        pixel_values: torch.Tensor,
        caption_embeds: torch.Tensor,
        labels: torch.Tensor | None = None,
        class_names: Sequence[str] | None = None,
    ) -> BiMoRSOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`): CLIP-normalised images.
        caption_embeds (`torch.FloatTensor` of shape `(batch_size, caption_dim)` or `(batch_size, 1, caption_dim)`):
            the images' caption embeddings (mean-pooled BERT, spec §1.4).
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*): class indices into the class list.
        class_names (`list[str]`, *optional*): the class list; builds the prompt buffers when it differs from the
            current one (see :meth:`set_class_names`).
        """
        self._require_class_names(class_names)
        image_features, visual_tokens = self.encode_image(pixel_values)
        context = self.conditional_context(visual_tokens, caption_embeds)
        text_features = self.encode_prompts(context)
        logits = self.compute_logits(image_features, text_features)
        loss = None
        if labels is not None:
            num_classes = logits.shape[1]
            if labels.shape != logits.shape[:1] or labels.min() < 0 or labels.max() >= num_classes:
                raise ValueError(f"labels must be {logits.shape[0]} class indices in [0, {num_classes}), got "
                                 f"shape {tuple(labels.shape)}, values {labels.tolist()}")
            loss = F.cross_entropy(logits, labels)
        return BiMoRSOutput(loss=loss, logits=logits, image_features=image_features, text_features=text_features,
                            context=context)

    # ----------------------------------------------------------------------------------------------------------
    # real CLIP weights
    # ----------------------------------------------------------------------------------------------------------

    @classmethod
    def from_clip(cls, pretrained: str | os.PathLike, config: BiMoRSConfig | None = None) -> BiMoRSModel:
        """A new model around CLIP weights from a local open_clip checkpoint file; ctx is initialised from them.

        The learnable parts and the caption projection are initialised as in ``BiMoRSModel(config)``. Default
        config: :meth:`BiMoRSConfig.paper`.
        """
        _check_checkpoint_file(pretrained)
        model = cls(config if config is not None else BiMoRSConfig.paper())
        model.load_clip_weights(pretrained)
        return model

    @torch.no_grad()
    def load_clip_weights(self, path: str | os.PathLike) -> None:
        """Load a local open_clip checkpoint into ``clip`` strictly, then re-initialise ctx from its token embeddings.

        The logit scale is kept at ``config.logit_scale`` and the class-prompt buffers are rebuilt if set.
        """
        path = _check_checkpoint_file(path)
        state = _read_state_dict(path)
        expected = self.clip.state_dict()
        if "logit_scale" in state and "logit_scale" in expected:
            state["logit_scale"] = state["logit_scale"].reshape(expected["logit_scale"].shape)
        differences = compare_state_dict(expected, state)
        if differences:
            raise ValueError(f"{path}: not a CLIP checkpoint for clip_model={self.config.clip_model!r} "
                             f"({differences.describe()}); expected {CLIP_CHECKPOINT_HINT}")
        self.clip.load_state_dict(state)
        self.clip.logit_scale.fill_(math.log(self.config.logit_scale))
        self.prompt_learner.ctx.copy_(self._ctx_init_embedding())
        if self.class_names is not None:
            self.set_class_names(self.class_names, truncate=self.truncate_prompts)


def _check_checkpoint_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CLIP checkpoint not found: {path}; expected {CLIP_CHECKPOINT_HINT}. "
                                f"Nothing is downloaded: fetch it once and pass the local file.")
    return path


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or of a plain (weights-only) torch state dict; never unpickles code."""
    if path.suffix == ".safetensors":
        state = load_file(path)
    else:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                if any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist()):
                    raise ValueError(f"{path} is a TorchScript archive (like OpenAI's ViT-B-16.pt), which cannot be "
                                     f"read without executing it; expected {CLIP_CHECKPOINT_HINT}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)  # safe: weights_only
        except Exception as error:  # re-raised with what was expected
            raise ValueError(f"{path}: cannot read it as a weights-only state dict ({error}); "
                             f"expected {CLIP_CHECKPOINT_HINT}") from error
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict of tensors; expected {CLIP_CHECKPOINT_HINT}")
    state = {k.removeprefix("module."): v for k, v in state.items() if k not in _OPENAI_JIT_EXTRAS}
    return state


__all__ = [
    "BiMoRSModel",
    "BiMoRSOutput",
    "BiMoRSPromptLearner",
    "CrossAttentionPromptRefiner",
    "MetaNet",
    "causal_mask",
    "clip_tokenizer",
]
