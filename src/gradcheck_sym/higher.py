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
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, TypeAlias

import sympy as sp

from .ir.compile import compile_expr, compile_into
from .ir.derive import backward, forward
from .ir.program import Derivative, Direction, Program
from .reference import ExactValue, Limit, PointReference, program_values
from .symbolic import differentiate, maybe_rational

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
    (n entries), by forward accumulation over the gradient program, and last ∇loss·v; ``extra``
    is ``v``.

    >>> x, w, b = sp.symbols("x w b", real=True)
    >>> p = hvp_program(w**2 * b, (x, w, b), (w, b))
    >>> [v.value for v in exact_values(p, {x: 0, w: 3, b: 2}, extra=[1, 0])]
    [18, 12, 9, 4, 6, 12]
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
    loss = prog.outputs[0]
    dot = tangents.of[loss] if loss in tangents.of else _zero(prog)
    prog.outputs = prog.outputs + [tangents.of[g] if g in tangents.of else _zero(prog) for g in grads] + [dot]
    prog.derivatives = prog.derivatives + [Derivative(g, along) for g in grads] + [Derivative(loss, along)]
    labels = ["loss"] + [f"d/d{s}" for s in wrt] + [f"hvp d/d{s}" for s in wrt] + ["d/dv"]
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


# -- the interface the order-2 checks use (`orders`, `operators`) --------------------------------

Point = Mapping[sp.Symbol, Fraction | float]


@dataclass(frozen=True)
class ExactTable:
    """One first derivative (or ``∇f·v``) and its partials at each point, exactly."""

    refs: tuple[PointReference, ...]  # per point: .loss the first derivative, .grads[j] ∂/∂wrt[j]
    scale: torch.Tensor  # (points, 1 + len(wrt)): rounding-error scale in units of u
    by_dtype: dict[str, torch.Tensor] = field(default_factory=dict)  # the scale for a dtype whose u changes it
    #   (`errorbound.dtype_dependent`: trigamma's series error is the same in every dtype)


def scalarize(outputs: Sequence[sp.Expr], cotangent: Sequence[Fraction | int]) -> sp.Expr:
    """``Σ c_o f_o``: the scalar whose gradient is the vector-Jacobian product with ``c``
    (built unevaluated: no SymPy simplification of large outputs).

    >>> x, w = sp.symbols("x w", real=True)
    >>> scalarize([x * w, w**2], [2, Fraction(1, 2)])
    w**2/2 + 2*(w*x)
    """
    terms = []
    for c, f in zip(cotangent, outputs):
        if c == 0:
            continue
        q = sp.Rational(int(Fraction(c).numerator), int(Fraction(c).denominator))
        terms.append(f if q == 1 else sp.Mul(q, f, evaluate=False))
    if not terms:
        return sp.S.Zero
    return terms[0] if len(terms) == 1 else sp.Add(*terms, evaluate=False)


class SecondOrder:
    """The exact second derivatives of one scalar ``f`` w.r.t. ``wrt``: its Hessian program and
    its Hessian-vector program, each compiled once, on first use.

    >>> x, w = sp.symbols("x w", real=True)
    >>> so = SecondOrder((x*w - 1)**3, (x, w), (w,))
    >>> [str(r.grads[0].value) for r in so.hessian_rows([{x: Fraction(2), w: Fraction(1)}])[0].refs]
    ['24']
    """

    def __init__(self, f: sp.Expr, variables: tuple[sp.Symbol, ...], wrt: tuple[sp.Symbol, ...], *,
                 model: str = "") -> None:
        self.f, self.variables, self.wrt, self.model = f, variables, wrt, model
        self._hessian: DerivativeProgram | None = None
        self._hvp: DerivativeProgram | None = None

    def hessian_rows(self, points: Sequence[Point], factor: float = 1.0) -> list[ExactTable]:
        """Row ``i``: ``∂f/∂wrt[i]`` and ``∂²f/∂wrt[i]∂wrt[j]`` for every ``j``, at each point."""
        if self._hessian is None:
            self._hessian = hessian_program(self.f, self.variables, self.wrt, model=self.model)
        n = len(self.wrt)
        values, scale, by_dtype = _evaluate_all(self._hessian, points, [[] for _ in points], factor)
        tables = []
        for i in range(n):
            cols = [1 + i] + [1 + n + i * n + j for j in range(n)]
            refs = []
            for vals, arithmetic, boundary in values:
                first = vals[1 + i]
                refs.append(_gone(first, self.wrt[i], n) or PointReference(
                    first, tuple(vals[c] for c in cols[1:]), arithmetic, boundary))
            tables.append(ExactTable(refs=tuple(refs), scale=scale[:, cols],
                                     by_dtype={d: t[:, cols] for d, t in by_dtype.items()}))
        return tables

    def hvp(self, vector: Sequence[Fraction], points: Sequence[Point], factor: float = 1.0) -> ExactTable:
        """``∇f·v`` and the Hessian-vector product ``Hv`` at each point."""
        if self._hvp is None:
            self._hvp = hvp_program(self.f, self.variables, self.wrt, model=self.model)
        n = len(self.wrt)
        values, scale, by_dtype = _evaluate_all(self._hvp, points, [list(vector) for _ in points], factor)
        cols = [1 + 2 * n] + [1 + n + j for j in range(n)]
        refs = []
        for vals, arithmetic, boundary in values:
            gone = next((_gone(vals[1 + i], self.wrt[i], n) for i, c in enumerate(vector)
                         if c and not vals[1 + i].is_value), None)
            refs.append(gone or PointReference(vals[cols[0]], tuple(vals[c] for c in cols[1:]), arithmetic, boundary))
        return ExactTable(refs=tuple(refs), scale=scale[:, cols], by_dtype={d: t[:, cols] for d, t in by_dtype.items()})


def _gone(first: ExactValue, w: sp.Symbol, n: int) -> PointReference | None:
    """Where a first derivative does not exist (a corner along that entry), neither do its
    derivatives: the whole row is undefined, saying why."""
    if first.is_value:
        return None
    gone = ExactValue("undefined", reason=f"∂/∂{w} itself does not exist here ({first.kind}: {first.reason}), so "
                      "neither do its derivatives")
    return PointReference(gone, tuple(gone for _ in range(n)), "", False)


def _evaluate_all(dp: DerivativeProgram, points: Sequence[Point], extras: Sequence[Sequence[Number]], factor: float
                  ) -> tuple[list[tuple[list[ExactValue], str, bool]], torch.Tensor, dict[str, torch.Tensor]]:
    """Every output at every point, exactly, and the rounding-error scale of each (units of u of
    float64; and of each other dtype where they differ, `errorbound.dtype_dependent`)."""
    from flint import fmpq

    from .compare import error_scale
    from .dtypes import DTYPES
    from .errorbound import dtype_dependent, error_scales_batch

    rows = [_point(dp, p, e) for p, e in zip(points, extras)]
    floats = [[float(q) for q in r] for r in rows]
    es = error_scales_batch(dp.program, floats)
    by_dtype: dict[str, torch.Tensor] = {}
    if dtype_dependent(dp.program):
        for name, d in DTYPES.items():
            if name != "float64":
                other = error_scales_batch(dp.program, floats, u=d.unit_roundoff)
                by_dtype[name] = factor * error_scale(other.worst, other.probable)
    worst = es.worst.tolist()
    rational = maybe_rational(dp.program)
    out = []
    for r, scales in zip(rows, worst):
        pv = program_values(dp.program, [fmpq(q.numerator, q.denominator) for q in r], scales=scales,
                            rational=rational)
        out.append((list(pv.values), pv.arithmetic, pv.boundary))
    return out, factor * error_scale(es.worst, es.probable), by_dtype


def second_order(f: sp.Expr, variables: tuple[sp.Symbol, ...], wrt: tuple[sp.Symbol, ...], *, cache: Any = None,
                 model: str = "") -> SecondOrder:
    """A `SecondOrder` for ``f``, kept in ``cache`` (a dict, e.g. on the model) between runs."""
    if cache is None:
        return SecondOrder(f, variables, wrt, model=model)
    key = (f, variables, wrt)
    if key not in cache:
        cache[key] = SecondOrder(f, variables, wrt, model=model)
    return cache[key]  # type: ignore[no-any-return]
