"""BiMoRSModel: paper-preset parameter counts (spec §1.9, §7.1), the §7.2 shapes, tokenization and ctx init (§7.3),
logit scale (§7.4), the bypassed-refiner parity with zero-shot CLIP (§7.5), exact prompt truncation (§8), the
trainable set and gradients, initialisation, save/load round trips and loading local CLIP weights."""

import json
import math
import zipfile

import open_clip
import pytest
import torch
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassClassValidationError
from safetensors import safe_open
from safetensors.torch import save_file

from bimors import BiMoRSConfig, BiMoRSModel
from bimors.modeling import BiMoRSPromptLearner

NAMES = ["oil_well", "runway", "baseball_field", "wastewater_treatment_plant", "storagetanks", "harbor"]
SOS, EOS = 49406, 49407


def count(module, trainable=None) -> int:
    return sum(p.numel() for p in module.parameters() if trainable is None or p.requires_grad == trainable)


def inputs(config: BiMoRSConfig, batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    size = config.clip_config()["vision_cfg"]["image_size"]
    return torch.randn(batch, 3, size, size, generator=g), torch.randn(batch, config.caption_dim, generator=g)


@pytest.fixture(scope="module")
def paper():
    torch.manual_seed(0)
    return BiMoRSModel(BiMoRSConfig.paper()).eval()


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return BiMoRSModel(BiMoRSConfig.tiny()).eval()


def test_paper_parameter_counts(paper):
    learner = paper.prompt_learner
    assert learner.ctx.numel() == 2048
    assert count(learner.meta_net.linear1) == 36912 and count(learner.meta_net.linear2) == 25088
    assert count(learner.meta_net) == 62000
    assert count(learner.refiner.norm_q) + count(learner.refiner.norm_kv) == 2048
    assert count(learner.refiner.attn) == 1050624
    assert count(paper, trainable=True) == count(learner, trainable=True) == 1116720
    assert count(paper.caption_projection) == 393728 and count(paper.caption_projection, trainable=True) == 0
    assert count(paper.clip) == 149620737 and count(paper.clip, trainable=True) == 0
    assert count(paper) == 1116720 + 393728 + 149620737
    assert paper.logit_scale.item() == pytest.approx(100.0) and not paper.clip.logit_scale.requires_grad


@torch.no_grad()
def test_paper_shapes(paper):
    B, C = 2, 3
    paper.set_class_names(NAMES[:C], truncate=False)
    pixels, captions = inputs(paper.config, B)
    f, Z = paper.encode_image(pixels)
    assert f.shape == (B, 512) and Z.shape == (B, 197, 768)
    assert paper.prompt_learner.meta_net(Z).shape == (B, 197, 512)
    assert paper.prompt_learner.visual_key(Z).shape == (B, 1, 512)
    assert paper.caption_projection(captions.unsqueeze(1)).shape == (B, 1, 512)
    context = paper.conditional_context(Z, captions.unsqueeze(1))
    assert context.shape == (B, 4, 512)
    assert paper.token_prefix.shape == (C, 1, 512) and paper.token_suffix.shape == (C, 72, 512)
    prompts = BiMoRSPromptLearner.construct_prompts(context, paper.token_prefix, paper.token_suffix)
    assert prompts.shape == (B, C, 77, 512)
    out = paper(pixels, captions)
    assert out.text_features.shape == (B, C, 512) and out.logits.shape == (B, C)
    torch.testing.assert_close(out.context, context)


@torch.no_grad()
def test_tiny_shapes_and_intermediates(tiny):
    B, C = 3, len(NAMES)
    tiny.set_class_names(NAMES)
    pixels, captions = inputs(tiny.config, B)
    f, Z = tiny.encode_image(pixels)
    assert f.shape == (B, 48) and Z.shape == (B, 17, 64)  # 1 CLS + (32/8)² patches, vision width 64
    torch.testing.assert_close(f.norm(dim=-1), torch.ones(B))
    # Z is the last block's output before ln_post: ln_post(Z[:, 0]) · proj is CLIP's image embedding
    torch.testing.assert_close(f, F.normalize(tiny.clip.visual.ln_post(Z[:, 0]) @ tiny.clip.visual.proj, dim=-1))
    v = tiny.prompt_learner.visual_key(Z)
    torch.testing.assert_close(v, tiny.prompt_learner.meta_net(Z).mean(dim=1, keepdim=True))  # MLP, then the mean
    key_value = torch.cat([v, tiny.caption_projection(captions.unsqueeze(1))], dim=1)
    assert key_value.shape == (B, 2, 32)
    context = tiny.conditional_context(Z, captions)
    refiner = tiny.prompt_learner.refiner
    query, memory = refiner.norm_q(tiny.prompt_learner.ctx).expand(B, -1, -1), refiner.norm_kv(key_value)
    torch.testing.assert_close(context, tiny.prompt_learner.ctx + refiner.attn(query, memory, memory)[0])
    longest = max(len(tiny.tokenizer.encode(f"a photo of a {n.replace('_', ' ')}.")) for n in NAMES) + 2
    assert tiny.token_prefix.shape == (C, 1, 32) and tiny.token_suffix.shape == (C, longest - 5, 32)
    out = tiny(pixels, captions.unsqueeze(1))
    assert out.text_features.shape == (B, C, 48) and out.logits.shape == (B, C) and out.loss is None
    torch.testing.assert_close(out.logits, 100 * torch.einsum("be,bce->bc", f, out.text_features))


def test_tokenization_and_ctx_init(tiny):
    ids = tiny.tokenize_prompts(["oil_well"])[0]
    assert ids[:9].tolist() == [SOS, 320, 1125, 539, 320, 2870, 1123, 269, EOS]  # SOS a photo of a oil well . EOS
    assert ids[9:].eq(0).all() and ids.shape == (77,)
    assert int(ids.argmax()) == 6 + 2  # EOS index = 6 + class-name tokens
    with torch.no_grad():
        torch.testing.assert_close(tiny.prompt_learner.ctx, tiny.clip.token_embedding(ids)[1:5], rtol=0, atol=0)
    tiny.set_class_names(["oil_well"])
    assert tiny.eos_index.tolist() == [8] and tiny.token_suffix.shape[1] == 9 - 5


@torch.no_grad()
def test_bypassed_refiner_equals_zero_shot_clip(tiny):
    """Spec §7.5: with ctx' = ctx the text features are open_clip's encode_text of "a photo of a {name}."."""
    tiny.set_class_names(NAMES)
    text_features = tiny.encode_prompts(tiny.prompt_learner.ctx)
    reference = F.normalize(tiny.clip.encode_text(open_clip.SimpleTokenizer()(
        [f"a photo of a {name.replace('_', ' ')}." for name in NAMES])), dim=-1)
    assert F.cosine_similarity(text_features, reference, dim=-1).min() > 0.999
    torch.testing.assert_close(text_features, reference, rtol=0, atol=1e-6)
    torch.testing.assert_close(tiny.get_zero_shot_text_features(), reference)
    pixels, _ = inputs(tiny.config, 16)
    f = tiny.get_image_features(pixels)
    logits = tiny.compute_logits(f, text_features)
    zero_shot = 100 * F.normalize(tiny.clip.encode_image(pixels), dim=-1) @ reference.t()
    torch.testing.assert_close(logits, zero_shot, rtol=0, atol=1e-4)
    assert torch.equal(logits.argmax(-1), zero_shot.argmax(-1))
    # the refined context is per image and differs from ctx at step 0 (random out-projection, spec §1.6)
    context = tiny(pixels[:2], torch.randn(2, tiny.config.caption_dim)).context
    assert not torch.allclose(context[0], tiny.prompt_learner.ctx) and not torch.allclose(context[0], context[1])


@torch.no_grad()
def test_truncated_prompts_equal_full_length(tiny):
    pixels, captions = inputs(tiny.config, 3)
    tiny.set_class_names(NAMES, truncate=False)
    full = tiny(pixels, captions)
    assert tiny.token_suffix.shape[1] == 77 - 5
    tiny.set_class_names(NAMES, truncate=True)
    truncated = tiny(pixels, captions)
    assert tiny.token_suffix.shape[1] < 20
    torch.testing.assert_close(truncated.text_features, full.text_features, rtol=0, atol=1e-5)
    torch.testing.assert_close(truncated.logits, full.logits, rtol=0, atol=1e-4)


@torch.no_grad()
def test_chunked_text_encoder_matches_one_batch():
    torch.manual_seed(0)
    one = BiMoRSModel(BiMoRSConfig.tiny()).eval()
    chunked = BiMoRSModel(BiMoRSConfig.tiny(text_chunk_size=5)).eval()
    chunked.load_state_dict(one.state_dict())
    pixels, captions = inputs(one.config, 3)
    torch.testing.assert_close(chunked(pixels, captions, class_names=NAMES).logits,
                               one(pixels, captions, class_names=NAMES).logits, rtol=1e-6, atol=1e-5)  # fp32 sums


def test_loss_and_gradients_reach_only_the_prompt_learner(tiny):
    tiny.train()
    pixels, captions = inputs(tiny.config, 4)
    labels = torch.tensor([0, 3, 5, 1])
    out = tiny(pixels, captions, labels=labels, class_names=NAMES)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels))
    out.loss.backward()
    trainable = {name for name, p in tiny.named_parameters() if p.requires_grad}
    assert trainable == {f"prompt_learner.{name}" for name, _ in tiny.prompt_learner.named_parameters()}
    for name, p in tiny.named_parameters():
        if name in trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_trainable_caption_projection():
    torch.manual_seed(0)
    model = BiMoRSModel(BiMoRSConfig.tiny(caption_proj="trainable"))
    assert count(model, trainable=True) == count(model.prompt_learner) + count(model.caption_projection)
    pixels, captions = inputs(model.config, 2)
    model(pixels, captions, labels=torch.tensor([0, 1]), class_names=NAMES[:2]).loss.backward()
    assert model.caption_projection.weight.grad.abs().sum() > 0


def test_initialisation():
    torch.manual_seed(1)
    a = BiMoRSModel(BiMoRSConfig.tiny())
    torch.manual_seed(2)
    b = BiMoRSModel(BiMoRSConfig.tiny())
    c = BiMoRSModel(BiMoRSConfig.tiny(caption_proj_seed=7))
    # the caption projection has its own seeded generator: independent of the global RNG, PyTorch's Linear default
    torch.testing.assert_close(a.caption_projection.weight, b.caption_projection.weight, rtol=0, atol=0)
    torch.testing.assert_close(a.caption_projection.bias, b.caption_projection.bias, rtol=0, atol=0)
    assert not torch.equal(a.caption_projection.weight, c.caption_projection.weight)
    assert a.caption_projection.in_features == a.config.caption_dim == 64  # the tiny synthetic BERT's width
    bound = 1 / math.sqrt(64)
    assert a.caption_projection.weight.abs().max() <= bound and a.caption_projection.weight.std() > bound / 2
    attn = a.prompt_learner.refiner.attn
    assert attn.in_proj_bias.eq(0).all() and attn.out_proj.bias.eq(0).all() and attn.out_proj.weight.std() > 0
    assert not torch.equal(a.prompt_learner.meta_net.linear1.weight, b.prompt_learner.meta_net.linear1.weight)
    for norm in (a.prompt_learner.refiner.norm_q, a.prompt_learner.refiner.norm_kv):
        assert norm.weight.eq(1).all() and norm.bias.eq(0).all()
    assert torch.equal(a.clip.attn_mask, torch.full((77, 77), float("-inf")).triu(1))
    assert a.logit_scale.item() == pytest.approx(100.0)


@torch.no_grad()
def test_save_load_round_trip(tiny, tmp_path):
    pixels, captions = inputs(tiny.config, 3)
    expected = tiny(pixels, captions, class_names=NAMES).logits
    tiny.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as saved:
        keys = set(saved.keys())
        torch.testing.assert_close(saved.get_tensor("caption_projection.weight"), tiny.caption_projection.weight)
    assert {"caption_projection.weight", "caption_projection.bias", "prompt_learner.ctx"} <= keys
    assert not keys & {"token_prefix", "token_suffix", "eos_index", "clip.attn_mask"}  # class-agnostic checkpoint
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "bimors" and config["clip_model"]["text_cfg"]["width"] == 32

    loaded = BiMoRSModel.from_pretrained(tmp_path).eval()
    assert loaded.class_names is None
    torch.testing.assert_close(loaded.caption_projection.weight, tiny.caption_projection.weight, rtol=0, atol=0)
    assert torch.equal(loaded.clip.attn_mask, tiny.clip.attn_mask)
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == {
        n for n, p in tiny.named_parameters() if p.requires_grad}
    torch.testing.assert_close(loaded(pixels, captions, class_names=NAMES).logits, expected, rtol=0, atol=0)


def test_load_local_clip_weights(tmp_path):
    config = BiMoRSConfig.tiny()
    torch.manual_seed(3)
    source = open_clip.CLIP(**config.clip_config())
    save_file(source.state_dict(), tmp_path / "clip.safetensors")
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "clip.bin")
    for name in ("clip.safetensors", "clip.bin"):
        model = BiMoRSModel.from_clip(tmp_path / name, config)
        torch.testing.assert_close(model.clip.token_embedding.weight, source.token_embedding.weight, rtol=0, atol=0)
        torch.testing.assert_close(model.clip.visual.proj, source.visual.proj, rtol=0, atol=0)
        torch.testing.assert_close(model.prompt_learner.ctx, source.token_embedding.weight[[320, 1125, 539, 320]])
        assert model.logit_scale.item() == pytest.approx(100.0)
    with pytest.raises(FileNotFoundError, match="missing.safetensors.*timm/vit_base_patch16_clip_224.openai"):
        BiMoRSModel.from_clip(tmp_path / "missing.safetensors", config)
    other = open_clip.CLIP(**BiMoRSConfig.tiny(clip_model={**config.clip_model, "embed_dim": 40}).clip_config())
    save_file(other.state_dict(), tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="wrong shapes.*text_projection"):
        BiMoRSModel.from_clip(tmp_path / "other.safetensors", config)
    with zipfile.ZipFile(tmp_path / "ViT-B-16.pt", "w") as archive:  # the layout of a TorchScript archive
        archive.writestr("ViT-B-16/code/__torch__/model.py", "")
        archive.writestr("ViT-B-16/constants.pkl", b"")
    with pytest.raises(ValueError, match="TorchScript archive"):
        BiMoRSModel.from_clip(tmp_path / "ViT-B-16.pt", config)


def test_bad_input_errors(tiny):
    pixels, captions = inputs(tiny.config, 2)
    with pytest.raises(ValueError, match="no class names"):
        tiny(pixels, captions)
    with pytest.raises(ValueError, match=r"pixel_values must be \(B, 3, 32, 32\)"):
        tiny(torch.randn(2, 3, 64, 64), captions, class_names=NAMES)
    with pytest.raises(ValueError, match=r"caption_embeds must be \(2, 64\)"):
        tiny(pixels, torch.randn(3, 768), class_names=NAMES)
    with pytest.raises(ValueError, match=r"labels must be 2 class indices in \[0, 6\)"):
        tiny(pixels, captions, labels=torch.tensor([0, 6]), class_names=NAMES)
    with pytest.raises(ValueError, match="non-empty list"):
        tiny.set_class_names("oil_well")
    with pytest.raises(ValueError, match="longer than CLIP's 77 tokens"):
        tiny.set_class_names(["word " * 80])


def test_config_validation_and_round_trip(tmp_path):
    config = BiMoRSConfig.tiny(caption_proj="trainable")
    config.save_pretrained(tmp_path)
    again = BiMoRSConfig.from_pretrained(tmp_path)
    assert again.clip_model == config.clip_model and again.caption_proj == "trainable"
    assert BiMoRSConfig.paper().clip_config()["vision_cfg"] == {"image_size": 224, "layers": 12, "width": 768,
                                                                 "patch_size": 16}
    assert BiMoRSConfig.paper().text_width == 512 and BiMoRSConfig.paper().context_length == 77
    with pytest.raises(StrictDataclassClassValidationError, match="caption_proj must be one of"):
        BiMoRSConfig.tiny(caption_proj="learned")
    with pytest.raises(StrictDataclassClassValidationError, match="not an open_clip built-in model name"):
        BiMoRSConfig(clip_model="ViT-Z-99")
    with pytest.raises(StrictDataclassClassValidationError, match="OpenAI-style CLIP.*hf_model_name"):
        BiMoRSConfig(clip_model="coca_roberta-ViT-B-32")
    with pytest.raises(StrictDataclassClassValidationError, match="refiner_heads 5 must divide"):
        BiMoRSConfig.tiny(refiner_heads=5)
    with pytest.raises(ValueError, match="ctx_init 'a photo' is 2 BPE tokens; n_ctx is 4"):
        BiMoRSModel(BiMoRSConfig.tiny(ctx_init="a photo"))
    model = BiMoRSModel(BiMoRSConfig.tiny(template="an image of a {}."))
    with pytest.raises(ValueError, match="must start with ctx_init"):
        model.set_class_names(["runway"])
