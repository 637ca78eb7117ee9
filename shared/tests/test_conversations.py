import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rs_shared.data.conversations import (
    Conversation,
    ConversationDataset,
    ImageItem,
    Message,
    TextItem,
    check,
    detect,
    from_unified,
    join_image_tags,
    read_conversations,
    split_image_tags,
    to_hf_dataset,
    to_llava,
    to_unified,
    write_jsonl,
    write_llava,
)
from rs_shared.data.errors import DataFormatError, Problems

LLAVA_JSON = r"""[
  {"id": "vhm_1", "image": ["images/a.png", "images/b.png"], "source": "vhm", "coords": "norm100",
   "dataset": "VHM-SFT",
   "conversations": [
     {"from": "system", "value": "You are a remote sensing expert."},
     {"from": "human", "value": "Compare <image>\nwith <image> please."},
     {"from": "gpt", "value": "The first shows a ship at [10, 20, 30, 40]."},
     {"from": "human", "value": "And the second?"},
     {"from": "gpt", "value": "Farmland."}
   ]},
  {"id": 7, "image": "images/c.png",
   "conversations": [{"from": "human", "value": "<image>\n\nWhat is this?"}, {"from": "gpt", "value": "A port."}]},
  {"conversations": [{"from": "user", "value": "Text only?"}, {"from": "assistant", "value": "Yes."}]}
]
"""

UNIFIED_JSON = r"""[
  {"id": "q1", "source": "refgeo", "coords": "pixel",
   "messages": [
     {"role": "user", "content": [
       {"type": "image", "image": "file://ROOT/images/a.png", "resized_width": 448, "resized_height": 336},
       {"type": "text", "text": "find the ship"},
       {"type": "image", "image": "images/b.png"}]},
     {"role": "assistant", "content": "10,20,30,40 ship\n"}]}
]
"""

JSONL = """\
{"id": "l1", "image": "images/a.png", "conversations": [{"from": "human", "value": "<image>\\nCount the cars."}, {"from": "gpt", "value": "3"}]}

{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]}]}
"""

COLORS = {"a": (255, 0, 0), "b": (0, 128, 0), "c": (10, 20, 30)}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    for name, color in COLORS.items():
        pixels = np.zeros((6, 8, 3), np.uint8)
        pixels[...] = color
        pixels[0, 0] = (1, 2, 3)
        Image.fromarray(pixels).save(tmp_path / "images" / f"{name}.png")
    (tmp_path / "sft.json").write_text(LLAVA_JSON)
    (tmp_path / "unified.json").write_text(UNIFIED_JSON.replace("ROOT", tmp_path.as_posix()))
    (tmp_path / "mixed.jsonl").write_text(JSONL)
    return tmp_path


def image_pixels(name: str) -> np.ndarray:
    pixels = np.zeros((6, 8, 3), np.uint8)
    pixels[...] = COLORS[name]
    pixels[0, 0] = (1, 2, 3)
    return pixels


# ------------------------------------------------------------------------------------------------ reading


def test_llava_records(root):
    first, second, third = read_conversations(root / "sft.json")
    assert first.id == "vhm_1" and first.source == "vhm" and first.coords == "norm100"
    assert first.images == (root / "images/a.png", root / "images/b.png")
    assert first.meta == {"dataset": "VHM-SFT"}
    assert [m.role for m in first.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert first.messages[1].content == (TextItem("Compare "), ImageItem(0), TextItem("with "), ImageItem(1),
                                          TextItem(" please."))
    assert first.messages[2].content == (TextItem("The first shows a ship at [10, 20, 30, 40]."),)
    # integer id becomes a string; only one newline after a tag is dropped
    assert second.id == "7" and second.images == (root / "images/c.png",) and second.coords is None
    assert second.messages[0].content == (ImageItem(0), TextItem("\nWhat is this?"))
    # no id: <file stem>-<list index>; user/assistant accepted as given
    assert third.id == "sft-2" and third.images == () and third.messages[1] == Message("assistant", (TextItem("Yes."),))


@pytest.mark.parametrize("text, items", [
    ("<image>\nWhat?", (ImageItem(0), TextItem("What?"))),
    ("<image>What?", (ImageItem(0), TextItem("What?"))),
    ("<image>\n\nWhat?", (ImageItem(0), TextItem("\nWhat?"))),
    ("What?\n<image>", (TextItem("What?\n"), ImageItem(0))),
    ("<image><image>", (ImageItem(0), ImageItem(1))),
    ("<image>\n<image>\n", (ImageItem(0), ImageItem(1))),
    ("a <image> b", (TextItem("a "), ImageItem(0), TextItem(" b"))),
])
def test_image_tag_rules(text, items):
    assert split_image_tags(text) == items
    assert split_image_tags(join_image_tags(items)) == items
    shifted = split_image_tags(text, first_index=3)
    assert [i.index for i in shifted if isinstance(i, ImageItem)] == [i.index + 3 for i in items
                                                                      if isinstance(i, ImageItem)]


def test_join_image_tags_puts_newline_after_tag_before_text():
    assert join_image_tags((ImageItem(0), TextItem("What?"), ImageItem(1))) == "<image>\nWhat?<image>"
    assert join_image_tags((ImageItem(0), TextItem("\nWhat?"))) == "<image>\n\nWhat?"
    with pytest.raises(ValueError, match="literal <image>"):
        join_image_tags((TextItem("see <image> here"),))
    with pytest.raises(ValueError, match="unified"):
        join_image_tags((ImageItem(0, {"resized_width": 28}),))


def test_unified_record(root):
    (conv,) = read_conversations(root / "unified.json")
    assert conv.id == "q1" and conv.source == "refgeo" and conv.coords == "pixel"
    assert conv.images == (root / "images/a.png", root / "images/b.png")
    assert conv.messages[0].content == (ImageItem(0, {"resized_width": 448, "resized_height": 336}),
                                        TextItem("find the ship"), ImageItem(1))
    assert conv.messages[1].content == (TextItem("10,20,30,40 ship\n"),)


def test_jsonl_mixes_styles_and_image_root(root, tmp_path_factory):
    first, second = read_conversations(root / "mixed.jsonl")
    assert first.id == "l1" and first.messages[0].content == (ImageItem(0), TextItem("Count the cars."))
    assert second.id == "mixed-2"  # line index of line 3
    assert [m.role for m in second.messages] == ["system", "user", "assistant"]
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "sft.jsonl").write_text(JSONL)
    assert read_conversations(elsewhere / "sft.jsonl", image_root=root)[0].images == (root / "images/a.png",)


def test_load(root):
    sample = read_conversations(root / "sft.json")[0].load()
    assert sample["id"] == "vhm_1" and sample["coords"] == "norm100" and sample["source"] == "vhm"
    assert len(sample["images"]) == 2
    for array, name in zip(sample["images"], "ab"):
        assert array.dtype == np.uint8 and array.shape == (6, 8, 3)
        np.testing.assert_array_equal(array, image_pixels(name))
    assert sample["messages"][1] == {"role": "user", "content": [
        {"type": "text", "text": "Compare "}, {"type": "image", "index": 0}, {"type": "text", "text": "with "},
        {"type": "image", "index": 1}, {"type": "text", "text": " please."}]}
    unified = read_conversations(root / "unified.json")[0].load()
    assert unified["messages"][0]["content"][0] == {"type": "image", "index": 0, "resized_width": 448,
                                                    "resized_height": 336}


def test_conversation_checks_image_numbering():
    with pytest.raises(ValueError, match="order of appearance"):
        Conversation("x", (Message("user", (ImageItem(1),)),), (Path("a.png"), Path("b.png")))
    with pytest.raises(ValueError, match="coords"):
        Conversation("x", (Message("user", (TextItem("hi"),)),), coords="norm10")


# ------------------------------------------------------------------------------------------------ writing


def test_llava_round_trip(root, tmp_path_factory):
    convs = read_conversations(root / "sft.json")
    write_llava(root / "copy.json", convs)
    written = json.loads((root / "copy.json").read_text())
    assert written[0]["image"] == ["images/a.png", "images/b.png"] and written[1]["image"] == "images/c.png"
    assert written[0]["conversations"][1] == {"from": "human", "value": "Compare <image>\nwith <image>\n please."}
    assert written[0]["dataset"] == "VHM-SFT" and written[0]["coords"] == "norm100"
    assert "image" not in written[2]
    assert read_conversations(root / "copy.json") == convs
    # to another directory: paths are written relative to it
    out = tmp_path_factory.mktemp("out") / "sft.json"
    write_llava(out, convs)
    assert json.loads(out.read_text())[1]["image"].endswith("images/c.png")
    assert read_conversations(out) == convs


@pytest.mark.parametrize("style", ["llava", "unified"])
def test_jsonl_round_trip(root, style):
    convs = read_conversations(root / "sft.json") + read_conversations(root / "mixed.jsonl")
    if style == "unified":
        convs += read_conversations(root / "unified.json")
    write_jsonl(root / "out" / "all.jsonl", convs, image_root=root, style=style)
    lines = (root / "out" / "all.jsonl").read_text().splitlines()
    assert len(lines) == len(convs)
    assert all(("messages" if style == "unified" else "conversations") in json.loads(line) for line in lines)
    assert read_conversations(root / "out" / "all.jsonl", image_root=root) == convs


def test_llava_unified_conversion(root):
    convs = read_conversations(root / "sft.json")
    record = to_unified(convs[0])
    assert record["id"] == "vhm_1" and record["coords"] == "norm100" and record["dataset"] == "VHM-SFT"
    url = f"file://{(root / 'images/a.png').as_posix()}"
    assert record["messages"][1]["content"][1] == {"type": "image", "image": url}
    assert record["messages"][0] == {"role": "system",
                                     "content": [{"type": "text", "text": "You are a remote sensing expert."}]}
    for conv in convs:
        assert from_unified(to_unified(conv)) == conv
        assert from_unified(to_unified(conv, image_root=root), image_root=root) == conv
    # unified records (without image options) → LLaVA → read gives the same conversations
    unified = read_conversations(root / "mixed.jsonl")
    assert to_llava(unified[1], root)["conversations"][0] == {"from": "system", "value": "Be brief."}
    write_llava(root / "from_unified.json", unified)
    assert read_conversations(root / "from_unified.json") == unified
    with pytest.raises(ValueError, match="use unified"):
        to_llava(read_conversations(root / "unified.json")[0], root)
    with pytest.raises(DataFormatError, match="unified record: record q9: message 0: unknown role 'robot'"):
        from_unified({"id": "q9", "messages": [{"role": "robot", "content": "hi"}]})


def test_writer_rejects_meta_collision(root):
    conv = read_conversations(root / "sft.json")[2]
    clash = Conversation(conv.id, conv.messages, meta={"messages": []})
    with pytest.raises(ValueError, match="collide"):
        to_llava(clash, root)


# ------------------------------------------------------------------------------ datasets, detect and check


def test_hf_dataset(root):
    convs = read_conversations(root / "sft.json") + read_conversations(root / "unified.json")
    ds = to_hf_dataset(convs)
    assert ds.column_names == ["id", "messages", "images", "source", "coords", "meta"]
    for row, conv in zip(ds, convs):
        sample = conv.load()
        assert row["id"] == conv.id and row["source"] == conv.source and row["coords"] == conv.coords
        assert json.loads(row["messages"]) == sample["messages"]
        assert json.loads(row["meta"]) == conv.meta
        assert len(row["images"]) == len(sample["images"])
        for image, array in zip(row["images"], sample["images"]):
            np.testing.assert_array_equal(np.asarray(image.convert("RGB")), array)


def test_torch_dataset(root):
    ds = ConversationDataset(root / "sft.json", transform=lambda s: (s["id"], len(s["images"])))
    assert len(ds) == 3 and [ds[i] for i in range(3)] == [("vhm_1", 2), ("7", 1), ("sft-2", 0)]


def test_detect_and_check(root, tmp_path_factory):
    (root / "manifest.json").write_text('{"format": "conversations", "files": {}}')
    assert detect(root) and detect(root / "mixed.jsonl") and not detect(root / "manifest.json")
    gcg = tmp_path_factory.mktemp("gcg")
    (gcg / "GeoPixelD.json").write_text('[{"id": 1, "conversations": [], "image": "x.png", "polygons": "x.json"}]')
    assert not detect(gcg) and not detect(tmp_path_factory.mktemp("empty"))
    stats = check(root, Problems(strict=False))
    assert stats == {"format": "conversations", "files": {"mixed.jsonl": 2, "sft.json": 3, "unified.json": 1},
                     "records": 6, "turns": 16, "images": 6, "sources": {"(none)": 4, "vhm": 1, "refgeo": 1}}


# ------------------------------------------------------------------------------------------- broken input

GOOD = {"id": "bad", "image": ["images/a.png", "images/b.png"], "conversations": [
    {"from": "human", "value": "<image> and <image>\nDescribe."}, {"from": "gpt", "value": "Two fields."}]}


def broken(**changes):
    record = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        if key.startswith("turn"):
            record["conversations"][int(key[4:])].update(value)
        elif value is None:
            del record[key]
        else:
            record[key] = value
    return record


@pytest.mark.parametrize("record, expected", [
    (broken(image=["images/a.png", "images/missing.png"]), "missing.png is missing"),
    (broken(turn1={"from": "robot"}), "unknown speaker from='robot'"),
    (broken(image=["images/a.png"]), "2 <image> tag(s) in the turns but 1 image(s)"),
    (broken(turn0={"value": "Describe both."}), "tags are never implied"),
    (broken(image=5), "field 'image' must be a path or a list of paths"),
    (broken(turn1={"value": "  "}), "turn 1 (assistant) is empty"),
    (broken(turn1={"from": "human"}), "turn 1 is user, expected assistant"),
    (broken(conversations=GOOD["conversations"][:1]), "last turn must be an assistant turn"),
    (broken(coords="norm10"), "field 'coords' must be one of pixel, norm1, norm100, norm1000"),
    (broken(turn0={"value": 3}), "'value' must be str, got int"),
    (broken(video=["f0.png"]), "video records are not supported"),
    ({"id": "bad", "messages": [{"role": "user", "content": [{"type": "image", "image": "images/a.png",
                                                               "resize_width": 28}]},
                                {"role": "assistant", "content": "x"}]}, "unknown image option 'resize_width'"),
    ({"id": "bad", "messages": [{"role": "user", "content": [{"type": "image", "image": "https://x.org/a.png"}]},
                                {"role": "assistant", "content": "x"}]}, "only local files"),
    ({"id": "bad", "messages": [{"role": "tool", "content": "x"}]}, "unknown role 'tool'"),
    ({"id": "bad", "messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]}, "text item"),
    ({"id": "bad", "conversations": [], "messages": []}, "exactly one of"),
])
def test_broken_record_names_file_and_record(root, record, expected):
    path = root / "broken.json"
    path.write_text(json.dumps([GOOD | {"id": "ok"}, record]))
    with pytest.raises(DataFormatError) as info:
        read_conversations(path)
    message = str(info.value)
    assert "broken.json: record 1 (id bad): " in message and expected in message, message


def test_good_broken_fixture_reads(root):
    path = root / "good.json"
    path.write_text(json.dumps([GOOD]))
    (conv,) = read_conversations(path)
    assert conv.messages[0].content == (ImageItem(0), TextItem(" and "), ImageItem(1), TextItem("Describe."))


def test_truncated_json_names_file_and_position(root):
    (root / "cut.json").write_text(LLAVA_JSON[:300])
    with pytest.raises(DataFormatError, match=r"cut\.json: invalid JSON at line \d+, column \d+"):
        read_conversations(root / "cut.json")
    problems = Problems(strict=False)
    assert read_conversations(root / "cut.json", problems=problems) == [] and len(problems.items) == 1


def test_malformed_jsonl_line(root):
    lines = JSONL.splitlines()
    (root / "bad.jsonl").write_text("\n".join([lines[0], '{"id": "x", "conversations": [', lines[2]]) + "\n")
    with pytest.raises(DataFormatError, match=r"bad\.jsonl: record line 2: invalid JSON"):
        read_conversations(root / "bad.jsonl")
    (root / "bad.jsonl").write_text(lines[0].replace('"human"', '"robot"') + "\n")
    with pytest.raises(DataFormatError, match=r"bad\.jsonl: record 0 \(line 1, id l1\): turn 0: unknown speaker"):
        read_conversations(root / "bad.jsonl")


def test_non_strict_collects_every_problem(root):
    records = [GOOD | {"id": "ok1"}, broken(turn1={"from": "robot"}) | {"id": "r1"},
               broken(image=["images/a.png"]) | {"id": "r2"}, GOOD | {"id": "ok2"},
               broken(image=["images/a.png", "images/nope.png"]) | {"id": "r3"}]
    (root / "many.json").write_text(json.dumps(records))
    (root / "cut.json").write_text(LLAVA_JSON[:300])
    problems = Problems(strict=False)
    convs = read_conversations(root, problems=problems)
    assert [c.id for c in convs if c.id.startswith("ok")] == ["ok1", "ok2"]
    messages = [str(p) for p in problems.items]
    assert len(messages) == 4
    assert any("cut.json: invalid JSON" in m for m in messages)
    for rid in ("r1", "r2", "r3"):
        assert any("many.json: record" in m and f"(id {rid})" in m for m in messages)
    stats = check(root, Problems(strict=False))
    assert stats["files"]["many.json"] == 2 and stats["files"]["cut.json"] == 0
