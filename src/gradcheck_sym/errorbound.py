"""How much rounding error a correct float computation of the gradient can have.

A correct float32 gradient differs from the exact one by rounding alone, and how much depends on
the computation, not only on the size of the result: ``2x(xω − y)`` near the optimum is a small
difference of large terms, and its relative error is large in any float type.  Comparing with a
fixed relative tolerance would flag correct float32 gradients (torch's own gradcheck warns that
float32 "will likely fail") or, loosened until they pass, miss real bugs.

So the tolerance comes from *running error analysis* (Wilkinson) of the gradient program (the
forward, the local derivatives and the backward accumulation, all instructions of one program):
every operation adds its own rounding error, up to ``|result| · u``, and passes on the errors of
its operands weighted by its partial derivatives.  Each op's rule is its registry entry's
``rounding`` (`ir.ops`).  Two sizes are propagated, in units of the unit roundoff ``u``:

* ``worst``: the first-order worst case, every error adding up (Wilkinson's bound);
* ``probable``: the standard deviation when rounding errors are independent (the probabilistic
  analysis of Higham and Mary, 2019).

The worst case grows with the number of operations and is far too loose for networks (measured
on the 5-6-7-7-6-5 network in float32: it would hide a relative error of 1e-3 in a third of the
entries), the probable size tracks the observed errors (at most 1.4× it, over 8 models and
thousands of entries).  `compare.tolerance` uses the smaller of a few times each.

Everything is evaluated for all points at once, one torch operation (on a batch of float64
values) per instruction of the program, so the cost hardly depends on the number of points.
Any program works the same way: a second-order program's outputs get their error sizes too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import sympy as sp
import torch

from .ir.ops import REGISTRY
from .ir.program import Program
from .torch_codegen import evaluate

Tensor = torch.Tensor


@dataclass(frozen=True)
class ErrorScales:
    """Rounding-error sizes of each output of the program (the loss in column 0, then each
    gradient entry), in units of ``u``, one row per point."""

    worst: Tensor  # (points, outputs): first-order worst case, every error adding up
    probable: Tensor  # (points, outputs): standard deviation if errors are independent


@lru_cache(maxsize=None)
def _partials_program(op: str, nargs: int, data: object) -> tuple[Program, tuple[int, ...]]:
    """An op's local partials as a program over its arguments (evaluated with torch)."""
    prog = Program(variables=tuple(sp.Dummy(f"d{i}") for i in range(nargs)))
    args = tuple(prog.emit("var", (), i) for i in range(nargs))
    k = prog.emit(op, args, data)
    partial = REGISTRY[op].partial
    assert partial is not None
    return prog, tuple(partial(prog, k, i) for i in range(nargs))


def _program(gp: Any) -> Program:
    return gp if isinstance(gp, Program) else gp.prog  # type: ignore[no-any-return,unused-ignore]


class _Pass:
    """Values, worst-case errors E and variances V of every slot, for a batch of points: the
    `ir.ops.ErrorPass` the registry's rounding rules read and write."""

    T = torch

    def __init__(self, prog: Program, points: Tensor, *, errors: bool = True) -> None:
        self.prog = prog
        self.errors = errors  # False: values only (the float64 gradient program, for speed)
        n = len(prog)
        self._zero = torch.zeros((), dtype=torch.float64)
        self.v: list[Any] = [None] * n
        self.E: list[Any] = [self._zero] * n
        self.V: list[Any] = [self._zero] * n
        self.points = points

    def zero(self) -> Tensor:
        return self._zero

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

    def local_partials(self, k: int) -> list[Tensor]:
        args = self.prog.args[k]
        prog, slots = _partials_program(self.prog.ops[k], len(args), self.prog.data[k])
        vals = evaluate(prog, [self.v[a] for a in args])
        return [vals[s] for s in slots]  # type: ignore[misc]

    def run(self) -> None:
        prog = self.prog
        for k, (op, args, data) in enumerate(zip(prog.ops, prog.args, prog.data)):
            spec = REGISTRY[op]
            if spec.leaf:
                self.v[k] = self.points[:, data]
            else:
                spec.rounding(self, k, args, data)


def _columns(cols: list[Any], n: int) -> Tensor:
    return torch.stack([torch.as_tensor(c, dtype=torch.float64).expand(n) for c in cols], dim=1)


def error_scales_batch(gp: Any, points: Sequence[Sequence[float]]) -> ErrorScales:
    """Running error analysis of every output of a program (or `symbolic.GradientProgram`) at
    every point (values of its variables), all points in one pass."""
    prog = _program(gp)
    batch = torch.tensor(points, dtype=torch.float64).reshape(len(points), -1)
    with torch.no_grad():
        run = _Pass(prog, batch)
        run.run()
    n = batch.shape[0]
    w = _columns([run.E[o] for o in prog.outputs], n)
    v = _columns([run.V[o] for o in prog.outputs], n)
    return ErrorScales(worst=w, probable=v.sqrt())


def program_batch(prog: Program, points: Tensor) -> Tensor:
    """Every output of a program in float64, every point at once: ``(B, outputs)``."""
    with torch.no_grad():
        run = _Pass(prog, points.to(torch.float64), errors=False)
        run.run()
    return _columns([run.v[o] for o in prog.outputs], points.shape[0])


def gradient_batch(gp: Any, points: Tensor) -> tuple[Tensor, Tensor]:
    """The gradient program itself in float64, every point at once: (loss (B,), gradient (B, P)).

    The same program as the exact reference (reverse accumulation over the expression graph, one
    torch operation per instruction), for throughput rather than certainty."""
    out = program_batch(_program(gp), points)
    return out[:, 0], out[:, 1:]


def error_scales(gp: Any, point: Sequence[float]) -> ErrorScales:
    """`error_scales_batch` at one point.

    >>> x, y, w = sp.symbols("x y w", real=True)
    >>> from gradcheck_sym.symbolic import gradient_program
    >>> gp = gradient_program((x*w - y)**2, (x, y, w), (w,))
    >>> error_scales(gp, [2.0, 4.0, 1.0]).worst.tolist()
    [[36.0, 56.0]]
    """
    return error_scales_batch(gp, [point])
