"""The verdict on one derivative torch returned, against the exact value: the audit's bands.

With ``e`` the exact value, ``r`` it rounded to the dtype, ``v`` torch's value, ``ulp`` the
dtype's spacing at ``r`` (the subnormal spacing at and below the smallest normal, so tiny values
are compared absolutely) and ``S`` the first-order rounding-error bound of torch's own backward
formula at that point (`exact.rounding_bound`):

1. **agree**: ``|v − e| ≤ 4 ulp`` (or both are the same infinity: the exact value overflows).
2. **mismatch**: ``v`` is NaN or infinite where ``e`` rounds to a finite value.
3. **imprecise** (underflow): the exact value is below the dtype's smallest normal ``N`` and
   ``|v − e| ≤ N``: a derivative in the subnormal range lost or flushed (``1/(1 + x²)`` once
   ``x²`` overflows; the two happen together, since ``N ≈ 1/max``) is a precision loss of gradual
   underflow, not a wrong gradient.
4. **imprecise**: ``|v − e| ≤ 2·S + I + 4 ulp``: beyond a careful implementation, but explained by
   rounding the values torch's backward formula computes from (the saved output ``out`` in
   ``out·(1 − out)``, ``1 − out²``, ``x²`` inside ``exp(−x²)``) or by rounding its inputs by half an
   ulp (``I = Σ |x_b|·u·|∂_b e|``).  This holds even where all digits are lost: ``tanh'(−30)``
   computed as ``1 − y²`` returns 0 for 3.5e-26, far below the rounding of ``y ≈ −1``.  It never
   covers an error as large as the quantities the formula reads: those are beyond ``S``.
5. **mismatch** otherwise: an error no rounding of that formula explains.

Where no rounding bound for what torch computes is known or can be evaluated (``bounded=False``, a
bound that is not finite), a finite value is **imprecise**: only NaN/inf are claimed.

A forward value (not a derivative) beyond 4 ulp is **imprecise** unless all its digits are lost (0,
the wrong sign: a mismatch): there is no backward formula to explain it.

A point where the exact derivative does not exist is **undefined** (outside the domain, a pole),
or **nondifferentiable** at a corner, where torch's value must lie between the two one-sided
derivatives (a subgradient; NaN or outside is a mismatch) and the side it picks is recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

AGREE_ULPS = 4.0  # what a careful implementation achieves
EXPLAINED_FACTOR = 2.0  # slack on the first-order bound of the backward formula's rounding


@dataclass(frozen=True)
class Band:
    verdict: str  # "agree" | "imprecise" | "mismatch"
    ulps: float  # |v − e| / ulp
    why: str  # in words, for the report


def band(value: float, exact: float, rounded: float, abs_error: float, ulp: float, explained: float | None,
         quantity: str = "grad", sensitivity: float | None = None, tiny: float = 0.0, bounded: bool = True) -> Band:
    """The band of torch's ``value`` against the exact value ``exact`` (nearest float64),
    ``rounded`` (nearest value of the dtype), ``abs_error`` = |value − exact| computed exactly,
    ``ulp`` the dtype's spacing at ``rounded``, ``explained`` the rounding bound S of torch's
    formula (None: not computed yet; the caller computes it only when needed), ``tiny`` the
    dtype's smallest normal value.

    >>> band(0.0, 4.2e-18, 4.2e-18, 4.2e-18, 7.7e-34, 1.1e-16).verdict   # sigmoid'(40) returned as 0
    'imprecise'
    >>> band(0.0, 0.25, 0.25, 0.25, 5.6e-17, 1e-17).verdict   # a derivative lost that rounding cannot explain
    'mismatch'
    """
    if math.isnan(value) or math.isinf(value):
        if value == rounded:
            return Band("agree", 0.0, "the exact value overflows the dtype too")
        return Band("mismatch", math.inf, f"{_fmt(value)} where the exact value is {_fmt(exact)}")
    if math.isinf(rounded):
        return Band("mismatch", math.inf, f"finite {value!r} where the exact value overflows the dtype")
    ulps = abs_error / ulp
    if ulps <= AGREE_ULPS:
        return Band("agree", ulps, "")
    if abs(rounded) < tiny and abs_error <= tiny:
        return Band("imprecise", ulps, f"the exact value {_fmt(exact)} is below the smallest normal {_fmt(tiny)}: "
                    "lost to underflow")
    lost = abs_error >= abs(exact) * (1 - 2**-40)  # (the error is computed to more bits than the value)
    what = "0" if value == 0 else ("the wrong sign" if value * exact < 0 else "an error as large as the value")
    if quantity == "loss":  # a forward value: no backward formula to explain it; reported, never a failure
        if lost:
            return Band("mismatch", ulps, f"returns {what} where the exact value {_fmt(exact)} is representable")
        return Band("imprecise", ulps, f"forward value off by more than {AGREE_ULPS:g} ulp")
    if explained is not None and not math.isfinite(explained):  # the bound could not be evaluated here
        bounded = False
    if not bounded:  # no bound for what torch computes: only NaN/inf (above) is claimed
        return Band("imprecise", ulps, "no rounding bound for torch's formula could be evaluated here: reported, "
                    "not claimed as a wrong derivative")
    bound = EXPLAINED_FACTOR * (explained or 0.0) + (sensitivity or 0.0) + AGREE_ULPS * ulp
    if (explained is not None or sensitivity is not None) and abs_error <= bound:
        if lost:
            return Band("imprecise", ulps, f"returns {what} where the exact derivative is {_fmt(exact)}, far below what "
                        f"rounding the values torch's formula reads explains ({_fmt(bound)}): the formula cannot "
                        "resolve it")
        return Band("imprecise", ulps, f"explained by rounding in torch's formula (bound {_fmt(bound)})")
    if lost:
        return Band("mismatch", ulps, f"returns {what} where the exact derivative {_fmt(exact)} is representable"
                    + (f", beyond what rounding in torch's formula explains ({_fmt(bound)})" if explained is not None else ""))
    return Band("mismatch", ulps, "beyond what rounding in torch's formula explains"
                + (f" (bound {_fmt(bound)})" if explained is not None else ""))


def needs_explanation(value: float, rounded: float, abs_error: float, ulp: float, exact: float) -> bool:
    """Whether the band depends on the rounding bound (so it is worth computing)."""
    if not math.isfinite(value) or math.isinf(rounded):
        return False
    return abs_error / ulp > AGREE_ULPS


def corner_band(value: float, left: float, right: float, tol: float) -> tuple[str, str]:
    """At a corner: (verdict, torch's convention in words); ``tol`` is how close to a one-sided
    value counts as picking it (a few ulps: the constants are rounded to the dtype)."""
    lo, hi = min(left, right), max(left, right)
    if math.isnan(value):
        return "mismatch", "NaN"
    if abs(value - left) <= tol:
        return "nondifferentiable", f"left ({_fmt(value)})"
    if abs(value - right) <= tol:
        return "nondifferentiable", f"right ({_fmt(value)})"
    if lo <= value <= hi:
        return "nondifferentiable", f"between ({_fmt(value)})"
    return "mismatch", f"outside [{_fmt(lo)}, {_fmt(hi)}] ({_fmt(value)})"


def _fmt(v: float | None) -> str:
    if v is None:
        return "?"
    return f"{v:.6g}"
