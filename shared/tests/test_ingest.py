"""Own-data converters (``rs-data convert labels-to-scene | masks-to-refsegrs | captions-to-geopixeld | qa-to-sft``):
a raw folder written by ``synthetic.raw`` round-trips into a dataset its strict reader loads with the same content,
and bad tables fail with an error naming the file and the row."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from rs_shared.data import ingest
from rs_shared.data.cli import main
from rs_shared.data.conversations import ImageItem, TextItem, read_conversations
from rs_shared.data.errors import DataFormatError
from rs_shared.data.gcg import INDEX_NAME, read_geopixeld
from rs_shared.data.masks import polygons_to_mask
from rs_shared.data.refseg import read_refsegrs
from rs_shared.data.scene_cls import read_split
from rs_shared.data.synthetic.raw import write_raw


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """One raw folder per task (images + annotation file), written once for the module."""
    root = tmp_path_factory.mktemp("raw")
    sizes = {"scene": 22, "refseg": 8, "gcg": 6, "sft": 5}
    return {task: write_raw(task, root / task, n, seed=3) for task, n in sizes.items()}


def pixels(path, mode="RGB"):
    with Image.open(path) as im:
        return np.asarray(im.convert(mode))


def csv_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


# --- round trips ----------------------------------------------------------------------------------------------

def test_labels_to_scene_round_trip(raw, tmp_path):
    counts = ingest.labels_to_scene(raw["scene"], tmp_path / "MyScenes")
    split = read_split(tmp_path / "MyScenes" / "myscenes.json")
    rows = {r["image"].split("/")[-1]: r["label"] for r in csv_rows(raw["scene"])}
    assert split.classnames == tuple(sorted(set(rows.values())))
    assert counts == {"train": 11, "val": 0, "test": 11, "classes": 11}  # 2 per class: CoOp gives 1 train, 1 test
    for sample in (*split.train, *split.val, *split.test):
        name = sample.impath_rel.split("/")[-1]
        assert sample.classname == rows[name] == split.classnames[sample.label]
        assert np.array_equal(pixels(sample.path), pixels(raw["scene"].parent / "images" / name))


def test_labels_to_scene_keeps_a_split_column(raw, tmp_path):
    rows = csv_rows(raw["scene"])
    for i, row in enumerate(rows):
        row["split"] = ("train", "val", "test")[i % 3]
    table = write_csv(raw["scene"].parent / "with_split.csv", rows)
    ingest.labels_to_scene(table, tmp_path / "out", name="mine")
    split = read_split(tmp_path / "out" / "mine.json")
    assert [s.impath_rel.split("/")[-1] for s in split.val] == [r["image"].split("/")[-1] for r in rows[1::3]]


def test_masks_to_refsegrs_round_trip(raw, tmp_path):
    rows = csv_rows(raw["refseg"])
    counts = ingest.masks_to_refsegrs(raw["refseg"], tmp_path / "out")
    assert counts["images"] == 8 and counts["objects"] == len(rows) > 8  # some images refer to two objects
    records = {split: read_refsegrs(tmp_path / "out", split) for split in ("train", "val", "test")}
    assert all(records.values()) and sum(map(len, records.values())) == len(rows)
    by_expression = {(r["image"], r["expression"]): r for r in rows}
    split_of_image = {}
    for split, samples in records.items():
        for sample in samples:
            image_name, mask_name = sample.image_id.split("__")
            row = by_expression[f"images/{image_name}.png", sample.expression]
            assert row["mask"] == f"masks/{mask_name}.png"
            item = sample.load()
            assert np.array_equal(item["image"], pixels(raw["refseg"].parent / row["image"]))
            assert np.array_equal(item["mask"], pixels(raw["refseg"].parent / row["mask"], "L") > 0)
            assert split_of_image.setdefault(image_name, split) == split  # an image stays in one split


def test_captions_to_geopixeld_round_trip(raw, tmp_path):
    records = json.loads(raw["gcg"].read_text())
    counts = ingest.captions_to_geopixeld(raw["gcg"], tmp_path / "out")
    assert counts["train"] + counts["test"] == 6 and counts["test"] >= 1
    assert counts["phrases"] == sum(len(r["phrases"]) for r in records)
    by_image = {r["image"].split("/")[-1].removesuffix(".png"): r for r in records}
    samples = read_geopixeld(tmp_path / "out" / INDEX_NAME)
    assert len(samples) == 6
    for sample in samples:
        record = by_image[sample.name]
        assert sample.caption.caption == record["caption"]
        assert list(sample.caption.phrases) == [p["text"] for p in record["phrases"]]
        item = sample.load()
        assert np.array_equal(item["image"], pixels(raw["gcg"].parent / record["image"]))
        height, width = item["image"].shape[:2]
        for mask, phrase in zip(item["masks"], record["phrases"], strict=True):
            parts = [np.asarray(p, float).reshape(-1, 2) for p in phrase["polygons"]]
            assert np.array_equal(mask, polygons_to_mask(parts, height, width))


def test_qa_to_sft_round_trip(raw, tmp_path):
    pairs = [json.loads(line) for line in raw["sft"].read_text().splitlines()]
    counts = ingest.qa_to_sft(raw["sft"], tmp_path / "out")
    assert counts["images"] == 5 and counts["train"] + counts["test"] == len(pairs) and counts["test"] > 0
    conversations = read_conversations(tmp_path / "out")
    seen = []
    for conversation in conversations:
        user, assistant = conversation.messages
        assert isinstance(user.content[0], ImageItem) and isinstance(user.content[1], TextItem)
        seen.append((conversation.images[0].name, user.content[1].text, assistant.content[0].text))
        assert np.array_equal(pixels(conversation.images[0]),
                              pixels(raw["sft"].parent / "images" / conversation.images[0].name))
    assert sorted(seen) == sorted((p["image"].split("/")[-1], p["question"], p["answer"]) for p in pairs)
    held_out = tmp_path / "out" / "qa" / "test.jsonl"
    for line in held_out.read_text().splitlines():
        record = json.loads(line)
        assert (held_out.parent / record["image"]).is_file()
    test_ids = {c.id for c in read_conversations(tmp_path / "out" / "test.json")}
    assert {json.loads(line)["id"] for line in held_out.read_text().splitlines()} == test_ids
    train_images = {c.images[0].name for c in read_conversations(tmp_path / "out" / "train.json")}
    assert not train_images & {c.images[0].name for c in read_conversations(tmp_path / "out" / "test.json")}


# --- bad input ------------------------------------------------------------------------------------------------

def test_table_errors_name_the_file_and_row(raw, tmp_path):
    folder = raw["scene"].parent
    (folder / "no_label.csv").write_text("image,kind\nimages/S00000.png,airport\n")
    with pytest.raises(DataFormatError, match=r"no_label.csv: record line 2: missing field\(s\) 'label'"):
        ingest.labels_to_scene(folder / "no_label.csv", tmp_path / "a")
    (folder / "short.csv").write_text("image,label\nimages/S00000.png,airport\nimages/S00001.png\n")
    with pytest.raises(DataFormatError, match=r"short.csv: record line 3: has 1 fields, the header has 2"):
        ingest.labels_to_scene(folder / "short.csv", tmp_path / "b")
    (folder / "gone.csv").write_text("image,label\nimages/S00000.png,airport\nimages/nope.png,forest\n")
    with pytest.raises(DataFormatError, match=r"nope.png: record gone.csv line 3: image file is missing"):
        ingest.labels_to_scene(folder / "gone.csv", tmp_path / "c")
    (folder / "slash.csv").write_text("image,label\nimages/S00000.png,air/port\n")
    with pytest.raises(DataFormatError, match=r"slash.csv: record line 2: label 'air/port' must be usable as a folder"):
        ingest.labels_to_scene(folder / "slash.csv", tmp_path / "d")
    (folder / "bad.jsonl").write_text('{"image": "images/S00000.png", "label": "a"}\n{"image": \n')
    with pytest.raises(DataFormatError, match=r"bad.jsonl: record line 2: invalid JSON"):
        ingest.labels_to_scene(folder / "bad.jsonl", tmp_path / "e")
    with pytest.raises(FileExistsError, match="not an empty directory"):
        ingest.labels_to_scene(raw["scene"], folder)


def test_split_column_must_agree_within_an_image(raw, tmp_path):
    rows = [dict(r, split="train") for r in csv_rows(raw["refseg"])]
    image = next(r["image"] for r, nxt in zip(rows, rows[1:]) if r["image"] == nxt["image"])
    second = [i for i, r in enumerate(rows) if r["image"] == image][1]
    rows[second]["split"] = "test"
    table = write_csv(raw["refseg"].parent / "split_clash.csv", rows)
    with pytest.raises(DataFormatError, match=rf"split_clash.csv: record line {second + 2}: split 'test' differs"):
        ingest.masks_to_refsegrs(table, tmp_path / "out")


@pytest.mark.parametrize("damage,message", [
    ("resize", r"mask S00000_\d+.png is 10x10 pixels but its image is 64x64"),
    ("grey", r"mask S00000_\d+.png has \d+ grey levels; expected a binary mask"),
    ("empty", r"mask S00000_\d+.png is empty"),
])
def test_bad_masks_name_the_row(raw, tmp_path, damage, message):
    rows = csv_rows(raw["refseg"])
    mask = tmp_path / "mask.png"
    mask_pixels = pixels(raw["refseg"].parent / rows[0]["mask"], "L")
    changed = {"resize": mask_pixels[:10, :10],
               "grey": np.arange(64 * 64, dtype=np.uint8).reshape(64, 64),
               "empty": np.zeros_like(mask_pixels)}[damage]
    Image.fromarray(changed).save(mask)
    rows[0]["mask"] = str(mask)
    table = write_csv(raw["refseg"].parent / f"{damage}.csv", rows)
    with pytest.raises(DataFormatError, match=rf"{damage}.csv: record line 2: {message}".replace(
            r"S00000_\d+.png", "mask.png")):
        ingest.masks_to_refsegrs(table, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.png"]  # nothing half-written is left behind


@pytest.mark.parametrize("damage,message", [
    ("phrase", r"record item 1: phrase 0 'a spaceship' does not occur in the caption"),
    ("odd", r"record item 0, phrase 0: polygon 0 has 7 coordinates; expected an even number >= 6"),
    ("outside", r"record item 0: phrase 0, polygon 0: vertex \[500.0, \d+.0\] lies outside the 128x128 image"),
    ("markup", r"record item 2: caption .* must be plain one-line text without '<', '>'"),
    ("twice", r"record item 1: image 'images/S00000.png' already has a caption \(item 0\)"),
])
def test_bad_grounded_captions_name_the_record(raw, tmp_path, damage, message):
    records = json.loads(raw["gcg"].read_text())
    if damage == "phrase":
        records[1]["phrases"][0]["text"] = "a spaceship"
    elif damage == "odd":
        records[0]["phrases"][0]["polygons"][0] = records[0]["phrases"][0]["polygons"][0][:7]
    elif damage == "outside":
        records[0]["phrases"][0]["polygons"][0][0] = 500
    elif damage == "markup":
        records[2]["caption"] = "<p> " + records[2]["caption"]
    else:
        records[1]["image"] = records[0]["image"]
    table = raw["gcg"].parent / f"{damage}.json"
    table.write_text(json.dumps(records))
    with pytest.raises(DataFormatError, match=rf"{damage}.json: {message}"):
        ingest.captions_to_geopixeld(table, tmp_path / "out")


def test_bad_qa_pairs_name_the_row(raw, tmp_path):
    lines = raw["sft"].read_text().splitlines()
    record = json.loads(lines[2])
    lines[2] = json.dumps(dict(record, question="<image> what is this?"))
    (raw["sft"].parent / "tag.jsonl").write_text("\n".join(lines))
    with pytest.raises(DataFormatError, match=r"tag.jsonl: record line 3: field 'question' contains '<image>'"):
        ingest.qa_to_sft(raw["sft"].parent / "tag.jsonl", tmp_path / "a")
    rows = [dict(json.loads(line), id="same") for line in raw["sft"].read_text().splitlines()[:2]]
    (raw["sft"].parent / "ids.json").write_text(json.dumps(rows))
    with pytest.raises(DataFormatError, match=r"ids.json: record item 1: id 'same' is used again \(first by item 0\)"):
        ingest.qa_to_sft(raw["sft"].parent / "ids.json", tmp_path / "b")


# --- the CLI --------------------------------------------------------------------------------------------------

def test_cli_converts_checks_and_reports_bad_input(raw, tmp_path, capsys):
    assert main(["convert", "qa-to-sft", str(raw["sft"]), str(tmp_path / "sft"), "--p-train", "0.6"]) == 0
    assert "train " in capsys.readouterr().out
    assert main(["check", str(tmp_path / "sft")]) == 0
    assert main(["convert", "qa-to-sft", str(raw["sft"]), str(tmp_path / "sft")]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    (raw["sft"].parent / "broken.csv").write_text("image,question\nimages/S00000.png,what?\n")
    assert main(["convert", "qa-to-sft", str(raw["sft"].parent / "broken.csv"), str(tmp_path / "x")]) == 1
    assert "broken.csv: record line 2: missing field(s) 'answer'" in capsys.readouterr().err
    for conversion in ("labels-to-scene", "masks-to-refsegrs", "captions-to-geopixeld", "qa-to-sft"):
        with pytest.raises(SystemExit) as exit_info:
            main(["convert", conversion, "--help"])
        assert exit_info.value.code == 0
        assert "--p-train" in capsys.readouterr().out
