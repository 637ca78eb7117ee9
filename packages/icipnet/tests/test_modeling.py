"""IcipNetModel: paper-preset parameter counts (spec §9), shapes on the tiny preset, frozen parts, gradients,
initialisation (§1.8), the Swin padding order, save/load round trips and loading pretrained backbones."""

import math

import pytest
import torch
from safetensors.torch import save_file
from timm.models.swin_transformer import SwinTransformerBlock
from transformers import BertModel

from icipnet import IcipNetConfig, IcipNetModel
from icipnet.fusion import BilateralInformationFusion, ImageConditionedInstancePrompt, SpatialImageLanguageAttention
from icipnet.modeling import build_swin, swin_block_forward

B = 4


def count(module, trainable=False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


@pytest.fixture(scope="module")
def paper():
    with torch.device("meta"):
        return IcipNetModel(IcipNetConfig.paper())


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return IcipNetModel(IcipNetConfig.tiny()).eval()


def inputs(config, batch=B, real=(16, 9, 5, 2), seed=0):
    g = torch.Generator().manual_seed(seed)
    size, n = config.image_size, config.max_text_len
    pixels = torch.randn(batch, 3, size, size, generator=g)
    ids = torch.randint(1, config.text_config.vocab_size, (batch, n), generator=g)
    mask = torch.zeros(batch, n, dtype=torch.long)
    for b in range(batch):
        mask[b, : real[b % len(real)]] = 1
    return pixels, ids * mask, mask


def test_paper_counts(paper):
    assert count(paper.swin) == 86876536  # Swin-B window 12 without head and final norm
    assert sum(count(f.norm) for f in paper.fusion) == 3840
    assert count(paper.text_encoder) == 108891648
    assert count(paper.text_encoder.encoder.layer[:10]) == 70878720
    assert count(paper.text_encoder, trainable=True) == 70878720
    assert sum(count(f.pwam.prompt) for f in paper.fusion) == 206968
    assert sum(count(f.pwam.attention) for f in paper.fusion) == 23276853
    assert count(paper.cim) == 9492246
    assert count(paper.decoder) == 20670987
    assert count(paper) == 257778910


def test_rmsin_baseline_counts_and_modules():
    with torch.device("meta"):
        model = IcipNetModel(IcipNetConfig.rmsin())
    kinds = {type(m) for m in model.modules()}
    assert ImageConditionedInstancePrompt not in kinds and BilateralInformationFusion not in kinds
    assert sum(count(f.pwam.attention) for f in model.fusion) == 5742080
    assert all(isinstance(f.pwam.attention, SpatialImageLanguageAttention) for f in model.fusion)
    assert count(model.decoder) == 20670981
    assert count(model) == 240037163


def test_frozen_parts(paper):
    bert = paper.text_encoder
    assert not any(p.requires_grad for p in bert.embeddings.parameters())
    assert not any(p.requires_grad for p in bert.encoder.layer[10:].parameters())
    assert all(p.requires_grad for p in bert.encoder.layer[:10].parameters())
    last = paper.fusion[3]  # its visual stream is never read: gates and IIM cannot matter
    assert not any(p.requires_grad for m in (last.iim, last.fusion_gate, last.visual_gate) for p in m.parameters())
    assert all(p.requires_grad for p in last.pwam.parameters())
    assert all(p.requires_grad for m in (paper.swin, paper.fusion[:3], paper.cim, paper.decoder)
               for p in m.parameters())


def test_swin_runs_stage_by_stage(paper):
    swin = paper.swin
    assert [len(stage.blocks) for stage in swin.layers] == [2, 2, 18, 2]
    assert isinstance(swin.layers[0].downsample, torch.nn.Identity)  # merging starts stages 2–4 in timm
    assert [stage.blocks[1].window_size for stage in swin.layers] == [(12, 12)] * 4
    assert [stage.blocks[1].shift_size for stage in swin.layers] == [(6, 6)] * 4
    assert swin.layers[3].blocks[1].drop_path2.drop_prob == pytest.approx(0.3)
    assert not any(k.startswith(("swin.head", "swin.norm")) for k in paper.state_dict())


def test_tiny_shapes(tiny):
    config = tiny.config
    with torch.no_grad():
        out = tiny(*inputs(config), output_features=True)
    S = config.image_size
    assert out.logits.shape == (B, 2, S, S)
    expected = [(B, c, s, s) for c, s in zip(config.stage_channels, config.stage_sizes)]
    assert [tuple(f.shape) for f in out.stage_features] == expected
    assert [tuple(f.shape) for f in out.decoder_features] == expected
    assert tiny(*inputs(config)).stage_features is None


@pytest.mark.slow
def test_paper_forward_shapes():
    """One 480² forward of the paper network (≈15 s on one thread): stage grids 120/60/30/15, logits at 480²."""
    torch.manual_seed(0)
    model = IcipNetModel(IcipNetConfig.paper()).eval()
    with torch.no_grad():
        out = model(*inputs(model.config, batch=1, real=(8,)), output_features=True)
    assert out.logits.shape == (1, 2, 480, 480) and torch.isfinite(out.logits).all()
    expected = [(1, 128, 120, 120), (1, 256, 60, 60), (1, 512, 30, 30), (1, 1024, 15, 15)]
    assert [tuple(f.shape) for f in out.stage_features] == expected
    assert [tuple(f.shape) for f in out.decoder_features] == expected


@pytest.mark.parametrize("switches", [
    dict(use_icip=False, use_bif=False, decoder_norm="batchnorm"),  # RMSIN
    dict(use_bif=False),  # + ICIP (Table III)
    dict(use_icip=False),  # + BIF
    dict(icip_condition=False, meta_net="wide", channel_hidden_ratio=4.0, lambda_std=1.0, bif_heads=2),
])
def test_switches_build_and_run(switches):
    torch.manual_seed(0)
    config = IcipNetConfig.tiny(**switches)
    model = IcipNetModel(config).eval()
    kinds = {type(m) for m in model.modules()}
    assert (ImageConditionedInstancePrompt in kinds) == config.use_icip
    assert (BilateralInformationFusion in kinds) == config.use_bif
    assert (SpatialImageLanguageAttention in kinds) != config.use_bif
    with torch.no_grad():
        logits = model(*inputs(config)).logits
    assert logits.shape == (B, 2, 64, 64) and torch.isfinite(logits).all()


def test_wrong_image_size_is_rejected(tiny):
    pixels, ids, mask = inputs(tiny.config)
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\).*resize"):
        tiny(pixels[..., :32, :32], ids, mask)


def test_padded_token_ids_do_not_matter(tiny):
    pixels, ids, mask = inputs(tiny.config)
    other = torch.where(mask.bool(), ids, torch.randint_like(ids, 1, 300))
    with torch.no_grad():
        assert torch.allclose(tiny(pixels, ids, mask).logits, tiny(pixels, other, mask).logits, atol=1e-6)
        changed = ids.clone()
        changed[0, 1] = (changed[0, 1] % 290) + 5
        assert not torch.allclose(tiny(pixels, ids, mask).logits[0], tiny(pixels, changed, mask).logits[0])


def test_forward_backward_gives_finite_grads():
    torch.manual_seed(1)
    model = IcipNetModel(IcipNetConfig.tiny(drop_path_rate=0.1)).train()
    logits = model(*inputs(model.config)).logits
    (logits[:, 1] - logits[:, 0]).pow(2).mean().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_initialisation(tiny):
    torch.manual_seed(0)
    model = IcipNetModel(IcipNetConfig.tiny(lambda_std=0.5))
    gate = model.fusion[2].fusion_gate.fc1.weight
    assert gate.std().item() == pytest.approx(0.02, rel=0.1)  # §1.8 trunc-normal(0.02) for backbone Linears
    mixer = model.fusion[0].pwam.attention.reconstruction.token_mixer[0]
    assert mixer.weight.std().item() == pytest.approx(0.02, rel=0.1) and not mixer.bias.any()
    assert model.swin.layers[1].blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.1)
    norm = model.fusion[1].norm
    assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and not norm.bias.any()
    prompts = torch.cat([f.pwam.prompt.prompts.flatten() for f in model.fusion])
    assert prompts.std().item() == pytest.approx(0.02, rel=0.15)
    lambdas = torch.cat([p.flatten() for n, p in model.named_parameters() if ".lambda_" in n])
    assert lambdas.std().item() == pytest.approx(0.5, rel=0.15)
    attn = model.fusion[3].pwam.attention
    for proj in (attn.attention.query, attn.attention.key, attn.attention.value, attn.out_proj):
        bound = math.sqrt(6 / sum(proj.weight.shape))  # xavier-uniform, zero bias
        assert 0.8 * bound < proj.weight.abs().max() <= bound and not proj.bias.any()
    vis = model.fusion[3].pwam.vis_project  # PyTorch's default, like the reference Conv1d
    bound = 1 / math.sqrt(vis.in_features)
    assert 0.9 * bound < vis.weight.abs().max() <= bound and 0 < vis.bias.abs().max() <= bound
    assert all(torch.equal(g, torch.ones_like(g)) for n, g in model.named_parameters() if n.endswith("norm.weight"))


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(2)
    model = IcipNetModel(IcipNetConfig.tiny())
    with torch.no_grad():  # move every value away from its initial distribution, BatchNorm statistics too
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for name, b in model.named_buffers():
            if "running_" in name:
                b.add_(torch.rand_like(b))
    model.eval()
    batch = inputs(model.config)
    with torch.no_grad():
        expected = model(*batch).logits
    model.save_pretrained(tmp_path)
    loaded = IcipNetModel.from_pretrained(tmp_path).eval()
    state = model.state_dict()
    assert all(torch.equal(value, state[name]) for name, value in loaded.state_dict().items())
    with torch.no_grad():
        # weights loaded on CPU are views into the memory-mapped file; CPU matmuls round differently on
        # unaligned memory (last-bit differences), so compare the function on the model's own copies
        for p in loaded.parameters():
            p.data = p.data.clone()
        assert torch.equal(loaded(*batch).logits, expected)
    assert [p.requires_grad for p in loaded.parameters()] == [p.requires_grad for p in model.parameters()]


def test_from_pretrained_rebuilds_swin_buffers(tmp_path, tiny):
    tiny.save_pretrained(tmp_path)
    loaded = IcipNetModel.from_pretrained(tmp_path)
    expected = dict(tiny.swin.named_buffers())
    for name, buffer in loaded.swin.named_buffers():
        assert torch.equal(buffer, expected[name]), name


def test_swin_block_follows_the_original_padding_order():
    torch.manual_seed(3)

    def block(side, shift):
        return SwinTransformerBlock(16, (side, side), num_heads=2, window_size=4, shift_size=shift,
                                    always_partition=True).eval()

    # a side that is a multiple of the window: identical to timm (which shifts before padding)
    for shift in (0, 2):
        b, x = block(8, shift), torch.randn(2, 8, 8, 16)
        assert torch.allclose(swin_block_forward(b, x), b(x), atol=1e-6)
    # 5-grid, window 4 (like stage 4 at 480²: 15-grid, window 12): padded to 8. After padding and the shift by 2,
    # the wrapped rows 0–1 sit in their own region and never see rows 2–4; timm's order puts rows 3–4 there.
    b = block(5, 2)
    x = torch.randn(1, 5, 5, 16)
    moved = x.clone()
    moved[:, 3] += torch.randn(5, 16)  # (a constant would vanish in LayerNorm)
    assert torch.equal(swin_block_forward(b, x)[:, :2], swin_block_forward(b, moved)[:, :2])
    assert not torch.allclose(b(x)[:, :2], b(moved)[:, :2])


def save_swin(config, path, drop=None, extra=None):
    torch.manual_seed(4)
    swin = build_swin(config)
    swin.reset_classifier(5)  # a classifier head and the final norm, as in a timm checkpoint
    state = {k: v.contiguous() for k, v in swin.state_dict().items() if k != drop}
    state.update(extra or {})
    save_file(state, str(path))
    return swin


def save_bert(config, directory, **overrides):
    torch.manual_seed(5)
    bert = BertModel(config.text_config.__class__(**{**config.text_config.to_dict(), **overrides}))
    bert.save_pretrained(directory)  # with its pooler, which ICIPNet drops
    return bert


def test_from_backbones(tmp_path):
    config = IcipNetConfig.tiny()
    swin = save_swin(config, tmp_path / "swin.safetensors")
    bert = save_bert(config, tmp_path / "bert")
    model = IcipNetModel.from_backbones(config, swin=tmp_path / "swin.safetensors", bert=tmp_path / "bert")
    for name, value in model.swin.state_dict().items():
        assert torch.equal(value, swin.state_dict()[name]), name
    for name, value in model.text_encoder.state_dict().items():
        assert torch.equal(value, bert.state_dict()[name]), name
    assert not any(p.requires_grad for p in model.text_encoder.embeddings.parameters())
    with torch.no_grad():
        assert model.eval()(*inputs(config)).logits.shape == (B, 2, 64, 64)


def test_from_backbones_errors(tmp_path):
    config = IcipNetConfig.tiny()
    save_bert(config, tmp_path / "bert")
    with pytest.raises(FileNotFoundError, match="missing.safetensors.*timm/swin_base_patch4_window12_384.ms_in22k"):
        IcipNetModel.from_backbones(config, swin=tmp_path / "missing.safetensors", bert=tmp_path / "bert")
    save_swin(config, tmp_path / "swin.safetensors")
    with pytest.raises(FileNotFoundError, match="nowhere.*config.json.*bert-base-uncased"):
        IcipNetModel.from_backbones(config, swin=tmp_path / "swin.safetensors", bert=tmp_path / "nowhere")

    save_swin(config, tmp_path / "broken.safetensors", drop="layers.1.downsample.reduction.weight",
              extra={"layers.9.blocks.0.gamma": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"missing keys .*\[1\]: layers.1.downsample.reduction.weight"
                                         r".*unexpected keys .*\[1\]: layers.9.blocks.0.gamma"):
        IcipNetModel.from_backbones(config, swin=tmp_path / "broken.safetensors", bert=tmp_path / "bert")
    save_swin(IcipNetConfig.tiny(window_size=2), tmp_path / "window2.safetensors")
    with pytest.raises(ValueError, match="wrong shapes.*relative_position_bias_table"):
        IcipNetModel.from_backbones(config, swin=tmp_path / "window2.safetensors", bert=tmp_path / "bert")

    save_bert(config, tmp_path / "bert3", num_hidden_layers=3)
    with pytest.raises(ValueError, match="num_hidden_layers 3 in the file, 2 in the config"):
        IcipNetModel.from_backbones(config, swin=tmp_path / "swin.safetensors", bert=tmp_path / "bert3")
