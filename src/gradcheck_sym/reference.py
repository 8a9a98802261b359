"""Exact (or certified) values of the loss and its gradient at a point.

The gradient program (`symbolic`) is run forward, then backward, in exact rationals when every
value along the way is rational, otherwise in ball arithmetic (python-flint's arb) with the
precision raised until each ball is far narrower than any float error it will be compared with.

Three situations get more than a number:

* **On a branch boundary** (a ``Piecewise`` condition, hence an ``Abs``, ``Max``, ``Heaviside``
  ..., holds with equality): each entry's one-sided partial derivatives are computed exactly by
  forward accumulation along ``+e_i`` and ``-e_i``, with branches chosen by the sign of the
  condition's directional derivative.  Equal: the derivative exists.  Different:
  *nondifferentiable*, both values kept.  A jump in the loss: *undefined*.
* **Undefined** values (``log`` of a negative, a pole) give *undefined*.
* **Removable singularities** (``sin(x)/x`` at 0): if a ``limit`` callback is given (SymPy's
  ``limit`` along a line, small models only), its value is used instead of *undefined*.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flint import arb, ctx, fmpq

from .arith import Balls, NeedPrecision, NotRational, Rationals
from .graph import logic
from .symbolic import NO_PARTIAL, GradientProgram

START_PREC = 128
MAX_PREC = 4096
# A ball counts as "exact" when its radius is below this fraction of float64's unit roundoff
# times the size of the quantity (|value| or its rounding-error scale): 2**-30 * 2**-53.
NARROW = 2.0**-83
NARROW_BITS = 83

_REL = {
    "<": lambda s: s < 0,
    "<=": lambda s: s <= 0,
    ">": lambda s: s > 0,
    ">=": lambda s: s >= 0,
    "==": lambda s: s == 0,
    "!=": lambda s: s != 0,
}


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


@dataclass(frozen=True)
class PointReference:
    """Loss and gradient entries at one point, and how they were obtained."""

    loss: ExactValue
    grads: tuple[ExactValue, ...]
    arithmetic: str  # "rational" or "ball/<bits>"
    boundary: bool  # the point lies on a branch boundary (kink) of the loss


def _apply(A: Any, op: str, k: int, args: tuple[int, ...], data: Any, vals: list[Any]) -> Any:
    """One instruction's value (all ops but ``var``, ``rel`` and ``pw``)."""
    if op == "mul":
        it = iter(args)
        r = vals[next(it)]
        for a in it:
            r = r * vals[a]
        return r
    if op == "add":
        it = iter(args)
        r = vals[next(it)]
        for a in it:
            r = r + vals[a]
        return r
    if op == "pow":
        return A.pow(vals[args[0]], data)
    if op == "const":
        return A.const(data)
    if op == "fn":
        return A.fn(data, [vals[a] for a in args])
    if op == "powv":
        return A.powv(vals[args[0]], vals[args[1]])
    if op in ("and", "or", "not"):
        return logic(op, [vals[a] for a in args])
    raise AssertionError(op)


def _pick(args: tuple[int, ...], vals: list[Any]) -> int | None:
    """Index of the selected Piecewise branch (None: undefined condition or no branch)."""
    for b in range(0, len(args), 2):
        c = vals[args[b + 1]]
        if c is None:
            return None
        if c:
            return b // 2
    return None


def _forward(gp: GradientProgram, A: Any, inputs: Sequence[Any]) -> tuple[list[Any], dict[int, int | None], bool]:
    """Evaluate every slot; return values, the branch chosen at each Piecewise, and whether any
    condition holds with equality (a boundary)."""
    prog = gp.prog
    ops, argss, datas = prog.ops, prog.args, prog.data
    vals: list[Any] = [None] * len(prog)
    chosen: dict[int, int | None] = {}
    boundary = False
    for k in range(len(prog)):
        op, args, data = ops[k], argss[k], datas[k]
        if op == "var":
            vals[k] = inputs[data]
        elif op == "rel":
            s = A.compare(vals[args[0]], vals[args[1]])
            if s == 0:
                boundary = True
            vals[k] = None if s is None else _REL[data](s)
        elif op == "pw":
            b = chosen[k] = _pick(args, vals)
            vals[k] = _nan(A) if b is None else vals[args[2 * b]]
        else:
            vals[k] = _apply(A, op, k, args, data, vals)
    return vals, chosen, boundary


def _nan(A: Any) -> Any:
    if isinstance(A, Balls):
        return arb.nan()
    raise NotRational  # rationals cannot hold an undefined value; balls (NaN) can


def _backward(gp: GradientProgram, vals: list[Any], chosen: dict[int, int | None], one: Any) -> list[Any]:
    """Adjoints ∂loss/∂slot, flowing only along live edges (selected branches)."""
    adj: list[Any] = [None] * gp.n_forward
    adj[gp.output] = one
    for k in reversed(gp.order):
        a = adj[k]
        if a is None:
            continue
        if k in gp.branches:
            b = chosen.get(k)
            if b is None:
                continue
            target = gp.branches[k][b]
            if target >= 0:
                adj[target] = a if adj[target] is None else adj[target] + a
            continue
        for arg, p in gp.edges[k]:
            c = a if p == NO_PARTIAL else a * vals[p]
            adj[arg] = c if adj[arg] is None else adj[arg] + c
    return adj


def _directional(gp: GradientProgram, A: Any, inputs: Sequence[Any], entry: int, direction: int) -> tuple[Any, Any, bool]:
    """Loss value and directional derivative along ``direction * e_entry`` from the point, with
    each boundary branch chosen by the side the direction leads to.  Returns (value, derivative,
    tie) where tie means a condition's directional derivative was zero too."""
    prog = gp.prog
    ops, argss, datas = prog.ops, prog.args, prog.data
    vals: list[Any] = [None] * len(prog)
    tans: list[Any] = [A.zero] * gp.n_forward
    seed_slot = gp.wrt_slots[entry]
    tie = False
    for k in range(gp.n_forward):
        op, args, data = ops[k], argss[k], datas[k]
        if op == "var":
            vals[k] = inputs[data]
            if k == seed_slot:
                tans[k] = A.one if direction > 0 else -A.one
            continue
        if op == "rel":
            s = A.compare(vals[args[0]], vals[args[1]])
            if s == 0:
                t = A.sign(tans[args[0]] - tans[args[1]]) if not _is_undef(A, tans[args[0]] - tans[args[1]]) else 0
                if t == 0:
                    tie = True
                s = t
            vals[k] = None if s is None else _REL[data](s)
            continue
        if op == "pw":
            b = _pick(args, vals)
            if b is None:
                vals[k] = tans[k] = _nan(A)
            else:
                vals[k], tans[k] = vals[args[2 * b]], tans[args[2 * b]]
            continue
        vals[k] = _apply(A, op, k, args, data, vals)
        if gp.active[k]:
            start, end = gp.partials[k]
            for j in range(start, end):
                vals[j] = _apply(A, ops[j], j, argss[j], datas[j], vals)
            t = A.zero
            for arg, p in gp.edges[k]:
                t = t + (tans[arg] if p == NO_PARTIAL else vals[p] * tans[arg])
            tans[k] = t
    return vals[gp.output], tans[gp.output], tie


def _is_undef(A: Any, x: Any) -> bool:
    return A.undefined(x)


def _same(A: Any, x: Any, y: Any) -> bool | None:
    """Equal (True), different (False), or cannot tell (None)."""
    if _is_undef(A, x) or _is_undef(A, y):
        return None
    if isinstance(A, Rationals):
        return x == y
    d = x - y
    if d.is_zero() or (d.contains(0) and d.rad() <= NARROW * max(abs(float(x.mid())), abs(float(y.mid())), 2.0**-1000)):
        return True
    if not d.contains(0):
        return False
    return None


def _straight_line(gp: GradientProgram) -> Any:
    """The program as one generated Python function, for programs without branches (no
    ``Piecewise``, so no boundaries and no liveness to track): the forward, the local
    derivatives and the backward accumulation as plain statements, several times faster than
    interpreting the instructions.  Returns None for programs with branches."""
    cached = getattr(gp, "_straight_line", None)
    if cached is not None or gp.branches or "rel" in gp.prog.ops:
        return cached
    prog = gp.prog
    lines = ["def run(inputs, A, C):"]
    consts: list[Any] = []
    for k, (op, args, data) in enumerate(zip(prog.ops, prog.args, prog.data)):
        a = [f"v{x}" for x in args]
        if op == "var":
            lines.append(f" v{k} = inputs[{data}]")
        elif op == "const":
            lines.append(f" v{k} = C[{len(consts)}]")
            consts.append(data)
        elif op == "add":
            lines.append(f" v{k} = {' + '.join(a)}")
        elif op == "mul":
            lines.append(f" v{k} = {' * '.join(a)}")
        elif op == "pow":
            lines.append(f" v{k} = A.pow({a[0]}, D[{k}])")
        elif op == "powv":
            lines.append(f" v{k} = A.powv({a[0]}, {a[1]})")
        elif op == "fn":
            lines.append(f" v{k} = A.fn(D[{k}], [{', '.join(a)}])")
        else:  # pragma: no cover - only rel/pw/logic, excluded above
            return None
    seen: set[int] = set()

    def accumulate(target: int, term: str) -> None:
        lines.append(f" a{target} = {term}" if target not in seen else f" a{target} = a{target} + {term}")
        seen.add(target)

    accumulate(gp.output, "A.one")
    for k in reversed(gp.order):
        for arg, p in gp.edges[k]:
            accumulate(arg, f"a{k}" if p == NO_PARTIAL else f"a{k} * v{p}")
    grads = [f"a{s}" if s in seen else "A.zero" for s in gp.wrt_slots]
    lines.append(f" return v{prog.output}, [{', '.join(grads)}]")
    namespace: dict[str, Any] = {"D": prog.data}
    exec(compile("\n".join(lines), f"<gradient program of {len(prog)} slots>", "exec"), namespace)  # noqa: S102 - our code
    fn = namespace["run"]
    gp._straight_line = (fn, tuple(consts))  # type: ignore[attr-defined]
    return gp._straight_line  # type: ignore[attr-defined]


def _evaluate(
    gp: GradientProgram, A: Any, inputs: Sequence[Any]
) -> tuple[Any, list[Any], bool, list[tuple[Any, Any, str]] | None]:
    compiled = _straight_line(gp)
    if compiled is not None:
        run, consts = compiled
        loss, grads = run(inputs, A, [A.const(c) for c in consts])
        return loss, grads, False, None
    vals, chosen, boundary = _forward(gp, A, inputs)
    loss = vals[gp.output]
    adj = _backward(gp, vals, chosen, A.one)
    grads = [A.zero if adj[s] is None else adj[s] for s in gp.wrt_slots]
    sides = None
    if boundary and not _is_undef(A, loss):
        sides = []
        for i in range(len(gp.wrt_slots)):
            vr, right, tie_r = _directional(gp, A, inputs, i, +1)
            vl, left_neg, tie_l = _directional(gp, A, inputs, i, -1)
            left = -left_neg if not _is_undef(A, left_neg) else left_neg
            jump = _same(A, vr, loss) is False or _same(A, vl, loss) is False
            note = "jump" if jump else ("tie" if (tie_r or tie_l) else "")
            sides.append((left, right, note))
    return loss, grads, boundary, sides


def _to_exact(A: Any, x: Any) -> Any:
    return None if _is_undef(A, x) else x


def reference_at(
    gp: GradientProgram,
    point: Sequence[fmpq],
    *,
    scales: Sequence[float] | None = None,
    limit: Callable[[int | None], Any] | None = None,
    rational: bool = True,
) -> PointReference:
    """The true loss and gradient at ``point`` (values of ``gp.prog.variables``, in order).

    ``scales`` (loss first, then one per entry) are the sizes that a float computation's error
    is measured against; a ball is narrow enough when its radius is below ``NARROW`` times the
    scale.  ``limit(i)`` (``None`` for the loss) may supply the value at a removable singularity.

    >>> import sympy as sp
    >>> from flint import fmpq
    >>> x, y, w = sp.symbols("x y w", real=True)
    >>> from gradcheck_sym.symbolic import gradient_program
    >>> gp = gradient_program((x*w - y)**2, (x, y, w), (w,))
    >>> reference_at(gp, [fmpq(2), fmpq(4), fmpq(1)]).grads[0].value
    -8
    """
    A: Any
    if rational:
        try:
            A = Rationals()
            loss, grads, boundary, sides = _evaluate(gp, A, list(point))
            return _package(A, loss, grads, boundary, sides, "rational", limit)
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
                inputs = [arb(q) for q in point]
                loss, grads, boundary, sides = _evaluate(gp, A, inputs)
            except NeedPrecision:
                prec *= 2
                continue
            if final or _narrow([loss, *grads], scales):
                return _package(A, loss, grads, boundary, sides, f"ball/{prec}", limit)
            prec *= 2
    finally:
        ctx.prec = old


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


def _package(
    A: Any,
    loss: Any,
    grads: list[Any],
    boundary: bool,
    sides: list[tuple[Any, Any, str]] | None,
    arithmetic: str,
    limit: Callable[[int | None], Any] | None,
) -> PointReference:
    def undefined_or_limit(i: int | None, reason: str) -> ExactValue:
        if limit is not None:
            v = limit(i)
            if v is not None:
                return ExactValue("value", v, reason="limit (removable singularity)")
        return ExactValue("undefined", reason=reason)

    if _is_undef(A, loss):
        lv = undefined_or_limit(None, "the loss is undefined here (outside its real domain or at a pole)")
        if not lv.is_value:
            return PointReference(lv, tuple(ExactValue("undefined", reason=lv.reason) for _ in grads), arithmetic, boundary)
    else:
        lv = ExactValue("value", loss)
    out = []
    for i, g in enumerate(grads):
        if sides is not None:
            left, right, note = sides[i]
            if note == "jump":
                out.append(ExactValue("undefined", reason="the loss jumps at this point (discontinuous)"))
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
        if _is_undef(A, g):
            out.append(undefined_or_limit(i, "the derivative is infinite or undefined here"))
        else:
            out.append(ExactValue("value", g))
    return PointReference(lv, tuple(out), arithmetic, boundary)
