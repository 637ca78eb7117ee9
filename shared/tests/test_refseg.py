"""RRSIS-D and RefSegRS readers, writers, restricted unpickling, HF conversion and ``check``."""

import collections
import json
import os
import pickle
import subprocess

import numpy as np
import pytest
from PIL import Image

from rs_shared.data.errors import DataFormatError, Problems
from rs_shared.data.masks import polygons_to_mask
from rs_shared.data.safe_pickle import safe_pickle_load
from rs_shared.data.refseg import (
    RefSegDataset,
    RefSegRSItem,
    RRSISDImage,
    RRSISDObject,
    check,
    detect_refsegrs,
    detect_rrsisd,
    group_by_ref,
    read_refsegrs,
    read_rrsisd,
    to_hf_dataset,
    write_refsegrs,
    write_rrsisd,
)

# --- restricted unpickler -------------------------------------------------------------------------------


class _Reduces:
    """Pickles as a call of ``func(*args)``: what a malicious pickle does."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_pickle_calling_os_system_is_refused_and_never_runs(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([_Reduces(os.system, (f"echo pwned > {marker}",))], protocol=protocol))
    with pytest.raises(DataFormatError, match=r"refs\(unc\)\.p: pickle asks for global '(posix|os|nt)\.system'; "
                       "only plain containers and scalars are allowed"):
        safe_pickle_load(path)
    assert not marker.exists()


@pytest.mark.parametrize("func, args, name", [
    (eval, ("__import__('os').getcwd()",), "builtins.eval"),
    (subprocess.Popen, (["true"],), "subprocess.Popen"),
    (collections.Counter, ("ab",), "collections.Counter"),
])
def test_pickle_with_any_other_global_is_refused(tmp_path, func, args, name):
    path = tmp_path / "x.p"
    path.write_bytes(pickle.dumps(_Reduces(func, args), protocol=4))
    with pytest.raises(DataFormatError, match=f"global '{name}'"):
        safe_pickle_load(path)


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_plain_containers_load_at_every_protocol(tmp_path, protocol):
    value = {"ref_id": 3, "sentences": [{"raw": "a roof", "sent_id": 1.5}], "t": (None, True, -(2**70)),
             "s": {1, 2}, "f": frozenset({"x"}), "o": collections.OrderedDict(b=1, a=2)}
    path = tmp_path / "x.p"
    path.write_bytes(pickle.dumps(value, protocol=protocol))
    assert safe_pickle_load(path) == value
    # Python 3 bytes need the global `_codecs.encode` below protocol 3: refused (annotations hold text)
    path.write_bytes(pickle.dumps([b"\x00"], protocol=protocol))
    if protocol < 3:
        with pytest.raises(DataFormatError, match="'_codecs.encode'"):
            safe_pickle_load(path)
    else:
        assert safe_pickle_load(path) == [b"\x00"]


def test_python2_pickle_strings_are_decoded_as_utf8(tmp_path):
    path = tmp_path / "py2.p"
    # written by Python 2 `pickle.dumps([{'raw': 'caf\xc3\xa9', 'ids': set([1])}])` at protocol 0
    path.write_bytes(b"(lp0\n(dp1\nS'raw'\np2\nS'caf\\xc3\\xa9'\np3\nsS'ids'\np4\n"
                     b"c__builtin__\nset\np5\n((lp6\nI1\natp7\nRp8\nsa.")
    assert safe_pickle_load(path) == [{"raw": "café", "ids": {1}}]
    path.write_bytes(b"S'\\xff'\np0\n.")
    with pytest.raises(DataFormatError, match="py2.p: not a valid pickle"):
        safe_pickle_load(path)


def test_truncated_or_missing_pickle_is_a_format_error(tmp_path):
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([{"ref_id": 1}] * 5, protocol=2)[:-9])
    with pytest.raises(DataFormatError, match=r"refs\(unc\)\.p: not a valid pickle"):
        safe_pickle_load(path)
    with pytest.raises(DataFormatError, match="file is missing"):
        safe_pickle_load(tmp_path / "nope.p")


# --- RRSIS-D fixture: literal instances.json, hand-written refs, two 20 x 16 JPEG tiles -------------------

INSTANCES = """{
 "images": [{"id": 1, "file_name": "00001.jpg", "height": 16, "width": 20},
            {"id": 2, "file_name": "00002.jpg", "height": 16, "width": 20}],
 "annotations": [
  {"id": 10, "image_id": 1, "category_id": 1, "segmentation": [[2, 2, 10, 2, 10, 8, 2, 8]],
   "bbox": [2, 2, 8, 6], "area": 48},
  {"id": 11, "image_id": 1, "category_id": 2,
   "segmentation": [[0, 0, 8, 0, 8, 8, 0, 8], [4, 4, 12, 4, 12, 12, 4, 12]], "bbox": [0, 0, 12, 12], "area": 112},
  {"id": 12, "image_id": 2, "category_id": 1, "segmentation": {"size": [16, 20], "counts": [34, 4, 12, 4, 266]},
   "bbox": [2, 2, 2, 4], "area": 8}
 ],
 "categories": [{"id": 1, "name": "vehicle"}, {"id": 2, "name": "storage tank"}]
}"""


def _sentence(raw, sent_id):
    return {"raw": raw, "sent": raw.lower(), "tokens": raw.lower().split(), "sent_id": sent_id}


def _refs():
    return [
        {"ref_id": 0, "ann_id": 10, "image_id": 1, "category_id": 1, "split": "train",
         "sentences": [_sentence("The red car", 0), _sentence("car on the left", 1)], "sent_ids": [0, 1]},
        {"ref_id": 1, "ann_id": 11, "image_id": 1, "category_id": 2, "split": "val",
         "sentences": [_sentence("two overlapping tanks", 2)], "sent_ids": [2]},
        {"ref_id": 2, "ann_id": 12, "image_id": 2, "category_id": 1, "split": "test",
         "sentences": [_sentence("a small vehicle", 3)], "sent_ids": [3]},
        {"ref_id": 3, "ann_id": 10, "image_id": 1, "category_id": 1, "split": "testB",
         "sentences": [_sentence("the same car", 4)], "sent_ids": [4]},
    ]


def _tile(seed, h=16, w=20):
    """A smooth RGB tile (JPEG keeps it within a few grey levels)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 9 + seed * 20, y * 11, (x + y) * 5 + 40], axis=-1).clip(0, 255).astype(np.uint8)


@pytest.fixture
def rrsisd(tmp_path):
    root = tmp_path / "refer"
    (root / "rrsisd").mkdir(parents=True)
    (root / "rrsisd" / "instances.json").write_text(INSTANCES)
    (root / "rrsisd" / "refs(unc).p").write_bytes(pickle.dumps(_refs(), protocol=2))
    jpegs = root / "images" / "rrsisd" / "JPEGImages"
    jpegs.mkdir(parents=True)
    for k in (1, 2):
        Image.fromarray(_tile(k)).save(jpegs / f"0000{k}.jpg", quality=95)
    return root


def _set(root, refs=None, instances=None):
    if refs is not None:
        (root / "rrsisd" / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    if instances is not None:
        (root / "rrsisd" / "instances.json").write_text(json.dumps(instances))


def _box(y0, y1, x0, x1, h=16, w=20):
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_rrsisd_records_one_per_sentence_with_ids_and_category(rrsisd):
    train = read_rrsisd(rrsisd, "train")
    assert [(r.ref_id, r.sent_id, r.expression) for r in train] == [(0, 0, "The red car"), (0, 1, "car on the left")]
    assert {(r.ann_id, r.image_id, r.category, r.split) for r in train} == {(10, 1, "vehicle", "train")}
    assert train[0].image_path == rrsisd / "images/rrsisd/JPEGImages/00001.jpg"
    sample = train[1].load()
    assert sample["image"].shape == (16, 20, 3) and sample["image"].dtype == np.uint8
    assert sample["mask"].dtype == bool and sample["expression"] == "car on the left"
    np.testing.assert_array_equal(sample["mask"], _box(2, 8, 2, 10))
    assert np.abs(sample["image"].astype(int) - _tile(1)).mean() < 3  # JPEG quality 95
    groups = group_by_ref(train)
    assert [[r.sent_id for r in g] for g in groups] == [[0, 1]]


def test_rrsisd_split_selection_and_single_dict_rle(rrsisd):
    test = read_rrsisd(rrsisd, "test")
    assert [r.ref_id for r in test] == [2, 3]  # "test" and "testB"
    np.testing.assert_array_equal(test[0].load()["mask"], _box(2, 6, 2, 4))
    assert [r.ref_id for r in read_rrsisd(rrsisd, "val")] == [1]
    with pytest.raises(ValueError, match="split must be one of"):
        read_rrsisd(rrsisd, "testA")


def test_official_overlap_rule_drops_pixels_covered_twice(rrsisd):
    union = read_rrsisd(rrsisd, "val")[0].load()["mask"]
    official = read_rrsisd(rrsisd, "val", overlap="official")[0].load()["mask"]
    np.testing.assert_array_equal(union, _box(0, 8, 0, 8) | _box(4, 12, 4, 12))
    np.testing.assert_array_equal(official, union & ~_box(4, 8, 4, 8))
    assert union.sum() == 112 and official.sum() == 96
    # a single part or an RLE: both rules agree
    for split in ("train", "test"):
        a, b = read_rrsisd(rrsisd, split)[0], read_rrsisd(rrsisd, split, overlap="official")[0]
        np.testing.assert_array_equal(a.load()["mask"], b.load()["mask"])


def test_rrsisd_missing_image(rrsisd):
    (rrsisd / "images/rrsisd/JPEGImages/00002.jpg").unlink()
    with pytest.raises(DataFormatError, match=r"00002\.jpg: record image_id 2: image file is missing"):
        read_rrsisd(rrsisd, "test")
    assert len(read_rrsisd(rrsisd, "train")) == 2  # other images are unaffected


def test_rrsisd_truncated_instances_json(rrsisd):
    (rrsisd / "rrsisd/instances.json").write_text(INSTANCES[:200])
    with pytest.raises(DataFormatError, match=r"instances\.json: invalid JSON at line"):
        read_rrsisd(rrsisd, "train")


def test_rrsisd_polygon_with_three_coordinates(rrsisd):
    instances = json.loads(INSTANCES)
    instances["annotations"][0]["segmentation"] = [[1, 2, 3]]
    _set(rrsisd, instances=instances)
    with pytest.raises(DataFormatError, match=r"instances\.json: record annotations\[0\] \(id 10\): "
                       "polygon 0 has 3 coordinates"):
        read_rrsisd(rrsisd, "train")


def test_rrsisd_unknown_category_and_inconsistent_refs(rrsisd):
    refs = _refs()
    refs[2]["category_id"] = 99
    _set(rrsisd, refs=refs)
    with pytest.raises(DataFormatError, match=r"refs\(unc\)\.p: record 2 \(ref_id 2\): category_id 99 .*unknown class"):
        read_rrsisd(rrsisd, "test")
    refs = _refs()
    refs[1]["ann_id"] = 12
    _set(rrsisd, refs=refs)
    with pytest.raises(DataFormatError, match=r"record 1 \(ref_id 1\): annotation 12 has image_id 2 and category_id 1; the ref says 1 and 2"):
        read_rrsisd(rrsisd, "val")


def test_rrsisd_malicious_refs_pickle(rrsisd, tmp_path):
    marker = tmp_path / "pwned"
    (rrsisd / "rrsisd/refs(unc).p").write_bytes(pickle.dumps(_Reduces(os.system, (f"touch {marker}",))))
    with pytest.raises(DataFormatError, match=r"refs\(unc\)\.p: pickle asks for global"):
        read_rrsisd(rrsisd, "train")
    problems = Problems(strict=False)
    assert check(rrsisd, problems) == {} and "asks for global" in str(problems.items[0])
    assert not marker.exists()


def test_rrsisd_refs_pickle_that_is_not_a_list_of_dicts(rrsisd):
    _set(rrsisd, refs={"refs": _refs()})
    with pytest.raises(DataFormatError, match=r"refs\(unc\)\.p: expected a list of ref dicts, got dict"):
        read_rrsisd(rrsisd, "train")
    _set(rrsisd, refs=[_refs()[0], 7])
    with pytest.raises(DataFormatError, match=r"refs\(unc\)\.p: record 1: expected an object, got int"):
        read_rrsisd(rrsisd, "test")
    refs = _refs()
    refs[0]["sentences"] = [{"sent": "no raw text", "sent_id": 0}]
    _set(rrsisd, refs=refs)
    with pytest.raises(DataFormatError, match=r"record 0 \(ref_id 0\) sentence 0: missing field 'raw'"):
        read_rrsisd(rrsisd, "train")


def test_rrsisd_non_strict_collects_problems_and_keeps_good_refs(rrsisd):
    refs = _refs()
    refs[1]["category_id"] = 99
    refs[3]["sentences"] = []
    refs.append({"ref_id": 4, "split": "train"})
    _set(rrsisd, refs=refs)
    (rrsisd / "images/rrsisd/JPEGImages/00002.jpg").unlink()
    problems = Problems(strict=False)
    counts = check(rrsisd, problems)
    messages = [str(p) for p in problems.items]
    assert len(messages) == 4, messages
    assert any("record 1 (ref_id 1): category_id 99" in m for m in messages)
    assert any("record 3 (ref_id 3): 'sentences' is empty" in m for m in messages)
    assert any("record 4 (ref_id 4): missing field 'ann_id'" in m for m in messages)
    assert any("00002.jpg: record image_id 2: image file is missing" in m for m in messages)
    assert counts == {"train": 2, "val": 0, "test": 0, "train_refs": 1, "val_refs": 0, "test_refs": 0}


def test_load_rejects_image_whose_size_differs_from_instances(rrsisd):
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(rrsisd / "images/rrsisd/JPEGImages/00001.jpg")
    with pytest.raises(DataFormatError, match=r"00001\.jpg: record ref_id 0: image is 10x10 pixels but its mask is 20x16"):
        read_rrsisd(rrsisd, "train")[0].load()


# --- RefSegRS fixture: literal phrase files, 20 x 16 TIFF tiles ------------------------------------------

PHRASES = {
    "train": "0 the building on the left\n1 road   along the river \n\n0 impervious surface\n",
    "val": "1 a  car\r\n",
    "test": "2 low vegetation\n",
}


@pytest.fixture
def refsegrs(tmp_path):
    root = tmp_path / "RefSegRS"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for k in range(3):
        Image.fromarray(_tile(k)).save(root / "images" / f"{k}.tif")
        mask = np.zeros((16, 20), np.uint8)
        mask[:, :5], mask[:, 5:10], mask[:, 10:12] = 40, 51, 255  # threshold: value > 50
        Image.fromarray(mask).save(root / "masks" / f"{k}.tif")
    Image.fromarray(_tile(9), "RGB").convert("RGBA").save(root / "images" / "2.tif")  # converted to RGB
    for split, text in PHRASES.items():
        (root / f"output_phrase_{split}.txt").write_bytes(text.encode())
    return root


def test_refsegrs_lines_are_samples(refsegrs):
    train = read_refsegrs(refsegrs, "train")
    assert [(r.ref_id, r.image_id, r.expression) for r in train] == [
        (1, "0", "the building on the left"), (2, "1", "road   along the river"), (4, "0", "impervious surface")]
    assert len(group_by_ref(train)) == 3
    sample = train[0].load()
    np.testing.assert_array_equal(sample["image"], _tile(0))
    np.testing.assert_array_equal(sample["mask"], _box(0, 16, 5, 12))
    assert read_refsegrs(refsegrs, "val")[0].expression == "a  car"
    np.testing.assert_array_equal(read_refsegrs(refsegrs, "test")[0].load()["image"], _tile(9))


def test_refsegrs_broken_lines_and_files(refsegrs):
    (refsegrs / "output_phrase_train.txt").write_text("0 fine\n1\n5 missing tile\n")
    with pytest.raises(DataFormatError, match=r"output_phrase_train\.txt: record line 2 \(id '1'\): empty expression"):
        read_refsegrs(refsegrs, "train")
    (refsegrs / "masks/2.tif").unlink()
    with pytest.raises(DataFormatError, match=r"masks/2\.tif: record id '2': image file is missing"):
        read_refsegrs(refsegrs, "test")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(refsegrs / "masks/1.tif")
    with pytest.raises(DataFormatError, match=r"masks/1\.tif: record id '1': mask is 8x8 pixels but the image is 20x16"):
        read_refsegrs(refsegrs, "val")
    problems = Problems(strict=False)
    counts = check(refsegrs, problems)
    messages = [str(p) for p in problems.items]
    assert len(messages) == 4, messages  # empty expression, missing 5.tif, bad mask 1.tif, missing mask 2.tif
    assert any("images/5.tif: record id '5'" in m for m in messages)
    assert counts == {"train": 1, "val": 0, "test": 0}
    (refsegrs / "output_phrase_val.txt").unlink()
    with pytest.raises(DataFormatError, match=r"output_phrase_val\.txt: split file is missing"):
        read_refsegrs(refsegrs, "val")


# --- writers: write -> read equality ---------------------------------------------------------------------

def test_write_rrsisd_reads_back_equal(tmp_path):
    tank = [np.array([[3.0, 4.0], [15.5, 4.0], [15.5, 14.25], [3.0, 14.25]]),
            np.array([[10.0, 10.0], [22.0, 11.0], [18.0, 20.0]])]
    images = [
        RRSISDImage("a.jpg", _tile(1, 24, 30), "train", [
            RRSISDObject("storage tank", tank, ["the tank", "Large tank at the top-left"]),
            RRSISDObject("vehicle", [np.array([[1.0, 20.0], [6.0, 20.0], [6.0, 23.0]])], []),
        ]),
        RRSISDImage("b.jpg", _tile(2, 24, 30), "test", [
            RRSISDObject("vehicle", [np.array([[20.0, 2.0], [28.0, 2.0], [28.0, 9.0], [20.0, 9.0]])], ["a car"]),
        ]),
    ]
    root = tmp_path / "rrsisd_root"
    write_rrsisd(root, images, ["vehicle", "storage tank"])
    assert detect_rrsisd(root) and not detect_refsegrs(root)
    refs = safe_pickle_load(root / "rrsisd/refs(unc).p")
    assert [r["sentences"][-1]["sent"] for r in refs] == ["large tank at the top-left", "a car"]
    instances = json.loads((root / "rrsisd/instances.json").read_text())
    assert instances["annotations"][0]["bbox"] == [3.0, 4.0, 19.0, 16.0]
    assert instances["categories"] == [{"id": 1, "name": "vehicle"}, {"id": 2, "name": "storage tank"}]

    train = read_rrsisd(root, "train")
    assert [r.expression for r in train] == ["the tank", "Large tank at the top-left"]
    assert train[0].category == "storage tank"
    sample = train[1].load()
    np.testing.assert_array_equal(sample["mask"], polygons_to_mask(tank, 24, 30))
    assert instances["annotations"][0]["area"] == sample["mask"].sum()
    assert np.abs(sample["image"].astype(int) - images[0].image).mean() < 3
    (test,) = read_rrsisd(root, "test")
    np.testing.assert_array_equal(test.load()["mask"], _box(2, 9, 20, 28, 24, 30))
    assert check(root, Problems()) == {"train": 2, "val": 0, "test": 1, "train_refs": 1, "val_refs": 0,
                                       "test_refs": 1}


def test_write_refsegrs_reads_back_exactly(tmp_path):
    rng = np.random.default_rng(4)
    tiles = {k: (rng.integers(0, 256, (12, 14, 3), dtype=np.uint8), rng.random((12, 14)) > 0.5) for k in "ab"}
    items = {
        "train": [RefSegRSItem("a", *tiles["a"], "the tree"), RefSegRSItem("b", *tiles["b"], "a van"),
                  RefSegRSItem("a", *tiles["a"], "trees near the road")],
        "test": [RefSegRSItem("b", *tiles["b"], "the  van")],
    }
    root = tmp_path / "rs"
    write_refsegrs(root, items)
    assert detect_refsegrs(root) and not detect_rrsisd(root)
    assert (root / "output_phrase_train.txt").read_text() == "a the tree\nb a van\na trees near the road\n"
    for split, written in items.items():
        records = read_refsegrs(root, split)
        assert [r.expression for r in records] == [i.expression for i in written]
        for record, item in zip(records, written):
            sample = record.load()
            np.testing.assert_array_equal(sample["image"], item.image)
            np.testing.assert_array_equal(sample["mask"], item.mask)
    assert np.unique(np.asarray(Image.open(root / "masks/a.tif"))).tolist() == [0, 255]
    with pytest.raises(ValueError, match="two different images"):
        write_refsegrs(root, {"val": [RefSegRSItem("a", *tiles["a"], "x"), RefSegRSItem("a", *tiles["b"], "y")]})
    with pytest.raises(ValueError, match="single-line"):
        write_refsegrs(root, {"val": [RefSegRSItem("a", *tiles["a"], "two\nlines")]})


# --- torch and HF datasets -------------------------------------------------------------------------------

def test_dataset_from_root_and_hf_conversion(rrsisd, refsegrs, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    ds = RefSegDataset.from_root(rrsisd, "test", transform=lambda s: s["mask"].sum())
    assert len(ds) == 2 and ds[0] == 8
    with pytest.raises(DataFormatError, match="neither an RRSIS-D nor a RefSegRS"):
        RefSegDataset.from_root(tmp_path / "empty", "train")

    for records in (read_rrsisd(rrsisd, "val") + read_rrsisd(rrsisd, "test"), read_refsegrs(refsegrs, "train")):
        hf = to_hf_dataset(records)
        assert len(hf) == len(records)
        for row, record in zip(hf, records):
            sample = record.load()
            np.testing.assert_array_equal(np.asarray(row["image"]), sample["image"])
            mask = np.asarray(row["mask"])
            assert mask.dtype == bool
            np.testing.assert_array_equal(mask, sample["mask"])
            assert (row["expression"], row["ref_id"], row["sent_id"], row["image_id"], row["ann_id"],
                    row["category"], row["split"]) == (record.expression, record.ref_id, record.sent_id,
                                                       str(record.image_id), record.ann_id, record.category,
                                                       record.split)
