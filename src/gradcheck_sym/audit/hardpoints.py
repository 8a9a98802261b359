"""Points chosen to hurt, per function and dtype, plus seeded random ones.

Every point is a value of the dtype (so the exact derivative is taken at exactly what torch
receives) and carries the kind of difficulty it probes:

* ``zero`` ±0; ``subnormal`` the smallest and largest subnormals; ``tiny`` the smallest normal
  and its neighbours; ``one`` 1 and its neighbours, eps; ``max`` the largest finite value;
* ``edge``: where the usual intermediates overflow or underflow in this dtype (log(max),
  log2(max), log(smallest subnormal), √max, ∛max, √log(max), ...) with their neighbours;
* ``special``: the row's poles, zeros, domain edges and thresholds, and their neighbours;
* ``corner``: the row's kinks, and their neighbours;
* ``saturation``: where the output first rounds to its limit in this dtype (found by bisection
  on the exact function), and a sweep into the tail beyond it;
* ``random``: half uniform over the row's range, half log-uniform in magnitude over the whole
  dtype, from ``random.Random("seed:function:dtype")``: the same seed gives the same points.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import sympy as sp

from .exact import Exact
from .formats import FloatFormat, neighbours, round_to
from .functions import AuditFunction


@dataclass(frozen=True)
class Point:
    values: tuple[float, ...]  # one value of the dtype per argument
    kind: str  # which difficulty it probes (see the module's docstring)


def _edges(f: FloatFormat) -> list[float]:
    """Magnitudes where common intermediates overflow or underflow in format ``f``."""
    lm, ls, lt = math.log(f.max), math.log(f.subnormal), math.log(f.tiny)
    return [lm, math.log2(f.max), math.log10(f.max), -ls, -lt, -math.log2(f.subnormal), math.sqrt(f.max),
            f.max ** (1 / 3), math.sqrt(lm), math.sqrt(2 * lm), math.sqrt(-ls), math.sqrt(-2 * ls), math.sqrt(-lt),
            math.sqrt(-2 * lt), 1 / math.sqrt(f.max), math.sqrt(f.tiny), 1 / f.max]


def _signed(vals: list[float], kind: str) -> list[Point]:
    return [Point((s * v,), kind) for v in vals for s in (1.0, -1.0)]


def unary_points(fn: AuditFunction, f: FloatFormat, n_random: int, seed: int) -> list[Point]:
    """The hard points and ``n_random`` random points for a one-argument row, in dtype ``f``."""
    pts: list[Point] = []  # the row's own points first: a point keeps the first kind it is given
    for s in fn.special:
        pts += [Point((v,), "special") for v in neighbours(round_to(float(s), f), f, 2)]
        pts += [Point((v,), "special") for v in neighbours(round_to(-float(s), f), f, 1)]
    for c in fn.corners:
        pts += [Point((v,), "corner") for v in neighbours(round_to(float(c), f), f, 1)]
    for direction, limit in fn.saturation:
        x0 = saturation_point(fn, f, direction, limit)
        if x0 is not None:
            pts += [Point((v,), "saturation") for v in neighbours(x0, f, 1)]
            pts += [Point((round_to(x0 * k, f),), "saturation") for k in (0.25, 0.5, 0.75, 1.5, 2, 4, 8, 16, 32)]
    pts += [Point((0.0,), "zero"), Point((-0.0,), "zero")]
    sub = f.subnormal
    pts += _signed([sub, 2 * sub, f.tiny - sub, round_to(f.tiny / 3, f)], "subnormal")
    pts += _signed(neighbours(f.tiny, f, 1), "tiny")
    pts += _signed(neighbours(1.0, f, 2) + [2.0, 0.5, f.eps, f.u], "one")
    pts += _signed([f.max, round_to(f.max / 2, f)], "max")
    for e in _edges(f):
        pts += _signed(neighbours(round_to(e, f), f, 1), "edge")
    rng = random.Random(f"{seed}:{fn.name}:{f.name}")
    lo, hi = fn.range
    top = math.log2(f.max)
    for k in range(n_random):
        if k % 2 == 0:
            v = rng.uniform(lo, hi)
        else:
            v = 2 ** rng.uniform(f.sub_exp, top)
            if not fn.positive and rng.random() < 0.5:
                v = -v
        pts.append(Point((round_to(v, f),), "random"))
    return _unique(p for p in pts if all(math.isfinite(v) for v in p.values))


def binary_points(fn: AuditFunction, f: FloatFormat, n_random: int, seed: int) -> list[Point]:
    """Pairs for a two-argument row: a cross of special values (±0, subnormal, smallest normal,
    ±1, ½, 2, e, the largest value) and ``n_random`` random pairs."""
    base = [0.0, -0.0, f.subnormal, f.tiny, 1.0, -1.0, 0.5, 2.0, round_to(math.e, f), f.max, -f.subnormal, -2.0]
    pts = [Point((a, b), "special") for a in base for b in base]
    rng = random.Random(f"{seed}:{fn.name}:{f.name}")
    lo, hi = fn.range
    top = math.log2(f.max)
    for k in range(n_random):
        pair = []
        for _ in range(2):
            if k % 2 == 0:
                v = rng.uniform(lo, hi)
            else:
                v = 2 ** rng.uniform(f.sub_exp, top) * rng.choice((1.0, -1.0))
            pair.append(round_to(v, f))
        pts.append(Point(tuple(pair), "random"))
    return _unique(p for p in pts if all(math.isfinite(v) for v in p.values))


def points(fn: AuditFunction, f: FloatFormat, n_random: int, seed: int) -> list[Point]:
    """Every point for ``fn`` in dtype ``f``: hard ones first, then random, no repeats."""
    if len(fn.args) == 1:
        return unary_points(fn, f, n_random, seed)
    return binary_points(fn, f, n_random, seed)


def _unique(pts: object) -> list[Point]:
    seen: set[tuple[tuple[float, float], ...]] = set()
    out = []
    for p in pts:  # type: ignore[attr-defined]
        key = tuple((v, math.copysign(1.0, v)) for v in p.values)  # +0 and -0 are different points
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def saturation_point(fn: AuditFunction, f: FloatFormat, direction: int, limit: sp.Expr) -> float | None:
    """The smallest |x| (on the side ``direction``) at which the exact output, rounded to ``f``,
    equals ``limit``: where the output saturates in this dtype."""
    exact = Exact(fn.definition, fn.args)
    target = float(limit)

    def saturated(x: float) -> bool:
        v = exact.value((direction * x,), f)
        return v.kind == "finite" and v.rounded == target

    lo, hi = 0.0, 1.0
    while not saturated(hi):
        lo, hi = hi, hi * 2
        if hi > min(f.max, 1e6):
            return None
    for _ in range(60):
        mid = (lo + hi) / 2
        if saturated(mid):
            hi = mid
        else:
            lo = mid
    return direction * round_to(hi, f)
