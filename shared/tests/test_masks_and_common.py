"""Masks (rasterisation, RLE, validation), the shared readers' error behaviour, and the manifest."""

import json

import numpy as np
import pytest
from PIL import Image

from rs_shared.data.common import RecordDataset, read_image, read_json, read_jsonl, require_keys, write_json
from rs_shared.data.errors import DataFormatError, Problems
from rs_shared.data.manifest import verify_manifest, write_manifest
from rs_shared.data.masks import (
    mask_bbox,
    mask_to_rle,
    parse_coco_segmentation,
    parse_point_polygons,
    polygons_to_mask,
    rle_to_mask,
    segmentation_to_mask,
)


def test_rasterisation_uses_continuous_pixel_coordinates():
    square = np.array([[2, 3], [12, 3], [12, 13], [2, 13]], dtype=float)
    mask = polygons_to_mask([square], 20, 16)
    assert mask.shape == (20, 16) and mask.sum() == 100
    assert mask[3:13, 2:12].all()
    np.testing.assert_array_equal(mask_bbox(mask), [2, 3, 12, 13])


def test_parts_are_united_and_degenerate_parts_add_nothing():
    a = np.array([[0, 0], [4, 0], [4, 4], [0, 4]], dtype=float)
    b = a + 2
    mask = polygons_to_mask([a, b, np.array([[9.0, 9.0]])], 10, 10)
    assert mask.sum() == 16 + 16 - 4


def test_rle_round_trip_compressed_and_uncompressed():
    rng = np.random.default_rng(0)
    mask = rng.random((17, 23)) > 0.6
    rle = mask_to_rle(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [17, 23]
    json.dumps(rle)
    np.testing.assert_array_equal(rle_to_mask(rle), mask)
    # uncompressed COCO counts: column-major runs starting with background
    flat = np.asfortranarray(np.array([[0, 1], [1, 1]], dtype=bool)).ravel(order="F")
    assert flat.tolist() == [False, True, True, True]
    np.testing.assert_array_equal(rle_to_mask({"size": [2, 2], "counts": [1, 3]}), [[0, 1], [1, 1]])


def test_coco_segmentation_validation_names_file_and_record():
    with pytest.raises(DataFormatError, match=r"instances.json: record ann 7: polygon 0 has 3 coordinates"):
        parse_coco_segmentation([[1, 2, 3]], 10, 10, "instances.json", "ann 7", Problems())
    with pytest.raises(DataFormatError, match="RLE size"):
        parse_coco_segmentation({"size": [5, 5], "counts": "0"}, 10, 10, "x.json", 1, Problems())
    with pytest.raises(DataFormatError, match="flat list of numbers"):
        parse_coco_segmentation([["a", 1, 2, 3, 4, 5]], 10, 10, "x.json", 1, Problems())
    parts = parse_coco_segmentation([[0, 0, 4, 0, 4, 4, 0, 4]], 10, 10, "x.json", 1, Problems())
    assert segmentation_to_mask(parts, 10, 10).sum() == 16
    rle = mask_to_rle(np.eye(10, dtype=bool))
    assert segmentation_to_mask(parse_coco_segmentation(rle, 10, 10, "x.json", 1, Problems()), 10, 10).sum() == 10


def test_point_polygons_reject_three_coordinate_vertices():
    problems = Problems(strict=False)
    assert parse_point_polygons([[[0, 0], [1, 0, 5], [1, 1]]], "t.json", "polygons[0]", problems) is None
    assert "vertex [1, 0, 5] must be [x, y]" in str(problems.items[0])
    parts = parse_point_polygons([[[0, 0], [4, 0], [4, 4]], [[5, 5]]], "t.json", 0, Problems())
    assert [p.shape for p in parts] == [(3, 2), (1, 2)]


def test_problems_strict_raises_and_collecting_keeps_all():
    with pytest.raises(DataFormatError, match="a.txt: record 3: bad"):
        Problems().add("a.txt", "bad", 3)
    p = Problems(strict=False)
    p.add("a.txt", "one")
    p.add("b.txt", "two", "line 4")
    assert len(p.items) == 2 and str(p.items[1]) == "b.txt: record line 4: two"


def test_read_json_reports_truncation_with_position(tmp_path):
    f = tmp_path / "broken.json"
    f.write_text('{"images": [1, 2')
    with pytest.raises(DataFormatError, match=r"broken.json: invalid JSON at line 1"):
        read_json(f)
    with pytest.raises(DataFormatError, match="file is missing"):
        read_json(tmp_path / "nope.json")


def test_read_jsonl_reports_bad_lines(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text('{"a": 1}\n\n{"a": \n{"a": 3}\n')
    problems = Problems(strict=False)
    rows = read_jsonl(f, problems)
    assert [n for n, _ in rows] == [1, 4] and "record line 3" in str(problems.items[0])


def test_require_keys_checks_types():
    p = Problems(strict=False)
    assert not require_keys({"id": True}, {"id": int}, "f.json", 0, p)
    assert not require_keys([], {"id": int}, "f.json", 1, p)
    assert require_keys({"id": 3, "name": "x"}, {"id": int, "name": str}, "f.json", 2, p)
    assert [str(e) for e in p.items] == ["f.json: record 0: field 'id' must be int, got bool",
                                         "f.json: record 1: expected an object, got list"]


def test_read_image_errors(tmp_path):
    with pytest.raises(DataFormatError, match="image file is missing"):
        read_image(tmp_path / "x.png", record="train[3]")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataFormatError, match="cannot read image"):
        read_image(bad)
    Image.new("L", (3, 2), 7).save(tmp_path / "g.png")
    assert read_image(tmp_path / "g.png").mode == "RGB"


def test_write_json_is_atomic_and_record_dataset(tmp_path):
    write_json(tmp_path / "d" / "x.json", {"a": [1]})
    assert read_json(tmp_path / "d" / "x.json") == {"a": [1]}
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["x.json"]

    class R:
        def __init__(self, v):
            self.v = v

        def load(self):
            return {"v": self.v}

    ds = RecordDataset([R(1), R(2)], transform=lambda s: s["v"] * 10)
    assert len(ds) == 2 and ds[1] == 20


def test_manifest_detects_changed_missing_and_added_files(tmp_path):
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("b")
    write_manifest(tmp_path, format="x", task="y", counts={"n": 2}, generator={"seed": 0})
    problems = Problems(strict=False)
    manifest = verify_manifest(tmp_path, problems)
    assert not problems.items and manifest["counts"] == {"n": 2}
    assert set(manifest["files"]) == {"a.txt", "sub/b.txt"}
    (tmp_path / "a.txt").write_text("changed")
    (tmp_path / "sub" / "b.txt").unlink()
    (tmp_path / "c.txt").write_text("new")
    verify_manifest(tmp_path, problems)
    messages = " | ".join(str(e) for e in problems.items)
    assert "a.txt: checksum differs" in messages
    assert "b.txt: listed in manifest.json but missing" in messages
    assert "c.txt: file is not listed" in messages
    assert verify_manifest(tmp_path / "sub", Problems()) is None
