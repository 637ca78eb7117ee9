"""CLV-Net (spec §1): VPReasoner (CLIP + HD tiling + region tokens + LLM) → CMDecoder (CGFormer + SAM2 decoder).

One image with a user box B and N grounded phrases flows as (shapes for one image, D = LLM width, C = SAM2 width):

* E_v: CLIP views (1 + h·w, 3, R, R) → patch features → 2×2 merge → rows + separators → φ_l → f_x (n_img, D)
* E_d: RoIAlign of B on the stitched sub-grid patch map (2k × 2k) → 2×2 merge → φ_l (+ box MLP) → f_r (K, D)
* eq. 3–4: the K region tokens replace ``<BOX>``; the LLM reads [f_x, f_p]; f_h = final states at ``[SEG]`` (N, D)
* eqs. 6–9: CGFormer(f_h, f_r) → f_g; P(f_g) → one sparse SAM2 prompt per object (1, N, 1, C)
* SAM2 mask decoder on the SAM2 image features → low-res logits → bilinear to (N, H, W)

Training returns L = L_caption + L_mask + λ·(L_rec + L_csc) (eq. 13) and its parts.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from rs_shared.data.gcg import parse_grounded_caption
from rs_shared.hub import strict_from_pretrained
from torch import nn
from torchvision.ops import roi_align
from transformers import CLIPVisionModel, LlamaForCausalLM, PreTrainedModel, Sam2Model
from transformers import initialization as init
from transformers.utils import ModelOutput

from .cgformer import CGFormer, RelationOutput
from .configuration import CLVNetConfig
from .losses import cross_modal_contrastive_loss, mask_bce, mask_dice, relation_consistency_loss
from .partial_lora import PartialLoRA
from .tokenizer import IM_END


@dataclass
class CLVNetOutput(ModelOutput):
    """Training output: the total loss of eq. 13, its parts, and the mask logits per image ((N_i, H, W))."""

    loss: torch.Tensor | None = None
    loss_caption: torch.Tensor | None = None
    loss_mask: torch.Tensor | None = None
    loss_bce: torch.Tensor | None = None
    loss_dice: torch.Tensor | None = None
    loss_csc: torch.Tensor | None = None
    loss_rec: torch.Tensor | None = None
    pred_masks: list[torch.Tensor] | None = None


@dataclass
class GroundedPrediction:
    """One image's answer: the generated ``text`` (with markup), the cleaned ``caption``, the ``phrases`` in order,
    ``masks`` (N, H, W) bool at the original size (one per ``[SEG]``) and ``mask_scores`` (N,) SAM2's IoU estimate."""

    text: str
    caption: str
    phrases: list[str]
    masks: np.ndarray
    mask_scores: np.ndarray


class SRAlignHeads(nn.Module):
    """§1.4 [RECON]: h_t (D → C) for word states, h_v (C → C) for mask tokens, τ of eq. 10 (stored as log 1/τ), and
    the visual relation projections φ_h^v, φ_v^v (C → C) that build R^v. Training-only."""

    def __init__(self, llm_dim: int, prompt_dim: int, temperature: float):
        super().__init__()
        self.text_head = nn.Linear(llm_dim, prompt_dim)
        self.mask_head = nn.Linear(prompt_dim, prompt_dim)
        self.visual_phi_h = nn.Linear(prompt_dim, prompt_dim)
        self.visual_phi_v = nn.Linear(prompt_dim, prompt_dim)
        self.initial_temperature = temperature
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def scale(self) -> torch.Tensor:
        """1/τ with τ ≥ 0.01."""
        return self.logit_scale.exp().clamp(max=100.0)

    def visual_relation_logits(self, mask_tokens: torch.Tensor) -> torch.Tensor:
        """R^v before the row softmax, from the decoder's mask tokens (N, C)."""
        return self.visual_phi_h(mask_tokens) @ self.visual_phi_v(mask_tokens).T / math.sqrt(mask_tokens.shape[-1])


def merge_2x2(x: torch.Tensor) -> torch.Tensor:
    """(H, W, C) → (H/2, W/2, 4C): each 2×2 neighbourhood concatenated in row-major order (IXC-2.5)."""
    h, w, c = x.shape
    return x.view(h // 2, 2, w // 2, 2, c).permute(0, 2, 1, 3, 4).reshape(h // 2, w // 2, 4 * c)


class CLVNetModel(PreTrainedModel):
    """CLV-Net. Submodules (the names :mod:`clvnet.convert` maps official checkpoints onto): ``vision_tower``
    (CLIPVisionModel), ``vision_proj`` (φ_l), ``global_separator``/``row_separator`` (IXC's glb_GN/sub_GN, in the
    merged 4·C_clip space, projected with the tokens), ``region_box_embed``, ``language_model`` (LlamaForCausalLM,
    peft LoRA injected in place when ``llm_training="lora"``), ``partial_lora`` (IXC-2.5's Partial LoRA),
    ``cgformer``, ``text_projector`` (P), ``sam`` (Sam2Model), ``sralign``."""

    config_class = CLVNetConfig
    main_input_name = "input_ids"
    _supports_sdpa = True

    def __init__(self, config: CLVNetConfig):
        super().__init__(config)
        config.validate_architecture()
        config.require_token_ids()
        clip_dim, dim = config.vision_config.hidden_size, config.text_config.hidden_size
        self.vision_tower = CLIPVisionModel(config.vision_config)
        self.vision_proj = nn.Sequential(nn.Linear(4 * clip_dim, dim), nn.GELU(), nn.Linear(dim, dim))  # φ_l, eq. 1
        self.global_separator = nn.Parameter(torch.zeros(4 * clip_dim))
        self.row_separator = nn.Parameter(torch.zeros(4 * clip_dim))
        self.region_box_embed = (nn.Sequential(nn.Linear(4, dim), nn.GELU(), nn.Linear(dim, dim))
                                 if config.region_box_embed and config.use_box_prompt else None)
        self.language_model = LlamaForCausalLM(config.text_config)
        self.partial_lora = (PartialLoRA(self.language_model.model.layers, config.partial_lora_rank,
                                         config.partial_lora_alpha) if config.partial_lora_rank > 0 else None)
        self.cgformer = (CGFormer(dim, config.cgformer_heads, config.adjacency_threshold, config.adjacency_norm,
                                  config.cgformer_layernorm) if config.use_cgformer else None)
        self.text_projector = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, config.prompt_dim),
                                            nn.Dropout(0.0))
        self.sam = Sam2Model(config.sam_config)
        self.sralign = SRAlignHeads(dim, config.prompt_dim, config.csc_temperature)
        if config.llm_training == "lora":
            self._inject_lora()
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """``PreTrainedModel.from_pretrained``, but strict (:func:`rs_shared.hub.strict_from_pretrained`): a missing
        or unexpected key or a shape mismatch raises :class:`~rs_shared.hub.WeightsMismatchError` listing every
        difference instead of leaving randomly initialised weights (e.g. a directory saved with
        ``llm_training="full"`` loaded as ``"lora"``; converted official weights go through
        :func:`clvnet.convert.build_from_geopixel`)."""
        return strict_from_pretrained(super().from_pretrained, *args, **kwargs)

    def _inject_lora(self) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        c = self.config
        lora = LoraConfig(r=c.lora_r, lora_alpha=c.lora_alpha, lora_dropout=c.lora_dropout,
                          target_modules=list(c.lora_target_modules))
        inject_adapter_in_model(lora, self.language_model)
        for name, module in self.language_model.named_modules():
            if name.endswith("lora_B.default"):
                module.zero_init = True  # peft's init (B = 0); restored by initialize_weights

    def initialize_weights(self) -> None:
        """transformers' initialisation, then the adapters' up-projections (``lora_B`` of peft's LoRA and of Partial
        LoRA, marked ``zero_init``) that were not loaded are set to zero, so a fresh adapter is the identity. (The
        Llama sub-model initialises its own modules, so this cannot live in :meth:`_init_weights`.)"""
        fresh = [m.weight for m in self.modules()
                 if getattr(m, "zero_init", False) and not getattr(m.weight, "_is_hf_initialized", False)]
        super().initialize_weights()
        with torch.no_grad():
            for weight in fresh:
                weight.zero_()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """transformers' rules, plus: the separators start at zero and τ of eq. 10 at its initial value (with
        transformers' guarded ``init`` functions, so loaded weights are never overwritten)."""
        super()._init_weights(module)
        if module is self:
            init.zeros_(self.global_separator)
            init.zeros_(self.row_separator)
        elif isinstance(module, SRAlignHeads):
            init.constant_(module.logit_scale, math.log(1.0 / module.initial_temperature))

    def set_trainable_parameters(self) -> None:
        """§2/§5: with LoRA, the LLM trains only through its adapters and the rows of the new tokens; E_v and the
        SAM2 image encoder follow ``freeze_*``; Partial LoRA is frozen (IXC's); everything else trains."""
        c = self.config
        for p in self.parameters():
            p.requires_grad_(True)
        if c.freeze_vision_tower:
            self.vision_tower.requires_grad_(False)
        if c.freeze_sam_encoder:
            self.sam.vision_encoder.requires_grad_(False)
            self.sam.no_memory_embedding.requires_grad_(False)
        if self.partial_lora is not None:
            self.partial_lora.requires_grad_(False)
        if c.llm_training == "lora":
            for name, p in self.language_model.named_parameters():
                p.requires_grad_("lora_" in name)
            # the new tokens' rows must train: the whole embedding and output matrices do (GeoPixel's choice, §5)
            self.language_model.get_input_embeddings().weight.requires_grad_(True)
            self.language_model.get_output_embeddings().weight.requires_grad_(True)

    # --- VPReasoner -------------------------------------------------------------------------------------------

    def _view_features(self, clip_pixel_values: torch.Tensor) -> torch.Tensor:
        """(V, 3, R, R) → (V, P, P, C_clip): last encoder layer before CLIP's post-layernorm, CLS dropped."""
        hidden = self.vision_tower(pixel_values=clip_pixel_values).last_hidden_state[:, 1:]
        side = self.config.vision_config.image_size // self.config.vision_config.patch_size
        return hidden.reshape(len(hidden), side, side, -1)

    def _with_rows(self, grid: torch.Tensor) -> torch.Tensor:
        """(H, W, 4C) → (H·(W + 1), 4C): a row separator after each token row."""
        sep = self.row_separator.to(grid.dtype).expand(grid.shape[0], 1, -1)
        return torch.cat([grid, sep], dim=1).reshape(-1, grid.shape[-1])

    def encode_images(self, clip_pixel_values: torch.Tensor, image_grids: torch.Tensor, region_boxes: torch.Tensor,
                      box_coords: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Per image: f_x (n_img, D) in IXC order [global view rows, glb separator, sub-grid rows], f_r (K, D) and
        the global view's tokens (T², D) (CGFormer context for ``no_box``/``region+global``)."""
        features = self._view_features(clip_pixel_values)
        patch = self.config.vision_config.patch_size
        out_x, out_r, out_g = [], [], []
        start = 0
        for i, (h, w) in enumerate(image_grids.tolist()):
            views = features[start:start + 1 + h * w]
            start += 1 + h * w
            p, c = views.shape[1], views.shape[-1]
            global_view = merge_2x2(views[0])
            stitched = views[1:].reshape(h, w, p, p, c).permute(0, 2, 1, 3, 4).reshape(h * p, w * p, c)
            tokens = torch.cat([self._with_rows(global_view), self.global_separator.to(views.dtype)[None],
                                self._with_rows(merge_2x2(stitched))])
            out_x.append(self.vision_proj(tokens))
            out_g.append(self.vision_proj(global_view.reshape(-1, 4 * c)))
            if self.config.use_box_prompt:
                out_r.append(self._region_tokens(stitched, region_boxes[i], box_coords[i], patch))
        if start != len(features):
            raise ValueError(f"image_grids account for {start} CLIP views but clip_pixel_values has {len(features)}")
        return out_x, out_r, out_g

    def _region_tokens(self, stitched: torch.Tensor, box: torch.Tensor, coords: torch.Tensor, patch: int):
        """E_d [RECON]: RoIAlign (aligned, sampling ratio 2) of the box on the stitched patch map → 2k × 2k → 2×2
        merge → φ_l (+ MLP of the normalised box) → (K, D)."""
        k2 = 2 * self.config.region_side
        rois = torch.cat([box.new_zeros(1), box.to(stitched.dtype)])[None]
        pooled = roi_align(stitched.permute(2, 0, 1)[None], rois, output_size=k2, spatial_scale=1.0 / patch,
                           sampling_ratio=2, aligned=True)[0].permute(1, 2, 0)
        region = self.vision_proj(merge_2x2(pooled).reshape(-1, 4 * stitched.shape[-1]))
        if self.region_box_embed is not None:
            region = region + self.region_box_embed(coords.to(region.dtype))
        return region

    def embed_inputs(self, input_ids: torch.Tensor, image_tokens: list[torch.Tensor],
                     region_tokens: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings with the ``<IMAGE>`` positions replaced by f_x and the ``<BOX>`` positions by f_r
        (eq. 3); returns ``(inputs_embeds (B, L, D), visual mask (B, L))`` — the Partial-LoRA positions."""
        c = self.config
        is_image, is_box = input_ids == c.image_token_id, input_ids == c.box_token_id
        for name, mask, values in (("<IMAGE>", is_image, image_tokens), ("<BOX>", is_box, region_tokens)):
            counts = mask.sum(1).tolist()
            wanted = [len(v) for v in values] if values else [0] * len(counts)
            if counts != wanted:
                raise ValueError(f"the input_ids hold {counts} {name} tokens per sequence but the images give {wanted}"
                                 " (were image_grids, hd_num and region_tokens the processor's?)")
        embeds = self.language_model.get_input_embeddings()(input_ids.masked_fill(is_image | is_box, 0))
        if image_tokens:
            embeds = embeds.masked_scatter(is_image[..., None], torch.cat(image_tokens).to(embeds.dtype))
        if region_tokens:
            embeds = embeds.masked_scatter(is_box[..., None], torch.cat(region_tokens).to(embeds.dtype))
        return embeds, is_image | is_box

    def _llm_context(self, visual_mask: torch.Tensor | None):
        return self.partial_lora.image_positions(visual_mask) if self.partial_lora is not None \
            else contextlib.nullcontext()

    def llm_hidden_states(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None,
                          visual_mask: torch.Tensor) -> torch.Tensor:
        """Final (post-norm) LLM states (B, L, D)."""
        with self._llm_context(visual_mask):
            return self.language_model.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                             use_cache=False).last_hidden_state

    def seg_positions(self, input_ids: torch.Tensor) -> list[torch.Tensor]:
        """§7.8: per sequence, the positions whose state is an object state f_h — the ``[SEG]`` input tokens
        (``at_token``) or the position before each (``before_token``)."""
        shift = 1 if self.config.seg_state == "before_token" else 0
        return [torch.nonzero(row == self.config.seg_token_id).flatten() - shift for row in input_ids]

    # --- CMDecoder --------------------------------------------------------------------------------------------

    def sam_image_features(self, sam_pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """SAM2 image features [s0 (B, C/8, 4h, 4w), s1 (B, C/4, 2h, 2w), embedding (B, C, h, w)]: the decoder's
        conv_s0/conv_s1 applied, the no-memory embedding added (§1.3). Without gradients when the encoder is frozen
        (GeoPixel: so conv_s0/s1 never train either)."""
        frozen = self.config.freeze_sam_encoder
        with torch.no_grad() if frozen else contextlib.nullcontext():
            output = self.sam.get_image_features(sam_pixel_values, return_dict=True)
        batch = len(sam_pixel_values)
        sizes = self.sam.backbone_feature_sizes
        maps = [f.permute(1, 2, 0).reshape(batch, -1, *size) for f, size in zip(output.fpn_hidden_states, sizes)]
        maps[-1] = maps[-1] + self.sam.no_memory_embedding.reshape(1, -1, 1, 1).to(maps[-1].dtype)
        return maps

    def decode_masks(self, features: list[torch.Tensor], index: int, prompts: torch.Tensor,
                     size: tuple[int, int], box: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One image's N prompts (N, C) → mask logits (N, H, W) at ``size``, predicted IoU (N,), mask tokens (N, C).
        One sparse token per object — followed, with ``sam_box_prompt``, by the prompt encoder's embedding of
        ``box`` (4,) (xyxy pixels of the original image; two corners and SAM2's padding token) — the no-mask dense
        embedding, ``multimask_output=False`` (eval mode applies SAM2's dynamic multimask fallback)."""
        s0, s1, embedding = (f[index:index + 1] for f in features)
        dense = self.sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand_as(embedding)
        sparse = prompts[None, :, None].to(embedding.dtype)
        if self.config.sam_box_prompt:
            if box is None:
                raise ValueError("sam_box_prompt is on but no box was given to decode_masks")
            scale = self.config.sam_image_size / box.new_tensor([size[1], size[0], size[1], size[0]])
            corners, _ = self.sam.prompt_encoder(None, None, (box * scale).expand(1, len(prompts), 4), None)
            sparse = torch.cat([sparse, corners.to(sparse.dtype)], dim=2)
        masks, iou, tokens, _ = self.sam.mask_decoder(
            image_embeddings=embedding, image_positional_embeddings=self.sam.get_image_wide_positional_embeddings(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
            multimask_output=False, high_resolution_features=[s0, s1])
        logits = F.interpolate(masks[0, :, :1].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
        return logits, iou[0, :, 0], tokens[0, :, 0]

    def relate(self, object_states: torch.Tensor, regions: torch.Tensor | None,
               global_tokens: torch.Tensor) -> RelationOutput | None:
        """CGFormer over one image's objects; the context follows ``cgformer_context``/``use_box_prompt``."""
        if self.cgformer is None or len(object_states) == 0:
            return None
        if regions is None:
            context = global_tokens
        elif self.config.cgformer_context == "region+global":
            context = torch.cat([regions, global_tokens])
        else:
            context = regions
        return self.cgformer(object_states, context)

    # --- training ---------------------------------------------------------------------------------------------

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, clip_pixel_values: torch.Tensor,
                image_grids: torch.Tensor, region_boxes: torch.Tensor, box_coords: torch.Tensor,
                sam_pixel_values: torch.Tensor, image_sizes: torch.Tensor, labels: torch.Tensor | None = None,
                gt_masks: list[torch.Tensor] | None = None, boxes: torch.Tensor | None = None,
                **metadata) -> CLVNetOutput:
        """Teacher-forced pass over a collated batch (see :mod:`clvnet.processing`); losses need ``labels`` and
        ``gt_masks``; ``boxes`` (B, 4) original pixels, read with ``sam_box_prompt``. Other batch entries (tile
        ids) are ignored."""
        image_tokens, regions, global_tokens = self.encode_images(clip_pixel_values, image_grids, region_boxes,
                                                                  box_coords)
        embeds, visual = self.embed_inputs(input_ids, image_tokens, regions)
        hidden = self.llm_hidden_states(embeds, attention_mask, visual)
        features = self.sam_image_features(sam_pixel_values)
        zero = hidden.sum() * 0.0
        out = CLVNetOutput(pred_masks=[])
        bce, dice, csc, rec, n_masks = [], [], [], [], 0
        for i, positions in enumerate(self.seg_positions(input_ids)):
            states = hidden[i, positions]  # f_h (N, D)
            if len(states) == 0:
                if gt_masks is not None and len(gt_masks[i]):
                    raise ValueError(f"sample {i}: gt_masks has {len(gt_masks[i])} masks but the answer has no [SEG]")
                out.pred_masks.append(hidden.new_zeros(0, *image_sizes[i].tolist()))
                continue
            relation = self.relate(states, regions[i] if regions else None, global_tokens[i])
            grounded = relation.grounded if relation is not None else states  # f_g (f_h without CGFormer)
            logits, _, mask_tokens = self.decode_masks(features, i, self.text_projector(grounded),
                                                       tuple(image_sizes[i].tolist()),
                                                       None if boxes is None else boxes[i])
            out.pred_masks.append(logits)
            if gt_masks is None:
                continue
            target = gt_masks[i].to(logits.device, logits.dtype)
            if target.shape != logits.shape:
                raise ValueError(f"sample {i}: gt_masks has shape {tuple(target.shape)} but the answer's [SEG] tokens "
                                 f"and the image size give {tuple(logits.shape)}")
            bce.append(mask_bce(logits, target).sum())
            dice.append(mask_dice(logits, target).sum())
            n_masks += len(target)
            if self.config.sralign_weight > 0:
                csc_i, rec_i = self._sralign(hidden[i], input_ids[i], states, mask_tokens, relation)
                csc.append(csc_i)
                rec.append(rec_i)
        if labels is None:
            return out
        c = self.config
        out.loss_caption = self._caption_loss(hidden, labels)
        out.loss_bce = torch.stack(bce).sum() / n_masks if n_masks else zero
        out.loss_dice = torch.stack(dice).sum() / n_masks if n_masks else zero
        out.loss_mask = c.bce_loss_weight * out.loss_bce + c.dice_loss_weight * out.loss_dice
        out.loss_csc = torch.stack(csc).mean() if csc else zero
        out.loss_rec = torch.stack(rec).mean() if rec else zero
        out.loss = (c.caption_loss_weight * out.loss_caption + out.loss_mask
                    + c.sralign_weight * (out.loss_csc + out.loss_rec))  # eq. 13
        return out

    def _caption_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """§1.5: next-token cross-entropy over the supervised answer tokens, logits in fp32."""
        targets = labels[:, 1:]
        keep = targets != -100
        logits = self.language_model.lm_head(hidden[:, :-1][keep]).float()
        return F.cross_entropy(logits, targets[keep]) if keep.any() else hidden.sum() * 0.0

    def _sralign(self, hidden: torch.Tensor, input_ids: torch.Tensor, states: torch.Tensor, mask_tokens: torch.Tensor,
                 relation: RelationOutput | None) -> tuple[torch.Tensor, torch.Tensor]:
        """§1.4 for one image: L_csc over (mask token, phrase words + [SEG] state) and L_rec between R_e and R^v.
        Without CGFormer there is no R_e, so L_rec is 0."""
        c = self.config
        zero = states.sum() * 0.0
        csc = rec = zero
        if c.use_csc:
            opens = torch.nonzero(input_ids == c.p_open_token_id).flatten().tolist()
            closes = torch.nonzero(input_ids == c.p_close_token_id).flatten().tolist()
            if len(opens) == len(closes) == len(states):
                words = [F.normalize(self.sralign.text_head(torch.cat([hidden[a + 1:b], states[j:j + 1]])), dim=-1)
                         for j, (a, b) in enumerate(zip(opens, closes))]
                masks = F.normalize(self.sralign.mask_head(mask_tokens), dim=-1)
                csc = cross_modal_contrastive_loss(masks, words, self.sralign.scale(), reduction=c.csc_reduction,
                                                   include_positive=c.csc_include_positive)
        if c.use_rec and relation is not None:
            rec = relation_consistency_loss(relation.relation_logits.log_softmax(-1),
                                            self.sralign.visual_relation_logits(mask_tokens).log_softmax(-1))
        return csc, rec

    # --- inference --------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate_grounded(self, batch: dict, tokenizer, max_new_tokens: int | None = None) -> list[GroundedPrediction]:
        """§1.6: greedy decoding of each image's answer (until ``</s>`` or the turn's end marker), then one pass over
        prompt + answer to read the ``[SEG]`` states (as in training), CGFormer and SAM2 → masks (logits > 0) at the
        original size. ``tokenizer`` is the processor's (it decodes the answer)."""
        budget = max_new_tokens or self.config.max_new_tokens
        stop = {self.config.eos_token_id, tokenizer.convert_tokens_to_ids(IM_END)}
        image_tokens, regions, global_tokens = self.encode_images(
            batch["clip_pixel_values"], batch["image_grids"], batch["region_boxes"], batch["box_coords"])
        embeds, visual = self.embed_inputs(batch["input_ids"], image_tokens, regions)
        features = self.sam_image_features(batch["sam_pixel_values"])
        results = []
        for i in range(len(embeds)):
            length = int(batch["attention_mask"][i].sum())
            prompt_embeds, prompt_visual = embeds[i:i + 1, :length], visual[i:i + 1, :length]
            answer = self._greedy(prompt_embeds, prompt_visual, budget, stop)
            answer_ids = torch.tensor(answer, dtype=torch.long, device=embeds.device)
            full_embeds = torch.cat([prompt_embeds, self.language_model.get_input_embeddings()(answer_ids)[None]], 1)
            full_visual = F.pad(prompt_visual, (0, len(answer)))
            hidden = self.llm_hidden_states(full_embeds, None, full_visual)[0]
            full_ids = torch.cat([batch["input_ids"][i, :length], answer_ids])
            states = hidden[self.seg_positions(full_ids[None])[0]]
            size = tuple(batch["image_sizes"][i].tolist())
            text = tokenizer.decode(answer, skip_special_tokens=False)
            parsed = parse_grounded_caption(text)
            if len(states):
                relation = self.relate(states, regions[i] if regions else None, global_tokens[i])
                grounded = relation.grounded if relation is not None else states
                logits, scores, _ = self.decode_masks(features, i, self.text_projector(grounded), size,
                                                      batch["boxes"][i] if "boxes" in batch else None)
                masks, scores = (logits > 0).cpu().numpy(), scores.float().cpu().numpy()
            else:
                masks, scores = np.zeros((0, *size), dtype=bool), np.zeros(0, dtype=np.float32)
            results.append(GroundedPrediction(text, parsed.caption, list(parsed.phrases), masks, scores))
        return results

    def _greedy(self, embeds: torch.Tensor, visual: torch.Tensor, budget: int, stop: set[int]) -> list[int]:
        """Greedy answer ids after the prompt, without the stop token (KV cache; new tokens are text, so Partial
        LoRA is off for them)."""
        lm = self.language_model
        with self._llm_context(visual):
            out = lm(inputs_embeds=embeds, use_cache=True, logits_to_keep=1)
        tokens: list[int] = []
        while len(tokens) < budget:
            token = int(out.logits[0, -1].argmax())
            if token in stop:
                break
            tokens.append(token)
            step = lm.get_input_embeddings()(torch.tensor([[token]], device=embeds.device))
            out = lm(inputs_embeds=step, past_key_values=out.past_key_values, use_cache=True)
        return tokens


__all__ = ["CLVNetModel", "CLVNetOutput", "GroundedPrediction", "SRAlignHeads", "merge_2x2"]
