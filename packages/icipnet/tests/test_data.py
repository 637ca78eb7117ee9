"""Tokenisation, transforms, random boxes, datasets and the embedded synthetic dataset of ICIPNet."""

import numpy as np
import pytest
import torch
from PIL import Image
from rs_shared.data.errors import DataFormatError
from rs_shared.data.refseg import CocoMask, MaskFile, RRSISDImage, RRSISDObject, write_rrsisd
from rs_shared.data.synthetic import VOCABULARY, candidate_expressions, make_referring_scene
from rs_shared.data.synthetic.export import synthesize
from rs_shared.metrics.segmentation import resize_mask_nearest
from torch.utils.data import DataLoader

from icipnet.data import (
    IMAGE_MEAN,
    IMAGE_STD,
    RandomBoxes,
    RefSegEvalDataset,
    RefSegTrainDataset,
    collate,
    ensure_synthetic,
    image_to_tensor,
    load_split,
    mask_to_tensor,
)
from icipnet.tokenizer import (
    SPECIAL_TOKENS,
    build_synthetic_tokenizer,
    load_tokenizer,
    synthetic_vocabulary,
    tokenize_expressions,
)

SIZE = 32  # model input side in these tests
MAX_LEN = 16
EXPRESSIONS = ("the red car", "the car on the left", "the leftmost car", "the small car")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_synthetic_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return ensure_synthetic(tmp_path_factory.mktemp("data") / "synthetic", n=20, seed=3, size=64)


@pytest.fixture(scope="module")
def multi_root(tmp_path_factory):
    """An RRSIS-D dataset whose refs have several expressions: 20 train refs (4 expressions, 48 × 40
    noise images without black pixels), 3 val refs (2 expressions), 2 test refs (3 expressions)."""
    root = tmp_path_factory.mktemp("multi")
    rng = np.random.default_rng(0)
    polygon = np.array([[4.0, 4.0], [30.0, 6.0], [26.0, 30.0], [6.0, 24.0]])
    images = []
    for split, n, k in (("train", 20, 4), ("val", 3, 2), ("test", 2, 3)):
        for i in range(n):
            pixels = rng.integers(60, 256, size=(40, 48, 3), dtype=np.uint8)
            images.append(RRSISDImage(f"{split}{i}.jpg", pixels, split,
                                      [RRSISDObject("car", [polygon + i % 5], EXPRESSIONS[:k])]))
    write_rrsisd(root, images, ["car"])
    return root


# --- tokenizer -------------------------------------------------------------------------------------------

def test_synthetic_tokenizer_round_trips_with_bert_special_ids(tokenizer, tmp_path):
    assert tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [0, 1, 2, 3, 4]
    assert tokenizer.pad_token_id == 0 and len(tokenizer) == len(synthetic_vocabulary())
    build_synthetic_tokenizer(tmp_path)
    reloaded = load_tokenizer(tmp_path)
    assert (tmp_path / "vocab.txt").read_text().split("\n")[:5] == list(SPECIAL_TOKENS)
    text = ["the large white building to the left of the red car", "Where is the ship?"]
    assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]


def test_every_synthetic_word_is_one_token_and_every_expression_has_no_unk(tokenizer, synthetic_root):
    ids = tokenizer(list(VOCABULARY), add_special_tokens=False)["input_ids"]
    assert all(len(i) == 1 and i[0] != tokenizer.unk_token_id for i in ids)
    texts = [r.expression for split in ("train", "val", "test") for r in load_split(synthetic_root, split)]
    for seed in range(40):
        scene, _ = make_referring_scene(seed, (64, 64))
        for target in range(len(scene.objects)):
            texts += [t for ts in candidate_expressions(scene, target).values() for t in ts]
    texts.append("There is <p> the red car </p> [SEG] in the top left.")
    input_ids, _ = tokenize_expressions(tokenizer, texts, 64)
    assert len(texts) > 100 and not (input_ids == tokenizer.unk_token_id).any()
    # text outside the vocabulary falls back to letters rather than [UNK]
    assert tokenizer.unk_token_id not in tokenizer("the harbour zebra")["input_ids"]


def test_tokenize_pads_short_and_cuts_long_sentences_after_adding_sep(tokenizer):
    long = " ".join(["the red car"] * 10)  # 30 words
    input_ids, mask = tokenize_expressions(tokenizer, ["The RED car", long], MAX_LEN)
    assert input_ids.shape == mask.shape == (2, MAX_LEN) and input_ids.dtype == mask.dtype == torch.int64
    the, red, car = tokenizer.convert_tokens_to_ids(["the", "red", "car"])
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert input_ids[0].tolist() == [cls, the, red, car, sep] + [0] * (MAX_LEN - 5)
    assert mask[0].tolist() == [1] * 5 + [0] * (MAX_LEN - 5)
    assert input_ids[1].tolist() == [cls] + [the, red, car] * 5  # 16 ids, [SEP] cut off
    assert mask[1].tolist() == [1] * MAX_LEN and sep not in input_ids[1].tolist()
    assert tokenize_expressions(tokenizer, [], MAX_LEN)[0].shape == (0, MAX_LEN)


# --- transforms ------------------------------------------------------------------------------------------

def test_image_transform_resizes_bilinear_and_normalises():
    image = np.random.default_rng(0).integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
    out = image_to_tensor(image, SIZE)
    assert out.shape == (3, SIZE, SIZE) and out.dtype == torch.float32
    expected = np.asarray(Image.fromarray(image).resize((SIZE, SIZE), Image.BILINEAR)) / 255.0
    mean, std = torch.tensor(IMAGE_MEAN)[:, None, None], torch.tensor(IMAGE_STD)[:, None, None]
    np.testing.assert_allclose((out * std + mean).permute(1, 2, 0).numpy(), expected, atol=1e-6)
    # a constant image equal to the mean colour becomes zero; 0 and 255 become -mean/std and (1-mean)/std
    grey = np.broadcast_to(np.round(np.array(IMAGE_MEAN) * 255).astype(np.uint8), (10, 10, 3)).copy()
    assert image_to_tensor(grey, 8).abs().max() < 0.01
    extremes = image_to_tensor(np.stack([np.zeros((10, 10, 3)), np.full((10, 10, 3), 255)]).astype(np.uint8)
                               .reshape(20, 10, 3), 8)
    lo, hi = extremes.amin(dim=(1, 2)), extremes.amax(dim=(1, 2))
    np.testing.assert_allclose(lo.numpy(), -np.array(IMAGE_MEAN) / IMAGE_STD, rtol=1e-6)
    np.testing.assert_allclose(hi.numpy(), (1 - np.array(IMAGE_MEAN)) / IMAGE_STD, rtol=1e-6)


def test_mask_transform_is_the_evaluation_nearest_resize():
    mask = np.zeros((50, 70), bool)
    mask[7:31, 13:44] = True
    out = mask_to_tensor(mask, SIZE)
    assert out.shape == (SIZE, SIZE) and out.dtype == torch.int64 and set(out.unique().tolist()) == {0, 1}
    np.testing.assert_array_equal(out.numpy(), resize_mask_nearest(mask, (SIZE, SIZE)).astype(np.int64))


# --- random boxes ----------------------------------------------------------------------------------------

def test_random_boxes_paste_black_squares_only():
    image = np.full((64, 64, 3), 200, np.uint8)
    boxes = RandomBoxes(count=(3, 6), size=8)
    out = boxes(image, np.random.default_rng(1))
    assert out is not image and (image == 200).all()  # the input is not modified
    black = (out == 0).all(axis=2)
    assert ((out == 0) | (out == 200)).all() and black.any() and black.sum() <= 6 * 64
    # every black pixel lies in a fully black 8 x 8 square
    windows = np.lib.stride_tricks.sliding_window_view(black, (8, 8)).all(axis=(2, 3))
    covered = np.zeros_like(black)
    for y, x in zip(*np.nonzero(windows)):
        covered[y:y + 8, x:x + 8] = True
    np.testing.assert_array_equal(covered, black)
    np.testing.assert_array_equal(out, boxes(image, np.random.default_rng(1)))  # same draws, same squares


def test_random_box_rows_are_drawn_from_the_image_width():
    # 8 rows, 64 columns: corners fall in [0, 56] on both axes, so most squares land below the image and
    # only a small part of it turns black (drawing rows from the height would blacken almost all of it)
    out = RandomBoxes(count=(20, 20), size=8)(np.full((8, 64, 3), 200, np.uint8), np.random.default_rng(0))
    assert 0 < (out == 0).all(axis=2).mean() < 0.5


def test_random_boxes_hit_a_fixed_fifth_of_the_refs_and_only_those(multi_root, tokenizer):
    records = load_split(multi_root, "train")
    boxes = RandomBoxes(size=6, count=(5, 10))
    augmented = RefSegTrainDataset(records, tokenizer, SIZE, MAX_LEN, seed=7, random_boxes=boxes)
    plain = RefSegTrainDataset(records, tokenizer, SIZE, MAX_LEN, seed=7, random_boxes=None)
    assert len(augmented.boxed) == 4 and augmented.boxed == boxes.select(20, 7) and plain.boxed == frozenset()
    for epoch in (0, 1):
        augmented.set_epoch(epoch)
        plain.set_epoch(epoch)
        changed = set()
        for i in range(len(augmented)):
            a, p = augmented[i], plain[i]
            assert a["sent_id"] == p["sent_id"] and torch.equal(a["labels"], p["labels"])
            if not torch.equal(a["pixel_values"], p["pixel_values"]):
                changed.add(i)
        assert changed == augmented.boxed
    assert RefSegTrainDataset(records, tokenizer, SIZE, MAX_LEN, seed=8, random_boxes=boxes).boxed != augmented.boxed


# --- datasets --------------------------------------------------------------------------------------------

def test_train_items_and_collate(synthetic_root, tokenizer):
    records = load_split(synthetic_root, "train")
    dataset = RefSegTrainDataset(records, tokenizer, SIZE, MAX_LEN, random_boxes=None)
    assert len(dataset) == len(records) == 14  # one expression per synthetic ref
    batch = next(iter(DataLoader(dataset, batch_size=4, collate_fn=collate)))
    assert batch["pixel_values"].shape == (4, 3, SIZE, SIZE) and batch["pixel_values"].dtype == torch.float32
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (4, MAX_LEN)
    assert batch["input_ids"].dtype == batch["attention_mask"].dtype == torch.int64
    assert batch["labels"].shape == (4, SIZE, SIZE) and batch["labels"].dtype == torch.int64
    assert set(batch["labels"].unique().tolist()) <= {0, 1} and batch["labels"].sum() > 0
    assert batch["ref_id"].tolist() == [r.ref_id for r in records[:4]]
    assert batch["sent_id"].dtype == torch.int64 and batch["expression"] == [r.expression for r in records[:4]]
    assert (batch["input_ids"][:, 0] == tokenizer.cls_token_id).all()
    assert torch.equal(batch["attention_mask"], (batch["input_ids"] != 0).long())
    sample = records[0].load()
    assert torch.equal(batch["pixel_values"][0], image_to_tensor(sample["image"], SIZE))
    np.testing.assert_array_equal(batch["labels"][0].numpy(), resize_mask_nearest(sample["mask"], (SIZE, SIZE)))
    # de-normalised pixels are back in [0, 1]
    mean, std = torch.tensor(IMAGE_MEAN)[:, None, None], torch.tensor(IMAGE_STD)[:, None, None]
    pixels = batch["pixel_values"] * std + mean
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6


def test_train_expression_is_reproducible_per_seed_epoch_and_index(multi_root, tokenizer):
    records = load_split(multi_root, "train")
    dataset = RefSegTrainDataset(records, tokenizer, SIZE, MAX_LEN, seed=5, random_boxes=RandomBoxes(size=6))
    twin = RefSegTrainDataset(records, tokenizer, SIZE, MAX_LEN, seed=5, random_boxes=RandomBoxes(size=6))
    draws = {}
    for epoch in range(6):
        dataset.set_epoch(epoch)
        draws[epoch] = [dataset[i]["sent_id"] for i in range(len(dataset))]
    for epoch in (3, 0):  # any order of epochs, any instance: same items
        twin.set_epoch(epoch)
        dataset.set_epoch(epoch)
        for i in (0, 7, 19):
            a, b = twin[i], dataset[i]
            assert a["sent_id"] == draws[epoch][i]
            assert all(torch.equal(a[k], b[k]) for k in ("pixel_values", "input_ids", "labels"))
    by_ref = {g[0].ref_id: {r.sent_id for r in g} for g in dataset.groups}
    for sent_ids in draws.values():
        assert all(s in by_ref[g[0].ref_id] for s, g in zip(sent_ids, dataset.groups))
    assert len({tuple(d) for d in draws.values()}) == 6  # the draw changes from epoch to epoch
    positions = np.bincount([[r.sent_id for r in g].index(s) for d in draws.values()
                             for s, g in zip(d, dataset.groups)], minlength=4)
    assert positions.min() >= 15  # about uniform over each ref's 4 expressions (120 draws)
    item = dataset[0]
    row = next(k for k, r in enumerate(dataset.records) if r.sent_id == item["sent_id"])
    assert item["expression"] == dataset.records[row].expression
    assert torch.equal(item["input_ids"], tokenize_expressions(tokenizer, [item["expression"]], MAX_LEN)[0][0])
    other = RefSegTrainDataset(records, tokenizer, SIZE, MAX_LEN, seed=6)
    assert [other[i]["sent_id"] for i in range(20)] != draws[0]


def test_eval_modes_per_ref_and_all(multi_root, tokenizer):
    val, test = load_split(multi_root, "val"), load_split(multi_root, "test")
    per_ref = RefSegEvalDataset(val, tokenizer, SIZE, MAX_LEN, mode="per_ref", seed=1)
    everything = RefSegEvalDataset(test, tokenizer, SIZE, MAX_LEN, mode="all")
    assert (len(val), len(per_ref)) == (6, 3) and (len(test), len(everything)) == (6, 6)
    assert [per_ref[i]["sent_id"] for i in range(3)] == [per_ref[i]["sent_id"] for i in range(3)]  # fixed
    assert [per_ref[i]["ref_id"] for i in range(3)] == sorted({r.ref_id for r in val})
    assert [(everything[i]["ref_id"], everything[i]["sent_id"]) for i in range(6)] == \
           [(r.ref_id, r.sent_id) for r in test]
    seeds = {tuple(RefSegEvalDataset(val, tokenizer, SIZE, MAX_LEN, mode="per_ref", seed=s)[i]["sent_id"]
                   for i in range(3)) for s in range(8)}
    assert len(seeds) > 1  # the fixed choice is random over seeds
    batch = collate([everything[i] for i in range(3)])
    assert batch["pixel_values"].shape == (3, 3, SIZE, SIZE) and batch["labels"].shape == (3, SIZE, SIZE)
    assert torch.equal(batch["labels"][0], batch["labels"][1])  # one ref, one mask, two expressions
    assert not torch.equal(batch["input_ids"][0], batch["input_ids"][1])
    with pytest.raises(ValueError, match="mode"):
        RefSegEvalDataset(val, tokenizer, SIZE, MAX_LEN, mode="random")


# --- reading and the embedded synthetic dataset ---------------------------------------------------------

def test_load_split_detects_both_layouts(synthetic_root, tmp_path):
    assert [len(load_split(synthetic_root, s)) for s in ("train", "val", "test")] == [14, 2, 4]
    assert isinstance(load_split(synthetic_root, "train")[0].mask, CocoMask)
    synthesize("refseg", tmp_path / "refsegrs", n=5, seed=0, layout="refsegrs")
    records = load_split(tmp_path / "refsegrs", "train")
    assert len(records) == 4 and isinstance(records[0].mask, MaskFile)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="neither an RRSIS-D layout"):
        load_split(tmp_path / "empty", "train")


def test_ensure_synthetic_reuses_a_matching_dataset_and_refuses_others(synthetic_root, tmp_path):
    assert ensure_synthetic(synthetic_root, n=20, seed=3, size=64) == synthetic_root
    with pytest.raises(DataFormatError, match=r"seed=3 \(wanted 4\)"):
        ensure_synthetic(synthetic_root, n=20, seed=4, size=64)
    with pytest.raises(DataFormatError, match=r"n=20 \(wanted 21\).*size=\[64, 64\] \(wanted \[32, 32\]\)"):
        ensure_synthetic(synthetic_root, n=21, seed=3, size=32)
    with pytest.raises(DataFormatError, match=r"object_scale=1.0 \(wanted 1.3\)"):
        ensure_synthetic(synthetic_root, n=20, seed=3, size=64, object_scale=1.3)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a dataset")
    with pytest.raises(DataFormatError, match="no manifest.json"):
        ensure_synthetic(tmp_path / "other", n=20, seed=3)
    damaged = ensure_synthetic(tmp_path / "damaged", n=3, seed=0, size=32)
    image = next((damaged / "images" / "rrsisd" / "JPEGImages").iterdir())
    Image.new("RGB", (32, 32)).save(image, format="JPEG")
    with pytest.raises(DataFormatError, match="checksum differs"):
        ensure_synthetic(damaged, n=3, seed=0, size=32)


def test_cached_datasets_decode_each_record_once_and_give_the_same_items(multi_root, tokenizer, monkeypatch):
    records = load_split(multi_root, "train")
    boxes = RandomBoxes(fraction=1.0, size=4)
    plain = RefSegTrainDataset(records, tokenizer, SIZE, MAX_LEN, random_boxes=boxes)
    expected = {}
    for epoch in (0, 1):
        plain.set_epoch(epoch)
        expected[epoch] = [plain[i] for i in range(len(plain))]
    cached = RefSegTrainDataset(records, tokenizer, SIZE, MAX_LEN, random_boxes=boxes, cache=True)
    loads = []
    original = type(records[0]).load
    monkeypatch.setattr(type(records[0]), "load", lambda self: loads.append(self.sent_id) or original(self))
    for epoch in (0, 1, 0, 1):
        cached.set_epoch(epoch)
        for i in range(len(cached)):  # boxes are pasted on a copy: the cached image stays clean
            item = cached[i]
            assert all(torch.equal(item[k], expected[epoch][i][k]) for k in ("pixel_values", "input_ids", "labels"))
    assert len(loads) == len(set(loads)) >= len(cached)  # each record decoded once
    evaluation = RefSegEvalDataset(records, tokenizer, SIZE, MAX_LEN, cache=True)
    loads.clear()
    first, again = [evaluation[i] for i in range(len(evaluation))], [evaluation[i] for i in range(len(evaluation))]
    assert len(loads) == len(evaluation) and all(torch.equal(a["labels"], b["labels"]) for a, b in zip(first, again))
