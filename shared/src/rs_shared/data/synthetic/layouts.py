"""What each scene class contains, and where.

Each layout receives the scene builder (:class:`.scene._Builder`), chooses the land cover, adds the
surfaces (in painting order), then places objects. Classes are defined by content, and the pairs that
share appearance are deliberate: parking lot and freeway both show cars on grey (rows in stalls vs
lanes of a road), airport and freeway both show grey strips (a marked runway with planes vs a road
with vehicles), harbor, beach and river all show water (piers and ships vs a sandy shore with surf vs
a band of water between two banks). Land covers, angles, sizes and lighting are randomised so that no
mean colour gives the class away.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import shapes
from .shapes import CATEGORIES, SIZE_RATIO

if TYPE_CHECKING:
    from .scene import _Builder


def _xy(angle: float, cx: float, cy: float, u: float, v: float) -> tuple[float, float]:
    """Image coordinates of the point ``(u, v)`` of the frame made by :meth:`_Builder.coords`."""
    c, s = np.cos(angle), np.sin(angle)
    return cx + u * c - v * s, cy + u * s + v * c


def _reach(b: _Builder) -> float:
    return float(np.hypot(b.w, b.h)) / 2


def _length(b: _Builder, category: str, large: bool = True) -> float:
    return CATEGORIES[category].base_length * (SIZE_RATIO if large else 1.0) * b.scale


def _place_all(b: _Builder, candidates: list[tuple]) -> None:
    """Try ``(category, x, y, angle, kwargs)`` candidates in random order (so a cap thins them evenly).

    Candidates centred outside the image are dropped first unless objects may be cut by the border."""
    if not b.partial:
        candidates = [c for c in candidates if 0 <= c[1] < b.w and 0 <= c[2] < b.h]
    for i in b.rng.permutation(len(candidates)):
        cat, x, y, angle, kw = candidates[i]
        b.place(cat, x, y, angle, **kw)


def _n_per_area(b: _Builder, metres: float, low: int = 0) -> int:
    """About one per ``metres`` × ``metres`` of ground, at least ``low``."""
    return max(low, int(b.rng.poisson(b.w * b.h / (metres * b.scale) ** 2)))


def airport(b: _Builder) -> None:
    b.land = b.choice(["grass", "soil", "sand", "concrete"], p=[0.5, 0.2, 0.15, 0.15])
    th, (cx, cy) = b.axis_angle(), b.point(0.15)
    u, v = b.coords(th, cx, cy)
    side = 1 if v.max() > -v.min() else -1  # the apron goes on the roomier side
    rw = b.clamp(45, 0.1, 0.3)
    end = b.rng.uniform(-0.45, 0) * b.s if b.rng.random() < 0.5 else None
    runway = (np.abs(v) < rw / 2) & (u > (end if end is not None else -np.inf))
    b.surface("runway", runway, lambda img, rng: shapes.paint_runway(img, rng, u, v, rw, end, b.scale))
    tw = max(2.0, 0.35 * rw)
    tv = side * (1.3 * rw + tw / 2)
    b.surface("runway", np.abs(v - tv) < tw / 2,
              lambda img, rng: shapes.paint_road(img, rng, u, v - tv, tw, 2, b.scale))
    plane = _length(b, "plane")
    a0 = 1.3 * rw + tw + 0.3 * rw
    apron = (side * v > a0) & (side * v < a0 + 1.5 * plane)
    b.paved(apron, "concrete", "parking")
    b.bushes(_n_per_area(b, 30), region=~(b.layers["runway"] | apron))
    vc = side * (a0 + 0.75 * plane)
    nose = th - side * np.pi / 2  # towards the taxiway
    us = np.arange(-_reach(b), _reach(b), 1.15 * plane) + b.rng.uniform(0, plane)
    _place_all(b, [("plane", *_xy(th, cx, cy, uu, vc), nose + b.rng.normal(0, 0.1), {})
                   for uu in us if b.rng.random() < 0.75])
    if not b.objects:
        b.scatter("plane", 1 + int(b.rng.integers(2)), tries=40)
    for cat in ("car", "truck"):
        b.scatter(cat, int(b.rng.integers(0, 2 + _n_per_area(b, 120))), region=apron, tries=5)
    b.scatter("building", _n_per_area(b, 150), region=~(b.layers["runway"] | apron), tries=5)


def freeway(b: _Builder) -> None:
    b.land = b.choice(["grass", "soil", "sand", "concrete", "farmland"], p=[0.35, 0.2, 0.1, 0.15, 0.2])
    th, (cx, cy) = b.axis_angle(), b.point(0.2)
    lanes = b.choice([4, 6])
    lane = min(max(3.0, 3.7 * b.scale), 0.6 * b.s / (lanes + 1))
    width = lane * (lanes + 1)
    _, _, road = b.road(th, cx, cy, width, lanes)
    if b.rng.random() < 0.3:
        b.road(th + np.pi / 2 + b.rng.normal(0, 0.05), *b.point(0.3), b.clamp(8, 0.06, 0.12), 2)
    b.bushes(_n_per_area(b, 25), region=~(b.layers["road"]))
    road = road & b.layers["road"]
    cands = []
    for k in range(lanes // 2):
        for sgn in (1, -1):  # right-hand traffic: the +v carriageway drives towards +u
            vv, heading = sgn * lane * (k + 1), th if sgn > 0 else th + np.pi
            uu = -_reach(b) + b.rng.uniform(0, 10 * b.scale)
            while uu < _reach(b):
                cat = "truck" if b.rng.random() < 0.2 else "car"
                cands.append((cat, *_xy(th, cx, cy, uu, vv), heading + b.rng.normal(0, 0.02), {"region": road}))
                uu += b.rng.uniform(1.6, 8) * _length(b, cat)
    _place_all(b, cands)


def parking_lot(b: _Builder) -> None:
    kind = b.choice(["asphalt", "concrete"])
    th, (cx, cy) = b.axis_angle(0.7), b.point(0.1)
    u, v = b.coords(th, cx, cy)
    # Stalls fit the widest car plus the one-pixel gap every object keeps.
    depth, stall, aisle = max(4.0, 5.5 * b.scale), 2.8 * b.scale + 1.2, max(4.0, 7 * b.scale)
    period, p = 2 * depth + aisle, b.rng.uniform(0.45, 0.9)
    # A lot about as large as max_objects cars need: large images show a full lot, not an empty one.
    need = 1.1 * b.max_objects / p * stall * period / 2
    if b.rng.random() < 0.6 and need > 0.8 * b.w * b.h:
        b.land, lot = kind, np.ones((b.h, b.w), bool)
        b.surface("parking", lot)
    else:
        b.land = b.choice(["grass", "soil", "concrete" if kind == "asphalt" else "asphalt"])
        aspect = b.rng.uniform(0.6, 1.6)
        half = np.sqrt(min(need, 0.6 * b.w * b.h) * np.array([aspect, 1 / aspect])) / 2
        lot = (np.abs(u) < half[0]) & (np.abs(v) < half[1])
        b.paved(lot, kind, "parking")
        if b.rng.random() < 0.7:  # the access road along one side of the lot
            side = b.choice([-1, 1]) * (half[1] + b.clamp(5, 0.03, 0.06))
            b.road(th, *_xy(th, cx, cy, 0, side), b.clamp(8, 0.05, 0.1), 2)
        b.bushes(_n_per_area(b, 20), region=~(lot | b.layers["road"]))
    line = max(0.5, 0.12 * b.scale)
    marks = lot & (np.abs(np.mod(v, period) - depth) < line / 2)  # between back-to-back rows
    if stall >= 6:
        marks |= lot & (np.mod(v, period) < 2 * depth) & (np.mod(u, stall) < line)
    b.surface("parking", marks, lambda img, rng: shapes.fill(img, marks, (222, 222, 214), rng))
    reach = _reach(b)
    cands = []
    for r in np.arange(-reach // period - 1, reach // period + 1):
        for vv in (r * period + depth / 2, r * period + 1.5 * depth):
            for uu in np.arange(-reach // stall, reach // stall) * stall + stall / 2:
                if b.rng.random() < p:
                    heading = th + (np.pi / 2 if b.rng.random() < 0.5 else -np.pi / 2) + b.rng.normal(0, 0.03)
                    cands.append(("car", *_xy(th, cx, cy, uu, vv), heading, {"region": lot}))
        if b.rng.random() < 0.15:
            uu = b.rng.uniform(-reach, reach)
            cands.append(("truck", *_xy(th, cx, cy, uu, r * period + 2 * depth + aisle / 2), th, {"region": lot}))
    _place_all(b, cands)
    b.scatter("building", _n_per_area(b, 110), region=~(lot | b.layers["road"]), tries=5)


def storage_tanks(b: _Builder) -> None:
    b.land = b.choice(["soil", "sand", "concrete", "grass"], p=[0.35, 0.2, 0.3, 0.15])
    road = None
    if b.rng.random() < 0.7:
        road = b.road(b.axis_angle(), *b.point(0.35), b.clamp(8, 0.06, 0.12), 2)[2]
    clusters = []
    for _ in range(min(6, _n_per_area(b, 120, low=1))):
        large = b.rng.random() < 0.5
        d = _length(b, "storage_tank", large)
        nx, ny, gap = int(b.rng.integers(1, 4)), int(b.rng.integers(1, 4)), b.rng.uniform(1.25, 1.6) * d
        th, (cx, cy) = b.axis_angle(0.8), b.point(0.3)
        u, v = b.coords(th, cx, cy)
        pad = (np.abs(u) < nx * gap / 2 + 0.2 * d) & (np.abs(v) < ny * gap / 2 + 0.2 * d)
        b.paved(pad, b.choice(["concrete", "soil"]), None)
        clusters.append((large, th, cx, cy, nx, ny, gap))
    b.bushes(_n_per_area(b, 40))
    for large, th, cx, cy, nx, ny, gap in clusters:
        colour = b.choice(["white", "grey", "white", "red", "green"])
        size = "large" if large else "small"
        for i in range(nx):
            for j in range(ny):
                x, y = _xy(th, cx, cy, (i - (nx - 1) / 2) * gap, (j - (ny - 1) / 2) * gap)
                b.place("storage_tank", x, y, size=size, colour=colour)
    if road is not None:
        b.scatter("truck", int(b.rng.integers(0, 4)), region=road & b.layers["road"], tries=10)
    b.scatter("truck", int(b.rng.integers(0, 3)), tries=5)


def dense_residential(b: _Builder) -> None:
    b.land = b.choice(["grass", "soil"], p=[0.7, 0.3])
    th, (cx, cy) = b.axis_angle(0.8), b.point(0.5)
    u, v = b.coords(th, cx, cy)
    su, sv, rw = b.clamp(70, 0.4, 0.8), b.clamp(60, 0.35, 0.7), b.clamp(7, 0.06, 0.1)
    wu, wv = np.mod(u + su / 2, su) - su / 2, np.mod(v + sv / 2, sv) - sv / 2
    roads = (np.abs(wu) < rw / 2) | (np.abs(wv) < rw / 2)

    def paint(img, rng):
        shapes.paint_road(img, rng, v, wu, rw, 2, b.scale)
        shapes.paint_road(img, rng, u, wv, rw, 2, b.scale)

    b.surface("road", roads, paint)
    b.bushes(_n_per_area(b, 14), region=~roads)
    blocks = ~b.layers["road"]
    bl = _length(b, "building")
    step = 1.25 * bl
    cands = []
    for uu in np.arange(-_reach(b), _reach(b), step):
        for vv in np.arange(-_reach(b), _reach(b), step * 0.8):
            turn = np.pi / 2 * int((np.floor(uu / su) + np.floor(vv / sv)) % 2)
            cands.append(("building", *_xy(th, cx, cy, uu + b.rng.normal(0, 0.1 * bl), vv), th + turn,
                          {"region": blocks}))
    _place_all(b, cands)
    if not b.objects:
        b.scatter("building", 1, region=blocks, angle=th, tries=60)
    b.scatter("swimming_pool", _n_per_area(b, 90), region=blocks, angle=th, tries=8)
    for _ in range(_n_per_area(b, 40)):
        along = b.rng.random() < 0.5
        k = np.floor(b.rng.uniform(-_reach(b), _reach(b)) / (sv if along else su))
        off = k * (sv if along else su) + b.choice([-1, 1]) * rw / 4
        t = b.rng.uniform(-_reach(b), _reach(b))
        x, y = _xy(th, cx, cy, t, off) if along else _xy(th, cx, cy, off, t)
        b.place("car", x, y, (th if along else th + np.pi / 2) + b.choice([0, np.pi]), region=b.layers["road"])


def sports_field(b: _Builder) -> None:
    b.land = b.choice(["grass", "soil"], p=[0.75, 0.25])
    if b.rng.random() < 0.5:
        b.road(b.axis_angle(), *b.point(0.4), b.clamp(7, 0.05, 0.1), 2)
    b.bushes(_n_per_area(b, 25), region=~b.layers["road"])
    for n in range(min(4, _n_per_area(b, 250, low=1))):  # complexes of 1-4 courts side by side
        th, (cx, cy) = b.axis_angle(0.7), b.point(0.15 if n == 0 else 0.4)
        large = b.rng.random() < 0.5
        gap = 0.5 * _length(b, "tennis_court", large) + max(2.0, 1.5 * b.scale)
        colour = b.pick_colour(CATEGORIES["tennis_court"].colours, np.array(shapes.LAND_COLOURS[b.land]))
        k = int(b.rng.integers(1, 5))
        for i in range(k):
            b.place("tennis_court", *_xy(th, cx, cy, 0, (i - (k - 1) / 2) * gap), th,
                    size="large" if large else "small", colour=colour)
    if not b.objects:
        b.scatter("tennis_court", 1, tries=40)
    free = ~b.layers["road"]
    b.scatter("swimming_pool", int(b.rng.integers(0, 3)) + _n_per_area(b, 150), region=free, tries=10)
    b.scatter("building", int(b.rng.integers(0, 3)) + _n_per_area(b, 120), region=free, tries=10)
    b.scatter("car", int(b.rng.integers(0, 4)) + _n_per_area(b, 80), tries=5)


def harbor(b: _Builder) -> None:
    b.land = b.choice(["concrete", "asphalt", "soil", "sand"], p=[0.5, 0.2, 0.15, 0.15])
    th, cx, cy = b.axis_angle(0.6) + b.choice([0.0, np.pi]), b.w / 2, b.h / 2
    u, v = b.coords(th, cx, cy)
    v0 = b.rng.uniform(-0.25, 0.1) * b.s
    water = v > v0
    b.water(water)
    pw, spacing = b.clamp(8, 0.03, 0.06), b.clamp(70, 0.3, 0.55)
    piers_u = np.arange(-_reach(b), _reach(b), spacing) + b.rng.uniform(0, spacing)
    plen = b.rng.uniform(0.25, 0.5) * b.s
    piers = np.zeros_like(water)
    for pu in piers_u:
        piers |= (np.abs(u - pu) < pw / 2) & (v > v0 - 1) & (v < v0 + plen)
    b.paved(piers, "concrete", "pier")
    land = ~water
    b.bushes(_n_per_area(b, 40), region=land)
    water = b.layers["water"]
    ship = _length(b, "ship")
    out = th + np.pi / 2  # the direction of +v: out to sea
    cands = []
    for pu in piers_u:
        for sgn in (-1, 1):
            for t in np.arange(0.6 * ship, plen + 0.5 * ship, 1.15 * ship):
                if b.rng.random() < 0.7:
                    off = pw / 2 + 1 + 0.2 * ship + b.rng.uniform(0, 0.1 * ship)
                    cands.append(("ship", *_xy(th, cx, cy, pu + sgn * off, v0 + t), out + b.choice([0, np.pi]),
                                  {"region": water}))
    _place_all(b, cands)
    b.scatter("ship", int(b.rng.integers(0, 3)), region=water, tries=10)
    if not any(o.category == "ship" for o in b.objects):
        b.scatter("ship", 1, region=water, tries=60)
    land = ~(b.layers["water"] | b.layers["pier"])
    for cat in ("truck", "car", "storage_tank"):
        b.scatter(cat, _n_per_area(b, 110), region=land, tries=5)


def beach(b: _Builder) -> None:
    b.land = "sand"
    th, (cx, cy) = b.rng.uniform(-np.pi, np.pi), b.point(0.1)
    u, v = b.coords(th, cx, cy)
    lam, amp = b.rng.uniform(0.6, 1.5) * b.s, b.rng.uniform(0.02, 0.08) * b.s
    shore = b.rng.uniform(-0.1, 0.2) * b.s + amp * np.sin(2 * np.pi * u / lam + b.rng.uniform(0, 6.3))
    water = v > shore
    b.water(water)
    surf = max(1.0, b.rng.uniform(0.01, 0.03) * b.s)
    foam = water & (v < shore + surf * (1 + 0.6 * np.sin(u / max(2.0, 0.02 * b.s))))
    wet = ~water & (v > shore - 2.5 * surf)
    b.surface("water", foam, lambda img, rng: shapes.fill(img, foam, (226, 232, 230), rng, 0.06))
    b.surface(None, wet, lambda img, rng: shapes.fill(img, wet, (170, 152, 116), rng, 0.05))
    if b.rng.random() < 0.7:
        inland = v < shore - b.rng.uniform(0.2, 0.45) * b.s
        kind = b.choice(["grass", "soil", "forest"])

        def paint(img, rng, kind=kind, inland=inland):
            img[inland] = shapes.land_texture(kind, rng, b.h, b.w, b.scale)[inland]

        b.surface("tree" if kind == "forest" else None, inland, paint)
        b.bushes(_n_per_area(b, 20), region=inland)
    if b.rng.random() < 0.6:  # beach umbrellas: small bright discs on the sand
        sand = ~(b.layers["water"] | b.layers["tree"]) & ~wet
        n = _n_per_area(b, 12)
        pts = np.stack([b.rng.uniform(0, b.w, n), b.rng.uniform(0, b.h, n)], 1)
        pts = pts[sand[pts[:, 1].astype(int), pts[:, 0].astype(int)]]
        radii = np.full(len(pts), max(0.8, 1.2 * b.scale))
        rgb = b.choice([(220, 60, 50), (240, 200, 60), (60, 120, 220), (240, 240, 240)])
        b.ops.append(lambda img, rng: shapes.paint_blobs(img, rng, pts, radii, rgb, (0.5, 0.5)))


def river(b: _Builder) -> None:
    b.land = b.choice(["grass", "soil", "farmland", "forest"], p=[0.35, 0.2, 0.25, 0.2])
    if b.land == "forest":
        b.surface("tree", np.ones((b.h, b.w), bool))
    th, (cx, cy) = b.rng.uniform(-np.pi, np.pi), b.point(0.15)
    u, v = b.coords(th, cx, cy)
    lam, width = b.rng.uniform(0.7, 2.0) * b.s, b.rng.uniform(0.12, 0.3) * b.s
    centre = b.rng.uniform(0.03, 0.15) * b.s * np.sin(2 * np.pi * u / lam + b.rng.uniform(0, 6.3))
    half = width / 2 * (1 + 0.15 * np.sin(2 * np.pi * u / (0.6 * lam) + b.rng.uniform(0, 6.3)))
    off = np.abs(v - centre)
    bank = (off >= half) & (off < half + max(1.0, 0.02 * b.s))
    b.surface(None, bank, lambda img, rng: shapes.fill(img, bank, (150, 128, 92), rng, 0.06))
    b.water(off < half)
    b.bushes(_n_per_area(b, 20), region=(off > half + 0.03 * b.s) & (off < half + 0.15 * b.s))
    if b.rng.random() < 0.4:
        b.road(th + np.pi / 2 + b.rng.normal(0, 0.1), *b.point(0.3), b.clamp(8, 0.05, 0.1), 2)


def farmland(b: _Builder) -> None:
    b.land = "farmland"
    if b.rng.random() < 0.3:
        u, v = b.coords(b.axis_angle(), *b.point(0.3))
        track = np.abs(v) < b.clamp(4, 0.015, 0.04)
        b.surface(None, track, lambda img, rng: shapes.fill(img, track, (150, 126, 96), rng, 0.06))
    b.bushes(_n_per_area(b, 40))


def forest(b: _Builder) -> None:
    b.land = "forest"
    b.surface("tree", np.ones((b.h, b.w), bool))
    if b.rng.random() < 0.35:
        u, v = b.coords(b.rng.uniform(-np.pi, np.pi), *b.point(0.3))
        wiggle = 0.05 * b.s * np.sin(2 * np.pi * u / b.s + b.rng.uniform(0, 6.3))
        track = np.abs(v - wiggle) < b.clamp(3, 0.015, 0.03)
        b.surface(None, track, lambda img, rng: shapes.fill(img, track, (138, 116, 86), rng, 0.06))
    for _ in range(int(b.rng.integers(0, 3))):
        cx, cy = b.point(0.45)
        r = b.rng.uniform(0.05, 0.15) * b.s
        u, v = b.coords(0.0, cx, cy)
        clearing = u ** 2 + v ** 2 < r ** 2 * (1 + 0.3 * shapes.smooth_noise(b.rng, b.h, b.w, max(2.0, r / 2)))

        def paint(img, rng, clearing=clearing):
            img[clearing] = shapes.land_texture("grass", rng, b.h, b.w, b.scale)[clearing]

        b.surface(None, clearing, paint)


LAYOUTS = {f.__name__: f for f in (airport, harbor, parking_lot, storage_tanks, dense_residential, farmland,
                                    forest, river, beach, sports_field, freeway)}
