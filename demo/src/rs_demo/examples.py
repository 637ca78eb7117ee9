"""Example inputs of the demo's tabs: synthetic tiles from ``rs_shared``'s generator, at the sizes and with the kinds of
text each fallback model was trained on (the generator is deterministic in the seed, so the examples never change).

Each function returns rows of inputs in the order of its tab's input components; images are ``(H, W, 3)`` uint8.
"""

from __future__ import annotations

import numpy as np
from rs_shared.data.synthetic import CATEGORIES, grounded_caption, holistic_sentence, make_referring_scene, make_scene
from rs_shared.data.synthetic import qa_pairs
from rs_shared.data.synthetic.scene import referring_object_scale

SCENE_SIZE = 64  # BiMoRS' synthetic scene dataset
REFERRING_SIZE, REFERRING_OBJECT_SCALE = 64, 1.5  # ICIPNet's tiny-synthetic preset (objects drawn 1.5x larger)
GCG_SIZE = 128  # CLV-Net's synthetic GeoPixelD tiles
CHAT_SIZE = 224  # RSCoVLM's synthetic SFT images


def scene_examples() -> list[list]:
    """BiMoRS: ``[image, caption]`` — a scene and the generator's own caption of it."""
    rows = []
    for seed, scene_class in ((7, "airport"), (11, "harbor"), (3, "forest")):
        scene = make_scene(seed, (SCENE_SIZE, SCENE_SIZE), scene_class)
        rows.append([scene.image, holistic_sentence(scene, np.random.default_rng(seed))])
    return rows


def referring_examples() -> list[list]:
    """ICIPNet: ``[image, expression]`` — a mixed tile and an expression that identifies one of its objects."""
    size = (REFERRING_SIZE, REFERRING_SIZE)
    rows = []
    for seed in (3, 23, 6):  # a spatial, a colour and a relational expression
        scene, expression = make_referring_scene(seed, size, referring_object_scale(size) * REFERRING_OBJECT_SCALE)
        rows.append([scene.image, expression.text])
    return rows


def gcg_examples() -> list[list]:
    """CLV-Net: ``[image, "x1, y1, x2, y2"]`` — an object scene and the union box of the objects its grounded
    caption names (the evaluation's box prompt)."""
    rows = []
    for seed, scene_class in ((4, "airport"), (9, "storage_tanks"), (2, "harbor")):
        scene = make_scene(seed, (GCG_SIZE, GCG_SIZE), scene_class)
        _, groups = grounded_caption(scene, np.random.default_rng(seed))
        named = sorted({i for group in groups for i in group})
        boxes = scene.boxes("xyxy").data[named]  # (K, 4)
        union = [*boxes[:, :2].min(0), *boxes[:, 2:].max(0)]
        rows.append([scene.image, ", ".join(str(int(v)) for v in union)])
    return rows


def detection_prompt() -> str:
    """The detection instruction of the synthetic SFT set: every DOTA class the generator draws, one quadrilateral
    line per object."""
    classes = sorted({c.dota.replace("-", " ") for c in CATEGORIES.values() if c.dota})
    return (f"Detect all {', '.join(classes)} in the image. Answer one object per line as "
            "x1,y1,x2,y2,x3,y3,x4,y4 class.")


def chat_examples() -> list[list]:
    """RSCoVLM: ``[image, prompt]`` — a detection instruction and a counting question about synthetic scenes."""
    rows = []
    for seed, scene_class in ((8, "airport"), (6, "harbor")):
        scene = make_scene(seed, (CHAT_SIZE, CHAT_SIZE), scene_class)
        counting = [qa.question for qa in qa_pairs(scene, np.random.default_rng(seed)) if qa.kind == "counting"]
        rows.append([scene.image, detection_prompt()])
        if counting:
            rows.append([scene.image, counting[0]])
    return rows


__all__ = ["chat_examples", "detection_prompt", "gcg_examples", "referring_examples", "scene_examples"]
