"""The vision–language fusion of one ICIPNet encoder stage (spec §1.3, §1.5, §2, §3).

After the Swin blocks of stage ``i`` the visual tokens ``X`` (``B × P_i × C_i``, ``P_i = H_i·W_i``) meet the
BERT tokens ``L`` (``B × N × D``) in :class:`StageFusion`:

1. ``V_res = IIM(X)`` — RMSIN's intra-scale spatial gate (:class:`IntraScaleInteraction`);
2. ``F_res = PWAM(X, L)`` — LAVT's pixel-word attention wrapper (:class:`PixelWordAttention`) around the
   image–language attention, which is ICIP (:class:`ImageConditionedInstancePrompt`, prompts prepended to
   ``L``) followed by BIF (:class:`BilateralInformationFusion`), or RMSIN's
   :class:`SpatialImageLanguageAttention` in the baseline;
3. ``X ← X + g_f(F_res) ⊙ F_res + g_v(V_res) ⊙ V_res`` with two :class:`TanhGate`;
4. the decoder feature of the stage is ``LayerNorm(F_res)``.

All token tensors are token-major (``B × P × C``); the 1×1 ``Conv1d`` layers of the reference code are
``nn.Linear`` here (same parameters, ``weight[..., 0]``). Masks are ``(B, N)`` with 1 for real tokens. The
softmax/exp/λ math runs in fp32 even under autocast (spec §8.10). Modules that own a special initialisation
define ``reset_parameters()``; :class:`~icipnet.modeling.IcipNetModel` calls it after its generic rules (spec §1.8).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from rs_shared.kernels import differential_attention, differential_attention_map
from torch import nn

from .configuration import IcipNetConfig


def instance_norm_tokens(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``InstanceNorm1d`` (no affine) over the token axis: each channel of each sample to zero mean, unit variance.

    ``(B, P, C)`` → ``(B, P, C)``.
    """
    return F.instance_norm(x.transpose(1, 2), eps=eps).transpose(1, 2)


def _no_autocast(device: torch.device):
    return torch.autocast(device_type=device.type, enabled=False)


# ---------------------------------------------------------------------------------------------------------
# IIM and the gates (RMSIN), spec §1.3 and §1.5
# ---------------------------------------------------------------------------------------------------------


class RepUnit(nn.Module):
    """One RepVGG unit on 1-channel maps in training form: ``BN(conv1x1(m)) + BN(conv3x3(BN(conv1x1(m)))) + BN(m)``.

    Convolutions have no bias, the 3×3 one has padding 1; every ``BN`` is its own ``BatchNorm2d(1)`` (19 parameters).
    """

    def __init__(self):
        super().__init__()
        self.branch_1x1 = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.BatchNorm2d(1))
        self.branch_3x3 = nn.Sequential(
            nn.Conv2d(1, 1, 1, bias=False), nn.BatchNorm2d(1),
            nn.Conv2d(1, 1, 3, padding=1, bias=False), nn.BatchNorm2d(1),
        )
        self.identity = nn.BatchNorm2d(1)

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        return self.branch_1x1(m) + self.branch_3x3(m) + self.identity(m)


class IntraScaleInteraction(nn.Module):
    """IIM (RMSIN "VariousReceptive", spec §1.5): re-weight every position by a gate computed from the channel mean.

    ``m = mean_C(X)`` (``B × 1 × H × W``), ``w = sigmoid(unit2(ReLU(unit1(m))))``, output ``X ⊙ w``. 38 parameters.
    ``(B, P, C)`` with ``P = H·W`` → ``(B, P, C)``.
    """

    def __init__(self):
        super().__init__()
        self.unit1 = RepUnit()
        self.unit2 = RepUnit()

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        B, P, C = x.shape
        m = x.mean(dim=2).view(B, 1, height, width)
        w = torch.sigmoid(self.unit2(F.relu(self.unit1(m))))
        return x * w.view(B, P, 1)


class TanhGate(nn.Module):
    """``g(z) = tanh(Linear(ReLU(Linear(z))))``, both linears ``C → C`` without bias (``2C²`` parameters)."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc1 = nn.Linear(channels, channels, bias=False)
        self.fc2 = nn.Linear(channels, channels, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc2(F.relu(self.fc1(z))))


# ---------------------------------------------------------------------------------------------------------
# ICIP, spec §2
# ---------------------------------------------------------------------------------------------------------


class ImageConditionedInstancePrompt(nn.Module):
    """ICIP: ``M`` learned prompts in BERT space, conditioned on the stage's visual tokens and prepended to ``L``.

    ``V̂ = f(X)`` (``B × P × D``, the meta-net), ``A = tanh(V̂ Tᵀ)`` (eq. 2), ``α = softmax_P(A)`` (eq. 3),
    ``T_o = αᵀ V̂ + T`` (eq. 4, ``B × M × D``); the output is ``L_o = [T_o ; L]`` with mask ``[1]·M ‖ mask``.
    With ``condition=False`` (the released code) ``T_o = T`` for every image and there is no meta-net.

    Meta-net ``f``: ``"cocoop"`` ``Linear(C, C/16) → ReLU → Linear(C/16, D)`` or ``"wide"``
    ``Linear(C, D) → ReLU → Linear(D, D)`` [RECON].
    """

    def __init__(self, channels: int, text_dim: int, num_prompts: int, meta_net: str = "cocoop",
                 condition: bool = True):
        super().__init__()
        self.prompts = nn.Parameter(torch.empty(num_prompts, text_dim))  # T, eq. (1)
        self.condition = condition
        if not condition:
            self.meta_net = None
        elif meta_net == "cocoop":
            if channels < 16:
                raise ValueError(f"the 'cocoop' meta-net needs at least 16 channels (C/16 hidden), got {channels}")
            hidden = channels // 16
            self.meta_net = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, text_dim))
        elif meta_net == "wide":
            self.meta_net = nn.Sequential(nn.Linear(channels, text_dim), nn.ReLU(), nn.Linear(text_dim, text_dim))
        else:
            raise ValueError(f"meta_net must be 'cocoop' or 'wide', got {meta_net!r}")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Prompts ``N(0, 0.02²)`` [RECON]; the meta-net follows the backbone's Linear rule."""
        nn.init.normal_(self.prompts, std=0.02)

    def instance_prompts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``X (B, P, C)`` → ``T_o (B, M, D)`` and ``α (B, P, M)`` (``None`` without conditioning)."""
        prompts = self.prompts.unsqueeze(0).expand(x.shape[0], -1, -1)
        if not self.condition:
            return prompts, None
        v_hat = self.meta_net(x)  # (B, P, D)
        scores = torch.tanh(v_hat @ self.prompts.t())  # eq. (2), (B, P, M)
        alpha = scores.float().softmax(dim=1).to(v_hat.dtype)  # eq. (3), over the patch axis
        return alpha.transpose(1, 2) @ v_hat + prompts, alpha  # eq. (4)

    def forward(self, x: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``X (B, P, C)``, ``L (B, N, D)``, ``mask (B, N)`` → ``L_o (B, M+N, D)``, ``mask_o (B, M+N)``."""
        prompts, _ = self.instance_prompts(x)
        prompt_mask = mask.new_ones(mask.shape[0], prompts.shape[1])
        return torch.cat([prompts.to(text.dtype), text], dim=1), torch.cat([prompt_mask, mask], dim=1)


# ---------------------------------------------------------------------------------------------------------
# BIF, spec §3
# ---------------------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x²) + eps) ⊙ g`` over the last axis, computed in fp32 without overflow (spec §3.1).

    The input is first divided by its largest magnitude (``eps`` scaled to match), so rows of size ~1e19 and
    above, which the differential attention can produce with the code-literal λ initialisation, do not turn
    into ``inf``/``NaN`` when squared.
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        scale = x.abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        x = x / scale
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps / scale.pow(2)) * self.weight.float()


class DifferentialCrossAttention(nn.Module):
    """Dynamic feature modulation of BIF (spec §3.1): visual queries attend to ``L_o`` with two softmax maps.

    ``Q = IN(Linear_{C→2C}(X))``, ``K = Linear_{D→2C}(L_o) ⊙ mask``, ``H = Linear_{D→2C}(L_o) ⊙ mask``; per head
    (``G = C/h``) ``Q, K`` split into halves 1/2 and
    ``F = softmax(Q₁K₁ᵀ/√G + m) − λ·softmax(Q₂K₂ᵀ/√G + m)`` (eq. 8 with the code's softmaxes,
    ``m = 1e4·mask − 1e4``), ``λ = exp(⟨λq1, λk1⟩) − exp(⟨λq2, λk2⟩) + λ_init`` (eq. 7), ``V_o = F H`` (eq. 9),
    then a per-token RMSNorm over the ``2C/h`` head channels and the factor ``1 − λ_init``. ``F H`` is the fused
    :func:`rs_shared.kernels.differential_attention` (Triton on CUDA, which never stores ``F``).
    ``X (B, P, C)``, ``L_o (B, T, D)``, ``mask (B, T)`` → ``V_o (B, P, 2C)`` (heads concatenated).
    """

    def __init__(self, channels: int, text_dim: int, num_heads: int = 1, lambda_init: float = 0.8,
                 lambda_std: float = 0.1):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"{channels} channels do not split into {num_heads} heads")
        self.num_heads, self.head_dim = num_heads, channels // num_heads  # h, G
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.lambda_init, self.lambda_std = lambda_init, lambda_std
        self.query = nn.Linear(channels, 2 * channels)
        self.key = nn.Linear(text_dim, 2 * channels)
        self.value = nn.Linear(text_dim, 2 * channels)
        self.lambda_q1 = nn.Parameter(torch.empty(num_heads, self.head_dim))
        self.lambda_k1 = nn.Parameter(torch.empty(num_heads, self.head_dim))
        self.lambda_q2 = nn.Parameter(torch.empty(num_heads, self.head_dim))
        self.lambda_k2 = nn.Parameter(torch.empty(num_heads, self.head_dim))
        self.norm = RMSNorm(2 * self.head_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform projections with zero bias [CODE]; λ vectors ``N(0, lambda_std²)`` [RECON]."""
        for proj in (self.query, self.key, self.value):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)
        for vector in (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2):
            nn.init.normal_(vector, std=self.lambda_std)

    def differential_lambda(self) -> torch.Tensor:
        """λ of every head (eq. 7), fp32 ``(h,)``."""
        with _no_autocast(self.lambda_q1.device):
            dot1 = (self.lambda_q1.float() * self.lambda_k1.float()).sum(dim=-1)
            dot2 = (self.lambda_q2.float() * self.lambda_k2.float()).sum(dim=-1)
            return torch.exp(dot1) - torch.exp(dot2) + self.lambda_init

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """``(B, S, 2C)`` → ``(B, h, S, 2G)``."""
        return t.view(t.shape[0], t.shape[1], self.num_heads, 2 * self.head_dim).transpose(1, 2)

    def _queries_keys(self, x: torch.Tensor, text: torch.Tensor,
                      mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``Q = IN(Linear(X))`` ``(B, h, P, 2G)`` and ``K = Linear(L_o) ⊙ mask`` ``(B, h, T, 2G)``."""
        q = self._heads(instance_norm_tokens(self.query(x)))
        k = self._heads(self.key(text) * mask.unsqueeze(-1).to(text.dtype))
        return q, k

    def attention_map(self, x: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The differential map ``F`` of eq. (8): fp32 ``(B, h, P, T)``."""
        q, k = self._queries_keys(x, text, mask)
        with _no_autocast(x.device):
            return differential_attention_map(q, k, mask, self.differential_lambda(), self.scale)

    def forward(self, x: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, P, _ = x.shape
        q, k = self._queries_keys(x, text, mask)
        h = self._heads(self.value(text) * mask.unsqueeze(-1).to(text.dtype))
        with _no_autocast(x.device):
            out = differential_attention(q, k, h, mask, self.differential_lambda(), self.scale)  # eqs. (8)–(9)
            out = self.norm(out) * (1.0 - self.lambda_init)  # RMSNorm, × (1 − λ_init)
        return out.transpose(1, 2).reshape(B, P, -1).to(x.dtype)


class FeatureReconstruction(nn.Module):
    """MFR/BFR (spec §3.2, eqs. 10–13): a token-mixing MLP over the ``P`` positions, then a channel-mixing MLP.

    ``V_E = V + R(P_token(R(V)))``, ``O = V_E + P_channel(V_E)``, with ``R`` swapping tokens and channels,
    ``P_token = Linear(P, h_t) → GELU → Linear(h_t, P)`` and ``P_channel = Linear(C', h_c) → GELU → Linear(h_c, C')``.
    ``(B, P, C')`` → ``(B, P, C')``.
    """

    def __init__(self, tokens: int, channels: int, token_hidden: int, channel_hidden: int):
        super().__init__()
        self.token_mixer = nn.Sequential(nn.Linear(tokens, token_hidden), nn.GELU(), nn.Linear(token_hidden, tokens))
        self.channel_mixer = nn.Sequential(
            nn.Linear(channels, channel_hidden), nn.GELU(), nn.Linear(channel_hidden, channels)
        )

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        v = v + self.token_mixer(v.transpose(1, 2)).transpose(1, 2)  # eqs. (10)–(11)
        return v + self.channel_mixer(v)  # eqs. (12)–(13)


class BilateralInformationFusion(nn.Module):
    """BIF (spec §3): differential cross-attention → MFR → ``IN(Linear_{2C→C}(·))`` (InstanceNorm over tokens).

    ``X (B, P, C)``, ``L_o (B, T, D)``, ``mask (B, T)`` → ``(B, P, C)``. The token mixer fixes ``P``, so the module
    serves one input size only.
    """

    def __init__(self, channels: int, tokens: int, text_dim: int, num_heads: int = 1, lambda_init: float = 0.8,
                 lambda_std: float = 0.1, mixer_hidden: int = 256, channel_hidden: int | None = None):
        super().__init__()
        self.attention = DifferentialCrossAttention(channels, text_dim, num_heads, lambda_init, lambda_std)
        self.reconstruction = FeatureReconstruction(tokens, 2 * channels, mixer_hidden, channel_hidden or mixer_hidden)
        self.out_proj = nn.Linear(2 * channels, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform output projection with zero bias [CODE]."""
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        v = self.reconstruction(self.attention(x, text, mask))  # (B, P, 2C)
        return instance_norm_tokens(self.out_proj(v))


# ---------------------------------------------------------------------------------------------------------
# RMSIN's attention and the PWAM wrapper (LAVT), spec §1.3
# ---------------------------------------------------------------------------------------------------------


class SpatialImageLanguageAttention(nn.Module):
    """RMSIN/LAVT image–language attention (what BIF replaces; ``2C² + 2(D+1)C + 2C`` parameters).

    ``Q = IN(Linear_{C→C}(X))``, ``K, V = Linear_{D→C}(L) ⊙ mask``; per head
    ``softmax(Q Kᵀ / √C + 1e4·mask − 1e4) V`` (scaled by the full key width ``C``, as the code), heads
    concatenated, ``IN(Linear_{C→C}(·))``. ``X (B, P, C)``, ``L (B, T, D)``, ``mask (B, T)`` → ``(B, P, C)``.
    """

    def __init__(self, channels: int, text_dim: int, num_heads: int = 1):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"{channels} channels do not split into {num_heads} heads")
        self.num_heads = num_heads
        self.query = nn.Linear(channels, channels)
        self.key = nn.Linear(text_dim, channels)
        self.value = nn.Linear(text_dim, channels)
        self.out_proj = nn.Linear(channels, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default initialisation, as the reference ``Conv1d`` layers (spec §1.8)."""
        for proj in (self.query, self.key, self.value, self.out_proj):
            proj.reset_parameters()

    def forward(self, x: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, P, C = x.shape
        keep = mask.unsqueeze(-1).to(text.dtype)

        def heads(t):
            return t.view(B, t.shape[1], self.num_heads, -1).transpose(1, 2)  # (B, h, S, C/h)

        q = heads(instance_norm_tokens(self.query(x)))
        k, v = heads(self.key(text) * keep), heads(self.value(text) * keep)
        with _no_autocast(x.device):
            scores = q.float() @ k.float().transpose(-2, -1) / math.sqrt(C)
            attn = (scores + (1e4 * mask.float() - 1e4)[:, None, None, :]).softmax(dim=-1)
            out = (attn @ v.float()).transpose(1, 2).reshape(B, P, C).to(x.dtype)
        return instance_norm_tokens(self.out_proj(out))


class PixelWordAttention(nn.Module):
    """PWAM (LAVT, spec §1.3 step 2): ``F_res = GELU(Linear(GELU(Linear(X)) ⊙ lang))``, all linears ``C → C``.

    ``lang`` comes from the image–language attention: ICIP (optional) prepends the instance prompts to the text,
    then BIF, or RMSIN's :class:`SpatialImageLanguageAttention` when BIF is off. Dropout is 0 in the reference
    and omitted. ``X (B, P, C)``, ``L (B, N, D)``, ``mask (B, N)`` → ``(B, P, C)``.
    """

    def __init__(self, config: IcipNetConfig, stage: int):
        super().__init__()
        channels, side = config.stage_channels[stage], config.stage_sizes[stage]
        text_dim = config.text_config.hidden_size
        self.vis_project = nn.Linear(channels, channels)
        self.prompt = None
        if config.use_icip:
            self.prompt = ImageConditionedInstancePrompt(
                channels, text_dim, config.num_prompts, config.meta_net, config.icip_condition
            )
        if config.use_bif:
            channel_hidden = None
            if config.channel_hidden_ratio is not None:
                channel_hidden = int(config.channel_hidden_ratio * 2 * channels)
            self.attention = BilateralInformationFusion(
                channels, side * side, text_dim, config.bif_heads, config.lambda_init, config.lambda_std,
                config.mixer_hidden, channel_hidden,
            )
        else:
            self.attention = SpatialImageLanguageAttention(channels, text_dim, config.bif_heads)
        self.project_mm = nn.Linear(channels, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default initialisation, as the reference ``Conv1d`` layers (spec §1.8)."""
        self.vis_project.reset_parameters()
        self.project_mm.reset_parameters()

    def forward(self, x: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        vis = F.gelu(self.vis_project(x))
        if self.prompt is not None:
            text, mask = self.prompt(x, text, mask)  # L_o (B, M+N, D), mask_o (B, M+N)
        lang = self.attention(x, text, mask)
        return F.gelu(self.project_mm(vis * lang))


class StageFusion(nn.Module):
    """Everything after the Swin blocks of stage ``i`` and before its patch merging (spec §1.3 steps 1–4).

    ``X (B, H, W, C)`` NHWC, ``L (B, N, D)``, ``mask (B, N)`` → the updated visual stream ``(B, H, W, C)`` and the
    decoder feature ``LayerNorm(F_res)`` as ``(B, C, H, W)``.
    """

    def __init__(self, config: IcipNetConfig, stage: int):
        super().__init__()
        channels = config.stage_channels[stage]
        self.iim = IntraScaleInteraction()
        self.pwam = PixelWordAttention(config, stage)
        self.fusion_gate = TanhGate(channels)
        self.visual_gate = TanhGate(channels)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, H, W, C = x.shape
        tokens = x.reshape(B, H * W, C)
        visual = self.iim(tokens, H, W)  # V_res
        fused = self.pwam(tokens, text, mask)  # F_res
        tokens = tokens + self.fusion_gate(fused) * fused + self.visual_gate(visual) * visual
        feature = self.norm(fused).transpose(1, 2).reshape(B, C, H, W)
        return tokens.view(B, H, W, C), feature


__all__ = [
    "BilateralInformationFusion",
    "DifferentialCrossAttention",
    "FeatureReconstruction",
    "ImageConditionedInstancePrompt",
    "IntraScaleInteraction",
    "PixelWordAttention",
    "RMSNorm",
    "RepUnit",
    "SpatialImageLanguageAttention",
    "StageFusion",
    "TanhGate",
    "instance_norm_tokens",
]
