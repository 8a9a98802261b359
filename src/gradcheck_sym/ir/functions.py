"""The registry's function entries: each supported function is one call below.

`function(...)` registers a smooth function (exact value from a python-flint method, derivative
from SymPy, torch lowering, error rule from the derivative); `kink(...)` a function with corners,
which torch computes and the exact side rewrites to ``Piecewise``.  The tests iterate over the
registry, so a new entry is tested as soon as it is added.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, reduce
from typing import Any

import sympy as sp
from sympy.codegen import cfunctions as _cfunctions

from .ops import REGISTRY, ErrorPass, Lower, OpSpec, Parse, Partial, _float_rounding, register
from .program import Program


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


@lru_cache(maxsize=None)
def derivative_template(f: type, nargs: int, i: int) -> tuple[sp.Basic, tuple[sp.Dummy, ...], sp.Dummy]:
    """``∂f(d0, d1, ...)/∂di`` over dummies, with ``f(d...)`` itself replaced by ``value``."""
    ds = tuple(sp.Dummy(f"d{j}", real=True) for j in range(nargs))
    value = sp.Dummy("value", real=True)
    applied = f(*ds)
    return sp.diff(applied, ds[i]).xreplace({applied: value}), ds, value


def _sympy_partial(prog: Program, k: int, i: int) -> int:
    """SymPy's own derivative of the function, compiled over the node's slots."""
    from .compile import compile_into  # the compiler reads this registry

    spec = REGISTRY[prog.ops[k]]
    args = prog.args[k]
    template, ds, value = derivative_template(spec.sympy[0], len(args), i)
    leaves: dict[sp.Basic, int] = {d: a for d, a in zip(ds, args)}
    leaves[value] = k
    return compile_into(prog, template, leaves, rewrite_kinks=True)


def function(
    name: str,
    sympy_class: type,
    *,
    torch: Lower,
    arb: Callable[[list[Any], Any], Any],
    domain: Callable[[Any], bool | None] | None = None,
    partial: Partial = _sympy_partial,
    parse: Parse | None = None,
    ulps: float = 2.0,
    charge: Callable[[Any, Any], Any] | None = None,
    local_latex: Callable[[str, str], str] | None = None,
) -> OpSpec:
    """Register a smooth function: exact value from a python-flint method, derivative from SymPy
    (or ``partial``), torch lowering, error rule from the derivative.  Its own rounding is
    ``ulps · |result|`` in units of u, or ``charge(result, data)`` where torch's implementation
    is less accurate than that."""

    def exact(A: Any, xs: list[Any], data: Any) -> Any:
        return A.fn(spec, xs, data)

    def rounding(P: ErrorPass, k: int, args: tuple[int, ...], data: Any) -> None:
        r = torch(P.T, [P.v[a] for a in args], data, P.T.float64)
        _float_rounding(P, k, args, r, ulps * r if charge is None else charge(r, data))

    spec = register(OpSpec(
        name=name, exact=exact, torch=torch, rounding=rounding, partial=partial, sympy=(sympy_class,),
        parse=parse, arb=arb, domain=domain, ulps=ulps, function=True, transcendental=True,
        label=lambda d: name, local_latex=local_latex,
    ))
    return spec


def _unary(method: str) -> Lower:
    return lambda T, xs, d, dt: getattr(T, method)(xs[0])


def _arb(method: str) -> Callable[[list[Any], Any], Any]:
    return lambda xs, d: getattr(xs[0], method)()


LOCAL_LATEX: dict[str, Callable[[str, str], str]] = {  # how the report writes ∂c/∂x for c = f(x)
    "exp": lambda c, x: rf"\odot\, {c}",
    "log": lambda c, x: rf"\oslash\, {x}",
    "tanh": lambda c, x: rf"\odot\, (1 - {c}^{{2}})",
}

for _name, _cls, _domain in (
    ("exp", sp.exp, None), ("log", sp.log, _positive), ("sin", sp.sin, None), ("cos", sp.cos, None),
    ("tan", sp.tan, None), ("asin", sp.asin, _closed_unit), ("acos", sp.acos, _closed_unit),
    ("atan", sp.atan, None), ("sinh", sp.sinh, None), ("cosh", sp.cosh, None), ("tanh", sp.tanh, None),
    ("asinh", sp.asinh, None), ("acosh", sp.acosh, _at_least_one), ("atanh", sp.atanh, _open_unit),
    ("erf", sp.erf, None), ("erfc", sp.erfc, None),
):
    function(_name, _cls, torch=_unary(_name), arb=_arb(_name), domain=_domain, local_latex=LOCAL_LATEX.get(_name))

function("atan2", sp.atan2, torch=lambda T, xs, d, dt: T.atan2(xs[0], xs[1]),
         arb=lambda xs, d: type(xs[0]).atan2(xs[0], xs[1]))

# log(1 + x) and exp(x) - 1, accurate near 0 (SymPy spells them sympy.codegen.cfunctions.log1p/expm1).
def _above_minus_one(x: Any) -> bool | None:
    if x > -1:
        return True
    if x <= -1:
        return False
    return None


function("log1p", _cfunctions.log1p, torch=_unary("log1p"), arb=_arb("log1p"), domain=_above_minus_one)
function("expm1", _cfunctions.expm1, torch=_unary("expm1"), arb=_arb("expm1"))

# log Γ(x) for x > 0, where SymPy's loggamma is real; its derivatives are polygamma(n, x).
function("loggamma", sp.loggamma, torch=_unary("lgamma"), arb=_arb("lgamma"), domain=_positive)


def _parse_polygamma(node: sp.Basic) -> tuple[tuple[sp.Basic, ...], object] | None:
    n = node.args[0]
    if not (isinstance(n, sp.Integer) and n >= 0):
        return None  # a symbolic or negative order: refused as unsupported
    return (node.args[1],), int(n)


def _polygamma_arb(xs: list[Any], n: int) -> Any:
    from flint import acb

    return xs[0].digamma() if n == 0 else acb(xs[0]).polygamma(n).real


def _polygamma_charge(r: Any, n: int) -> Any:
    """What torch's polygamma is charged (measured against arb at 300 points in (0.05, 10)):
    digamma is a difference of terms of size about 1, so its error is a few u absolute, not
    relative, near its root x = 1.4616 (240 relative ulps seen in float32); trigamma is a short
    series, with relative errors up to 5e-10 in float64 (4e6 ulps); n >= 2 stays within 8 ulps."""
    if n == 0:
        return 4.0 * (r.abs() + 1.0)
    return (2.0**23 if n == 1 else 16.0) * r


function("polygamma", sp.polygamma, torch=lambda T, xs, n, dt: T.polygamma(n, xs[0]), arb=_polygamma_arb,
         domain=_positive, parse=_parse_polygamma, charge=_polygamma_charge,
         partial=lambda prog, k, i: prog.emit("polygamma", prog.args[k], int(prog.data[k]) + 1))


# ---------------------------------------------------------------------------------------------
# functions with corners or jumps: torch has them; the exact side rewrites them to Piecewise


def _ge(u: sp.Basic) -> sp.Basic:  # evaluate=False: SymPy raises on comparisons of non-reals
    return sp.GreaterThan(u, 0, evaluate=False)


def _gt(u: sp.Basic) -> sp.Basic:
    return sp.StrictGreaterThan(u, 0, evaluate=False)


def _lt(u: sp.Basic) -> sp.Basic:
    return sp.StrictLessThan(u, 0, evaluate=False)


def _heaviside_torch(T: Any, xs: list[Any], data: Any, dtype: Any) -> Any:
    # torch.heaviside has no derivative ("not implemented"); a where() chain does (zero).
    x, h0 = xs
    one = T.ones((), dtype=x.dtype)
    zero = T.zeros((), dtype=x.dtype)
    return T.where(x > 0, one, T.where(x < 0, zero, h0))


def _heaviside_rewrite(e: sp.Basic) -> sp.Basic:
    h0 = e.args[1] if len(e.args) > 1 else sp.Rational(1, 2)
    return sp.Piecewise((0, _lt(e.args[0])), (h0, sp.Eq(e.args[0], 0, evaluate=False)), (1, True))


def _parse_heaviside(node: sp.Basic) -> tuple[tuple[sp.Basic, ...], object]:
    return (node.args[0], node.args[1] if len(node.args) > 1 else sp.Rational(1, 2)), None


def kink(name: str, sympy_class: type, *, torch: Lower, rewrite: Callable[[sp.Basic], sp.Basic],
         parse: Parse | None = None) -> OpSpec:
    """Register a function with corners: the torch side calls it, the exact side never sees it."""

    def rounding(P: ErrorPass, k: int, args: tuple[int, ...], data: Any) -> None:
        raise AssertionError(f"`{name}` is rewritten to Piecewise before error analysis")

    def exact(A: Any, xs: list[Any], data: Any) -> Any:
        raise AssertionError(f"`{name}` is rewritten to Piecewise before exact evaluation")

    return register(OpSpec(name=name, exact=exact, torch=torch, rounding=rounding, sympy=(sympy_class,),
                           kink=rewrite, parse=parse, function=True, label=lambda d: name))


kink("Abs", sp.Abs, torch=_unary("abs"), rewrite=lambda e: sp.Piecewise((e.args[0], _ge(e.args[0])), (-e.args[0], True)))
kink("sign", sp.sign, torch=_unary("sign"),
     rewrite=lambda e: sp.Piecewise((1, _gt(e.args[0])), (-1, _lt(e.args[0])), (0, True)))
kink("Max", sp.Max, torch=lambda T, xs, d, dt: reduce(T.maximum, xs), rewrite=lambda e: e.rewrite(sp.Piecewise))
kink("Min", sp.Min, torch=lambda T, xs, d, dt: reduce(T.minimum, xs), rewrite=lambda e: e.rewrite(sp.Piecewise))
kink("Heaviside", sp.Heaviside, torch=_heaviside_torch, rewrite=_heaviside_rewrite, parse=_parse_heaviside)


