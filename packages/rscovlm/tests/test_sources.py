"""Converters of the recipe's box datasets (refGeo, DIOR-RSVG, DOTA, GeoChat) into conversation sources, fed
through the mixture and renderer (spec §2.1, §2.4, §3.3). Every fixture is a tiny fake file written here."""

import json

import pytest
from PIL import Image
from rs_shared.data.errors import DataFormatError

from rscovlm import cli_data
from rscovlm.eval_data import load_eval_set
from rscovlm.mixture import SFTDataset, build_mixture, load_sources
from rscovlm.resize import ResizedFrame
from rscovlm.sources import (
    detection_conversations,
    geochat_category,
    geochat_conversations,
    grounding_conversations,
    read_dior_rsvg,
    read_refgeo,
    write_source,
)
from rscovlm.templates import DOTA_CATEGORY_LIST, HBB_SYSTEM_PROMPT, POLYGON_SYSTEM_PROMPT


def _image(path, width, height):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (90, 120, 60)).save(path)
    return path


def _texts(conversation):
    return [(m.role, "".join(i.text for i in m.content if hasattr(i, "text"))) for m in conversation.messages]


def _rendered_texts(path, tiny, index=0):
    """The messages of record ``index`` of the source file at ``path`` as the training dataset renders them."""
    records = build_mixture(load_sources({"src": path}), ["src"])
    dataset = SFTDataset(records, tiny.renderer(), random_resize_prob=0.0)
    messages = dataset.messages(index)
    image = next(i for m in messages for i in m["content"] if i["type"] == "image")
    sample = dataset[index]  # renders: ids, labels, pixels
    assert (sample.labels != -100).any()
    texts = ["".join(i.get("text", "") for i in m["content"]) for m in messages]
    return texts, (image["resized_width"], image["resized_height"])


@pytest.fixture
def refgeo(tmp_path):
    _image(tmp_path / "images" / "dior" / "a.jpg", 200, 100)
    lines = [{"dataset": "dior", "image_id": "a.jpg", "question": "storage tank on the left", "question_id": 7,
              "bbox": [10.5, 20, 60, 80], "poly": [[60, 80], [10, 80], [10, 20], [60, 20]],
              "image_width": 200, "image_height": 100, "mask_exists": False},
             {"dataset": "dior", "image_id": "a.jpg", "question": "the bridge", "bbox": [100, 10, 190, 30]}]
    file = tmp_path / "refgeo.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return file


def test_refgeo_hbb_and_polygon_records(refgeo, tiny):
    items = read_refgeo(refgeo)
    assert [i.id for i in items] == ["7", "refgeo-2"] and items[1].poly is None
    hbb = grounding_conversations(items, "hbb")
    assert _texts(hbb[0]) == [("system", HBB_SYSTEM_PROMPT), ("user", "find the storage tank on the left"),
                              ("assistant", "10.5,20,60,80 storage tank on the left\n")]
    assert hbb[0].coords == "pixel" and hbb[0].images[0].name == "a.jpg"
    poly = grounding_conversations(items[:1], "poly")
    # refGeo order: counter-clockwise on screen from the top-most (then left-most) vertex (pitfall §9.12)
    assert _texts(poly[0])[0][1] == POLYGON_SYSTEM_PROMPT
    assert _texts(poly[0])[2][1] == "10,20,10,80,60,80,60,20 storage tank on the left\n"
    with pytest.raises(ValueError, match="has no polygon"):
        grounding_conversations(items, "poly")
    out = write_source(refgeo.parent / "out" / "refgeo_hbb.json", hbb)
    texts, resized = _rendered_texts(out, tiny)
    frame = ResizedFrame((200, 100), resized)
    assert texts[-1] == ",".join(map(str, frame.to_resized([10.5, 20, 60, 80]))) + " storage tank on the left\n"
    assert texts[1] == "find the storage tank on the left"  # no numbers: untouched


def test_refgeo_errors_name_file_line_and_field(refgeo):
    good = refgeo.read_text().splitlines()[0]
    for bad, field in [({"bbox": [1, 2, 3]}, "'bbox'"), ({"bbox": [5, 5, 1, 9]}, "no area"),
                       ({"question": ""}, "'question'"), ({"poly": [[1, 2]]}, "'poly'"),
                       ({"image_id": "missing.jpg"}, "image file")]:
        refgeo.write_text(good + "\n" + json.dumps({**json.loads(good), **bad}) + "\n")
        with pytest.raises(DataFormatError, match=rf"refgeo.jsonl: record line 2: .*{field}"):
            read_refgeo(refgeo)


def test_dior_rsvg_xml(tmp_path):
    _image(tmp_path / "JPEGImages" / "00001.jpg", 80, 60)
    objects = "".join(f"<object><name>vehicle</name><bndbox><xmin>{x}</xmin><ymin>5</ymin><xmax>{x + 10}</xmax>"
                      f"<ymax>15</ymax></bndbox><description>{d}</description></object>"
                      for x, d in [(3, "the vehicle on the left"), (40, "the vehicle on the right")])
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "00001.xml").write_text(f"<annotation><filename>00001.jpg</filename>{objects}"
                                                          "</annotation>")
    (tmp_path / "train.txt").write_text("00001\n")
    items = read_dior_rsvg(tmp_path, tmp_path / "train.txt")
    assert [(i.id, i.expression, i.bbox) for i in items] == [("00001-0", "the vehicle on the left", (3, 5, 13, 15)),
                                                             ("00001-1", "the vehicle on the right", (40, 5, 50, 15))]
    assert cli_data.main(["dior-rsvg", str(tmp_path), str(tmp_path / "vg" / "test.jsonl"), "--eval"]) == 0
    samples = load_eval_set("vg", tmp_path / "vg" / "test.jsonl")
    assert samples[1].bbox == (40, 5, 50, 15) and samples[1].image_path.resolve() == items[1].image.resolve()
    (tmp_path / "Annotations" / "00001.xml").write_text("<annotation><object><name>x</name></object></annotation>")
    with pytest.raises(DataFormatError, match="00001.xml: record object 0: field 'description'"):
        read_dior_rsvg(tmp_path)


@pytest.fixture
def dota(tmp_path):
    root = tmp_path / "dota"
    _image(root / "images" / "P0001.png", 120, 100)
    _image(root / "images" / "P0002.png", 120, 100)
    (root / "labelTxt").mkdir()
    (root / "labelTxt" / "P0001.txt").write_text(
        "imagesource:GoogleEarth\ngsd:0.1\n"
        "60 10 80 10 80 30 60 30 small-vehicle 0\n"
        "10.7 50 40 50 40 70 10 70 plane 1\n"
        "5 12 25 12 25 22 5 22 small-vehicle 0\n")
    (root / "labelTxt" / "P0002.txt").write_text("")
    return root


def test_dota_detection_records_and_mixture(dota, tiny):
    poly = detection_conversations(dota, "poly")
    assert _texts(poly[0])[:2] == [("system", POLYGON_SYSTEM_PROMPT), ("user", f"find the {DOTA_CATEGORY_LIST}")]
    assert _texts(poly[0])[2][1] == ("10,50,40,50,40,70,10,70 plane\n60,10,80,10,80,30,60,30 small vehicle\n"
                                     "5,12,25,12,25,22,5,22 small vehicle\n")  # class, then y1, x1; clockwise
    assert _texts(poly[1])[2][1] == "There are none." and poly[0].coords == "pixel"
    hbb = detection_conversations(dota, "hbb")
    assert _texts(hbb[0])[0][1] == HBB_SYSTEM_PROMPT
    assert _texts(hbb[0])[2][1] == "10,50,40,70 plane\n60,10,80,30 small vehicle\n5,12,25,22 small vehicle\n"
    out = dota.parent / "dota_poly.json"
    assert cli_data.main(["dota", str(dota), str(out), "--source", "dota_poly"]) == 0
    texts, resized = _rendered_texts(out, tiny)
    frame = ResizedFrame((120, 100), resized)
    first = ",".join(map(str, frame.to_resized([10, 50, 40, 50, 40, 70, 10, 70])))
    assert texts[-1].splitlines()[0] == first + " plane"
    records = build_mixture(load_sources({"dota_poly": out}), ["dota_poly*3"])
    assert len(records) == 6 and {r.source for r in records} == {"dota_poly"}


def test_geochat_boxes_become_norm100_brackets(tmp_path, tiny):
    _image(tmp_path / "img" / "g.png", 100, 50)
    records = [
        {"id": "ground", "image": "g.png", "conversations": [
            {"from": "human", "value": "<image>\n[refer] give me the location of <p>small vehicle</p>"},
            {"from": "gpt", "value": "{<10><20><30><40>|<45>}<delim>{<50><60><70><80>|<0>}"}]},
        {"id": "region", "image": "g.png", "conversations": [
            {"from": "human", "value": "[identify] What is this {<10><20><30><40>|<12>}?\n<image>"},
            {"from": "gpt", "value": "A white car {<10><20><30><40>|<12>} parked."}]},
        {"id": "teochat", "image": "g.png", "conversations": [
            {"from": "human", "value": "<image>\nWhere is the ship?"},
            {"from": "gpt", "value": "[5, 10, 15, 20]"}]},
        {"id": "vqa", "image": "g.png", "conversations": [
            {"from": "human", "value": "<image>\nIs it urban? Answer in 1,2,3,4 words."},
            {"from": "gpt", "value": "Yes"}]},
    ]
    file = tmp_path / "geochat.json"
    file.write_text(json.dumps(records))
    convs = {c.id: c for c in geochat_conversations(file, tmp_path / "img")}
    assert _texts(convs["ground"])[1][1] == "10,20,30,40 small vehicle\n50,60,70,80 small vehicle"
    assert _texts(convs["region"]) == [("user", "[identify] What is this [10, 20, 30, 40]?\n"),
                                       ("assistant", "A white car parked.")]
    assert _texts(convs["teochat"])[1][1] == "5,10,15,20 ship"
    assert [convs[k].coords for k in ("ground", "region", "teochat", "vqa")] == ["norm100"] * 3 + [None]
    assert _texts(convs["vqa"])[0][1] == "Is it urban? Answer in 1,2,3,4 words."  # no box frame: never rewritten
    out = write_source(tmp_path / "geochat_sft.json", list(convs.values()))
    texts, (w, h) = _rendered_texts(out, tiny)
    second = [int(v * (w if j % 2 == 0 else h) / 100) for j, v in enumerate([50, 60, 70, 80])]  # norm100 → pixels
    assert texts[-1].splitlines()[1] == ",".join(map(str, second)) + " small vehicle"
    texts, _ = _rendered_texts(out, tiny, index=3)
    assert texts[-2] == "Is it urban? Answer in 1,2,3,4 words."
    assert geochat_category("<image>\n[grounding] Where are the storage tanks?") == "storage tanks"


def test_cli_help_and_errors(tmp_path, capsys, refgeo):
    items = read_refgeo(refgeo)
    with pytest.raises(SystemExit):
        cli_data.main(["--help"])
    text = capsys.readouterr().out
    for name in ("refgeo", "dior-rsvg", "dota", "geochat", "rsvqa", "scene", "captions", "lrs-vqa-zoom"):
        assert name in text
    refgeo.write_text('{"dataset": "dior", "image_id": "a.jpg", "question": "x", "bbox": "no"}\n')
    assert cli_data.main(["refgeo", str(refgeo), str(tmp_path / "o.json")]) == 1
    assert "refgeo.jsonl: record line 1: field 'bbox'" in capsys.readouterr().err
    assert cli_data.main(["dota", str(tmp_path / "none"), str(tmp_path / "o.json")]) == 1
    assert "images/" in capsys.readouterr().err
    assert cli_data.main(["refgeo", str(tmp_path / "none.jsonl"), str(tmp_path / "o.json")]) == 2
    with pytest.raises(ValueError, match=r"must end in \.json"):
        write_source(tmp_path / "o.txt", grounding_conversations(items, "hbb"))
