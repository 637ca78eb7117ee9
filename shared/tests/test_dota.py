"""DOTA labelTxt reading/writing, the split (tiling) rule and the dataset helpers."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from rs_shared.data.dota import (
    DOTA_V1_0,
    DOTA_V1_5,
    DOTA_V2_0,
    DotaDataset,
    DotaImage,
    check,
    detect,
    min_area_quad,
    parse_tile_name,
    read_dota,
    tile_name,
    tile_origins,
    tile_sample,
    tile_to_source,
    to_hf_dataset,
    write_dota,
    write_tiles,
)
from rs_shared.data.errors import DataFormatError, Problems
from rs_shared.data.geometry import Boxes, clip_polygon, polygon_area

P0001 = """imagesource:GoogleEarth
gsd:0.146343590398
10.0 20.0 60.0 20.0 60.0 50.0 10.0 50.0 plane 0
100.5 30.0 130.0 30.0 130.0 45.25 100.5 45.25 small-vehicle 1
150.0 20.0 170.0 40.0 150.0 60.0 130.0 40.0 ship 0
20 80 80 70 84 94 24 104 harbor 0
"""
P0002 = "imagesource:GF2\ngsd:null\n"  # an image without objects
P0003 = "30 10 50 10 50 30 30 30 storage-tank\n"  # no difficult column (DOTA-derived sets)


def _png(path, width, height, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


@pytest.fixture
def dota_root(tmp_path):
    root = tmp_path / "dota"
    (root / "images").mkdir(parents=True)
    (root / "labelTxt").mkdir()
    for i, (name, text) in enumerate([("P0001", P0001), ("P0002", P0002), ("P0003", P0003)]):
        _png(root / "images" / f"{name}.png", 200, 120, seed=i)
        (root / "labelTxt" / f"{name}.txt").write_text(text)
    return root


def test_read_fixture(dota_root):
    p1, p2, p3 = read_dota(dota_root)
    assert [s.name for s in (p1, p2, p3)] == ["P0001", "P0002", "P0003"]
    assert p1.image_path == dota_root / "images" / "P0001.png"
    assert (p1.boxes.fmt, p1.boxes.frame, p1.boxes.image_size) == ("quad", "pixel", (200, 120))
    np.testing.assert_array_equal(p1.boxes.data[1], [100.5, 30, 130, 30, 130, 45.25, 100.5, 45.25])
    np.testing.assert_array_equal(p1.boxes.data[3], [20, 80, 80, 70, 84, 94, 24, 104])
    assert p1.labels == ("plane", "small-vehicle", "ship", "harbor")
    assert p1.difficult.tolist() == [0, 1, 0, 0] and p1.difficult.dtype == np.int64
    assert (p1.imagesource, p1.gsd) == ("GoogleEarth", 0.146343590398)
    np.testing.assert_array_equal(p1.hbb().data[2], [130, 20, 170, 60])

    assert len(p2.boxes) == 0 and p2.boxes.data.shape == (0, 8) and p2.labels == ()
    assert (p2.imagesource, p2.gsd) == ("GF2", None)
    assert p3.labels == ("storage-tank",) and p3.difficult.tolist() == [0]
    assert (p3.imagesource, p3.gsd) == (None, None)

    item = p1.load()
    assert item["image"].shape == (120, 200, 3) and item["image"].dtype == np.uint8
    np.testing.assert_array_equal(item["image"], np.asarray(Image.open(p1.image_path)))
    assert item["boxes"].shape == (4, 8) and item["labels"].tolist() == list(p1.labels)
    assert item["difficult"].tolist() == [0, 1, 0, 0]


def test_class_lists(dota_root):
    assert len(DOTA_V1_0) == 15 and DOTA_V1_0[4] == "small-vehicle" and DOTA_V1_0[-1] == "helicopter"
    assert DOTA_V1_5 == (*DOTA_V1_0, "container-crane")
    assert DOTA_V2_0 == (*DOTA_V1_5, "airport", "helipad")
    with open(dota_root / "labelTxt" / "P0003.txt", "a") as f:
        f.write("1 1 9 1 9 9 1 9 container-crane 0\n")
    with pytest.raises(DataFormatError, match="unknown class 'container-crane'; expected one of DOTA-v1.0"):
        read_dota(dota_root)
    assert read_dota(dota_root, classes=DOTA_V1_5)[2].labels == ("storage-tank", "container-crane")


def test_write_read_identity(tmp_path):
    rng = np.random.default_rng(1)
    quads = np.array([[12, 3, 40, 3, 40, 17, 12, 17], [0.1, 1 / 3, 50.25, 2.0, 48.7, 30.000001, -0.5, 29.9]])
    samples = [
        DotaImage("A01", rng.integers(0, 256, (40, 64, 3), dtype=np.uint8), Boxes(quads, "quad", "pixel", (64, 40)),
                  ("plane", "bridge"), np.array([0, 2]), "GoogleEarth", 0.3),
        DotaImage("A02", rng.integers(0, 256, (16, 24, 3), dtype=np.uint8), Boxes(np.zeros((0, 8)), "quad"),
                  (), np.zeros(0, dtype=np.int64)),
    ]
    root = tmp_path / "out"
    write_dota(root, samples)
    text = (root / "labelTxt" / "A01.txt").read_text()
    assert text.splitlines()[:3] == ["imagesource:GoogleEarth", "gsd:0.3",
                                     "12.0 3.0 40.0 3.0 40.0 17.0 12.0 17.0 plane 0"]
    assert (root / "labelTxt" / "A02.txt").read_text() == ""
    assert sorted(p.name for p in root.rglob("*")) == ["A01.png", "A01.txt", "A02.png", "A02.txt",
                                                       "images", "labelTxt"]
    back = read_dota(root)
    for written, read in zip(samples, back, strict=True):
        assert read.name == written.name and read.labels == written.labels
        np.testing.assert_array_equal(read.boxes.data, written.boxes.data)  # exact, not approximate
        np.testing.assert_array_equal(read.difficult, written.difficult)
        np.testing.assert_array_equal(read.load()["image"], written.image)
        assert (read.imagesource, read.gsd) == (written.imagesource, written.gsd)
    assert detect(root) and not detect(tmp_path)


def _box(x1, y1, x2, y2):
    return [x1, y1, x2, y1, x2, y2, x1, y2]


@pytest.fixture
def scene():
    """A 1300 × 900 image; with size 1024 and gap 200 the windows start at x = 0 and 276, y = 0."""
    image = np.random.default_rng(2).integers(0, 256, (900, 1300, 3), dtype=np.uint8)
    quads = [
        [60, 100, 140, 80, 150, 120, 70, 140],  # rotated, only in the left tile
        _box(400, 300, 500, 360),                # in the overlap: both tiles, unchanged
        _box(944, 500, 1044, 550),               # cut 80/20 by the left tile's right edge
        _box(984, 600, 1084, 650),               # cut 40/60 by the left tile's right edge
        _box(200, 700, 300, 760),                # cut 76/24 by the right tile's left edge (x = 276)
    ]
    labels = ("plane", "ship", "large-vehicle", "small-vehicle", "harbor")
    return DotaImage("P0007", image, Boxes(np.array(quads, float), "quad", "pixel", (1300, 900)), labels,
                     np.array([0, 0, 1, 0, 0]), "GoogleEarth", 0.5)


def test_tile_origins():
    assert tile_origins(1300, 900) == [(0, 0), (276, 0)]
    assert tile_origins(1300, 900, size=512, gap=112) == [(x, y) for y in (0, 388) for x in (0, 400, 788)]
    assert tile_origins(1848, 1024) == [(0, 0), (824, 0)]  # the shifted window coincides with the stride
    assert tile_origins(300, 200) == [(0, 0)]
    with pytest.raises(ValueError, match="gap"):
        tile_origins(100, 100, size=64, gap=64)


def test_tile_sample(scene):
    left, right = tile_sample(scene)
    assert (left.name, right.name) == ("P0007__1__0___0", "P0007__1__276___0")
    assert (right.source, right.x0, right.y0, right.source_size) == ("P0007", 276, 0, (1300, 900))
    assert left.image.shape == right.image.shape == (1024, 1024, 3)
    np.testing.assert_array_equal(left.image[:900], scene.image[:, :1024])
    assert not left.image[900:].any()  # zero padding below the 900-pixel-high image
    np.testing.assert_array_equal(right.image[:900], scene.image[:, 276:])
    assert right.boxes.image_size == (1024, 1024) and right.gsd == 0.5 and right.imagesource == "GoogleEarth"

    assert left.labels == ("plane", "ship", "large-vehicle", "small-vehicle", "harbor")
    q = scene.boxes.data
    np.testing.assert_array_equal(left.boxes.data[[0, 1, 4]], q[[0, 1, 4]])  # fully inside: unchanged
    np.testing.assert_allclose(left.boxes.data[2], _box(944, 500, 1024, 550))  # 80 % inside: clipped
    np.testing.assert_allclose(left.boxes.data[3], _box(984, 600, 1024, 650))  # 40 % inside: clipped
    assert left.difficult.tolist() == [0, 0, 1, 2, 0]  # the 80 % cut keeps its flag, the 40 % cut becomes 2

    assert right.labels == ("ship", "large-vehicle", "small-vehicle", "harbor")
    shift = np.tile([276, 0], 4)
    np.testing.assert_array_equal(right.boxes.data[:3], q[1:4] - shift)  # overlap objects: in both tiles
    np.testing.assert_allclose(right.boxes.data[3], np.array(_box(276, 700, 300, 760)) - shift)
    assert right.difficult.tolist() == [0, 1, 0, 2]

    back = left.to_source(left.boxes)
    assert back.image_size == (1300, 900)
    np.testing.assert_array_equal(back.data[[0, 1, 4]], q[[0, 1, 4]])
    back = right.to_source(right.boxes)
    np.testing.assert_array_equal(back.data[:3], q[1:4])
    np.testing.assert_allclose(back.data[3], _box(276, 700, 300, 760))
    np.testing.assert_array_equal(tile_to_source(right.boxes, right.name, (1300, 900)).data, back.data)
    hbb = right.to_source(right.boxes.to("xywh"))
    np.testing.assert_allclose(hbb.data[0], [400, 300, 100, 60])


def test_tile_clipped_pentagon_and_options(scene):
    # A 30°-rotated 40 × 20 rectangle centred at (1006, 300) loses one corner to the left tile's edge x = 1024.
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    corners = np.array([[-20, -10], [20, -10], [20, 10], [-20, 10]]) @ np.array([[c, s], [-s, c]]) + (1006, 300)
    sample = DotaImage("P0008", scene.image, Boxes(corners.reshape(1, 8), "quad", "pixel", (1300, 900)),
                       ("plane",), np.array([1]))
    part = clip_polygon(corners, 0, 0, 1024, 1024)
    assert len(part) == 5 and polygon_area(part) / 800 > 0.7
    left = tile_sample(sample)[0]
    expected = np.clip(min_area_quad(part), 0, 1024)
    np.testing.assert_allclose(left.boxes.data[0].reshape(4, 2), expected)
    assert left.difficult.tolist() == [1] and left.boxes.data[0, 0::2].max() == 1024

    small = tile_sample(scene, size=512, gap=112, pad=False)
    assert [t.name for t in small][:3] == ["P0007__1__0___0", "P0007__1__400___0", "P0007__1__788___0"]
    assert small[-1].image.shape == (512, 512, 3) and small[0].boxes.image_size == (512, 512)
    half = tile_sample(scene, rate=0.5)
    assert [t.name for t in half] == ["P0007__0.5__0___0"] and half[0].image.shape == (1024, 1024, 3)
    assert half[0].gsd == 1.0
    np.testing.assert_allclose(half[0].boxes.data, scene.boxes.data / 2)
    np.testing.assert_allclose(half[0].to_source(half[0].boxes).data, scene.boxes.data)


def test_min_area_quad():
    # A 10 × 10 square with its corner cut off: the axis-aligned square (area 100) beats the cut direction.
    pentagon = np.array([[0, 0], [10, 0], [10, 6], [6, 10], [0, 10]])
    np.testing.assert_allclose(min_area_quad(pentagon), [[0, 0], [10, 0], [10, 10], [0, 10]], atol=1e-12)
    # A rotated rectangle with a small corner clipped away: the rectangle itself comes back.
    c, s = np.cos(0.4), np.sin(0.4)
    rect = np.array([[-20, -10], [20, -10], [20, 10], [-20, 10]]) @ np.array([[c, s], [-s, c]]) + 50
    part = clip_polygon(rect, 0, 0, rect[:, 0].max() - 3, 100)
    assert len(part) == 5
    result = min_area_quad(part)
    assert polygon_area(result) == pytest.approx(800)
    assert {tuple(p) for p in np.round(result, 9)} == {tuple(p) for p in np.round(rect, 9)}
    assert result[0, 1] == result[:, 1].min()  # starts at the top-most vertex
    np.testing.assert_allclose(min_area_quad(np.array([[3, 4]])), [[3, 4]] * 4)


def test_tile_names():
    assert tile_name("P0000", 1.0, 0, 824) == "P0000__1__0___824"
    assert tile_name("P0000", 1.5, 824, 0) == "P0000__1.5__824___0"
    assert parse_tile_name("P0000__1__0___824") == ("P0000", 1.0, 0, 824)
    assert parse_tile_name("my__scene__0.5__10___20") == ("my__scene", 0.5, 10, 20)
    with pytest.raises(ValueError, match="not a DOTA tile name"):
        parse_tile_name("P0000")


def test_write_tiles_round_trip(scene, tmp_path):
    tiles = tile_sample(scene, size=512, gap=112)
    write_tiles(tmp_path / "tiles", tiles)
    back = read_dota(tmp_path / "tiles")
    assert [s.name for s in back] == sorted(t.name for t in tiles)
    by_name = {t.name: t for t in tiles}
    for sample in back:
        tile = by_name[sample.name]
        assert sample.labels == tile.labels and parse_tile_name(sample.name)[0] == "P0007"
        np.testing.assert_array_equal(sample.boxes.data, tile.boxes.data)
        np.testing.assert_array_equal(sample.difficult, tile.difficult)
    np.testing.assert_array_equal(back[0].load()["image"], by_name[back[0].name].image)


@pytest.mark.parametrize("line, expected", [
    ("1 2 3 4 5 6 7 plane 0", "expected 8 coordinates before the category"),
    ("1 2 abc 4 5 6 7 8 plane 0", "coordinate x2 must be a finite number, got 'abc'"),
    ("1 2 3 4 5 6 7 nan plane 0", "coordinate y4 must be a finite number"),
    ("1 2 3 4 5 6 7 8 xyz 0", "unknown class 'xyz'; expected one of DOTA-v1.0 classes"),
    ("1 2 3 4 5 6 7 8 plane 3", "difficult flag must be 0, 1 or 2, got '3'"),
    ("1 2 3 4 5 6 7 8 plane 0 1", "expected only the difficult flag after the category"),
    ("1 2 3 4 5 6 7 8 9", "no category name"),
    ("1 1 5 5 9 9 3 3 ship 0", "degenerate polygon"),
    ("gsd:0.5", "header 'gsd:' after the first object"),
])
def test_broken_lines(dota_root, line, expected):
    (dota_root / "labelTxt" / "P0001.txt").write_text(P0001 + line + "\n")
    with pytest.raises(DataFormatError, match=expected) as err:
        read_dota(dota_root)
    assert "P0001.txt: record line 7: " in str(err.value)


def test_broken_files(dota_root):
    (dota_root / "labelTxt" / "P0002.txt").write_text("imagesource:GF2\ngsd:fast\n")
    with pytest.raises(DataFormatError, match=r"P0002.txt: record line 2: gsd must be a positive number"):
        read_dota(dota_root)
    (dota_root / "labelTxt" / "P0002.txt").write_text(P0002)
    (dota_root / "images" / "P0002.png").unlink()
    with pytest.raises(DataFormatError, match=r"P0002.txt: label file has no image; expected images/P0002.png"):
        read_dota(dota_root)
    (dota_root / "labelTxt" / "P0002.txt").unlink()
    (dota_root / "labelTxt" / "P0003.txt").unlink()
    with pytest.raises(DataFormatError, match=r"P0003.png: image has no label file; expected labelTxt/P0003.txt"):
        read_dota(dota_root)
    (dota_root / "images" / "P0003.png").write_bytes(b"not a png")
    (dota_root / "labelTxt" / "P0003.txt").write_text("")
    with pytest.raises(DataFormatError, match=r"P0003.png: record P0003: cannot read image"):
        read_dota(dota_root)
    shutil.rmtree(dota_root / "labelTxt")
    with pytest.raises(DataFormatError, match="missing label directory"):
        read_dota(dota_root)


def test_non_strict_collects_problems(dota_root):
    (dota_root / "labelTxt" / "P0001.txt").write_text(
        P0001 + "1 2 3 4 5 6 7 plane 0\n1 2 x 4 5 6 7 8 ship 1\n1 2 3 4 5 6 7 8 xyz 0\n")
    (dota_root / "images" / "P0002.png").unlink()
    _png(dota_root / "images" / "P0004.png", 8, 8)
    problems = Problems(strict=False)
    samples = read_dota(dota_root, problems=problems)
    messages = [str(p) for p in problems.items]
    assert len(messages) == 5
    assert "P0004.png: image has no label file" in messages[0]
    assert "P0001.txt: record line 7: expected 8 coordinates" in messages[1]
    assert "P0001.txt: record line 8: coordinate x2 must be a finite number" in messages[2]
    assert "P0001.txt: record line 9: unknown class 'xyz'" in messages[3]
    assert "P0002.txt: label file has no image" in messages[4]
    assert [s.name for s in samples] == ["P0001", "P0003"]
    assert samples[0].labels == ("plane", "small-vehicle", "ship", "harbor")  # broken lines skipped

    counts = check(dota_root, Problems(strict=False))
    assert counts == {"format": "dota", "images": 2, "objects": 5, "difficult": 1, "cut": 0, "classes": "DOTA-v1.0",
                      "objects_per_class": {"harbor": 1, "plane": 1, "ship": 1, "small-vehicle": 1,
                                            "storage-tank": 1}}


def test_check_names_the_class_list(dota_root):
    (dota_root / "labelTxt" / "P0002.txt").write_text("1 1 9 1 9 9 1 9 helipad 0\n")
    problems = Problems(strict=False)
    counts = check(dota_root, problems)
    assert not problems.items and counts["classes"] == "DOTA-v2.0" and counts["objects"] == 6


def test_torch_and_hf_dataset(dota_root):
    dataset = DotaDataset(dota_root, transform=lambda item: (item["image"].shape, len(item["boxes"])))
    assert len(dataset) == 3 and dataset[0] == ((120, 200, 3), 4) and dataset.classes == DOTA_V1_0
    samples = read_dota(dota_root)
    hf = to_hf_dataset(samples)
    assert hf.column_names == ["name", "image", "boxes", "labels", "difficult", "imagesource", "gsd"]
    for row, sample in zip(hf, samples, strict=True):
        assert row["name"] == sample.name and row["labels"] == list(sample.labels)
        assert row["boxes"] == sample.boxes.data.tolist() and row["difficult"] == sample.difficult.tolist()
        assert (row["imagesource"], row["gsd"]) == (sample.imagesource, sample.gsd)
        np.testing.assert_array_equal(np.asarray(row["image"]), sample.load()["image"])
    assert to_hf_dataset(samples[:1])[0]["boxes"][3] == [20, 80, 80, 70, 84, 94, 24, 104]


def test_unlabelled_split_reads_images_only(tmp_path):
    from rs_shared.data.dota import read_dota_images

    (tmp_path / "images").mkdir()
    for name, size in (("P0002", (40, 30)), ("P0001", (20, 10))):
        Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(tmp_path / "images" / f"{name}.png")
    samples = read_dota_images(tmp_path)
    assert [s.name for s in samples] == ["P0001", "P0002"]
    assert samples[1].boxes.image_size == (40, 30) and len(samples[1].boxes) == 0 and samples[1].labels == ()
    tiles = tile_sample(samples[1], size=32, gap=8)
    assert len(tiles) == 2 and all(len(t.labels) == 0 for t in tiles)
    with pytest.raises(DataFormatError, match="image directory"):
        read_dota_images(tmp_path / "nowhere")
