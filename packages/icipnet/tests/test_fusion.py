"""The fusion modules of one encoder stage: parameter counts of spec §9 at paper widths, the shapes of §9, and
the behaviour of ICIP (eqs. 1–4), BIF (eqs. 7–13), RMSIN's attention, IIM and the gates."""

import math

import pytest
import torch

from icipnet.configuration import IcipNetConfig
from icipnet.fusion import (
    BilateralInformationFusion,
    DifferentialCrossAttention,
    FeatureReconstruction,
    ImageConditionedInstancePrompt,
    IntraScaleInteraction,
    RMSNorm,
    SpatialImageLanguageAttention,
    StageFusion,
    instance_norm_tokens,
)

D = 768


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def paper_stages():
    """The four paper-width stage fusions, on the meta device (counting needs no memory)."""
    with torch.device("meta"):
        return [StageFusion(IcipNetConfig.paper(), i) for i in range(4)]


def test_paper_icip_counts(paper_stages):
    prompts = [s.pwam.prompt for s in paper_stages]
    assert [p.prompts.numel() for p in prompts] == [6144] * 4
    assert [count(p.meta_net) for p in prompts] == [7944, 17168, 41760, 115520]
    assert [count(p) for p in prompts] == [14088, 23312, 47904, 121664]
    assert sum(count(p) for p in prompts) == 206968


def test_paper_bif_counts(paper_stages):
    bifs = [s.pwam.attention for s in paper_stages]
    assert all(isinstance(b, BilateralInformationFusion) for b in bifs)
    rows = {
        "query": [33024, 131584, 525312, 2099200],
        "key": [196864, 393728, 787456, 1574912],
        "value": [196864, 393728, 787456, 1574912],
    }
    for name, expected in rows.items():
        assert [count(getattr(b.attention, name)) for b in bifs] == expected, name
    assert [count(b.out_proj) for b in bifs] == [32896, 131328, 524800, 2098176]
    lam_and_g = [sum(p.numel() for n, p in b.attention.named_parameters() if n.startswith(("lambda", "norm")))
                 for b in bifs]
    assert lam_and_g == [768, 1536, 3072, 6144]
    assert [count(b.reconstruction.token_mixer) for b in bifs] == [7387456, 1847056, 461956, 115681]
    assert [count(b.reconstruction.channel_mixer) for b in bifs] == [131584, 262912, 525568, 1050880]
    assert [count(b) for b in bifs] == [7979456, 3161872, 3615620, 8519905]
    assert sum(count(b) for b in bifs) == 23276853
    assert sum(count(b.attention.query) for b in bifs) == 2789120
    assert sum(count(b.attention.key) for b in bifs) == 2952960
    assert sum(count(b.out_proj) for b in bifs) == 2787200
    assert sum(count(b.reconstruction.token_mixer) for b in bifs) == 9812149
    assert sum(count(b.reconstruction.channel_mixer) for b in bifs) == 1970944
    assert sum(lam_and_g) == 11520


def test_paper_wrapper_gate_iim_counts(paper_stages):
    assert [count(s.pwam.vis_project) + count(s.pwam.project_mm) for s in paper_stages] == [33024, 131584, 525312,
                                                                                            2099200]
    assert [count(s.fusion_gate) + count(s.visual_gate) for s in paper_stages] == [65536, 262144, 1048576, 4194304]
    assert sum(count(s.fusion_gate) + count(s.visual_gate) for s in paper_stages) == 5570560
    assert [count(s.iim) for s in paper_stages] == [38] * 4
    assert [count(s.norm) for s in paper_stages] == [256, 512, 1024, 2048]  # norm0..3: 3,840


def test_paper_alternative_counts():
    with torch.device("meta"):
        wide = [StageFusion(IcipNetConfig.paper(meta_net="wide"), i).pwam.prompt.meta_net for i in range(4)]
        ratio = [StageFusion(IcipNetConfig.paper(channel_hidden_ratio=4), i).pwam.attention.reconstruction
                 for i in range(4)]
        rmsin = [StageFusion(IcipNetConfig.rmsin(), i).pwam for i in range(4)]
    assert [count(m) for m in wide] == [689664, 787968, 984576, 1377792]
    assert sum(count(m) for m in wide) == 3840000
    assert [count(r.channel_mixer) for r in ratio] == [525568, 2099712, 8393728, 33564672]
    assert sum(count(r.channel_mixer) for r in ratio) == 44583680
    assert all(p.prompt is None and isinstance(p.attention, SpatialImageLanguageAttention) for p in rmsin)
    assert sum(count(p.attention) for p in rmsin) == 5742080


def text_inputs(batch=4, tokens=20, dim=D, real=(20, 12, 5, 1), seed=0):
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(batch, tokens, dim, generator=g)
    mask = torch.zeros(batch, tokens)
    for b, n in enumerate(real):
        mask[b, :n] = 1
    return text, mask


@pytest.mark.parametrize("stage", [0, 3])
def test_paper_shapes_icip_and_bif(stage):
    """Spec §9 shapes at B=4, M=8, N=20 for stage 1 (P=14400, C=128) and stage 4 (P=225, C=1024)."""
    config = IcipNetConfig.paper()
    C, side = config.stage_channels[stage], config.stage_sizes[stage]
    P = side * side
    torch.manual_seed(0)
    icip = ImageConditionedInstancePrompt(C, D, 8)
    bif = BilateralInformationFusion(C, P, D)
    x = torch.randn(4, P, C)
    text, mask = text_inputs()
    seen = {}
    for name in ("query", "key", "value"):
        getattr(bif.attention, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.shape))
    bif.reconstruction.register_forward_hook(lambda m, i, o: seen.__setitem__("V_o", i[0].shape))
    with torch.no_grad():
        assert icip.meta_net(x).shape == (4, P, D)  # V̂
        prompts, alpha = icip.instance_prompts(x)
        assert prompts.shape == (4, 8, D) and alpha.shape == (4, P, 8)
        text_o, mask_o = icip(x, text, mask)
        assert text_o.shape == (4, 28, D) and mask_o.shape == (4, 28)
        assert bif.attention.attention_map(x, text_o, mask_o).shape == (4, 1, P, 28)  # F
        out = bif(x, text_o, mask_o)
    assert seen == {"query": (4, P, 2 * C), "key": (4, 28, 2 * C), "value": (4, 28, 2 * C), "V_o": (4, P, 2 * C)}
    assert out.shape == (4, P, C)
    assert torch.isfinite(out).all()


def small_bif(lambda_std=0.1, heads=1, C=16, P=9):
    torch.manual_seed(1)
    return BilateralInformationFusion(C, P, 32, num_heads=heads, lambda_std=lambda_std, mixer_hidden=8)


def test_lambda_init_and_scaling():
    bif = small_bif()
    attn = bif.attention
    assert attn.lambda_init == 0.8
    with torch.no_grad():
        for v in (attn.lambda_q1, attn.lambda_k1, attn.lambda_q2, attn.lambda_k2):
            v.zero_()
    assert torch.allclose(attn.differential_lambda(), torch.tensor([0.8]))  # e⁰ − e⁰ + 0.8
    with torch.no_grad():
        attn.lambda_q1.fill_(0.5)
        attn.lambda_k1.fill_(0.25)  # ⟨λq1, λk1⟩ = 16 · 0.125 = 2
    assert torch.allclose(attn.differential_lambda(), torch.tensor([math.exp(2.0) - 1 + 0.8]))

    x = torch.randn(2, 9, 16)
    text, mask = text_inputs(batch=2, tokens=6, dim=32, real=(6, 3))
    F_map = attn.attention_map(x, text, mask)
    lam = attn.differential_lambda()
    # each softmax sums to 1, so every row of F = softmax₁ − λ·softmax₂ sums to 1 − λ
    assert torch.allclose(F_map.sum(-1), (1 - lam).expand(2, 1, 9), atol=1e-5)
    v_o = attn(x, text, mask)
    rms = v_o.pow(2).mean(-1).sqrt()  # RMSNorm (g = 1) gives unit RMS, then × (1 − λ_init) = 0.2
    assert torch.allclose(rms, torch.full_like(rms, 0.2), atol=1e-4)


def test_lambda_std_switch():
    code_literal = DifferentialCrossAttention(1024, 32, lambda_std=1.0)
    default = DifferentialCrossAttention(1024, 32)
    assert code_literal.lambda_q1.std().item() == pytest.approx(1.0, abs=0.1)
    assert default.lambda_q1.std().item() == pytest.approx(0.1, abs=0.01)


def test_attention_map_formula_with_two_heads():
    bif = small_bif(heads=2)
    attn = bif.attention
    x = torch.randn(2, 9, 16)
    text, mask = text_inputs(batch=2, tokens=5, dim=32, real=(5, 2))
    q = instance_norm_tokens(attn.query(x)).view(2, 9, 2, 16).transpose(1, 2)
    k = (attn.key(text) * mask[..., None]).view(2, 5, 2, 16).transpose(1, 2)
    bias = (1e4 * mask - 1e4)[:, None, None]
    s1 = (q[..., :8] @ k[..., :8].transpose(-1, -2) / math.sqrt(8) + bias).softmax(-1)
    s2 = (q[..., 8:] @ k[..., 8:].transpose(-1, -2) / math.sqrt(8) + bias).softmax(-1)
    lam = attn.differential_lambda().view(1, 2, 1, 1)
    assert torch.allclose(attn.attention_map(x, text, mask), s1 - lam * s2, atol=1e-6)


@pytest.mark.parametrize("module", ["bif", "rmsin"])
def test_padded_tokens_are_ignored(module):
    torch.manual_seed(2)
    attention = small_bif() if module == "bif" else SpatialImageLanguageAttention(16, 32, num_heads=2)
    x = torch.randn(2, 9, 16)
    text, mask = text_inputs(batch=2, tokens=6, dim=32, real=(6, 3))
    changed = text.clone()
    changed[1, 3:] = 100 * torch.randn(3, 32)  # the padded positions of sample 1
    out, out_changed = attention(x, text, mask), attention(x, changed, mask)
    assert torch.equal(out, out_changed)
    changed[1, 2] += 1.0  # a real token does matter
    assert not torch.allclose(out[1], attention(x, changed, mask)[1])


def test_icip_alpha_and_conditioning():
    torch.manual_seed(3)
    icip = ImageConditionedInstancePrompt(32, 24, num_prompts=4)
    x1, x2 = torch.randn(3, 50, 32), torch.randn(3, 50, 32)
    prompts1, alpha = icip.instance_prompts(x1)
    assert alpha.shape == (3, 50, 4)
    assert torch.allclose(alpha.sum(dim=1), torch.ones(3, 4))  # each prompt's weights over patches
    assert (alpha > 0).all() and alpha.max() / alpha.min() <= math.e**2 + 1e-4  # tanh bounds the scores
    v_hat = icip.meta_net(x1)
    assert torch.allclose(prompts1, alpha.transpose(1, 2) @ v_hat + icip.prompts, atol=1e-6)  # eq. (4)
    assert not torch.allclose(prompts1, icip.instance_prompts(x2)[0])  # T_o follows the image

    literal = ImageConditionedInstancePrompt(32, 24, num_prompts=4, condition=False)
    assert literal.meta_net is None
    for x in (x1, x2):
        prompts, alpha = literal.instance_prompts(x)
        assert alpha is None and torch.equal(prompts, literal.prompts.expand(3, -1, -1))


def test_icip_concatenation_puts_prompts_first():
    icip = ImageConditionedInstancePrompt(32, 24, num_prompts=4)
    text, mask = text_inputs(batch=2, tokens=5, dim=24, real=(5, 2))
    text_o, mask_o = icip(torch.randn(2, 16, 32), text, mask)
    assert torch.equal(text_o[:, 4:], text) and torch.equal(mask_o[:, 4:], mask)
    assert torch.equal(mask_o[:, :4], torch.ones(2, 4))
    assert icip.prompts.std().item() == pytest.approx(0.02, rel=0.3)
    with pytest.raises(ValueError, match="meta_net"):
        ImageConditionedInstancePrompt(32, 24, 4, meta_net="mlp")


def test_rmsnorm_is_overflow_safe():
    norm = RMSNorm(8)
    x = torch.randn(4, 8)
    naive = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
    assert torch.allclose(norm(x), naive, atol=1e-6)
    huge = x * 1e30  # squares overflow fp32
    assert torch.isfinite(norm(huge)).all()
    assert torch.allclose(norm(huge), x / x.pow(2).mean(-1, keepdim=True).sqrt(), atol=1e-5)
    assert torch.equal(norm(torch.zeros(2, 8)), torch.zeros(2, 8))


def test_bif_survives_code_literal_lambda_blowup():
    bif = small_bif()
    with torch.no_grad():
        for v in (bif.attention.lambda_q1, bif.attention.lambda_k1):
            v.fill_(math.sqrt(60 / 16))  # ⟨λq1, λk1⟩ = 60: λ ≈ 1e26, V_o² would overflow fp32
    text, mask = text_inputs(batch=2, tokens=6, dim=32, real=(6, 3))
    assert torch.isfinite(bif(torch.randn(2, 9, 16), text, mask)).all()


def test_feature_reconstruction_equations():
    mfr = FeatureReconstruction(tokens=6, channels=4, token_hidden=5, channel_hidden=3)
    v = torch.randn(2, 6, 4)
    v_e = v + mfr.token_mixer(v.transpose(1, 2)).transpose(1, 2)
    assert torch.allclose(mfr(v), v_e + mfr.channel_mixer(v_e))
    with torch.no_grad():
        for mixer in (mfr.token_mixer, mfr.channel_mixer):
            mixer[2].weight.zero_()
            mixer[2].bias.zero_()
    assert torch.equal(mfr(v), v)


def test_bif_output_is_instance_normalised_and_initialised():
    bif = small_bif()
    text, mask = text_inputs(batch=2, tokens=6, dim=32, real=(6, 3))
    out = bif(torch.randn(2, 9, 16), text, mask)
    assert torch.allclose(out.mean(1), torch.zeros(2, 16), atol=1e-5)
    assert torch.allclose(out.var(1, unbiased=False), torch.ones(2, 16), atol=1e-3)
    for proj in (bif.attention.query, bif.attention.key, bif.attention.value, bif.out_proj):
        bound = math.sqrt(6 / sum(proj.weight.shape))  # xavier-uniform
        assert proj.weight.abs().max() <= bound and proj.weight.abs().max() > 0.8 * bound
        assert torch.equal(proj.bias, torch.zeros_like(proj.bias))


def test_iim_gates_positions_uniformly_over_channels():
    iim = IntraScaleInteraction()
    assert count(iim) == 38
    x = torch.randn(2, 12, 5)  # H=3, W=4
    out = iim(x, 3, 4)
    ratio = out / x
    assert torch.allclose(ratio, ratio[..., :1].expand_as(ratio), atol=1e-5)  # one weight per position
    assert ((ratio > 0) & (ratio < 1)).all()  # a sigmoid gate


def test_stage_fusion_update_and_feature():
    config = IcipNetConfig.tiny()
    stage = StageFusion(config, 1)
    C, side = config.stage_channels[1], config.stage_sizes[1]
    x = torch.randn(2, side, side, C)
    text, mask = text_inputs(batch=2, tokens=7, dim=config.text_config.hidden_size, real=(7, 4))
    new_x, feature = stage(x, text, mask)
    tokens = x.reshape(2, -1, C)
    fused = stage.pwam(tokens, text, mask)
    visual = stage.iim(tokens, side, side)
    expected = tokens + stage.fusion_gate(fused) * fused + stage.visual_gate(visual) * visual
    assert torch.allclose(new_x.reshape(2, -1, C), expected, atol=1e-6)
    assert torch.allclose(feature, stage.norm(fused).transpose(1, 2).reshape(2, C, side, side), atol=1e-6)


def test_autocast_keeps_attention_math_in_fp32():
    bif = small_bif()
    text, mask = text_inputs(batch=2, tokens=6, dim=32, real=(6, 3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        F_map = bif.attention.attention_map(torch.randn(2, 9, 16), text, mask)
        out = bif(torch.randn(2, 9, 16), text, mask)
    assert F_map.dtype == torch.float32 and bif.attention.differential_lambda().dtype == torch.float32
    assert torch.isfinite(out).all()


def test_heads_must_divide_channels():
    with pytest.raises(ValueError, match="heads"):
        DifferentialCrossAttention(10, 8, num_heads=3)
