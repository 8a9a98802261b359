"""The points a model is checked at: explicit ones, then seeded random ones in its domain.

Random points are drawn on the float32 grid, so the same point is exact in float32 and float64
and one exact reference serves both.  An explicit point is used as given in float64 and rounded
to float32 for the float32 check; the reference is evaluated at each rounded point, because that
is the point a float32 computation actually sees.
"""

from __future__ import annotations

import operator
import random
import struct
from array import array
from collections.abc import Iterable, Sequence
from fractions import Fraction

import sympy as sp

from .dtypes import DTYPES as FLOAT_TYPES
from .model import Model
from .options import DTYPES as DTYPES


def to_float32(x: float) -> float:
    """The float32 nearest to ``x`` (as a Python float)."""
    return struct.unpack("f", struct.pack("f", x))[0]


def round_to(x: Fraction | float, dtype: str) -> float:
    """``x`` rounded to ``dtype`` (float64 first, as torch would receive it)."""
    f = float(x)
    return to_float32(f) if dtype == "float32" else f if dtype == "float64" else FLOAT_TYPES[dtype].round(f)


def _step32(x: float, up: bool) -> float:
    """The next float32 after ``x`` (a float32) towards +inf (``up``) or -inf."""
    bits = struct.unpack("<i", struct.pack("<f", x))[0]
    if x == 0:
        return struct.unpack("<f", struct.pack("<i", 1 if up else -(2**31) + 1))[0]
    bits += 1 if (up == (x > 0)) else -1
    return struct.unpack("<f", struct.pack("<i", bits))[0]


def _float32_bounds(lo: Fraction, hi: Fraction) -> tuple[float, float]:
    """The float32 numbers nearest to [lo, hi] from inside."""
    a, b = to_float32(float(lo)), to_float32(float(hi))
    if Fraction(a) < lo:
        a = _step32(a, True)
    if Fraction(b) > hi:
        b = _step32(b, False)
    return a, b


def points_for(
    model: Model, samples: int, seed: int, explicit: Sequence[dict[sp.Symbol, Fraction]] | None = None
) -> list[dict[sp.Symbol, Fraction | float]]:
    """The explicit points (the model's unless ``explicit`` replaces them) followed by
    ``samples`` random ones (when the model has a domain for every symbol).  The random stream depends on the seed and the model's name only, so adding
    a model to a file does not move the points of the others.

    >>> x, w = sp.symbols("x w", real=True)
    >>> m = Model(name="m", loss=(w*x)**2, params=[w], inputs=[x], domain={"*": (-1, 1)})
    >>> points_for(m, 2, seed=0) == points_for(m, 2, seed=0)
    True
    """
    out: list[dict[sp.Symbol, Fraction | float]] = [dict(p) for p in (model.points if explicit is None else explicit)]
    if len(model.domain) == len(model.symbols):
        rng = random.Random(f"{seed}:{model.name}")
        symbols = model.symbols
        bounds = [_float32_bounds(*model.domain[s]) for s in symbols]
        spans = [(lo, hi - lo) for lo, hi in bounds]
        draw = rng.random
        for _ in range(samples):  # float32 numbers in [lo, hi] (float32 bounds): exact binary fractions
            drawn = _to_float32s([lo + span * draw() for lo, span in spans])  # `rng.uniform(lo, hi)`, inlined
            out.append(dict(zip(symbols, [min(max(x, lo), hi) for x, (lo, hi) in zip(drawn, bounds)])))
    return out


FLOAT32_MAX = 3.4028234663852886e38


def _to_float32s(values: list[float]) -> list[float]:
    """`to_float32` of each value (a C array of floats rounds as `struct` does; values beyond
    float32's range, and NaN, one at a time by `to_float32`)."""
    if all(-FLOAT32_MAX <= x <= FLOAT32_MAX for x in values):
        return array("f", values).tolist()
    return [to_float32(x) for x in values]


def rounded(points: Sequence[dict[sp.Symbol, Fraction | float]], symbols: Sequence[sp.Symbol], dtype: str) -> list[tuple[float, ...]]:
    """Each point as a tuple of ``dtype`` values in ``symbols`` order."""
    if dtype == "float64":
        return [tuple(map(float, _in_order(p, symbols))) for p in points]
    if dtype == "float32":
        return [tuple(_to_float32s(list(map(float, _in_order(p, symbols))))) for p in points]
    return [tuple(round_to(p[s], dtype) for s in symbols) for p in points]


def _in_order(point: dict[sp.Symbol, Fraction | float], symbols: Sequence[sp.Symbol]) -> Iterable[Fraction | float]:
    """The point's values in ``symbols`` order: its own order when its keys are those symbols (a
    drawn point's are), which spares hashing every symbol (SymPy's hash is Python code)."""
    if len(point) == len(symbols) and all(map(operator.is_, point, symbols)):
        return point.values()
    return map(point.__getitem__, symbols)
