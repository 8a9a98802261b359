"""Exact derivatives of any order and mode, as programs: the public API for second-order checks,
forward mode and vector-valued models (operators).

Every builder returns a `DerivativeProgram`: one program (`ir.program.Program`) whose outputs are
the quantities asked for, evaluable by every evaluator (`exact_values`: rationals or certified
balls, with one-sided values at kinks; `error_scales`: running error analysis for tolerances;
`float_values`: float64, batched) and differentiable again.

* `jacobian_program`: ∂outᵢ/∂wⱼ by reverse mode (one backward pass per output);
* `vjp_program`: Σᵢ cᵢ ∂outᵢ/∂wⱼ for cotangent inputs ``c`` (one backward pass);
* `jvp_program`: Σⱼ ∂outᵢ/∂wⱼ tⱼ for tangent inputs ``t`` (forward accumulation);
* `hessian_program`: ∂²loss/∂wᵢ∂wⱼ by differentiating the gradient program again (reverse over
  reverse);
* `hvp_program`: H·v for vector inputs ``v`` (forward accumulation over the gradient program).

At a point on a branch boundary, every derivative output is checked from both sides (see
`reference`): a corner of the gradient gives a *nondifferentiable* second derivative with its
one-sided values.

>>> x, w, b = sp.symbols("x w b", real=True)
>>> h = hessian_program((w * x + b) ** 3, (x, w, b), (w, b))
>>> h.labels[3:]
('d2/dw dw', 'd2/dw db', 'd2/db dw', 'd2/db db')
>>> [v.value for v in exact_values(h, {x: 2, w: 1, b: 0})][3:]
[48, 24, 24, 12]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, TypeAlias

import sympy as sp

from .ir.compile import compile_expr, compile_into
from .ir.derive import backward, forward
from .ir.program import Derivative, Direction, Program
from .reference import ExactValue, Limit, program_values
from .symbolic import differentiate

if TYPE_CHECKING:  # torch is imported only when floats are asked for
    import torch

    from .errorbound import ErrorScales

Number: TypeAlias = Fraction | int | float | sp.Rational


@dataclass(frozen=True)
class DerivativeProgram:
    """A program of exact derivatives, and what its inputs and outputs are."""

    program: Program  # variables: ``variables`` then ``extra``; outputs as ``labels`` says
    variables: tuple[sp.Symbol, ...]  # the model's variables, in the order points give them
    wrt: tuple[sp.Symbol, ...]  # the variables differentiated
    extra: tuple[sp.Symbol, ...]  # tangent / cotangent / vector inputs (empty for Jacobians, Hessians)
    labels: tuple[str, ...]  # one per output, for people ("f[0]", "d f[0]/dw", "d2/dw db", "jvp f[0]")


def _compile(outputs: Sequence[sp.Expr], variables: tuple[sp.Symbol, ...], model: str) -> Program:
    if not outputs:
        raise ValueError("no outputs to differentiate")
    prog = compile_expr(outputs[0], variables, rewrite_kinks=True, model=model)
    leaves: dict[sp.Basic, int] = dict(prog.var_slots())
    for out in outputs[1:]:
        prog.outputs.append(compile_into(prog, out, leaves, rewrite_kinks=True, model=model))
    return prog


def _indices(variables: tuple[sp.Symbol, ...], wrt: Sequence[sp.Symbol]) -> tuple[int, ...]:
    index = {s: i for i, s in enumerate(variables)}
    missing = [s for s in wrt if s not in index]
    if missing:
        raise ValueError(f"`{missing[0]}` is differentiated but not among the variables")
    return tuple(index[s] for s in wrt)


def _extra(prog: Program, prefix: str, of: Sequence[object]) -> tuple[tuple[sp.Symbol, ...], list[int]]:
    """Add one real input per item (a tangent, cotangent or vector component); their slots."""
    symbols = tuple(sp.Dummy(f"{prefix}{i}", real=True) for i in range(len(of)))
    n = len(prog.variables)
    prog.variables = prog.variables + symbols
    return symbols, [prog.emit("var", (), n + i) for i in range(len(symbols))]


def _zero(prog: Program) -> int:
    return prog.emit("const", (), sp.Integer(0))


def jacobian_program(outputs: Sequence[sp.Expr], variables: Sequence[sp.Symbol], wrt: Sequence[sp.Symbol], *,
                     model: str = "") -> DerivativeProgram:
    """Outputs: each ``outputs[i]``, then ∂outputs[i]/∂wrt[j], row by row (reverse mode).

    >>> x, w = sp.symbols("x w", real=True)
    >>> j = jacobian_program([x * w, w**2], (x, w), (w,))
    >>> [v.value for v in exact_values(j, {x: 3, w: 2})]
    [6, 4, 3, 4]
    """
    variables = tuple(variables)
    idx = _indices(variables, wrt)
    prog = _compile(outputs, variables, model)
    slots = prog.var_slots()
    wrt_slots = tuple(slots[variables[j]] for j in idx)
    outs = list(prog.outputs)
    one = prog.emit("const", (), sp.Integer(1))
    rows = [backward(prog, {o: one}, wrt_slots) for o in outs]
    prog.outputs = outs + [g for row in rows for g in row]
    prog.derivatives = [None] * len(outs) + [Derivative(o, Direction(unit=j)) for o in outs for j in idx]
    labels = [f"f[{i}]" for i in range(len(outs))]
    labels += [f"d f[{i}]/d{s}" for i in range(len(outs)) for s in wrt]
    return DerivativeProgram(prog, variables, tuple(wrt), (), tuple(labels))


def vjp_program(outputs: Sequence[sp.Expr], variables: Sequence[sp.Symbol], wrt: Sequence[sp.Symbol], *,
                model: str = "") -> DerivativeProgram:
    """Outputs: each ``outputs[i]``, then Σᵢ cᵢ ∂outputs[i]/∂wrt[j] for each j; ``extra`` are the
    cotangents ``c`` (one per output), given to `exact_values` as ``extra``.

    >>> x, w = sp.symbols("x w", real=True)
    >>> p = vjp_program([x * w, w**2], (x, w), (w,))
    >>> [v.value for v in exact_values(p, {x: 3, w: 2}, extra=[1, 10])]
    [6, 4, 43]
    """
    variables = tuple(variables)
    idx = _indices(variables, wrt)
    prog = _compile(outputs, variables, model)
    outs = list(prog.outputs)
    extra, cot = _extra(prog, "c", list(range(len(outs))))
    slots = prog.var_slots()
    wrt_slots = tuple(slots[variables[j]] for j in idx)
    seeds: dict[int, int] = {}
    for o, c in zip(outs, cot):  # an output listed twice gets both cotangents
        seeds[o] = c if o not in seeds else prog.emit("add", (seeds[o], c))
    grads = backward(prog, seeds, wrt_slots)
    # one-sided values need the differentiated scalar as a slot: Σ cᵢ outᵢ
    total = prog.emit("add", tuple(prog.emit("mul", (c, o)) for o, c in zip(outs, cot)))
    prog.outputs = outs + grads
    prog.derivatives = [None] * len(outs) + [Derivative(total, Direction(unit=j)) for j in idx]
    labels = [f"f[{i}]" for i in range(len(outs))] + [f"vjp d/d{s}" for s in wrt]
    return DerivativeProgram(prog, variables, tuple(wrt), extra, tuple(labels))


def jvp_program(outputs: Sequence[sp.Expr], variables: Sequence[sp.Symbol], wrt: Sequence[sp.Symbol], *,
                model: str = "") -> DerivativeProgram:
    """Outputs: each ``outputs[i]``, then Σⱼ ∂outputs[i]/∂wrt[j] tⱼ (forward accumulation);
    ``extra`` are the tangents ``t`` (one per ``wrt``).

    >>> x, w, b = sp.symbols("x w b", real=True)
    >>> p = jvp_program([x * w + b], (x, w, b), (w, b))
    >>> [v.value for v in exact_values(p, {x: 3, w: 2, b: 1}, extra=[1, 5])]
    [7, 8]
    """
    variables = tuple(variables)
    idx = _indices(variables, wrt)
    prog = _compile(outputs, variables, model)
    outs = list(prog.outputs)
    extra, tan = _extra(prog, "t", list(wrt))
    slots = prog.var_slots()
    seeds = {slots[variables[j]]: t for j, t in zip(idx, tan)}
    tangents = forward(prog, seeds, max(outs))
    along = Direction(vector=tuple((j, len(variables) + i) for i, j in enumerate(idx)))
    prog.outputs = outs + [tangents.of[o] if o in tangents.of else _zero(prog) for o in outs]
    prog.derivatives = [None] * len(outs) + [Derivative(o, along) for o in outs]
    labels = [f"f[{i}]" for i in range(len(outs))] + [f"jvp f[{i}]" for i in range(len(outs))]
    return DerivativeProgram(prog, variables, tuple(wrt), extra, tuple(labels))


def _gradient(loss: sp.Expr, variables: tuple[sp.Symbol, ...], idx: tuple[int, ...], model: str) -> Program:
    return differentiate(compile_expr(loss, variables, rewrite_kinks=True, model=model), idx)


def hessian_program(loss: sp.Expr, variables: Sequence[sp.Symbol], wrt: Sequence[sp.Symbol], *,
                    model: str = "") -> DerivativeProgram:
    """Outputs: the loss, its gradient (n entries), then the Hessian ∂²loss/∂wrt[i]∂wrt[j] row by
    row (n² entries), by differentiating the gradient program again (reverse over reverse)."""
    variables = tuple(variables)
    idx = _indices(variables, wrt)
    prog = _gradient(loss, variables, idx, model)
    slots = prog.var_slots()
    wrt_slots = tuple(slots[variables[j]] for j in idx)
    grads = prog.outputs[1:]
    one = prog.emit("const", (), sp.Integer(1))
    rows = [backward(prog, {g: one}, wrt_slots) for g in grads]
    prog.outputs = prog.outputs + [h for row in rows for h in row]
    prog.derivatives = prog.derivatives + [Derivative(g, Direction(unit=j)) for g in grads for j in idx]
    labels = ["loss"] + [f"d/d{s}" for s in wrt] + [f"d2/d{a} d{b}" for a in wrt for b in wrt]
    return DerivativeProgram(prog, variables, tuple(wrt), (), tuple(labels))


def hvp_program(loss: sp.Expr, variables: Sequence[sp.Symbol], wrt: Sequence[sp.Symbol], *,
                model: str = "") -> DerivativeProgram:
    """Outputs: the loss, its gradient (n entries), then (H v)ᵢ = Σⱼ ∂²loss/∂wrt[i]∂wrt[j] vⱼ
    (n entries), by forward accumulation over the gradient program; ``extra`` is ``v``.

    >>> x, w, b = sp.symbols("x w b", real=True)
    >>> p = hvp_program(w**2 * b, (x, w, b), (w, b))
    >>> [v.value for v in exact_values(p, {x: 0, w: 3, b: 2}, extra=[1, 0])]
    [18, 12, 9, 4, 6]
    """
    variables = tuple(variables)
    idx = _indices(variables, wrt)
    prog = _gradient(loss, variables, idx, model)
    grads = prog.outputs[1:]
    extra, vec = _extra(prog, "v", list(wrt))
    slots = prog.var_slots()
    seeds = {slots[variables[j]]: t for j, t in zip(idx, vec)}
    tangents = forward(prog, seeds, max(grads))
    along = Direction(vector=tuple((j, len(variables) + i) for i, j in enumerate(idx)))
    prog.outputs = prog.outputs + [tangents.of[g] if g in tangents.of else _zero(prog) for g in grads]
    prog.derivatives = prog.derivatives + [Derivative(g, along) for g in grads]
    labels = ["loss"] + [f"d/d{s}" for s in wrt] + [f"hvp d/d{s}" for s in wrt]
    return DerivativeProgram(prog, variables, tuple(wrt), extra, tuple(labels))


def _fraction(q: Number) -> Fraction:
    if isinstance(q, (Fraction, int, float)):
        return Fraction(q)
    return Fraction(int(q.p), int(q.q))  # a SymPy Rational


def _point(dp: DerivativeProgram, point: Mapping[sp.Symbol, Number], extra: Sequence[Number]) -> list[Fraction]:
    missing = [s for s in dp.variables if s not in point]
    if missing:
        raise ValueError(f"the point has no value for `{missing[0]}`")
    if len(extra) != len(dp.extra):
        raise ValueError(f"{len(dp.extra)} extra inputs expected (tangents, cotangents or vector), got {len(extra)}")
    return [_fraction(point[s]) for s in dp.variables] + [_fraction(e) for e in extra]


def exact_values(dp: DerivativeProgram, point: Mapping[sp.Symbol, Number], *, extra: Sequence[Number] = (),
                 scales: Sequence[float] | None = None, limit: Limit | None = None) -> list[ExactValue]:
    """The true value of every output at ``point`` (and the ``extra`` inputs), exactly or as a
    certified ball: `reference.ExactValue`, a value, or *nondifferentiable* with its one-sided
    values, or *undefined*.  ``scales`` (one per output) set how narrow a ball must be."""
    from flint import fmpq

    values = _point(dp, point, extra)
    return list(program_values(dp.program, [fmpq(q.numerator, q.denominator) for q in values],
                               scales=scales, limit=limit).values)


def error_scales(dp: DerivativeProgram, points: Sequence[Sequence[float]]) -> ErrorScales:
    """Running error analysis of every output (`errorbound.ErrorScales`, columns in output
    order) at each point, a row of the values of ``variables`` then ``extra``."""
    from .errorbound import error_scales_batch

    return error_scales_batch(dp.program, points)


def float_values(dp: DerivativeProgram, points: Sequence[Sequence[float]]) -> torch.Tensor:
    """Every output in float64 at each point (rows as in `error_scales`): a ``(points, outputs)``
    tensor, from the same program."""
    import torch

    from .errorbound import program_batch

    return program_batch(dp.program, torch.tensor(points, dtype=torch.float64).reshape(len(points), -1))
