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

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import sympy as sp
import torch

from . import scalars
from .ir.ops import REGISTRY
from .ir.program import Program
from .scalars import Scalars
from .torch_codegen import evaluate

Tensor = torch.Tensor


@dataclass(frozen=True)
class ErrorScales:
    """Rounding-error sizes of each output of the program (the loss in column 0, then each
    gradient entry), in units of ``u``, one row per point."""

    worst: Tensor  # (points, outputs): first-order worst case, every error adding up
    probable: Tensor  # (points, outputs): standard deviation if errors are independent
    explained: Tensor | None = None  # (points, outputs): `compare.error_scale` of the worst case and
    #   standard deviation with every value known only to the rounding of the largest sum it enters
    #   (`_widening`); None unless asked for
    largest: Tensor | None = None  # (points,): largest |value| of any instruction (inf: overflows
    #   float64), to tell where the declared formula itself is not computable in a dtype


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

    T: Any = torch

    def __init__(self, prog: Program, points: Any, *, errors: bool = True, widen: list[Any] | None = None,
                 u: float = 2.0**-53) -> None:
        self.prog = prog
        self.u = u  # the unit roundoff the sizes are for: only an op's `accuracy` term depends on it
        self.errors = errors  # False: values only (the float64 gradient program, for speed)
        self.widen = widen  # extra rounding charged to each slot's value (`explained_scales`)
        n = len(prog)
        self._zero = self.T.zeros((), dtype=self.T.float64)
        self.v: list[Any] = [None] * n
        self.E: list[Any] = [self._zero] * n
        self.V: list[Any] = [self._zero] * n
        self.points = points

    def zero(self) -> Any:
        return self._zero

    def combine(self, parts: list[tuple[int, Any]], roundings: list[Any]) -> tuple[Any, Any]:
        if not self.errors:
            return self.E[0], self.V[0]
        # sums of non-negative terms in a fixed order, started at the first term rather than at a
        # zero tensor (0 + t is t exactly): one torch operation fewer per term on tiny batches
        e: Any = None
        var: Any = None
        for a, d in parts:
            te, tv = abs(d) * self.E[a], d * d * self.V[a]
            e, var = (te, tv) if e is None else (e + te, var + tv)
        for r in roundings:
            te, tv = abs(r), r * r
            e, var = (te, tv) if e is None else (e + te, var + tv)
        if e is None:
            return self.T.zeros((), dtype=self.T.float64), self.T.zeros((), dtype=self.T.float64)
        return e, var

    def local_partials(self, k: int) -> list[Any]:
        args = self.prog.args[k]
        prog, slots = _partials_program(self.prog.ops[k], len(args), self.prog.data[k])
        vals = evaluate(prog, [self.v[a] for a in args])
        return [vals[s] for s in slots]

    def leaf(self, j: int) -> Any:
        """Variable ``j`` at every point."""
        return self.points[:, j]

    def run(self) -> None:
        prog = self.prog
        for k, (op, args, data) in enumerate(zip(prog.ops, prog.args, prog.data)):
            spec = REGISTRY[op]
            if spec.leaf:
                self.v[k] = self.leaf(data)
            else:
                spec.rounding(self, k, args, data)
                if self.widen is not None and self.widen[k] is not None:
                    self.E[k] = self.E[k] + self.widen[k]
                    self.V[k] = self.V[k] + self.widen[k] * self.widen[k]


class _FloatPass(_Pass):
    """`_Pass` at one point on Python floats (`scalars`): the same rules, the same bounds bit for
    bit, without a torch call per instruction (only functions such as tanh call torch)."""

    T: Any = Scalars

    def local_partials(self, k: int) -> list[Any]:
        args = self.prog.args[k]
        prog, slots = _partials_program(self.prog.ops[k], len(args), self.prog.data[k])
        if not scalars.supported(prog, scalars.LOWERED | scalars.FUNCTIONS):
            raise _NotFloat
        vals = scalars.evaluate(prog, [self.v[a] for a in args])
        return [vals[s] for s in slots]

    def leaf(self, j: int) -> Any:
        return self.points[j]  # ``points``: the one point, a list of floats


class _NotFloat(Exception):
    """A program the float pass has no rule for (`scalars.supported`): the tensor pass runs it."""


def _float_passes(prog: Program, points: Sequence[Sequence[float]]) -> bool:
    """Whether the error pass at ``points`` runs on floats (`_FloatPass`): few points, and a
    program of ops with float rules."""
    return 0 < len(points) <= scalars.SCALAR_POINTS and scalars.supported(prog)


def _columns(cols: list[Any], n: int) -> Tensor:
    return torch.stack([torch.as_tensor(c, dtype=torch.float64).expand(n) for c in cols], dim=1)


def _magnitude(value: Any) -> Tensor | None:
    """|value| of a float slot (None for booleans), NaN as 0 (an unselected branch's NaN is not
    computed by anyone), infinities kept."""
    if not isinstance(value, Tensor) or not value.is_floating_point():
        return None
    return torch.nan_to_num(value.abs(), nan=0.0, posinf=math.inf)


def _widening(run: _Pass) -> list[Any]:
    """For each computed slot, how much more than its own size its value may be uncertain in an
    implementation that recovers it from a sum it entered: ``max(|c| − |v|, 0)`` over the ``add``
    and ``acc`` instructions ``c`` reading it (``1 − s`` from the rounded ``s = 1/(1 + e⁻ˣ)``
    knows ``e⁻ˣ`` only to ``u·|1 + e⁻ˣ|``)."""
    prog = run.prog
    around: list[Any] = [None] * len(prog)
    for k, (op, args) in enumerate(zip(prog.ops, prog.args)):
        if op not in ("add", "acc"):
            continue
        size = _magnitude(run.v[k])
        if size is None:
            continue
        for a in args:
            around[a] = size if around[a] is None else torch.maximum(around[a], size)
    out: list[Any] = [None] * len(prog)
    for k, op in enumerate(prog.ops):
        own = _magnitude(run.v[k])
        if around[k] is None or own is None or REGISTRY[op].leaf or op == "const":
            continue
        out[k] = torch.nan_to_num((around[k] - own).clamp_min(0.0), nan=0.0, posinf=math.inf)
    return out


def error_scales_batch(gp: Any, points: Sequence[Sequence[float]], *, explained: bool = False,
                       u: float = 2.0**-53, largest: bool = False) -> ErrorScales:
    """Running error analysis of every output of a program (or `symbolic.GradientProgram`) at
    every point (values of its variables), all points in one pass; with ``explained`` also the
    wider bound of `ErrorScales.explained` (a second pass) and each point's largest value.  ``u``:
    the unit roundoff of the dtype, which matters only for programs with an op whose torch
    implementation has an error of its own in no dtype's units (`dtype_dependent`); with ``largest``
    (and not ``explained``) each point's largest value without the second pass.  A few points run on
    floats (`_FloatPass`, the same bounds)."""
    prog = _program(gp)
    if _float_passes(prog, points):
        try:
            return _float_scales(prog, points, explained, u, largest)
        except _NotFloat:
            pass
    batch = torch.tensor(points, dtype=torch.float64).reshape(len(points), -1)
    with torch.no_grad():
        run = _Pass(prog, batch, u=u)
        run.run()
        n = batch.shape[0]
        w = _columns([run.E[o] for o in prog.outputs], n)
        v = _columns([run.V[o] for o in prog.outputs], n)
        if not (explained or largest):
            return ErrorScales(worst=w, probable=v.sqrt())
        sizes = [m for m in map(_magnitude, run.v) if m is not None]
        most = torch.stack([m.expand(n) for m in sizes], dim=1).amax(dim=1) if sizes else torch.zeros(n)
        if not explained:
            return ErrorScales(worst=w, probable=v.sqrt(), largest=most.to(torch.float64))
        wide = _Pass(prog, batch, widen=_widening(run), u=u)
        wide.run()
        from .compare import error_scale

        wide_w = _columns([wide.E[o] for o in prog.outputs], n)
        wide_v = _columns([wide.V[o] for o in prog.outputs], n)
        return ErrorScales(worst=w, probable=v.sqrt(), explained=error_scale(wide_w, wide_v.sqrt()),
                           largest=most.to(torch.float64))


def _float_magnitude(value: Any) -> float | None:
    """`_magnitude` of a float slot of `_FloatPass`."""
    if not isinstance(value, float):
        return None
    return 0.0 if value != value else abs(value)


def _float_widening(run: _Pass) -> list[Any]:
    """`_widening` of a `_FloatPass` (maxima of NaN-free magnitudes, as `torch.maximum` takes them)."""
    prog = run.prog
    around: list[Any] = [None] * len(prog)
    for k, (op, args) in enumerate(zip(prog.ops, prog.args)):
        if op not in ("add", "acc"):
            continue
        size = _float_magnitude(run.v[k])
        if size is None:
            continue
        for a in args:
            around[a] = size if around[a] is None or size > around[a] else around[a]
    out: list[Any] = [None] * len(prog)
    for k, op in enumerate(prog.ops):
        own = _float_magnitude(run.v[k])
        if around[k] is None or own is None or REGISTRY[op].leaf or op == "const":
            continue
        d = around[k] - own  # clamp_min(0) keeps NaN (inf − inf), nan_to_num makes it 0
        out[k] = 0.0 if d != d else (d if d > 0.0 else 0.0)
    return out


def _float_scales(prog: Program, points: Sequence[Sequence[float]], explained: bool, u: float,
                  largest: bool = False) -> ErrorScales:
    """`error_scales_batch` point by point on floats (`_FloatPass`): one tensor per result."""
    from .compare import error_scale

    w, v, wide_w, wide_v, most = [], [], [], [], []
    for p in points:
        run = _FloatPass(prog, [float(x) for x in p], u=u)
        run.run()
        w.append([run.E[o] for o in prog.outputs])
        v.append([run.V[o] for o in prog.outputs])
        if explained or largest:
            sizes = [m for m in map(_float_magnitude, run.v) if m is not None]
            most.append(max(sizes) if sizes else 0.0)
        if explained:
            wide = _FloatPass(prog, run.points, widen=_float_widening(run), u=u)
            wide.run()
            wide_w.append([wide.E[o] for o in prog.outputs])
            wide_v.append([wide.V[o] for o in prog.outputs])
    as_t = _float_rows
    if not (explained or largest):
        return ErrorScales(worst=as_t(w), probable=as_t(v).sqrt())
    if not explained:
        return ErrorScales(worst=as_t(w), probable=as_t(v).sqrt(), largest=torch.tensor(most, dtype=torch.float64))
    return ErrorScales(worst=as_t(w), probable=as_t(v).sqrt(), explained=error_scale(as_t(wide_w), as_t(wide_v).sqrt()),
                       largest=torch.tensor(most, dtype=torch.float64))


def _float_rows(rows: list[list[Any]]) -> Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def dtype_dependent(gp: Any) -> bool:
    """Whether some op of the program has an error independent of the dtype (`ir.ops.OpSpec.accuracy`,
    torch's trigamma): its error sizes in units of u then differ from one dtype to another."""
    return any(REGISTRY[op].accuracy is not None for op in _program(gp).ops)


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


def _values_and_worst(prog: Program, points: Sequence[Sequence[float]]) -> tuple[Tensor, Tensor]:
    """Every output of ``prog`` in float64 and its worst-case rounding size, from one error pass
    (the values an error pass computes are `program_batch`'s), for `_trusted`; the last answer
    is kept (`input_sensitivity` and `output_sensitivity` of a one-variable model ask twice)."""
    key = (id(prog), tuple(map(tuple, points)))
    if _LAST_PASS and _LAST_PASS[0] == key and _LAST_PASS[1] is prog:
        kept: tuple[Tensor, Tensor] = _LAST_PASS[2]
        return kept
    n = len(points)
    out: tuple[Tensor, Tensor] | None = None
    if _float_passes(prog, points):
        try:
            runs = [_FloatPass(prog, [float(x) for x in p]) for p in points]
            for one in runs:
                one.run()
            out = (_float_rows([[r.v[o] for o in prog.outputs] for r in runs]),
                   _float_rows([[r.E[o] for o in prog.outputs] for r in runs]))
        except _NotFloat:
            out = None
    if out is None:
        batch = torch.tensor(points, dtype=torch.float64).reshape(len(points), -1)
        with torch.no_grad():
            run = _Pass(prog, batch)
            run.run()
            out = (_columns([run.v[o] for o in prog.outputs], n), _columns([run.E[o] for o in prog.outputs], n))
    _LAST_PASS[:] = [key, prog, out] if n <= _KEPT_POINTS else []
    return out


_KEPT_POINTS = 256  # a larger answer is not kept (a few MiB at most stay alive between checks)


_LAST_PASS: list[Any] = []


def _trusted(prog: Program, points: Sequence[Sequence[float]], out: Tensor, worst: Tensor | None = None) -> Tensor:
    """``out`` (the program in float64) with the rows where its own rounding bound is not small
    against a value replaced by exact values (a declaration that cancels in float64, such as
    ``(e²ˣ − 1)/(e²ˣ + 1)`` at x = 30, would make the sensitivity depend on how it is written)."""
    from flint import fmpq

    from .compare import as_float
    from .reference import program_values

    if worst is None:
        worst = error_scales_batch(prog, points).worst
    unsure = ~(2.0**-53 * worst <= 2.0**-10 * out.abs()) & (worst != 0)
    out = out.clone()
    for r in torch.nonzero(unsure.any(dim=1)).reshape(-1).tolist():
        try:
            vals = program_values(prog, [fmpq(*float(q).as_integer_ratio()) for q in points[r]]).values
        except Exception:  # noqa: BLE001 - no exact value there: keep the float one (a size, not a verdict)
            continue
        for c, v in enumerate(vals):
            if v.kind == "value":
                out[r, c] = as_float(v.value)
    return out


def input_sensitivity(hessian: Any, wrt: Sequence[sp.Symbol], points: Sequence[Sequence[float]]) -> Tensor:
    """``Σⱼ |∂²loss/∂wᵢ∂xⱼ|·|xⱼ|`` over every variable ``xⱼ``, for each entry ``wᵢ`` of ``wrt`` (column 0,
    the loss, is NaN): how far the exact gradient moves when every input is rounded by u, which
    no implementation of the *function* avoids (units of u).  ``hessian``:
    `higher.hessian_program` over every variable; evaluated in float64 (a size, not a verdict).

    >>> from gradcheck_sym.higher import hessian_program
    >>> x, w = sp.symbols("x w", real=True)
    >>> input_sensitivity(hessian_program(x*w**2, (x, w), (x, w)), [w], [[3.0, 2.0]]).tolist()
    [[nan, 24.0]]
    """
    if hessian.extra:  # a Hessian-vector program: a large model (`sensitivity_by_columns`)
        return sensitivity_by_columns(hessian, wrt, points)
    batch = torch.tensor(points, dtype=torch.float64).reshape(len(points), -1)
    out = _trusted(hessian.program, points, *_values_and_worst(hessian.program, points))
    n = len(hessian.variables)
    h = out[:, 1 + n:1 + n + n * n].reshape(-1, n, n)
    rows = [list(hessian.variables).index(s) for s in wrt]
    sens = (h[:, rows, :].abs() * batch[:, None, :n].abs()).sum(dim=2)
    nan = torch.full((len(points), 1), math.nan, dtype=torch.float64)
    return torch.cat([nan, torch.nan_to_num(sens, nan=math.inf)], dim=1)


def output_sensitivity(hessian: Any, points: Sequence[Sequence[float]]) -> Tensor:
    """For a function of one variable, ``|y|·|y''|/|y'|`` (units of u): how far its derivative
    moves when computed from its rounded output ``y``, as standard backward formulas do
    (``1 − y²`` for tanh, ``s·(1 − s)`` for the sigmoid, ``y`` for exp).  Column 0 is 0.

    >>> from gradcheck_sym.higher import hessian_program
    >>> x = sp.Symbol("x", real=True)
    >>> [round(v, 9) for v in output_sensitivity(hessian_program(sp.tanh(x), (x,), (x,)), [[30.0]])[0].tolist()]
    [0.0, 2.0]
    """
    out = _trusted(hessian.program, points, *_values_and_worst(hessian.program, points))
    y, d1, d2 = out[:, 0].abs(), out[:, 1].abs(), out[:, 2].abs()
    term = torch.where(d2 == 0, torch.zeros_like(y), y * d2 / d1)
    return torch.stack([torch.zeros_like(y), torch.nan_to_num(term, nan=0.0, posinf=0.0)], dim=1)


def sensitivity_affordable(hvp: Any, points: int) -> bool:
    """Whether `sensitivity_by_columns` at ``points`` points fits `compare.SENSITIVITY_MAX_WORK`."""
    from .compare import SENSITIVITY_MAX_WORK

    return len(hvp.variables) * len(hvp.program) * points <= SENSITIVITY_MAX_WORK


SENSITIVITY_ROWS = 1024  # (point, variable) rows per evaluation of the Hessian-vector program


def sensitivity_by_columns(hvp: Any, wrt: Sequence[sp.Symbol], points: Sequence[Sequence[float]]) -> Tensor:
    """`input_sensitivity` for a model too large for its exact Hessian program: the same sum
    ``Σⱼ |∂²loss/∂wᵢ∂xⱼ|·|xⱼ|``, from the Hessian's columns ``H·(xⱼeⱼ)``, one forward-over-reverse
    pass (`higher.hvp_program` over every variable) per variable and point, batched
    ``SENSITIVITY_ROWS`` (point, variable) pairs at a time.  Absolute values are taken per column,
    so it is the sum of the exact terms, not a bound of the declared program's: it does not depend
    on how the maths is written.  Float64, a size not a verdict (the exact program's `_trusted`
    repair is not applied: it would cost one exact evaluation per column).

    >>> from gradcheck_sym.higher import hvp_program
    >>> x, w = sp.symbols("x w", real=True)
    >>> [round(v, 9) for v in sensitivity_by_columns(hvp_program(x*w**2, (x, w), (x, w)), [w], [[3.0, 2.0]])[0].tolist()]
    [nan, 24.0]
    """
    batch = torch.tensor(points, dtype=torch.float64).reshape(len(points), -1)
    variables = list(hvp.variables)
    n, b = len(variables), batch.shape[0]
    place, position = {s: i for i, s in enumerate(hvp.wrt)}, {s: i for i, s in enumerate(variables)}
    cols = 1 + n + torch.tensor([place[s] for s in wrt])
    seeded = torch.tensor([position[s] for s in hvp.wrt])  # the vector's entries, as variables
    point = torch.arange(b).repeat_interleave(n)  # row r: point r // n, variable r % n
    which = torch.arange(n).repeat(b)
    sens = torch.zeros((b, len(wrt)), dtype=torch.float64)
    for start in range(0, b * n, SENSITIVITY_ROWS):
        p, j = point[start:start + SENSITIVITY_ROWS], which[start:start + SENSITIVITY_ROWS]
        x = batch[p, :n]
        tangents = torch.zeros_like(x)
        tangents[torch.arange(len(p)), j] = x[torch.arange(len(p)), j]  # xⱼ eⱼ
        out = program_batch(hvp.program, torch.cat([x, tangents[:, seeded]], dim=1))
        sens.index_add_(0, p, out[:, cols].abs())
    nan = torch.full((len(points), 1), math.nan, dtype=torch.float64)
    return torch.cat([nan, torch.nan_to_num(sens, nan=math.inf)], dim=1)


def activations(prog: Program) -> list[tuple[int, int]]:
    """The elementwise functions in a forward program, as ``(y, z)`` slot pairs: ``y`` is computed
    from ``z`` alone (however it is written: ``1/(1 + e^(−z))``, ``e^z/(1 + e^z)``, ``tanh z``,
    ``1 − 2/(e^(2z) + 1)`` are all one function of ``z``), and is the largest such value (something
    reading it also reads something else, or it is the output)."""
    base: list[int | None] = [None] * len(prog)  # the one slot a computed slot is a function of
    for k, (op, args) in enumerate(zip(prog.ops, prog.args)):
        spec = REGISTRY[op]
        if spec.leaf or op == "const":
            continue
        roots = {a if base[a] is None else base[a] for a in args if prog.ops[a] != "const"}
        if len(roots) == 1:
            base[k] = roots.pop()
    read_apart = [False] * len(prog)
    for k, args in enumerate(prog.args):
        for a in args:
            if base[a] is not None and base[k] != base[a]:
                read_apart[a] = True
    outputs = set(prog.outputs)
    return [(k, z) for k, z in enumerate(base) if z is not None and (read_apart[k] or k in outputs)
            and prog.ops[k] not in ("const",) and _floating(prog, k)]


def _offsets(prog: Program, k: int) -> list[float]:
    """The constants added to slot ``k`` where it is read (SymPy merges ``(1 − 2/(e^(2z) + 1)) − y``
    into one sum, so the function's output ``1 − 2/(…)`` is ``k`` plus the sum's constants)."""
    out = [0.0]
    for c, (op, args) in enumerate(zip(prog.ops, prog.args)):
        if op in ("add", "acc") and k in args:
            consts = [float(prog.data[a]) for a in args if prog.ops[a] == "const" and not isinstance(prog.data[a], bool)]
            if consts:
                out.append(sum(consts))
    return out


def _floating(prog: Program, k: int) -> bool:
    return not REGISTRY[prog.ops[k]].boolean


def _chain(prog: Program, y: int, z: int) -> tuple[Program, tuple[Any, ...]]:
    """``y`` as a program of one variable ``t`` (the slot ``z``), with its first and second
    derivatives: outputs ``f(t)``, ``f'(t)``, ``f''(t)``; and a key for programs of the same shape."""
    from .ir.derive import backward

    needed: set[int] = set()
    stack = [y]
    while stack:
        k = stack.pop()
        if k in needed or k == z:
            continue
        needed.add(k)
        stack.extend(prog.args[k])
    sub = Program(variables=(sp.Dummy("t"),))
    new = {z: sub.emit("var", (), 0)}
    for k in sorted(needed):
        new[k] = sub.emit(prog.ops[k], tuple(new[a] for a in prog.args[k]), prog.data[k])
    d1 = backward(sub, {new[y]: sub.emit("const", (), sp.Integer(1))}, (0,))[0]
    d2 = backward(sub, {d1: sub.emit("const", (), sp.Integer(1))}, (0,))[0]
    sub.outputs = [new[y], d1, d2]
    key = tuple(zip(sub.ops, sub.args, map(repr, sub.data)))
    return sub, key


def _output_errors(sub: Program, zs: Tensor, offsets: Sequence[float] = (0.0,)) -> Tensor:
    """``|f(z)|·|f''(z)|/|f'(z)|`` at each float ``z``, from exact values (0 where f' = 0 or
    where there is no exact value); ``|f(z)|`` is the largest ``|f(z) + c|`` over ``offsets``."""
    from .reference import program_floats_many
    from .symbolic import maybe_rational

    out = [0.0] * zs.shape[0]
    finite = [(i, z) for i, z in enumerate(zs.tolist()) if math.isfinite(z)]
    try:  # every point at once (`program_floats_many`: the same values, without per-point set-up)
        results = program_floats_many(sub, [[z] for _, z in finite],  # floats: exact binary fractions
                                      rational=maybe_rational(sub))  # balls at once for exp, tanh, ...
    except Exception:  # noqa: BLE001 - no exact value somewhere: point by point, as sizes
        results = [_floats_or_none(sub, z) for _, z in finite]
    for (i, _), r in zip(finite, results):
        if r:
            y, d1, d2 = r
            size = max(abs(y + c) for c in offsets)
            out[i] = 0.0 if d1 == 0 else size * abs(d2) / abs(d1)
    return torch.nan_to_num(torch.tensor(out, dtype=zs.dtype), nan=0.0, posinf=0.0)


def _floats_or_none(sub: Program, z: float) -> Any:
    from .reference import program_floats_many

    try:
        return program_floats_many(sub, [[z]])[0]
    except Exception:  # noqa: BLE001 - no exact value there: nothing explained (a size)
        return None


def activation_sensitivity(prog: Program, wrt: Sequence[sp.Symbol], points: Sequence[Sequence[float]], *,
                           raises: bool = False) -> Tensor:
    """How far the gradient moves when every elementwise function's derivative is computed from
    its rounded output, as standard backward formulas do (``s·(1 − s)`` for a sigmoid layer,
    ``1 − y²`` for tanh), in units of u, column 0 (the loss) 0: for each function ``y = f(z)``
    (`activations`), the derivative's error ``|y|·|f''(z)|/|f'(z)|`` (times u) reaches gradient
    entry ``wᵢ`` as ``|∂loss/∂y|·|∂z/∂wᵢ|``.  A property of the functions, not of how they are
    written; evaluated in float64 with torch autograd (a size, not a verdict).

    >>> x, w = sp.symbols("x w", real=True)
    >>> from gradcheck_sym.graph import compile_expr
    >>> prog = compile_expr(sp.tanh(w * x), (w, x), rewrite_kinks=False)
    >>> [round(v, 6) for v in activation_sensitivity(prog, [w], [[1.0, 30.0]])[0].tolist()]
    [0.0, 60.0]
    """
    n = len(points)
    try:
        return _activation_sensitivity(prog, wrt, points)
    except RuntimeError:  # an op torch cannot differentiate: no explanation (a size, never the model's error)
        if raises:  # ... unless the caller is a forked child (`worker.Beside`), whose parent decides
            raise
        return torch.zeros((n, 1 + len(wrt)), dtype=torch.float64)


def _analysis(prog: Program) -> tuple[list[tuple[int, int]], dict[tuple[int, int], tuple[Program, list[float]]]]:
    """`activations` of ``prog`` and, per pair, its `_chain` (programs of the same shape shared,
    so each is compiled for exact evaluation once) and `_offsets`: kept on the program, since they
    depend on it alone (every check of a model asks again)."""
    kept = prog.__dict__.get("_activation_analysis")
    if kept is not None and kept[0] == len(prog):
        return kept[1], kept[2]
    pairs = activations(prog)
    shapes: dict[tuple[Any, ...], Program] = {}
    chains = {}
    for y, z in pairs:
        sub, key = _chain(prog, y, z)
        chains[(y, z)] = (shapes.setdefault(key, sub), _offsets(prog, y))
    prog.__dict__["_activation_analysis"] = (len(prog), pairs, chains)
    return pairs, chains


def _activation_sensitivity(prog: Program, wrt: Sequence[sp.Symbol], points: Sequence[Sequence[float]]) -> Tensor:
    pairs, chains = _analysis(prog)
    n = len(points)
    out = torch.zeros((n, 1 + len(wrt)), dtype=torch.float64)
    if not pairs:
        return out
    batch = torch.tensor(points, dtype=torch.float64).reshape(n, -1)
    columns = [c.clone().requires_grad_(True) for c in batch.T]  # one leaf per variable: no scatter
    position = {s: i for i, s in enumerate(prog.variables)}
    wanted = [columns[position[s]] for s in wrt]
    with torch.enable_grad():
        run = _Pass(prog, _ByColumn(columns), errors=False)
        run.run()
        loss = run.v[prog.outputs[0]]
        pairs = [(y, z) for y, z in pairs if all(isinstance(run.v[k], Tensor) and run.v[k].requires_grad for k in (y, z))]
        if not pairs or not (isinstance(loss, Tensor) and loss.requires_grad):
            return out  # constants, or functions torch does not differentiate (sign): nothing to explain
        adjoint = torch.autograd.grad(loss.sum(), [run.v[y] for y, _ in pairs], retain_graph=True, allow_unused=True)
        used = [(y, z, adj) for (y, z), adj in zip(pairs, adjoint) if adj is not None]
        if not used:
            return out
        sizes = []
        for y, z, adj in used:
            sub, offsets = chains[(y, z)]
            err = _output_errors(sub, run.v[z].detach().expand(n).to(torch.float64), offsets)
            sizes.append(adj.detach().abs().expand(n) * err)
        for (_, z, _), size in zip(used, sizes):  # one backward pass per function (batched ones were slower)
            dz = torch.autograd.grad(run.v[z].sum(), wanted, retain_graph=True, allow_unused=True)
            for i, d in enumerate(dz):
                if d is not None:
                    out[:, 1 + i] += size * d.abs()
    return torch.nan_to_num(out, nan=0.0, posinf=math.inf)


class _ByColumn:
    """Points as one tensor per variable, indexed as ``points[:, j]`` (what `_Pass` reads)."""

    def __init__(self, columns: list[Tensor]) -> None:
        self.columns = columns

    def __getitem__(self, key: tuple[slice, int]) -> Tensor:
        return self.columns[key[1]]




def slot_errors(prog: Program, points: Sequence[Sequence[float]], *, u: float = 2.0**-53) -> tuple[list[Any], list[Any]]:
    """Every slot's float64 value and first-order worst-case rounding size (units of ``u``), all
    points at once: entries are tensors of one value per point, or scalars shared by all (a
    constant), booleans for conditions (`nearkinks` reads the operands of each condition).

    >>> x, w = sp.symbols("x w", real=True)
    >>> from gradcheck_sym.ir.compile import compile_expr
    >>> v, E = slot_errors(compile_expr(w * x - 1, (x, w), rewrite_kinks=True), [[3.0, 2.0]])
    >>> [float(e) for e in E][-1]
    11.0
    """
    batch = torch.tensor(points, dtype=torch.float64).reshape(len(points), -1)
    with torch.no_grad():
        run = _Pass(prog, batch, u=u)
        run.run()
    return run.v, run.E
