"""The points a model is checked at: explicit ones, then seeded random ones in its domain.

Random points are drawn on the float32 grid, so the same point is exact in float32 and float64
and one exact reference serves both.  An explicit point is used as given in float64 and rounded
to float32 for the float32 check; the reference is evaluated at each rounded point, because that
is the point a float32 computation actually sees.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from fractions import Fraction

import sympy as sp

from .model import Model
from .options import DTYPES as DTYPES


def to_float32(x: float) -> float:
    """The float32 nearest to ``x`` (as a Python float)."""
    return struct.unpack("f", struct.pack("f", x))[0]


def round_to(x: Fraction, dtype: str) -> float:
    """``x`` rounded to ``dtype`` (float64 first, as torch would receive it)."""
    f = float(x)
    return to_float32(f) if dtype == "float32" else f


def _sample(rng: random.Random, lo: Fraction, hi: Fraction) -> Fraction:
    flo, fhi = float(lo), float(hi)
    x = to_float32(rng.uniform(flo, fhi))
    # rounding to float32 may step just outside the interval: step back in
    while Fraction(x) < lo or Fraction(x) > hi:
        x = to_float32((x + (flo + fhi) / 2) / 2)
    return Fraction(x)


def points_for(
    model: Model, samples: int, seed: int, explicit: Sequence[dict[sp.Symbol, Fraction]] | None = None
) -> list[dict[sp.Symbol, Fraction]]:
    """The explicit points (the model's unless ``explicit`` replaces them) followed by
    ``samples`` random ones (when the model has a domain for every symbol).  The random stream depends on the seed and the model's name only, so adding
    a model to a file does not move the points of the others.

    >>> x, w = sp.symbols("x w", real=True)
    >>> m = Model(name="m", loss=(w*x)**2, params=[w], inputs=[x], domain={"*": (-1, 1)})
    >>> points_for(m, 2, seed=0) == points_for(m, 2, seed=0)
    True
    """
    out = [dict(p) for p in (model.points if explicit is None else explicit)]
    if len(model.domain) == len(model.symbols):
        rng = random.Random(f"{seed}:{model.name}")
        for _ in range(samples):
            out.append({s: _sample(rng, *model.domain[s]) for s in model.symbols})
    return out


def rounded(points: Sequence[dict[sp.Symbol, Fraction]], symbols: Sequence[sp.Symbol], dtype: str) -> list[tuple[float, ...]]:
    """Each point as a tuple of ``dtype`` values in ``symbols`` order."""
    return [tuple(round_to(p[s], dtype) for s in symbols) for p in points]
