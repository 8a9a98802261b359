"""Exact (or certified) values of a program's outputs at a point.

Any program (`ir.program.Program`: a loss and its gradient, a Jacobian, Hessian entries, JVPs) is
evaluated in exact rationals when every value along the way is rational, otherwise in ball
arithmetic (python-flint's arb) with the precision raised until each ball is far narrower than
any float error it will be compared with.  Each instruction's meaning comes from the registry
(`ir.ops`); the backward pass is instructions like any other (`ir.derive`).

Three situations get more than a number:

* **On a branch boundary** (a ``Piecewise`` condition, hence an ``Abs``, ``Max``, ``Heaviside``
  ..., holds with equality): each derivative output's one-sided values are computed exactly by
  forward accumulation along ``+d`` and ``-d`` (``d`` the direction it is taken along: a unit
  vector for a gradient or Hessian entry, the tangent for a JVP), with branches chosen by the
  sign of the condition's directional derivative.  Equal: the derivative exists.  Different:
  *nondifferentiable*, both values kept.  A jump in the differentiated quantity: *undefined*.
* **Undefined** values (``log`` of a negative, a pole) give *undefined*.
* **Removable singularities** (``sin(x)/x`` at 0): if a ``limit`` callback is given (SymPy's
  ``limit`` along a line, small models only), its value is used instead of *undefined*.
"""

from __future__ import annotations

import contextlib
import gc
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sympy as sp
from flint import arb, ctx, fmpq

from .arith import Balls, NeedPrecision, NotRational, Rationals
from .ir.derive import Tangents, forward
from .ir.ops import REGISTRY, OpSpec
from .ir.program import Derivative, Direction, Program

START_PREC = 128
MAX_PREC = 4096
# A ball counts as "exact" when its radius is below this fraction of float64's unit roundoff
# times the size of the quantity (|value| or its rounding-error scale): 2**-30 * 2**-53.
NARROW = 2.0**-83
NARROW_BITS = 83

Limit = Callable[[int], Any]  # output index -> value at a removable singularity, or None


@dataclass(frozen=True)
class ExactValue:
    """The true value of one quantity at one point."""

    kind: str  # "value" | "nondifferentiable" | "undefined"
    value: Any = None  # fmpq (exact) or arb (certified ball); None unless kind == "value"
    left: Any = None  # one-sided derivatives where kind == "nondifferentiable" (None: infinite)
    right: Any = None
    reason: str = ""  # why undefined / nondifferentiable, for people

    @property
    def is_value(self) -> bool:
        return self.kind == "value"

    @classmethod
    def of(cls, value: Any) -> ExactValue:
        """``ExactValue("value", value)``, built without the frozen dataclass's per-field
        ``object.__setattr__`` (a third of the time: hundreds of thousands per run)."""
        e = object.__new__(cls)
        e.__dict__.update(kind="value", value=value)  # the other fields keep their class defaults
        return e


@dataclass(frozen=True)
class PointReference:
    """Loss and gradient entries at one point, and how they were obtained."""

    loss: ExactValue
    grads: tuple[ExactValue, ...]
    arithmetic: str  # "rational" or "ball/<bits>"
    boundary: bool  # the point lies on a branch boundary (kink) of the loss


@dataclass(frozen=True)
class ProgramValues:
    """Every output of a program at one point, and how they were obtained."""

    values: tuple[ExactValue, ...]
    arithmetic: str  # "rational" or "ball/<bits>"
    boundary: bool  # the point lies on a branch boundary


def _specs(prog: Program) -> list[OpSpec]:
    cached: list[OpSpec] | None = getattr(prog, "_specs", None)
    if cached is None or len(cached) != len(prog):
        cached = [REGISTRY[op] for op in prog.ops]
        prog._specs = cached  # type: ignore[attr-defined]
    return cached


def _undefined(A: Any, x: Any) -> bool:
    return bool(A.undefined(x))


def _value(A: Any, x: Any) -> Any:
    """A slot's value as a number: "nothing" (no adjoint reached it) is zero."""
    return A.zero if x is None else x


def _run(prog: Program, A: Any, inputs: Sequence[Any], override: Mapping[int, Any] | None = None
         ) -> tuple[list[Any], bool]:
    """Every slot's value, and whether some condition holds with equality (a boundary).
    ``override``: slot -> the value it takes instead (`nearkinks`: a condition decided the other
    way, an operand at the far end of its rounding error)."""
    specs = _specs(prog)
    argss, datas = prog.args, prog.data
    vals: list[Any] = [None] * len(prog)
    boundary = False
    for k in range(len(prog)):
        spec, args, data = specs[k], argss[k], datas[k]
        if override is not None and k in override:
            vals[k] = override[k]
        elif spec.leaf:
            vals[k] = inputs[data]
        elif spec.test is not None:
            s = A.compare(vals[args[0]], vals[args[1]])
            if s == 0:
                boundary = True
            vals[k] = None if s is None else spec.test(s, data)
        else:
            vals[k] = spec.exact(A, [vals[a] for a in args], data)
    return vals, boundary


def _straight_line(prog: Program) -> Any:
    """The program as one generated Python function, for programs without branches (no
    conditions, so no boundaries and no liveness to track): every instruction a plain statement,
    looked up in the registry, several times faster than interpreting them.  None for programs
    with branches."""
    cached = getattr(prog, "_straight_line", None)
    if cached is not None and cached[2] == (len(prog), prog.outputs):
        return cached
    specs = _specs(prog)
    if any(s.selects or s.test is not None or s.boolean for s in specs):
        return None
    lines = ["def run(inputs, A, C, F, D):"]
    consts: list[tuple[OpSpec, Any]] = []
    fns: dict[int, Any] = {}
    for k, (spec, args, data) in enumerate(zip(specs, prog.args, prog.data)):
        a = [f"v{x}" for x in args]
        if spec.leaf:
            lines.append(f" v{k} = inputs[{data}]")
        elif spec.constant:
            lines.append(f" v{k} = C[{len(consts)}]")
            consts.append((spec, data))
        elif spec.code is not None:
            lines.append(f" v{k} = {spec.code(a)}")
        elif spec.name == "pow" and data in (2, -1):  # the common powers without the general rule's dispatch
            lines.append(f" v{k} = {a[0]} * {a[0]}" if data == 2 else f" v{k} = A.inv({a[0]})")
        else:
            fns[k] = spec.exact
            lines.append(f" v{k} = F[{k}](A, [{', '.join(a)}], D[{k}])")
    lines.append(f" return [{', '.join(f'v{o}' for o in prog.outputs)}]")
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(lines), f"<program of {len(prog)} slots>", "exec"), namespace)  # noqa: S102 - our code
    compiled = (namespace["run"], tuple(consts), (len(prog), list(prog.outputs)), fns)
    prog._straight_line = compiled  # type: ignore[attr-defined]
    return compiled


class _Sided:
    """The program extended by forward accumulation of tangents along direction variables: the
    instrument for one-sided derivatives at a boundary."""

    def __init__(self, prog: Program) -> None:
        derivs = [d for d in prog.derivatives if d is not None]
        along = sorted({j for d in derivs for j in _components(d.along)})
        self.prog = p = prog.copy()
        n = len(prog.variables)
        p.variables = prog.variables + tuple(sp.Dummy(f"d{j}") for j in along)
        self.position = {j: i for i, j in enumerate(along)}  # differentiated variable -> direction input
        self.dir_slots = [p.emit("var", (), n + i) for i in range(len(along))]
        var_slots = {d: k for k, (op, d) in enumerate(zip(p.ops, p.data)) if REGISTRY[op].leaf and k < len(prog)}
        seeds = {var_slots[j]: s for j, s in zip(along, self.dir_slots) if j in var_slots}
        self.upto = max((d.of for d in derivs), default=-1)
        self.tangents: Tangents = forward(p, seeds, self.upto)
        self.n = n


def _components(d: Direction) -> list[int]:
    return [d.unit] if d.unit >= 0 else [j for j, _ in d.vector]


def _sided(prog: Program) -> _Sided:
    cached: tuple[int, list[int], _Sided] | None = getattr(prog, "_sided", None)
    if cached is None or cached[0] != len(prog) or cached[1] != prog.outputs:  # built for this program as it is
        cached = (len(prog), list(prog.outputs), _Sided(prog))
        prog._sided = cached  # type: ignore[attr-defined]
    return cached[2]


def _directional(S: _Sided, A: Any, inputs: Sequence[Any], direction: list[Any]) -> tuple[list[Any], bool]:
    """Values and tangents along ``direction`` (one value per direction input), with each
    boundary branch chosen by the side the direction leads to; also whether a condition's
    directional derivative was zero too (a tie)."""
    p = S.prog
    specs = _specs(p)
    argss, datas = p.args, p.data
    vals: list[Any] = [None] * len(p)
    full = list(inputs) + direction
    for slot in S.dir_slots:
        vals[slot] = full[datas[slot]]
    tan = S.tangents.of
    tie = False

    def step(k: int, sided: bool) -> None:
        nonlocal tie
        spec, args, data = specs[k], argss[k], datas[k]
        if spec.leaf:
            vals[k] = full[data]
        elif spec.test is not None:
            s = A.compare(vals[args[0]], vals[args[1]])
            if s == 0 and sided:
                d = _value(A, vals[tan[args[0]]] if args[0] in tan else None) - \
                    _value(A, vals[tan[args[1]]] if args[1] in tan else None)
                s = 0 if _undefined(A, d) else A.sign(d)
                if s == 0:
                    tie = True
            vals[k] = None if s is None else spec.test(s, data)
        else:
            vals[k] = spec.exact(A, [vals[a] for a in args], data)

    emitted = S.tangents.emitted
    for k in range(S.upto + 1):
        step(k, True)
        if k in emitted:
            start, end = emitted[k]
            for j in range(start, end):
                step(j, False)
    return vals, tie


def _same(A: Any, x: Any, y: Any) -> bool | None:
    """Equal (True), different (False), or cannot tell (None)."""
    if _undefined(A, x) or _undefined(A, y):
        return None
    if isinstance(A, Rationals):
        return bool(x == y)
    d = x - y
    if d.is_zero() or (d.contains(0) and d.rad() <= NARROW * max(abs(float(x.mid())), abs(float(y.mid())), 2.0**-1000)):
        return True
    if not d.contains(0):
        return False
    return None


Sides = dict[int, tuple[Any, Any, str]]  # output index -> (left, right, note)


def _one_sided(prog: Program, A: Any, inputs: Sequence[Any], vals: list[Any]) -> Sides:
    """Left and right values of every derivative output, by directional passes (two per
    direction), at a point on a boundary."""
    S = _sided(prog)
    passes: dict[tuple[Direction, int], tuple[list[Any], bool]] = {}
    sides: Sides = {}
    for i, d in enumerate(prog.derivatives):
        if d is None or _undefined(A, _value(A, vals[d.of])):
            continue
        results = []
        for sign in (+1, -1):
            key = (d.along, sign)
            if key not in passes:
                passes[key] = _directional(S, A, inputs, _direction(S, A, inputs, d.along, sign))
            dv, tie = passes[key]
            t = _value(A, dv[S.tangents.of[d.of]] if d.of in S.tangents.of else None)
            results.append((_value(A, dv[d.of]), t, tie))
        (vr, right, tie_r), (vl, left_neg, tie_l) = results
        left = -left_neg if not _undefined(A, left_neg) else left_neg
        base = _value(A, vals[d.of])
        jump = _same(A, vr, base) is False or _same(A, vl, base) is False
        sides[i] = (left, right, "jump" if jump else ("tie" if (tie_r or tie_l) else ""))
    return sides


def _direction(S: _Sided, A: Any, inputs: Sequence[Any], along: Direction, sign: int) -> list[Any]:
    out = [A.zero] * len(S.position)
    if along.unit >= 0:
        out[S.position[along.unit]] = A.one if sign > 0 else -A.one
    else:
        for j, h in along.vector:
            out[S.position[j]] = inputs[h] if sign > 0 else -inputs[h]
    return out


def _constants(prog: Program, compiled: Any, A: Any) -> list[Any]:
    """The straight-line program's constants in ``A`` at the working precision, made once (a
    SymPy number converted per point cost as much as the arithmetic of a small program)."""
    cache: dict[tuple[Any, ...], list[Any]] | None = getattr(prog, "_constants", None)
    if cache is None or next(iter(cache), (None,))[0] is not compiled[0]:
        cache = {}
        prog._constants = cache  # type: ignore[attr-defined]
    key = (compiled[0], A.name, ctx.prec)
    values = cache.get(key)
    if values is None:
        values = cache[key] = [spec.exact(A, [], c) for spec, c in compiled[1]]
    return values


def _evaluate(prog: Program, A: Any, inputs: Sequence[Any]) -> tuple[list[Any], bool, Sides | None]:
    compiled = _straight_line(prog)
    if compiled is not None:
        run, _, _, fns = compiled
        outs = run(inputs, A, _constants(prog, compiled, A), fns, prog.data)
        return [_value(A, o) for o in outs], False, None
    vals, boundary = _run(prog, A, inputs)
    outs = [_value(A, vals[o]) for o in prog.outputs]
    sides = _one_sided(prog, A, inputs, vals) if boundary and prog.derivatives else None
    return outs, boundary, sides


def program_values(
    prog: Program,
    point: Sequence[fmpq],
    *,
    scales: Sequence[float] | None = None,
    limit: Limit | None = None,
    rational: bool = True,
) -> ProgramValues:
    """The true value of every output of ``prog`` at ``point`` (values of ``prog.variables``).

    ``scales`` (one per output) are the sizes a float computation's error is measured against; a
    ball is narrow enough when its radius is below ``NARROW`` times the scale.  ``limit(i)`` may
    supply output ``i``'s value at a removable singularity.

    >>> x, w = sp.symbols("x w", real=True)
    >>> from gradcheck_sym.ir.compile import compile_expr
    >>> program_values(compile_expr(x * w**2, (x, w), rewrite_kinks=True), [fmpq(3), fmpq(2)]).values[0].value
    12
    """
    A: Any
    if rational:
        try:
            A = Rationals()
            outs, boundary, sides = _evaluate(prog, A, list(point))
            return _package(prog, A, outs, boundary, sides, "rational", limit)
        except NotRational:
            pass
    prec = START_PREC
    old = ctx.prec
    try:
        while True:
            final = prec >= MAX_PREC
            ctx.prec = prec
            A = Balls(final=final)
            try:
                outs, boundary, sides = _evaluate(prog, A, [arb(q) for q in point])
            except NeedPrecision:
                prec *= 2
                continue
            if final or _narrow(outs, scales):
                return _package(prog, A, outs, boundary, sides, f"ball/{prec}", limit)
            prec *= 2
    finally:
        ctx.prec = old


def program_values_many(
    prog: Program,
    points: Sequence[Sequence[fmpq | float]],
    *,
    scales: Sequence[Sequence[float]] | None = None,
    rational: bool = True,
) -> list[ProgramValues]:
    """`program_values` at each of ``points`` (``scales``: one row per point), with the same
    results, for many points at once: a straight-line program is run at every point with the
    precision, the number system and the constants set up once; a point that needs more (a
    wider precision) is left to `program_values`.  A point's values may be floats: the binary
    fractions they are (a ball is made from a float exactly, five times faster than from a fraction).

    >>> x, w = sp.symbols("x w", real=True)
    >>> from gradcheck_sym.ir.compile import compile_expr
    >>> prog = compile_expr(sp.exp(x) * w, (x, w), rewrite_kinks=True)
    >>> [r.arithmetic for r in program_values_many(prog, [[fmpq(0), fmpq(3)], [fmpq(1), fmpq(2)]])]
    ['rational', 'ball/128']
    """
    def package(A: Any, outs: list[Any], arithmetic: str) -> ProgramValues:
        if A.name == "ball" and all(o.is_finite() for o in outs):  # every output a value: nothing more to it
            return ProgramValues(tuple(map(ExactValue.of, outs)), arithmetic, False)
        return _package(prog, A, outs, False, None, arithmetic, None)

    return _many(prog, points, scales, rational, package, lambda r: r)


# The floats of a point some of whose outputs are not values (`program_floats_many`)
NOT_VALUES = ()


def program_floats_many(prog: Program, points: Sequence[Sequence[fmpq | float]], *, rational: bool = True
                        ) -> list[tuple[float, ...]]:
    """The nearest float of each output's exact value (`compare.as_float`) at each of ``points``, as
    `program_values_many` computes them, or `NOT_VALUES` where some output is not a value
    (undefined, a corner): for sizes, which need no exact value kept (no objects per value).

    >>> x = sp.Symbol("x", real=True)
    >>> from gradcheck_sym.ir.compile import compile_expr
    >>> program_floats_many(compile_expr(sp.exp(x) / x, (x,), rewrite_kinks=True), [[0.0], [1.0]])
    [(), (2.718281828459045,)]
    """
    from .compare import as_float

    def floats(A: Any, outs: list[Any], arithmetic: str) -> tuple[float, ...]:
        if A.name == "ball":
            return tuple(float(o.mid()) for o in outs) if all(o.is_finite() for o in outs) else NOT_VALUES
        return tuple(as_float(o) for o in outs)  # rationals: always values

    def of_values(r: ProgramValues) -> tuple[float, ...]:
        if all(v.kind == "value" for v in r.values):
            return tuple(as_float(v.value) for v in r.values)
        return NOT_VALUES

    return _many(prog, points, None, rational, floats, of_values)


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused over a block that allocates hundreds of thousands
    of small objects without cycles (an `ExactValue` per value, a list per point): each collection
    they trigger walks the whole heap (225,000 values: 0.36-0.51 s with it, 0.10-0.12 s without).
    Cycles made meanwhile are collected when it resumes."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def _many(prog: Program, points: Sequence[Sequence[fmpq | float]], scales: Sequence[Sequence[float]] | None,
          rational: bool, make: Callable[[Any, list[Any], str], Any], otherwise: Callable[[ProgramValues], Any]
          ) -> list[Any]:
    """``make(A, outputs, arithmetic)`` at each point evaluated in the batch, ``otherwise`` of
    `program_values` at the others."""
    points = [p if all(type(q) is fmpq or (type(q) is float and math.isfinite(q)) for q in p) else _fractions(p)
              for p in points]  # an infinite or NaN "point" fails as `program_values` fails on it
    compiled = _straight_line(prog)
    out: list[Any] = [None] * len(points)
    if compiled is not None:
        with collection_paused():
            todo: Sequence[int] = range(len(points))
            if rational:
                todo = _rational_values(prog, points, out, make)
            _ball_values(prog, compiled, points, todo, scales, out, make)
    return [r if r is not None else otherwise(program_values(prog, _fractions(p), rational=rational,
                                                             scales=None if scales is None else scales[i]))
            for i, (r, p) in enumerate(zip(out, points))]


def _fractions(point: Sequence[fmpq | float]) -> list[fmpq]:
    return [q if isinstance(q, fmpq) else fmpq(*float(q).as_integer_ratio()) for q in point]


def _rational_values(prog: Program, points: Sequence[Sequence[fmpq | float]], out: list[Any],
                     make: Callable[[Any, list[Any], str], Any]) -> list[int]:
    """Fill ``out`` where a point's values are all rational; the others' indices."""
    A = Rationals()
    todo = []
    for i, p in enumerate(points):
        try:
            outs, _, _ = _evaluate(prog, A, _fractions(p))
        except NotRational:
            todo.append(i)
            continue
        out[i] = make(A, outs, "rational")
    return todo


def _ball_values(prog: Program, compiled: Any, points: Sequence[Sequence[fmpq | float]], todo: Sequence[int],
                 scales: Sequence[Sequence[float]] | None, out: list[Any],
                 make: Callable[[Any, list[Any], str], Any]) -> None:
    """Fill ``out`` at the points ``todo`` whose balls at `START_PREC` are narrow (as
    `program_values` would accept them there)."""
    run, _, _, fns = compiled
    arithmetic = f"ball/{START_PREC}"
    old = ctx.prec
    try:
        ctx.prec = START_PREC
        A = Balls(final=START_PREC >= MAX_PREC)
        consts, data, zero = _constants(prog, compiled, A), prog.data, A.zero
        for i in todo:
            try:
                outs = run([arb(q) for q in points[i]], A, consts, fns, data)
            except NeedPrecision:
                continue
            outs = [zero if o is None else o for o in outs]
            if _narrow(outs, None if scales is None else scales[i]):
                out[i] = make(A, outs, arithmetic)
    finally:
        ctx.prec = old


def reference_at(
    gp: Any,
    point: Sequence[fmpq],
    *,
    scales: Sequence[float] | None = None,
    limit: Callable[[int | None], Any] | None = None,
    rational: bool = True,
) -> PointReference:
    """The true loss and gradient at ``point``, from a gradient program (`symbolic`) whose
    outputs are the loss, then the gradient entries.  ``limit(i)`` (``None`` for the loss) may
    supply a value at a removable singularity.

    >>> x, y, w = sp.symbols("x y w", real=True)
    >>> from gradcheck_sym.symbolic import gradient_program
    >>> gp = gradient_program((x*w - y)**2, (x, y, w), (w,))
    >>> reference_at(gp, [fmpq(2), fmpq(4), fmpq(1)]).grads[0].value
    -8
    """
    lim: Limit | None = None if limit is None else (lambda i: limit(None if i == 0 else i - 1))
    r = program_values(gp.prog, point, scales=scales, limit=lim, rational=rational)
    return PointReference(r.values[0], r.values[1:], r.arithmetic, r.boundary)


def _narrow(values: Sequence[Any], scales: Sequence[float] | None) -> bool:
    for i, v in enumerate(values):
        if v.rel_accuracy_bits() >= NARROW_BITS or not v.is_finite() or v.is_exact():
            continue  # narrow relative to itself (the common case, decided in C)
        scale = abs(float(v.mid()))
        if scales is not None and i < len(scales):
            scale = max(scale, scales[i])
        if not float(v.rad()) <= NARROW * scale:
            return False
    return True


def _to_exact(A: Any, x: Any) -> Any:
    return None if _undefined(A, x) else x


def _package(
    prog: Program,
    A: Any,
    outs: list[Any],
    boundary: bool,
    sides: Sides | None,
    arithmetic: str,
    limit: Limit | None,
) -> ProgramValues:
    def undefined_or_limit(i: int, reason: str) -> ExactValue:
        if limit is not None:
            v = limit(i)
            if v is not None:
                return ExactValue("value", v, reason="limit (removable singularity)")
        return ExactValue("undefined", reason=reason)

    index = {slot: i for i, slot in enumerate(prog.outputs)}
    out: list[ExactValue] = []
    for i, g in enumerate(outs):
        d: Derivative | None = prog.derivative_of(i)
        of = out[index[d.of]] if d is not None and d.of in index and index[d.of] < i else None
        if of is not None and of.kind == "undefined" and of.left is None and _undefined(A, outs[index[d.of]]):  # type: ignore[union-attr]
            out.append(ExactValue("undefined", reason=of.reason))  # what it differentiates is undefined
            continue
        if of is not None and of.kind == "nondifferentiable":  # a corner: no derivative of it, not even one-sided
            out.append(ExactValue("undefined", reason="the derivative it differentiates does not exist here "
                                  f"({of.reason}), so neither does this one"))
            continue
        if d is None:
            if _undefined(A, g):
                what = "the loss" if i == 0 else "the value"
                out.append(undefined_or_limit(i, f"{what} is undefined here (outside its real domain or at a pole)"))
            else:
                out.append(ExactValue("value", g))
            continue
        if sides is not None and i in sides:
            left, right, note = sides[i]
            if note == "jump":
                what = "the loss" if prog.outputs and d.of == prog.outputs[0] else "the quantity differentiated"
                out.append(ExactValue("undefined", reason=f"{what} jumps at this point (discontinuous)"))
                continue
            same = _same(A, left, right)
            if same:
                out.append(ExactValue("value", right, reason="on a branch boundary; both one-sided derivatives agree"))
                continue
            if same is False:
                out.append(ExactValue(
                    "nondifferentiable", left=_to_exact(A, left), right=_to_exact(A, right),
                    reason="the one-sided derivatives differ (a corner)",
                ))
                continue
            out.append(ExactValue(
                "undefined", left=_to_exact(A, left), right=_to_exact(A, right),
                reason="a one-sided derivative is infinite or undefined here",
            ))
            continue
        if _undefined(A, g):
            out.append(undefined_or_limit(i, "the derivative is infinite or undefined here"))
        else:
            out.append(ExactValue("value", g))
    return ProgramValues(tuple(out), arithmetic, boundary)
