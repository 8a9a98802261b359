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

Everything is evaluated for all points at once, one torch operation (on a batch of float64
values) per instruction of the program, so the cost hardly depends on the number of points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import sympy as sp
import torch

from .graph import Program, compile_expr
from .symbolic import NO_PARTIAL, GradientProgram, _derivative_template
from .torch_codegen import evaluate, torch_function

Tensor = torch.Tensor

# Roundings charged per operation, in units of |result| * u.
LIBM_ULPS = 2.0  # exp, log, sin, ...: correctly rounded to within a couple of ulps
POW_ULPS = 2.0
_REL = {"<": torch.lt, "<=": torch.le, ">": torch.gt, ">=": torch.ge, "==": torch.eq, "!=": torch.ne}


@dataclass(frozen=True)
class ErrorScales:
    """Rounding-error sizes of the loss (column 0) and each gradient entry, in units of ``u``,
    one row per point."""

    worst: Tensor  # (points, 1 + entries): first-order worst case, every error adding up
    probable: Tensor  # (points, 1 + entries): standard deviation if errors are independent


@lru_cache(maxsize=None)
def _derivative_program(f: type, nargs: int, i: int) -> Program:
    """∂f/∂(argument i) as a program over the arguments (evaluated with torch)."""
    template, ds, value = _derivative_template(f, nargs, i)
    return compile_expr(template.xreplace({value: f(*ds)}), ds, rewrite_kinks=True)


def _derivative(f: type, xs: list[Tensor], i: int) -> Tensor:
    prog = _derivative_program(f, len(xs), i)
    return evaluate(prog, xs)[prog.output]  # type: ignore[return-value]


def _exact_const(c: object) -> bool:
    return isinstance(c, sp.Rational) and c.q & (c.q - 1) == 0 and abs(c.p) < 2**24


def _power_of_two(x: Tensor) -> bool:
    v = float(x)
    return v != 0 and abs(v) != float("inf") and v == v and (abs(v).hex().startswith("0x1.0000000000000p"))


class _Pass:
    """Values, worst-case errors E and variances V of every slot, for a batch of points."""

    def __init__(self, gp: GradientProgram, points: Tensor, *, errors: bool = True) -> None:
        self.gp = gp
        self.errors = errors  # False: values only (the float64 gradient program, for speed)
        n = len(gp.prog)
        self.v: list[object] = [None] * n
        self.E: list[Tensor] = [torch.zeros((), dtype=torch.float64)] * n
        self.V: list[Tensor] = [torch.zeros((), dtype=torch.float64)] * n
        self.chosen: dict[int, Tensor] = {}
        self.points = points

    def combine(self, parts: list[tuple[int, Tensor]], roundings: list[Tensor]) -> tuple[Tensor, Tensor]:
        if not self.errors:
            return self.E[0], self.V[0]
        e = torch.zeros((), dtype=torch.float64)
        var = torch.zeros((), dtype=torch.float64)
        for a, d in parts:
            e = e + d.abs() * self.E[a]
            var = var + d * d * self.V[a]
        for r in roundings:
            e = e + r.abs()
            var = var + r * r
        return e, var

    def forward(self) -> None:
        prog = self.gp.prog
        ops, argss, datas = prog.ops, prog.args, prog.data
        v = self.v
        zero = torch.zeros((), dtype=torch.float64)
        for k in range(len(prog)):
            op, args, data = ops[k], argss[k], datas[k]
            if op == "var":
                v[k] = self.points[:, data]
            elif op == "const":
                if isinstance(data, bool):
                    v[k] = data
                else:
                    v[k] = torch.tensor(float(data), dtype=torch.float64)  # type: ignore[arg-type]
                    self.E[k] = zero if _exact_const(data) else v[k].abs()  # type: ignore[union-attr]
                    self.V[k] = self.E[k] ** 2
            elif op == "mul":
                xs = [v[a] for a in args]
                p = xs[0]
                roundings = []
                for j in range(1, len(xs)):
                    p = p * xs[j]
                    if self.errors and not (ops[args[j]] == "const" and _power_of_two(xs[j])):  # type: ignore[arg-type]
                        roundings.append(p)
                parts = []
                for i, a in enumerate(args):
                    if self.errors and ops[a] != "const":
                        others = torch.ones((), dtype=torch.float64)
                        for j, x in enumerate(xs):
                            if j != i:
                                others = others * x
                        parts.append((a, others))
                v[k] = p
                self.E[k], self.V[k] = self.combine(parts, roundings)
            elif op == "add":
                s = v[args[0]]
                roundings = []
                for a in args[1:]:
                    s = s + v[a]
                    roundings.append(s)
                v[k] = s
                self.E[k], self.V[k] = self.combine([(a, torch.ones((), dtype=torch.float64)) for a in args], roundings)
            elif op == "pow":
                x, e = v[args[0]], float(data)
                r = torch.pow(x, e)
                d = e * torch.pow(x, e - 1)
                ulps = 1.0 if data in (2, -1, sp.Rational(1, 2)) else POW_ULPS
                v[k] = r
                self.E[k], self.V[k] = self.combine([(args[0], d)], [ulps * r])
            elif op == "fn":
                xs = [v[a] for a in args]
                r = torch_function(data)(*xs)
                parts = [(a, _derivative(data, xs, i)) for i, a in enumerate(args) if self.errors and ops[a] != "const"]
                v[k] = r
                self.E[k], self.V[k] = self.combine(parts, [LIBM_ULPS * r])
            elif op == "powv":
                b, e = v[args[0]], v[args[1]]
                r = torch.pow(b, e)
                parts = [(args[0], e * torch.pow(b, e - 1)), (args[1], r * torch.log(b.abs()))]
                v[k] = r
                self.E[k], self.V[k] = self.combine(parts, [POW_ULPS * r])
            elif op == "rel":
                v[k] = _REL[data](v[args[0]], v[args[1]])
            elif op == "pw":
                self._piecewise(k, args)
            elif op in ("and", "or"):
                f = torch.logical_and if op == "and" else torch.logical_or
                acc = torch.as_tensor(v[args[0]])
                for a in args[1:]:
                    acc = f(acc, torch.as_tensor(v[a]))
                v[k] = acc
            elif op == "not":
                v[k] = torch.logical_not(torch.as_tensor(v[args[0]]))

    def _piecewise(self, k: int, args: tuple[int, ...]) -> None:
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        value, e, var = nan, torch.tensor(float("inf"), dtype=torch.float64), torch.tensor(float("inf"), dtype=torch.float64)
        chosen = torch.tensor(-1)
        for b in range(len(args) - 2, -1, -2):
            cond = torch.as_tensor(self.v[args[b + 1]])
            value = torch.where(cond, self.v[args[b]], value)
            e = torch.where(cond, self.E[args[b]], e)
            var = torch.where(cond, self.V[args[b]], var)
            chosen = torch.where(cond, b // 2, chosen)
        self.v[k], self.E[k], self.V[k] = value, e, var
        self.chosen[k] = chosen

    def backward(self) -> tuple[list[Tensor], list[Tensor]]:
        gp, v, E, V = self.gp, self.v, self.E, self.V
        zero = torch.zeros((), dtype=torch.float64)
        adj: dict[int, Tensor] = {gp.output: torch.ones((), dtype=torch.float64)}
        Ea: dict[int, Tensor] = {gp.output: zero}
        Va: dict[int, Tensor] = {gp.output: zero}

        def accumulate(slot: int, c: Tensor, ec: Tensor, vc: Tensor) -> None:
            if slot not in adj:
                adj[slot], Ea[slot], Va[slot] = c, ec, vc
            elif not self.errors:
                adj[slot] = adj[slot] + c
            else:
                old = adj[slot]
                s = old + c
                rounding = torch.where((c == 0) | (old == 0), zero, s.abs())  # adding to or of zero is exact
                adj[slot], Ea[slot], Va[slot] = s, Ea[slot] + ec + rounding, Va[slot] + vc + rounding**2

        for k in reversed(gp.order):
            if k not in adj:
                continue
            a, ea, va = adj[k], Ea[k], Va[k]
            if k in gp.branches:
                for b, target in enumerate(gp.branches[k]):
                    if target >= 0:
                        live = self.chosen[k] == b
                        accumulate(target, torch.where(live, a, zero), torch.where(live, ea, zero),
                                   torch.where(live, va, zero))
                continue
            dead = a == 0  # no adjoint here (a dead branch): its NaNs must not leak
            for arg, p in gp.edges[k]:
                if p == NO_PARTIAL:
                    accumulate(arg, a, ea, va)
                    continue
                pv = v[p]
                c = torch.where(dead, zero, a * pv)
                if not self.errors:
                    accumulate(arg, c, zero, zero)
                    continue
                ec = torch.where(dead & (ea == 0), zero, pv.abs() * ea + a.abs() * E[p] + c.abs())
                vc = torch.where(dead & (va == 0), zero, pv * pv * va + a * a * V[p] + c * c)
                accumulate(arg, c, ec, vc)
        self.adjoints = [adj.get(s, zero) for s in gp.wrt_slots]
        worst = [Ea.get(s, zero) for s in gp.wrt_slots]
        var = [Va.get(s, zero) for s in gp.wrt_slots]
        return worst, var


def error_scales_batch(gp: GradientProgram, points: Sequence[Sequence[float]]) -> ErrorScales:
    """Running error analysis of the loss and each gradient entry at every point (values of
    ``gp.prog.variables``), all points in one pass."""
    batch = torch.tensor(points, dtype=torch.float64).reshape(len(points), -1)
    with torch.no_grad():
        run = _Pass(gp, batch)
        run.forward()
        worst, var = run.backward()
    n = batch.shape[0]
    cols_w = [run.E[gp.output], *worst]
    cols_v = [run.V[gp.output], *var]
    w = torch.stack([torch.as_tensor(c, dtype=torch.float64).expand(n) for c in cols_w], dim=1)
    v = torch.stack([torch.as_tensor(c, dtype=torch.float64).expand(n) for c in cols_v], dim=1)
    return ErrorScales(worst=w, probable=v.sqrt())


def gradient_batch(gp: GradientProgram, points: Tensor) -> tuple[Tensor, Tensor]:
    """The gradient program itself in float64, every point at once: (loss (B,), gradient (B, P)).

    The same program as the exact reference (reverse accumulation over the expression graph, one
    torch operation per instruction), for throughput rather than certainty."""
    with torch.no_grad():
        run = _Pass(gp, points.to(torch.float64), errors=False)
        run.forward()
        run.backward()
    n = points.shape[0]
    loss = torch.as_tensor(run.v[gp.output], dtype=torch.float64).expand(n)
    grads = torch.stack([torch.as_tensor(g, dtype=torch.float64).expand(n) for g in run.adjoints], dim=1)
    return loss, grads


def error_scales(gp: GradientProgram, point: Sequence[float]) -> ErrorScales:
    """`error_scales_batch` at one point.

    >>> x, y, w = sp.symbols("x y w", real=True)
    >>> from gradcheck_sym.symbolic import gradient_program
    >>> gp = gradient_program((x*w - y)**2, (x, y, w), (w,))
    >>> error_scales(gp, [2.0, 4.0, 1.0]).worst.tolist()
    [[36.0, 56.0]]
    """
    return error_scales_batch(gp, [point])
