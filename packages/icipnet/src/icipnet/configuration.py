"""ICIPNet configuration: every size of the network, the paper/code switches, and two presets.

``IcipNetConfig.paper()`` is the network of the paper (Swin-B window 12 at 480², bert-base-uncased,
M = 8 prompts, ICIP + BIF at all four stages, DyT decoder). ``IcipNetConfig.tiny()`` is the same network
at toy widths for CPU tests and synthetic data. With ``use_icip=False`` and ``use_bif=False`` (and
``decoder_norm="batchnorm"``) the model is the RMSIN baseline.

Fields marked [RECON] fill gaps of the paper and the official code with the defaults of the spec
(``shared/specs/icipnet.md``); each has a switch that reproduces the alternative reading.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import BertConfig, PreTrainedConfig


@strict
class IcipNetConfig(PreTrainedConfig):
    r"""
    image_size (`int`): side of the square input; fixed, since the BIF token mixer and CIM depend on it.
    patch_size, embed_dim, depths, num_heads, window_size, drop_path_rate: the Swin backbone (timm).
    text_config (`dict | BertConfig`): the BERT language encoder (pooler removed).
    max_text_len (`int`): tokens per expression (``[CLS] … [SEP]`` truncated, right-padded).
    bert_trainable_layers (`int`): BERT encoder layers ``0 … n-1`` are trained; the embeddings and the
        remaining layers stay frozen (the official optimiser covers layers 0–9 of 12).
    use_icip, use_bif (`bool`): the paper's two modules; both off gives the RMSIN baseline.
    num_prompts (`int`): instance prompts M per stage.
    icip_condition (`bool`): eq. (4) ``T_o = αᵀV̂ + T`` (True, the paper) or the raw prompts (False, the code).
    meta_net (`str`): [RECON] ``"cocoop"`` ``C → C/16 → D`` or ``"wide"`` ``C → D → D``.
    bif_heads (`int`): attention heads of the differential cross-attention (1 in the paper).
    lambda_init (`float`): the constant added to λ (0.8 at every stage in the code).
    lambda_std (`float`): [RECON] init std of the λ vectors (0.1; the code's randn is 1.0, see spec §3.1).
    mixer_hidden (`int`): [RECON] hidden width of the MFR token mixer (and channel mixer by default).
    channel_hidden_ratio (`float | None`): [RECON] if set, channel-mixer hidden = ratio · 2C instead.
    cim_dim, cim_heads, cim_key_dim, cim_value_dim: the RMSIN cross-scale interaction module.
    decoder_dim (`int`): hidden width of the decoder.
    decoder_norm (`str`): ``"dyt"`` (ICIPNet) or ``"batchnorm"`` (RMSIN).
    arc_max_angle (`float`): largest rotation of the adaptive rotated convolution, in degrees.
    ce_weights, dice_weight: the loss ``(1 - w)·CE(weights) + w·Dice``.
    """

    model_type = "icipnet"
    sub_configs_defaults = {"text_config": BertConfig}

    image_size: int = 480
    patch_size: int = 4
    embed_dim: int = 128
    depths: list[int] | tuple[int, ...] = (2, 2, 18, 2)
    num_heads: list[int] | tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 12
    drop_path_rate: float = 0.3
    text_config: dict | BertConfig | None = None
    max_text_len: int = 20
    bert_trainable_layers: int = 10
    use_icip: bool = True
    use_bif: bool = True
    num_prompts: int = 8
    icip_condition: bool = True
    meta_net: str = "cocoop"
    bif_heads: int = 1
    lambda_init: float = 0.8
    lambda_std: float = 0.1
    mixer_hidden: int = 256
    channel_hidden_ratio: float | None = None
    cim_dim: int = 480
    cim_heads: int = 8
    cim_key_dim: int = 32
    cim_value_dim: int = 64
    decoder_dim: int = 512
    decoder_norm: str = "dyt"
    arc_max_angle: float = 40.0
    ce_weights: list[float] | tuple[float, float] = (0.9, 1.1)
    dice_weight: float = 0.1

    def __post_init__(self, **kwargs):
        if self.text_config is None:
            self.text_config = BertConfig()
        elif isinstance(self.text_config, dict):
            self.text_config = BertConfig(**self.text_config)
        self.depths, self.num_heads = list(self.depths), list(self.num_heads)
        self.ce_weights = list(self.ce_weights)
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Reject combinations the network cannot be built with (called by the model)."""
        if len(self.depths) != 4 or len(self.num_heads) != 4:
            raise ValueError(f"ICIPNet has four Swin stages; got depths={self.depths}, num_heads={self.num_heads}")
        if self.image_size % (self.patch_size * 8):
            raise ValueError(f"image_size {self.image_size} must be divisible by patch_size·8 = {self.patch_size * 8}")
        if self.meta_net not in ("cocoop", "wide"):
            raise ValueError(f"meta_net must be 'cocoop' or 'wide', got {self.meta_net!r}")
        if self.decoder_norm not in ("dyt", "batchnorm"):
            raise ValueError(f"decoder_norm must be 'dyt' or 'batchnorm', got {self.decoder_norm!r}")
        if not 0 <= self.bert_trainable_layers <= self.text_config.num_hidden_layers:
            raise ValueError(f"bert_trainable_layers must be in 0..{self.text_config.num_hidden_layers}")

    @property
    def stage_channels(self) -> list[int]:
        """``C_i`` of the four stages: ``embed_dim · 2^i``."""
        return [self.embed_dim * 2**i for i in range(4)]

    @property
    def stage_sizes(self) -> list[int]:
        """Side ``H_i = W_i`` of the four stage grids."""
        first = self.image_size // self.patch_size
        return [first // 2**i for i in range(4)]

    @classmethod
    def paper(cls, **overrides) -> IcipNetConfig:
        """The paper's network: Swin-B (window 12) at 480², bert-base-uncased, M = 8, ICIP + BIF, DyT."""
        return cls(**overrides)

    @classmethod
    def rmsin(cls, **overrides) -> IcipNetConfig:
        """The RMSIN baseline: no ICIP, no BIF, BatchNorm decoder."""
        return cls(**{"use_icip": False, "use_bif": False, "decoder_norm": "batchnorm", **overrides})

    @classmethod
    def tiny(cls, vocab_size: int = 300, **overrides) -> IcipNetConfig:
        """Toy widths for CPU tests and synthetic data: a 64² input and a ~1.2 M-parameter network.

        The patch embedding has stride 2 (stage grids 32/16/8/4), so the logits come out at 32² before the
        final resize: at stride 4 a perfect mask of the small objects of a 64² synthetic tile is capped at
        IoU ≈ 0.7, at stride 2 at ≈ 0.9. Channels are halved to keep the cost of a step.
        """
        text = dict(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=128, max_position_embeddings=32, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0)
        defaults = dict(image_size=64, patch_size=2, embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8),
                        window_size=4, drop_path_rate=0.0, text_config=text, max_text_len=16,
                        bert_trainable_layers=2, num_prompts=4, mixer_hidden=64, cim_dim=60, cim_heads=2,
                        cim_key_dim=16, cim_value_dim=32, decoder_dim=24)
        return cls(**{**defaults, **overrides})


__all__ = ["IcipNetConfig"]
