"""Derivatives of programs, emitted as programs.

As the lecture teaches, every node ``z = f(a, b, ...)`` knows its local derivatives ``∂z/∂a``
(the registry emits them as instructions), and

* the **backward pass** (`backward`) forms ``∂out/∂a += ∂out/∂z · ∂z/∂a`` over the nodes in
  reverse, each contribution a ``cmul`` instruction and each sum an ``acc``; the adjoint of a
  ``Piecewise`` flows only into the branch selected (a ``gate`` instruction), so an undefined
  branch that is not selected does not poison the gradient;
* the **forward pass** (`forward`) forms ``ṫz = Σ ∂z/∂a · ṫa`` over the nodes in order.

Both append to the program they differentiate: the result is again a program of registry ops,
evaluable by every evaluator and differentiable again (second derivatives are derivatives of the
gradient program).  Shared subexpressions stay shared, so a gradient costs a small constant
times the forward; differentiating a loss once per weight with ``sympy.diff`` does not finish in
15 minutes for the lecture's 5-6-7-7-6-5 network.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from .ops import REGISTRY, carried, jvp_rule, vjp_rule
from .program import Program


def active_slots(prog: Program, seeds: set[int]) -> list[bool]:
    """Which slots depend (differentiably) on the ``seeds`` slots."""
    ops, argss = prog.ops, prog.args
    act = [False] * len(prog)
    for k in range(len(prog)):
        if k in seeds:
            act[k] = True
            continue
        args = argss[k]
        if args and any(act[args[i]] for i in carried(REGISTRY[ops[k]], len(args))):
            act[k] = True
    return act


def backward(prog: Program, seeds: dict[int, int], wrt: tuple[int, ...]) -> list[int]:
    """Emit the reverse accumulation of the slots in ``seeds`` (slot -> slot of its adjoint)
    w.r.t. the slots ``wrt``; return the slot of each ``wrt``'s adjoint (a zero constant where
    there is no path)."""
    act = active_slots(prog, set(wrt))
    contributions: dict[int, list[int]] = {s: [a] for s, a in seeds.items()}
    adjoint: dict[int, int] = {}
    wanted = set(wrt)
    for k in range(max(seeds), -1, -1):
        cs = contributions.pop(k, None)
        if cs is None:
            continue
        a = cs[0] if len(cs) == 1 else prog.emit("acc", tuple(cs))
        if k in wanted:
            adjoint[k] = a
        args = prog.args[k]
        spec = REGISTRY[prog.ops[k]]
        positions = [i for i in carried(spec, len(args)) if act[args[i]]]
        if not positions:
            continue
        rule = vjp_rule(spec)
        for i in positions:
            contributions.setdefault(args[i], []).append(rule(prog, k, i, a))
    zero = -1
    out = []
    for s in wrt:
        if s not in adjoint:
            if zero < 0:
                zero = prog.emit("const", (), sp.Integer(0))
            adjoint[s] = zero
        out.append(adjoint[s])
    return out


@dataclass
class Tangents:
    """Where `forward` put each slot's tangent, and the instructions it emitted per slot."""

    of: dict[int, int] = field(default_factory=dict)  # primal slot -> tangent slot
    emitted: dict[int, tuple[int, int]] = field(default_factory=dict)  # primal slot -> [start, end)


def forward(prog: Program, seeds: dict[int, int], upto: int) -> Tangents:
    """Emit the forward accumulation of tangents for slots ``0..upto``; ``seeds`` gives the
    tangent slot of the variables (slots not reached have no tangent: it is zero)."""
    t = Tangents(of=dict(seeds))
    for k in range(upto + 1):
        if k in seeds:
            continue
        args = prog.args[k]
        if not args:
            continue
        spec = REGISTRY[prog.ops[k]]
        positions = carried(spec, len(args))
        ts: list[int | None] = [None] * len(args)
        for i in positions:
            ts[i] = t.of.get(args[i])
        if all(x is None for x in ts):
            continue
        start = len(prog)
        tangent = jvp_rule(spec)(prog, k, ts)
        t.emitted[k] = (start, len(prog))
        if tangent is not None:
            t.of[k] = tangent
    return t
