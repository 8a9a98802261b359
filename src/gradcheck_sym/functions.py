"""The table of supported functions: one row per SymPy function, as data.

Each row says how the function is computed in every place gradcheck_sym needs it:

* ``torch``: the name of the torch function the generated forward uses (`torch_codegen` resolves
  it; SymPy's own torch printer gets ``Max``, ``Min``, ``Heaviside`` and ``Piecewise`` wrong on
  tensors, and the rows naming ``maximum``, ``minimum`` and ``heaviside`` are the fix; every row
  is exercised by ``tests/test_torch_codegen.py``);
* ``arb``: the name of the python-flint ball method for the certified reference;
* ``math``: the float64 function for the rounding-error estimate;
* ``domain``: where the function is real and finite, so a point outside it is reported as
  *undefined* instead of producing NaN;
* ``kink``: functions with corners or jumps (``Abs``, ``Max``, ...) are rewritten to
  ``Piecewise`` for the exact side, so that one mechanism finds non-differentiable points.

To support a new function, add a row here; the tests iterate over this table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sympy as sp


def _math(f: Callable[..., float]) -> Callable[..., float]:
    """A float function that returns NaN/inf where the math module would raise."""

    def safe(*xs: float) -> float:
        try:
            return f(*xs)
        except (ValueError, ZeroDivisionError):
            return math.nan
        except OverflowError:
            return math.inf

    return safe


# domain predicates take a python-flint arb and answer True (inside), False (outside) or None
# (cannot tell at this precision).
def _positive(x: Any) -> bool | None:
    if x > 0:
        return True
    if x <= 0:
        return False
    return None


def _closed_unit(x: Any) -> bool | None:
    if x >= -1 and x <= 1:
        return True
    if x < -1 or x > 1:
        return False
    return None


def _open_unit(x: Any) -> bool | None:
    if x > -1 and x < 1:
        return True
    if x <= -1 or x >= 1:
        return False
    return None


def _at_least_one(x: Any) -> bool | None:
    if x >= 1:
        return True
    if x < 1:
        return False
    return None


@dataclass(frozen=True, kw_only=True)
class FunctionSpec:
    """How one SymPy function is evaluated by each part of gradcheck_sym."""

    name: str  # the SymPy name users write
    torch: str  # the generated forward's operation, by name (see torch_codegen.TORCH_SPECIAL)
    arb: str | None = None  # certified ball evaluation, an arb method (None: rewritten first)
    math: Callable[..., float] | None = None  # float64 evaluation for error estimates
    domain: Callable[[Any], bool | None] | None = None  # None: every real number
    kink: bool = False  # corners or jumps: rewritten to Piecewise for the exact side


FUNCTIONS: dict[type, FunctionSpec] = {
    sp.exp: FunctionSpec(name="exp", torch="exp", arb="exp", math=_math(math.exp)),
    sp.log: FunctionSpec(
        name="log", torch="log", arb="log", math=_math(math.log), domain=_positive
    ),
    sp.sin: FunctionSpec(name="sin", torch="sin", arb="sin", math=_math(math.sin)),
    sp.cos: FunctionSpec(name="cos", torch="cos", arb="cos", math=_math(math.cos)),
    sp.tan: FunctionSpec(name="tan", torch="tan", arb="tan", math=_math(math.tan)),
    sp.asin: FunctionSpec(
        name="asin", torch="asin", arb="asin", math=_math(math.asin),
        domain=_closed_unit,
    ),
    sp.acos: FunctionSpec(
        name="acos", torch="acos", arb="acos", math=_math(math.acos),
        domain=_closed_unit,
    ),
    sp.atan: FunctionSpec(
        name="atan", torch="atan", arb="atan", math=_math(math.atan)
    ),
    sp.sinh: FunctionSpec(
        name="sinh", torch="sinh", arb="sinh", math=_math(math.sinh)
    ),
    sp.cosh: FunctionSpec(
        name="cosh", torch="cosh", arb="cosh", math=_math(math.cosh)
    ),
    sp.tanh: FunctionSpec(
        name="tanh", torch="tanh", arb="tanh", math=_math(math.tanh)
    ),
    sp.asinh: FunctionSpec(
        name="asinh", torch="asinh", arb="asinh", math=_math(math.asinh)
    ),
    sp.acosh: FunctionSpec(
        name="acosh", torch="acosh", arb="acosh", math=_math(math.acosh),
        domain=_at_least_one,
    ),
    sp.atanh: FunctionSpec(
        name="atanh", torch="atanh", arb="atanh", math=_math(math.atanh),
        domain=_open_unit,
    ),
    sp.erf: FunctionSpec(name="erf", torch="erf", arb="erf", math=_math(math.erf)),
    sp.erfc: FunctionSpec(
        name="erfc", torch="erfc", arb="erfc", math=_math(math.erfc)
    ),
    sp.atan2: FunctionSpec(
        name="atan2", torch="atan2", arb="atan2", math=_math(math.atan2)
    ),
    # Functions with corners or jumps: exact side rewrites them to Piecewise.
    sp.Abs: FunctionSpec(name="Abs", torch="abs", kink=True),
    sp.sign: FunctionSpec(name="sign", torch="sign", kink=True),
    sp.Max: FunctionSpec(name="Max", torch="maximum", kink=True),
    sp.Min: FunctionSpec(name="Min", torch="minimum", kink=True),
    sp.Heaviside: FunctionSpec(name="Heaviside", torch="heaviside", kink=True),
}

# Written by users but not functions in SymPy's sense; listed so error messages can name them.
STRUCTURAL = ("+", "-", "*", "/", "** (any real power, sqrt)", "Piecewise", "pi", "E")


def supported_names() -> list[str]:
    """The function names a model may use, for error messages and the README."""
    return sorted(spec.name for spec in FUNCTIONS.values()) + list(STRUCTURAL)


def rewrite_kink(expr: sp.Basic) -> sp.Basic:
    """`Abs`, `sign`, `Max`, `Min` and `Heaviside` as an equivalent `Piecewise`.

    >>> x = sp.Symbol("x", real=True)
    >>> rewrite_kink(sp.Abs(x))
    Piecewise((x, x >= 0), (-x, True))
    """
    f = type(expr)
    a = expr.args
    # evaluate=False: SymPy would raise on a comparison it can prove is between non-reals
    ge = lambda u: sp.GreaterThan(u, 0, evaluate=False)  # noqa: E731
    gt = lambda u: sp.StrictGreaterThan(u, 0, evaluate=False)  # noqa: E731
    lt = lambda u: sp.StrictLessThan(u, 0, evaluate=False)  # noqa: E731
    if f is sp.Abs:
        return sp.Piecewise((a[0], ge(a[0])), (-a[0], True))
    if f is sp.sign:
        return sp.Piecewise((1, gt(a[0])), (-1, lt(a[0])), (0, True))
    if f is sp.Heaviside:
        h0 = a[1] if len(a) > 1 else sp.Rational(1, 2)
        return sp.Piecewise((0, lt(a[0])), (h0, sp.Eq(a[0], 0, evaluate=False)), (1, True))
    if f in (sp.Max, sp.Min):
        return expr.rewrite(sp.Piecewise)
    raise AssertionError(f"not a kink function: {f}")
