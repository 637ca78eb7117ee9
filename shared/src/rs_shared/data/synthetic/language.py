"""Text derived from a scene's ground truth: referring expressions, grounded captions and QA pairs.

Everything is deterministic given the ``rng`` passed in, and every word comes from a small fixed
vocabulary (:data:`VOCABULARY`), so a word-level tokenizer can be built without seeing data. Words are
what :func:`words` returns: lower-cased runs of ``\\w`` characters and runs of punctuation (the split of
the ``tokenizers`` ``Whitespace`` pre-tokenizer), with the GCG markup tokens ``<p>``, ``</p>`` and
``[SEG]`` kept whole (:data:`MARKUP_TOKENS`, to be added as special tokens).

Spatial words follow the image: "left" is smaller x, "top" is smaller y. Positions in captions and QA use
a 3 × 3 grid (:data:`GRID`). The margin that makes a spatial or relational description safe is 8 % of
the image's short side (the prototype's value).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .shapes import CATEGORIES, COLOURS

if TYPE_CHECKING:
    from .scene import Scene

MAX_OBJECTS = 100  # counts and instance numbers in the vocabulary go up to this
MARGIN = 0.08
KINDS = ("category", "colour", "size", "colour_size", "spatial", "relation", "combination")
GRID = (("top left", "top", "top right"), ("left", "center", "right"), ("bottom left", "bottom", "bottom right"))
MARKUP_TOKENS = ("<p>", "</p>", "[SEG]")
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                 "eleven", "twelve")


@dataclass(frozen=True)
class ReferringExpression:
    """``text`` identifies object ``target`` (an index into ``scene.objects``) uniquely; ``kind`` ∈ :data:`KINDS`."""

    target: int
    text: str
    kind: str


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    kind: str  # "counting", "presence", "location", "scene" or "description"


# --- templates ----------------------------------------------------------------------------------------

_SIZE_WORDS = {"small": ("small", "smallest"), "large": ("large", "big", "largest", "biggest")}
_COLOUR_TEMPLATES = ("the {c} {n}", "the {n} that is {c}")
_SIZE_TEMPLATES = ("the {s} {n}", "the {n} that is {s}")  # the second with the label only, not a superlative
_SPATIAL = {  # (axis, sign): sign -1 = smallest coordinate
    "left": (0, -1, ("the leftmost {n}", "the {n} on the left", "the left {n}")),
    "right": (0, 1, ("the rightmost {n}", "the {n} on the right", "the right {n}")),
    "top": (1, -1, ("the topmost {n}", "the top {n}", "the upper {n}", "the {n} at the top")),
    "bottom": (1, 1, ("the lowest {n}", "the bottom {n}", "the lower {n}", "the {n} at the bottom")),
}
_RELATIONS = {
    "left": ("{t} left of {r}", "{t} to the left of {r}"),
    "right": ("{t} right of {r}", "{t} to the right of {r}"),
    "top": ("{t} above {r}",),
    "bottom": ("{t} below {r}",),
    "closest": ("{t} closest to {r}", "{t} nearest to {r}", "{t} next to {r}"),
}
_CLASS_PHRASES = {
    "airport": "an airport with a runway", "harbor": "a harbor with piers along the water",
    "parking_lot": "a parking lot", "storage_tanks": "an industrial area with storage tanks",
    "dense_residential": "a dense residential area with a grid of roads",
    "farmland": "farmland divided into crop fields", "forest": "a dense forest",
    "river": "a river winding through {land}", "beach": "a sandy beach along the water",
    "sports_field": "a sports ground with tennis courts", "freeway": "a freeway with several lanes",
    "mixed": "an open area with scattered objects",
}
_LAND_PHRASES = {"grass": "on grass", "soil": "on bare soil", "sand": "on sandy ground", "concrete": "on concrete",
                 "asphalt": "on asphalt", "farmland": "among crop fields", "forest": "in a forest"}
_RIVER_LANDS = {"grass": "grassland", "soil": "bare land", "farmland": "farmland", "forest": "a forest"}
_NO_LAND_PHRASE = ("harbor", "river", "beach", "farmland", "forest")  # the class phrase says it already
_WHERE = {"top": "at the top", "bottom": "at the bottom", "left": "on the left", "right": "on the right"}
_OPENINGS = ("This is an aerial image of", "The image shows", "An aerial view of", "This satellite image shows")
_INSTANCE_SENTENCES = ("There is <p> {p} </p> [SEG] {where}.", "We can see <p> {p} </p> [SEG] {where}.",
                       "The image shows <p> {p} </p> [SEG] {where}.")
_GROUP_SENTENCES = ("There are <p> {p} </p> [SEG] {where}.", "We can see <p> {p} </p> [SEG] {where}.",
                    "The image shows <p> {p} </p> [SEG] {where}.")
_QUESTIONS = {
    "counting": ("How many {pl} are there?", "How many {pl} can be seen in the image?"),
    "presence": ("Is there a {n} in the image?", "Are there any {pl} in the image?"),
    "location": ("Where is {d}?", "Where is {d} located in the image?"),
    "scene": ("What kind of scene is this?", "What type of area does this image show?"),
    "description": ("Describe the image briefly.", "Give a short description of this image."),
}
_EXTRA = ("in the", "across the image", "spread over the image", "It contains", "and", ",", "-", "yes", "no",
          "the land")  # words that code (not a template) puts into the texts


def words(text: str) -> list[str]:
    """Split ``text`` into vocabulary words (see the module docstring)."""
    out = []
    for tok in re.findall(r"<p>|</p>|\[SEG\]|\w+|[^\w\s]+", text):
        out.append(tok if tok in MARKUP_TOKENS else tok.lower())
    return out


def _build_vocabulary() -> tuple[str, ...]:
    """Every word of every template and of every value that fills a slot."""
    texts = [*_COLOUR_TEMPLATES, *_SIZE_TEMPLATES, *(t for _, _, ts in _SPATIAL.values() for t in ts),
             *(t for ts in _RELATIONS.values() for t in ts), *_OPENINGS, *_INSTANCE_SENTENCES, *_GROUP_SENTENCES,
             *(q for qs in _QUESTIONS.values() for q in qs), *_EXTRA, *_CLASS_PHRASES.values(),
             *_LAND_PHRASES.values(), *_RIVER_LANDS.values(), *_WHERE.values(), *(w for g in GRID for w in g),
             *COLOURS, *(w for ws in _SIZE_WORDS.values() for w in ws), *_NUMBER_WORDS,
             *(str(k) for k in range(MAX_OBJECTS + 1)), *(c.replace("_", " ") for c in _CLASS_PHRASES if c != "mixed")]
    for c in CATEGORIES.values():
        texts += [c.noun, c.plural]
    vocab = {w for t in texts for w in words(re.sub(r"\{\w+\}", " ", t))}
    return tuple(sorted(vocab - set(MARKUP_TOKENS)))


# --- scene facts ---------------------------------------------------------------------------------------

def _centres(scene: Scene) -> list[tuple[float, float]]:
    return [o.centre for o in scene.objects]


def _same_category(scene: Scene, i: int) -> list[int]:
    cat = scene.objects[i].category
    return [j for j, o in enumerate(scene.objects) if o.category == cat]


def category_is_ambiguous(scene: Scene, target: int) -> bool:
    """True when the target's category alone does not identify it (another object shares it)."""
    return len(_same_category(scene, target)) > 1


def grid_cell(scene: Scene, i: int) -> str:
    """The 3 × 3 grid cell ("top left" … "center" … "bottom right") holding object ``i``'s centre."""
    (x, y), (w, h) = scene.objects[i].centre, scene.size
    return GRID[min(2, int(3 * y / h))][min(2, int(3 * x / w))]


def where_phrase(cell: str) -> str:
    """How a caption says a grid cell: "in the top left", "at the top", "on the right", "in the center"."""
    return _WHERE.get(cell, f"in the {cell}")


def _unique_by(scene: Scene, pool: Sequence[int], i: int, key) -> bool:
    return sum(key(scene.objects[j]) == key(scene.objects[i]) for j in pool) == 1


def _references(scene: Scene, target: int) -> list[tuple[int, list[str]]]:
    """Objects of another category that a short phrase identifies uniquely, with those phrases."""
    out = []
    for r, o in enumerate(scene.objects):
        if o.category == scene.objects[target].category:
            continue
        n, pool = CATEGORIES[o.category].noun, _same_category(scene, r)
        if len(pool) == 1:
            phrases = [f"the {n}", f"the {o.colour} {n}", f"the {o.size} {n}"]
        else:
            phrases = ([f"the {o.colour} {n}"] if _unique_by(scene, pool, r, lambda x: x.colour) else []) + \
                      ([f"the {o.size} {n}"] if _unique_by(scene, pool, r, lambda x: x.size) else [])
        if phrases:
            out.append((r, phrases))
    return out


def _relation_holds(c: Sequence[tuple[float, float]], i: int, r: int, rel: str, strong: bool,
                    margin: float) -> bool:
    """Direction of ``i`` from reference ``r``: strong = clearly (≥ 1.5 × the cross component and ≥ the
    margin), weak = at all (≥ 0.5 × the cross component)."""
    dx, dy = c[i][0] - c[r][0], c[i][1] - c[r][1]
    along, across = {"left": (-dx, dy), "right": (dx, dy), "top": (-dy, dx), "bottom": (dy, dx)}[rel]
    if strong:
        return along >= margin and along >= 1.5 * abs(across)
    return along > 0 and along >= 0.5 * abs(across)


def _relation_unique(c: Sequence[tuple[float, float]], pool: Sequence[int], target: int, r: int, rel: str,
                     margin: float) -> bool:
    """Whether ``rel`` to reference ``r`` holds clearly for ``target`` and not even weakly for the rest of
    ``pool``; "closest" needs every other object farther by the margin and by 20 %."""
    others = [j for j in pool if j != target]
    if rel == "closest":
        dt = np.hypot(c[target][0] - c[r][0], c[target][1] - c[r][1])
        return all(np.hypot(c[j][0] - c[r][0], c[j][1] - c[r][1]) >= max(dt + margin, 1.2 * dt) for j in others)
    return _relation_holds(c, target, r, rel, True, margin) and not any(
        _relation_holds(c, j, r, rel, False, margin) for j in others)


def candidate_expressions(scene: Scene, target: int) -> dict[str, list[str]]:
    """Every template text that identifies ``target`` uniquely, by kind (empty kinds left out).

    Attributes are added only when needed: category-only when the category is unique, and otherwise the
    kinds whose simpler parts do not already suffice (colour + size only when neither alone does;
    combinations only when neither the attribute nor the relation alone does).
    """
    o, pool = scene.objects[target], _same_category(scene, target)
    n, out = CATEGORIES[o.category].noun, {k: [] for k in KINDS}
    if len(pool) == 1:
        return {"category": [f"the {n}"]}
    c, margin = _centres(scene), MARGIN * min(scene.size)
    by_colour = _unique_by(scene, pool, target, lambda x: x.colour)
    by_size = _unique_by(scene, pool, target, lambda x: x.size)
    if by_colour:
        out["colour"] = [t.format(c=o.colour, n=n) for t in _COLOUR_TEMPLATES]
    if by_size:
        out["size"] = [_SIZE_TEMPLATES[0].format(s=w, n=n) for w in _SIZE_WORDS[o.size]]
        out["size"].append(_SIZE_TEMPLATES[1].format(s=o.size, n=n))
    if not by_colour and not by_size and _unique_by(scene, pool, target, lambda x: (x.colour, x.size)):
        out["colour_size"] = [f"the {w} {o.colour} {n}" for w in _SIZE_WORDS[o.size][:2]]
    for axis, sign, templates in _SPATIAL.values():
        if all(sign * c[target][axis] >= sign * c[j][axis] + margin for j in pool if j != target):
            out["spatial"] += [t.format(n=n) for t in templates]
    subsets = {"": pool}
    for attr in ("colour", "size"):
        sub = [j for j in pool if getattr(scene.objects[j], attr) == getattr(o, attr)]
        if len(sub) > 1:
            subsets[getattr(o, attr)] = sub
    for r, ref_phrases in _references(scene, target):
        for rel, templates in _RELATIONS.items():
            if _relation_unique(c, pool, target, r, rel, margin):
                out["relation"] += [t.format(t=f"the {n}", r=p) for t in templates for p in ref_phrases]
                continue
            for word, sub in subsets.items():
                if word and _relation_unique(c, sub, target, r, rel, margin):
                    out["combination"] += [t.format(t=f"the {word} {n}", r=p) for t in templates for p in ref_phrases]
    return {k: v for k, v in out.items() if v}


def referring_expression(scene: Scene, target: int, rng: np.random.Generator,
                         kinds: Sequence[str] | None = None) -> ReferringExpression | None:
    """A uniquely identifying expression: a kind drawn uniformly among the applicable ones (restricted
    to ``kinds`` if given), then a template of that kind; None if no allowed kind applies."""
    cands = candidate_expressions(scene, target)
    allowed = [k for k in KINDS if k in cands and (kinds is None or k in kinds)]
    if not allowed:
        return None
    kind = allowed[int(rng.integers(len(allowed)))]
    texts = cands[kind]
    return ReferringExpression(target, texts[int(rng.integers(len(texts)))], kind)


# --- grounded captions -------------------------------------------------------------------------------

def _count_words(k: int) -> str:
    return _NUMBER_WORDS[k] if k < len(_NUMBER_WORDS) else str(k)


def holistic_sentence(scene: Scene, rng: np.random.Generator) -> str:
    """One or two sentences about the scene class, land cover and object counts."""
    opening = _OPENINGS[int(rng.integers(len(_OPENINGS)))]
    text = f"{opening} {_CLASS_PHRASES[scene.scene_class].format(land=_RIVER_LANDS.get(scene.land_cover, 'the land'))}"
    if scene.scene_class not in _NO_LAND_PHRASE:
        text += f" {_LAND_PHRASES[scene.land_cover]}"
    text += "."
    counts = Counter(o.category for o in scene.objects)
    if counts:
        parts = [f"{_count_words(k)} {CATEGORIES[c].noun if k == 1 else CATEGORIES[c].plural}"
                 for c, k in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
        listing = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        text += f" It contains {listing}."
    return text


def _instance_phrase(scene: Scene, i: int) -> str:
    o, pool = scene.objects[i], _same_category(scene, i)
    n = CATEGORIES[o.category].noun
    if len(pool) == 1:
        return f"the {n}"
    if _unique_by(scene, pool, i, lambda x: x.colour):
        return f"the {o.colour} {n}"
    h = scene.size[1]
    order = sorted(pool, key=lambda j: (min(2, int(3 * scene.objects[j].centre[1] / h)), scene.objects[j].centre[0]))
    return f"{n}-{order.index(i) + 1}"  # numbered in reading order (grid row, then x)


def grounded_caption(scene: Scene, rng: np.random.Generator) -> tuple[str, list[list[int]]]:
    """A GeoPixelD-style caption and, per ``<p> phrase </p> [SEG]``, the indices of the objects it covers.

    The caption opens with :func:`holistic_sentence`, then 1–4 sentences with one grounded phrase each:
    instance phrases ("ship-2", "the red car") or group phrases ("the cars", "the white storage tanks")
    covering two or more objects. No object is in two phrases. Raises ``ValueError`` for a scene
    without objects (there is nothing to ground).
    """
    if not scene.objects:
        raise ValueError(f"a {scene.scene_class} scene without objects has nothing to ground")
    groups_by_cat: list[tuple[str, list[int]]] = []
    for cat in sorted({o.category for o in scene.objects}):
        members = [i for i, o in enumerate(scene.objects) if o.category == cat]
        if len(members) >= 2:
            groups_by_cat.append((f"the {CATEGORIES[cat].plural}", members))
            for colour in sorted({scene.objects[i].colour for i in members}):
                sub = [i for i in members if scene.objects[i].colour == colour]
                if 2 <= len(sub) < len(members):
                    groups_by_cat.append((f"the {colour} {CATEGORIES[cat].plural}", sub))
    n_phrases = int(rng.integers(1, 5))
    used: set[int] = set()
    sentences, groups = [], []
    instances = [int(i) for i in rng.permutation(len(scene.objects))]
    group_order = [groups_by_cat[int(k)] for k in rng.permutation(len(groups_by_cat))]
    while len(groups) < n_phrases:
        free_groups = [g for g in group_order if not used & set(g[1])]
        free = [i for i in instances if i not in used]
        if not free and not free_groups:
            break
        if free_groups and (not free or rng.random() < 0.35):
            phrase, members = free_groups[0]
            cells = {grid_cell(scene, i) for i in members}
            where = where_phrase(cells.pop()) if len(cells) == 1 else \
                ("across the image", "spread over the image")[int(rng.integers(2))]
            template = _GROUP_SENTENCES[int(rng.integers(len(_GROUP_SENTENCES)))]
        else:
            members = [free[0]]
            phrase, where = _instance_phrase(scene, free[0]), where_phrase(grid_cell(scene, free[0]))
            template = _INSTANCE_SENTENCES[int(rng.integers(len(_INSTANCE_SENTENCES)))]
        sentences.append(template.format(p=phrase, where=where))
        groups.append(sorted(members))
        used |= set(members)
    return " ".join([holistic_sentence(scene, rng), *sentences]), groups


def region_caption(scene: Scene, rng: np.random.Generator, max_phrases: int = 4) -> tuple[str, list[list[int]]]:
    """A box-conditioned caption: :func:`holistic_sentence`, then one grounded sentence per category of the
    objects in a random region, and per ``<p> phrase </p> [SEG]`` the indices of the objects it covers.

    The region is a rectangle of 30–70 % of the image's width and height around a random anchor object; the
    objects whose centres lie in it form the subset. Each category of the subset is one phrase: "the {noun}" for
    a single object, the group phrase "the {plural}" for several. At most ``max_phrases`` categories are kept,
    those nearest the anchor first; phrases follow reading order (grid row, then x). The prompt box of the
    caption is the union box of the covered objects' masks (computed by the writer). Raises ``ValueError`` for
    a scene without objects.
    """
    if not scene.objects:
        raise ValueError(f"a {scene.scene_class} scene without objects has nothing to ground")
    (width, height), centres = scene.size, np.array(_centres(scene))
    anchor = int(rng.integers(len(scene.objects)))
    extent = rng.uniform(0.3, 0.7, 2) * (width, height)
    low = np.clip(centres[anchor] - rng.uniform(0.0, 1.0, 2) * extent, 0.0, (width, height) - extent)
    inside = np.all((centres >= low) & (centres <= low + extent), axis=1)
    inside[anchor] = True
    distance = np.hypot(*(centres - centres[anchor]).T)
    by_category: dict[str, list[int]] = {}
    for i in sorted(np.flatnonzero(inside), key=lambda i: distance[i]):
        by_category.setdefault(scene.objects[i].category, []).append(int(i))
    groups = list(by_category.values())[:max_phrases]

    def reading_order(members: list[int]) -> tuple[int, float]:
        x, y = centres[members].mean(0)
        return min(2, int(3 * y / height)), float(x)

    groups.sort(key=reading_order)
    sentences = []
    for members in groups:
        noun = CATEGORIES[scene.objects[members[0]].category]
        x, y = centres[members].mean(0)
        where = where_phrase(GRID[min(2, int(3 * y / height))][min(2, int(3 * x / width))])
        templates = _GROUP_SENTENCES if len(members) > 1 else _INSTANCE_SENTENCES
        phrase = f"the {noun.plural}" if len(members) > 1 else f"the {noun.noun}"
        sentences.append(templates[int(rng.integers(len(templates)))].format(p=phrase, where=where))
    return " ".join([holistic_sentence(scene, rng), *sentences]), [sorted(g) for g in groups]


# --- QA ------------------------------------------------------------------------------------------------

def qa_pairs(scene: Scene, rng: np.random.Generator) -> list[QA]:
    """Question-answer pairs for SFT: counting, presence (also of absent categories), location on the
    3 × 3 grid, scene class (not for mixed tiles) and a short description."""

    def ask(kind: str, **slots) -> str:
        qs = _QUESTIONS[kind]
        return qs[int(rng.integers(len(qs)))].format(**slots)

    counts = Counter(o.category for o in scene.objects)
    absent = [c for c in CATEGORIES if c not in counts]
    out = []
    asked = sorted(counts) + ([absent[int(rng.integers(len(absent)))]] if absent else [])
    for c in asked:
        out.append(QA(ask("counting", pl=CATEGORIES[c].plural), str(counts.get(c, 0)), "counting"))
    for c in ([sorted(counts)[int(rng.integers(len(counts)))]] if counts else []) + \
             ([absent[int(rng.integers(len(absent)))]] if absent else []):
        out.append(QA(ask("presence", n=CATEGORIES[c].noun, pl=CATEGORIES[c].plural),
                      "yes" if c in counts else "no", "presence"))
    for i in [int(i) for i in rng.permutation(len(scene.objects))[:2]]:
        cands = candidate_expressions(scene, i)
        texts = [t for k in ("category", "colour", "size", "colour_size") for t in cands.get(k, [])]
        if texts:
            out.append(QA(ask("location", d=texts[int(rng.integers(len(texts)))]), grid_cell(scene, i), "location"))
    if scene.scene_class in _CLASS_PHRASES and scene.scene_class != "mixed":
        out.append(QA(ask("scene"), scene.scene_class.replace("_", " "), "scene"))
    out.append(QA(ask("description"), holistic_sentence(scene, rng), "description"))
    return out


VOCABULARY: tuple[str, ...] = _build_vocabulary()
