"""The exact gradient program: reverse accumulation over the expression graph.

As the lecture teaches, every node ``z = f(a, b, ...)`` knows its local derivatives
``∂z/∂a``, and the backward pass forms ``∂loss/∂a += ∂loss/∂z · ∂z/∂a``.  Here the local
derivatives are SymPy's own (``f(d).diff(d)`` on a dummy ``d``) compiled into the same program as
the forward, over the slots of the node and its arguments, so shared subexpressions stay shared
and the whole gradient costs a small constant times the forward.  Differentiating the full loss
once per weight (``sympy.diff``) instead repeats the work per weight and per path: it does not
finish in 15 minutes for the lecture's 5-6-7-7-6-5 network.

Functions with corners are ``Piecewise`` here (see `functions.rewrite_kink`); the adjoint of a
``Piecewise`` flows only into the branch selected at the point, which is what makes
``reference`` able to find non-differentiable points and to ignore undefined dead branches.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import sympy as sp

from .graph import Program, compile_expr, compile_into, count_nodes

NO_PARTIAL = -1  # the local derivative is exactly 1 (sums)


@dataclass
class GradientProgram:
    """Forward instructions, then each active node's local-derivative instructions.

    The backward pass itself is a loop over ``order`` in reverse (see `reference`), driven by
    ``edges`` and ``branches``; it needs no instructions of its own.
    """

    prog: Program  # forward (slots < n_forward), then local derivatives
    n_forward: int
    active: list[bool]  # slot depends on a differentiated variable
    order: tuple[int, ...]  # active forward slots, topological
    edges: dict[int, tuple[tuple[int, int], ...]]  # node -> ((arg slot, partial slot), ...)
    branches: dict[int, tuple[int, ...]]  # Piecewise node -> active branch value slots (-1: none)
    partials: dict[int, tuple[int, int]]  # node -> [start, end) of its local-derivative slots
    wrt_slots: tuple[int, ...]  # variable slot of each differentiated entry

    @property
    def maybe_rational(self) -> bool:
        """False when some value is surely irrational (a transcendental function or constant), so
        that exact evaluation starts with balls instead of trying rationals first."""
        ops, data = self.prog.ops, self.prog.data
        return not any(
            op in ("fn", "powv") or (op == "const" and not isinstance(d, (bool, sp.Rational, sp.Float)))
            for op, d in zip(ops, data)
        )

    @property
    def output(self) -> int:
        return self.prog.output


@lru_cache(maxsize=None)
def _derivative_template(f: type, nargs: int, i: int) -> tuple[sp.Basic, tuple[sp.Dummy, ...], sp.Dummy]:
    """``∂f(d0, d1, ...)/∂di`` over dummies, with ``f(d...)`` itself replaced by ``value``."""
    ds = tuple(sp.Dummy(f"d{j}", real=True) for j in range(nargs))
    value = sp.Dummy("value", real=True)
    applied = f(*ds)
    return sp.diff(applied, ds[i]).xreplace({applied: value}), ds, value


def _partial(prog: Program, k: int, i: int) -> int:
    """Emit the local derivative of slot ``k`` w.r.t. its ``i``-th argument; return its slot."""
    op, args = prog.ops[k], prog.args[k]
    if op == "add":
        return NO_PARTIAL
    if op == "mul":
        others = args[:i] + args[i + 1 :]
        return others[0] if len(others) == 1 else prog.emit("mul", others)
    if op == "pow":
        e = prog.data[k]
        if e == 2:
            return prog.emit("mul", (prog.emit("const", (), sp.Integer(2)), args[0]))
        if e == -1:  # -(1/b)**2, from the node's own value
            return prog.emit("mul", (prog.emit("const", (), sp.Integer(-1)), prog.emit("pow", (k,), sp.Integer(2))))
        if e == sp.Rational(1, 2):  # 1 / (2 sqrt(b))
            return prog.emit("mul", (prog.emit("const", (), sp.Rational(1, 2)), prog.emit("pow", (k,), sp.Integer(-1))))
        return prog.emit("mul", (prog.emit("const", (), e), prog.emit("pow", (args[0],), e - 1)))
    if op == "powv":
        b, e = args
        if i == 0:
            e_minus_1 = prog.emit("add", (e, prog.emit("const", (), sp.Integer(-1))))
            return prog.emit("mul", (e, prog.emit("powv", (b, e_minus_1))))
        return prog.emit("mul", (k, prog.emit("fn", (b,), sp.log)))
    if op == "fn":
        template, ds, value = _derivative_template(prog.data[k], len(args), i)
        leaves = {d: a for d, a in zip(ds, args)}
        leaves[value] = k
        return compile_into(prog, template, leaves, rewrite_kinks=True)
    raise AssertionError(f"no local derivative for op {op}")


def gradient_program(
    loss: sp.Expr,
    variables: tuple[sp.Symbol, ...],
    wrt: tuple[sp.Symbol, ...],
    *,
    model: str = "",
) -> GradientProgram:
    """Compile ``loss`` and the local derivatives that its gradient w.r.t. ``wrt`` needs.

    >>> x, y, w = sp.symbols("x y w", real=True)
    >>> gp = gradient_program((x*w - y)**2, (x, y, w), (w,))
    >>> gp.n_forward < len(gp.prog)
    True
    """
    prog = compile_expr(loss, variables, rewrite_kinks=True, model=model)
    n = len(prog)
    var_slots = prog.var_slots()
    wrt_slots = tuple(var_slots[s] for s in wrt)
    active = [False] * n
    for s in wrt_slots:
        active[s] = True
    for k in range(n):
        op, args = prog.ops[k], prog.args[k]
        if op == "pw":
            active[k] = any(active[a] for a in args[0::2])
        elif op in ("add", "mul", "pow", "powv", "fn"):
            active[k] = any(active[a] for a in args)
    order = tuple(k for k in range(n) if active[k] and prog.ops[k] != "var")
    edges: dict[int, tuple[tuple[int, int], ...]] = {}
    branches: dict[int, tuple[int, ...]] = {}
    partials: dict[int, tuple[int, int]] = {}
    for k in order:
        start = len(prog)
        args = prog.args[k]
        if prog.ops[k] == "pw":
            branches[k] = tuple(a if active[a] else -1 for a in args[0::2])
        else:
            edges[k] = tuple((a, _partial(prog, k, i)) for i, a in enumerate(args) if active[a])
        partials[k] = (start, len(prog))
    active.extend([False] * (len(prog) - n))
    return GradientProgram(
        prog=prog,
        n_forward=n,
        active=active,
        order=order,
        edges=edges,
        branches=branches,
        partials=partials,
        wrt_slots=wrt_slots,
    )


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
