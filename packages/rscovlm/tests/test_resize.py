"""smart_resize parity (spec §9 P1–P3, P11, P12), scalable boxes (P4) and agreement with transformers 5.x."""

import numpy as np
import pytest
from transformers import Qwen2VLImageProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from rscovlm.render import ImageSettings
from rscovlm.resize import (
    PAPER_MAX_PIXELS,
    PAPER_MIN_PIXELS,
    QWEN_MAX_PIXELS,
    QWEN_MIN_PIXELS,
    ResizedFrame,
    plan_resize,
    random_resize,
    resize_image,
    smart_resize,
)


@pytest.mark.parametrize(("size", "resized", "tokens"), [
    ((1000, 800), (1008, 812), 1044),  # P1
    ((4000, 3000), (1148, 868), 1271),  # P2
    ((8000, 6000), (1148, 868), 1271),
    ((10000, 8000), (1120, 896), 1280),
    ((7000, 4000), (1316, 756), 1269),
    ((512, 512), (504, 504), 324),  # P3
    ((1024, 1024), (1008, 1008), 1296),
    ((100, 100), (224, 224), 64),
    ((600, 600), (588, 588), 441),
    ((256, 256), (252, 252), 81),
])
def test_paper_pixel_bounds_parity(size, resized, tokens):
    frame = plan_resize(*size)
    assert frame.resized == resized
    assert frame.num_image_tokens() == tokens == resized[0] * resized[1] // 784
    assert frame.grid_thw() == (1, resized[1] // 14, resized[0] // 14)


def test_p1_grid_and_qwen_defaults():
    frame = plan_resize(1000, 800)
    assert frame.grid_thw() == (1, 58, 72)  # grid 72 × 58 (w × h)
    assert plan_resize(1000, 800, QWEN_MIN_PIXELS, QWEN_MAX_PIXELS).resized == (1008, 812)


def test_rounding_is_half_to_even():
    assert smart_resize(70, 70, min_pixels=QWEN_MIN_PIXELS) == (56, 56)  # 70 / 28 = 2.5 → 2
    assert smart_resize(98, 98, min_pixels=QWEN_MIN_PIXELS) == (112, 112)  # 3.5 → 4


def test_bounds_and_errors():
    for h, w in [(15, 2900), (3000, 3000), (28, 28), (999, 17)]:
        rh, rw = smart_resize(h, w)
        assert rh % 28 == 0 and rw % 28 == 0
        assert PAPER_MIN_PIXELS <= rh * rw <= PAPER_MAX_PIXELS
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 2001)
    with pytest.raises(ValueError, match="positive"):
        smart_resize(0, 10)
    # a floored side never drops to 0 (the official helper would return 0 here)
    assert smart_resize(10, 1990, min_pixels=28 * 28, max_pixels=28 * 28 * 4)[0] == 28


def test_p4_scalable_box_round_trip():
    frame = plan_resize(1000, 800)
    assert frame.to_resized([100, 200, 300, 400]) == [100, 203, 302, 406]
    back = frame.to_original([100, 203, 302, 406])
    np.testing.assert_allclose(back, [99.206349, 200.0, 299.603175, 400.0], atol=1e-5)
    polygons = np.array([[100, 200, 300, 200, 300, 400, 100, 400]] * 2)
    np.testing.assert_array_equal(frame.to_resized(polygons), [[100, 203, 302, 203, 302, 406, 100, 406]] * 2)
    for x in range(0, 1000, 7):  # resized ints map back to within one resized pixel of the original
        assert abs(frame.to_original(frame.to_resized([x, x]))[0] - x) < 1000 / 1008
    with pytest.raises(ValueError, match="pairs"):
        frame.to_resized([1, 2, 3])


def test_p11_random_resize_distribution():
    rng = np.random.default_rng(0)
    frames = [random_resize(512, 512, rng) for _ in range(8000)]
    areas = np.array([f.resized[0] * f.resized[1] for f in frames])
    assert all(r % 28 == 0 for f in frames for r in f.resized)
    assert abs((areas >= 1_000_000).mean() - 0.45) < 0.03  # the area ratio used as a linear scale
    assert abs((areas == 224 * 224).mean() - 0.07) < 0.02
    uniform = np.array([np.prod(random_resize(512, 512, rng, area_as_linear=False).resized) for _ in range(4000)])
    assert (uniform >= 1_000_000).mean() < 0.1  # the fixed draw spreads areas instead of piling at the cap


def test_p12_tiny_image(rgb):
    settings = ImageSettings(min_pixels=56 * 56, max_pixels=28 * 28 * 64)
    frame = settings.frame(80, 100)
    assert frame == ResizedFrame((80, 100), (84, 112))
    assert frame.grid_thw() == (1, 8, 6) and frame.num_image_tokens() == 12
    assert settings.patches(resize_image(rgb(100, 80), frame)).shape == (48, 1176)


def test_per_image_options():
    settings = ImageSettings()
    assert settings.frame(512, 512, {"resized_width": 1000, "resized_height": 400}).resized == (1008, 392)
    assert settings.frame(512, 512, {"min_pixels": 1008 * 1008}).resized == (1008, 1008)  # "max mode"
    with pytest.raises(ValueError, match="both"):
        settings.frame(512, 512, {"resized_width": 100})
    with pytest.raises(ValueError, match="expects"):
        resize_image(np.zeros((10, 20, 3), np.uint8), ResizedFrame((10, 20), (28, 28)))


def test_grid_agrees_with_the_transformers_processor():
    processor = Qwen2VLImageProcessor(min_pixels=PAPER_MIN_PIXELS, max_pixels=PAPER_MAX_PIXELS)
    settings = ImageSettings()
    for h in range(15, 3000, 53):
        for w in range(15, 3000, 59):
            if max(h, w) / min(h, w) > 200:
                continue
            _, gh, gw = settings.frame(w, h).grid_thw()
            assert gh * gw == processor.get_number_of_image_patches(h, w), (w, h)
    # Documented divergence: a side ≤ 14 px rounds to 0 in transformers, to 28 in qwen_vl_utils (and here).
    assert settings.frame(1818, 14).resized == (1820, 28)
    assert processor.get_number_of_image_patches(14, 1818) == 2 * 184  # 28 × 2576


def test_pixels_agree_with_the_processors(rgb):
    settings = ImageSettings(min_pixels=56 * 56, max_pixels=28 * 28 * 256)
    pil = Qwen2VLImageProcessorPil(min_pixels=settings.min_pixels, max_pixels=settings.max_pixels)
    fast = Qwen2VLImageProcessor(min_pixels=settings.min_pixels, max_pixels=settings.max_pixels)
    for k, (h, w) in enumerate([(100, 80), (333, 517), (37, 401), (1000, 20)]):
        image = rgb(h, w, k)
        frame = settings.frame(w, h)
        mine = settings.patches(resize_image(image, frame))
        reference = pil(images=[image], return_tensors="np")
        assert reference["image_grid_thw"].tolist() == [list(frame.grid_thw())]
        np.testing.assert_array_equal(reference["pixel_values"], mine)  # same PIL bicubic: identical
        # The torchvision processor resizes with its own bicubic (§9.13); on an already resized image it agrees.
        pre = np.array(resize_image(image, frame))
        np.testing.assert_allclose(fast(images=[pre], return_tensors="np")["pixel_values"], mine, atol=1e-5)
