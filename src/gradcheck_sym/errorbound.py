"""How much rounding error a correct float computation of the gradient can have.

A correct float32 gradient differs from the exact one by rounding alone, and how much depends on
the computation, not only on the size of the result: ``2x(xω − y)`` near the optimum is a small
difference of large terms, and its relative error is large in any float type.  Comparing with a
fixed relative tolerance would flag correct float32 gradients (torch's own gradcheck warns that
float32 "will likely fail") or, loosened until they pass, miss real bugs.

So the tolerance comes from *running error analysis* (Wilkinson) of the gradient program (the
forward, the local derivatives and the backward accumulation): every operation adds its own
rounding error, up to ``|result| · u``, and passes on the errors of its operands weighted by its
partial derivatives.  Two sizes are propagated, in units of the unit roundoff ``u``:

* ``worst``: the first-order worst case, every error adding up (Wilkinson's bound);
* ``probable``: the standard deviation when rounding errors are independent (the probabilistic
  analysis of Higham and Mary, 2019).

The worst case grows with the number of operations and is far too loose for networks (measured
on the 5-6-7-7-6-5 network in float32: it would hide a relative error of 1e-3 in a third of the
entries), the probable size tracks the observed errors (at most 1.4× it, over 8 models and
thousands of entries).  `compare.tolerance` uses the smaller of a few times each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import sympy as sp

from .functions import FUNCTIONS
from .graph import logic
from .symbolic import NO_PARTIAL, GradientProgram, _derivative_template

# Roundings charged per operation, in units of |result| * u.
LIBM_ULPS = 2.0  # exp, log, sin, ...: correctly rounded to within a couple of ulps
POW_ULPS = 2.0


@lru_cache(maxsize=None)
def _float_derivative(f: type, nargs: int, i: int) -> Callable[..., float]:
    template, ds, value = _derivative_template(f, nargs, i)
    fn = sp.lambdify(ds, template.xreplace({value: f(*ds)}), modules="math")

    def safe(*xs: float) -> float:
        try:
            return float(fn(*xs))
        except (ValueError, ZeroDivisionError, OverflowError, TypeError):
            return math.nan

    return safe


def _const(c: object) -> tuple[float | bool, float]:
    if isinstance(c, bool):
        return c, 0.0
    v = float(c)  # type: ignore[arg-type]
    exact = isinstance(c, sp.Rational) and c.q & (c.q - 1) == 0 and abs(c.p) < 2**24
    return v, 0.0 if exact else abs(v)


def _power_of_two(x: float) -> bool:
    """Multiplying by ±2**k is exact in binary floating point."""
    return x != 0 and math.isfinite(x) and math.frexp(abs(x))[0] == 0.5


def _pow(x: float, e: float) -> float:
    try:
        r = x**e
    except ZeroDivisionError:
        return math.nan
    except OverflowError:
        return math.inf
    return math.nan if isinstance(r, complex) else float(r)


def _cmp(x: float, y: float, rel: str) -> bool | None:
    if math.isnan(x) or math.isnan(y):
        return None
    return {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y, "==": x == y, "!=": x != y}[rel]


@dataclass(frozen=True)
class ErrorScales:
    """Rounding-error sizes of the loss (first) and each gradient entry, in units of ``u``."""

    worst: list[float]  # first-order worst case: every rounding error adds up
    probable: list[float]  # standard deviation if rounding errors are independent


def _combine(E: list[float], V: list[float], parts: list[tuple[int, float]], roundings: list[float]) -> tuple[float, float]:
    """Error of a result from its operands' errors (weighted by the partial derivatives) and its
    own roundings (each ``|intermediate|``)."""
    e = v = 0.0
    for a, d in parts:
        if E[a]:
            e += abs(d) * E[a]
            v += d * d * V[a]
    for r in roundings:
        e += abs(r)
        v += r * r
    return e, v


def error_scales(gp: GradientProgram, point: Sequence[float]) -> ErrorScales:
    """Running error analysis of the loss and of each gradient entry for a float computation at
    ``point`` (values of ``gp.prog.variables``).

    >>> x, y, w = sp.symbols("x y w", real=True)
    >>> from gradcheck_sym.symbolic import gradient_program
    >>> gp = gradient_program((x*w - y)**2, (x, y, w), (w,))
    >>> error_scales(gp, [2.0, 4.0, 1.0]).worst
    [36.0, 56.0]
    """
    prog = gp.prog
    ops, argss, datas = prog.ops, prog.args, prog.data
    n = len(prog)
    v: list = [0.0] * n
    E: list[float] = [0.0] * n
    V: list[float] = [0.0] * n
    for k in range(n):
        op, args, data = ops[k], argss[k], datas[k]
        if op == "var":
            v[k] = float(point[data])
        elif op == "mul":
            xs = [v[a] for a in args]
            p = xs[0]
            roundings = []
            for j in range(1, len(xs)):
                p *= xs[j]
                if not (ops[args[j]] == "const" and _power_of_two(xs[j])):
                    roundings.append(p)
            parts = []
            for i, a in enumerate(args):
                if E[a]:
                    others = 1.0
                    for j, x in enumerate(xs):
                        if j != i:
                            others *= x
                    parts.append((a, others))
            v[k] = p
            E[k], V[k] = _combine(E, V, parts, roundings)
        elif op == "add":
            s = v[args[0]]
            roundings = []
            for a in args[1:]:
                s += v[a]
                roundings.append(s)
            v[k] = s
            E[k], V[k] = _combine(E, V, [(a, 1.0) for a in args], roundings)
        elif op == "pow":
            x, e = v[args[0]], float(data)
            r = _pow(x, e)
            d = e * _pow(x, e - 1) if E[args[0]] else 0.0
            ulps = 1.0 if data in (2, -1, sp.Rational(1, 2)) else POW_ULPS
            v[k] = r
            E[k], V[k] = _combine(E, V, [(args[0], d)], [ulps * r])
        elif op == "const":
            v[k], E[k] = _const(data)
            V[k] = E[k] ** 2
        elif op == "fn":
            xs = [v[a] for a in args]
            r = FUNCTIONS[data].math(*xs)
            parts = [(a, _float_derivative(data, len(args), i)(*xs)) for i, a in enumerate(args) if E[a]]
            v[k] = r
            E[k], V[k] = _combine(E, V, parts, [LIBM_ULPS * r])
        elif op == "powv":
            b, e = v[args[0]], v[args[1]]
            r = _pow(b, e)
            db = e * _pow(b, e - 1) if E[args[0]] else 0.0
            de = r * math.log(b) if (E[args[1]] and b > 0) else 0.0
            v[k] = r
            E[k], V[k] = _combine(E, V, [(args[0], db), (args[1], de)], [POW_ULPS * r])
        elif op == "rel":
            v[k] = _cmp(v[args[0]], v[args[1]], data)
        elif op == "pw":
            v[k], E[k], V[k] = math.nan, math.inf, math.inf
            for b in range(0, len(args), 2):
                c = v[args[b + 1]]
                if c is None:
                    break
                if c:
                    v[k], E[k], V[k] = v[args[b]], E[args[b]], V[args[b]]
                    break
        elif op in ("and", "or", "not"):
            v[k] = logic(op, [v[a] for a in args])
    worst, var = _backward_errors(gp, v, E, V)
    return ErrorScales(worst=[E[gp.output], *worst], probable=[math.sqrt(x) for x in (V[gp.output], *var)])


def _backward_errors(gp: GradientProgram, v: list, E: list[float], V: list[float]) -> tuple[list[float], list[float]]:
    adj: list[float | None] = [None] * gp.n_forward
    Ea = [0.0] * gp.n_forward
    Va = [0.0] * gp.n_forward
    adj[gp.output] = 1.0
    for k in reversed(gp.order):
        a = adj[k]
        if a is None:
            continue
        if k in gp.branches:
            args = gp.prog.args[k]
            for b in range(0, len(args), 2):
                c = v[args[b + 1]]
                if c:
                    t = gp.branches[k][b // 2]
                    if t >= 0:
                        _accumulate(adj, Ea, Va, t, a, Ea[k], Va[k])
                    break
            continue
        for arg, p in gp.edges[k]:
            if p == NO_PARTIAL:
                _accumulate(adj, Ea, Va, arg, a, Ea[k], Va[k])
            else:
                c = a * v[p]
                ec = abs(v[p]) * Ea[k] + abs(a) * E[p] + abs(c)
                vc = v[p] ** 2 * Va[k] + a * a * V[p] + c * c
                _accumulate(adj, Ea, Va, arg, c, ec, vc)
    return (
        [Ea[s] if adj[s] is not None else 0.0 for s in gp.wrt_slots],
        [Va[s] if adj[s] is not None else 0.0 for s in gp.wrt_slots],
    )


def _accumulate(adj: list[float | None], Ea: list[float], Va: list[float], slot: int, c: float, ec: float, vc: float) -> None:
    old = adj[slot]
    if old is None:
        adj[slot], Ea[slot], Va[slot] = c, ec, vc
    else:
        s = old + c
        adj[slot], Ea[slot], Va[slot] = s, Ea[slot] + ec + abs(s), Va[slot] + vc + s * s
