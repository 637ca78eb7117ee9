"""Procedural top-down aerial scenes with complete ground truth: the embedded default dataset of every CLI.

``make_scene`` renders a scene of a class (airport, harbor, …) at any size; ``make_referring_scene`` a
64 px referring-segmentation tile with its expression; :mod:`.language` derives referring expressions,
grounded captions and QA pairs from the ground truth. Writers of the on-disk formats consume
:class:`Scene` objects.
"""

from .language import (
    GRID,
    KINDS,
    MARKUP_TOKENS,
    QA,
    VOCABULARY,
    ReferringExpression,
    candidate_expressions,
    category_is_ambiguous,
    grid_cell,
    grounded_caption,
    holistic_sentence,
    qa_pairs,
    referring_expression,
    region_caption,
    where_phrase,
    words,
)
from .scene import (
    LAND_COVERS,
    LAYERS,
    OBJECT_SCENE_CLASSES,
    SCENE_CLASSES,
    Scene,
    SceneObject,
    default_object_scale,
    make_referring_scene,
    make_scene,
)
from .shapes import CATEGORIES, COLOURS, REFERRING_CATEGORIES, Category, length_range

__all__ = [
    "CATEGORIES", "COLOURS", "GRID", "KINDS", "LAND_COVERS", "LAYERS", "MARKUP_TOKENS", "OBJECT_SCENE_CLASSES",
    "QA", "REFERRING_CATEGORIES", "SCENE_CLASSES", "VOCABULARY", "Category", "ReferringExpression", "Scene",
    "SceneObject", "candidate_expressions", "category_is_ambiguous", "default_object_scale", "grid_cell",
    "grounded_caption", "holistic_sentence", "length_range", "make_referring_scene",
    "make_scene", "qa_pairs", "referring_expression", "region_caption", "where_phrase", "words",
]
