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
from collections.abc import Mapping, Sequence
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
        found = _near_at(prog, inputs, maybe, [_at(E, c, i) for c in maybe], NEAR_FACTOR * u, rational)
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


def within_hull(values: torch.Tensor, ex: Any, cols: slice, tol: torch.Tensor, dtype: str) -> torch.Tensor:
    """Where a value lies within the hull of the exact value and its branch-flipped alternatives
    (`ExactArrays.near_lo`/``near_hi``), up to the tolerance ``tol`` and a few ulps; False where the
    point has no near condition."""
    from .checks import ulp_array

    if getattr(ex, "near_lo", None) is None:
        return torch.zeros_like(values, dtype=torch.bool)
    lo, hi = ex.near_lo[:, cols], ex.near_hi[:, cols]
    slack = FLOOR_ULPS * ulp_array(torch.maximum(lo.abs(), hi.abs()), dtype) + torch.nan_to_num(tol, nan=0.0, posinf=0.0)
    inside: torch.Tensor = torch.isfinite(values) & (values >= lo - slack) & (values <= hi + slack)
    return inside


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


def _at(E: list[Any], c: Condition, i: int) -> float:
    def one(x: Any) -> float:
        t = torch.as_tensor(x, dtype=torch.float64)
        return float(t if t.dim() == 0 else t[i])

    return one(E[c.lhs]) + one(E[c.rhs])


Described = list[tuple[Condition, float, float]]  # near condition, |lhs − rhs| exactly, its rounding bound


def _near_at(prog: Program, inputs: list[fmpq], maybe: list[Condition], sizes: list[float], scale: float,
             rational: bool) -> tuple[list[list[float]], Described] | None:
    """At one point: the outputs with the near conditions' branches flipped, and the near
    conditions; None when, decided exactly, none is near."""
    A, vals = _exact(prog, inputs, rational, None)
    near: Described = []
    for c, size in zip(maybe, sizes):
        s = A.compare(vals[c.lhs], vals[c.rhs])
        if not s:  # on the boundary (a kink: `reference`'s one-sided values), or undecidable
            continue
        gap = abs(as_float(vals[c.lhs] - vals[c.rhs]))
        if gap <= scale * size:
            near.append((c, gap, scale * size))
    if not near:
        return None
    choices = [_flips(prog, c, A.compare(vals[c.lhs], vals[c.rhs])) for c, _, _ in near]
    if len(near) <= MAX_ENUMERATED:
        combos = [combo for combo in itertools.product(*[[None, *alts] for alts in choices]) if any(combo)]
    else:  # each alone, and all together (their first alternative)
        combos = [tuple(alt if j == i else None for j in range(len(near))) for i, alts in enumerate(choices)
                  for alt in alts]
        combos.append(tuple(alts[0] for alts in choices))
    alternatives = []
    for combo in combos:
        force: dict[int, int] = {}
        for (c, _, _), sign in zip(near, combo):
            if sign is not None:
                force.update({k: sign * orient for k, orient in c.slots})
        try:
            B, flipped = _exact(prog, inputs, rational, force)
        except (ArithmeticError, ValueError):  # an alternative that cannot be evaluated explains nothing
            continue
        alternatives.append(_outputs(prog, B, flipped))
    return alternatives, near


def _flips(prog: Program, c: Condition, sign: int) -> list[int]:
    """The signs of ``lhs − rhs`` that decide ``c``'s tests otherwise than ``sign`` does, one per
    distinct outcome (a tie is a third outcome only for ``==`` and ``!=``)."""

    def outcome(s: int) -> tuple[bool, ...]:
        out = []
        for k, orient in c.slots:
            test = REGISTRY[prog.ops[k]].test
            assert test is not None
            out.append(bool(test(s * orient, prog.data[k])))
        return tuple(out)

    seen = {outcome(sign)}
    flips = []
    for s in (-sign, 0):
        o = outcome(s)
        if o not in seen:
            seen.add(o)
            flips.append(s)
    return flips


def _exact(prog: Program, inputs: list[fmpq], rational: bool, force: Mapping[int, int] | None) -> tuple[Any, list[Any]]:
    """Every slot's exact value (rationals, else balls at rising precision), with ``force``."""
    if rational:
        try:
            A: Any = Rationals()
            return A, _run(prog, A, inputs, force)[0]
        except NotRational:
            pass
    prec, old = START_PREC, ctx.prec
    try:
        while True:
            ctx.prec = prec
            A = Balls(final=prec >= MAX_PREC)
            try:
                return A, _run(prog, A, [arb(q) for q in inputs], force)[0]
            except NeedPrecision:
                prec *= 2
    finally:
        ctx.prec = old


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
    k, orient = c.slots[0]
    a, b = prog.args[k]
    return f"{_slot_text(prog, a)} {prog.data[k]} {_slot_text(prog, b)}"


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
    except OverflowError:
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
