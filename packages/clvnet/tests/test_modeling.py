"""CLVNetModel on the tiny preset (spec §7 parity points): shapes, [SEG] states, SAM2 call path, the paper preset on
the meta device, Partial LoRA, LoRA mode, save/load, gradients, ablations and grounded generation."""

import numpy as np
import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from rs_shared.hub import WeightsMismatchError

from clvnet.configuration import CLVNetConfig
from clvnet.modeling import CLVNetModel
from clvnet.processing import CLVNetProcessor, num_image_tokens

GCG_ANSWER = "In the scene <p> the plane </p> [SEG] is parked beside <p> two cars </p> [SEG] on the apron."


def seg_counts(batch, config) -> list[int]:
    return (batch["input_ids"] == config.seg_token_id).sum(1).tolist()


def answer_positions(input_ids, seg_id):
    return torch.nonzero(input_ids == seg_id).flatten()


# --- §7.1 / §7.2 shapes --------------------------------------------------------------------------------------

@torch.no_grad()
def test_shapes_through_the_pipeline(tiny_model, train_batch):
    model, batch, c = tiny_model, train_batch, tiny_model.config
    dim, prompt_dim = c.text_config.hidden_size, c.prompt_dim
    image_tokens, regions, global_tokens = model.encode_images(
        batch["clip_pixel_values"], batch["image_grids"], batch["region_boxes"], batch["box_coords"])
    n_img = num_image_tokens((1, 1), c.view_tokens_side)
    assert n_img == 41  # (1·1 + 1)·4² + 1 + (1 + 1)·4
    assert [x.shape for x in image_tokens] == [(n_img, dim)] * 2  # f_x
    assert [r.shape for r in regions] == [(c.region_tokens, dim)] * 2  # f_r (K, D)
    assert [g.shape for g in global_tokens] == [(c.view_tokens_side ** 2, dim)] * 2

    embeds, visual = model.embed_inputs(batch["input_ids"], image_tokens, regions)
    assert embeds.shape == (*batch["input_ids"].shape, dim)
    assert visual.sum(1).tolist() == [n_img + c.region_tokens] * 2
    hidden = model.llm_hidden_states(embeds, batch["attention_mask"], visual)
    features = model.sam_image_features(batch["sam_pixel_values"])
    assert [tuple(f.shape) for f in features] == [(2, 4, 32, 32), (2, 8, 16, 16), (2, 32, 8, 8)]  # tiny SAM2, §6

    i = 1  # the sample with several objects
    positions = model.seg_positions(batch["input_ids"])[i]
    n = len(batch["gt_masks"][i])
    f_h = hidden[i, positions]
    assert f_h.shape == (n, dim)
    relation = model.relate(f_h, regions[i], global_tokens[i])
    assert relation.object_states.shape == relation.grounded.shape == (n, dim)  # f_o, f_g
    assert (relation.relation > 0).all()
    torch.testing.assert_close(relation.relation.sum(-1), torch.ones(n))
    assert set(relation.adjacency.unique().tolist()) <= {0.0, 1.0}
    prompts = model.text_projector(relation.grounded)
    assert prompts.shape == (n, prompt_dim)  # P(f_g) (N, C_sam)
    size = tuple(batch["image_sizes"][i].tolist())
    logits, iou, tokens = model.decode_masks(features, i, prompts, size)
    assert logits.shape == (n, *size) and logits.dtype == torch.float32
    assert iou.shape == (n,) and tokens.shape == (n, prompt_dim)


@torch.no_grad()
def test_forward_gives_one_mask_per_seg(tiny_model, train_batch):
    out = tiny_model(**train_batch)
    counts = seg_counts(train_batch, tiny_model.config)
    assert [len(m) for m in out.pred_masks] == counts == [len(m) for m in train_batch["gt_masks"]]
    for masks, size in zip(out.pred_masks, train_batch["image_sizes"].tolist()):
        assert masks.shape[1:] == tuple(size)
    for name in ("loss", "loss_caption", "loss_mask", "loss_bce", "loss_dice", "loss_csc", "loss_rec"):
        assert getattr(out, name).ndim == 0 and torch.isfinite(getattr(out, name)), name
    c = tiny_model.config
    total = (c.caption_loss_weight * out.loss_caption + c.bce_loss_weight * out.loss_bce
             + c.dice_loss_weight * out.loss_dice + c.sralign_weight * (out.loss_csc + out.loss_rec))
    torch.testing.assert_close(out.loss, total)  # eq. 13
    inference = {k: v for k, v in train_batch.items() if k not in ("labels", "gt_masks")}
    out = tiny_model(**inference)
    assert out.loss is None and [len(m) for m in out.pred_masks] == counts


def test_gt_mask_count_mismatch_is_an_error(tiny_model, train_batch):
    batch = dict(train_batch, gt_masks=[train_batch["gt_masks"][0], train_batch["gt_masks"][1][:-1]])
    with pytest.raises(ValueError, match=r"sample 1: gt_masks"):
        tiny_model(**batch)


def test_gt_masks_without_seg_is_an_error(tiny_model, processor, train_items):
    """A sample whose answer has no [SEG] but which comes with masks must not be skipped silently (§7 point 2)."""
    item = train_items[0]
    image = np.zeros((*item["image_size"].tolist(), 3), np.uint8)
    sample = processor(image, item["box"].numpy(), answer="An empty apron.")
    sample["gt_masks"] = item["gt_masks"]
    with pytest.raises(ValueError, match="gt_masks"):
        tiny_model(**processor.collate([sample]))


def test_token_count_mismatch_is_an_error(tiny_model, train_batch):
    ids = train_batch["input_ids"].clone()
    ids[0, ids[0] == tiny_model.config.box_token_id] = tiny_model.config.pad_token_id
    with pytest.raises(ValueError, match="<BOX> tokens"):
        tiny_model(**dict(train_batch, input_ids=ids))


# --- §7.8 [SEG] state -------------------------------------------------------------------------------------------

def test_seg_state_positions(make_model):
    at, before = make_model(), make_model(seg_state="before_token")
    seg = at.config.seg_token_id
    ids = torch.tensor([[5, seg, 7, 8, seg, 0], [seg, 9, 9, 9, 9, seg]])
    assert [p.tolist() for p in at.seg_positions(ids)] == [[1, 4], [0, 5]]
    assert [p.tolist() for p in before.seg_positions(ids)] == [[0, 3], [-1, 4]]


@pytest.mark.parametrize("seg_state", ["at_token", "before_token"])
@torch.no_grad()
def test_forward_reads_the_configured_seg_state(make_model, train_batch, seg_state, monkeypatch):
    model = make_model(seg_state=seg_state)
    seen = []
    relate = model.relate
    monkeypatch.setattr(model, "relate", lambda states, *args: seen.append(states) or relate(states, *args))
    model(**train_batch)
    images, regions, _ = model.encode_images(train_batch["clip_pixel_values"], train_batch["image_grids"],
                                             train_batch["region_boxes"], train_batch["box_coords"])
    embeds, visual = model.embed_inputs(train_batch["input_ids"], images, regions)
    hidden = model.llm_hidden_states(embeds, train_batch["attention_mask"], visual)
    shift = 1 if seg_state == "before_token" else 0
    for i, states in enumerate(seen):
        positions = answer_positions(train_batch["input_ids"][i], model.config.seg_token_id) - shift
        torch.testing.assert_close(states, hidden[i, positions])


# --- §7.10 SAM2 call path ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def paper_meta(tokenizer):
    """The paper preset (IXC-2.5 7B + SAM2-Hiera-L) on the meta device: shapes and counts, no memory."""
    from clvnet.tokenizer import TokenIds

    with torch.device("meta"):
        model = CLVNetModel(CLVNetConfig.paper(**TokenIds.of(tokenizer).config_kwargs()))
    model.set_trainable_parameters()
    return model.eval()


def test_sam2_features_and_decoder_call_at_1024(paper_meta):
    model = paper_meta
    pixels = torch.zeros(1, 3, 1024, 1024, device="meta")
    features = model.sam_image_features(pixels)
    assert [tuple(f.shape) for f in features] == [(1, 32, 256, 256), (1, 64, 128, 128), (1, 256, 64, 64)]
    calls = []
    hook = model.sam.mask_decoder.register_forward_hook(
        lambda module, args, kwargs, output: calls.append((kwargs, output)), with_kwargs=True)
    n, size = 3, (800, 600)
    try:
        logits, iou, tokens = model.decode_masks(features, 0, torch.zeros(n, 256, device="meta"), size)
    finally:
        hook.remove()
    kwargs, (masks, iou_raw, _, _) = calls[0]
    assert tuple(kwargs["sparse_prompt_embeddings"].shape) == (1, n, 1, 256)  # exactly one token per object
    assert tuple(kwargs["dense_prompt_embeddings"].shape) == (1, 256, 64, 64)
    assert kwargs["multimask_output"] is False
    assert tuple(masks.shape) == (1, n, 1, 256, 256)  # low-res logits at 1024 input (§7 point 1)
    assert tuple(logits.shape) == (n, *size) and tuple(iou.shape) == (n,) and tuple(tokens.shape) == (n, 256)


@torch.no_grad()
def test_eval_mode_applies_the_dynamic_multimask_fallback(tiny_model, train_batch):
    model = tiny_model
    decoder = model.sam.mask_decoder
    assert not decoder.dynamic_multimask_via_stability  # tiny: the multimask tokens never train from scratch
    assert CLVNetConfig.paper().sam_config.mask_decoder_config.dynamic_multimask_via_stability  # GeoPixel: on
    decoder.dynamic_multimask_via_stability = True
    features = model.sam_image_features(train_batch["sam_pixel_values"])
    prompts = torch.randn(8, model.config.prompt_dim, generator=torch.Generator().manual_seed(0)) * 3
    low_res = (32, 32)  # the tiny decoder's own resolution: the resize is the identity
    try:
        decoder.train()
        single, single_iou, _ = model.decode_masks(features, 0, prompts, low_res)
        decoder.eval()
        chosen, chosen_iou, _ = model.decode_masks(features, 0, prompts, low_res)
    finally:
        decoder.eval()
        decoder.dynamic_multimask_via_stability = False
    stable = decoder._get_stability_scores(single) >= decoder.dynamic_multimask_stability_thresh
    assert (~stable).any()  # random weights: some objects are unstable
    assert torch.equal(chosen[stable], single[stable])  # stable: token 0, as in training
    assert not torch.equal(chosen[~stable], single[~stable])  # unstable: the best multimask output
    dense = model.sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand_as(features[2][:1])
    all_masks, all_iou, _, _ = decoder(
        image_embeddings=features[2][:1], image_positional_embeddings=model.sam.get_image_wide_positional_embeddings(),
        sparse_prompt_embeddings=prompts[None, :, None], dense_prompt_embeddings=dense, multimask_output=True,
        high_resolution_features=[features[0][:1], features[1][:1]])
    best = all_iou[0].argmax(-1)
    for j in torch.nonzero(~stable).flatten().tolist():
        torch.testing.assert_close(chosen[j], all_masks[0, j, best[j]])
        torch.testing.assert_close(chosen_iou[j], all_iou[0, j, best[j]])
    torch.testing.assert_close(single_iou[stable], chosen_iou[stable])


# --- §2/§5 paper preset ------------------------------------------------------------------------------------------

def count(parameters) -> int:
    return sum(p.numel() for p in parameters)


def test_paper_preset_sizes_and_trainable_share(paper_meta):
    model = paper_meta
    llm = count(p for n, p in model.language_model.named_parameters() if "lora_" not in n)
    assert 7.6e9 < llm < 7.9e9  # InternLM2-7B in Llama layout: 7.74 B
    assert 300e6 < count(model.vision_tower.parameters()) < 310e6  # CLIP ViT-L/14
    assert 205e6 < count(model.sam.vision_encoder.parameters()) < 220e6  # Hiera-L + FPN neck
    assert model.cgformer is not None and model.cgformer.cross_attention.num_heads == 32
    assert model.partial_lora is not None and len(model.partial_lora) == 32
    trainable = count(p for p in model.parameters() if p.requires_grad)
    total = count(model.parameters())
    assert 0.9e9 < trainable < 1.2e9 and 0.09 < trainable / total < 0.13  # 1.054 B of 9.22 B (11.4 %)
    for module in (model.vision_tower, model.sam.vision_encoder, model.partial_lora):
        assert not any(p.requires_grad for p in module.parameters())
    lm = model.language_model
    assert lm.get_input_embeddings().weight.requires_grad and lm.get_output_embeddings().weight.requires_grad
    for name, p in lm.named_parameters():
        if "embed_tokens" not in name and "lm_head" not in name:
            assert p.requires_grad == ("lora_" in name), name
    for module in (model.cgformer, model.text_projector, model.sralign, model.sam.mask_decoder):
        assert all(p.requires_grad for p in module.parameters())


# --- Partial LoRA (§1.2, §6) -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def plora_model(make_model):
    model = make_model(partial_lora_rank=4, partial_lora_alpha=4)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for deltas in model.partial_lora:
            for delta in deltas.values():
                delta.lora_A.weight.copy_(torch.randn(delta.lora_A.weight.shape, generator=generator) * 0.3)
                delta.lora_B.weight.copy_(torch.randn(delta.lora_B.weight.shape, generator=generator) * 0.3)
    return model


def test_partial_lora_starts_as_identity(make_model):
    model = make_model(partial_lora_rank=4, partial_lora_alpha=4)
    for deltas in model.partial_lora:
        for name, delta in deltas.items():
            assert not delta.lora_B.weight.any(), name  # documented: "Partial LoRA starts at zero"


@torch.no_grad()
def test_partial_lora_acts_at_visual_positions_only(plora_model, train_batch):
    model, batch = plora_model, train_batch
    images, regions, _ = model.encode_images(batch["clip_pixel_values"], batch["image_grids"],
                                             batch["region_boxes"], batch["box_coords"])
    embeds, visual = model.embed_inputs(batch["input_ids"], images, regions)
    q_proj = model.language_model.model.layers[0].self_attn.q_proj
    outputs = []
    hook = q_proj.register_forward_hook(lambda module, args, output: outputs.append(output))
    try:
        with_delta = model.llm_hidden_states(embeds, batch["attention_mask"], visual)
        without = model.llm_hidden_states(embeds, batch["attention_mask"], torch.zeros_like(visual))
    finally:
        hook.remove()
    changed = (outputs[0] - outputs[1]).abs().amax(-1) > 0  # layer 0 sees identical inputs
    # the row/global separators start at zero (so does φ_l's bias): their tokens are 0 and so is their delta
    assert torch.equal(changed, visual & (embeds.abs().amax(-1) > 0))
    assert changed.sum(1).min() > 30
    assert visual.sum(1).tolist() == [41 + 4] * 2  # the <IMAGE> and <BOX> positions
    first = int(visual[0].nonzero()[0])
    torch.testing.assert_close(with_delta[:, :first], without[:, :first])  # <s> before the image: untouched
    assert not torch.allclose(with_delta[:, first:], without[:, first:])


@torch.no_grad()
def test_partial_lora_cached_greedy_matches_full_recompute(plora_model, processor, train_items):
    model = plora_model
    item = train_items[1]
    image = np.random.default_rng(0).integers(0, 255, (*item["image_size"].tolist(), 3), dtype=np.uint8)
    batch = processor.collate([processor(image, item["box"].numpy())])
    images, regions, _ = model.encode_images(batch["clip_pixel_values"], batch["image_grids"],
                                             batch["region_boxes"], batch["box_coords"])
    embeds, visual = model.embed_inputs(batch["input_ids"], images, regions)
    tokens = model._greedy(embeds, visual, 6, stop=set())
    assert len(tokens) == 6
    table = model.language_model.get_input_embeddings()
    for t in range(6):  # no cache: prompt + the tokens so far, Partial LoRA at the prompt's visual positions
        full = torch.cat([embeds, table(torch.tensor([tokens[:t]], dtype=torch.long))], 1)
        mask = torch.nn.functional.pad(visual, (0, t))
        hidden = model.llm_hidden_states(full, None, mask)
        assert int(model.language_model.lm_head(hidden[0, -1]).argmax()) == tokens[t]
    predictions = model.generate_grounded(batch, processor.tokenizer, max_new_tokens=4)
    assert len(predictions) == 1 and isinstance(predictions[0].text, str)


# --- LoRA mode and save/load (§2, §5) ------------------------------------------------------------------------------

def randomize(parameters, seed: int = 0, scale: float = 0.05) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in parameters:
            p.copy_(torch.randn(p.shape, generator=generator) * scale)


def test_lora_mode_trainable_parameters(make_model):
    model = make_model(llm_training="lora", freeze_vision_tower=True, freeze_sam_encoder=True)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    llm = {name for name in trainable if name.startswith("language_model.")}
    assert llm and all("lora_" in n or "embed_tokens" in n or "lm_head" in n for n in llm)
    assert {"language_model.model.embed_tokens.weight", "language_model.lm_head.weight"} <= llm
    assert any(".q_proj.lora_A.default" in n for n in llm) and any(".down_proj.lora_B.default" in n for n in llm)
    assert not any(n.startswith(("vision_tower.", "sam.vision_encoder.")) for n in trainable)
    assert "sam.no_memory_embedding" not in trainable
    for prefix in ("cgformer.", "text_projector.", "sralign.", "sam.mask_decoder.", "vision_proj.",
                   "region_box_embed."):
        names = [n for n, _ in model.named_parameters() if n.startswith(prefix)]
        assert names and set(names) <= trainable, prefix
    total = sum(p.numel() for p in model.parameters())
    share = sum(p.numel() for n, p in model.named_parameters() if n in trainable) / total
    assert 0.2 < share < 0.6  # the tiny LLM is mostly its embedding matrices, which train


def test_fresh_lora_adapter_is_the_identity(make_model):
    model = make_model(llm_training="lora")
    lora_b = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert lora_b and not any(p.any() for p in lora_b.values())  # peft's init: B = 0


@pytest.mark.parametrize("llm_training", ["full", "lora"])
@torch.no_grad()
def test_save_pretrained_round_trip(make_model, train_batch, tmp_path, llm_training):
    model = make_model(llm_training=llm_training)
    randomize([p for n, p in model.named_parameters() if "lora_B" in n], seed=1)
    model.save_pretrained(tmp_path)
    loaded, info = CLVNetModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert loaded.config.llm_training == llm_training
    loaded.eval()
    loaded_state = loaded.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded_state[name]), name
    before, after = model(**train_batch), loaded(**train_batch)
    assert torch.equal(before.loss, after.loss)
    for a, b in zip(before.pred_masks, after.pred_masks):  # same weights; kernels may differ in the last bits
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9)


@torch.no_grad()
def test_loading_is_strict(make_model, tmp_path):
    """A directory saved in full mode loaded as LoRA (plain ``q_proj.weight`` vs ``q_proj.base_layer.weight``), a
    removed key, or a wrong shape: an error listing the differences, never randomly initialised weights."""
    from safetensors.torch import load_file, save_file

    make_model().save_pretrained(tmp_path)
    config = CLVNetConfig.from_pretrained(tmp_path)
    config.llm_training = "lora"
    with pytest.raises(WeightsMismatchError, match=r"missing keys .*q_proj\.base_layer\.weight(.|\n)*unexpected keys .*q_proj\.weight"):
        CLVNetModel.from_pretrained(tmp_path, config=config)
    weights = load_file(tmp_path / "model.safetensors")
    weights.pop("cgformer.phi_o.bias")
    weights["text_projector.0.bias"] = torch.zeros(3)
    weights["sralign.surplus"] = torch.zeros(2)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsMismatchError) as info:
        CLVNetModel.from_pretrained(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'model.safetensors'} does not match CLVNetModel")
    assert "missing keys (in the model, not in the file) [1]: cgformer.phi_o.bias" in message
    assert "unexpected keys (in the file, not in the model) [1]: sralign.surplus" in message
    assert "wrong shapes [1]: text_projector.0.bias: (3) in the file, (128) in the model" in message


# --- §1.4/§1.5 gradients and ablations -------------------------------------------------------------------------

def backward(model, batch):
    model.train()
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    return out


def grad_sum(module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_one_backward_reaches_every_head(make_model, train_batch):
    model = make_model()
    out = backward(model, train_batch)
    for name in ("loss", "loss_caption", "loss_bce", "loss_dice", "loss_csc", "loss_rec"):
        assert torch.isfinite(getattr(out, name)), name
    assert out.loss_csc != 0 and out.loss_rec > 0  # sample 1 has several objects (§7 points 4–5)
    for name in ("phi_o", "phi_h", "phi_v", "phi_e", "phi_g", "psi", "cross_attention"):
        assert grad_sum(getattr(model.cgformer, name)) > 0, name
    for name in ("text_head", "mask_head", "visual_phi_h", "visual_phi_v"):
        assert grad_sum(getattr(model.sralign, name)) > 0, name
    assert model.sralign.logit_scale.grad.abs() > 0
    assert grad_sum(model.text_projector) > 0
    decoder = model.sam.mask_decoder
    assert grad_sum(decoder.transformer) > 0 and grad_sum(decoder.output_hypernetworks_mlps[0]) > 0
    assert grad_sum(model.vision_proj) > 0 and grad_sum(model.region_box_embed) > 0


def test_sralign_weight_zero_leaves_its_heads_alone(make_model, train_batch):
    model = make_model(sralign_weight=0.0)
    out = backward(model, train_batch)
    assert out.loss_csc == 0 and out.loss_rec == 0
    assert grad_sum(model.sralign) == 0
    assert grad_sum(model.cgformer) > 0 and grad_sum(model.text_projector) > 0


def test_no_box_ablation_runs_with_its_processor(make_model, tokenizer, gcg_root):
    from clvnet.data import GCGTrainDataset

    model = make_model(use_box_prompt=False)
    processor = CLVNetProcessor.from_config(model.config, tokenizer)
    dataset = GCGTrainDataset(gcg_root, processor, split="train")
    batch = processor.collate([dataset[0], dataset[1]])
    assert not (batch["input_ids"] == model.config.box_token_id).any()
    assert model.region_box_embed is None
    _, regions, _ = model.encode_images(batch["clip_pixel_values"], batch["image_grids"], batch["region_boxes"],
                                        batch["box_coords"])
    assert regions == []
    out = backward(model, batch)
    assert torch.isfinite(out.loss) and grad_sum(model.cgformer) > 0
    assert [len(m) for m in out.pred_masks] == seg_counts(batch, model.config)


def test_no_cgformer_ablation_uses_the_seg_states(make_model, train_batch):
    model = make_model(use_cgformer=False)
    assert model.cgformer is None
    out = backward(model, train_batch)
    assert torch.isfinite(out.loss) and out.loss_rec == 0 and grad_sum(model.text_projector) > 0
    model.eval()
    with torch.no_grad():
        out = model(**train_batch)
        images, regions, _ = model.encode_images(train_batch["clip_pixel_values"], train_batch["image_grids"],
                                                 train_batch["region_boxes"], train_batch["box_coords"])
        embeds, visual = model.embed_inputs(train_batch["input_ids"], images, regions)
        hidden = model.llm_hidden_states(embeds, train_batch["attention_mask"], visual)
        features = model.sam_image_features(train_batch["sam_pixel_values"])
        i = 1
        f_h = hidden[i, model.seg_positions(train_batch["input_ids"])[i]]
        logits, _, _ = model.decode_masks(features, i, model.text_projector(f_h),
                                          tuple(train_batch["image_sizes"][i].tolist()))
    torch.testing.assert_close(out.pred_masks[i], logits)  # f_g := f_h (GeoPixel's path)


def test_sam_box_prompt_adds_the_box_corners_after_each_seg_prompt(make_model, train_batch):
    model = make_model(sam_box_prompt=True)
    with pytest.raises(StrictDataclassClassValidationError, match="sam_box_prompt needs use_box_prompt"):
        make_model(sam_box_prompt=True, use_box_prompt=False)
    seen = []
    hook = model.sam.mask_decoder.register_forward_hook(lambda m, args, kwargs, out: seen.append(kwargs),
                                                        with_kwargs=True)
    with torch.no_grad():
        out = model(**train_batch)
        moved = model(**{**train_batch, "boxes": train_batch["boxes"] * 0.5})
    hook.remove()
    counts = seg_counts(train_batch, model.config)
    assert [tuple(k["sparse_prompt_embeddings"].shape) for k in seen[:2]] == [(1, n, 4, 32) for n in counts]
    # the corner tokens are SAM2's own box embedding of the box scaled to its input (128 px: the tiles' size)
    box = train_batch["boxes"][1]
    corners, _ = model.sam.prompt_encoder(None, None, box.expand(1, counts[1], 4), None)
    torch.testing.assert_close(seen[1]["sparse_prompt_embeddings"][:, :, 1:], corners)
    assert all(not torch.equal(a, b) for a, b in zip(out.pred_masks, moved.pred_masks))  # the masks read the box
    assert torch.equal(out.loss_caption, moved.loss_caption)  # the LLM does not see `boxes` (only region tokens)
    assert torch.isfinite(backward(model, train_batch).loss)


def test_cgformer_context_options(make_model):
    torch.manual_seed(0)
    f_h, regions, global_tokens = torch.randn(3, 128), torch.randn(4, 128), torch.randn(16, 128)
    for context, expected in (("region", regions), ("region+global", torch.cat([regions, global_tokens]))):
        model = make_model(cgformer_context=context)
        with torch.no_grad():
            torch.testing.assert_close(model.relate(f_h, regions, global_tokens).grounded,
                                       model.cgformer(f_h, expected).grounded)
            torch.testing.assert_close(model.relate(f_h, None, global_tokens).grounded,  # no_box: the global view
                                       model.cgformer(f_h, global_tokens).grounded)
    assert model.relate(f_h[:0], regions, global_tokens) is None


# --- §1.6 grounded generation ---------------------------------------------------------------------------------------

def prompt_batch(processor, sizes, seed=0):
    rng = np.random.default_rng(seed)
    samples = [processor(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), [4, 6, w - 10, h - 3]) for h, w in sizes]
    return processor.collate(samples)


@torch.no_grad()
def test_generate_grounded_parses_the_answer(tiny_model, processor, monkeypatch):
    tokenizer = processor.tokenizer
    answers = [GCG_ANSWER, "A quiet field without objects."]
    ids = iter([tokenizer(a, add_special_tokens=False)["input_ids"] for a in answers])
    monkeypatch.setattr(tiny_model, "_greedy", lambda *args: next(ids))
    sizes = [(96, 160), (128, 128)]
    first, second = tiny_model.generate_grounded(prompt_batch(processor, sizes), tokenizer)
    assert first.text == GCG_ANSWER
    assert first.caption == "In the scene the plane is parked beside two cars on the apron."
    assert first.phrases == ["the plane", "two cars"]
    assert first.masks.shape == (2, 96, 160) and first.masks.dtype == bool
    assert first.mask_scores.shape == (2,)
    assert second.text == answers[1] and second.phrases == []
    assert second.masks.shape == (0, 128, 128) and second.mask_scores.shape == (0,)


@torch.no_grad()
def test_generated_masks_match_teacher_forcing(tiny_model, processor, monkeypatch):
    """The [SEG] states read after generation equal those of a teacher-forced pass (§7 point 8)."""
    tokenizer = processor.tokenizer
    answer_ids = tokenizer(GCG_ANSWER, add_special_tokens=False)["input_ids"]
    monkeypatch.setattr(tiny_model, "_greedy", lambda *args: list(answer_ids))
    image = np.random.default_rng(1).integers(0, 255, (96, 160, 3), dtype=np.uint8)
    box = [4, 6, 150, 93]
    prediction = tiny_model.generate_grounded(processor.collate([processor(image, box)]), tokenizer)[0]
    forced = tiny_model(**processor.collate([processor(image, box, answer=GCG_ANSWER)])).pred_masks[0]
    assert forced.shape == prediction.masks.shape
    assert ((forced > 0).numpy() == prediction.masks).mean() > 0.999


@torch.no_grad()
def test_generate_grounded_real_decoding(tiny_model, processor):
    batch = prompt_batch(processor, [(128, 128)])
    prediction, = tiny_model.generate_grounded(batch, processor.tokenizer, max_new_tokens=3)
    assert len(processor.tokenizer(prediction.text, add_special_tokens=False)["input_ids"]) <= 3
    assert len(prediction.masks) == prediction.text.count("[SEG]") and prediction.masks.shape[1:] == (128, 128)
