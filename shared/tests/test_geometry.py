"""Coordinate conventions: every conversion round-trips, and each convention means what its docstring says."""

import numpy as np
import pytest

from rs_shared.data.geometry import (
    ANGLE_CONVENTIONS,
    Boxes,
    clip_polygon,
    normalize_obb,
    obb_to_quad,
    polygon_area,
    quad_to_obb,
    sort_quad_vertices,
)

RNG = np.random.default_rng(0)
SIZE = (640, 480)  # (width, height)


def random_xyxy(n=50):
    xy = RNG.uniform(0, 400, (n, 2))
    wh = RNG.uniform(1, 200, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def random_obb(n=50):
    return np.stack([RNG.uniform(50, 400, n), RNG.uniform(50, 400, n), RNG.uniform(2, 80, n),
                     RNG.uniform(2, 80, n), RNG.uniform(-np.pi, np.pi, n)], axis=1)


def same_rectangles(a_quad, b_quad):
    """Quads describe the same rectangles when their canonical vertex orders agree."""
    return np.allclose(sort_quad_vertices(a_quad), sort_quad_vertices(b_quad), atol=1e-6)


@pytest.mark.parametrize("frame", ["pixel", "norm1", "norm100", "norm1000"])
@pytest.mark.parametrize("fmt", ["xyxy", "xywh", "quad"])
def test_horizontal_round_trips_through_every_format_and_frame(fmt, frame):
    boxes = Boxes(random_xyxy(), "xyxy", image_size=SIZE)
    there = boxes.to(fmt, frame)
    assert there.fmt == fmt and there.frame == frame
    back = there.to("xyxy", "pixel")
    np.testing.assert_allclose(back.data, boxes.data, atol=1e-9)


def test_frames_scale_x_by_width_and_y_by_height():
    b = Boxes([[64, 48, 320, 240]], "xyxy", image_size=SIZE)
    np.testing.assert_allclose(b.to(frame="norm1").data, [[0.1, 0.1, 0.5, 0.5]])
    np.testing.assert_allclose(b.to(frame="norm100").data, [[10, 10, 50, 50]])
    np.testing.assert_allclose(b.to(frame="norm1000").data, [[100, 100, 500, 500]])
    q = b.to("quad", "norm1000").data
    np.testing.assert_allclose(q, [[100, 100, 500, 100, 500, 500, 100, 500]])  # TL, TR, BR, BL


def test_xywh_is_coco_top_left_and_size():
    b = Boxes([[10, 20, 30, 40]], "xywh")
    np.testing.assert_allclose(b.to("xyxy").data, [[10, 20, 40, 60]])


@pytest.mark.parametrize("angle", ANGLE_CONVENTIONS)
def test_obb_quad_round_trip_in_every_angle_convention(angle):
    obb = normalize_obb(random_obb(), "le90", angle)
    boxes = Boxes(obb, "obb", angle=angle)
    quad = boxes.to("quad")
    back = quad.to("obb", angle=angle)
    np.testing.assert_allclose(back.data, obb, atol=1e-6)
    assert same_rectangles(back.to("quad").data, quad.data)


@pytest.mark.parametrize("angle", ANGLE_CONVENTIONS)
def test_angle_conventions_describe_the_same_rectangle(angle):
    obb = random_obb()
    converted = normalize_obb(obb, "le90", angle)
    assert same_rectangles(obb_to_quad(converted, angle), obb_to_quad(obb, "le90"))
    t = np.deg2rad(converted[:, 4]) if angle == "le90deg" else converted[:, 4]
    w, h = converted[:, 2], converted[:, 3]
    if angle in ("le90", "le90deg"):
        assert np.all((t >= -np.pi / 2) & (t < np.pi / 2)) and np.all(w >= h)
    elif angle == "le135":
        assert np.all((t >= -np.pi / 4) & (t < 3 * np.pi / 4)) and np.all(w >= h)
    else:  # oc
        assert np.all((t > 0) & (t <= np.pi / 2 + 1e-12))


def test_angle_is_clockwise_on_screen():
    # A 10 × 2 box rotated by +90° (θ = π/2 turns +x into +y, i.e. clockwise with y pointing down)
    # stands upright: it spans 2 px in x and 10 px in y.
    quad = obb_to_quad(np.array([[50, 50, 10, 2, np.pi / 2]]))
    pts = quad.reshape(4, 2)
    assert np.ptp(pts[:, 0]) == pytest.approx(2) and np.ptp(pts[:, 1]) == pytest.approx(10)
    # θ = π/4: the first corner (top-left of the unrotated box) moves onto the vertical through the centre
    q = obb_to_quad(np.array([[0, 0, 2, 2, np.pi / 4]])).reshape(4, 2)
    np.testing.assert_allclose(q[0], [0, -np.sqrt(2)], atol=1e-12)


def test_quad_to_obb_is_the_minimum_area_rectangle_of_any_quad():
    # A non-rectangular (kite-like) quadrilateral: the rectangle must contain it and be minimal.
    quad = np.array([[0, 0, 10, 2, 12, 8, 1, 6]], dtype=float)
    obb = quad_to_obb(quad)
    area = obb[0, 2] * obb[0, 3]
    # brute force over angles
    pts = quad.reshape(4, 2)
    best = min(
        np.ptp(pts @ [np.cos(t), np.sin(t)]) * np.ptp(pts @ [-np.sin(t), np.cos(t)])
        for t in np.linspace(0, np.pi, 20001)
    )
    assert area == pytest.approx(best, rel=1e-4)
    rect = obb_to_quad(obb).reshape(4, 2)
    assert polygon_area(clip_polygon(rect, -100, -100, 100, 100)) >= polygon_area(pts) - 1e-9


def test_horizontal_to_obb_and_back():
    boxes = Boxes(random_xyxy(), "xyxy", image_size=SIZE)
    np.testing.assert_allclose(boxes.to("obb").to("xyxy").data, boxes.data, atol=1e-9)


def test_quads_in_normalised_frames_round_trip():
    quad = obb_to_quad(random_obb())
    b = Boxes(quad, "quad", image_size=SIZE)
    for frame in ("norm1", "norm100", "norm1000"):
        np.testing.assert_allclose(b.to(frame=frame).to(frame="pixel").data, quad, atol=1e-9)


def test_oriented_boxes_refuse_normalised_frames():
    with pytest.raises(ValueError, match="pixel frame"):
        Boxes(random_obb(2), "obb", frame="norm1", angle="le90")
    with pytest.raises(ValueError, match="pixel frame"):
        Boxes(random_obb(2), "obb", image_size=SIZE, angle="le90").to(frame="norm1000")
    # going through quads is the explicit way
    q = Boxes(random_obb(2), "obb", image_size=SIZE, angle="le90").to("quad", "norm1000")
    assert q.frame == "norm1000"


def test_obb_from_normalised_quads_goes_through_pixels():
    obb = normalize_obb(random_obb(5), "le90")
    quad = Boxes(obb, "obb", image_size=SIZE, angle="le90").to("quad", "norm1")
    np.testing.assert_allclose(quad.to("obb", "pixel").data, obb, atol=1e-6)
    with pytest.raises(ValueError, match="pixel frame"):
        quad.to("obb")  # staying in norm1 is not possible for oriented boxes


def test_invalid_boxes_are_rejected_with_reasons():
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        Boxes([[1, 2, 3]], "xyxy")
    with pytest.raises(ValueError, match="need angle"):
        Boxes([[1, 2, 3, 4, 0]], "obb")
    with pytest.raises(ValueError, match="only to 'obb'"):
        Boxes([[1, 2, 3, 4]], "xyxy", angle="le90")
    with pytest.raises(ValueError, match="image_size"):
        Boxes([[1, 2, 3, 4]], "xyxy").to(frame="norm1")
    assert len(Boxes(np.zeros((0,)), "quad")) == 0


def test_resize_maps_pixels_onto_the_resized_image():
    b = Boxes([[100, 200, 300, 400]], "xyxy", image_size=(1000, 800))
    r = b.resize((1008, 812))
    np.testing.assert_allclose(r.data, [[100.8, 203.0, 302.4, 406.0]])
    assert r.image_size == (1008, 812)
    obb = Boxes([[10, 10, 4, 2, 0.3]], "obb", image_size=(100, 100), angle="le90")
    np.testing.assert_allclose(obb.resize((200, 200)).data, [[20, 20, 8, 4, 0.3]])
    with pytest.raises(ValueError, match="non-uniform"):
        obb.resize((200, 100))


def test_sort_quad_vertices_orders_and_starts_top_left():
    shuffled = np.array([[10, 4, 0, 0, 0, 4, 10, 0]], dtype=float)
    np.testing.assert_allclose(sort_quad_vertices(shuffled), [[0, 0, 10, 0, 10, 4, 0, 4]])
    np.testing.assert_allclose(sort_quad_vertices(shuffled, clockwise=False), [[0, 0, 0, 4, 10, 4, 10, 0]])


def test_clip_polygon_and_area():
    square = np.array([[-5, -5], [5, -5], [5, 5], [-5, 5]], dtype=float)
    clipped = clip_polygon(square, 0, 0, 10, 10)
    assert polygon_area(clipped) == pytest.approx(25)
    assert clip_polygon(square, 20, 20, 30, 30).shape == (0, 2)
    diamond = np.array([[5, 0], [10, 5], [5, 10], [0, 5]], dtype=float)
    assert polygon_area(clip_polygon(diamond, 0, 0, 5, 10)) == pytest.approx(25)
