"""The four float formats the audit covers, read from `torch.finfo`, and exact rounding to them.

Every value of these formats is a float64, so points and torch's results are carried as Python
floats; `round_to` rounds a float64 to the format (round to nearest, ties to even, gradual
underflow, overflow to ±inf) without torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

DTYPES = ("float64", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class FloatFormat:
    name: str  # "float32"
    p: int  # significand bits, the implicit one included (53, 24, 8, 11)
    max: float  # largest finite value
    tiny: float  # smallest normal value
    sub_exp: int  # log2 of the smallest subnormal value (-1074, -149, -133, -24)

    @property
    def u(self) -> float:
        """Unit roundoff, 2^-p."""
        return math.ldexp(1.0, -self.p)

    @property
    def eps(self) -> float:
        return math.ldexp(1.0, 1 - self.p)

    @property
    def subnormal(self) -> float:
        """The smallest positive (subnormal) value."""
        return math.ldexp(1.0, self.sub_exp)


@cache
def fmt(name: str) -> FloatFormat:
    """The format of a dtype name, from torch.finfo."""
    import torch

    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose from {', '.join(DTYPES)}")
    fi = torch.finfo(getattr(torch, name))
    p = 1 - round(math.log2(fi.eps))
    tiny = float(fi.smallest_normal)
    return FloatFormat(name=name, p=p, max=float(fi.max), tiny=tiny, sub_exp=round(math.log2(tiny)) - (p - 1))


def round_to(v: float, f: FloatFormat) -> float:
    """``v`` rounded to the nearest value of format ``f`` (ties to even; ±inf beyond its range).

    >>> round_to(1 + 2**-30, fmt("float32")), round_to(1e39, fmt("float32"))
    (1.0, inf)
    """
    if v == 0 or not math.isfinite(v):
        return v
    _, e = math.frexp(v)  # |v| in [2^(e-1), 2^e)
    q = max(e - f.p, f.sub_exp)
    r = math.ldexp(round(math.ldexp(v, -q)), q)
    if abs(r) > f.max:
        return math.copysign(math.inf, v)
    return r


def ulp(v: float, f: FloatFormat) -> float:
    """The spacing of format ``f`` at ``v`` (the subnormal spacing at and below the smallest
    normal; at ±inf, the spacing just below the largest finite value)."""
    if not math.isfinite(v):
        v = f.max
    if v == 0:
        return f.subnormal
    _, e = math.frexp(v)
    return math.ldexp(1.0, max(e - f.p, f.sub_exp))


def neighbours(v: float, f: FloatFormat, k: int) -> list[float]:
    """``v`` and the ``k`` values of format ``f`` on each side of it (finite ones only)."""
    out = [v]
    lo = hi = v
    for _ in range(k):
        lo = round_to(lo - ulp(lo, f) * (0.5 if _at_power_below(lo, f) else 1), f)
        hi = round_to(hi + ulp(hi, f) * (0.5 if _at_power_below(-hi, f) else 1), f)
        out += [x for x in (lo, hi) if math.isfinite(x)]
    return out


def _at_power_below(v: float, f: FloatFormat) -> bool:
    """Whether stepping down from positive ``v`` crosses a binade (the spacing halves there)."""
    if v <= f.tiny:
        return False
    m, _ = math.frexp(v)
    return m == 0.5
