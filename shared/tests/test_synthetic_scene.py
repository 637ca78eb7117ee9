"""Synthetic scenes: deterministic, ground truth complete and in exact agreement with the pixels, and scene
classes defined by content."""

import numpy as np
import pytest
from rs_shared.data.geometry import obb_to_quad, quad_to_obb
from rs_shared.data.masks import mask_bbox, polygons_to_mask
from rs_shared.data.synthetic import (
    CATEGORIES,
    LAYERS,
    OBJECT_SCENE_CLASSES,
    REFERRING_CATEGORIES,
    SCENE_CLASSES,
    length_range,
    make_referring_scene,
    make_scene,
)
from rs_shared.data.synthetic.scene import _build

RECTANGLES = {k for k, c in CATEGORIES.items() if c.shape.endswith("rectangle") and c.shape != "cab_rectangle"}
RECTANGLES -= {"swimming_pool"}  # chamfered corners


def scenes(size=(64, 64), seeds=range(3), classes=SCENE_CLASSES):
    for c in classes:
        for s in seeds:
            yield make_scene(s, size, c)


def test_same_seed_same_scene_and_different_seeds_differ():
    for size, cls in (((64, 64), "harbor"), ((200, 120), "parking_lot"), ((96, 160), None)):
        a, b = make_scene(5, size, cls), make_scene(5, size, cls)
        assert a.image.tobytes() == b.image.tobytes()
        assert a.image.shape == (size[1], size[0], 3) and a.image.dtype == np.uint8
        assert (a.scene_class, a.land_cover, len(a.objects)) == (b.scene_class, b.land_cover, len(b.objects))
        for oa, ob in zip(a.objects, b.objects, strict=True):
            for field in ("category", "colour", "size", "rgb", "difficult"):
                assert getattr(oa, field) == getattr(ob, field)
            np.testing.assert_array_equal(oa.polygon, ob.polygon)
            np.testing.assert_array_equal(oa.obb, ob.obb)
        assert all(np.array_equal(a.layers[k], b.layers[k]) for k in LAYERS)
        assert make_scene(6, size, cls).image.tobytes() != a.image.tobytes()
    (ra, ea), (rb, eb) = make_referring_scene(11), make_referring_scene(11)
    assert ra.image.tobytes() == rb.image.tobytes() and ea == eb
    assert make_referring_scene(12)[0].image.tobytes() != ra.image.tobytes()


def test_no_global_random_state_is_used():
    np.random.seed(0)
    a = make_scene(3, (64, 64), "airport").image
    np.random.seed(1)
    assert make_scene(3, (64, 64), "airport").image.tobytes() == a.tobytes()


@pytest.mark.parametrize("cls", OBJECT_SCENE_CLASSES)
def test_objects_are_painted_exactly_on_their_masks(cls):
    for seed, size in ((1, (64, 64)), (2, (160, 128))):
        scene = make_scene(seed, size, cls)
        background = _build(seed, size, cls, None, 80).finish(paint_objects=False).image
        masks = scene.instance_masks()
        union = masks.any(0)
        outside = ~(union | scene.layers["shadow"])
        np.testing.assert_array_equal(scene.image[outside], background[outside])
        shade = scene.layers["shadow"]
        assert (scene.image[shade].astype(int).sum(1) <= background[shade].astype(int).sum(1)).all()
        for obj, m in zip(scene.objects, masks, strict=True):
            px = scene.image[m].astype(float)
            rgb = np.array(obj.rgb, float)
            close = (np.abs(px - rgb) <= 0.3 * rgb + 12).all(1)
            assert close.mean() > 0.5, (obj.category, obj.colour, close.mean())  # the body colour dominates
            assert np.abs(np.median(px, 0) - rgb).max() <= 0.2 * rgb.max() + 12


def test_masks_are_the_readers_rasterisation_of_integer_polygons_inside_the_image_without_overlap():
    for scene in scenes(size=(96, 80), seeds=range(2), classes=OBJECT_SCENE_CLASSES):
        w, h = scene.size
        masks = scene.instance_masks()
        assert masks.shape == (len(scene.objects), h, w)
        assert masks.sum(0).max() <= 1
        for obj, m in zip(scene.objects, masks, strict=True):
            p = obj.polygon
            assert p.dtype == np.int64 and p.ndim == 2 and p.shape[1] == 2 and len(p) >= 3
            assert p[:, 0].min() >= 0 and p[:, 1].min() >= 0 and p[:, 0].max() <= w and p[:, 1].max() <= h
            np.testing.assert_array_equal(m, polygons_to_mask([p.astype(float)], h, w))
            np.testing.assert_array_equal(m, obj.mask(h, w))
            assert m.sum() >= 3
            bx = mask_bbox(m)
            assert (bx[:2] >= p.min(0)).all() and (bx[2:] <= p.max(0)).all()


def test_one_pixel_gap_between_objects():
    scene = make_scene(4, (256, 256), "parking_lot")
    masks = scene.instance_masks()
    grown = masks.copy()  # each mask with its 4-neighbours
    grown[:, 1:] |= masks[:, :-1]
    grown[:, :-1] |= masks[:, 1:]
    grown[:, :, 1:] |= masks[:, :, :-1]
    grown[:, :, :-1] |= masks[:, :, 1:]
    assert len(scene.objects) > 10
    assert (grown.sum(0)[masks.any(0)] == 1).all()  # no object pixel touches another object


def test_oriented_boxes_fit_the_polygons():
    for scene in scenes(size=(128, 128), seeds=range(2), classes=OBJECT_SCENE_CLASSES):
        for obj in scene.objects:
            cx, cy, w, h, t = obj.obb
            assert w >= h > 0 and -np.pi / 2 <= t < np.pi / 2
            corners = obb_to_quad(obj.obb[None])
            if obj.category in RECTANGLES:
                # The polygon is the box's corners rounded to integers.
                dist = np.linalg.norm(obj.polygon[:, None] - corners.reshape(4, 2)[None], axis=-1)
                assert dist.min(0).max() <= 0.71 and dist.min(1).max() <= 0.71
                back = quad_to_obb(obj.polygon.reshape(1, 8).astype(float))[0]
                assert abs(back[0] - cx) < 0.75 and abs(back[1] - cy) < 0.75
                assert abs(back[2] * back[3] - w * h) <= 1.5 * (w + h)
            else:  # every vertex lies in the box grown by half a pixel
                c, s = np.cos(t), np.sin(t)
                d = obj.polygon - [cx, cy]
                assert (np.abs(d @ [c, s]) <= w / 2 + 0.71).all() and (np.abs(d @ [-s, c]) <= h / 2 + 0.71).all()


def test_boxes_accessors():
    scene = make_scene(2, (128, 96), "harbor")
    n, size = len(scene.objects), scene.size
    obb = scene.boxes()
    assert (obb.fmt, obb.frame, obb.angle, obb.image_size, len(obb)) == ("obb", "pixel", "le90", size, n)
    np.testing.assert_allclose(scene.boxes("quad").data, obb_to_quad(obb.data))
    xyxy = scene.boxes("xyxy")
    np.testing.assert_allclose(xyxy.data, [[*o.polygon.min(0), *o.polygon.max(0)] for o in scene.objects])
    np.testing.assert_allclose(scene.boxes("xywh", "norm1").to("xyxy", "pixel").data, xyxy.data)
    assert scene.boxes("quad", "norm1000").data.max() <= 1000 + 1e-6


def test_category_registry_is_complete_and_size_ranges_never_overlap():
    for key, cat in CATEGORIES.items():
        assert cat.key == key and cat.noun and cat.plural and cat.colours and 0 < cat.aspect <= 1
    dota = {c.dota for c in CATEGORIES.values()}
    assert {"plane", "ship", "storage-tank", "small-vehicle", "large-vehicle", "tennis-court", "swimming-pool"} <= dota
    assert CATEGORIES["building"].dota is None
    ranges = sorted(length_range(k) for k in CATEGORIES)
    assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    assert len({CATEGORIES[k].shape for k in REFERRING_CATEGORIES}) == len(REFERRING_CATEGORIES)
    for scene in scenes(size=(256, 256), seeds=range(2), classes=OBJECT_SCENE_CLASSES):
        for obj in scene.objects:
            if not obj.difficult:
                lo, hi = length_range(obj.category)
                assert lo * scene.object_scale - 0.01 <= obj.obb[2] <= hi * scene.object_scale + 0.01
                assert obj.size in ("small", "large") and obj.colour in CATEGORIES[obj.category].colours


@pytest.mark.parametrize("size", [(64, 64), (256, 256)])
def test_every_scene_class_shows_its_defining_content(size):
    def count(scene, cat):
        return sum(o.category == cat for o in scene.objects)

    defining = {
        "airport": lambda s: count(s, "plane") >= 1 and s.layers["runway"].any(),
        "harbor": lambda s: count(s, "ship") >= 1 and s.layers["water"].any() and s.layers["pier"].any(),
        "parking_lot": lambda s: count(s, "car") >= 3 and s.layers["parking"].any(),
        "storage_tanks": lambda s: count(s, "storage_tank") >= 1,
        "dense_residential": lambda s: count(s, "building") >= 1 and s.layers["road"].any(),
        "farmland": lambda s: not s.objects and s.land_cover == "farmland",
        "forest": lambda s: not s.objects and s.layers["tree"].mean() > 0.6,
        "river": lambda s: not s.objects and 0.05 < s.layers["water"].mean() < 0.6,
        "beach": lambda s: not s.objects and s.land_cover == "sand" and s.layers["water"].any(),
        "sports_field": lambda s: count(s, "tennis_court") >= 1,
        "freeway": lambda s: count(s, "car") + count(s, "truck") >= 1 and s.layers["road"].mean() > 0.1,
    }
    assert set(defining) == set(SCENE_CLASSES)
    for scene in scenes(size=size, seeds=range(6 if size[0] == 64 else 2)):
        assert defining[scene.scene_class](scene), (scene.scene_class, scene.seed)
        assert set(scene.layers) == set(LAYERS)
        surfaces = np.stack([scene.layers[k] for k in LAYERS if k != "shadow"])
        assert surfaces.sum(0).max() <= 1  # surface layers exclude each other


def test_mean_colour_does_not_give_the_class_away():
    """A nearest-centroid classifier on the mean RGB of 64 px tiles stays far from perfect."""
    feats, labels = [], []
    for k, cls in enumerate(SCENE_CLASSES):
        for s in range(16):
            feats.append(make_scene(500 + s, (64, 64), cls).image.reshape(-1, 3).mean(0))
            labels.append(k)
    x, y = np.array(feats), np.array(labels)
    train = np.arange(len(y)) % 2 == 0
    centroids = np.stack([x[train & (y == k)].mean(0) for k in range(len(SCENE_CLASSES))])
    pred = np.argmin(((x[~train, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (pred == y[~train]).mean() < 0.5


def test_dota_size_scenes_have_realistic_sizes_and_partial_objects_marked_difficult():
    seen_partial = False
    for cls in ("parking_lot", "harbor", "airport", "freeway"):
        scene = make_scene(1, (1024, 1024), cls)
        assert scene.object_scale == 3.0 and (cls == "airport" or 20 <= len(scene.objects) <= 80)
        for obj in scene.objects:
            p = obj.polygon
            lo, hi = (v * 3.0 for v in length_range(obj.category))
            if obj.obb[2] < lo - 1:  # shorter than any whole instance: cut by the border
                assert obj.difficult and (p.min() == 0 or p[:, 0].max() == 1024 or p[:, 1].max() == 1024)
                assert CATEGORIES[obj.category].shape not in ("plane", "cab_rectangle")  # only convex ones
                seen_partial = True
            elif obj.category == "car":
                assert 12 <= obj.obb[2] <= 18  # DOTA small vehicles
            elif obj.category == "plane":
                assert 100 <= obj.obb[2] <= hi
    assert seen_partial
    for scene in scenes(size=(256, 256), seeds=range(2), classes=OBJECT_SCENE_CLASSES):
        assert not any(o.difficult for o in scene.objects if o.category not in ("car", "truck"))  # nothing cut


def test_referring_scenes_follow_the_prototype():
    sizes = []
    for seed in range(60):
        scene, expr = make_referring_scene(seed)
        assert scene.scene_class == "mixed" and 3 <= len(scene.objects) <= 6
        assert {o.category for o in scene.objects} <= set(REFERRING_CATEGORIES)
        assert 0 <= expr.target < len(scene.objects)
        sizes.append(scene.objects[expr.target].mask(64, 64).mean())
    assert 0.01 < np.mean(sizes) < 0.05  # the prototype's targets covered 2.6 % of a 64 px tile
    big, e = make_referring_scene(3, size=(128, 128))
    assert big.image.shape == (128, 128, 3) and big.object_scale == pytest.approx(1.2)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="scene class"):
        make_scene(0, (64, 64), "volcano")
    with pytest.raises(ValueError, match="at least 8"):
        make_scene(0, (4, 64))
    with pytest.raises(ValueError, match="max_objects"):
        make_scene(0, (64, 64), max_objects=1000)
