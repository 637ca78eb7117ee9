"""Generation speed of the synthetic scenes on one core, printed as JSON.

Each configuration generates scenes for consecutive seeds, including what a data loader would need
(every instance mask, and the expression for referring samples), and reports scenes per second.

    uv run python benchmarks/synthetic_speed.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable

from rs_shared.data.synthetic import OBJECT_SCENE_CLASSES, make_referring_scene, make_scene


def _referring(seed: int) -> int:
    scene, expr = make_referring_scene(seed)
    scene.objects[expr.target].mask(*scene.image.shape[:2])
    return len(scene.objects)


def _scene(size: int, classes: tuple[str, ...] | None = None) -> Callable[[int], int]:
    def run(seed: int) -> int:
        cls = classes[seed % len(classes)] if classes else None
        scene = make_scene(seed, (size, size), cls)
        scene.instance_masks()
        return len(scene.objects)

    return run


CONFIGS: dict[str, Callable[[int], int]] = {
    "referring_64": _referring,
    "scene_64": _scene(64),
    "scene_512": _scene(512),
    "dota_1024": _scene(1024, OBJECT_SCENE_CLASSES),
}


def measure(fn: Callable[[int], int], seconds: float) -> dict:
    fn(10**6)  # warm up imports and caches
    n = objects = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or n < 3:
        objects += fn(n)
        n += 1
    return {"scenes": n, "seconds": round(elapsed, 3), "scenes_per_s": round(n / elapsed, 1),
            "objects_per_scene": round(objects / n, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time budget per configuration")
    args = parser.parse_args()
    results = {name: measure(fn, args.seconds) for name, fn in CONFIGS.items()}
    print(json.dumps({"benchmark": "synthetic_speed", "cpu_count": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
