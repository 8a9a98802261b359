"""Errors, ulps, the tolerance rule, verdicts and attribution.

**The tolerance rule** (applied by `checks.compare`, on arrays: its one implementation).  For a
quantity with exact value ``e`` in a dtype with unit roundoff ``u``, a source's value ``v``
agrees when ``|v − e| ≤ T``:

* for code we cannot see (impl, grad_impl),
  ``T = max(SENSITIVITY_FACTOR · u · S, FLOOR_ULPS · ulp(e))`` with ``S = Σⱼ |∂gᵢ/∂xⱼ|·|xⱼ|``, what
  rounding every input by u does to the exact gradient: a property of the function, not of how
  it is declared (from the exact Hessian up to `SENSITIVITY_MAX_VARIABLES` variables, column by
  column above, while that costs under `SENSITIVITY_MAX_WORK`);
* otherwise (and for autograd, the declared formula evaluated by torch, at least that) the
  declared program's running-error sizes ``E`` (worst case) and ``σ`` (probable) from `errorbound`:
  ``max( min(WORST_FACTOR · u · E,  PROBABLE_FACTOR · u · σ),  FLOOR_ULPS · ulp(e) )``.

Beyond ``T`` but within ``T + IMPRECISE_FACTOR · u · X`` (``X``: `errorbound.ErrorScales.explained`,
rounding the values a gradient is computed from) is **imprecise**; an agreement whose ``T`` exceeds
``INCONCLUSIVE_FRACTION · |e|`` is **inconclusive**, as is autograd disagreeing where the declared
formula is not computable in the dtype (`checks.bands`).

**Attribution.**  The exact value is the judge; finite differences (FD) of the same forward tell
*why* a source disagrees:

* source ≠ exact, FD ≈ exact: the source's gradient is **wrong** (its backward);
* source ≠ exact, FD ≈ source ≠ exact: the forward does not compute the declared model
  (**forward_mismatch**);
* FD ≠ exact while the source agrees: FD **noise** (truncation or rounding), not a bug.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from flint import arb, fmpq

from .dtypes import DTYPES

UNIT_ROUNDOFF = {name: d.unit_roundoff for name, d in DTYPES.items()}
MANTISSA_BITS = {name: d.mantissa_bits for name, d in DTYPES.items()}
MIN_EXPONENT = {name: d.min_exponent for name, d in DTYPES.items()}
WORST_FACTOR = 2.0  # observed errors stay below 0.4 E: head-room for other evaluation orders
PROBABLE_FACTOR = 8.0  # observed errors stay below 1.4 σ: eight standard deviations
FLOOR_ULPS = 4.0
FALLBACK_ULPS = 64.0  # where the error analysis itself overflows (a pole of the declared order)
FD_SIGMAS = 3.0  # FD agrees when within this many of its own error estimates
SENSITIVITY_FACTOR = 8.0  # times u·Σⱼ|∂gᵢ/∂xⱼ|·|xⱼ|: rounding every input and summand by u (a careful implementation)
SENSITIVITY_MAX_VARIABLES = 24  # the exact Hessian behind it is computed for models up to this many variables
SENSITIVITY_MAX_WORK = 3e8  # above: variables × instructions × points of its column-by-column form (mlp-193:
#   234 × 3722 × 344 points, about 35 s measured), the declared program's bound is used instead, with a note
IMPRECISE_FACTOR = 1.0  # times the explained bound (`errorbound.ErrorScales.explained`)
INCONCLUSIVE_FRACTION = 0.5  # a tolerance above this fraction of |exact| cannot resolve the value

VERDICTS = ("agree", "mismatch", "nondifferentiable", "undefined", "imprecise", "inconclusive")
FAILING = ("mismatch",)  # verdicts that fail a model; with `strict` also "imprecise" and "inconclusive"
STRICT_FAILING = ("mismatch", "imprecise", "inconclusive")


def failing(strict: bool = False) -> tuple[str, ...]:
    """The verdicts that fail a model.

    >>> failing(), failing(strict=True)
    (('mismatch',), ('mismatch', 'imprecise', 'inconclusive'))
    """
    return STRICT_FAILING if strict else FAILING


def ulp(x: float, dtype: str) -> float:
    """Spacing of ``dtype`` floats at ``|x|`` (the smallest subnormal spacing at 0).

    >>> ulp(1.0, "float32") == 2.0**-23
    True
    """
    x = abs(x)
    if not math.isfinite(x):
        return math.inf
    emin = MIN_EXPONENT[dtype]
    e = math.frexp(x)[1] - 1 if x else emin
    return 2.0 ** (max(e, emin) - MANTISSA_BITS[dtype])


def error_scale(worst: Any, probable: Any) -> Any:
    """The rounding-error size the tolerance allows, in units of ``u`` (the rule above); floats
    or tensors of them."""
    a, b = WORST_FACTOR * worst, PROBABLE_FACTOR * probable
    return a.minimum(b) if hasattr(a, "minimum") else min(a, b)


def as_float(x: Any) -> float:
    """Nearest float64 of an exact value (fmpq, or the midpoint of an arb ball)."""
    if isinstance(x, arb):
        return float(x.mid())
    if isinstance(x, fmpq):
        return int(x.p) / int(x.q) if abs(x.p) < 2**1000 and x.q < 2**1000 else float(arb(x))
    return float(x)


def exact_text(x: Any, digits: int = 25) -> str:
    """The exact value as text: a fraction when short, else a decimal ball or enclosure."""
    if isinstance(x, fmpq):
        if int(x.p).bit_length() + int(x.q).bit_length() > 400:  # printing a huge fraction takes minutes
            return arb(x).str(digits, radius=False) + "…"
        s = str(x)
        return s if len(s) <= 60 else arb(x).str(digits, radius=False) + "…"
    if isinstance(x, arb):
        return x.str(digits)
    return repr(x)


def split(x: Any) -> tuple[float, float]:
    """An exact value as an unevaluated sum hi + lo of two floats (about 106 bits): enough to
    measure the error of any float64 value exactly to within a unit in its last place."""
    if isinstance(x, arb):
        mid = x.mid()
        hi = float(mid)
        return hi, float(mid - hi) if math.isfinite(hi) else 0.0
    if isinstance(x, fmpq):
        hi = as_float(x)
        return hi, as_float(x - fmpq(*Fraction(hi).as_integer_ratio())) if math.isfinite(hi) else 0.0
    return float(x), 0.0
