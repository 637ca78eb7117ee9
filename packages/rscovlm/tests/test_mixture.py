"""The SFT mixture (spec §2.1, §2.5), scalable boxes in text (§3.3), random resizing (§3.4) and length grouping."""

import pytest
import torch
from rs_shared.data.conversations import read_conversations

from rscovlm.collate import collate
from rscovlm.mixture import (
    LengthGroupedBatches,
    MixtureEntry,
    SFTDataset,
    build_mixture,
    ensure_synthetic_sft,
    parse_entry,
    parse_sources,
    rescale_text_boxes,
)
from rscovlm.resize import ResizedFrame


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Nine synthetic SFT records (3 QA, 3 detection, 3 grounding), 224² images."""
    return read_conversations(ensure_synthetic_sft(tmp_path_factory.mktemp("sft"), 9, seed=3))


def test_parse_entry():
    assert parse_entry("dota_poly*25") == MixtureEntry("dota_poly", repeat=25)
    assert parse_entry("llava_onevision%10") == MixtureEntry("llava_onevision", percent=10.0)
    assert parse_entry(" refgeo ") == MixtureEntry("refgeo")
    for bad in ("a*0", "a%0", "a%150", "a*2%5", "*3", "a*x"):
        with pytest.raises(ValueError, match="mixture entry"):
            parse_entry(bad)


def test_mixture_weights_on_counts():
    sources = {"a": [f"a{i}" for i in range(10)], "b": [f"b{i}" for i in range(40)]}
    mixed = build_mixture(sources, ["a*3", "b%25"], seed=42)
    assert len(mixed) == 30 + 10
    assert mixed[:30] == sources["a"] * 3  # exact copies, recipe order
    subset = mixed[30:]
    assert len(set(subset)) == 10 and set(subset) <= set(sources["b"]) and subset == sorted(subset, key=sources["b"].index)
    assert build_mixture(sources, ["a*3", "b%25"], seed=42) == mixed  # seeded
    assert build_mixture(sources, ["a*3", "b%25"], seed=7)[30:] != subset
    assert len(build_mixture(sources, ["b%10", "a"], seed=0)) == 4 + 10  # int(40 · 10 / 100)
    with pytest.raises(KeyError, match="unknown source 'c'"):
        build_mixture(sources, ["c*2"])
    assert parse_sources(["geochat=/d/geochat.json"]) == {"geochat": __import__("pathlib").Path("/d/geochat.json")}
    with pytest.raises(ValueError, match="NAME=PATH"):
        parse_sources(["geochat"])


def test_rescale_text_boxes():
    frame = ResizedFrame((1000, 800), (1008, 812))
    assert rescale_text_boxes("100,200,300,400 plane\n", frame, "pixel") == "100,203,302,406 plane\n"  # P4
    square = ResizedFrame((512, 512), (504, 504))
    assert rescale_text_boxes("the [50, 50, 100, 100] ship", square, "norm100") == "the [252, 252, 504, 504] ship"
    quad = "12,30,40,30,40,60,12,60 plane"
    assert rescale_text_boxes(quad, ResizedFrame((100, 100), (200, 50)), "pixel") == "24,15,80,15,80,30,24,30 plane"
    untouched = "counts 1,2,3 and 7 and 1,2,3,4,5"
    assert rescale_text_boxes(untouched, frame, "pixel") == untouched
    with pytest.raises(ValueError, match="unknown coordinate frame"):
        rescale_text_boxes("1,2,3,4", frame, "percent")


def test_dataset_rescales_boxes_and_random_resizes_only_box_records(synthetic, tiny):
    renderer = tiny.renderer()
    evaluation = SFTDataset(synthetic, renderer, random_resize_prob=0.0)
    training = SFTDataset(synthetic, renderer, random_resize_prob=1.0, seed=1)
    for i, record in enumerate(synthetic):
        fixed, drawn = evaluation[i], training[i]
        assert fixed.frames[0].resized == (224, 224)  # the tiny preset's cap is 224²: no resize without randomness
        if record.coords is None:
            assert drawn.frames == fixed.frames and torch.equal(drawn.input_ids, fixed.input_ids)
            continue
        scale = drawn.frames[0].resized[0] / 224
        assert drawn.frames[0].resized != (224, 224) or scale == 1
        originals = [m.content[0].text for m in record.messages if m.role == "assistant"]  # grounding: 1-3 turns
        rescaled = [m["content"][0]["text"] for m in training.messages(i) if m["role"] == "assistant"]
        assert rescaled == [rescale_text_boxes(text, drawn.frames[0], "pixel") for text in originals]
        supervised = tiny.tokenizer.decode(drawn.input_ids[drawn.labels != -100])
        assert supervised == "".join(text + "<|im_end|>" for text in rescaled)
    i = next(k for k, r in enumerate(synthetic) if r.coords is not None)
    first = training[i].frames
    assert training[i].frames == first  # deterministic per (seed, epoch, index)
    draws = set()
    for epoch in range(6):
        training.set_epoch(epoch)
        draws.add(training[i].frames[0].resized)
    assert len(draws) > 1


def test_truncation_and_grouped_batches(synthetic, tiny):
    dataset = SFTDataset(synthetic, tiny.renderer(max_length=80))
    assert all(len(dataset[i]) <= 80 for i in range(len(dataset)))
    full = SFTDataset(synthetic, tiny.renderer())
    lengths = full.estimated_lengths()
    assert lengths == [len(full[i]) for i in range(len(full))]  # exact without random resizing
    grouped = LengthGroupedBatches(full, batch_size=4, seed=0)
    assert len(grouped) == 3
    for epoch in range(2):
        grouped.set_epoch(epoch)
        seen = sorted(s.meta["index"] for k in range(len(grouped)) for s in grouped[k])
        assert seen == list(range(len(synthetic)))
    batch = collate(grouped[0], tiny.tokenizer.pad_token_id)
    assert batch["input_ids"].shape[0] == 4 and batch["input_ids"].shape[1] == max(lengths)
