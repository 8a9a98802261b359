"""How much rounding error a correct float computation of the gradient can have.

A correct float32 gradient differs from the exact one by rounding alone, and how much depends on
the computation, not only on the size of the result: ``2x(xω − y)`` near the optimum is a small
difference of large terms, and its relative error is large in any float type.  Comparing with a
fixed relative tolerance would flag correct float32 gradients (torch's own gradcheck warns that
float32 "will likely fail") or, loosened until they pass, miss real bugs.

So the tolerance comes from first-order *running error analysis* (Wilkinson): every operation of
the gradient program (the forward, the local derivatives and the backward accumulation) adds its
own rounding error, ``|result| · u``, and passes on the errors of its operands weighted by the
magnitudes of its partial derivatives.  The result, ``E``, is such that a float computation in
the same order errs by at most about ``E · u`` (``u`` the unit roundoff of the dtype); the
tolerance rule in `compare` scales it by a safety factor for other evaluation orders and library
functions a few ulps off.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache

import sympy as sp

from .functions import FUNCTIONS
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


def error_scales(gp: GradientProgram, point: Sequence[float]) -> list[float]:
    """Running error bounds ``E`` (units of the unit roundoff) of the loss and of each gradient
    entry, for a float computation at ``point`` (values of ``gp.prog.variables``).

    >>> x, y, w = sp.symbols("x y w", real=True)
    >>> from gradcheck_sym.symbolic import gradient_program
    >>> gp = gradient_program((x*w - y)**2, (x, y, w), (w,))
    >>> [round(e, 3) for e in error_scales(gp, [2.0, 4.0, 1.0])]
    [12.0, 28.0]
    """
    prog = gp.prog
    ops, argss, datas = prog.ops, prog.args, prog.data
    n = len(prog)
    v: list = [0.0] * n
    E: list[float] = [0.0] * n
    for k in range(n):
        op, args, data = ops[k], argss[k], datas[k]
        if op == "var":
            v[k] = float(point[data])
        elif op == "mul":
            xs = [v[a] for a in args]
            p = xs[0]
            err = 0.0
            for j in range(1, len(xs)):
                p *= xs[j]
                if not (ops[args[j]] == "const" and _power_of_two(xs[j])):
                    err += abs(p)
            for i, a in enumerate(args):
                if E[a]:
                    others = 1.0
                    for j, x in enumerate(xs):
                        if j != i:
                            others *= x
                    err += E[a] * abs(others)
            v[k], E[k] = p, err
        elif op == "add":
            s = v[args[0]]
            err = E[args[0]]
            for a in args[1:]:
                s += v[a]
                err += E[a] + abs(s)
            v[k], E[k] = s, err
        elif op == "pow":
            x, e = v[args[0]], float(data)
            r = _pow(x, e)
            d = e * _pow(x, e - 1) if E[args[0]] else 0.0
            ulps = 1.0 if data in (2, -1, sp.Rational(1, 2)) else POW_ULPS
            v[k], E[k] = r, abs(d) * E[args[0]] + ulps * abs(r)
        elif op == "const":
            v[k], E[k] = _const(data)
        elif op == "fn":
            xs = [v[a] for a in args]
            r = FUNCTIONS[data].math(*xs)
            err = LIBM_ULPS * abs(r)
            for i, a in enumerate(args):
                if E[a]:
                    err += abs(_float_derivative(data, len(args), i)(*xs)) * E[a]
            v[k], E[k] = r, err
        elif op == "powv":
            b, e = v[args[0]], v[args[1]]
            r = _pow(b, e)
            db = e * _pow(b, e - 1) if E[args[0]] else 0.0
            de = r * math.log(b) if (E[args[1]] and b > 0) else 0.0
            v[k], E[k] = r, abs(db) * E[args[0]] + abs(de) * E[args[1]] + POW_ULPS * abs(r)
        elif op == "rel":
            v[k] = _cmp(v[args[0]], v[args[1]], data)
        elif op == "pw":
            v[k], E[k] = math.nan, math.inf
            for b in range(0, len(args), 2):
                c = v[args[b + 1]]
                if c is None:
                    break
                if c:
                    v[k], E[k] = v[args[b]], E[args[b]]
                    break
        elif op == "and":
            xs = [v[a] for a in args]
            v[k] = False if False in xs else (None if None in xs else True)
        elif op == "or":
            xs = [v[a] for a in args]
            v[k] = True if True in xs else (None if None in xs else False)
        elif op == "not":
            v[k] = None if v[args[0]] is None else not v[args[0]]
    return [E[gp.output], *_backward_errors(gp, v, E)]


def _backward_errors(gp: GradientProgram, v: list, E: list[float]) -> list[float]:
    adj: list[float | None] = [None] * gp.n_forward
    Ea = [0.0] * gp.n_forward
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
                        _accumulate(adj, Ea, t, a, Ea[k])
                    break
            continue
        for arg, p in gp.edges[k]:
            if p == NO_PARTIAL:
                _accumulate(adj, Ea, arg, a, Ea[k])
            else:
                c = a * v[p]
                _accumulate(adj, Ea, arg, c, abs(v[p]) * Ea[k] + abs(a) * E[p] + abs(c))
    return [Ea[s] if adj[s] is not None else 0.0 for s in gp.wrt_slots]


def _accumulate(adj: list[float | None], Ea: list[float], slot: int, c: float, ec: float) -> None:
    old = adj[slot]
    if old is None:
        adj[slot], Ea[slot] = c, ec
    else:
        s = old + c
        adj[slot], Ea[slot] = s, Ea[slot] + ec + abs(s)
