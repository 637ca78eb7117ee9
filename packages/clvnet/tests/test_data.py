"""Train/eval datasets over synthetic GeoPixelD tiles: answers, masks, reproducible and wrong boxes."""

import numpy as np
import pytest
import torch
from rs_shared.data.errors import DataFormatError
from rs_shared.data.gcg_writer import GCGTile, write_geopixeld
from torch.utils.data import DataLoader

from clvnet.data import (
    RECORD_KEYS,
    GCGEvalDataset,
    GCGTrainDataset,
    collate_with_records,
    ensure_synthetic_gcg,
    load_gcg_records,
)
from clvnet.processing import IGNORE_INDEX, CLVNetProcessor, union_box
from clvnet.tokenizer import CLVNET_QUERY, TokenIds, build_tiny_tokenizer

N_TILES, SIZE = 10, 64


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return ensure_synthetic_gcg(tmp_path_factory.mktemp("data") / "gcg", n=N_TILES, seed=5, size=SIZE)


@pytest.fixture(scope="module")
def regions_root(tmp_path_factory):
    return ensure_synthetic_gcg(tmp_path_factory.mktemp("data") / "gcg", n=N_TILES, seed=5, size=SIZE, regions=2)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def processor(tokenizer):
    return CLVNetProcessor(tokenizer, vision_image_size=28, patch_size=7, hd_num=4, region_tokens=4,
                           sam_image_size=32)


@pytest.fixture(scope="module")
def in_box(tokenizer):
    return CLVNetProcessor(tokenizer, vision_image_size=28, patch_size=7, hd_num=4, region_tokens=4,
                           sam_image_size=32, box_targets="in_box")


def test_ensure_synthetic_gcg_and_splits(root, tmp_path):
    assert ensure_synthetic_gcg(root, n=N_TILES, seed=5, size=SIZE) == root  # second call only checks
    with pytest.raises(DataFormatError):
        ensure_synthetic_gcg(root, n=N_TILES, seed=6, size=SIZE)
    assert len(load_gcg_records(root, "train")) == 8 and len(load_gcg_records(root, "test")) == 2
    assert len(load_gcg_records(root)) == N_TILES
    assert len(load_gcg_records(root / "test")) == 2  # a directory of per-tile files
    with pytest.raises(ValueError, match="no GeoPixelD tiles in split 'val'"):
        load_gcg_records(root, "val")


def test_train_items(root, processor, tokenizer):
    dataset = GCGTrainDataset(root, processor, split="train")
    ids = TokenIds.of(tokenizer)
    for index in range(len(dataset)):
        item = dataset[index]
        record = dataset.records[index]
        assert item["name"] == record.name and item["id"] == record.id
        assert item["markup"] == record.caption.markup and item["phrases"] == list(record.caption.phrases)
        assert item["instruction"] == record.instruction != CLVNET_QUERY  # the file's instruction, for reference
        answer = item["input_ids"][item["labels"] != IGNORE_INDEX]
        assert tokenizer.decode(answer) == record.caption.markup + "[UNUSED_TOKEN_145]\n</s>"
        n_seg = int((item["labels"] == ids.seg).sum())
        assert n_seg == len(item["gt_masks"]) == len(record.masks)
        np.testing.assert_array_equal(item["gt_masks"].numpy(), record.phrase_masks())
    prompt = tokenizer.decode(item["input_ids"][item["labels"] == IGNORE_INDEX], skip_special_tokens=True)
    assert CLVNET_QUERY.replace("<BOX>", "") in prompt and "in-depth analysis" not in prompt


def test_train_boxes_are_reproducible_per_epoch(root, processor):
    dataset = GCGTrainDataset(root, processor, split="train", seed=1)
    epoch0 = [dataset[i]["box"] for i in range(len(dataset))]
    again = GCGTrainDataset(root, processor, split="train", seed=1)
    assert all(torch.equal(a, again[i]["box"]) for i, a in enumerate(epoch0))
    dataset.set_epoch(1)
    epoch1 = [dataset[i]["box"] for i in range(len(dataset))]
    assert any(not torch.equal(a, b) for a, b in zip(epoch0, epoch1))
    for index, box in enumerate(epoch0):
        x1, y1, x2, y2 = box.tolist()
        assert 0 <= x1 < x2 <= SIZE and 0 <= y1 < y2 <= SIZE, dataset.records[index].name


def test_eval_items_use_the_union_box(root, processor, tokenizer):
    dataset = GCGEvalDataset(root, processor, split="test")
    ids = TokenIds.of(tokenizer)
    for index, record in enumerate(dataset.records):
        item = dataset[index]
        np.testing.assert_array_equal(item["box"].numpy(), record.union_box().data[0])
        assert "labels" not in item and len(item["gt_masks"]) == len(record.masks)
        tail = item["input_ids"][-3:].tolist()
        assert tail == [ids.im_start, *tokenizer.convert_tokens_to_ids(["assistant", "\n"])]  # generation prompt
    teacher = GCGEvalDataset(root, processor, split="test", with_answer=True)[0]
    assert torch.equal(teacher["box"], dataset[0]["box"]) and "labels" in teacher


def test_wrong_box_comes_from_the_next_tile(root, processor):
    dataset = GCGEvalDataset(root, processor, split="train", wrong_box=True)
    boxes = [dataset[i]["box"].numpy() for i in range(len(dataset))]
    unions = [r.union_box().data[0] for r in dataset.records]
    for index in range(len(dataset)):
        np.testing.assert_allclose(boxes[index], unions[(index + 1) % len(dataset)], rtol=1e-6)
    assert any(not np.allclose(b, u) for b, u in zip(boxes, unions))
    with pytest.raises(ValueError, match="at least two tiles"):
        GCGEvalDataset(_single_tile(root), processor, wrong_box=True)


def _single_tile(root):
    record = load_gcg_records(root, "test")[0]
    tile = record.load()
    out = root.parent / "single"
    polygons = [[np.asarray(part) for part in parts] for parts in record.masks]
    write_geopixeld(out, [GCGTile(record.name, tile["image"], tile["markup"], polygons)], "test")
    return out


def test_wrong_box_is_scaled_to_the_image(tmp_path, processor):
    image_a = np.zeros((40, 60, 3), np.uint8)
    image_b = np.zeros((20, 30, 3), np.uint8)
    square = [np.array([[10, 10], [20, 10], [20, 20], [10, 20]])]
    tiles = [GCGTile("A", image_a, "The <p> car </p> [SEG] .", [square]),
             GCGTile("B", image_b, "The <p> car </p> [SEG] .", [[np.array([[2, 4], [8, 4], [8, 10], [2, 10]])]])]
    write_geopixeld(tmp_path, tiles, "test")
    dataset = GCGEvalDataset(tmp_path, processor, wrong_box=True)
    np.testing.assert_allclose(dataset[0]["box"], [4, 8, 16, 20])  # B's box [2, 4, 8, 10] × 2
    np.testing.assert_allclose(dataset[1]["box"], [5, 5, 10, 10])  # A's box [10, 10, 20, 20] × 0.5
    np.testing.assert_array_equal(union_box(dataset[0]["gt_masks"].numpy()), [10, 10, 20, 20])


def test_loader_and_records(root, processor):
    dataset = GCGTrainDataset(root, processor, split="train")
    batch = next(iter(DataLoader(dataset, batch_size=3, collate_fn=processor.collate)))
    assert batch["input_ids"].shape[0] == 3 and len(batch["gt_masks"]) == 3
    assert set(batch) == {"input_ids", "attention_mask", "labels", "clip_pixel_values", "image_grids",
                          "region_boxes", "box_coords", "sam_pixel_values", "image_sizes", "boxes", "gt_masks"}
    items = [dataset[0], dataset[1]]
    batch, records = collate_with_records(processor, items)
    assert batch["boxes"].shape == (2, 4)
    assert [r["name"] for r in records] == [dataset.records[0].name, dataset.records[1].name]
    assert set(records[0]) == set(RECORD_KEYS)


def test_in_box_training_answers_one_region_with_its_box(regions_root, in_box, tokenizer):
    dataset = GCGTrainDataset(regions_root, in_box, split="train", seed=3)
    chosen = set()
    for index, record in enumerate(dataset.records):
        item = dataset[index]
        k = next(k for k, r in enumerate(record.regions) if r.caption.markup == item["markup"])
        chosen.add(k)
        region = record.region(k)
        np.testing.assert_array_equal(item["box"].numpy(), np.float32(region.box))
        np.testing.assert_array_equal(item["gt_masks"].numpy(), region.phrase_masks())
        answer = item["input_ids"][item["labels"] != IGNORE_INDEX]
        assert tokenizer.decode(answer) == region.caption.markup + "[UNUSED_TOKEN_145]\n</s>"
        assert torch.equal(item["input_ids"], dataset[index]["input_ids"])  # the draw is reproducible
        # every phrase's mask lies inside the prompt box
        x1, y1, x2, y2 = region.box
        outside = item["gt_masks"].clone()
        outside[:, int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))] = False
        assert not outside.any(), record.name
    assert chosen == {0, 1}


def test_in_box_evaluation_uses_region_0_and_the_next_tiles_region_box(regions_root, in_box):
    dataset = GCGEvalDataset(regions_root, in_box, split="train")
    wrong = GCGEvalDataset(regions_root, in_box, split="train", wrong_box=True)
    for index, record in enumerate(dataset.records):
        item = dataset[index]
        assert item["markup"] == record.regions[0].caption.markup
        np.testing.assert_array_equal(item["box"].numpy(), np.float32(record.regions[0].box))
        np.testing.assert_array_equal(wrong[index]["gt_masks"].numpy(), record.region(0).phrase_masks())
        other = dataset.records[(index + 1) % len(dataset)]
        np.testing.assert_allclose(wrong[index]["box"].numpy(), other.regions[0].box)  # same tile size


def test_in_box_needs_region_captions(root, in_box):
    with pytest.raises(ValueError, match=r"gcg: tile S0000\d \(id \d\) has no box-conditioned captions, which "
                                         r"box_targets 'in_box' needs .* use box_targets 'full'"):
        GCGTrainDataset(root, in_box, split="train")
