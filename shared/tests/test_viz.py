import math

import numpy as np
import pytest
from PIL import Image

from rs_shared.data.geometry import Boxes
from rs_shared.viz import (
    MIN_DISPLAY_SIDE,
    SOURCE_SIZE_KEY,
    compose,
    draw_boxes,
    draw_caption,
    draw_masks,
    draw_points,
    palette,
    save_png,
    to_display,
)

RED = (230, 25, 75)


def grey(w, h, value=100):
    return np.full((h, w, 3), value, dtype=np.uint8)


def noise(w, h, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def is_color(out, color):
    return (np.asarray(out) == np.asarray(color, dtype=np.uint8)).all(axis=-1)


def near(mask, x, y, r):
    """Whether ``mask`` is True anywhere within ``r`` pixels (Chebyshev) of pixel (x, y)."""
    return bool(mask[max(y - r, 0):y + r + 1, max(x - r, 0):x + r + 1].any())


# --- palette ----------------------------------------------------------------------------------------

def test_palette_is_reproducible_distinct_and_valid():
    colors = palette(300)
    assert colors == palette(300)
    assert palette(5) == colors[:5]
    assert colors[0] == RED
    assert len(set(colors)) == 300
    assert all(len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in colors)
    assert palette(0) == []


# --- masks ------------------------------------------------------------------------------------------

def test_draw_masks_changes_exactly_the_masked_pixels():
    img = noise(300, 260)
    masks = np.zeros((2, 260, 300), bool)
    masks[0, 20:80, 30:120] = True
    masks[1, 150:240, 200:290] = True
    masks[1, 150, 200] = False  # a notch: its neighbours become boundary pixels
    alpha = 0.45
    out = np.asarray(draw_masks(img, masks, alpha=alpha))
    assert out.shape == img.shape

    changed = (out != img).any(axis=-1)
    union = masks.any(axis=0)
    assert not changed[~union].any()  # every other pixel untouched

    for mask, color in zip(masks, palette(2)):
        c = np.array(color, dtype=np.float64)
        blend = np.round((1 - alpha) * img.astype(np.float64) + alpha * c).astype(np.uint8)
        padded = np.pad(mask, 1)
        interior = mask & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        boundary = mask & ~interior
        np.testing.assert_array_equal(out[interior], blend[interior])
        assert is_color(out, color)[boundary].all()
    assert is_color(out, palette(2)[1])[151, 200] and is_color(out, palette(2)[1])[150, 201]


def test_draw_masks_without_outline_blends_every_masked_pixel():
    img = noise(256, 256, seed=1)
    mask = np.zeros((256, 256), np.uint8)  # one (H, W) mask of 0/1 integers
    mask[100:140, 60:90] = 1
    out = np.asarray(draw_masks(img, mask, colors=[(0, 255, 0)], alpha=0.5, outline=False))
    m = mask.astype(bool)
    expected = np.round(0.5 * img.astype(np.float64) + 0.5 * np.array([0, 255, 0])).astype(np.uint8)
    np.testing.assert_array_equal(out[m], expected[m])
    np.testing.assert_array_equal(out[~m], img[~m])


def test_draw_masks_validates_masks():
    img = grey(256, 256)
    with pytest.raises(ValueError, match="bool or 0/1"):
        draw_masks(img, np.full((1, 256, 256), 0.7))
    with pytest.raises(ValueError, match="masks are 100x50"):
        draw_masks(img, np.zeros((1, 50, 100), bool))
    with pytest.raises(ValueError, match="same"):
        draw_masks(img, [np.zeros((256, 256), bool), np.zeros((10, 10), bool)])
    with pytest.raises(ValueError, match="alpha"):
        draw_masks(img, np.zeros((256, 256), bool), alpha=1.5)
    with pytest.raises(ValueError, match="colours"):
        draw_masks(img, np.zeros((2, 256, 256), bool), colors=[RED])


# --- boxes ------------------------------------------------------------------------------------------

def test_draw_boxes_xyxy_and_xywh_edges():
    img = grey(300, 300)
    for boxes in (Boxes([[50, 60, 200, 150]], "xyxy"), Boxes([[50, 60, 150, 90]], "xywh")):
        red = is_color(draw_boxes(img, boxes, colors=[RED], width=2), RED)
        for x, y in [(125, 60), (125, 150), (50, 105), (200, 105), (50, 60), (200, 150)]:
            assert near(red, x, y, 1), (boxes.fmt, x, y)
        assert not red[105, 125] and not red[20, 20] and not red[250, 250]


def test_draw_boxes_quad_edges():
    img = grey(300, 300)
    quad = Boxes([[40, 40, 260, 80, 220, 260, 60, 200]], "quad")
    red = is_color(draw_boxes(img, quad, colors=[RED], width=2), RED)
    for (x1, y1), (x2, y2) in [((40, 40), (260, 80)), ((260, 80), (220, 260)), ((220, 260), (60, 200)),
                               ((60, 200), (40, 40))]:
        for t in (0.25, 0.5, 0.75):
            assert near(red, round(x1 + t * (x2 - x1)), round(y1 + t * (y2 - y1)), 1)
    assert not red[150, 150]


def test_draw_boxes_obb_at_45_degrees_is_drawn_rotated():
    img = grey(300, 300)
    obb = Boxes([[150, 150, 120, 120, math.pi / 4]], "obb", angle="le90")
    red = is_color(draw_boxes(img, obb, colors=[RED], width=2), RED)
    d = 60 * math.sqrt(2)  # half-diagonal: the corners lie on the axes through the centre
    for x, y in [(150, 150 - d), (150 + d, 150), (150, 150 + d), (150 - d, 150)]:
        assert near(red, round(x), round(y), 2), (x, y)
    for x, y in [(150 - d, 150 - d), (150 + d, 150 - d), (150 + d, 150 + d), (150 - d, 150 + d)]:
        assert not near(red, round(x), round(y), 10), (x, y)  # the axis-aligned hull's corners stay empty
    assert not red[150, 150]


def test_draw_boxes_marks_the_first_edge_of_oriented_boxes():
    img = grey(300, 300)
    quad = Boxes([[50, 50, 250, 50, 250, 250, 50, 250]], "quad")
    red = is_color(draw_boxes(img, quad, colors=[RED], width=2), RED)
    thickness = lambda column: int(column.sum())  # noqa: E731
    assert thickness(red[:, 150][:120]) > thickness(red[:, 150][180:])  # first edge (top) is thicker
    assert red[40:60, 40:60].sum() > red[240:260, 240:260].sum()  # the dot on the first vertex


def test_draw_boxes_places_normalised_boxes_with_the_image_size():
    img = grey(400, 300)
    boxes = Boxes([[250, 250, 750, 500]], "xyxy", frame="norm1000")  # pixels (100, 75, 300, 150)
    red = is_color(draw_boxes(img, boxes, colors=[RED], width=2), RED)
    for x, y in [(200, 75), (200, 150), (100, 112), (300, 112)]:
        assert near(red, x, y, 1), (x, y)
    assert not near(red, 250, 250, 5) and not near(red, 200, 250, 5)
    norm1 = Boxes([[0.25, 0.25, 0.75, 0.5]], "xyxy", frame="norm1", image_size=(400, 300))
    np.testing.assert_array_equal(red, is_color(draw_boxes(img, norm1, colors=[RED], width=2), RED))


def test_draw_boxes_scales_pixel_boxes_of_another_image_size():
    small = Boxes([[10, 10, 50, 30]], "xyxy", image_size=(100, 100))
    red = is_color(draw_boxes(grey(300, 300), small, colors=[RED], width=2), RED)
    assert near(red, 90, 30, 1) and near(red, 90, 90, 1) and near(red, 150, 60, 1)


def test_draw_boxes_labels_are_drawn_in_a_tag_inside_the_image():
    img = grey(300, 300)
    boxes = Boxes([[0, 0, 60, 40], [200, 200, 299, 299]], "xyxy")
    plain = is_color(draw_boxes(img, boxes, colors=[RED, RED]), RED).sum()
    labelled = draw_boxes(img, boxes, labels=["building", "a very long label for a box"], colors=[RED, RED])
    red = is_color(labelled, RED)
    assert red.sum() > plain + 200
    assert red[:40, :60].sum() > 200  # no room above the first box: its tag sits below the corner
    with pytest.raises(ValueError, match="labels"):
        draw_boxes(img, boxes, labels=["only one"])


def test_draw_boxes_rejects_non_finite_boxes():
    with pytest.raises(ValueError, match="box 1"):
        draw_boxes(grey(300, 300), Boxes([[0, 0, 10, 10], [0, np.nan, 10, 10]], "xyxy"))


# --- small and large images -------------------------------------------------------------------------

def test_small_images_are_enlarged_and_annotations_keep_their_coordinates():
    img = noise(64, 48)
    display = to_display(img)
    k = math.ceil(MIN_DISPLAY_SIDE / 48)
    assert display.size == (64 * k, 48 * k) and display.info[SOURCE_SIZE_KEY] == (64, 48)
    np.testing.assert_array_equal(np.asarray(display), img.repeat(k, 0).repeat(k, 1))

    mask = np.zeros((48, 64), bool)
    mask[10:20, 5:25] = True
    out = draw_masks(img, mask, colors=[RED], outline=False)
    assert out.size == display.size
    changed = (np.asarray(out) != np.asarray(display)).any(-1)
    np.testing.assert_array_equal(changed, mask.repeat(k, 0).repeat(k, 1))

    # A second call reads the same 64 x 48 coordinates on the enlarged picture.
    boxed = draw_boxes(out, Boxes([[30, 20, 60, 40]], "xyxy"), labels=["car"], colors=[(0, 0, 255)])
    blue = is_color(boxed, (0, 0, 255))
    assert boxed.size == display.size
    assert near(blue, 45 * k, 40 * k, 1) and near(blue, 60 * k, 30 * k, 1)
    assert draw_caption(boxed, "a car").width == display.width


def test_large_images_are_drawn_without_resizing():
    img = np.zeros((2000, 2000, 3), np.uint8)
    masks = np.zeros((1, 2000, 2000), bool)
    masks[0, 100:900, 200:1500] = True
    out = draw_boxes(draw_masks(img, masks), Boxes([[200, 100, 1500, 900]], "xyxy"), labels=["field"])
    assert out.size == (2000, 2000)
    assert is_color(out, RED)[850:950, 1480:1520].sum() >= 5 * 100  # line width grows with the image


# --- points -----------------------------------------------------------------------------------------

def test_draw_points():
    out = draw_points(grey(300, 300), [[50, 60], [250, 200]], colors=[RED, (0, 0, 255)])
    assert is_color(out, RED)[60, 50] and is_color(out, (0, 0, 255))[200, 250]
    assert not is_color(out, RED)[200, 250]
    small = draw_points(grey(64, 64), [[16, 16]], colors=[RED])
    assert is_color(small, RED)[16 * 4 + 2, 16 * 4 + 2]


# --- captions ---------------------------------------------------------------------------------------

def test_draw_caption_adds_a_panel_with_phrase_colours():
    img = grey(300, 260)
    text = "A red roof next to a green field and another red roof."
    colors = [(230, 25, 75), (60, 180, 75), (0, 130, 200)]
    out = draw_caption(img, text, ["red roof", "green field", "red roof"], colors)
    assert out.width == 300 and out.height > 260
    arr = np.asarray(out)
    np.testing.assert_array_equal(arr[:260], img)
    panel = arr[260:]
    for color in colors:
        assert is_color(panel, color).sum() > 20, color  # the repeated phrase gets its own colour
    assert draw_caption(img, text).height == out.height


def test_draw_caption_wraps_long_text_and_newlines():
    img = grey(300, 260)
    one_line = draw_caption(img, "short").height
    wrapped = draw_caption(img, " ".join(["building"] * 60)).height
    assert wrapped > one_line + 3 * (one_line - 260) // 2
    assert draw_caption(img, "first\nsecond").height > one_line
    assert draw_caption(img, "x" * 500).height > one_line  # a word wider than a line is broken


def test_draw_caption_rejects_a_phrase_not_in_the_text():
    with pytest.raises(ValueError, match="'lake'"):
        draw_caption(grey(300, 260), "a road and a field", ["road", "lake"])


# --- compose and save -------------------------------------------------------------------------------

def test_compose_geometry():
    a, b, c = noise(100, 80, 1), noise(120, 60, 2), noise(90, 90, 3)
    out = compose([a, Image.fromarray(b), c], ncols=2, pad=5)
    assert out.size == (2 * 120 + 3 * 5, 2 * 90 + 3 * 5)
    arr = np.asarray(out)
    np.testing.assert_array_equal(arr[5:85, 5 + 10:5 + 10 + 100], a)  # top of cell, centred across it
    np.testing.assert_array_equal(arr[5:65, 130:250], b)
    np.testing.assert_array_equal(arr[100:190, 5 + 15:5 + 15 + 90], c)
    assert compose([a, b]).size == (2 * 120 + 3 * 8, 80 + 2 * 8)
    with pytest.raises(ValueError):
        compose([])


def test_save_png_writes_a_readable_png(tmp_path):
    img = noise(70, 40)
    path = save_png(img, tmp_path / "a" / "b" / "out.png")
    assert path == tmp_path / "a" / "b" / "out.png"
    with Image.open(path) as im:
        assert im.format == "PNG"
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), img)
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.png"]


# --- inputs -----------------------------------------------------------------------------------------

def test_inputs_are_not_mutated():
    arr = noise(300, 260)
    pil = Image.fromarray(arr.copy())
    masks = np.zeros((1, 260, 300), bool)
    masks[0, 10:50, 10:50] = True
    boxes = Boxes([[150, 130, 80, 40, 0.3]], "obb", angle="le90")
    saved = (arr.copy(), pil.tobytes(), masks.copy(), boxes.data.copy())
    for image in (arr, pil):
        draw_masks(image, masks)
        draw_boxes(image, boxes, labels=["x"])
        draw_points(image, [[5, 5]])
        draw_caption(image, "a caption", ["caption"])
        to_display(image)
        compose([image, image])
    np.testing.assert_array_equal(arr, saved[0])
    assert pil.tobytes() == saved[1] and pil.info == {}
    np.testing.assert_array_equal(masks, saved[2])
    np.testing.assert_array_equal(boxes.data, saved[3])


def test_rejects_images_that_are_not_uint8_rgb():
    with pytest.raises(ValueError, match="uint8"):
        draw_points(np.zeros((10, 10, 3), np.float32), [[1, 1]])
    with pytest.raises(TypeError):
        draw_points("image.png", [[1, 1]])
