"""Zoom-in chain (spec §4.3, §8 test e): a scripted fake generator and the tiny real model."""

import pytest
from PIL import Image

from rscovlm import templates
from rscovlm.inference import HFGenerator
from rscovlm.model_factory import PAPER_IMAGE_SETTINGS
from rscovlm.zoom import crop_region, run_zoom_chain, zoom_messages

TOOL_CALL = templates.tool_call([100, 200, 300, 400])


class ScriptedGenerator:
    """Returns ``script[round]`` for every request of that round and records the requests."""

    def __init__(self, script, image_settings=PAPER_IMAGE_SETTINGS):
        self.script = list(script)
        self.image_settings = image_settings
        self.calls = []

    def generate(self, requests):
        self.calls.append(list(requests))
        output = self.script[min(len(self.calls), len(self.script)) - 1]
        return [output(r) if callable(output) else output for r in requests]


@pytest.fixture(scope="module")
def uhr_image():
    return Image.new("RGB", (8000, 6000), (40, 90, 140))


def test_resized_crop_spec_example(uhr_image):
    fake = ScriptedGenerator([TOOL_CALL, "three planes"])
    [result] = run_zoom_chain(fake, ["How many planes?"], [uhr_image], crop_source="resized")
    assert result.frame.resized == (1148, 868)
    assert result.answer == "three planes" and not result.capped and len(result.rounds) == 2
    first = result.rounds[0]
    assert first.tool_call and first.failure is None and first.tool_bbox == [100, 200, 300, 400]
    assert first.crop_box == [100, 200, 300, 400] and first.crop_pixels == [100, 200, 300, 400]
    assert first.crop_size == [200, 200]
    assert PAPER_IMAGE_SETTINGS.frame(200, 200).resized == (224, 224)  # the crop is upsampled by the renderer
    # round 1 sees: tool system, [image, question + instruction], the tool call, [crop, note]
    request = fake.calls[1][0]
    roles = [m["role"] for m in request.messages]
    assert roles == ["system", "user", "assistant", "user"]
    assert request.messages[0]["content"] == templates.TOOL_SYSTEM_PROMPT
    assert request.messages[1]["content"][1]["text"] == templates.zoom_question("How many planes?")
    assert request.messages[2]["content"] == TOOL_CALL
    assert request.messages[3]["content"][0] == {"type": "image", "index": 1}
    assert request.messages[3]["content"][1]["text"] == templates.ZOOMED_IMAGE_NOTE
    assert len(request.images) == 2 and request.images[1].size == (200, 200)


def test_original_crop_spec_example(uhr_image):
    fake = ScriptedGenerator([TOOL_CALL, "done"])
    [result] = run_zoom_chain(fake, ["q"], [uhr_image], crop_source="original")
    box = result.rounds[0].crop_box
    assert box == pytest.approx([696.9, 1382.5, 2090.6, 2765.0], abs=0.1)
    assert result.rounds[0].crop_pixels == [696, 1382, 2091, 2765]
    assert fake.calls[1][0].images[1].size == (2091 - 696, 2765 - 1382)


def test_crop_content_comes_from_the_chosen_source():
    image = Image.new("RGB", (112, 56))
    image.paste((255, 0, 0), (56, 0, 112, 56))  # right half red
    frame = PAPER_IMAGE_SETTINGS.frame(112, 56)  # upsampled to a larger frame
    crop, box, window = crop_region(image, frame, [frame.resized[0] - 20, 0, frame.resized[0], 20], "resized")
    assert crop.size == (20, 20) and crop.getpixel((10, 10))[0] > 200
    crop, box, window = crop_region(image, frame, [0, 0, 20, 20], "original")
    assert window[2] < 20 and crop.getpixel((1, 1)) == (0, 0, 0)
    with pytest.raises(ValueError, match="outside"):
        crop_region(image, frame, [5000, 5000, 6000, 6000])


def test_max_zoom_steps_cap():
    image = Image.new("RGB", (560, 560))
    fake = ScriptedGenerator([TOOL_CALL])  # always asks to zoom
    [result] = run_zoom_chain(fake, ["q"], [image], max_zoom_steps=2)
    assert len(fake.calls) == 3 and len(result.rounds) == 3 and result.capped
    assert result.answer == TOOL_CALL and len(fake.calls[-1][0].images) == 3
    fake = ScriptedGenerator([TOOL_CALL])
    [result] = run_zoom_chain(fake, ["q"], [image], max_zoom_steps=0)
    assert len(fake.calls) == 1 and result.capped and result.rounds[0].crop_box is None


@pytest.mark.parametrize("bad, reason", [
    ("<tool_call>\n{not json}\n</tool_call>", "not valid JSON"),
    ('<tool_call>\n{"name": "rotate", "arguments": {"bbox": [1, 2, 3, 4]}}\n</tool_call>', "unknown tool"),
    (templates.tool_call([300, 300, 100, 100]), "no area"),
    (templates.tool_call([5000, 5000, 6000, 6000]), "outside"),
])
def test_parse_error_sends_the_full_image_back(bad, reason):
    image = Image.new("RGB", (560, 420))
    fake = ScriptedGenerator([bad, "answer"])
    [result] = run_zoom_chain(fake, ["q"], [image])
    assert result.answer == "answer" and result.zoom_failures == 1
    assert reason in result.rounds[0].failure and result.rounds[0].crop_size == [560, 420]
    request = fake.calls[1][0]
    assert len(request.images) == 1 and request.messages[3]["content"][0] == {"type": "image", "index": 0}


def test_batch_keeps_each_samples_images():
    images = [Image.new("RGB", (560, 560), (k * 60, 0, 0)) for k in range(3)]
    # sample 1 zooms, samples 0 and 2 answer at once (the official batched index would pick the wrong image)
    fake = ScriptedGenerator([lambda r: TOOL_CALL if r.images[0] is images[1] else "direct", "zoomed answer"])
    results = run_zoom_chain(fake, ["a", "b", "c"], images)
    assert [r.answer for r in results] == ["direct", "zoomed answer", "direct"]
    [request] = fake.calls[1]
    assert request.images[0] is images[1] and request.images[1].getpixel((0, 0)) == (60, 0, 0)


def test_count_questions_skip_the_zoom_prompt():
    assert zoom_messages("How many ships?", zoom_prompt=False) == [
        {"role": "user", "content": [{"type": "image", "index": 0}, {"type": "text", "text": "How many ships?"}]}]
    fake = ScriptedGenerator(["2"])
    run_zoom_chain(fake, ["How many ships?", "Which color?"], [Image.new("RGB", (56, 56))] * 2,
                   zoom_prompt=[False, True])
    assert [len(r.messages) for r in fake.calls[0]] == [1, 2]


class FirstRoundScripted:
    """Round 0 scripted (a tool call), later rounds from the real model."""

    def __init__(self, real, first):
        self.real, self.first, self.image_settings, self.rounds = real, first, real.image_settings, 0

    def generate(self, requests):
        self.rounds += 1
        return [self.first] * len(requests) if self.rounds == 1 else self.real.generate(requests)


@pytest.mark.parametrize("first", [templates.tool_call([10, 10, 40, 40]), "<tool_call>\n{broken\n</tool_call>"])
def test_tiny_model_end_to_end(tiny, rgb, first):
    real = HFGenerator(tiny, max_new_tokens=6, batch_size=2)
    images = [Image.fromarray(rgb(100, 80, 0)), Image.fromarray(rgb(90, 120, 1))]
    results = run_zoom_chain(FirstRoundScripted(real, first), ["How many planes?", "What is this?"], images,
                             crop_source="original")
    for result in results:
        assert len(result.rounds) >= 2 and isinstance(result.answer, str)
        assert (result.rounds[0].failure is None) == first.startswith("<tool_call>\n{\"")
    plain = run_zoom_chain(real, ["What is this?"], images[:1])  # random weights: any text, never a crash
    assert isinstance(plain[0].answer, str) and len(plain[0].rounds) in (1, 2)
