"""Box IoU: exact against shapely polygons, horizontal and polygon paths agree, frames are reconciled or refused."""

import numpy as np
import pytest
from shapely.geometry import MultiPoint, Polygon

from rs_shared.data.geometry import Boxes, obb_to_quad
from rs_shared.metrics import boxes as boxes_module
from rs_shared.metrics.boxes import box_iou, common_frame, quad_iou, quad_iou_pairs, xyxy_iou, xyxy_iou_pairs

RNG = np.random.default_rng(0)
SIZE = (640, 480)  # (width, height)


def random_obb(n, centre=(0, 100), size=(0.5, 60)):
    return np.stack([RNG.uniform(*centre, n), RNG.uniform(*centre, n), RNG.uniform(*size, n),
                     RNG.uniform(*size, n), RNG.uniform(-np.pi, np.pi, n)], axis=1)


def random_xyxy(n):
    xy = RNG.uniform(0, 300, (n, 2))
    return np.concatenate([xy, xy + RNG.uniform(1, 150, (n, 2))], axis=1)


def shapely_iou(a_quads, b_quads, hull=False):
    """Reference: shapely intersection area over union area (the convex hulls when ``hull``)."""
    def poly(q):
        pts = np.asarray(q).reshape(4, 2)
        return MultiPoint(pts).convex_hull if hull else Polygon(pts)

    out = np.zeros((len(a_quads), len(b_quads)))
    for i, qa in enumerate(a_quads):
        pa = poly(qa)
        for j, qb in enumerate(b_quads):
            pb = poly(qb)
            inter = pa.intersection(pb).area
            union = pa.area + pb.area - inter
            out[i, j] = inter / union if union > 0 and pa.area > 0 and pb.area > 0 else 0.0
    return out


def edge_case_quads():
    """Identical, rotated copies, nested, shared edges and corners, disjoint, degenerate and tiny boxes."""
    square = [0, 0, 10, 0, 10, 10, 0, 10]
    cases = [
        square,
        [10, 0, 10, 10, 0, 10, 0, 0],            # the same square, other start vertex
        [0, 10, 10, 10, 10, 0, 0, 0],            # the same square, other winding
        [2, 2, 8, 2, 8, 8, 2, 8],                # nested
        [10, 0, 20, 0, 20, 10, 10, 10],          # shares an edge
        [10, 10, 20, 10, 20, 20, 10, 20],        # shares a corner
        [0, 5, 10, 5, 10, 15, 0, 15],            # collinear overlapping edges
        [5, -2, 12, 5, 5, 12, -2, 5],            # rotated 45°, overlaps
        [100, 100, 110, 100, 110, 110, 100, 110],  # disjoint
        [0, 0, 10, 0, 10, 0, 0, 0],              # zero-area segment on an edge
        [3, 3, 3, 3, 3, 3, 3, 3],                # a point inside
        [5, 5, 5.001, 5, 5.001, 5.001, 5, 5.001],  # tiny, inside
        [9.9995, 9.9995, 10.0005, 9.9995, 10.0005, 10.0005, 9.9995, 10.0005],  # tiny, on the corner
        [0, 0, 10, 10, 10, 0, 0, 10],            # bow-tie vertex order of the square
    ]
    return np.array(cases, dtype=np.float64)


def test_random_oriented_boxes_match_shapely():
    qa, qb = obb_to_quad(random_obb(70)), obb_to_quad(random_obb(70))
    ours = quad_iou(qa, qb)
    assert (ours > 0).sum() > 500  # the comparison covers many overlapping pairs
    np.testing.assert_allclose(ours, shapely_iou(qa, qb), atol=1e-9)


def test_near_identical_and_tiny_random_boxes_match_shapely():
    base = random_obb(40, size=(0.01, 5))
    near = base + RNG.normal(0, 1e-3, base.shape)
    qa, qb = obb_to_quad(base), obb_to_quad(near)
    np.testing.assert_allclose(quad_iou(qa, qb), shapely_iou(qa, qb), atol=1e-6)
    np.testing.assert_allclose(np.diag(quad_iou(qa, qa)), 1.0, atol=1e-12)


def test_edge_cases_match_shapely_hulls():
    cases = edge_case_quads()
    expected = shapely_iou(cases, cases, hull=True)
    ours = quad_iou(cases, cases)
    np.testing.assert_allclose(ours, expected, atol=1e-9)
    assert ours[0, 1] == pytest.approx(1) and ours[0, 2] == pytest.approx(1) and ours[0, 13] == pytest.approx(1)
    assert ours[0, 3] == pytest.approx(0.36) and ours[0, 4] == 0 and ours[0, 5] == 0
    assert ours[9, 9] == 0 and ours[10, 0] == 0  # zero-area boxes have IoU 0, even with themselves


def test_boxes_far_from_the_origin_keep_full_precision():
    q = obb_to_quad(random_obb(30, centre=(1e6, 1e6 + 50), size=(0.5, 40)))
    shifted = q - 1e6
    np.testing.assert_allclose(quad_iou(q, q[::-1]), quad_iou(shifted, shifted[::-1]), atol=1e-9)


def test_non_convex_quads_use_their_convex_hull():
    dart = np.array([[0, 0, 10, 0, 3, 3, 0, 10]], dtype=float)  # (3, 3) is a reflex vertex
    triangle = np.array([[0, 0, 10, 0, 0, 10, 0, 10]], dtype=float)
    others = obb_to_quad(random_obb(50, centre=(0, 10), size=(1, 8)))
    np.testing.assert_allclose(quad_iou(dart, others), quad_iou(triangle, others), atol=1e-12)
    np.testing.assert_allclose(quad_iou(dart, others), shapely_iou(dart, others, hull=True), atol=1e-9)


def test_horizontal_and_polygon_paths_agree():
    a, b = random_xyxy(60), random_xyxy(50)
    hbb = box_iou(Boxes(a, "xyxy"), Boxes(b, "xyxy"))
    poly = box_iou(Boxes(a, "xyxy").to("quad"), Boxes(b, "xyxy").to("quad"))
    assert (hbb > 0).sum() > 100
    np.testing.assert_allclose(poly, hbb, atol=1e-12)
    np.testing.assert_allclose(box_iou(Boxes(a, "xyxy").to("xywh"), Boxes(b, "xyxy")), hbb, atol=1e-12)


def test_horizontal_iou_hand_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0], [5, 5, 2, 2]], dtype=float)  # the last one is inverted: area 0
    b = np.array([[0, 0, 10, 20], [5, 0, 15, 10], [0, 0, 10, 10]], dtype=float)
    np.testing.assert_allclose(xyxy_iou(a, b), [[0.5, 50 / 150, 1.0], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(xyxy_iou_pairs(a, b, [0, 0], [1, 2]), [50 / 150, 1.0])


def test_oriented_boxes_equal_their_corners():
    obb = random_obb(40)
    quads = Boxes(obb_to_quad(obb), "quad")
    for angle in ("le90", "oc", "le90deg"):
        boxes = Boxes(obb, "obb", angle="le90").to("obb", angle=angle)
        np.testing.assert_allclose(box_iou(boxes, quads), box_iou(quads, quads), atol=1e-9)


def test_pairs_match_the_matrix():
    qa, qb = obb_to_quad(random_obb(30)), obb_to_quad(random_obb(20))
    i, j = RNG.integers(0, 30, 200), RNG.integers(0, 20, 200)
    np.testing.assert_allclose(quad_iou_pairs(qa, qb, i, j), quad_iou(qa, qb)[i, j], atol=1e-12)


def test_matrix_is_the_same_across_block_and_chunk_boundaries(monkeypatch):
    qa, qb = obb_to_quad(random_obb(45)), obb_to_quad(random_obb(37))
    whole = quad_iou(qa, qb)
    monkeypatch.setattr(boxes_module, "_BLOCK_ELEMENTS", 100)
    monkeypatch.setattr(boxes_module, "_PAIR_CHUNK", 7)
    np.testing.assert_allclose(quad_iou(qa, qb), whole, atol=0)
    a, b = random_xyxy(45), random_xyxy(37)
    np.testing.assert_allclose(xyxy_iou(a, b), xyxy_iou_pairs(a, b, *np.divmod(np.arange(45 * 37), 37)).reshape(45, 37))


def test_empty_inputs_give_empty_matrices():
    empty = Boxes(np.zeros((0, 8)), "quad")
    assert box_iou(empty, Boxes(obb_to_quad(random_obb(3)), "quad")).shape == (0, 3)
    assert box_iou(Boxes(random_xyxy(2), "xyxy"), Boxes(np.zeros((0, 4)), "xyxy")).shape == (2, 0)
    assert quad_iou_pairs(np.zeros((0, 8)), np.zeros((0, 8)), [], []).shape == (0,)


@pytest.mark.parametrize("fmt", ["xyxy", "quad"])
def test_iou_is_unchanged_by_non_uniform_resizing(fmt):
    a = Boxes(random_xyxy(30), "xyxy", image_size=SIZE)
    b = Boxes(random_xyxy(30), "xyxy", image_size=SIZE)
    if fmt == "quad":
        a = Boxes(obb_to_quad(random_obb(30, centre=(100, 300))), "quad", image_size=SIZE)
        b = Boxes(obb_to_quad(random_obb(30, centre=(100, 300))), "quad", image_size=SIZE)
    before = box_iou(a, b)
    after = box_iou(a.resize((1280, 240)), b.resize((1280, 240)))
    np.testing.assert_allclose(after, before, atol=1e-9)
    assert (before > 0).sum() > 20


def test_oriented_iou_is_unchanged_by_uniform_resizing():
    a = Boxes(random_obb(30, centre=(100, 300)), "obb", image_size=SIZE, angle="le90")
    b = Boxes(random_obb(30, centre=(100, 300)), "obb", image_size=SIZE, angle="le90")
    np.testing.assert_allclose(box_iou(a.resize((1600, 1200)), b.resize((1600, 1200))), box_iou(a, b), atol=1e-9)


def test_normalised_frames_compare_without_image_size():
    pixel_a, pixel_b = Boxes(random_xyxy(20), "xyxy", image_size=SIZE), Boxes(random_xyxy(20), "xyxy", image_size=SIZE)
    expected = box_iou(pixel_a, pixel_b)
    strip = lambda b, frame: Boxes(b.to(frame=frame).data, "xyxy", frame)  # noqa: E731  drop the size
    np.testing.assert_allclose(box_iou(strip(pixel_a, "norm1000"), strip(pixel_b, "norm1")), expected, atol=1e-12)
    np.testing.assert_allclose(box_iou(pixel_a.to("quad", "norm100"), pixel_b), expected, atol=1e-9)
    np.testing.assert_allclose(box_iou(strip(pixel_a, "norm1000"), pixel_b), expected, atol=1e-12)


def test_frames_that_cannot_be_reconciled_raise():
    pixel = Boxes(random_xyxy(3), "xyxy")
    norm = Boxes(np.array([[100, 100, 500, 500]]), "xyxy", "norm1000")
    with pytest.raises(ValueError, match="needs image_size"):
        box_iou(norm, pixel)
    with pytest.raises(ValueError, match="different sizes"):
        box_iou(Boxes(norm.data, "xyxy", "norm1000", (640, 480)), Boxes(norm.data, "xyxy", "norm1", (512, 512)))
    with pytest.raises(ValueError, match="different sizes"):
        box_iou(Boxes(pixel.data, "xyxy", image_size=(504, 504)), Boxes(pixel.data, "xyxy", image_size=(512, 512)))
    with pytest.raises(ValueError, match="needs image_size"):
        common_frame(norm, norm, "xyxy", pixel=True)
