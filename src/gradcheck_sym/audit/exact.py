"""Exact values of a SymPy expression at a float point: python-flint arb balls, certified.

`Exact(expr, args)` compiles the expression once into closures over arb; `value(point, f)`
raises the working precision until the ball rounds to a single value of float format ``f`` (or
lies wholly below half its smallest subnormal), so the result is the exact value correctly
rounded, proven.  Piecewise conditions are decided in exact rationals, optionally just to one
side of the point along one argument (`side`), which is how one-sided derivatives at corners are
obtained.  `rounding_bound` is the first-order running error bound of a formula evaluated in
floating point: what rounding of the values a formula computes from can explain.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flint
import sympy as sp
from flint import acb, arb, fmpq

from .formats import FloatFormat, round_to

PRECISIONS = (64, 128, 256, 512, 1024, 2048, 4096)
NAN_PRECISION = 1024  # a value still NaN at this precision is undefined
_HUGE = 2**100  # |argument| beyond which exp is bounded instead of computed
_DELTA = fmpq(1, 2**1200)  # a step to one side of a point, far below any format's spacing


def _exp(a: arb) -> arb:
    if a.is_finite() and a.upper() < -_HUGE:  # exp(a) < 2^-(2^99): a ball around 0 contains it
        return arb(0, arb(2) ** (-(2**99)))
    return a.exp()


def _loggamma(a: arb) -> arb:  # torch's lgamma is log|Γ(x)|, real for x < 0 too
    if a > 0:
        return a.lgamma()
    return abs(a.gamma()).log()


def _polygamma(n: arb, a: arb) -> arb:
    k = int(n.mid().unique_fmpz())
    if k == 0:
        return a.digamma()
    sign = 1 if k % 2 else -1
    if a > 0:
        z = arb(k + 1).zeta(a)
    else:
        w = acb(k + 1).zeta(acb(a))
        if not w.imag.contains(0):
            return arb.nan()
        z = w.real
    return sign * arb(math.factorial(k)) * z


def _besseli(n: arb, a: arb) -> arb:
    return a.bessel_i(n)


def _sign(a: arb) -> arb:
    if a > 0:
        return arb(1)
    if a < 0:
        return arb(-1)
    if a == 0:
        return arb(0)
    return arb(0, 1)


def _heaviside(a: arb, h0: arb | None = None) -> arb:
    if a > 0:
        return arb(1)
    if a < 0:
        return arb(0)
    return h0 if h0 is not None else arb(0, 1)


# SymPy function -> its value on balls.  Tables are data.
BALL_FUNCTIONS: dict[type, Callable[..., arb]] = {
    sp.exp: _exp, sp.log: lambda a: a.log(), sp.sin: lambda a: a.sin(), sp.cos: lambda a: a.cos(),
    sp.tan: lambda a: a.tan(), sp.asin: lambda a: a.asin(), sp.acos: lambda a: a.acos(),
    sp.atan: lambda a: a.atan(), sp.sinh: lambda a: a.sinh(), sp.cosh: lambda a: a.cosh(),
    sp.tanh: lambda a: a.tanh(), sp.asinh: lambda a: a.asinh(), sp.acosh: lambda a: a.acosh(),
    sp.atanh: lambda a: a.atanh(), sp.erf: lambda a: a.erf(), sp.erfc: lambda a: a.erfc(),
    sp.erfinv: lambda a: a.erfinv(), sp.loggamma: _loggamma, sp.digamma: lambda a: a.digamma(),
    sp.polygamma: _polygamma, sp.besseli: _besseli, sp.Abs: abs, sp.sign: _sign,
    sp.Heaviside: _heaviside, sp.atan2: lambda y, x: arb.atan2(y, x),
}


def _rational(q: sp.Rational) -> fmpq:
    return fmpq(int(q.p), int(q.q))


def to_fmpq(v: float) -> fmpq:
    n, d = v.as_integer_ratio()
    return fmpq(n, d)


Node = Callable[[dict[sp.Symbol, Any]], Any]


class _Compiler:
    """SymPy -> closures.  The same closures run on arb (values) and on fmpq (conditions)."""

    def __init__(self) -> None:
        self.cache: dict[sp.Basic, Node] = {}

    def __call__(self, e: sp.Basic) -> Node:
        if e not in self.cache:
            self.cache[e] = self._compile(e)
        return self.cache[e]

    def _compile(self, e: sp.Basic) -> Node:
        if isinstance(e, sp.Symbol):
            return lambda env: env[e]
        if isinstance(e, sp.Rational):
            q = _rational(e)
            return lambda env: q if env.get("_exact") else arb(q)
        if isinstance(e, sp.Float):
            q = _rational(sp.Rational(e))
            return lambda env: q if env.get("_exact") else arb(q)
        if e is sp.pi:
            return lambda env: arb.pi()
        if e is sp.E:
            return lambda env: arb(1).exp()
        if isinstance(e, sp.Add):
            parts = [self(a) for a in e.args]

            def add(env: dict[sp.Symbol, Any]) -> Any:
                s = parts[0](env)
                for p in parts[1:]:
                    s = s + p(env)
                return s

            return add
        if isinstance(e, sp.Mul):
            parts = [self(a) for a in e.args]

            def mul(env: dict[sp.Symbol, Any]) -> Any:
                s = parts[0](env)
                for p in parts[1:]:
                    s = s * p(env)
                return s

            return mul
        if isinstance(e, sp.Pow):
            base, ex = self(e.base), e.exp
            if isinstance(ex, sp.Integer):
                n = int(ex)
                return lambda env: base(env) ** n if n >= 0 else 1 / base(env) ** (-n)
            if ex == sp.Rational(1, 2):
                return lambda env: base(env).sqrt()
            if ex == sp.Rational(-1, 2):
                return lambda env: base(env).rsqrt()
            exn = self(ex)

            def power(env: dict[sp.Symbol, Any]) -> Any:
                v = _exp(exn(env) * base(env).log())
                if not v.is_finite() and not v.is_nan():
                    env["_overflow"] = True
                return v

            return power
        if isinstance(e, sp.Piecewise):
            pieces = [(self(v), self._condition(c)) for v, c in e.args]

            def piecewise(env: dict[sp.Symbol, Any]) -> Any:
                for value, cond in pieces:
                    if cond(env["_cond"]):
                        return value(env)
                return arb.nan()

            return piecewise
        if isinstance(e, sp.Function) and type(e) in BALL_FUNCTIONS:
            fn = BALL_FUNCTIONS[type(e)]
            parts = [self(a) for a in e.args]

            def call(env: dict[sp.Symbol, Any]) -> Any:
                v = fn(*(p(env) for p in parts))
                if isinstance(v, arb) and not v.is_finite() and not v.is_nan():
                    env["_overflow"] = True  # beyond arb's exponent range, not outside the domain
                return v

            return call
        raise ValueError(f"the audit cannot evaluate `{e}` exactly (no rule for {type(e).__name__})")

    def _condition(self, c: sp.Basic) -> Callable[[dict[sp.Symbol, Any]], bool]:
        """A Piecewise condition, decided on exact rationals."""
        if c is sp.true:
            return lambda env: True
        if c is sp.false:
            return lambda env: False
        if isinstance(c, (sp.And, sp.Or)):
            parts = [self._condition(a) for a in c.args]
            if isinstance(c, sp.And):
                return lambda env: all(p(env) for p in parts)
            return lambda env: any(p(env) for p in parts)
        if isinstance(c, sp.Not):
            inner = self._condition(c.args[0])
            return lambda env: not inner(env)
        if isinstance(c, sp.core.relational.Relational):
            lhs, rhs = self(c.lhs - c.rhs), c.rel_op
            ops: dict[str, Callable[[Any], bool]] = {
                "<": lambda d: d < 0, "<=": lambda d: d <= 0, ">": lambda d: d > 0, ">=": lambda d: d >= 0,
                "==": lambda d: d == 0, "!=": lambda d: d != 0,
            }
            op = ops[rhs]
            return lambda env: op(lhs({**env, "_exact": True}))
        raise ValueError(f"the audit cannot decide the condition `{c}`")


@dataclass(frozen=True)
class ExactValue:
    """An exact value, as a ball and as rounded to a format."""

    kind: str  # "finite" | "undefined" (outside the domain, a pole) | "unresolved" (beyond the evaluator)
    ball: arb | None = None
    rounded: float = math.nan  # nearest value of the format (±inf if it overflows the format)

    @property
    def text(self) -> str:
        if self.ball is None:
            return self.kind
        return self.ball.str(20, radius=True)


class Exact:
    """An expression in the symbols ``args`` (and named intermediates), evaluated exactly."""

    def __init__(self, expr: sp.Expr, args: tuple[sp.Symbol, ...], removable: tuple[sp.Rational, ...] = ()) -> None:
        self.expr = expr
        self.args = args
        self.removable = removable
        self.piecewise = expr.has(sp.Piecewise)
        self._node = _Compiler()(expr)
        self._limits: dict[tuple[float, ...], sp.Expr] = {}

    def ball(self, point: tuple[float, ...], prec: int, side: tuple[int, int] | None = None) -> arb:
        """The ball at ``point`` at working precision ``prec``; ``side`` = (argument index, ±1)
        decides Piecewise conditions just to that side of the point."""
        return self._ball(point, prec, side)[0]

    def _ball(self, point: tuple[float, ...], prec: int, side: tuple[int, int] | None) -> tuple[arb, bool]:
        cond = {s: to_fmpq(v) for s, v in zip(self.args, point)}
        if side is not None:
            i, sgn = side
            cond[self.args[i]] += sgn * _DELTA
        env: dict[Any, Any] = {s: arb(v) for s, v in zip(self.args, point)}
        env["_cond"] = cond
        old = flint.ctx.prec
        flint.ctx.prec = prec
        try:
            return self._node(env), bool(env.get("_overflow"))
        finally:
            flint.ctx.prec = old

    def value(self, point: tuple[float, ...], f: FloatFormat, side: tuple[int, int] | None = None) -> ExactValue:
        """The exact value at ``point``, correctly rounded to ``f`` (precision raised until it is)."""
        nans = infinite = 0
        b = None
        for prec in PRECISIONS:
            b, overflow = self._ball(point, prec, side)
            if b.is_nan() and not overflow:  # outside the domain, or a ball too wide to tell (log of [0 ± r])
                nans += 1
                if prec >= NAN_PRECISION:
                    return self._removable(point, f)
                continue
            if not b.is_finite() or b.is_nan():  # beyond arb's exponent range: more precision does not help
                infinite += 1
                if infinite >= 2:
                    break
                continue
            lo, hi = round_to(float(b.lower()), f), round_to(float(b.upper()), f)
            if lo == hi:
                return ExactValue("finite", b, lo if lo != 0 else 0.0)
        if b is not None and b.is_finite() and b.rad() < abs(b.mid()) * arb(2) ** (-f.p - 4):
            return ExactValue("finite", b, round_to(float(b.mid()), f))
        return ExactValue("unresolved", b)

    def _removable(self, point: tuple[float, ...], f: FloatFormat) -> ExactValue:
        """At a removable singularity (sinc at 0) the limit; elsewhere the value is undefined."""
        if len(point) != 1 or not any(float(r) == point[0] for r in self.removable):
            return ExactValue("undefined")
        if point not in self._limits:
            x = self.args[0]
            c = sp.Rational(point[0])
            self._limits[point] = sp.limit(self.expr, x, c, dir="+-")
        lim = self._limits[point]
        if not lim.is_finite:
            return ExactValue("undefined")
        return Exact(lim, self.args).value(point, f)


def rounding_bound(expr: sp.Expr, env: dict[sp.Symbol, arb], saved: set[sp.Symbol], u_saved: float,
                   u_compute: float, underflow: float = 0.0) -> float:
    """First-order bound on the error of evaluating ``expr`` in floating point: every operation
    rounds (relative ``u_compute``), every function also rounds its argument once (range
    reduction), the values in ``saved`` (torch's saved forward outputs) are rounded once
    (``u_saved``); the other symbols (the inputs) are exact.  A rounding also errs by up to
    ``underflow`` (the smallest subnormal) absolutely: gradual underflow is not relative.  Evaluated on balls at
    the point ``env``; returns an upper bound as a float (inf if it cannot be bounded)."""
    old = flint.ctx.prec
    try:
        for prec in (64, 256, 1024):  # Bessel functions at large arguments need more than 64 bits
            flint.ctx.prec = prec
            _, err = _running(expr, env, saved, _Rounding(u_saved, underflow), _Rounding(u_compute, underflow), {})
            e = err.upper()
            if e.is_finite():
                return float(e)
        return math.inf
    except (ValueError, ZeroDivisionError):
        return math.inf
    finally:
        flint.ctx.prec = old


class _Rounding:
    """``abs(v) * r``: the error of rounding v, relative u or absolute η, whichever is larger."""

    def __init__(self, u: float, eta: float) -> None:
        self.u, self.eta = arb(u), arb(eta)

    def __rmul__(self, v: arb) -> arb:
        return arb.max(abs(v) * self.u, self.eta)


def _propagated(e: sp.Basic, inner: sp.Basic, z: sp.Symbol, env: dict[Any, Any], a: arb, linear: arb,
                err: arb) -> arb:
    """How far ``e`` moves when its argument ``a`` errs by ``err``: the first-order ``|f'(a)|·err``,
    or, where that is larger, ``f`` evaluated over the whole ball ``a ± err`` (a large argument
    error: cos(πx) with πx rounded by more than a radian, at a point where cos' happens to vanish)."""
    f = _Compiler()(e.subs(inner, z))
    try:
        ball = f({**env, z: arb(a.mid(), err.upper())})
        v = f({**env, z: a})
    except (ValueError, ZeroDivisionError):
        return linear
    if not ball.is_finite() or not v.is_finite():
        return linear
    return arb.max(linear, arb((ball - v).abs_upper()))


def _running(e: sp.Basic, env: dict[Any, Any], saved: set[sp.Symbol], us: _Rounding, uc: _Rounding,
             memo: dict[sp.Basic, tuple[arb, arb]]) -> tuple[arb, arb]:
    if e in memo:
        return memo[e]
    if isinstance(e, sp.Symbol):
        v = env[e]
        out = (v, abs(v) * us if e in saved else arb(0))
    elif e.is_number:
        v = _Compiler()(e)(env)
        exact = isinstance(e, sp.Integer) or (isinstance(e, sp.Rational) and (e.q & (e.q - 1)) == 0)
        out = (v, arb(0) if exact else abs(v) * uc)
    elif isinstance(e, sp.Add):
        terms = [_running(a, env, saved, us, uc, memo) for a in e.args]
        v = sum((t[0] for t in terms), arb(0))
        out = (v, sum((t[1] for t in terms), arb(0)) + abs(v) * uc * (len(terms) - 1))
    elif isinstance(e, sp.Mul):
        terms = [_running(a, env, saved, us, uc, memo) for a in e.args]
        v = arb(1)
        for t in terms:
            v = v * t[0]
        err = arb(0)
        for i, t in enumerate(terms):
            rest = arb(1)
            for j, s in enumerate(terms):
                if j != i:
                    rest = rest * s[0]
            err = err + t[1] * abs(rest)
        out = (v, err + abs(v) * uc * (len(terms) - 1))
    elif isinstance(e, sp.Piecewise):
        for val, cond in e.args:
            if _Compiler()._condition(cond)(env["_cond"]):
                out = _running(val, env, saved, us, uc, memo)
                break
        else:
            raise ValueError("no piece")
    else:
        # a function or a power of one argument that varies: |f'(a)|·err(a) + one rounding
        if isinstance(e, sp.Pow):
            inner = e.base
            if not e.exp.is_number:
                inner = e.exp
        else:
            inner = next((a for a in e.args if not a.is_number), e.args[-1])
        z = sp.Dummy("z", real=True)
        a, ea = _running(inner, env, saved, us, uc, memo)
        env2 = {**env, z: a}
        v = _Compiler()(e)(env)
        # sign and step are flat where they are evaluated (the point is off their jump)
        d = _Compiler()(sp.diff(e.subs(inner, z), z).replace(sp.DiracDelta, lambda *_: sp.Integer(0)))(env2)
        # a function is charged one rounding of its result and one of its argument (the range
        # reduction or shift that libraries do first: x + k in digamma, πx in its reflection)
        arg_err = ea + (abs(a) * uc if isinstance(e, sp.Function) else arb(0))
        out = (v, _propagated(e, inner, z, env, a, abs(d) * arg_err, arg_err) + abs(v) * uc)
    memo[e] = out
    return out
