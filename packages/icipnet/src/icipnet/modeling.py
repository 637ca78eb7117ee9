"""ICIPNet as a transformers ``PreTrainedModel`` (spec §1).

``IcipNetModel(config)(pixel_values, input_ids, attention_mask).logits`` → ``(B, 2, S, S)`` background/foreground
logits at the input resolution ``S = config.image_size``. The network:

* BERT (``transformers.BertModel``, no pooler) encodes the expression once: ``L`` of shape ``(B, N, D)``; its
  embeddings and the layers from ``bert_trainable_layers`` on are frozen;
* a timm Swin Transformer runs stage by stage; after the blocks of stage ``i`` (before the next patch merging)
  :class:`~icipnet.fusion.StageFusion` fuses ``L`` into the visual stream and emits the stage feature
  ``(B, C_i, H_i, H_i)``;
* :class:`~icipnet.decoder.CrossScaleInteraction` and :class:`~icipnet.decoder.Decoder` turn the four features into
  logits on the stage-1 grid, which are resized (bilinear, ``align_corners=True``) to ``S × S``.

:meth:`IcipNetModel.from_backbones` starts training from pretrained Swin (timm safetensors) and BERT weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from rs_shared.hub import KeyDifferences, compare_state_dict, strict_from_pretrained
from safetensors.torch import load_file
from timm.models.swin_transformer import (
    SwinTransformer,
    SwinTransformerBlock,
    WindowAttention,
    window_partition,
    window_reverse,
)
from torch import nn
from transformers import BertModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration import IcipNetConfig
from .decoder import CrossScaleInteraction, Decoder
from .fusion import StageFusion

SWIN_HUB_HINT = (
    "a timm-format safetensors file, e.g. model.safetensors of the Hugging Face Hub repository "
    "timm/swin_base_patch4_window12_384.ms_in22k (hf download timm/swin_base_patch4_window12_384.ms_in22k "
    "model.safetensors --local-dir DIR)"
)
BERT_HUB_HINT = (
    "a transformers directory with config.json and model.safetensors, e.g. "
    "hf download google-bert/bert-base-uncased --local-dir DIR"
)
_BERT_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def build_swin(config: IcipNetConfig) -> SwinTransformer:
    """The timm Swin Transformer of ``config`` (no download), with timm's classifier head and final norm.

    ``always_partition`` keeps the configured window and shift at every stage even when a stage grid is not
    larger than the window (the reference pads instead of shrinking the window).
    """
    return timm.create_model(
        "swin_base_patch4_window12_384", pretrained=False, img_size=config.image_size, patch_size=config.patch_size,
        embed_dim=config.embed_dim, depths=tuple(config.depths), num_heads=tuple(config.num_heads),
        window_size=config.window_size, drop_path_rate=config.drop_path_rate, num_classes=0, always_partition=True,
    )


def swin_block_forward(block: SwinTransformerBlock, x: torch.Tensor) -> torch.Tensor:
    """One timm Swin block with the original Swin padding order: pad, then cyclic shift (spec §1.1).

    timm shifts the unpadded map and pads afterwards. The two agree when the side is a multiple of the window
    (and, at 480², on stage 3's 30-grid) but not on stage 4's 15-grid (window 12, padded to 24): timm's order puts
    rows that wrapped around into the shift-mask region of rows they do not neighbour, the original keeps them in
    a region of their own. The mask is the block's ``attn_mask``, computed on the padded grid like the original's.
    ``(B, H, W, C)`` → ``(B, H, W, C)``.
    """
    _, H, W, C = x.shape
    (wh, ww), (sh, sw) = block.window_size, block.shift_size
    shortcut = x
    x = block.norm1(x)
    pad_h, pad_w = (-H) % wh, (-W) % ww
    x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    if sh or sw:
        x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
    windows = block.attn(window_partition(x, (wh, ww)).view(-1, wh * ww, C), mask=block.attn_mask)
    x = window_reverse(windows.view(-1, wh, ww, C), (wh, ww), H + pad_h, W + pad_w)
    if sh or sw:
        x = torch.roll(x, shifts=(sh, sw), dims=(1, 2))
    x = shortcut + block.drop_path1(x[:, :H, :W])
    return x + block.drop_path2(block.mlp(block.norm2(x)))


@dataclass
class IcipNetOutput(ModelOutput):
    r"""
    logits (`torch.FloatTensor` of shape `(batch_size, 2, image_size, image_size)`):
        Background (channel 0) and foreground (channel 1) logits at the input resolution.
    stage_features (`tuple(torch.FloatTensor)`, returned with `output_features=True`):
        The four stage features ``LayerNorm_i(F_res)``, shapes `(batch_size, C_i, H_i, H_i)`.
    decoder_features (`tuple(torch.FloatTensor)`, returned with `output_features=True`):
        The same after the cross-scale interaction: the decoder's inputs.
    """

    logits: torch.FloatTensor | None = None
    stage_features: tuple[torch.FloatTensor, ...] | None = None
    decoder_features: tuple[torch.FloatTensor, ...] | None = None


class IcipNetModel(PreTrainedModel):
    """ICIPNet (and, with ``use_icip=use_bif=False``, the RMSIN baseline) for referring image segmentation.

    Submodules: ``text_encoder`` (BertModel), ``swin`` (timm Swin without head and final norm), ``fusion``
    (four :class:`~icipnet.fusion.StageFusion`), ``cim`` and ``decoder``.
    """

    config_class = IcipNetConfig
    main_input_name = "pixel_values"
    _supports_sdpa = True  # the only attention transformers dispatches is BERT's

    def __init__(self, config: IcipNetConfig):
        super().__init__(config)
        config.validate_architecture()
        self.text_encoder = BertModel(config.text_config, add_pooling_layer=False)
        self.swin = build_swin(config)
        self.swin.prune_intermediate_layers(indices=len(config.depths), prune_norm=True, prune_head=True)
        self.fusion = nn.ModuleList(StageFusion(config, i) for i in range(len(config.depths)))
        self.cim = CrossScaleInteraction(config)
        self.decoder = Decoder(config)
        self.set_trainable_parameters()
        self.post_init()

    def set_trainable_parameters(self) -> None:
        """Freeze (``requires_grad=False``) what the reference never updates; everything else is trainable.

        * BERT's embeddings and its layers from ``bert_trainable_layers`` on (outside the reference optimiser, §4);
        * the last stage's IIM and gates: that stage's visual stream is never read (the decoder takes ``F_res``),
          so they cannot affect the output. They stay for the reference's structure and parameter count.

        Called on construction and after ``from_pretrained`` (loading recreates the parameters as trainable).
        """
        self.requires_grad_(True)
        text = self.text_encoder
        last = self.fusion[-1]
        frozen = [text.embeddings, *text.encoder.layer[self.config.bert_trainable_layers:],
                  last.iim, last.fusion_gate, last.visual_gate]
        for module in frozen:
            module.requires_grad_(False)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """``PreTrainedModel.from_pretrained``, strict (a missing or unexpected key or a wrong shape raises
        :class:`~rs_shared.hub.WeightsMismatchError` listing them all), then :meth:`set_trainable_parameters`."""
        loaded = strict_from_pretrained(super().from_pretrained, *args, **kwargs)
        (loaded[0] if isinstance(loaded, tuple) else loaded).set_trainable_parameters()
        return loaded

    @classmethod
    def is_custom_code(cls) -> bool:
        """Initialise like a model of the library: visit every module, parameter-free containers included.

        transformers skips the containers of models defined outside the library (in case their init writes
        loaded weights in place); here every init goes through transformers' guarded functions (``torch.nn.init``
        is guarded during initialisation), and the containers' ``reset_parameters`` carry rules of spec §1.8.
        """
        return False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Spec §1.8. Runs children first, so a module's ``reset_parameters`` overrides the generic rules below it.

        Generic rules: every ``Linear`` trunc-normal (std 0.02) with zero bias (the reference's backbone rule,
        covering Swin, the fusion and CIM); convolutions keep PyTorch's defaults; LayerNorm/BatchNorm weight 1,
        bias 0. Swin's relative-position tables are trunc-normal (0.02) and its index/mask buffers are rebuilt.
        Package modules with ``reset_parameters`` (prompts, λ, the xavier BIF projections, the default-initialised
        PWAM projections, DyT, ARC …) then apply their own. BERT initialises itself (it is a ``PreTrainedModel``).
        """
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.Conv1d, nn.Conv2d)):
            module.reset_parameters()  # PyTorch's default; the init functions are guarded against loaded weights
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d)):
            if module.weight is not None:
                init.ones_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
            if getattr(module, "running_mean", None) is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, WindowAttention):
            init.trunc_normal_(module.relative_position_bias_table, std=0.02)
            module.init_non_persistent_buffers()
        elif isinstance(module, SwinTransformerBlock):
            module.init_non_persistent_buffers()
        elif hasattr(module, "reset_parameters") and type(module).__module__.startswith("icipnet."):
            module.reset_parameters()

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """BERT's last hidden state ``L`` ``(B, N, D)`` (padded positions included; they are masked later)."""
        return self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_features: bool = False,
    ) -> IcipNetOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`):
            Normalised RGB images (ImageNet mean/std) at exactly `config.image_size`.
        input_ids (`torch.LongTensor` of shape `(batch_size, N)`): BERT token ids, right-padded.
        attention_mask (`torch.LongTensor` of shape `(batch_size, N)`, *optional*): 1 for real tokens, 0 for padding.
        output_features (`bool`): also return the stage features and the decoder inputs.
        """
        size = self.config.image_size
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != (3, size, size):
            raise ValueError(
                f"ICIPNet takes images of shape (B, 3, {size}, {size}) (config.image_size; the BIF token mixer and "
                f"CIM are built for it), got {tuple(pixel_values.shape)}; resize the images to {size}×{size}"
            )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        text = self.encode_text(input_ids, attention_mask)  # L (B, N, D)
        mask = attention_mask.to(text.dtype)

        x = self.swin.patch_embed(pixel_values)  # (B, H_1, W_1, C_1) NHWC
        stage_features = []
        for stage, fusion in zip(self.swin.layers, self.fusion):
            x = stage.downsample(x)  # timm merges at the start of a stage (identity for stage 1)
            for block in stage.blocks:
                x = swin_block_forward(block, x)
            x, feature = fusion(x, text, mask)  # (B, H_i, W_i, C_i), (B, C_i, H_i, W_i)
            stage_features.append(feature)

        decoder_features = self.cim(stage_features)
        logits = self.decoder(decoder_features)  # (B, 2, H_1, W_1)
        logits = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=True)
        if not output_features:
            return IcipNetOutput(logits=logits)
        return IcipNetOutput(
            logits=logits, stage_features=tuple(stage_features), decoder_features=tuple(decoder_features)
        )

    @classmethod
    def from_backbones(cls, config: IcipNetConfig, swin: str | os.PathLike, bert: str | os.PathLike) -> IcipNetModel:
        """A new model with pretrained Swin and BERT weights and everything else randomly initialised.

        ``swin``: a safetensors file in timm's layout (the classifier head and final norm it may hold are
        ignored). ``bert``: a local transformers directory of a BertModel with the architecture of
        ``config.text_config`` (a pooler or pretraining heads are ignored). Keys are checked strictly: any other
        missing or unexpected key raises a ValueError that lists them.
        """
        swin, bert = Path(swin), Path(bert)
        if not swin.is_file():
            raise FileNotFoundError(f"Swin weights not found: {swin}; expected {SWIN_HUB_HINT}")
        if not (bert / "config.json").is_file() or not any((bert / name).is_file() for name in _BERT_WEIGHT_FILES):
            raise FileNotFoundError(
                f"BERT weights not found: {bert} needs config.json and one of {', '.join(_BERT_WEIGHT_FILES)}; "
                f"expected {BERT_HUB_HINT}"
            )
        model = cls(config)
        model.load_swin_weights(swin)
        model.load_bert_weights(bert)
        return model

    def load_swin_weights(self, path: str | os.PathLike) -> None:
        """Load a timm-format Swin safetensors file strictly (head, final norm and index/mask buffers ignored)."""
        path = Path(path)
        state = {
            k: v for k, v in load_file(path).items()
            if not k.startswith(("head.", "norm.")) and not k.endswith(("relative_position_index", "attn_mask"))
        }
        differences = compare_state_dict(self.swin.state_dict(), state)
        if differences:
            raise ValueError(f"{path}: not a Swin checkpoint for this config ({differences.describe()}); "
                             f"expected {SWIN_HUB_HINT}")
        self.swin.load_state_dict(state)

    def load_bert_weights(self, directory: str | os.PathLike) -> None:
        """Load BERT from a local transformers directory, strictly (pooler and pretraining heads ignored)."""
        directory = Path(directory)
        bert, info = BertModel.from_pretrained(
            directory, local_files_only=True, add_pooling_layer=False, output_loading_info=True
        )
        fields = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "max_position_embeddings", "type_vocab_size")
        problems = [f"{f} {getattr(bert.config, f)} in the file, {getattr(self.config.text_config, f)} in the config"
                    for f in fields if getattr(bert.config, f) != getattr(self.config.text_config, f)]
        extras = [k for k in info["unexpected_keys"] if not k.startswith(("pooler.", "cls.", "bert.pooler."))]
        problems += KeyDifferences.from_loading_info({**info, "unexpected_keys": extras}).lines()
        if problems:
            raise ValueError(f"{directory}: not a BERT checkpoint for config.text_config ({'; '.join(problems)})")
        self.text_encoder.load_state_dict(bert.state_dict())


__all__ = ["IcipNetModel", "IcipNetOutput", "build_swin", "swin_block_forward"]
