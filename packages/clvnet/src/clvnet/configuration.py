"""CLV-Net configuration: the three backbones, every open decision of the spec as a field, and the presets.

``CLVNetConfig.paper()`` is the IXC-2.5/GeoPixel stack the spec chooses (§1.2 [RECON]): CLIP ViT-L/14 at 560 px
with HD tiling (hd_num 9), an InternLM2-7B-sized LLM in Llama layout (weights through :mod:`clvnet.convert`) with
IXC's Partial LoRA, LoRA r 8 / α 8, and SAM2-Hiera-L. ``CLVNetConfig.tiny()`` is the same network at toy widths
that trains from scratch on CPU (so it trains the whole model instead of LoRA + heads, see ``llm_training``).
One classmethod per ablation row of the paper (Tables II–V) returns the paper preset with that switch.

Fields marked [RECON] fill the paper's gaps with the spec's defaults (``shared/specs/clvnet.md`` §8).
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import CLIPVisionConfig, LlamaConfig, PreTrainedConfig, Sam2Config

TOKEN_ID_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id", "seg_token_id", "p_open_token_id",
                   "p_close_token_id", "box_token_id", "image_token_id")


@strict
class CLVNetConfig(PreTrainedConfig):
    r"""
    vision_config (`dict | CLIPVisionConfig`): the frozen global encoder E_v (its ``image_size`` is the HD view R).
    text_config (`dict | LlamaConfig`): the LLM (Llama layout; InternLM2 weights are rewritten into it).
    sam_config (`dict | Sam2Config`): the grounding image encoder and mask decoder.
    hd_num (`int`): IXC-2.5 HD tiling budget (sub-views per image; 9 for training from IXC-2.5, 1 for fine-tuning).
    region_tokens (`int`): K, region tokens that replace ``<BOX>`` (RoIAlign to 2k × 2k, 2×2 merge → k × k).
    region_box_embed (`bool`): [RECON] add MLP(4 → D) of the normalised box to every region token.
    use_box_prompt (`bool`): False is the "w/o prompt box" ablation (no ``<BOX>``; CGFormer attends to the
        global view instead of the region tokens).
    box_union_prob, box_jitter (`float`): [RECON] §8 training box rule: with this probability the union box of all
        phrase masks, else one random phrase's box jittered by up to ± this fraction of its size.
    box_targets (`str`): [RECON] §8 open decision, what the answer to a box describes: ``"full"`` (the tile's
        holistic caption and every phrase mask, whatever the box; GeoPixelD has nothing else) or ``"in_box"`` (a
        box-conditioned caption: only the phrases inside the box, from the tiles' ``regions``; the box is the
        region's). Data loading, training and ``clvnet-eval`` follow it.
    sam_box_prompt (`bool`): [RECON] also give the box prompt to the SAM2 prompt encoder (its two corner tokens
        after each object's [SEG] prompt token); off in the spec (§1.3: one sparse token per object).
    partial_lora_rank, partial_lora_alpha (`int`): IXC-2.5's frozen Partial LoRA on every LLM linear, applied at
        image and region positions only; rank 0 = absent.
    llm_training (`str`): ``"lora"`` (the paper: peft LoRA on the LLM, new-token rows and heads trainable) or
        ``"full"`` (every LLM weight trains; for the randomly initialised tiny preset).
    lora_r, lora_alpha, lora_dropout, lora_target_modules: peft LoRA (§1.2: α 8 [PAPER], r 8 [RECON]).
    freeze_vision_tower, freeze_sam_encoder (`bool`): keep E_v / the SAM2 image encoder fixed (the paper: both).
    use_cgformer (`bool`): False is "w/o CGFormer": f_g := f_h (GeoPixel's path).
    cgformer_heads (`int`): [RECON] heads of the eq. 6 cross-attention.
    cgformer_context (`str`): [RECON] eq. 6 keys/values: ``"region"`` (as written) or ``"region+global"``.
    adjacency_threshold (`float | None`): [RECON] τ_A of A_o = [R_e > τ_A]; None = 1/N.
    adjacency_norm (`bool`): [RECON] divide the rows of A_o by max(1, degree) (off = literal).
    cgformer_layernorm (`bool`): [RECON] LayerNorm before φ_o/φ_e (off = literal).
    seg_state (`str`): §7.8 the [SEG] state ``"at_token"`` (GeoPixel) or ``"before_token"`` (LISA/GLaMM).
    bos_position (`str`): ``"before_image"`` (inference layout) or ``"after_image"`` (GeoPixel training quirk).
    sralign_weight (`float`): λ of eq. 13.
    use_csc, use_rec (`bool`): the two SRAlign terms (Table IV).
    csc_reduction (`str`): [RECON] ``"mean"`` over objects or ``"sum"`` (literal eq. 10).
    csc_include_positive (`bool`): [RECON] keep the positive in the eq. 10 denominator (False = literal).
    csc_temperature (`float`): initial τ of eq. 10 (learnable, clamped at ≥ 0.01).
    caption_loss_weight, bce_loss_weight, dice_loss_weight (`float`): GeoPixel's 1 / 2 / 0.5 (§1.5).
    max_new_tokens (`int`): generation budget (GLaMM evaluates with 512; GeoPixel's demo 300).
    *_token_id: ids of the special tokens in the tokenizer saved with the model (see :mod:`clvnet.tokenizer`).
    """

    model_type = "clvnet"
    sub_configs_defaults = {"vision_config": CLIPVisionConfig, "text_config": LlamaConfig, "sam_config": Sam2Config}
    _sub_config_classes = {"vision_config": CLIPVisionConfig, "text_config": LlamaConfig, "sam_config": Sam2Config}

    vision_config: dict | CLIPVisionConfig | None = None
    text_config: dict | LlamaConfig | None = None
    sam_config: dict | Sam2Config | None = None
    hd_num: int = 9
    region_tokens: int = 4
    region_box_embed: bool = True
    use_box_prompt: bool = True
    box_union_prob: float = 0.5
    box_jitter: float = 0.1
    box_targets: str = "full"
    sam_box_prompt: bool = False
    partial_lora_rank: int = 256
    partial_lora_alpha: int = 256
    llm_training: str = "lora"
    lora_r: int = 8
    lora_alpha: int = 8
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                        "up_proj", "down_proj")
    freeze_vision_tower: bool = True
    freeze_sam_encoder: bool = True
    use_cgformer: bool = True
    cgformer_heads: int = 32
    cgformer_context: str = "region"
    adjacency_threshold: float | None = None
    adjacency_norm: bool = False
    cgformer_layernorm: bool = False
    seg_state: str = "at_token"
    bos_position: str = "before_image"
    sralign_weight: float = 1.0
    use_csc: bool = True
    use_rec: bool = True
    csc_reduction: str = "mean"
    csc_include_positive: bool = False
    csc_temperature: float = 0.07
    caption_loss_weight: float = 1.0
    bce_loss_weight: float = 2.0
    dice_loss_weight: float = 0.5
    max_new_tokens: int = 512
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    seg_token_id: int | None = None
    p_open_token_id: int | None = None
    p_close_token_id: int | None = None
    box_token_id: int | None = None
    image_token_id: int | None = None

    def __post_init__(self, **kwargs):
        for name, cls in self._sub_config_classes.items():
            value = getattr(self, name)
            setattr(self, name, cls() if value is None else cls(**value) if isinstance(value, dict) else value)
        self.lora_target_modules = list(self.lora_target_modules)
        super().__post_init__(**kwargs)

    def validate_architecture(self) -> None:
        """Reject settings the network cannot be built with (called by the model)."""
        choices = {"llm_training": ("lora", "full"), "cgformer_context": ("region", "region+global"),
                   "seg_state": ("at_token", "before_token"), "bos_position": ("before_image", "after_image"),
                   "csc_reduction": ("mean", "sum"), "box_targets": ("full", "in_box")}
        for field, allowed in choices.items():
            if getattr(self, field) not in allowed:
                raise ValueError(f"CLVNetConfig.{field} must be one of {allowed}, got {getattr(self, field)!r}")
        if self.sam_box_prompt and not self.use_box_prompt:
            raise ValueError("CLVNetConfig.sam_box_prompt needs use_box_prompt (there is no box to give SAM2)")
        side = self.region_side
        if side * side != self.region_tokens:
            raise ValueError(f"region_tokens must be a square k² (RoIAlign to 2k × 2k, 2×2 merge), got "
                             f"{self.region_tokens}")
        if self.vision_config.image_size % (2 * self.vision_config.patch_size):
            raise ValueError(f"vision image_size {self.vision_config.image_size} must be a multiple of 2 × patch_size "
                             f"({2 * self.vision_config.patch_size}) for the 2×2 token merge")
        if self.text_config.hidden_size % self.cgformer_heads:
            raise ValueError(f"cgformer_heads {self.cgformer_heads} must divide the LLM width "
                             f"{self.text_config.hidden_size}")

    def require_token_ids(self) -> None:
        """The model needs the tokenizer's special-token ids; raise naming the missing ones."""
        missing = [f for f in TOKEN_ID_FIELDS if getattr(self, f) is None]
        if missing:
            raise ValueError(f"CLVNetConfig lacks the token ids {missing}: build it with the tokenizer's ids "
                             "(clvnet.tokenizer.TokenIds.of(tokenizer).config_kwargs())")

    @property
    def region_side(self) -> int:
        """k: the region tokens form a k × k grid."""
        return round(self.region_tokens ** 0.5)

    @property
    def view_tokens_side(self) -> int:
        """T: merged tokens per side of one HD view (patches per side / 2)."""
        return self.vision_config.image_size // self.vision_config.patch_size // 2

    @property
    def sam_image_size(self) -> int:
        """S: side of the square SAM2 input."""
        return self.sam_config.vision_config.backbone_config.image_size[0]

    @property
    def prompt_dim(self) -> int:
        """Width of the SAM2 sparse prompt tokens (256 for the released SAM2)."""
        return self.sam_config.mask_decoder_config.hidden_size

    # --- presets ---------------------------------------------------------------------------------------------

    @classmethod
    def paper(cls, **overrides) -> CLVNetConfig:
        """§6 ``paper``: IXC-2.5 (CLIP ViT-L/14 at 560, hd_num 9; InternLM2-7B as Llama, 92544 + new tokens;
        Partial LoRA r 256) + SAM2-Hiera-L, K = 4, CGFormer with 32 heads, LoRA r 8 / α 8."""
        vision = dict(image_size=560, patch_size=14, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                      num_attention_heads=16, projection_dim=768)
        text = dict(vocab_size=92544, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768, rms_norm_eps=1e-5,
                    rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1_000_000.0})
        return cls(**{"vision_config": vision, "text_config": text, "sam_config": _sam2_hiera_large(), **overrides})

    @classmethod
    def paper_1p8b(cls, **overrides) -> CLVNetConfig:
        """Table II "LLM 1.8B": InternLM2.5-1.8B (D = 2048, 24 layers, 16 heads, 8 KV heads); no IXC counterpart,
        so no Partial LoRA and the projector trains from scratch."""
        text = dict(vocab_size=92544, hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
                    num_attention_heads=16, num_key_value_heads=8, max_position_embeddings=32768, rms_norm_eps=1e-5,
                    rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1_000_000.0})
        return cls.paper(**{"text_config": text, "partial_lora_rank": 0, "cgformer_heads": 16, **overrides})

    @classmethod
    def no_box(cls, **overrides) -> CLVNetConfig:
        """Table II "w/o prompt box"."""
        return cls.paper(**{"use_box_prompt": False, **overrides})

    @classmethod
    def no_cgformer(cls, **overrides) -> CLVNetConfig:
        """Table III "w/o CGFormer"."""
        return cls.paper(**{"use_cgformer": False, **overrides})

    @classmethod
    def sralign_ablation(cls, name: str, **overrides) -> CLVNetConfig:
        """Tables IV–V: ``"lambda0"``, ``"lambda0.5"``, ``"lambda5"``, ``"csc_only"``, ``"rec_only"``."""
        rows = {"lambda0": {"sralign_weight": 0.0}, "lambda0.5": {"sralign_weight": 0.5},
                "lambda5": {"sralign_weight": 5.0}, "csc_only": {"use_rec": False}, "rec_only": {"use_csc": False}}
        if name not in rows:
            raise ValueError(f"unknown SRAlign ablation {name!r}; choose from {sorted(rows)}")
        return cls.paper(**{**rows[name], **overrides})

    @classmethod
    def tiny(cls, **overrides) -> CLVNetConfig:
        """Toy widths for CPU tests and synthetic 128² tiles, trained from scratch (whole model, no LoRA).

        CLIP 112 px / patch 14 (4 × 4 merged tokens per view, hd_num 1 → 41 image tokens), a 2-layer Llama of
        width 128, SAM2 with the spec §6 verified tiny Hiera at 128 px (32² low-res masks). Token ids must come
        from the tokenizer (``TokenIds.config_kwargs()``) and ``text_config.vocab_size`` from its length.

        L_csc keeps the positive in its denominator (ordinary InfoNCE, ≥ 0): the literal eq. 10 with a learnable τ
        is unbounded below — in a from-scratch run it fell to −20 within 200 steps, τ hit its clamp and the masks
        stopped learning.
        """
        vision = dict(image_size=112, patch_size=14, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, projection_dim=64)
        text = dict(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, rms_norm_eps=1e-5)
        defaults = dict(vision_config=vision, text_config=text, sam_config=_sam2_tiny(), hd_num=1,
                        partial_lora_rank=0, llm_training="full", freeze_vision_tower=False,
                        freeze_sam_encoder=False, cgformer_heads=4, max_new_tokens=160,
                        csc_include_positive=True)
        return cls(**{**defaults, **overrides})


def _sam2_hiera_large() -> dict:
    """SAM2-Hiera-L at 1024² (``facebook/sam2-hiera-large``): Hiera 144-d, stages (2, 6, 36, 4)."""
    backbone = dict(model_type="sam2_hiera_det_model", hidden_size=144, num_attention_heads=2, blocks_per_stage=[2, 6, 36, 4],
                    embed_dim_per_stage=[144, 288, 576, 1152], num_attention_heads_per_stage=[2, 4, 8, 16],
                    window_size_per_stage=[8, 4, 16, 8], global_attention_blocks=[23, 33, 43],
                    window_positional_embedding_background_size=[7, 7], image_size=[1024, 1024])
    vision = dict(backbone_config=backbone, backbone_channel_list=[1152, 576, 288, 144])
    return dict(vision_config=vision)


def _sam2_tiny() -> dict:
    """Spec §6's verified tiny SAM2 (128 px input, ~0.35 M parameters, 32² low-res masks)."""
    backbone = dict(model_type="sam2_hiera_det_model", hidden_size=16, num_attention_heads=1, blocks_per_stage=[1, 1, 2, 1],
                    embed_dim_per_stage=[16, 32, 64, 128], num_attention_heads_per_stage=[1, 1, 1, 1],
                    window_size_per_stage=[4, 2, 2, 2], global_attention_blocks=[3],
                    window_positional_embedding_background_size=[2, 2], image_size=[128, 128])
    vision = dict(backbone_config=backbone, backbone_channel_list=[128, 64, 32, 16],
                  backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]], fpn_hidden_size=32)
    prompt = dict(hidden_size=32, image_size=128, patch_size=16)
    # The multimask tokens are never trained from scratch (training uses token 0, §1.3), so SAM2's eval-mode
    # fallback to them would swap a trained mask for an untrained one: off for the tiny preset.
    decoder = dict(hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=32,
                   dynamic_multimask_via_stability=False)
    return dict(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


__all__ = ["CLVNetConfig", "TOKEN_ID_FIELDS"]
