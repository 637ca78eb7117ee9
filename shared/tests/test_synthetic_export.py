"""Synthetic data written in every real format reads back equal to the generator's ground truth."""

import json

import numpy as np
import pytest

from rs_shared.data import dota, gcg, refseg, scene_cls
from rs_shared.data.conversations import TextItem, read_conversations
from rs_shared.data.errors import DataFormatError, Problems
from rs_shared.data.gcg import parse_grounded_caption
from rs_shared.data.manifest import read_manifest, verify_manifest
from rs_shared.data.synthetic import CATEGORIES, OBJECT_SCENE_CLASSES, SCENE_CLASSES
from rs_shared.data.synthetic import (
    grounded_caption,
    holistic_sentence,
    make_referring_scene,
    make_scene,
    region_caption,
)
from rs_shared.data.synthetic.export import (
    GROUNDING_TURNS,
    SCENE_CAPTIONS,
    SFT_KINDS,
    SPLIT_FRACTIONS,
    ensure_synthetic,
    sample_seed,
    split_of,
    synthesize,
)

N = 12


def ground_truth_referring(i, size=(64, 64)):
    return make_referring_scene(sample_seed(0, "refseg", i), size)


def test_scene_classification_reads_back(tmp_path):
    counts = synthesize("scene", tmp_path, n=2 * len(SCENE_CLASSES), seed=0)
    split = scene_cls.read_split(tmp_path / "synthetic_scenes.json")
    assert split.classnames == SCENE_CLASSES and counts["classes"] == len(SCENE_CLASSES)
    samples = [s for name in scene_cls.SPLITS for s in split[name]]
    assert len(samples) == 2 * len(SCENE_CLASSES)
    for sample in samples:
        # file names count per class; recover the generator index from the class and its order
        k = int(sample.path.stem.rsplit("_", 1)[1])
        i = k * len(SCENE_CLASSES) + sample.label
        scene = make_scene(sample_seed(0, "scene", i), (64, 64), SCENE_CLASSES[sample.label])
        np.testing.assert_array_equal(sample.load()["image"], scene.image)  # PNG: lossless


def test_scene_captions_are_the_ground_truth_of_every_image(tmp_path):
    n = 2 * len(SCENE_CLASSES) + 3
    synthesize("scene", tmp_path, n=n, seed=1)
    split = scene_cls.read_split(tmp_path / "synthetic_scenes.json")
    lines = (tmp_path / SCENE_CAPTIONS).read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["relpath"] for r in records] == [s.impath_rel for name in scene_cls.SPLITS for s in split[name]]
    for record in records:
        classname, k = record["relpath"].split("/")[0], int(record["relpath"].rsplit("_", 1)[1].split(".")[0])
        i = k * len(SCENE_CLASSES) + SCENE_CLASSES.index(classname)
        s = sample_seed(1, "scene", i)
        assert record["caption"] == holistic_sentence(make_scene(s, (64, 64), classname), np.random.default_rng(s))
    assert len({r["caption"] for r in records}) > len(records) // 2  # captions differ between images
    manifest = read_manifest(tmp_path)
    assert manifest["generator"]["captions"] == SCENE_CAPTIONS and SCENE_CAPTIONS in manifest["files"]
    problems = Problems(strict=False)
    verify_manifest(tmp_path, problems)
    assert not problems.items
    synthesize("refseg", tmp_path / "refseg", n=2, seed=0)  # other tasks have no captions file
    assert "captions" not in read_manifest(tmp_path / "refseg")["generator"]


@pytest.mark.parametrize("layout", ["rrsisd", "refsegrs"])
def test_referring_segmentation_reads_back(tmp_path, layout):
    synthesize("refseg", tmp_path, n=N, seed=0, layout=layout)
    read = refseg.read_rrsisd if layout == "rrsisd" else refseg.read_refsegrs
    records = [r for split in SPLIT_FRACTIONS for r in read(tmp_path, split)]  # generation order
    assert len(records) == N
    for i, record in enumerate(records):
        scene, expr = ground_truth_referring(i)
        item = record.load()
        assert record.split == split_of(i, N, SPLIT_FRACTIONS)
        assert item["expression"] == expr.text
        np.testing.assert_array_equal(item["mask"], scene.objects[expr.target].mask(64, 64))
        if layout == "refsegrs":  # TIFF: lossless; RRSIS-D images are JPEG like the real dataset
            np.testing.assert_array_equal(item["image"], scene.image)
        else:
            assert np.abs(item["image"].astype(int) - scene.image).mean() < 8  # JPEG q95 on pixel noise
            assert record.category == CATEGORIES[scene.objects[expr.target].category].noun


def test_grounded_captions_read_back(tmp_path):
    synthesize("gcg", tmp_path, n=N, seed=0)
    samples = gcg.read_geopixeld(tmp_path / "GeoPixelD.json")
    assert len(samples) == N
    for sample in samples:
        i = int(sample.name[1:])
        s = sample_seed(0, "gcg", i)
        scene = make_scene(s, (128, 128), OBJECT_SCENE_CLASSES[i % len(OBJECT_SCENE_CLASSES)])
        markup, groups = grounded_caption(scene, np.random.default_rng(s))
        item = sample.load()
        assert sample.caption == parse_grounded_caption(markup)
        np.testing.assert_array_equal(item["image"], scene.image)
        masks = scene.instance_masks()
        expected = np.stack([masks[group].any(axis=0) for group in groups])
        np.testing.assert_array_equal(item["masks"], expected)


def test_box_conditioned_captions_read_back_beside_the_holistic_one(tmp_path):
    synthesize("gcg", tmp_path, n=N, seed=0, regions=2)
    assert read_manifest(tmp_path)["generator"]["regions"] == 2
    for sample in gcg.read_geopixeld(tmp_path / "GeoPixelD.json"):
        i = int(sample.name[1:])
        s = sample_seed(0, "gcg", i)
        scene = make_scene(s, (128, 128), OBJECT_SCENE_CLASSES[i % len(OBJECT_SCENE_CLASSES)])
        assert sample.caption == parse_grounded_caption(grounded_caption(scene, np.random.default_rng(s))[0])
        assert len(sample.regions) == 2 and sample.box is None
        masks = scene.instance_masks()
        for k in range(2):
            markup, groups = region_caption(scene, np.random.default_rng([s, 1, k]))
            item = sample.region(k).load()
            assert item["markup"] == markup
            np.testing.assert_array_equal(item["masks"], np.stack([masks[g].any(axis=0) for g in groups]))
            # the prompt box encloses exactly the polygons of the covered objects
            covered = np.concatenate([scene.objects[j].polygon for g in groups for j in g])
            np.testing.assert_array_equal(item["box"], [*covered.min(0), *covered.max(0)])
    with pytest.raises(DataFormatError, match="regions=2"):
        ensure_synthetic("gcg", tmp_path, n=N, seed=0)  # a holistic-only request does not reuse this set
    with pytest.raises(ValueError, match="only available for gcg"):
        synthesize("refseg", tmp_path / "refseg", n=2, regions=1)


def test_dota_reads_back(tmp_path):
    synthesize("dota", tmp_path, n=3, seed=0, size=512)
    samples = dota.read_dota(tmp_path)
    assert len(samples) == 3
    for i, sample in enumerate(samples):
        scene = make_scene(sample_seed(0, "dota", i), (512, 512), OBJECT_SCENE_CLASSES[i % len(OBJECT_SCENE_CLASSES)])
        keep = [j for j, o in enumerate(scene.objects) if CATEGORIES[o.category].dota]
        np.testing.assert_array_equal(sample.boxes.data, scene.boxes("quad").data[keep])
        assert sample.labels == tuple(CATEGORIES[scene.objects[j].category].dota for j in keep)
        np.testing.assert_array_equal(sample.difficult, [scene.objects[j].difficult for j in keep])
        np.testing.assert_array_equal(sample.load()["image"], scene.image)
        assert sample.imagesource == "synthetic" and sample.gsd == pytest.approx(1 / scene.object_scale, rel=1e-5)


def test_sft_reads_back(tmp_path):
    synthesize("sft", tmp_path, n=6, seed=0, size=128)
    conversations = read_conversations(tmp_path / "sft.json")
    assert [c.source for c in conversations] == [f"synthetic:{SFT_KINDS[i % 3]}" for i in range(6)]
    for i, conv in enumerate(conversations):
        kind = SFT_KINDS[i % len(SFT_KINDS)]
        if kind == "grounding":
            scene, expr = make_referring_scene(sample_seed(0, "sft", i), (128, 128))
        else:
            scene = make_scene(sample_seed(0, "sft", i), (128, 128), SCENE_CLASSES[i % len(SCENE_CLASSES)])
        np.testing.assert_array_equal(conv.load()["images"][0], scene.image)
        assert conv.coords == (None if kind == "qa" else "pixel")
        questions = [m.content[-1].text for m in conv.messages if m.role == "user"]
        answers = [m.content[0].text for m in conv.messages if m.role == "assistant"]
        if kind == "grounding":  # refGeo style: "find the {expression}" -> "x1,y1,x2,y2 {expression}", target first
            assert 1 <= len(answers) <= GROUNDING_TURNS
            assert questions[0] == "find the " + expr.text.removeprefix("the ")
            boxes = scene.boxes("xyxy").data.astype(int).tolist()
            coords, label = answers[0].split(" ", 1)
            assert [int(v) for v in coords.split(",")] == boxes[expr.target]
            assert label == questions[0].removeprefix("find the ")
            for question, answer in zip(questions, answers, strict=True):
                coords, label = answer.split(" ", 1)
                assert [int(v) for v in coords.split(",")] in boxes and question == f"find the {label}"
        if kind == "detection":
            n_dota = sum(CATEGORIES[o.category].dota is not None for o in scene.objects)
            assert len(answers[0].splitlines()) == n_dota or answers[0] == "There are none."
        assert all(isinstance(c, TextItem) for m in conv.messages[1:] for c in m.content)


def test_generation_is_deterministic_and_manifested(tmp_path):
    synthesize("refseg", tmp_path / "a", n=5, seed=3)
    synthesize("refseg", tmp_path / "b", n=5, seed=3)
    ma, mb = read_manifest(tmp_path / "a"), read_manifest(tmp_path / "b")
    assert ma["files"] == mb["files"] and ma["generator"]["seed"] == 3 and ma["format"] == "rrsisd"
    problems = Problems(strict=False)
    verify_manifest(tmp_path / "a", problems)
    assert not problems.items
    # sample i does not depend on n
    synthesize("refseg", tmp_path / "c", n=2, seed=3, layout="refsegrs")
    first = refseg.read_refsegrs(tmp_path / "c", "train")[0].load()
    assert first["expression"] == make_referring_scene(sample_seed(3, "refseg", 0))[1].text


def test_synthesize_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "x.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        synthesize("scene", tmp_path, n=2)
    with pytest.raises(ValueError, match="unknown task"):
        synthesize("nope", tmp_path / "new", n=2)
    assert json.loads(json.dumps(split_of(0, 1, {"train": 1.0}))) == "train"


def test_referring_objects_can_be_drawn_larger_and_the_manifest_says_so(tmp_path):
    synthesize("refseg", tmp_path / "big", n=4, seed=0, object_scale=1.3, layout="refsegrs")
    synthesize("refseg", tmp_path / "default", n=4, seed=0, layout="refsegrs")
    assert read_manifest(tmp_path / "big")["generator"]["object_scale"] == 1.3
    assert "object_scale" not in read_manifest(tmp_path / "default")["generator"]
    big = refseg.read_refsegrs(tmp_path / "big", "train")[0].load()
    scene, expr = make_referring_scene(sample_seed(0, "refseg", 0), (64, 64), 0.6 * 1.3)
    assert big["expression"] == expr.text
    np.testing.assert_array_equal(big["mask"], scene.objects[expr.target].mask(64, 64))
    default = refseg.read_refsegrs(tmp_path / "default", "train")[0].load()
    assert big["mask"].sum() > 1.3 * default["mask"].sum()
    with pytest.raises(ValueError, match="only available for refseg"):
        synthesize("scene", tmp_path / "scene", n=2, object_scale=2.0)

