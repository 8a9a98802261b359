"""The registry's function entries: each supported function is one call below.

`function(...)` registers a smooth function (exact value from a python-flint method, derivative
from SymPy, torch lowering, error rule from the derivative); `kink(...)` a function with corners,
which torch computes and the exact side rewrites to ``Piecewise``.  The tests iterate over the
registry, so a new entry is tested as soon as it is added.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache, reduce
from typing import Any

import sympy as sp
from flint import arb, arb_series, fmpq
from sympy.codegen import cfunctions as _cfunctions

from ..arith import Balls, NeedPrecision, NotRational, Rationals
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
    sympy_class: type | tuple[type, ...] | None,
    *,
    torch: Lower,
    arb: Callable[[list[Any], Any], Any] | None,
    domain: Callable[[Any], bool | None] | None = None,
    partial: Partial = _sympy_partial,
    parse: Parse | None = None,
    ulps: float = 2.0,
    charge: Callable[[Any, list[Any], Any], Any] | None = None,
    local_latex: Callable[[str, str], str] | None = None,
    exact: Callable[[Any, list[Any], Any], Any] | None = None,
    user: bool = True,
    transcendental: bool = True,
    label: Callable[[Any], str] | None = None,
    first: bool = False,
    accuracy: Callable[[Any], float] | None = None,
) -> OpSpec:
    """Register a smooth function: exact value from a python-flint method (or ``exact``),
    derivative from SymPy (or ``partial``), torch lowering, error rule from the derivative.  Its
    own rounding is ``ulps · |result|`` in units of u, or ``charge(result, arguments, data)`` where
    torch's implementation is less accurate than that.  ``user=False``: an op that only derivatives
    emit (not a function users call; ``sympy_class`` None); ``first``: tried before the other
    entries of its SymPy class (a pattern such as ``log(1 + exp(u))``); ``accuracy(data)``: a
    relative error torch's implementation has in every dtype (a truncated series), charged as
    ``accuracy/u`` units of u, so that it counts in float64 and vanishes in float32."""

    def by_arb(A: Any, xs: list[Any], data: Any) -> Any:
        return A.fn(spec, xs, data)

    def rounding(P: ErrorPass, k: int, args: tuple[int, ...], data: Any) -> None:
        xs = [P.v[a] for a in args]
        r = torch(P.T, xs, data, P.T.float64)
        own = ulps * r if charge is None else charge(r, xs, data)
        if accuracy is not None:
            own = abs(own) + (accuracy(data) / P.u) * abs(r)
        _float_rounding(P, k, args, r, own)

    classes = () if sympy_class is None else sympy_class if isinstance(sympy_class, tuple) else (sympy_class,)
    spec = register(OpSpec(
        name=name, exact=exact or by_arb, torch=torch, rounding=rounding, partial=partial, sympy=classes,
        parse=parse, arb=arb, domain=domain, ulps=ulps, function=user, transcendental=transcendental,
        label=label or (lambda d: name), local_latex=local_latex, accuracy=accuracy,
    ), first=first)
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


def _polygamma_charge(r: Any, xs: list[Any], n: int) -> Any:
    """What torch's polygamma is charged (measured against arb at 300 points in (0.05, 10)):
    digamma is a difference of terms of size about 1, so its error is a few u absolute, not
    relative, near its root x = 1.4616 (240 relative ulps seen in float32); n >= 1 within 16 ulps,
    besides trigamma's truncated series (`_polygamma_accuracy`)."""
    if n == 0:
        return 4.0 * (r.abs() + 1.0)
    return 16.0 * r


def _polygamma_accuracy(n: int) -> float:
    """torch's trigamma is a short asymptotic series after six recurrence steps: relative errors up
    to 5e-10 whatever the dtype (4e6 ulps of float64, 0.01 of float32's); charged at 1e-9."""
    return 1e-9 if n == 1 else 0.0


function("polygamma", sp.polygamma, torch=lambda T, xs, n, dt: T.polygamma(n, xs[0]), arb=_polygamma_arb,
         domain=_positive, parse=_parse_polygamma, charge=_polygamma_charge, accuracy=_polygamma_accuracy,
         partial=lambda prog, k, i: prog.emit("polygamma", prog.args[k], int(prog.data[k]) + 1))


# erfinv on (-1, 1): SymPy's derivative sqrt(pi)/2 · exp(erfinv(x)²) compiles to registry ops.
function("erfinv", sp.erfinv, torch=lambda T, xs, d, dt: T.special.erfinv(xs[0]), arb=_arb("erfinv"),
         domain=_open_unit, ulps=4.0)


# ---------------------------------------------------------------------------------------------
# softplus: log(1 + exp(u)) and log1p(exp(u)), recognised in the declaration (`special.softplus`)
# and evaluated as one function: exactly, and in torch as logaddexp(0, u), which neither overflows
# for large u (exp(u) does above 88 in float32) nor loses the tail for very negative u.


def _parse_softplus(node: sp.Basic) -> tuple[tuple[sp.Basic, ...], object] | None:
    arg = node.args[0]
    if isinstance(node, _cfunctions.log1p):
        return ((arg.args[0],), None) if isinstance(arg, sp.exp) else None
    if isinstance(arg, sp.Add) and len(arg.args) == 2 and sp.S.One in arg.args:
        other = arg.args[1] if arg.args[0] is sp.S.One else arg.args[0]
        if isinstance(other, sp.exp):
            return (other.args[0],), None
    return None


def _softplus_partial(prog: Program, k: int, i: int) -> int:
    """The sigmoid, as exp(u - softplus(u)): no overflow at either end."""
    u = prog.args[k][0]
    minus = prog.emit("mul", (prog.emit("const", (), sp.Integer(-1)), k))
    return prog.emit("exp", (prog.emit("add", (u, minus)),))


function("softplus", (sp.log, _cfunctions.log1p), first=True, parse=_parse_softplus, partial=_softplus_partial,
         torch=lambda T, xs, d, dt: T.logaddexp(T.zeros_like(xs[0]), xs[0]), arb=lambda xs, d: xs[0].exp().log1p(),
         ulps=4.0)


# ---------------------------------------------------------------------------------------------
# xlogy / xlog1py (`special.xlogy`, `special.xlog1py`): x·log(y) and x·log(1 + y), 0 where x = 0
# whatever y (torch's semantics).  ∂/∂x is log(y) (log1p(y)), undefined where y <= 0 (y <= -1),
# also at x = 0; ∂/∂y is `xdivy`: x/y (x/(1 + y)), 0 where x = 0 whatever y.


def _ball_zero(x: Any) -> bool | None:
    """True: exactly 0; False: surely not 0; None: cannot tell at this precision."""
    if x.is_zero():
        return True
    return None if 0 in x else False


def _xlog_exact(log: str, inside: Callable[[Any], bool | None]) -> Callable[[Any, list[Any], Any], Any]:
    def exact(A: Any, xs: list[Any], data: Any) -> Any:
        x, y = xs
        if isinstance(A, Rationals):
            if x == 0 or y == (1 if log == "log" else 0):
                return fmpq(0)
            raise NotRational
        if not (x.is_finite() and y.is_finite()):
            return A.nan()
        zero = _ball_zero(x)
        if zero:
            return arb(0)
        where = inside(y)
        if where is True:
            return x * getattr(y, log)()
        if where is False and zero is False:
            return A.nan()
        if A.final:
            return A.nan()
        raise NeedPrecision

    return exact


def _xdivy_exact(A: Any, xs: list[Any], data: Any) -> Any:
    x, y = xs
    if isinstance(A, Rationals):
        if x == 0:
            return fmpq(0)
        if y == 0:
            raise NotRational  # undefined: balls say NaN
        return x / y
    if not (x.is_finite() and y.is_finite()):
        return A.nan()
    if _ball_zero(x):
        return arb(0)
    zero = _ball_zero(y)
    if zero is False:
        return x / y
    if zero or A.final:
        return A.nan()
    raise NeedPrecision


def _xdivy_torch(T: Any, xs: list[Any], data: Any, dtype: Any) -> Any:
    x, y = xs
    zero = x == 0
    return T.where(zero, T.zeros((), dtype=x.dtype), x / T.where(zero, T.ones((), dtype=y.dtype), y))


def _xdivy_partial(prog: Program, k: int, i: int) -> int:
    x, y = prog.args[k]
    if i == 0:
        return prog.emit("pow", (y,), sp.Integer(-1))
    minus = prog.emit("const", (), sp.Integer(-1))
    return prog.emit("mul", (minus, prog.emit("xdivy", (x, prog.emit("pow", (y,), sp.Integer(2))))))


function("xdivy", None, user=False, transcendental=False, exact=_xdivy_exact, torch=_xdivy_torch, arb=None,
         partial=_xdivy_partial, ulps=1.0, label=lambda d: "x/y")


def _xlogy_partial(log: str) -> Partial:
    def partial(prog: Program, k: int, i: int) -> int:
        x, y = prog.args[k]
        if i == 0:
            return prog.emit(log, (y,))
        if log == "log":
            return prog.emit("xdivy", (x, y))
        return prog.emit("xdivy", (x, prog.emit("add", (prog.emit("const", (), sp.Integer(1)), y))))

    return partial


from ..special import normalized_sinc, xlog1py, xlogy  # noqa: E402 - the SymPy classes users declare with

function("xlogy", xlogy, exact=_xlog_exact("log", _positive), arb=lambda xs, d: xs[0] * xs[1].log(), partial=_xlogy_partial("log"),
         torch=lambda T, xs, d, dt: T.special.xlogy(xs[0], xs[1]), ulps=3.0)
function("xlog1py", xlog1py, exact=_xlog_exact("log1p", _above_minus_one), arb=lambda xs, d: xs[0] * xs[1].log1p(),
         partial=_xlogy_partial("log1p"), torch=lambda T, xs, d, dt: T.special.xlog1py(xs[0], xs[1]), ulps=3.0)


# ---------------------------------------------------------------------------------------------
# sinc: SymPy's `sinc` (sin(x)/x) and torch's normalised one (`special.normalized_sinc`,
# sin(πx)/(πx)).  Each is one op whose data is the derivative order n (0 as declared), so that
# derivatives of every order are exact at 0 too (sin(x)/x's derivative is 0/0 there): n-th
# derivatives from python-flint's power series, their float forms from the Taylor series near 0
# and Leibniz's rule elsewhere.


def _sinc_arb(x: Any, n: int) -> Any:
    """The n-th derivative of sin(x)/x at the ball x."""
    if n == 0:
        return x.sinc()
    if x.is_zero():  # Taylor: sinc⁽²ᵏ⁾(0) = (-1)ᵏ/(2k + 1), odd orders 0
        return arb(0) if n % 2 else arb((-1) ** (n // 2)) / (n + 1)
    if 0 in x:
        return arb.nan()  # the caller raises the precision
    s = arb_series([x, 1], prec=n + 1)
    coeffs = (s.sin() / s).coeffs()
    return (coeffs[n] if n < len(coeffs) else arb(0)) * math.factorial(n)


def _sinc_float(T: Any, x: Any, n: int) -> Any:
    """The n-th derivative of sin(x)/x in x's float type: Taylor for |x| < 1, Leibniz's rule on
    sin(x)·x⁻¹ elsewhere (both branches computed on safe inputs: no NaN flows back)."""
    small = x.abs() < 1
    one = T.ones((), dtype=x.dtype)
    xs = T.where(small, one, x)
    if n == 0:
        near = T.where(x == 0, one, T.sin(T.where(x == 0, one, x)) / T.where(x == 0, one, x))
        return T.where(small, near, T.sin(xs) / xs)
    xt = T.where(small, x, T.zeros((), dtype=x.dtype))
    taylor = T.zeros_like(x)
    for m in range(n + 40, n - 1, -1):  # smallest terms first
        if m % 2 == 0:
            taylor = taylor + ((-1) ** (m // 2) / ((m + 1) * math.factorial(m - n))) * xt ** (m - n)
    far = T.zeros_like(x)
    for j in range(n + 1):
        far = far + (math.comb(n, j) * (-1) ** (n - j) * math.factorial(n - j)) * T.sin(xs + j * math.pi / 2) / xs ** (n - j + 1)
    return T.where(small, taylor, far)


class _SincN:
    """torch.autograd.Function for the n-th derivative of sin(x)/x, differentiable again (its
    backward is the next order), so torch's double backward of the declared sinc is right at 0."""

    cls: Any = None

    @classmethod
    def get(cls) -> Any:
        if cls.cls is None:
            import torch

            class SincN(torch.autograd.Function):
                @staticmethod
                def forward(ctx: Any, x: Any, n: int) -> Any:
                    ctx.save_for_backward(x)
                    ctx.n = n
                    return _sinc_float(torch, x, n)

                @staticmethod
                def backward(ctx: Any, g: Any) -> Any:
                    (x,) = ctx.saved_tensors
                    return g * SincN.apply(x, ctx.n + 1), None  # type: ignore[no-untyped-call]

            cls.cls = SincN
        return cls.cls


def _sinc_torch(T: Any, xs: list[Any], n: int, dtype: Any) -> Any:
    return _SincN.get().apply(xs[0], n)  # the class is built on first use: torch is imported then


def _nsinc_torch(T: Any, xs: list[Any], n: int, dtype: Any) -> Any:
    if n == 0:
        return T.special.sinc(xs[0])
    return math.pi**n * _SincN.get().apply(math.pi * xs[0], n)


def _nsinc_arb(x: Any, n: int) -> Any:
    if n == 0:
        return x.sinc_pi()
    pi = arb.pi()
    return pi**n * _sinc_arb(pi * x, n)


def _sinc_charge(pi: float) -> Callable[[Any, list[Any], Any], Any]:
    """A few ulps of the result, and the argument's rounding (π·x for the normalised one, and
    x ± jπ/2 in Leibniz's rule) times |x|·|f⁽ⁿ⁺¹⁾| <= |x|·πⁿ⁺¹/(n + 2): absolute near the zeros;
    for a derivative (n >= 1), Leibniz's terms (up to n!·e, cancelling near |x| = 1) rounded:
    16·n!·πⁿ absolute (measured on 4000 points of (-30, 30): at most 0.4 of this charge in float64
    and float32 for n = 0, 1, 2; 2.9 times the charge without the last term for n = 2)."""

    def charge(r: Any, xs: list[Any], n: int) -> Any:
        leibniz = 16.0 * math.factorial(n) * pi**n if n else 0.0
        return 4.0 * r.abs() + (2.0 + 2.0 * n) * xs[0].abs() * pi ** (n + 1) / (n + 2) + leibniz

    return charge


def _parse_order0(node: sp.Basic) -> tuple[tuple[sp.Basic, ...], object]:
    return (node.args[0],), 0


def _sinc_label(name: str) -> Callable[[Any], str]:
    return lambda n: name if not n else f"{name}^({n})"


function("sinc", sp.sinc, torch=_sinc_torch, arb=lambda xs, n: _sinc_arb(xs[0], n), parse=_parse_order0,
         partial=lambda prog, k, i: prog.emit("sinc", prog.args[k], int(prog.data[k]) + 1), charge=_sinc_charge(1.0),
         label=_sinc_label("sinc"))
function("normalized_sinc", normalized_sinc, torch=_nsinc_torch, arb=lambda xs, n: _nsinc_arb(xs[0], n),
         parse=_parse_order0, charge=_sinc_charge(math.pi), label=_sinc_label("sinc_pi"),
         partial=lambda prog, k, i: prog.emit("normalized_sinc", prog.args[k], int(prog.data[k]) + 1))


# ---------------------------------------------------------------------------------------------
# floor, ceiling, frac: flat between integers, a jump at each.  Their derivative is the op
# `jump`: 0 away from the integers, undefined (NaN) at one, so a gradient through them is 0 or
# undefined, never a value at a jump.  (SymPy's frac is x - floor(x); torch.frac is x - trunc(x),
# different for x < 0: the lowering here is SymPy's.)


def _integer_or_not(A: Any, x: Any) -> bool:
    """True: x is an integer; False: no integer within the ball; else more precision (or, at the
    last precision, treated as on a jump)."""
    if isinstance(A, Rationals):
        return bool(x.q == 1)
    f = x.floor()
    if x.is_exact() and x.is_integer():
        return True
    if f.is_exact() and not (f in x) and not ((f + 1) in x):
        return False
    if A.final:
        return True
    raise NeedPrecision


def _rounded_exact(method: str) -> Callable[[Any, list[Any], Any], Any]:
    def exact(A: Any, xs: list[Any], data: Any) -> Any:
        x = xs[0]
        if isinstance(A, Rationals):
            return fmpq(x.ceil()) if method == "ceil" else x - fmpq(x.floor()) if method == "frac" else fmpq(x.floor())
        if not x.is_finite():
            return A.nan()
        r = getattr(x, "ceil" if method == "ceil" else "floor")()
        if r.is_exact():
            return r if method != "frac" else x - r
        if A.final:
            return A.nan()
        raise NeedPrecision

    return exact


def _jump_exact(A: Any, xs: list[Any], data: Any) -> Any:
    x = xs[0]
    if isinstance(A, Balls) and not x.is_finite():
        return A.nan()
    if _integer_or_not(A, x):
        return A.nan()  # Rationals: NotRational, so balls decide (NaN)
    return A.zero


def _jump_torch(T: Any, xs: list[Any], data: Any, dtype: Any) -> Any:
    x = xs[0]
    return T.where(x == T.floor(x), T.tensor(math.nan, dtype=x.dtype), T.zeros((), dtype=x.dtype))


def _jump_rounding(P: ErrorPass, k: int, args: tuple[int, ...], data: Any) -> None:
    P.v[k] = _jump_torch(P.T, [P.v[args[0]]], data, None)
    P.E[k], P.V[k] = P.zero(), P.zero()


register(OpSpec(name="jump", exact=_jump_exact, torch=_jump_torch, rounding=_jump_rounding,
                partial=lambda prog, k, i: prog.emit("jump", prog.args[k]), label=lambda d: "∂floor"))


def _step_rounding(frac: bool) -> Callable[[ErrorPass, int, tuple[int, ...], Any], None]:
    """Exact on an exact argument; where the argument's error could carry it across an integer
    (measured at float32's u, the larger), the result may be off by 1: not bounded in units of u."""

    def rule(P: ErrorPass, k: int, args: tuple[int, ...], data: Any) -> None:
        T, a = P.T, args[0]
        x = P.v[a]
        r = REGISTRY[P.prog.ops[k]].torch(T, [x], data, T.float64)
        P.v[k] = r
        if not P.errors:
            return
        spread = P.E[a] * 2.0**-24
        crosses = T.floor(x - spread) != T.floor(x + spread)
        inf = T.tensor(math.inf, dtype=T.float64)
        P.E[k] = T.where(crosses, inf, P.E[a] if frac else P.zero())
        P.V[k] = T.where(crosses, inf, P.V[a] if frac else P.zero())

    return rule


def _frac_partial(prog: Program, k: int, i: int) -> int:
    one = prog.emit("const", (), sp.Integer(1))
    return prog.emit("add", (one, prog.emit("jump", prog.args[k])))


for _name, _cls, _method, _lower in (
    ("floor", sp.floor, "floor", lambda T, xs, d, dt: T.floor(xs[0])),
    ("ceiling", sp.ceiling, "ceil", lambda T, xs, d, dt: T.ceil(xs[0])),
    ("frac", sp.frac, "frac", lambda T, xs, d, dt: xs[0] - T.floor(xs[0])),
):
    register(OpSpec(
        name=_name, exact=_rounded_exact(_method), torch=_lower, rounding=_step_rounding(_name == "frac"),
        partial=_frac_partial if _name == "frac" else (lambda prog, k, i: prog.emit("jump", prog.args[k])),
        sympy=(_cls,), function=True, label=(lambda n: lambda d: n)(_name),
        arb=(lambda m: lambda xs, d: xs[0] - xs[0].floor() if m == "frac" else getattr(xs[0], m)())(_method),
    ))


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


