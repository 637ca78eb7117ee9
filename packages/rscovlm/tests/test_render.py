"""Rendering and label masking (spec §2.3): a golden sample, the chat template, the 5.x processor, collation."""

import numpy as np
import pytest
import torch
from PIL import Image
from rs_shared.data.conversations import read_conversations
from rs_shared.data.synthetic.export import synthesize
from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

from rscovlm import templates
from rscovlm.collate import LengthGroupedBatchSampler, collate, length_grouped_indices
from rscovlm.model_factory import TINY_IMAGE_SETTINGS
from rscovlm.render import IGNORE_INDEX, ChatRenderer, ImageSettings
from rscovlm.tokenizer import TokenIds

GOLDEN_MESSAGES = [
    {"role": "user", "content": [{"type": "image", "index": 0}, {"type": "text", "text": "find the plane"}]},
    {"role": "assistant", "content": "10,20,30,40 plane\n"},
    {"role": "user", "content": "How many ships?"},
    {"role": "assistant", "content": "3"},
]
# The tiny tokenizer's ids for GOLDEN_MESSAGES with one 56×56 image (grid 1×4×4 → 4 image tokens). They depend
# on the tiny BPE corpus (rscovlm.tokenizer.tokenizer_corpus); regenerate them if that corpus changes.
GOLDEN_IDS = [
    1, 477, 205, 63, 287, 313, 273, 471, 86, 76, 91, 82, 273, 89, 89, 461, 20, 2, 205,  # default system turn
    1, 473, 205, 3, 5, 5, 5, 5, 4, 76, 276, 74, 271, 429, 2, 205,  # user: image + "find the plane"
    1, 472, 205, 23, 22, 18, 24, 22, 18, 25, 22, 18, 26, 22, 429, 205, 2, 205,  # assistant: box line
    1, 473, 205, 317, 316, 394, 89, 37, 2, 205,  # user: "How many ships?"
    1, 472, 205, 25, 2, 205,  # assistant: "3"
]
_M = IGNORE_INDEX
GOLDEN_LABELS = [_M] * 38 + [23, 22, 18, 24, 22, 18, 25, 22, 18, 26, 22, 429, 205, 2] + [_M] * 14 + [25, 2, _M]


@pytest.fixture(scope="module")
def renderer(tiny_tokenizer):
    return ChatRenderer(tiny_tokenizer, TINY_IMAGE_SETTINGS)


def test_golden_ids_and_labels(renderer, tiny_tokenizer, rgb):
    sample = renderer.render(GOLDEN_MESSAGES, [rgb(56, 56)])
    assert sample.input_ids.tolist() == GOLDEN_IDS
    assert sample.labels.tolist() == GOLDEN_LABELS
    assert sample.image_grid_thw.tolist() == [[1, 4, 4]] and sample.pixel_values.shape == (16, 1176)
    assert sample.mm_token_type_ids.nonzero().flatten().tolist() == [23, 24, 25, 26]
    supervised = tiny_tokenizer.decode(sample.labels[sample.labels != _M])
    assert supervised == "10,20,30,40 plane\n<|im_end|>3<|im_end|>"  # both assistant turns, with <|im_end|>


def test_pieces_are_tokenized_separately(renderer, tiny_tokenizer):
    pieces = renderer.pieces(GOLDEN_MESSAGES, [4])
    assert [flag for _, flag in pieces] == [False, True, False, True, False]
    assert pieces[1][0] == "10,20,30,40 plane\n<|im_end|>" and pieces[-1][0] == "\n"
    ids = [i for text, _ in pieces for i in tiny_tokenizer(text, add_special_tokens=False)["input_ids"]]
    assert len(ids) == len(GOLDEN_IDS)


def test_chat_template_matches_the_renderer(renderer, tiny_tokenizer):
    cases = [
        GOLDEN_MESSAGES,
        [{"role": "system", "content": templates.HBB_SYSTEM_PROMPT}, *GOLDEN_MESSAGES[:2]],
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "zoom"}, {"type": "image"}]}],
    ]
    for messages in cases:
        for generation in (False, True):
            expected = tiny_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
            assert renderer.prompt_text(messages, generation) == expected


def test_render_agrees_with_the_transformers_processor(renderer, tiny_tokenizer, rgb):
    settings = renderer.image_settings
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=settings.min_pixels, max_pixels=settings.max_pixels),
        tokenizer=tiny_tokenizer, video_processor=Qwen2VLVideoProcessor(), chat_template=tiny_tokenizer.chat_template)
    images = [rgb(100, 80, 1), rgb(30, 200, 2)]
    messages = [{"role": "system", "content": templates.TOOL_SYSTEM_PROMPT},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Count the ships."}]},
                {"role": "assistant", "content": templates.tool_call([1, 2, 30, 40])},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": templates.ZOOMED_IMAGE_NOTE}]},
                {"role": "assistant", "content": "2"}]
    sample = renderer.render(messages, images)
    reference = processor(text=[renderer.prompt_text(messages)], images=[Image.fromarray(i) for i in images],
                          return_tensors="pt")
    assert reference["input_ids"][0].tolist() == sample.input_ids.tolist()
    assert reference["mm_token_type_ids"][0].tolist() == sample.mm_token_type_ids.tolist()
    assert reference["image_grid_thw"].tolist() == sample.image_grid_thw.tolist() == [[1, 8, 6], [1, 2, 14]]
    ids = TokenIds.of(tiny_tokenizer)
    supervised = sample.input_ids[sample.labels != _M]
    assert ids.tool_call_open in supervised.tolist() and ids.image not in supervised.tolist()


def test_generation_prompt_and_frames(renderer, rgb):
    sample = renderer.render(GOLDEN_MESSAGES[:1], [rgb(100, 80)], add_generation_prompt=True)
    assert (sample.labels == _M).all()
    assert renderer.tokenizer.decode(sample.input_ids[-3:]) == "<|im_start|>assistant\n"
    assert sample.frames[0].original == (80, 100) and sample.frames[0].resized == (84, 112)
    resized = renderer.render([{"role": "user", "content": [{"type": "image", "index": 0, "resized_width": 56,
                                                             "resized_height": 112}]}], [rgb(100, 80)])
    assert resized.image_grid_thw.tolist() == [[1, 8, 4]]


def test_bad_messages_are_reported(renderer, rgb):
    image_item = {"type": "image", "index": 0}
    with pytest.raises(ValueError, match="mapping"):
        renderer.render(["hello"])
    with pytest.raises(ValueError, match="unknown role"):
        renderer.render([{"role": "robot", "content": "hi"}])
    with pytest.raises(ValueError, match="out of range"):
        renderer.render([{"role": "user", "content": [{"type": "image", "index": 1}]}], [rgb(56, 56)])
    with pytest.raises(ValueError, match="not referenced"):
        renderer.render([{"role": "user", "content": "hi"}], [rgb(56, 56)])
    with pytest.raises(ValueError, match="assistant turn cannot hold an image"):
        renderer.render([{"role": "assistant", "content": [image_item]}], [rgb(56, 56)])
    with pytest.raises(ValueError, match="message 0 item 0"):
        renderer.render([{"role": "user", "content": [{"type": "audio"}]}])


def test_truncation_keeps_ids_and_images_consistent(tiny_tokenizer, rgb):
    messages = [{"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image"}]},
                {"role": "assistant", "content": "a ship"}]
    full = ChatRenderer(tiny_tokenizer, TINY_IMAGE_SETTINGS).render(messages, [rgb(100, 80)])
    start = full.input_ids.tolist().index(TokenIds.of(tiny_tokenizer).vision_start)
    inside = ChatRenderer(tiny_tokenizer, TINY_IMAGE_SETTINGS, max_length=start + 5).render(messages, [rgb(100, 80)])
    assert inside.truncated and len(inside) == start and inside.pixel_values is None and not inside.frames
    after = ChatRenderer(tiny_tokenizer, TINY_IMAGE_SETTINGS, max_length=len(full) - 2).render(messages, [rgb(100, 80)])
    assert after.truncated and len(after) == len(full) - 2 and after.image_grid_thw.tolist() == [[1, 8, 6]]
    assert after.input_ids.tolist() == full.input_ids.tolist()[:-2]


def test_synthetic_sft_records_render(tmp_path, renderer):
    synthesize("sft", tmp_path, n=3, seed=0)
    for conversation in read_conversations(tmp_path / "sft.json"):
        sample = renderer.render_conversation(conversation)
        assert sample.meta["id"] == conversation.id
        assert sample.image_grid_thw.tolist() == [[1, 16, 16]]  # 224² at the tiny cap of 64 tokens
        assert (sample.labels != _M).sum() > 0 and int(sample.mm_token_type_ids.sum()) == 64


def test_image_settings_round_trip(tmp_path):
    settings = ImageSettings(min_pixels=3136, max_pixels=50176)
    settings.save_pretrained(tmp_path)
    assert ImageSettings.from_pretrained(tmp_path) == settings
    assert ImageSettings.from_pretrained(tmp_path, max_pixels=1000000).max_pixels == 1000000
    processor = Qwen2VLImageProcessor.from_pretrained(tmp_path)
    assert processor.size["shortest_edge"] == 3136 and processor.size["longest_edge"] == 50176
    (tmp_path / "preprocessor_config.json").write_text('{"size": {"shortest_edge": "big"}}')
    with pytest.raises(ValueError, match="min_pixels"):
        ImageSettings.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="image settings"):
        ImageSettings.from_pretrained(tmp_path / "absent")


def test_collate_pads_and_concatenates(renderer, tiny_tokenizer, rgb):
    a = renderer.render(GOLDEN_MESSAGES, [rgb(56, 56)])
    b = renderer.render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"}])
    c = renderer.render(GOLDEN_MESSAGES[:2], [rgb(100, 80)])
    pad = tiny_tokenizer.pad_token_id
    batch = collate([a, b, c], pad)
    assert batch["input_ids"].shape == (3, len(a))
    assert batch["input_ids"][1, len(b):].eq(pad).all() and batch["labels"][1, len(b):].eq(_M).all()
    assert batch["attention_mask"].sum(1).tolist() == [len(a), len(b), len(c)]
    assert batch["pixel_values"].shape == (16 + 48, 1176) and batch["image_grid_thw"].tolist() == [[1, 4, 4], [1, 8, 6]]
    left = collate([a, b], pad, padding_side="left", pad_to_multiple_of=8)
    assert left["input_ids"].shape[1] % 8 == 0 and left["attention_mask"][1, -len(b):].all()
    assert torch.equal(left["input_ids"][1, -len(b):], b.input_ids)
    assert "pixel_values" not in collate([b], pad)


def test_length_grouped_batches():
    lengths = [int(v) for v in np.random.default_rng(0).integers(1, 1000, 103)]
    order = length_grouped_indices(lengths, 4, torch.Generator().manual_seed(0), mega_batch_mult=5)
    assert sorted(order) == list(range(103)) and lengths[order[0]] == max(lengths)
    for start in range(20, 100, 20):  # each mega-batch is sorted by decreasing length
        assert lengths[order[start + 1]] >= lengths[order[start + 19]]  # (its first may be swapped)
    sampler = LengthGroupedBatchSampler(lengths, 4, seed=1, drop_last=True)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 25 and all(len(b) == 4 for b in batches)
    assert batches == list(sampler)  # deterministic for a seed and epoch
    sampler.set_epoch(1)
    assert batches != list(sampler)
