"""The exact gradient program: the loss compiled (`ir.compile`), then its backward pass emitted
as instructions (`ir.derive.backward`), so that one program computes the loss and every gradient
entry, in any number system (`reference`: exact; `errorbound`: float64 with error sizes;
`torch_codegen`: torch), and can be differentiated again (`higher`).

Functions with corners are ``Piecewise`` here (see `ir.ops`: each kink entry's rewrite); the
adjoint of a ``Piecewise`` flows only into the branch selected at the point (a ``gate``), which is
what makes `reference` able to find non-differentiable points and to ignore undefined dead
branches.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .ir.compile import compile_expr, count_nodes
from .ir.derive import backward
from .ir.ops import REGISTRY
from .ir.program import Derivative, Direction, Program


@dataclass
class GradientProgram:
    """A program whose outputs are the loss, then ∂loss/∂(each entry of ``wrt``)."""

    prog: Program  # forward (slots < n_forward), then the backward pass
    n_forward: int
    wrt_slots: tuple[int, ...]  # variable slot of each differentiated entry

    @property
    def maybe_rational(self) -> bool:
        """False when some value is surely irrational: see `maybe_rational`."""
        return maybe_rational(self.prog)

    @property
    def output(self) -> int:
        return self.prog.output


def maybe_rational(prog: Program) -> bool:
    """False when some value is surely irrational (a transcendental function or constant), so
    that exact evaluation starts with balls instead of trying rationals first."""
    return not any(
        REGISTRY[op].transcendental or (REGISTRY[op].constant and not isinstance(d, (bool, sp.Rational, sp.Float)))
        for op, d in zip(prog.ops, prog.data)
    )


def differentiate(prog: Program, wrt: tuple[int, ...]) -> Program:
    """``prog`` (one output) with its gradient w.r.t. the variables at ``wrt`` (indices into
    ``prog.variables``) appended: outputs loss, then ∂loss/∂wrt_i."""
    p = prog.copy()
    loss = p.output
    slots = p.var_slots()
    wrt_slots = tuple(slots[p.variables[j]] for j in wrt)
    grads = backward(p, {loss: p.emit("const", (), sp.Integer(1))}, wrt_slots)
    p.outputs = [loss, *grads]
    p.derivatives = [None, *(Derivative(loss, Direction(unit=j)) for j in wrt)]
    return p


def gradient_program(
    loss: sp.Expr,
    variables: tuple[sp.Symbol, ...],
    wrt: tuple[sp.Symbol, ...],
    *,
    model: str = "",
) -> GradientProgram:
    """Compile ``loss`` and emit its backward pass w.r.t. ``wrt``.

    >>> x, y, w = sp.symbols("x y w", real=True)
    >>> gp = gradient_program((x*w - y)**2, (x, y, w), (w,))
    >>> gp.n_forward < len(gp.prog), len(gp.prog.outputs)
    (True, 2)
    """
    forward = compile_expr(loss, variables, rewrite_kinks=True, model=model)
    index = {s: i for i, s in enumerate(variables)}
    prog = differentiate(forward, tuple(index[s] for s in wrt))
    slots = prog.var_slots()
    return GradientProgram(prog=prog, n_forward=len(forward), wrt_slots=tuple(slots[s] for s in wrt))


CLOSED_FORM_MAX_NODES = 40  # losses larger than this get the backward recurrence, not a formula


def closed_form(loss: sp.Expr, wrt: tuple[sp.Symbol, ...]) -> dict[sp.Symbol, sp.Expr] | None:
    """``∂loss/∂w`` as a readable formula for each ``w``, for small models only.

    >>> x, y, w = sp.symbols("x y w", real=True)
    >>> closed_form((x*w - y)**2, (w,))
    {w: 2*x*(w*x - y)}
    """
    if count_nodes(loss) > CLOSED_FORM_MAX_NODES or len(wrt) > 8:
        return None
    out = {}
    for w in wrt:
        d = sp.diff(loss, w)
        factored = sp.factor(d) if not d.has(sp.Piecewise) else d
        out[w] = factored if sp.count_ops(factored) <= sp.count_ops(d) else d
    return out
