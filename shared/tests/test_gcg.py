"""GeoPixelD-style GCG data: caption markup and cleaning, tile names, index/per-tile readers, writer, HF."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rs_shared.data.errors import DataFormatError, Problems
from rs_shared.data.gcg import (
    GEOPIXEL_GCG_INSTRUCTION,
    GCGDataset,
    GCGRegion,
    TileName,
    check,
    clean_caption,
    detect,
    parse_grounded_caption,
    parse_tile_name,
    read_geopixeld,
    read_tiles,
    tile_name,
    to_hf_dataset,
)
from rs_shared.data.gcg_writer import GCGTile, write_geopixeld
from rs_shared.data.masks import polygons_to_mask, rle_to_mask

W, H = 20, 16  # fixture images: 20 px wide, 16 px high

INSTRUCTION = "Could you describe this image in detail with interleaved segmentation masks?"

# Tile 1: an instance phrase (one part) and a group phrase with two parts.
TILE_1 = """{"id": 0, "img": "P0001.png",
 "gcg_description": "A parking lot beside a road. <p> car-1 </p> [SEG] is parked next to <p> the trucks </p> [SEG] near the road.",
 "polygons": [[[[2, 2], [6, 2], [6, 5], [2, 5]]],
              [[[10, 1], [14, 1], [14, 4], [10, 4]], [[10, 8], [18, 8], [18, 12], [10, 12]]]]}"""

# Tile 2: a tile-suffixed name (rows 0-16, cols 600-620), one phrase whose polygon touches the border.
TILE_2 = """{"id": 1, "img": "P0224_0_16_600_620.png",
 "gcg_description": "<p> harbor-1 </p> [SEG] lies on the coast.",
 "polygons": [[[[0, 0], [20, 0], [20, 16], [0, 16]]]]}"""

INDEX = """[
 {"id": 0,
  "conversations": [{"from": "human", "value": "Could you describe this image in detail with interleaved segmentation masks?"},
                    {"from": "bot", "value": "A parking lot beside a road. <p> car-1 </p> [SEG] is parked next to <p> the trucks </p> [SEG] near the road."}],
  "image": "train/P0001.png", "polygons": "train/P0001.json"},
 {"id": 1,
  "conversations": [{"from": "user", "value": "Could you describe this image in detail with interleaved segmentation masks?"},
                    {"from": "gpt", "value": "<p> harbor-1 </p> [SEG] lies on the coast."}],
  "image": "train/P0224_0_16_600_620.png", "polygons": "train/P0224_0_16_600_620.json"}
]"""

# RLE variant: uncompressed column-major counts of rows 2:5, cols 2:6 in a 16 x 20 image.
RLE_INDEX = """[
 {"id": 7,
  "conversations": [{"from": "human", "value": "Describe."}, {"from": "bot", "value": "<p> car-1 </p> [SEG] is red."}],
  "image": "train/P0001.png",
  "segmentation": [{"size": [16, 20], "counts": [34, 3, 13, 3, 13, 3, 13, 3, 235]}]}
]"""


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _rect(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


CAR, TRUCKS = _rect(2, 5, 2, 6), _rect(1, 4, 10, 14) | _rect(8, 12, 10, 18)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    train = tmp_path / "GeoPixelD" / "train"
    train.mkdir(parents=True)
    Image.fromarray(_image(1)).save(train / "P0001.png")
    Image.fromarray(_image(2)).save(train / "P0224_0_16_600_620.png")
    (train / "P0001.json").write_text(TILE_1)
    (train / "P0224_0_16_600_620.json").write_text(TILE_2)
    (tmp_path / "GeoPixelD" / "GeoPixelD.json").write_text(INDEX)
    return tmp_path / "GeoPixelD"


def _edit_tile(path: Path, edit) -> None:
    tile = json.loads(path.read_text())
    edit(tile)
    path.write_text(json.dumps(tile))


# --- caption markup ------------------------------------------------------------------------------------

def test_spec_cleaning_example():
    parsed = parse_grounded_caption("The <p> car </p> [SEG] is red.")
    assert parsed.caption == "The car is red."
    assert parsed.phrases == ("car",)
    assert parsed.num_seg == 1 and parsed.grounding_problem() is None
    assert clean_caption("The <p> car </p> [SEG] is red.") == "The car is red."


def test_glamm_cleaning_quirks():
    markup = ("'The <p> tennis court-1 </p> [SEG] and\n<p> tennis court-2 </p> [SEG]  lie next to\n"
              "the <p> cars </p> [SEG].'")
    parsed = parse_grounded_caption(markup)
    # Newlines are deleted (joining "to" + "the"), [SEG] leaves a space before ".", single quotes stripped.
    assert parsed.caption == "The tennis court-1 and tennis court-2 lie next tothe cars ."
    assert parsed.phrases == ("tennis court-1", "tennis court-2", "cars")
    assert parsed.markup == markup
    # Double quotes stay; any <...> tag goes, even unknown ones; whitespace runs collapse.
    assert clean_caption('"A <p> ship </p> [SEG]." <s>') == '"A ship ."'
    assert clean_caption("  ' a\tb   x<y>z '  ") == "a b xz"


def test_grounding_problems():
    assert "2 [SEG] tokens but 1" in parse_grounded_caption("<p> a </p> [SEG] [SEG]").grounding_problem()
    assert "0 [SEG] tokens but 1" in parse_grounded_caption("<p> a </p> b").grounding_problem()
    swapped = parse_grounded_caption("[SEG] <p> a </p> b <p> c </p> [SEG]")
    assert swapped.grounding_problem() == "phrase 0 ('a') is not followed by [SEG]"


def test_tile_names():
    assert parse_tile_name("P0224_0_800_600_1400") == TileName("P0224", x0=600, y0=0, x1=1400, y1=800)
    assert tile_name("P0224", x0=600, y0=0, x1=1400, y1=800) == "P0224_0_800_600_1400"
    assert parse_tile_name("P0001") == TileName("P0001", None, None, None, None)
    assert parse_tile_name(tile_name("img_a", 1, 2, 3, 4)) == TileName("img_a", 1, 2, 3, 4)
    with pytest.raises(ValueError, match="y0 < y1"):
        parse_tile_name("P0001_800_0_0_800")


# --- reading -------------------------------------------------------------------------------------------

def test_read_index(root: Path):
    car, harbor = read_geopixeld(root / "GeoPixelD.json")
    assert car.id == 0 and car.name == "P0001" and car.image_path == root / "train" / "P0001.png"
    assert car.instruction == INSTRUCTION and car.image_size == (W, H)
    assert car.caption.caption == "A parking lot beside a road. car-1 is parked next to the trucks near the road."
    assert car.caption.phrases == ("car-1", "the trucks")
    assert [len(m) for m in car.masks] == [1, 2]
    np.testing.assert_array_equal(car.phrase_masks(), np.stack([CAR, TRUCKS]))
    np.testing.assert_array_equal(harbor.phrase_masks(), np.ones((1, H, W), dtype=bool))
    assert harbor.caption.phrases == ("harbor-1",)
    assert parse_tile_name(harbor.name) == TileName("P0224", 600, 0, 620, 16)

    boxes = car.phrase_boxes()
    assert boxes.fmt == "xyxy" and boxes.frame == "pixel" and boxes.image_size == (W, H)
    np.testing.assert_array_equal(boxes.data, [[2, 2, 6, 5], [10, 1, 18, 12]])
    np.testing.assert_array_equal(car.union_box().data, [[2, 1, 18, 12]])


def test_load_and_dataset(root: Path):
    dataset = GCGDataset(root)
    assert len(dataset) == 2
    item = dataset[0]
    np.testing.assert_array_equal(item["image"], _image(1))
    assert item["masks"].shape == (2, H, W) and item["masks"].dtype == bool
    assert item["phrases"] == ["car-1", "the trucks"]
    assert item["markup"].startswith("A parking lot beside a road. <p> car-1 </p> [SEG]")
    assert item["instruction"] == INSTRUCTION
    assert len(GCGDataset(root / "train", transform=lambda s: s["phrases"])) == 2


def test_read_tiles_matches_index(root: Path):
    tiles = read_tiles(root / "train")
    indexed = read_geopixeld(root / "GeoPixelD.json")
    assert [t.name for t in tiles] == ["P0001", "P0224_0_16_600_620"]
    assert all(t.instruction == GEOPIXEL_GCG_INSTRUCTION for t in tiles)
    for t, s in zip(tiles, indexed, strict=True):
        assert t.id == s.id and t.caption == s.caption and t.image_size == s.image_size
        np.testing.assert_array_equal(t.phrase_masks(), s.phrase_masks())


def test_rle_variant(root: Path):
    (root / "rle.json").write_text(RLE_INDEX)
    (sample,) = read_geopixeld(root / "rle.json")
    assert sample.id == 7 and sample.caption.caption == "car-1 is red."
    assert isinstance(sample.masks[0], dict)
    np.testing.assert_array_equal(sample.phrase_masks()[0], CAR)
    np.testing.assert_array_equal(sample.union_box().data, [[2, 2, 6, 5]])

    (root / "rle.json").write_text(RLE_INDEX.replace("[16, 20]", "[20, 16]"))
    with pytest.raises(DataFormatError, match=r"rle\.json: record 0 \(id 7\), phrase 0: RLE size \[20, 16\]"):
        read_geopixeld(root / "rle.json")


def test_empty_masks_have_no_union_box(root: Path):
    (root / "rle.json").write_text(RLE_INDEX.replace("[34, 3, 13, 3, 13, 3, 13, 3, 235]", "[320]"))
    (sample,) = read_geopixeld(root / "rle.json")
    np.testing.assert_array_equal(sample.phrase_boxes().data, [[0, 0, 0, 0]])
    assert sample.union_box().data.shape == (0, 4)


# --- writing -------------------------------------------------------------------------------------------

def _tiles() -> list[GCGTile]:
    return [
        GCGTile("S0001_0_16_0_20", _image(3), "A field. <p> tree-1 </p> [SEG] and <p> the houses </p> [SEG].",
                [[np.array([[1, 1], [5, 1], [3, 6]])],
                 [np.array([[8, 2], [12, 2], [12, 6], [8, 6]]), np.array([[14, 9], [19, 9], [19, 15], [14, 15]]),
                  np.array([[4, 12]])]]),
        GCGTile("S0002", _image(4), "No grounded objects here.", [], instruction="Describe."),
    ]


def _expected_masks(tile: GCGTile) -> np.ndarray:
    return np.array([polygons_to_mask(parts, H, W) for parts in tile.polygons], dtype=bool).reshape(-1, H, W)


def test_write_read_roundtrip(tmp_path: Path):
    tiles = _tiles()
    index = write_geopixeld(tmp_path, tiles)
    assert index == tmp_path / "GeoPixelD.json"
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == [
        "S0001_0_16_0_20.json", "S0001_0_16_0_20.png", "S0002.json", "S0002.png"]
    tile_json = json.loads((tmp_path / "train" / "S0001_0_16_0_20.json").read_text())
    assert tile_json["img"] == "S0001_0_16_0_20.png" and tile_json["polygons"][1][2] == [[4, 12]]

    for samples in (read_geopixeld(index), read_tiles(tmp_path / "train")):
        assert [s.id for s in samples] == [0, 1]
        for tile, sample in zip(tiles, samples, strict=True):
            loaded = sample.load()
            assert loaded["markup"] == tile.markup
            assert loaded["caption"] == parse_grounded_caption(tile.markup).caption
            assert loaded["phrases"] == list(parse_grounded_caption(tile.markup).phrases)
            np.testing.assert_array_equal(loaded["image"], tile.image)
            np.testing.assert_array_equal(loaded["masks"], _expected_masks(tile))
    assert read_geopixeld(index)[1].instruction == "Describe."


def test_write_second_split_keeps_first(tmp_path: Path):
    tiles = _tiles()
    write_geopixeld(tmp_path, tiles)
    write_geopixeld(tmp_path, tiles[:1], split="test")
    write_geopixeld(tmp_path, tiles[1:])  # rewriting train replaces only train entries
    records = json.loads((tmp_path / "GeoPixelD.json").read_text())
    assert [(r["id"], r["image"]) for r in records] == [(2, "test/S0001_0_16_0_20.png"), (3, "train/S0002.png")]
    assert [s.name for s in read_geopixeld(tmp_path / "GeoPixelD.json")] == ["S0001_0_16_0_20", "S0002"]


def test_writer_rejects_what_would_not_read_back(tmp_path: Path):
    tile = _tiles()[0]
    with pytest.raises(ValueError, match=r"S0001_0_16_0_20\.json: record S0001_0_16_0_20: has 1 polygon entries"):
        write_geopixeld(tmp_path, [GCGTile(tile.name, tile.image, tile.markup, tile.polygons[:1])])
    with pytest.raises(ValueError, match="integers"):
        write_geopixeld(tmp_path, [GCGTile(tile.name, tile.image, tile.markup,
                                           [[np.array([[1.5, 1], [5, 1], [3, 6]])], tile.polygons[1]])])
    with pytest.raises(ValueError, match="unique"):
        write_geopixeld(tmp_path, [tile, tile])
    assert not (tmp_path / "GeoPixelD.json").exists()


def test_regions_round_trip_and_give_the_tile_through_their_box(tmp_path: Path):
    tile = _tiles()[0]
    region = GCGRegion((7.0, 1.5, 20.0, 16.0), parse_grounded_caption("A field. <p> the houses </p> [SEG]."),
                       [tile.polygons[1]])
    index = write_geopixeld(tmp_path, [GCGTile(tile.name, tile.image, tile.markup, tile.polygons, regions=[region])])
    assert json.loads((tmp_path / "train" / f"{tile.name}.json").read_text())["regions"][0]["box"] == [7, 1.5, 20, 16]
    for sample in (read_geopixeld(index)[0], read_tiles(tmp_path / "train")[0]):
        assert sample.box is None and sample.load()["box"] is None
        np.testing.assert_array_equal(sample.load()["masks"], _expected_masks(tile))  # the holistic caption
        seen = sample.region(0)
        item = seen.load()
        assert seen.regions == () and seen.box == (7.0, 1.5, 20.0, 16.0) and seen.name == tile.name
        assert item["phrases"] == ["the houses"] and item["caption"] == "A field. the houses ."
        np.testing.assert_array_equal(item["box"], [7.0, 1.5, 20.0, 16.0])
        np.testing.assert_array_equal(item["masks"], _expected_masks(tile)[1:])
        with pytest.raises(IndexError, match="has 1 regions, asked for region 1"):
            sample.region(1)
    # Holistic tiles are written as before: no "regions" field.
    write_geopixeld(tmp_path / "plain", _tiles())
    assert "regions" not in json.loads((tmp_path / "plain" / "train" / f"{tile.name}.json").read_text())


def test_bad_regions_are_reported_with_file_and_region(root: Path):
    path = root / "train" / "P0001.json"
    good = {"box": [2, 1, 14, 5], "gcg_description": "<p> car-1 </p> [SEG] here.",
            "polygons": [[[[2, 2], [6, 2], [6, 5], [2, 5]]]]}
    _edit_tile(path, lambda t: t.__setitem__("regions", [good]))
    assert read_tiles(root / "train")[0].regions[0].box == (2.0, 1.0, 14.0, 5.0)
    _edit_tile(path, lambda t: t["regions"][0].__setitem__("box", [2, 1, 24, 5]))
    with pytest.raises(DataFormatError, match=r"P0001\.json: record 0, region 0: 'box' must be \[x1, y1, x2, y2\] "
                                              r"pixels with 0 <= x1 < x2 <= 20"):
        read_geopixeld(root / "GeoPixelD.json")
    _edit_tile(path, lambda t: t["regions"][0].update(box=[2, 1, 14, 5], polygons=[]))
    with pytest.raises(DataFormatError, match=r"record 0, region 0: has 0 polygon entries"):
        read_tiles(root / "train")
    _edit_tile(path, lambda t: t.__setitem__("regions", {"box": [0, 0, 1, 1]}))
    with pytest.raises(DataFormatError, match="'regions' must be a list"):
        read_tiles(root / "train")


# --- HF datasets, detect, check ------------------------------------------------------------------------

def test_to_hf_dataset(root: Path):
    samples = read_geopixeld(root / "GeoPixelD.json")
    ds = to_hf_dataset(samples)
    assert len(ds) == 2
    row = ds[0]
    assert row["id"] == "0" and row["tile"] == "P0001" and row["instruction"] == INSTRUCTION
    assert row["phrases"] == ["car-1", "the trucks"] and row["caption"] == samples[0].caption.caption
    assert row["markup"] == samples[0].caption.markup
    np.testing.assert_array_equal(np.asarray(row["image"].convert("RGB")), _image(1))
    masks = [rle_to_mask({"size": [row["height"], row["width"]], "counts": c}) for c in row["masks"]]
    np.testing.assert_array_equal(np.stack(masks), np.stack([CAR, TRUCKS]))


def test_detect_and_check(root: Path, tmp_path: Path):
    assert detect(root)
    assert not detect(tmp_path / "nothing") and not detect(root / "train" / "P0001.png")
    counts = {"tiles": 2, "phrases": 3, "group_phrases": 1}
    assert check(root, Problems()) == counts
    (root / "GeoPixelD.json").unlink()
    assert detect(root)  # per-tile files in train/
    assert check(root, Problems()) == counts


# --- broken copies -------------------------------------------------------------------------------------

def test_missing_image(root: Path):
    (root / "train" / "P0001.png").unlink()
    with pytest.raises(DataFormatError, match=r"P0001\.png: record 0 \(id 0\): missing image"):
        read_geopixeld(root / "GeoPixelD.json")
    with pytest.raises(DataFormatError, match=r"P0001\.png: record 0: missing image"):
        read_tiles(root / "train")


def test_truncated_json(root: Path):
    text = (root / "train" / "P0001.json").read_text()
    (root / "train" / "P0001.json").write_text(text[: len(text) // 2])
    with pytest.raises(DataFormatError, match=r"P0001\.json: record 0: invalid JSON at line"):
        read_geopixeld(root / "GeoPixelD.json")
    (root / "GeoPixelD.json").write_text(INDEX[:100])
    with pytest.raises(DataFormatError, match=r"GeoPixelD\.json: invalid JSON"):
        read_geopixeld(root / "GeoPixelD.json")


def test_vertex_with_three_coordinates(root: Path):
    _edit_tile(root / "train" / "P0001.json", lambda t: t["polygons"][1][1].__setitem__(0, [10, 8, 1]))
    with pytest.raises(DataFormatError, match=r"P0001\.json: record 0, phrase 1: polygon part 1: vertex \[10, 8, 1\]"):
        read_tiles(root / "train")


def test_vertex_outside_image(root: Path):
    _edit_tile(root / "train" / "P0001.json", lambda t: t["polygons"][0][0].__setitem__(1, [22, 2]))
    with pytest.raises(DataFormatError, match=r"record 0, phrase 0: .*vertex \[22.0, 2.0\] lies outside the 20x16"):
        read_geopixeld(root / "GeoPixelD.json")
    # One pixel beyond the border is tolerated.
    _edit_tile(root / "train" / "P0001.json", lambda t: t["polygons"][0][0].__setitem__(1, [21, -1]))
    assert len(read_geopixeld(root / "GeoPixelD.json")) == 2


def test_seg_count_differs_from_polygons(root: Path):
    _edit_tile(root / "train" / "P0224_0_16_600_620.json", lambda t: t["polygons"].append([[[1, 1], [2, 2], [1, 2]]]))
    with pytest.raises(DataFormatError, match=r"P0224_0_16_600_620\.json: record 1: has 2 polygon entries but "
                                              r"the caption has 1 \[SEG\]"):
        read_geopixeld(root / "GeoPixelD.json")
    with pytest.raises(DataFormatError, match=r"P0224_0_16_600_620\.json: record 1: has 2 polygon entries"):
        read_tiles(root / "train")


def test_bad_conversation_and_markup(root: Path):
    records = json.loads(INDEX)
    records[0]["conversations"].reverse()
    records[1]["conversations"][1]["value"] = "<p> harbor-1 </p> lies on the coast."
    (root / "GeoPixelD.json").write_text(json.dumps(records))
    with pytest.raises(DataFormatError, match=r"GeoPixelD\.json: record 0 \(id 0\): 'conversations' must be two"):
        read_geopixeld(root / "GeoPixelD.json")
    problems = Problems(strict=False)
    assert read_geopixeld(root / "GeoPixelD.json", problems) == []
    assert "record 1 (id 1): caption has 0 [SEG] tokens but 1" in str(problems.items[1])


def test_non_strict_collects_problems(root: Path):
    shutil.copytree(root / "train", root / "broken")
    for name in ("A", "B", "C"):
        shutil.copy(root / "train" / "P0001.png", root / "broken" / f"{name}.png")
    (root / "broken" / "A.json").write_text(TILE_1.replace("P0001.png", "A.png").replace("[2, 5]]]", "[2, 5, 0]]]"))
    (root / "broken" / "B.json").write_text(TILE_2.replace("P0224_0_16_600_620.png", "missing.png"))
    (root / "broken" / "C.json").write_text(TILE_1[:40])
    problems = Problems(strict=False)
    samples = read_tiles(root / "broken", problems)
    assert [s.name for s in samples] == ["P0001", "P0224_0_16_600_620"]
    messages = [str(p) for p in problems.items]
    assert len(messages) == 3
    assert "A.json: record 0, phrase 0: polygon part 0: vertex [2, 5, 0]" in messages[0]
    assert "missing.png: record 1: missing image" in messages[1]
    assert "C.json: invalid JSON" in messages[2]
    assert check(root, Problems(strict=False))["tiles"] == 2  # via the index, which ignores broken/
