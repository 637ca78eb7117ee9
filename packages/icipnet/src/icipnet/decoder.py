"""The heads of ICIPNet after the encoder: RMSIN's cross-scale interaction and the rotated-conv decoder.

* :class:`CrossScaleInteraction` (RMSIN "CIM", spec §1.6) mixes the four stage features on the top grid and
  gates each stage with the result.
* :class:`Decoder` (RMSIN/LAVT "SimpleDecoding", spec §1.7) fuses them top-down with a 3×3 convolution and an
  :class:`AdaptiveRotatedConv2d` per step and predicts background/foreground logits on the stage-1 grid.
* :class:`DyT` (``w ⊙ tanh(a·x) + b``) is ICIPNet's replacement for the decoder's BatchNorms.

Shapes use ``C_i`` / ``H_i`` for the channels / side of stage ``i`` (``config.stage_channels`` /
``config.stage_sizes``; 128/256/512/1024 and 120/60/30/15 at the paper's 480² input). All features are NCHW.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .configuration import IcipNetConfig

# ---------------------------------------------------------------------------------------------------------
# Cross-scale interaction (RMSIN CIM), spec §1.6
# ---------------------------------------------------------------------------------------------------------


def _reduced_side(side: int, stride: int) -> int:
    """Output side of the depthwise stride-``s`` convolutions of CSA (kernel ``2s-1``, padding ``s-1``)."""
    return (side - 1) // stride + 1


class FeedForward(nn.Module):
    """Residual-free conv FFN ``conv1x1_{2w→w}(ReLU6(gconv3x3_{2w→2w}(BN(conv1x1_{w→2w}(BN(z))))))``.

    The grouped 3×3 convolution has ``groups = w`` (two input channels per group); all convolutions have bias.
    """

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(dim)
        self.conv1 = nn.Conv2d(dim, hidden_dim, 1)
        self.bn2 = nn.BatchNorm2d(hidden_dim)
        self.conv2 = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=dim)
        self.conv3 = nn.Conv2d(hidden_dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(F.relu6(self.conv2(self.bn2(self.conv1(self.bn1(x))))))


class CrossScaleSelfAttention(nn.Module):
    """Multi-head attention over the ``T`` cross-scale tokens, returning the ``P = H_4²`` top-grid tokens.

    Reproduces RMSIN's layout exactly, including two raw memory-order reshapes that mix the token and channel
    axes (spec §1.6 a): the value map of the depthwise ``value_conv`` and the attention output before
    ``token_proj`` (a ``Linear`` over the token axis ``T → P``).
    """

    def __init__(self, dim: int, top_side: int, num_tokens: int, num_heads: int, key_dim: int, value_dim: int):
        super().__init__()
        self.num_heads, self.key_dim, self.value_dim = num_heads, key_dim, value_dim
        self.top_side = top_side
        self.scale = key_dim**-0.5
        inner = num_heads * value_dim
        self.qkv = nn.Linear(dim, num_heads * (2 * key_dim + value_dim), bias=False)
        self.qkv_norm = nn.BatchNorm1d(num_heads * (2 * key_dim + value_dim))
        self.value_conv = nn.Conv2d(inner, inner, 3, padding=1, groups=inner)
        self.token_proj = nn.Linear(num_tokens, top_side * top_side)
        self.out_proj = nn.Linear(inner, dim)
        for linear in (self.qkv, self.token_proj, self.out_proj):  # backbone rule, spec §1.8
            nn.init.trunc_normal_(linear.weight, std=0.02)
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, T, dim)`` → ``(B, P, dim)``."""
        B, T, _ = tokens.shape
        P = self.top_side**2
        qkv = self.qkv(tokens)
        qkv = self.qkv_norm(qkv.flatten(0, 1)).view(B, T, self.num_heads, -1)  # BN over all B·T rows
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.value_dim], dim=3)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, T, d)

        # raw reshape: the (heads, P, value) block of the first P tokens read in memory order as (heads·value, P)
        value_map = v[:, :, :P].reshape(B, self.num_heads * self.value_dim, self.top_side, self.top_side)
        local = self.value_conv(F.hardswish(value_map)).flatten(2)  # (B, heads·value, P)

        scores = (q.float() @ k.float().transpose(-2, -1)) * self.scale  # softmax in fp32 (spec §8.10)
        attn = scores.softmax(dim=-1).to(v.dtype)
        # raw reshape: (B, T, heads, value) read in memory order as (B, heads·value, T)
        mixed = (attn @ v).transpose(1, 2).reshape(B, self.num_heads * self.value_dim, T)
        mixed = self.token_proj(mixed) + local  # (B, heads·value, P)
        return self.out_proj(mixed.transpose(1, 2))  # (B, P, dim)


class CrossScaleAttention(nn.Module):
    """CSA: tokens of the top grid and of its stride-2 / stride-3 depthwise reductions attend to each other.

    ``(B, dim, H_4, H_4)`` → same shape; the caller adds the residual. Token count
    ``T = H_4² + ⌈H_4/2⌉² + ⌈H_4/3⌉²`` (314 at the paper's 15×15 top grid).
    """

    def __init__(self, dim: int, top_side: int, num_heads: int, key_dim: int, value_dim: int):
        super().__init__()
        self.top_side = top_side
        self.num_tokens = top_side**2 + _reduced_side(top_side, 2) ** 2 + _reduced_side(top_side, 3) ** 2
        self.norm_in = nn.BatchNorm2d(dim)
        self.dwconv_s2 = nn.Sequential(nn.Conv2d(dim, dim, 3, stride=2, padding=1, groups=dim), nn.BatchNorm2d(dim))
        self.dwconv_s3 = nn.Sequential(nn.Conv2d(dim, dim, 5, stride=3, padding=2, groups=dim), nn.BatchNorm2d(dim))
        self.attention = CrossScaleSelfAttention(dim, top_side, self.num_tokens, num_heads, key_dim, value_dim)
        self.norm_out = nn.BatchNorm2d(dim)
        self.conv_out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        # NCHW: oneDNN's bf16 depthwise weight gradient is garbage (NaN, 1e17–1e31) for channels-last 2×2 maps
        x0 = self.norm_in(x).contiguous()
        scales = (x0, self.dwconv_s2(x0), self.dwconv_s3(x0))
        tokens = torch.cat([s.flatten(2) for s in scales], dim=2).transpose(1, 2)  # (B, T, C)
        out = self.attention(tokens).transpose(1, 2).reshape(B, C, H, W)
        return self.conv_out(F.hardswish(self.norm_out(out)))


class IntraScaleFeedForward(nn.Module):
    """Per-scale residual FFNs on the channel slices of the four stages (widths ``C_i · cim_dim / ΣC``)."""

    def __init__(self, widths: list[int], mlp_ratio: int = 2):
        super().__init__()
        self.widths = list(widths)
        self.branches = nn.ModuleList(FeedForward(w, mlp_ratio * w) for w in widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = x.split(self.widths, dim=1)
        return torch.cat([part + branch(part) for part, branch in zip(parts, self.branches)], dim=1)


class CrossScaleInteractionBlock(nn.Module):
    """One CIM block: ``x + CSA(x)`` → intra-scale FFN → ``x + CSA'(x)`` → ``x + FFN(x)`` (hidden ``2·dim``)."""

    def __init__(self, dim: int, widths: list[int], top_side: int, num_heads: int, key_dim: int, value_dim: int):
        super().__init__()
        self.csa1 = CrossScaleAttention(dim, top_side, num_heads, key_dim, value_dim)
        self.intra_ff = IntraScaleFeedForward(widths)
        self.csa2 = CrossScaleAttention(dim, top_side, num_heads, key_dim, value_dim)
        self.ff = FeedForward(dim, 2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.csa1(x)
        x = x + self.intra_ff(x)  # the per-scale branches are residual too (spec §1.6 2b)
        x = x + self.csa2(x)
        return x + self.ff(x)


class ScaleAwareGate(nn.Module):
    """``BN(conv(f)) ⊙ up(h_sigmoid(BN(conv(g)))) + up(BN(conv(g)))`` with ``f`` local, ``g`` global (top grid).

    ``up`` is a bilinear resize (``align_corners=False``) to ``f``'s size; all convolutions are 1×1 with bias.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.local_embedding = nn.Conv2d(channels, channels, 1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.global_embedding = nn.Conv2d(channels, channels, 1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.global_act = nn.Conv2d(channels, channels, 1)
        self.bn3 = nn.BatchNorm2d(channels)

    def forward(self, local: torch.Tensor, global_: torch.Tensor) -> torch.Tensor:
        size = local.shape[-2:]
        feat = self.bn1(self.local_embedding(local))
        shift = F.interpolate(self.bn2(self.global_embedding(global_)), size=size, mode="bilinear", align_corners=False)
        gate = F.hardsigmoid(self.bn3(self.global_act(global_)))  # h_sigmoid = ReLU6(z + 3) / 6
        gate = F.interpolate(gate, size=size, mode="bilinear", align_corners=False)
        return feat * gate + shift


class CrossScaleInteraction(nn.Module):
    """RMSIN's cross-scale interaction module (spec §1.6), applied once to the four encoder features.

    ``forward([f1, f2, f3, f4])`` with ``f_i`` of shape ``(B, C_i, H_i, H_i)`` returns four tensors of the same
    shapes. Each ``f_i`` is average-pooled to the top grid ``H_4 × H_4``, the concatenation
    (``ΣC`` channels) is reduced to ``cim_dim``, mixed by one :class:`CrossScaleInteractionBlock`, expanded back
    to ``ΣC``, split per stage and used to gate ``f_i`` (:class:`ScaleAwareGate`; no extra residual).
    """

    def __init__(self, config: IcipNetConfig):
        super().__init__()
        channels, dim = config.stage_channels, config.cim_dim
        total = sum(channels)
        if any(c * dim % total for c in channels):
            raise ValueError(f"cim_dim {dim} must split into the stage widths {channels} in proportion (ΣC = {total})")
        self.channels = channels
        self.top_side = config.stage_sizes[3]
        self.down_channel = nn.Conv2d(total, dim, 1)
        self.block = CrossScaleInteractionBlock(
            dim, [c * dim // total for c in channels], self.top_side,
            config.cim_heads, config.cim_key_dim, config.cim_value_dim,
        )
        self.norm = nn.BatchNorm2d(dim)
        self.up_channel = nn.Conv2d(dim, total, 1)
        self.gates = nn.ModuleList(ScaleAwareGate(c) for c in channels)

    @property
    def num_tokens(self) -> int:
        """Tokens of each cross-scale attention (314 at the paper's size)."""
        return self.block.csa1.num_tokens

    def pool(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Average-pool every feature to the top grid and concatenate: ``(B, ΣC, H_4, H_4)``."""
        side = self.top_side
        return torch.cat([F.adaptive_avg_pool2d(f, (side, side)) for f in features], dim=1)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != 4 or features[3].shape[-2:] != (self.top_side, self.top_side):
            raise ValueError(
                f"CrossScaleInteraction expects 4 features with a {self.top_side}×{self.top_side} top grid, "
                f"got shapes {[tuple(f.shape) for f in features]}"
            )
        mixed = self.block(self.down_channel(self.pool(features)))  # (B, cim_dim, H_4, H_4)
        mixed = self.up_channel(self.norm(mixed)).split(self.channels, dim=1)
        return [gate(f, g) for gate, f, g in zip(self.gates, features, mixed)]


# ---------------------------------------------------------------------------------------------------------
# Adaptive rotated convolution (RMSIN ARC, kernel_number = 1), spec §1.7
# ---------------------------------------------------------------------------------------------------------


def rotation_interpolation_matrix(theta: torch.Tensor) -> torch.Tensor:
    """The ``9 × 9`` matrices ``R`` that rotate a 3×3 kernel by ``θ`` (radians): ``w'[r] = Σ_c R[r, c] w[c]``.

    Taps are indexed ``0 … 8`` row-major. Positive ``θ`` turns the kernel pattern counter-clockwise: edge taps
    are bilinearly resampled at their rotated positions and corner taps move linearly along the ring of the
    border taps (``θ = 45°`` moves each corner value one step; ``θ = 90°`` moves each edge value a quarter
    turn). Corners extrapolate beyond ``|θ| = 45°``; the routing keeps ``|θ| <`` ``arc_max_angle`` (40°).
    Every row sums to 1 and ``θ = 0`` gives the identity.

    ``theta``: ``(B,)`` → ``(B, 9, 9)``.
    """
    x, y = torch.cos(theta), torch.sin(theta)
    a, b, c = x - y, x * y, x + y
    one, zero = torch.ones_like(theta), torch.zeros_like(theta)
    positive = [  # θ ≥ 0: {column: value} per row r (spec §1.7 table)
        {0: a, 1: 1 - a},
        {1: x - b, 2: b, 4: 1 - c + b, 5: y - b},
        {2: a, 5: 1 - a},
        {0: b, 1: y - b, 3: x - b, 4: 1 - c + b},
        {4: one},
        {4: 1 - c + b, 5: x - b, 7: y - b, 8: b},
        {3: 1 - a, 6: a},
        {3: y - b, 4: 1 - c + b, 6: b, 7: x - b},
        {7: 1 - a, 8: a},
    ]
    negative = [  # θ < 0
        {0: c, 3: 1 - c},
        {0: -b, 1: x + b, 3: b - y, 4: 1 - a - b},
        {1: 1 - c, 2: c},
        {3: x + b, 4: 1 - a - b, 6: -b, 7: b - y},
        {4: one},
        {1: b - y, 2: -b, 4: 1 - a - b, 5: x + b},
        {6: c, 7: 1 - c},
        {4: 1 - a - b, 5: b - y, 7: x + b, 8: -b},
        {5: 1 - c, 8: c},
    ]

    def assemble(rows: list[dict[int, torch.Tensor]]) -> torch.Tensor:
        return torch.stack([torch.stack([row.get(col, zero) for col in range(9)], dim=-1) for row in rows], dim=-2)

    return torch.where((theta >= 0)[:, None, None], assemble(positive), assemble(negative))


class RoutingFunction(nn.Module):
    """Per-sample gate ``α`` and angle ``θ`` of an adaptive rotated convolution.

    ``dwconv3x3 (no bias) → LayerNorm over channels → ReLU → global average → α = sigmoid(Linear(drop(·)))``,
    ``θ = softsign(Linear_no_bias(drop(·))) · max_angle`` (radians). ``(B, C, H, W)`` → ``(B,)``, ``(B,)``.
    """

    def __init__(self, channels: int, max_angle: float = 40.0, dropout: float = 0.2):
        super().__init__()
        self.max_angle = math.radians(max_angle)
        self.dwconv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.norm = nn.LayerNorm(channels)
        self.dropout = nn.Dropout(dropout)  # called once per head: independent masks for α and θ
        self.fc_alpha = nn.Linear(channels, 1)
        self.fc_theta = nn.Linear(channels, 1, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Truncated normal (std 0.02) weights, as the ARC reference; ``fc_alpha`` keeps PyTorch's bias init."""
        self.fc_alpha.reset_parameters()
        for weight in (self.dwconv.weight, self.fc_alpha.weight, self.fc_theta.weight):
            nn.init.trunc_normal_(weight, std=0.02)
        self.norm.reset_parameters()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.norm(self.dwconv(x).permute(0, 2, 3, 1))  # (B, H, W, C)
        z = F.relu(z).mean(dim=(1, 2))  # (B, C)
        alpha = torch.sigmoid(self.fc_alpha(self.dropout(z)))
        theta = F.softsign(self.fc_theta(self.dropout(z))) * self.max_angle
        return alpha.squeeze(1), theta.squeeze(1)


class AdaptiveRotatedConv2d(nn.Module):
    """3×3 convolution (padding 1, no bias) whose kernel is rotated and scaled per sample (RMSIN ARC).

    For sample ``n`` the kernel is ``α_n · R(θ_n) W`` (:func:`rotation_interpolation_matrix` acting on the nine
    taps), with ``α_n, θ_n`` from :class:`RoutingFunction`. All samples run in one grouped convolution
    (``groups = B``). ``(B, C_in, H, W)`` → ``(B, C_out, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, max_angle: float = 40.0, dropout: float = 0.2):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        self.routing = RoutingFunction(in_channels, max_angle, dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal (fan_out, ReLU gain) kernel; the routing resets itself."""
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def rotated_weight(self, alpha: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Per-sample kernels ``(B, C_out, C_in, 3, 3)`` for gates ``alpha`` and angles ``theta`` of shape ``(B,)``."""
        R = rotation_interpolation_matrix(theta.float()) * alpha.float()[:, None, None]  # (B, 9, 9)
        taps = self.weight.flatten(2)  # (C_out, C_in, 9)
        rotated = torch.einsum("nrc,oic->noir", R.to(taps.dtype), taps)
        return rotated.reshape(-1, self.out_channels, self.in_channels, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        weight = self.rotated_weight(*self.routing(x)).to(x.dtype)
        out = F.conv2d(x.reshape(1, B * C, H, W), weight.flatten(0, 1), padding=1, groups=B)
        return out.view(B, self.out_channels, H, W)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size=3, padding=1"


# ---------------------------------------------------------------------------------------------------------
# DyT and the decoder (ICIPNet SimpleDecoding), spec §1.7
# ---------------------------------------------------------------------------------------------------------


class DyT(nn.Module):
    """Dynamic tanh ``y = w ⊙ tanh(a·x) + b`` over NCHW maps.

    ``a`` is a scalar (init 1); ``w`` (init 1) and ``b`` (init 0) are per channel.
    """

    def __init__(self, channels: int, init_alpha: float = 1.0):
        super().__init__()
        self.init_alpha = init_alpha
        self.alpha = nn.Parameter(torch.empty(1))
        self.weight = nn.Parameter(torch.empty(channels))
        self.bias = nn.Parameter(torch.empty(channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.alpha, self.init_alpha)
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.alpha * x) * self.weight[:, None, None] + self.bias[:, None, None]

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}"


class DecoderFuseBlock(nn.Module):
    """``conv3x3 (no bias) → norm → ReLU → ARC3x3 → norm → ReLU``; ``norm`` is DyT or BatchNorm2d."""

    def __init__(self, in_channels: int, dim: int, norm: str, max_angle: float):
        super().__init__()
        make_norm = DyT if norm == "dyt" else nn.BatchNorm2d
        self.conv = nn.Conv2d(in_channels, dim, 3, padding=1, bias=False)
        self.norm1 = make_norm(dim)
        self.arc = AdaptiveRotatedConv2d(dim, dim, max_angle)
        self.norm2 = make_norm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm1(self.conv(x)))
        return F.relu(self.norm2(self.arc(x)))


class Decoder(nn.Module):
    """Top-down decoder (spec §1.7): ``[c1, c2, c3, c4]`` → logits ``(B, 2, H_1, H_1)`` (background, foreground).

    Three fuse steps ``x = block(up2(x) ‖ c_i)`` for ``i = 3, 2, 1`` starting from ``x = c4``, where ``up2`` is a
    bilinear ×2 up-sampling (``align_corners=True``) applied only when ``x`` is smaller than ``c_i``; then a 1×1
    convolution ``decoder_dim → 2`` with bias. The model resizes the logits to the input size.
    """

    def __init__(self, config: IcipNetConfig):
        super().__init__()
        if config.decoder_norm not in ("dyt", "batchnorm"):
            raise ValueError(f"decoder_norm must be 'dyt' or 'batchnorm', got {config.decoder_norm!r}")
        c1, c2, c3, c4 = config.stage_channels
        dim = config.decoder_dim
        self.fuse = nn.ModuleList(
            DecoderFuseBlock(coarse + fine, dim, config.decoder_norm, config.arc_max_angle)
            for coarse, fine in ((c4, c3), (dim, c2), (dim, c1))
        )
        self.classifier = nn.Conv2d(dim, 2, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        c1, c2, c3, c4 = features
        x = c4
        for block, skip in zip(self.fuse, (c3, c2, c1)):
            if x.shape[-2] < skip.shape[-2] or x.shape[-1] < skip.shape[-1]:
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
            x = block(torch.cat([x, skip], dim=1))
        return self.classifier(x)


__all__ = [
    "AdaptiveRotatedConv2d",
    "CrossScaleInteraction",
    "Decoder",
    "DyT",
    "RoutingFunction",
    "rotation_interpolation_matrix",
]
