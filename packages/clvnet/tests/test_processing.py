"""HD views, SAM image, §8 box rule, token layout and labels, processor samples and batches."""


import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clvnet.configuration import CLVNetConfig
from clvnet.processing import (
    CLIP_MEAN,
    CLIP_STD,
    IGNORE_INDEX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    CLVNetProcessor,
    box_coords,
    check_box,
    hd_scale,
    hd_transform,
    num_image_tokens,
    random_box,
    render_sequence,
    sam_transform,
    union_box,
)
from clvnet.tokenizer import BOX, IMAGE, TokenIds, build_tiny_tokenizer

R, PATCH, HD, K, S = 28, 7, 4, 2, 32  # tiny settings: T = 28 / 7 / 2 = 2 tokens per side
ANSWER = "The <p> plane </p> [SEG] is red."


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def processor(tokenizer):
    return CLVNetProcessor(tokenizer, vision_image_size=R, patch_size=PATCH, hd_num=HD, region_tokens=K,
                           sam_image_size=S)


def stitched_frame(views, grid):
    """The de-normalised ``(H, W, 3)`` frame in [0, 1] reassembled from the sub-views."""
    h, w = grid
    r = views.shape[-1]
    subs = views[1:].reshape(h, w, 3, r, r).permute(2, 0, 3, 1, 4).reshape(3, h * r, w * r)
    return (subs * torch.tensor(CLIP_STD).view(3, 1, 1) + torch.tensor(CLIP_MEAN).view(3, 1, 1)).permute(1, 2, 0)


def two_masks(height=60, width=80):
    masks = np.zeros((2, height, width), bool)
    masks[0, 10:20, 5:15] = True  # box [5, 10, 15, 20]
    masks[1, 30:40, 30:50] = True  # box [30, 30, 50, 40]
    return masks


# --- HD transform -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("width", "height", "hd_num", "scale"), [
    (800, 800, 9, 3), (800, 800, 1, 1), (800, 400, 9, 4), (400, 800, 9, 4), (1000, 100, 9, 9), (800, 600, 6, 2),
])
def test_hd_scale(width, height, hd_num, scale):
    # (800, 400): ratio 2, 4·ceil(4/2) = 8 ≤ 9 < 5·ceil(5/2) = 15; (800, 600): 2·ceil(1.5) = 4 ≤ 6 < 3·3 = 9
    assert hd_scale(width, height, hd_num) == scale


def test_geopixeld_tile_token_counts():  # §7 point 9
    tile = np.full((800, 800, 3), 128, np.uint8)
    views, layout = hd_transform(tile, 560, 9)
    assert views.shape == (10, 3, 560, 560) and layout.grid == (3, 3) and layout.frame_size == (1680, 1680)
    assert num_image_tokens(layout.grid, 560 // 14 // 2) == 4081
    views, layout = hd_transform(tile, 560, 1)
    assert views.shape == (2, 3, 560, 560) and layout.grid == (1, 1)
    assert num_image_tokens(layout.grid, 20) == 841
    np.testing.assert_allclose(layout.map_box([100, 200, 300, 400]), [70, 140, 210, 280])


def test_num_image_tokens_by_hand():
    # 1×1 grid, T = 2: global 4 + 2 row separators, 1 separator, sub-view 4 + 2 row separators = 13
    assert num_image_tokens((1, 1), 2) == 13
    assert num_image_tokens((2, 3), 2) == 7 * 4 + 1 + 3 * 2


def test_white_padding_is_centred_and_views_are_clip_normalised():
    image = np.zeros((40, 100, 3), np.uint8)  # landscape 100 × 40, ratio 2.5 → s = 2, 56 × 22, padded to 28
    views, layout = hd_transform(image, R, HD)
    assert layout.grid == (1, 2) and layout.offset == (0, 3) and layout.content_size == (56, 22)
    assert not layout.transposed
    frame = stitched_frame(views, layout.grid)
    assert torch.allclose(frame[:3], torch.ones(1)) and torch.allclose(frame[25:], torch.ones(1))
    assert torch.allclose(frame[3:25], torch.zeros(1), atol=1e-6)
    white = (1 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(views[1][:, 0, 0], white)


def test_global_view_is_bicubic_resize_of_the_padded_frame():
    image = np.random.default_rng(0).integers(0, 256, (50, 90, 3), dtype=np.uint8)
    views, layout = hd_transform(image, R, HD)
    h, w = layout.grid
    subs = views[1:].reshape(h, w, 3, R, R).permute(2, 0, 3, 1, 4).reshape(1, 3, h * R, w * R)
    expected = F.interpolate(subs, size=(R, R), mode="bicubic", align_corners=False)[0]
    assert torch.allclose(views[0], expected, atol=1e-5)


def test_portrait_image_is_the_transpose_of_its_landscape_twin():
    landscape = np.random.default_rng(1).integers(0, 256, (40, 100, 3), dtype=np.uint8)
    portrait = landscape.transpose(1, 0, 2).copy()
    views_l, layout_l = hd_transform(landscape, R, HD)
    views_p, layout_p = hd_transform(portrait, R, HD)
    assert layout_p.transposed and layout_p.grid == (2, 1) and layout_p.frame_size == (28, 56)
    assert torch.equal(stitched_frame(views_p, layout_p.grid), stitched_frame(views_l, layout_l.grid).transpose(0, 1))
    box = np.array([10.0, 20.0, 30.0, 90.0])  # in the portrait image
    mapped = layout_p.map_box(box)
    twin = layout_l.map_box(box[[1, 0, 3, 2]])
    np.testing.assert_allclose(mapped, twin[[1, 0, 3, 2]])


@pytest.mark.parametrize(("height", "width", "hd_num"), [(201, 37, 6), (17, 300, 6), (99, 100, 3), (1, 5, 2)])
def test_odd_aspect_ratios(height, width, hd_num):
    image = np.zeros((height, width, 3), np.uint8)  # black content on white padding
    views, layout = hd_transform(image, R, hd_num)
    h, w = layout.grid
    assert views.shape == (1 + h * w, 3, R, R) and h * w <= hd_num
    frame = stitched_frame(views, layout.grid)
    x1, y1, x2, y2 = layout.map_box([0, 0, width, height])
    assert 0 <= x1 < x2 <= w * R and 0 <= y1 < y2 <= h * R
    inside = frame[int(np.ceil(y1)):int(y2), int(np.ceil(x1)):int(x2)]
    assert inside.numel() and inside.max() < 0.05  # the mapped box holds the (black) image


def test_sam_transform():
    image = np.full((30, 70, 3), 255, np.uint8)
    pixels = sam_transform(image, S)
    assert pixels.shape == (3, S, S) and pixels.dtype == torch.float32
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(pixels[:, 5, 7], expected)


# --- §8 box rule ------------------------------------------------------------------------------------------

def test_union_box_ignores_empty_masks_and_falls_back_to_the_image():
    masks = np.concatenate([two_masks(), np.zeros((1, 60, 80), bool)])
    np.testing.assert_array_equal(union_box(masks), [5, 10, 50, 40])
    np.testing.assert_array_equal(union_box(np.zeros((2, 60, 80), bool)), [0, 0, 80, 60])


def test_random_box_statistics():
    masks = two_masks()
    phrase_boxes = np.array([[5, 10, 15, 20], [30, 30, 50, 40]], float)
    rng = np.random.default_rng(0)
    boxes = np.array([random_box(masks, rng) for _ in range(2000)])
    is_union = (boxes == [5, 10, 50, 40]).all(1)
    assert 0.45 < is_union.mean() < 0.55
    jittered = boxes[~is_union]
    sizes = np.tile(phrase_boxes[:, 2:] - phrase_boxes[:, :2], 2)
    offsets = (jittered[:, None] - phrase_boxes[None]) / sizes[None]  # (M, 2, 4) relative side moves
    owner = np.abs(offsets).max(2).argmin(1)
    relative = offsets[np.arange(len(jittered)), owner]
    assert np.abs(relative).max() <= 0.1 + 1e-9 and np.abs(relative).max() > 0.09
    assert 0.4 < owner.mean() < 0.6  # both phrases are drawn
    assert (jittered[:, 2] > jittered[:, 0]).all() and (jittered[:, 3] > jittered[:, 1]).all()
    assert np.allclose(np.abs(relative).mean(), 0.05, atol=0.01)  # uniform in [-0.1, 0.1]


def test_random_box_is_clipped_and_seeded():
    masks = np.zeros((1, 20, 30), bool)
    masks[0, :10, 20:] = True  # touches the top and right borders
    boxes = np.array([random_box(masks, np.random.default_rng(i), p_union=0.0) for i in range(200)])
    assert boxes.min() >= 0 and (boxes[:, 2] <= 30).all() and (boxes[:, 3] <= 20).all()
    assert (boxes[:, 1] == 0).any() and (boxes[:, 2] == 30).any()
    np.testing.assert_array_equal(random_box(masks, np.random.default_rng(7)), random_box(masks, np.random.default_rng(7)))


def test_check_box_and_box_coords():
    np.testing.assert_array_equal(check_box([0, 0, 80, 60], 80, 60), [0, 0, 80, 60])
    with pytest.raises(ValueError, match="tile A: box .* lies outside the 80x60 image"):
        check_box([10, 10, 81, 20], 80, 60, "tile A")
    with pytest.raises(ValueError, match="tile A: box .* is degenerate"):
        check_box([10, 10, 10, 20], 80, 60, "tile A")
    with pytest.raises(ValueError, match="4 finite numbers"):
        check_box([1, 2, 3], 80, 60)
    np.testing.assert_allclose(box_coords([8, 6, 40, 30], 80, 60), [0.1, 0.1, 0.5, 0.5])


# --- §1.2 / §1.5 layout and labels ------------------------------------------------------------------------

def test_golden_render(tokenizer):  # §7 point 7
    ids = TokenIds.of(tokenizer)
    input_ids, labels = render_sequence(tokenizer, ids, 3, 2, ANSWER, query="Describe <BOX> briefly")
    tokens = ["<s>", IMAGE, IMAGE, IMAGE, "[UNUSED_TOKEN_146]", "user", "\n", "Describe", "▁", BOX, BOX, "▁briefly",
              "[UNUSED_TOKEN_145]", "\n", "[UNUSED_TOKEN_146]", "assistant", "\n",
              "The", "▁", "<p>", "▁plane", "▁", "</p>", "▁", "[SEG]", "▁is", "▁red", ".", "[UNUSED_TOKEN_145]", "\n",
              "</s>"]
    assert input_ids == tokenizer.convert_tokens_to_ids(tokens)
    n_prompt = tokens.index("The")
    assert labels == [IGNORE_INDEX] * n_prompt + input_ids[n_prompt:]
    targets = {t for t, label in zip(input_ids, labels) if label != IGNORE_INDEX}
    assert {ids.seg, ids.p_open, ids.p_close, ids.im_end, ids.eos} <= targets
    assert not {ids.bos, ids.image, ids.box, ids.im_start} & targets

    after, after_labels = render_sequence(tokenizer, ids, 3, 2, ANSWER, query="Describe <BOX> briefly",
                                          bos_position="after_image")
    assert after == [ids.image] * 3 + [ids.bos] + input_ids[4:]
    assert after_labels == labels
    prompt, no_labels = render_sequence(tokenizer, ids, 3, 2, None, query="Describe <BOX> briefly")
    assert prompt == input_ids[:n_prompt] and no_labels is None


def test_render_errors(tokenizer):
    ids = TokenIds.of(tokenizer)
    with pytest.raises(ValueError, match="exactly one <BOX>"):
        render_sequence(tokenizer, ids, 1, 4, None, query="no box here")
    with pytest.raises(ValueError, match="bos_position"):
        render_sequence(tokenizer, ids, 1, 4, None, bos_position="middle")


# --- processor --------------------------------------------------------------------------------------------

def test_sample_contents(processor, tokenizer):
    image = np.random.default_rng(2).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    sample = processor(image, [8, 6, 40, 30], ANSWER, two_masks()[:1])
    ids = TokenIds.of(tokenizer)
    grid = tuple(sample["image_grid"].tolist())
    assert grid == (2, 2)  # ratio 4/3, hd_num 4: s = 2 (2·ceil(1.5) = 4); 56 × 42 padded to 56 × 56
    assert (sample["input_ids"] == ids.image).sum() == num_image_tokens(grid, 2) == 5 * 4 + 1 + 3 * 2
    assert (sample["input_ids"] == ids.box).sum() == K
    assert sample["clip_pixel_values"].shape == (5, 3, R, R)
    assert sample["sam_pixel_values"].shape == (3, S, S)
    assert sample["image_size"].tolist() == [60, 80] and sample["box"].tolist() == [8, 6, 40, 30]
    np.testing.assert_allclose(sample["box_coords"], [0.1, 0.1, 0.5, 0.5])
    np.testing.assert_allclose(sample["region_box"], np.array([8, 6, 40, 30]) * 0.7 + [0, 7, 0, 7], rtol=1e-6)
    assert sample["gt_masks"].dtype == torch.bool and sample["gt_masks"].shape == (1, 60, 80)
    answer = sample["input_ids"][sample["labels"] != IGNORE_INDEX]
    assert tokenizer.decode(answer) == ANSWER + "[UNUSED_TOKEN_145]\n</s>"


def test_box_rule_inside_the_processor(processor):
    image = np.zeros((60, 80, 3), np.uint8)
    masks = two_masks()
    evaluation = processor(image, None, masks=masks)
    assert evaluation["box"].tolist() == [5, 10, 50, 40] and "labels" not in evaluation
    one = processor(image, None, masks=masks, train=True, rng=np.random.default_rng(3))
    two = processor(image, None, masks=masks, train=True, rng=np.random.default_rng(3))
    assert torch.equal(one["box"], two["box"])


def test_processor_errors(processor):
    image = np.zeros((60, 80, 3), np.uint8)
    with pytest.raises(ValueError, match=r"tile P0001: the answer has 1 \[SEG\] tokens but 2 masks"):
        processor(image, [0, 0, 10, 10], ANSWER, two_masks(), record="tile P0001")
    with pytest.raises(ValueError, match="tile P0001: box .* outside the 80x60 image"):
        processor(image, [0, 0, 90, 10], record="tile P0001")
    with pytest.raises(ValueError, match="degenerate"):
        processor(image, [5, 5, 5, 10])
    with pytest.raises(ValueError, match="give a box prompt or the masks"):
        processor(image, None)
    with pytest.raises(ValueError, match=r"masks must be \(N, 60, 80\)"):
        processor(image, [0, 0, 10, 10], masks=np.zeros((1, 60, 81), bool))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        processor(image.astype(np.float32), [0, 0, 10, 10])


def test_collate(processor, tokenizer):
    rng = np.random.default_rng(4)
    landscape = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    portrait = rng.integers(0, 256, (50, 20, 3), dtype=np.uint8)
    masks = np.zeros((2, 50, 20), bool)
    masks[:, 5:15, 5:15] = True
    long_answer = "There are <p> the cars </p> [SEG] and <p> car-2 </p> [SEG] on the left."
    samples = [processor(landscape, [8, 6, 40, 30], ANSWER, two_masks()[:1]),
               processor(portrait, None, long_answer, masks)]
    batch = processor.collate(samples)
    lengths = [len(s["input_ids"]) for s in samples]
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    short = int(np.argmin(lengths))
    assert (batch["input_ids"][short, min(lengths):] == TokenIds.of(tokenizer).pad).all()
    assert (batch["labels"][short, min(lengths):] == IGNORE_INDEX).all()
    grids = batch["image_grids"].tolist()
    assert grids[1] == [2, 1]  # portrait: ratio 2.5, s = 2, transposed back
    assert batch["clip_pixel_values"].shape == (sum(1 + h * w for h, w in grids), 3, R, R)
    assert torch.equal(batch["clip_pixel_values"][:5], samples[0]["clip_pixel_values"])
    for key, shape in (("region_boxes", (2, 4)), ("box_coords", (2, 4)), ("boxes", (2, 4)), ("image_sizes", (2, 2)),
                       ("sam_pixel_values", (2, 3, S, S))):
        assert batch[key].shape == shape, key
    assert batch["region_boxes"].dtype == torch.float32 and batch["image_sizes"].dtype == torch.long
    assert [m.shape for m in batch["gt_masks"]] == [(1, 60, 80), (2, 50, 20)]
    inference = processor.collate([processor(landscape, [8, 6, 40, 30])])
    assert "labels" not in inference and "gt_masks" not in inference
    with pytest.raises(ValueError, match="1 of 2 samples have 'labels'"):
        processor.collate([samples[0], processor(landscape, [8, 6, 40, 30])])


def test_processor_settings(tokenizer):
    ids = TokenIds.of(tokenizer).config_kwargs()
    config = CLVNetConfig.tiny(bos_position="after_image", box_jitter=0.2, hd_num=4, **ids)
    processor = CLVNetProcessor.from_config(config, tokenizer)
    assert (processor.vision_image_size, processor.patch_size, processor.tokens_per_side) == (112, 14, 4)
    assert processor.bos_position == "after_image" and processor.hd_num == 4 and processor.sam_image_size == 128
    assert processor.box_jitter == 0.2 and processor.box_union_prob == 0.5 and processor.region_tokens == 4
    no_box = CLVNetConfig.tiny(use_box_prompt=False, **ids)
    assert CLVNetProcessor.from_config(no_box, tokenizer).region_tokens == 0  # the "w/o prompt box" ablation
    with pytest.raises(ValueError, match="multiple of 2·patch_size"):
        CLVNetProcessor(tokenizer, vision_image_size=30, patch_size=14)
    with pytest.raises(ValueError, match="bos_position"):
        CLVNetProcessor(tokenizer, bos_position="first")
