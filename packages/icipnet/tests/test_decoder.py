"""Cross-scale interaction, adaptive rotated convolution, DyT and the decoder (spec §1.6–§1.8, §9)."""

import math

import pytest
import torch
import torch.nn.functional as F
from icipnet import IcipNetModel
from icipnet.configuration import IcipNetConfig
from icipnet.decoder import (
    AdaptiveRotatedConv2d,
    CrossScaleInteraction,
    CrossScaleSelfAttention,
    Decoder,
    DyT,
    rotation_interpolation_matrix,
)
from icipnet.loss import icipnet_loss
from torch import nn


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def features(config: IcipNetConfig, batch: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, s, s, generator=g) for c, s in zip(config.stage_channels, config.stage_sizes)]


# --- paper sizes (§9) -------------------------------------------------------------------------------------


def test_paper_parameter_counts():
    assert count(CrossScaleInteraction(IcipNetConfig.paper())) == 9_492_246
    assert count(Decoder(IcipNetConfig.paper())) == 20_670_987
    assert count(Decoder(IcipNetConfig.rmsin())) == 20_670_981


def test_paper_cim_tokens_and_shapes():
    config = IcipNetConfig.paper()
    cim = CrossScaleInteraction(config).eval()
    assert cim.num_tokens == 225 + 64 + 25 == 314
    assert cim.block.csa1.attention.token_proj.in_features == 314
    assert cim.block.intra_ff.widths == [32, 64, 128, 256]
    feats = features(config, batch=4)
    with torch.no_grad():
        pooled = cim.pool(feats)
        assert pooled.shape == (4, 1920, 15, 15)
        assert cim.down_channel(pooled).shape == (4, 480, 15, 15)
        out = cim(feats)
    assert [o.shape for o in out] == [f.shape for f in feats]
    assert all(torch.isfinite(o).all() for o in out)


def test_paper_decoder_shapes_on_small_grids():
    # the decoder's weights do not depend on the grid: paper widths on a 2×2 top grid
    config = IcipNetConfig.paper()
    decoder = Decoder(config).eval()
    feats = [torch.randn(2, c, s, s) for c, s in zip(config.stage_channels, (16, 8, 4, 2))]
    with torch.no_grad():
        assert decoder(feats).shape == (2, 2, 16, 16)


# --- tiny preset ------------------------------------------------------------------------------------------


def test_tiny_shapes_and_finite_gradients():
    config = IcipNetConfig.tiny()
    cim, decoder = CrossScaleInteraction(config), Decoder(config)
    assert cim.num_tokens == 16 + 4 + 4  # 4×4 top grid and its stride-2 and stride-3 (padded) 2×2 reductions
    feats = [f.requires_grad_() for f in features(config, batch=2)]
    out = cim(feats)
    assert [o.shape for o in out] == [f.shape for f in feats]
    logits = decoder(out)
    assert logits.shape == (2, 2, *[config.stage_sizes[0]] * 2)
    logits.square().mean().backward()
    for name, p in [*cim.named_parameters(), *decoder.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert all(torch.isfinite(f.grad).all() for f in feats)


def test_decoder_norm_choice():
    dyt = Decoder(IcipNetConfig.tiny())
    bn = Decoder(IcipNetConfig.tiny(decoder_norm="batchnorm"))
    assert isinstance(dyt.fuse[0].norm1, DyT) and isinstance(dyt.fuse[2].norm2, DyT)
    assert isinstance(bn.fuse[0].norm1, nn.BatchNorm2d) and isinstance(bn.fuse[2].norm2, nn.BatchNorm2d)
    assert [b.conv.in_channels for b in dyt.fuse] == [128 + 64, 24 + 32, 24 + 16]  # decoder_dim 24
    assert dyt.classifier.out_channels == 2 and dyt.classifier.bias is not None


def test_decoder_upsamples_only_smaller_maps():
    config = IcipNetConfig.tiny()
    decoder = Decoder(config).eval()
    c1, c2, c3, c4 = features(config, batch=1)
    with torch.no_grad():
        expected = decoder([c1, c2, c3, c4])
        # an already up-sampled c4 (align_corners=True) gives the same logits: the step is skipped
        c4_up = F.interpolate(c4, scale_factor=2, mode="bilinear", align_corners=True)
        torch.testing.assert_close(decoder([c1, c2, c3, c4_up]), expected)


def test_cim_rejects_wrong_sizes():
    config = IcipNetConfig.tiny()
    cim = CrossScaleInteraction(config)
    feats = features(config, batch=2)
    with pytest.raises(ValueError, match="top grid"):
        cim(feats[:3] + [torch.randn(2, 256, 3, 3)])
    with pytest.raises(ValueError, match="cim_dim"):
        CrossScaleInteraction(IcipNetConfig.tiny(cim_dim=100))


# --- cross-scale attention: the raw reshapes --------------------------------------------------------------


def test_cross_scale_attention_reproduces_raw_reshapes():
    torch.manual_seed(0)
    heads, key, value, side, T, dim, B = 2, 3, 4, 2, 6, 5, 2
    P = side * side
    attn = CrossScaleSelfAttention(dim, side, T, heads, key, value).eval()
    tokens = torch.randn(B, T, dim)
    with torch.no_grad():
        got = attn(tokens)
        qkv = attn.qkv_norm(attn.qkv(tokens).flatten(0, 1)).view(B, T, heads * (2 * key + value))
        width = 2 * key + value
        q = torch.stack([qkv[:, :, h * width:h * width + key] for h in range(heads)], 1)  # (B, heads, T, key)
        k = torch.stack([qkv[:, :, h * width + key:h * width + 2 * key] for h in range(heads)], 1)
        v = torch.stack([qkv[:, :, h * width + 2 * key:(h + 1) * width] for h in range(heads)], 1)
        value_map = torch.zeros(B, heads * value, P)
        mixed = torch.zeros(B, heads * value, T)
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(key), -1)
        o = a @ v  # (B, heads, T, value)
        for n in range(B):
            i = 0  # memory order of (heads, P, value) → (heads·value, P)
            for h in range(heads):
                for p in range(P):
                    for d in range(value):
                        value_map[n, i // P, i % P] = v[n, h, p, d]
                        i += 1
            i = 0  # memory order of (T, heads, value) → (heads·value, T)
            for t in range(T):
                for h in range(heads):
                    for d in range(value):
                        mixed[n, i // T, i % T] = o[n, h, t, d]
                        i += 1
        local = attn.value_conv(F.hardswish(value_map.view(B, heads * value, side, side))).flatten(2)
        expected = attn.out_proj((attn.token_proj(mixed) + local).transpose(1, 2))
    torch.testing.assert_close(got, expected)


# --- rotation matrix (§1.7 table) -------------------------------------------------------------------------


def spec_table(theta: float) -> torch.Tensor:
    x, y = math.cos(theta), math.sin(theta)
    a, b, c = x - y, x * y, x + y
    if theta >= 0:
        rows = [
            [a, 1 - a, 0, 0, 0, 0, 0, 0, 0],
            [0, x - b, b, 0, 1 - c + b, y - b, 0, 0, 0],
            [0, 0, a, 0, 0, 1 - a, 0, 0, 0],
            [b, y - b, 0, x - b, 1 - c + b, 0, 0, 0, 0],
            [0, 0, 0, 0, 1, 0, 0, 0, 0],
            [0, 0, 0, 0, 1 - c + b, x - b, 0, y - b, b],
            [0, 0, 0, 1 - a, 0, 0, a, 0, 0],
            [0, 0, 0, y - b, 1 - c + b, 0, b, x - b, 0],
            [0, 0, 0, 0, 0, 0, 0, 1 - a, a],
        ]
    else:
        rows = [
            [c, 0, 0, 1 - c, 0, 0, 0, 0, 0],
            [-b, x + b, 0, b - y, 1 - a - b, 0, 0, 0, 0],
            [0, 1 - c, c, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, x + b, 1 - a - b, 0, -b, b - y, 0],
            [0, 0, 0, 0, 1, 0, 0, 0, 0],
            [0, b - y, -b, 0, 1 - a - b, x + b, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, c, 1 - c, 0],
            [0, 0, 0, 0, 1 - a - b, b - y, 0, x + b, -b],
            [0, 0, 0, 0, 0, 1 - c, 0, 0, c],
        ]
    return torch.tensor(rows, dtype=torch.float64)


def test_bf16_gradients_stay_finite_with_a_2x2_top_grid():
    # The CIM pools NHWC Swin features, so its input is channels-last; with a 2×2 top grid (patch 4 on 64²) oneDNN's
    # bf16 depthwise-conv weight gradient came back NaN or ~1e31 in some steps until CSA made its input NCHW.
    torch.manual_seed(0)
    model = IcipNetModel(IcipNetConfig.tiny(vocab_size=64, patch_size=4)).train()
    assert model.config.stage_sizes[3] == 2
    pixels, ids, target = torch.randn(8, 3, 64, 64), torch.randint(5, 60, (8, 16)), torch.rand(8, 64, 64) > 0.9
    for _ in range(5):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = icipnet_loss(model(pixels, ids).logits, target.long())
        loss.backward()
        for name, p in model.named_parameters():
            if p.grad is not None:
                assert torch.isfinite(p.grad).all() and p.grad.abs().max() < 1e3, name


def test_rotation_matrix_matches_spec_table_row_by_row():
    thetas = [0.3, -0.3, 0.6, -0.65, 1e-4, -1e-4]
    R = rotation_interpolation_matrix(torch.tensor(thetas, dtype=torch.float64))
    assert R.shape == (len(thetas), 9, 9)
    for n, theta in enumerate(thetas):
        expected = spec_table(theta)
        for r in range(9):
            torch.testing.assert_close(R[n, r], expected[r], msg=f"theta={theta} row {r}")


def test_rotation_matrix_identity_and_row_sums():
    torch.testing.assert_close(rotation_interpolation_matrix(torch.zeros(3)), torch.eye(9).expand(3, 9, 9))
    theta = torch.linspace(-math.pi / 2, math.pi / 2, 41, dtype=torch.float64)
    torch.testing.assert_close(rotation_interpolation_matrix(theta).sum(-1), torch.ones(41, 9, dtype=torch.float64))


def rotate_taps(theta_deg: float) -> torch.Tensor:
    taps = torch.arange(1.0, 10.0, dtype=torch.float64)  # distinct tap values 1..9, row-major
    R = rotation_interpolation_matrix(torch.tensor([math.radians(theta_deg)], dtype=torch.float64))[0]
    return (R @ taps).view(3, 3)


def test_rotation_by_quarter_turn_moves_edge_taps():
    grid = torch.arange(1.0, 10.0, dtype=torch.float64).view(3, 3)
    edges_and_centre = torch.tensor([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.bool)
    # θ > 0 turns the pattern counter-clockwise (torch.rot90 with k=1), θ < 0 clockwise
    torch.testing.assert_close(rotate_taps(90.0)[edges_and_centre], torch.rot90(grid, 1)[edges_and_centre])
    torch.testing.assert_close(rotate_taps(-90.0)[edges_and_centre], torch.rot90(grid, -1)[edges_and_centre])
    # by hand: top ← right, left ← top, right ← bottom, bottom ← left for +90°
    r = rotate_taps(90.0)
    assert (r[0, 1], r[1, 0], r[1, 2], r[2, 1], r[1, 1]) == (6.0, 2.0, 8.0, 4.0, 5.0)


def test_rotation_by_eighth_turn_moves_corner_taps_one_step():
    # corners move along the ring of border taps: 45° is one step (they extrapolate past 45°, which the
    # routing never reaches: |θ| < 40°)
    ccw, cw = rotate_taps(45.0), rotate_taps(-45.0)
    torch.testing.assert_close(ccw[[0, 0, 2, 2], [0, 2, 0, 2]], torch.tensor([2.0, 6.0, 4.0, 8.0], dtype=torch.float64))
    torch.testing.assert_close(cw[[0, 0, 2, 2], [0, 2, 0, 2]], torch.tensor([4.0, 2.0, 8.0, 6.0], dtype=torch.float64))


# --- adaptive rotated convolution -------------------------------------------------------------------------


def test_arc_zero_angle_is_plain_conv_scaled_by_alpha():
    torch.manual_seed(0)
    arc = AdaptiveRotatedConv2d(6, 5).eval()
    nn.init.zeros_(arc.routing.fc_theta.weight)  # softsign(0) = 0 → θ = 0
    x = torch.randn(3, 6, 7, 7)
    alpha, theta = arc.routing(x)
    assert torch.equal(theta, torch.zeros(3))
    expected = alpha[:, None, None, None] * F.conv2d(x, arc.weight, padding=1)
    torch.testing.assert_close(arc(x), expected)


class FixedRouting(nn.Module):
    def __init__(self, alpha: list[float], theta_deg: list[float]):
        super().__init__()
        self.alpha, self.theta = torch.tensor(alpha), torch.tensor([math.radians(t) for t in theta_deg])

    def forward(self, x):
        return self.alpha, self.theta


def test_arc_matches_per_sample_rotated_conv():
    torch.manual_seed(1)
    arc = AdaptiveRotatedConv2d(4, 3)
    alpha, theta_deg = [0.9, 0.2, 0.5, 0.7], [30.0, -25.0, 0.0, -39.0]
    arc.routing = FixedRouting(alpha, theta_deg)
    x = torch.randn(4, 4, 6, 6)
    out = arc(x)
    assert out.shape == (4, 3, 6, 6)
    for n in range(4):
        R = spec_table(math.radians(theta_deg[n])).float() * alpha[n]
        weight = (arc.weight.flatten(2) @ R.T).view_as(arc.weight)  # w'[r] = Σ_c R[r, c] w[c]
        torch.testing.assert_close(out[n:n + 1], F.conv2d(x[n:n + 1], weight, padding=1))


def test_routing_ranges():
    torch.manual_seed(1)
    arc = AdaptiveRotatedConv2d(4, 3, max_angle=40.0).eval()
    nn.init.normal_(arc.routing.fc_theta.weight, std=100.0)
    alpha, theta = arc.routing(torch.randn(4, 4, 6, 6))
    assert alpha.shape == theta.shape == (4,)
    assert (theta.abs() < math.radians(40.0)).all() and ((alpha > 0) & (alpha < 1)).all()


def test_arc_batch_independence():
    torch.manual_seed(2)
    arc = AdaptiveRotatedConv2d(4, 4).eval()
    nn.init.normal_(arc.routing.fc_theta.weight, std=1.0)
    x = torch.randn(3, 4, 5, 5)
    with torch.no_grad():
        together = arc(x)
        other = x.clone()
        other[1:] = torch.randn(2, 4, 5, 5) * 10
        changed = arc(other)
        alone = arc(x[:1])
    torch.testing.assert_close(changed[0], together[0])
    torch.testing.assert_close(alone[0], together[0])


def test_arc_init_and_parameters():
    arc = AdaptiveRotatedConv2d(64, 64)
    assert arc.weight.shape == (64, 64, 3, 3)
    assert arc.weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.1)  # kaiming fan_out
    assert arc.routing.dwconv.bias is None and arc.routing.fc_theta.bias is None
    assert arc.routing.fc_alpha.bias is not None and arc.routing.fc_alpha.out_features == 1
    assert arc.routing.max_angle == pytest.approx(40 * math.pi / 180)


# --- DyT --------------------------------------------------------------------------------------------------


def test_dyt():
    dyt = DyT(3)
    assert {n: p.shape for n, p in dyt.named_parameters()} == {
        "alpha": (1,), "weight": (3,), "bias": (3,),
    }
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(dyt(x), torch.tanh(x))  # init a = 1, w = 1, b = 0
    with torch.no_grad():
        dyt.alpha.fill_(0.5)
        dyt.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        dyt.bias.copy_(torch.tensor([0.0, -1.0, 1.0]))
    w, b = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1), torch.tensor([0.0, -1.0, 1.0]).view(1, 3, 1, 1)
    expected = torch.tanh(0.5 * x) * w + b
    torch.testing.assert_close(dyt(x), expected)
