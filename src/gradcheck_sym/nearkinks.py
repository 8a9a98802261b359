"""Points within rounding of a kink: where a correct float computation may take either branch.

A ReLU network at ``z = −0.70975995·1 + 0.9463466·0.75 = +2.98e-8`` (exactly) is on the active side
of ``max(z, 0)``, but float32 computes ``z`` with an error of about ``1e-7``: it may come out 0 or
negative, and then a correct ``torch.relu`` backward, a correct textbook ``dz = dh·(z > 0)`` and
torch's own ``maximum`` (which splits the gradient at a tie) all return the other branch's
gradient, or a mix of both.  None of them is wrong: rounding the value the gradient is computed
from (the pre-activation) explains it, so it belongs in the ``imprecise`` band, never in mismatch.

The rule, per point and dtype (`near_kinks`):

* a condition of the declared program (a ``rel`` instruction: what a ``Piecewise``, ``Max``,
  ``Min``, ``Abs``, ``Heaviside``, relu or clamp test becomes) is **near** when it holds, exactly,
  on one side, but ``|lhs − rhs| ≤ NEAR_FACTOR · u · (E_lhs + E_rhs)``: ``E`` the first-order
  worst-case rounding sizes of its operands from the running error analysis
  (`errorbound.slot_errors`), in the dtype's unit roundoff ``u``;
* the exact gradient is evaluated again with each near condition decided the other way (also as a
  tie, where that is a third outcome): each alone, and every combination when there are at most
  `MAX_ENUMERATED` of them (else each alone and all together);
* a source's value that is a mismatch but lies within the hull of the exact value and these
  alternatives (plus its tolerance) is **imprecise**, with a note naming the condition
  (`checks.bands`, code ``NEAR_KINK``).  Outside the hull it stays a mismatch; points on a kink
  (a condition exactly on its boundary: one-sided values, `reference`) and points far from kinks
  are not touched.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sympy as sp
import torch
from flint import arb, ctx, fmpq

from .arith import Balls, NeedPrecision, NotRational, Rationals
from .compare import FLOOR_ULPS, UNIT_ROUNDOFF, as_float
from .ir.ops import REGISTRY
from .ir.program import Program
from .reference import MAX_PREC, START_PREC, PointReference, _run, _value

NEAR_FACTOR = 4.0  # times u·(E_lhs + E_rhs): `verifier.OUTPUT_ROUNDING`'s head-room, for code that computes
#   the operands in another order (or with fused multiply-adds) than the declaration
MAX_ENUMERATED = 4  # near conditions up to which every combination of branches is evaluated
SCREEN_F64 = 8.0  # float64 values screen candidates: their own error (u₆₄·E) must not hide a near one
MAX_TEXT_NODES = 40  # a condition's operand is written out when it has at most this many operations
MAX_NAMED = 3  # conditions named in one note


@dataclass(frozen=True)
class Condition:
    """One condition of the program: the ``rel`` slots that compare the same two slots (an
    ``Abs`` and a ``Max`` of the same value share it), each with its orientation."""

    lhs: int
    rhs: int
    slots: tuple[tuple[int, int], ...]  # (rel slot, +1 if it reads (lhs, rhs), −1 if (rhs, lhs))


@dataclass(frozen=True)
class NearKinks:
    """The hull of the exact values and their branch-flipped alternatives, per point and output
    (column 0 the loss, then the gradient entries, as `checks.ExactArrays`)."""

    lo: torch.Tensor  # (points, outputs): smallest of exact and alternatives (NaN: no near condition)
    hi: torch.Tensor  # largest
    notes: list[str | None]  # per point: which conditions, how near, for people
    near_points: int  # points with a near condition


def conditions(prog: Program) -> list[Condition]:
    """The program's conditions, grouped by the pair of slots they compare."""
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for k, (op, args) in enumerate(zip(prog.ops, prog.args)):
        if REGISTRY[op].test is None:
            continue
        a, b = args[0], args[1]
        key, orient = ((a, b), 1) if a <= b else ((b, a), -1)
        groups.setdefault(key, []).append((k, orient))
    return [Condition(lhs=a, rhs=b, slots=tuple(s)) for (a, b), s in groups.items()]


def near_kinks(prog: Program, points: Sequence[Sequence[float]], refs: Sequence[PointReference], dtype: str,
               factor: float = 1.0, *, rational: bool = True) -> NearKinks | None:
    """The near conditions of ``prog`` (a gradient program: outputs loss, then gradient entries) at
    each of ``points`` (values of its variables, already rounded to ``dtype``) and the hull of its
    outputs over their branches; None where no point has one (or the program has no condition).
    ``refs``: the exact references at the points (the hull's exact values; a condition exactly on
    its boundary is left to their one-sided values)."""
    conds = conditions(prog)
    if not conds or not points:
        return None
    u = UNIT_ROUNDOFF[dtype] * factor
    last = max(k for c in conds for k, _ in c.slots)
    head = _prefix(prog, last + 1)
    from .errorbound import slot_errors

    v, E = slot_errors(head, points, u=UNIT_ROUNDOFF[dtype])
    n = len(points)
    screen = [_candidates(c, v, E, n, NEAR_FACTOR * u + SCREEN_F64 * 2.0**-53) for c in conds]
    n_out = len(prog.outputs)
    lo = torch.full((n, n_out), math.nan, dtype=torch.float64)
    hi = lo.clone()
    notes: list[str | None] = [None] * n
    count = 0
    for i in range(n):
        maybe = [c for c, s in zip(conds, screen) if s[i]]
        if not maybe:
            continue
        inputs = [fmpq(*float(x).as_integer_ratio()) for x in points[i]]
        try:
            found = _near_at(prog, inputs, maybe, [_at(E, c, i) for c in maybe], NEAR_FACTOR * u, rational)
        except Exception:  # noqa: BLE001 - no alternative there (outside a domain ...): nothing explained, a mismatch stays one
            continue
        if found is None:
            continue
        alternatives, described = found
        table = torch.tensor([_reference_row(refs[i]), *alternatives], dtype=torch.float64)
        lo[i] = _nan_min(table)
        hi[i] = _nan_max(table)
        notes[i] = _note(prog, described, dtype)
        count += 1
    if not count:
        return None
    return NearKinks(lo=lo, hi=hi, notes=notes, near_points=count)


def attach(ex: Any, near: NearKinks | None) -> Any:
    """``ex`` (`checks.ExactArrays`) with the hull of ``near`` (unchanged when there is none)."""
    if near is None:
        return ex
    return dataclasses.replace(ex, near_lo=near.lo, near_hi=near.hi, near_notes=near.notes)


def within_hull(values: Any, ex: Any, cols: slice, tol: Any, dtype: str, N: Any = None) -> Any:
    """Where a value lies within the hull of the exact value and its branch-flipped alternatives
    (`ExactArrays.near_lo`/``near_hi``), up to the tolerance ``tol`` and a few ulps; False where the
    point has no near condition.  ``N``: the array namespace the rules run on (`arrays`; torch)."""
    from .arrays import Torch
    from .checks import ulp_array

    N = Torch if N is None else N
    if getattr(ex, "near_lo", None) is None:
        return N.zeros_like(values) != 0
    lo, hi = ex.near_lo[:, cols], ex.near_hi[:, cols]
    slack = FLOOR_ULPS * ulp_array(N.maximum(abs(lo), abs(hi)), dtype, N) + N.nan_to_num(tol, nan=0.0, posinf=0.0)
    return N.isfinite(values) & (values >= lo - slack) & (values <= hi + slack)


def note_of(notes: Sequence[str | None] | None, i: int) -> str:
    """The near-kink note of point ``i`` (`checks`' ``NEAR_KINK`` band)."""
    text = notes[i] if notes is not None and i < len(notes) else None
    return text or "within rounding of a kink: a branch of the declared program is decided by rounding here"


# -- per point --------------------------------------------------------------------------------


def _prefix(prog: Program, m: int) -> Program:
    """The first ``m`` instructions (every condition's operands are among them)."""
    return Program(list(prog.ops[:m]), list(prog.args[:m]), list(prog.data[:m]), prog.variables, [], [])


def _column(x: Any, n: int) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64).expand(n)


def _candidates(c: Condition, v: list[Any], E: list[Any], n: int, scale: float) -> list[bool]:
    """Which points might have ``c`` near, from float64 values (decided exactly in `_near_at`)."""
    a, b = _column(v[c.lhs], n), _column(v[c.rhs], n)
    size = _column(E[c.lhs], n) + _column(E[c.rhs], n)
    near = ((a - b).abs() <= scale * size) & (size > 0) & torch.isfinite(size)
    return near.tolist()


def _at(E: list[Any], c: Condition, i: int) -> tuple[float, float]:
    """The rounding sizes of ``c``'s two operands at point ``i``."""
    def one(x: Any) -> float:
        t = torch.as_tensor(x, dtype=torch.float64)
        return float(t if t.dim() == 0 else t[i])

    return one(E[c.lhs]), one(E[c.rhs])


Described = list[tuple[Condition, float, float]]  # near condition, |lhs − rhs| exactly, its rounding bound


def _near_at(prog: Program, inputs: list[fmpq], maybe: list[Condition], sizes: list[tuple[float, float]],
             scale: float, rational: bool) -> tuple[list[list[float]], Described] | None:
    """At one point: the outputs with the near conditions' branches flipped, and the near
    conditions; None when, decided exactly, none is near.  Exactly in rationals when the program
    allows, else in balls, all at one precision (raised until every comparison is decided)."""
    if rational:
        try:
            return _near_in(prog, Rationals(), inputs, maybe, sizes, scale)
        except NotRational:
            pass
    prec, old = START_PREC, ctx.prec
    try:
        while True:
            ctx.prec = prec
            try:
                return _near_in(prog, Balls(final=prec >= MAX_PREC), [arb(q) for q in inputs], maybe, sizes, scale)
            except NeedPrecision:
                prec *= 2
    finally:
        ctx.prec = old


def _near_in(prog: Program, A: Any, inputs: list[Any], maybe: list[Condition], sizes: list[tuple[float, float]],
             scale: float) -> tuple[list[list[float]], Described] | None:
    vals = _run(prog, A, inputs)[0]
    near: Described = []
    states: list[list[dict[int, Any]]] = []
    for c, (e_lhs, e_rhs) in zip(maybe, sizes):
        s = A.compare(vals[c.lhs], vals[c.rhs])
        if not s:  # on the boundary (a kink: `reference`'s one-sided values), or undecidable
            continue
        gap, bound = abs(as_float(vals[c.lhs] - vals[c.rhs])), scale * (e_lhs + e_rhs)
        if gap <= bound:
            near.append((c, gap, bound))
            states.append(_states(prog, vals, c, s, bound, e_lhs > e_rhs))
    if not near:
        return None
    if len(near) <= MAX_ENUMERATED:
        combos = [combo for combo in itertools.product(*[[None, *st] for st in states]) if any(combo)]
    else:  # each alone, and all together (at the far end of their rounding)
        combos = [tuple(x if j == i else None for j in range(len(near))) for i, st in enumerate(states) for x in st]
        combos.append(tuple(st[1] for st in states))
    alternatives = []
    for combo in combos:
        override: dict[int, Any] = {}
        for state in combo:
            override.update(state or {})
        try:
            flipped = _run(prog, A, inputs, override)[0]
        except (ArithmeticError, ValueError):  # an alternative that cannot be evaluated explains nothing
            continue
        alternatives.append(_outputs(prog, A, flipped))
    return alternatives, near


def _states(prog: Program, vals: list[Any], c: Condition, sign: int, bound: float, lhs_rounds: bool
            ) -> list[dict[int, Any]]:
    """The ways a float computation may decide ``c`` otherwise than the exact sign ``sign``, as slot
    overrides for `reference._run`: the operand that carries the rounding (``lhs_rounds``: the
    first) moved onto the boundary with the conditions decided the other way; moved past it to the
    far end of its rounding error (``bound``), so that what the other branch computes from it is
    covered too (relu's output is the rounded z itself); and, where a tie is a third outcome
    (``==``, ``!=``), onto the boundary as it is."""
    moved, other = (c.lhs, c.rhs) if lhs_rounds else (c.rhs, c.lhs)
    to = 1 if moved == c.lhs else -1  # (moved − other) = to · (lhs − rhs)

    def at(t: int, magnitude: float) -> dict[int, Any]:  # lhs − rhs = t · magnitude
        step = fmpq(*float(magnitude).as_integer_ratio()) * (t * to)
        return {moved: vals[other] + (arb(step) if isinstance(vals[other], arb) else step)}

    def outcome(s: int) -> dict[int, Any]:
        out = {}
        for k, orient in c.slots:
            test = REGISTRY[prog.ops[k]].test
            assert test is not None
            out[k] = bool(test(s * orient, prog.data[k]))
        return out

    states = [{**at(0, 0.0), **outcome(-sign)}, at(-sign, bound)]
    if outcome(0) not in (outcome(sign), outcome(-sign)):
        states.append(at(0, 0.0))
    return states


def _reference_row(ref: PointReference) -> list[float]:
    """The reference's outputs as floats (NaN where there is no value: a corner, undefined)."""
    return [as_float(e.value) if e.kind == "value" else math.nan for e in (ref.loss, *ref.grads)]


def _outputs(prog: Program, A: Any, vals: list[Any]) -> list[float]:
    out = []
    for o in prog.outputs:
        x = _value(A, vals[o])
        out.append(math.nan if A.undefined(x) else as_float(x))
    return out


def _nan_min(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t.isnan(), math.inf, t).amin(dim=0).nan_to_num(nan=math.nan, posinf=math.nan)


def _nan_max(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t.isnan(), -math.inf, t).amax(dim=0).nan_to_num(nan=math.nan, neginf=math.nan)


# -- what the note says -----------------------------------------------------------------------


def _note(prog: Program, near: Described, dtype: str) -> str:
    parts = [f"`{_condition_text(prog, c)}` (|lhs − rhs| = {gap:.3g} exactly, its rounding error up to {bound:.3g})"
             for c, gap, bound in near[:MAX_NAMED]]
    more = f" and {len(near) - MAX_NAMED} more" if len(near) > MAX_NAMED else ""
    which = "the branch of " + "; ".join(parts) + more
    return (f"within rounding of a kink: {which} is decided by rounding in {dtype}, so a correct computation may "
            "take the other branch (or split a tie); the value lies between the exact gradient and the gradient "
            "with that branch flipped: not a wrong gradient")


def _condition_text(prog: Program, c: Condition) -> str:
    texts: dict[int, str] = prog.__dict__.setdefault("_near_texts", {})  # not pickled (`Program.__getstate__`)
    k, _ = c.slots[0]
    if k not in texts:
        a, b = prog.args[k]
        texts[k] = f"{_slot_text(prog, a)} {prog.data[k]} {_slot_text(prog, b)}"
    return texts[k]


def _slot_text(prog: Program, k: int) -> str:
    count = [0]

    def build(s: int) -> sp.Expr:
        count[0] += 1
        if count[0] > MAX_TEXT_NODES:
            raise OverflowError
        op, args, data = prog.ops[s], prog.args[s], prog.data[s]
        if op == "var":
            return prog.variables[data]
        if op == "const":
            return sp.sympify(data)
        xs = [build(a) for a in args]
        if op in ("add", "acc"):
            return sp.Add(*xs)
        if op in ("mul", "cmul"):
            return sp.Mul(*xs)
        if op == "pow":
            return sp.Pow(xs[0], data)
        if op == "powv":
            return sp.Pow(xs[0], xs[1])
        return sp.Function(op)(*xs)

    try:
        return str(build(k))
    except Exception:  # noqa: BLE001 - too large to write out, or not writable as SymPy: say how large
        return f"a value of {_count(prog, k)} operations (slot {k})"


def _count(prog: Program, k: int) -> int:
    seen: set[int] = set()
    stack = [k]
    while stack:
        s = stack.pop()
        if s not in seen:
            seen.add(s)
            stack.extend(prog.args[s])
    return len(seen)
