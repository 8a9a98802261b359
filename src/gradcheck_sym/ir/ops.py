"""The op registry: every operation a program may contain, each one entry that knows it all.

An entry (`OpSpec`) says, for one operation, how each part of gradcheck_sym treats it:

* ``exact``: its value in exact rationals or certified balls (`arith.Rationals` / `arith.Balls`);
* ``partial``: its local derivative w.r.t. one argument, *emitted as instructions* into the
  program (so a derivative is again a program of registry ops, and can be differentiated again);
  ``vjp`` and ``jvp`` (how an adjoint flows back / a tangent forward) derive from it unless the
  op routes values instead of computing them (``pw``, ``gate``, ``acc``);
* ``rounding``: its rule in running error analysis (`errorbound`);
* ``torch``: its lowering to one torch operation (`torch_codegen`);
* ``domain``, ``kink``: where a function is real, and how a function with corners becomes a
  ``Piecewise`` for the exact side;
* ``sympy`` / ``parse``: which SymPy nodes compile to it (`ir.compile`).

The structural ops (constants, arithmetic, conditions, branches and the backward pass's own
``gate``/``cmul``/``acc``) are here; the functions users call are in `ir.functions`, where
supporting a new one is one `function(...)` entry plus its tests (the tests iterate over this
registry).  No other module switches on op names.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce
from typing import Any, Protocol

import sympy as sp

from .program import Program

ONE = -1  # a local partial that is exactly 1: a sum passes its adjoint on unchanged

Exact = Callable[[Any, list[Any], Any], Any]  # (arithmetic, argument values, data) -> value
Lower = Callable[[Any, list[Any], Any, Any], Any]  # (torch, argument tensors, data, dtype) -> tensor
Partial = Callable[[Program, int, int], int]  # (program, slot, argument) -> slot of the partial, or ONE
Vjp = Callable[[Program, int, int, int], int]  # (program, slot, argument, adjoint slot) -> contribution
Jvp = Callable[[Program, int, "list[int | None]"], "int | None"]  # (program, slot, arg tangents) -> tangent
Parse = Callable[[sp.Basic], "tuple[tuple[sp.Basic, ...], object] | None"]  # node -> (children, data)


class ErrorPass(Protocol):
    """What a rounding rule reads and writes (implemented by `errorbound`): per slot, float64
    values ``v``, worst-case errors ``E`` and variances ``V`` (in units of u), for a batch."""

    prog: Program
    u: float  # the unit roundoff the sizes are for (float64's unless asked for another dtype)
    errors: bool  # False: values only
    v: list[Any]
    E: list[Any]
    V: list[Any]

    @property
    def T(self) -> Any: ...  # the torch module

    def combine(self, parts: list[tuple[int, Any]], roundings: list[Any]) -> tuple[Any, Any]: ...

    def local_partials(self, k: int) -> list[Any]: ...

    def zero(self) -> Any: ...


Rounding = Callable[[ErrorPass, int, tuple[int, ...], Any], None]


@dataclass(frozen=True, kw_only=True)
class OpSpec:
    """One operation, as every evaluator sees it."""

    name: str  # the op name in programs; for functions, the name users write
    exact: Exact  # exact / certified value
    torch: Lower  # torch lowering, batched
    rounding: Rounding  # running error analysis rule
    partial: Partial | None = None  # local derivative emitted as IR (None: not differentiable)
    vjp: Vjp | None = None  # None: cmul(adjoint, partial)
    jvp: Jvp | None = None  # None: acc of cmul(tangent, partial)
    sympy: tuple[type, ...] = ()  # SymPy classes compiled to this op
    parse: Parse | None = None  # children and data of a SymPy node (None: node.args, no data)
    code: Callable[[list[str]], str] | None = None  # straight-line Python for exact evaluation
    arb: Callable[[list[Any], Any], Any] | None = None  # functions: the python-flint ball method
    domain: Callable[[Any], bool | None] | None = None  # functions: inside the real domain?
    kink: Callable[[sp.Basic], sp.Basic] | None = None  # corners: the Piecewise the exact side uses
    ulps: float = 0.0  # rounding charged per evaluation, in units of |result| u
    accuracy: Callable[[Any], float] | None = None  # torch's own relative error, whatever the dtype (from data)
    leaf: bool = False  # reads ``inputs[data]`` (a variable)
    constant: bool = False  # no arguments: its value depends only on ``data``
    test: Callable[[int, Any], bool] | None = None  # a comparison, from the sign of lhs - rhs (a boundary at 0)
    boolean: bool = False  # yields a condition, not a number
    passes_nothing: bool = False  # an adjoint op: "nothing" (None) flows through it
    function: bool = False  # a function users call by name (listed in error messages)
    transcendental: bool = False  # values are rarely rational: exact evaluation starts with balls
    selects: bool = False  # picks among its arguments by conditions (``pw``, ``gate``)
    carries: Callable[[int], range] | None = None  # argument positions derivatives flow through (None: all)
    label: Callable[[Any], str] | None = None  # its node's name in the report's graph (from data)
    local_latex: Callable[[str, str], str] | None = None  # the report's ∂c/∂x for c = op(x), as it multiplies


REGISTRY: dict[str, OpSpec] = {}
BY_SYMPY: dict[type, list[OpSpec]] = {}


def register(spec: OpSpec, *, first: bool = False) -> OpSpec:
    """Add ``spec``; ``first``: its SymPy classes try it before the entries registered earlier
    (a pattern entry, such as softplus for ``log(1 + exp(u))``, ahead of ``log``)."""
    REGISTRY[spec.name] = spec
    for cls in spec.sympy:
        specs = BY_SYMPY.setdefault(cls, [])
        specs.insert(0, spec) if first else specs.append(spec)
    return spec


# ---------------------------------------------------------------------------------------------
# helpers shared by the rules


def _f64(P: ErrorPass, x: float) -> Any:
    return P.T.tensor(x, dtype=P.T.float64)


def _exact_const(c: object) -> bool:
    """A constant stored exactly in float32 and float64 (a dyadic rational of few bits)."""
    return isinstance(c, sp.Rational) and c.q & (c.q - 1) == 0 and abs(c.p) < 2**24


def _power_of_two(x: Any) -> bool:
    v = float(x)
    return v != 0 and abs(v) != float("inf") and v == v and (abs(v).hex().startswith("0x1.0000000000000p"))


def pick(conds: list[Any]) -> int | None:
    """Index of the first condition that holds (None: one before it cannot be decided, or none
    holds).  Three-valued: None is a condition that cannot be evaluated."""
    for b, c in enumerate(conds):
        if c is None:
            return None
        if c:
            return b
    return None


def logic(op: str, xs: list[bool | None]) -> bool | None:
    """``and`` / ``or`` / ``not`` in three-valued logic: ``None`` is a condition that cannot be
    evaluated (an undefined operand); it decides nothing unless nothing else does."""
    if op == "not":
        return None if xs[0] is None else not xs[0]
    decisive = op == "or"  # True decides an `or`, False decides an `and`
    if decisive in xs:
        return decisive
    return None if None in xs else not decisive


def _emit_const(prog: Program, value: object) -> int:
    return prog.emit("const", (), value)


def _cmul(prog: Program, a: int, p: int) -> int:
    return a if p == ONE else prog.emit("cmul", (a, p))


def partial_slot(prog: Program, k: int, i: int) -> int:
    """The slot of ∂(slot k)/∂(its argument i), emitted once per program (a backward and a
    forward pass over the same program share it)."""
    memo: dict[tuple[int, int], int] = prog.__dict__.setdefault("_partials", {})
    if (k, i) not in memo:
        partial = REGISTRY[prog.ops[k]].partial
        assert partial is not None
        memo[(k, i)] = partial(prog, k, i)
    return memo[(k, i)]


def _default_vjp(prog: Program, k: int, i: int, adj: int) -> int:
    return _cmul(prog, adj, partial_slot(prog, k, i))


def _default_jvp(prog: Program, k: int, tangents: list[int | None]) -> int | None:
    terms = [_cmul(prog, t, partial_slot(prog, k, i)) for i, t in enumerate(tangents) if t is not None]
    if not terms:
        return None
    return terms[0] if len(terms) == 1 else prog.emit("acc", tuple(terms))


def carried(spec: OpSpec, nargs: int) -> range:
    """The argument positions of an op that derivatives flow through (none for conditions)."""
    if spec.partial is None or spec.boolean:
        return range(0)
    return spec.carries(nargs) if spec.carries is not None else range(nargs)


def vjp_rule(spec: OpSpec) -> Vjp:
    """How an adjoint flows back through ``spec`` into one argument."""
    return spec.vjp or _default_vjp


def jvp_rule(spec: OpSpec) -> Jvp:
    """How the arguments' tangents combine into ``spec``'s tangent."""
    return spec.jvp or _default_jvp


def _float_rounding(P: ErrorPass, k: int, args: tuple[int, ...], r: Any, own: Any) -> None:
    """A function's rule: its arguments' errors weighted by its partials, plus its own rounding."""
    P.v[k] = r
    if not P.errors:
        return
    ops = P.prog.ops
    ds = P.local_partials(k)
    P.E[k], P.V[k] = P.combine([(a, d) for a, d in zip(args, ds) if ops[a] != "const"], [own])


# ---------------------------------------------------------------------------------------------
# leaves


def _const_exact(A: Any, xs: list[Any], c: Any) -> Any:
    return A.const(c)


def _const_torch(T: Any, xs: list[Any], c: Any, dtype: Any) -> Any:
    return c if isinstance(c, bool) else T.tensor(float(c), dtype=dtype)


def _const_rounding(P: ErrorPass, k: int, args: tuple[int, ...], c: Any) -> None:
    if isinstance(c, bool):
        P.v[k] = c
        return
    P.v[k] = _f64(P, float(c))
    P.E[k] = P.zero() if _exact_const(c) else abs(P.v[k])
    P.V[k] = P.E[k] * P.E[k]


CONSTANTS = (sp.pi, sp.E, sp.EulerGamma, sp.Catalan)


def _parse_const(node: sp.Basic) -> tuple[tuple[sp.Basic, ...], object] | None:
    if node is sp.true or node is sp.false:
        return (), bool(node)
    if isinstance(node, (sp.Rational, sp.Float)) or node in CONSTANTS:
        return (), node
    return None


def _no_exact(A: Any, xs: list[Any], data: Any) -> Any:
    raise AssertionError("evaluated by the caller")


register(OpSpec(
    name="const", exact=_const_exact, torch=_const_torch, rounding=_const_rounding, constant=True,
    sympy=(sp.Integer, sp.Rational, sp.Float, sp.core.numbers.Zero, sp.core.numbers.One,
           sp.core.numbers.NegativeOne, sp.core.numbers.Half, sp.core.numbers.Pi, sp.core.numbers.Exp1,
           sp.core.numbers.EulerGamma, sp.core.numbers.Catalan, sp.logic.boolalg.BooleanTrue,
           sp.logic.boolalg.BooleanFalse),
    parse=_parse_const,
))
register(OpSpec(
    name="var", exact=_no_exact, torch=lambda T, xs, d, dt: _no_exact(T, xs, d),
    rounding=lambda P, k, args, d: None, leaf=True,
))


# ---------------------------------------------------------------------------------------------
# arithmetic


def _add_exact(A: Any, xs: list[Any], data: Any) -> Any:
    r = xs[0]
    for x in xs[1:]:
        r = r + x
    return r


def _mul_exact(A: Any, xs: list[Any], data: Any) -> Any:
    r = xs[0]
    for x in xs[1:]:
        r = r * x
    return r


def _add_rounding(P: ErrorPass, k: int, args: tuple[int, ...], data: Any) -> None:
    s = P.v[args[0]]
    roundings = []
    for a in args[1:]:
        s = s + P.v[a]
        roundings.append(s)
    P.v[k] = s
    if P.errors:
        one = _f64(P, 1.0)
        P.E[k], P.V[k] = P.combine([(a, one) for a in args], roundings)


def _mul_rounding(P: ErrorPass, k: int, args: tuple[int, ...], data: Any) -> None:
    ops, v = P.prog.ops, P.v
    xs = [v[a] for a in args]
    p = xs[0]
    rounded = 0
    for j in range(1, len(xs)):
        p = p * xs[j]
        if P.errors and not (ops[args[j]] == "const" and _power_of_two(xs[j])):
            rounded += 1
    v[k] = p
    if not P.errors:
        return
    # each intermediate rounding is relative to its partial product, and the remaining factors
    # carry it to the result at the same relative size: |result|·u each, not |partial product|·u
    # (charging the partial product made y·erfc(wx), with a tiny erfc, 1e23 times too loose)
    roundings = [p] * rounded
    parts = []
    for i, a in enumerate(args):
        if ops[a] != "const":
            others = _f64(P, 1.0)
            for j, x in enumerate(xs):
                if j != i:
                    others = others * x
            parts.append((a, others))
    P.E[k], P.V[k] = P.combine(parts, roundings)


def _mul_partial(prog: Program, k: int, i: int) -> int:
    args = prog.args[k]
    others = args[:i] + args[i + 1:]
    return others[0] if len(others) == 1 else prog.emit("mul", others)


register(OpSpec(
    name="add", exact=_add_exact, torch=lambda T, xs, d, dt: reduce(operator.add, xs), rounding=_add_rounding,
    partial=lambda prog, k, i: ONE, sympy=(sp.Add,), code=lambda a: " + ".join(a), label=lambda d: "ADD",
))
register(OpSpec(
    name="mul", exact=_mul_exact, torch=lambda T, xs, d, dt: reduce(operator.mul, xs), rounding=_mul_rounding,
    partial=_mul_partial, sympy=(sp.Mul,), code=lambda a: " * ".join(a),
))


def _pow_torch(T: Any, xs: list[Any], e: sp.Rational, dtype: Any) -> Any:
    x = xs[0]
    if e == -1:
        return T.reciprocal(x)
    if e == sp.Rational(1, 2):
        return T.sqrt(x)
    if e == sp.Rational(-1, 2):
        return T.rsqrt(x)
    if e.q == 1:
        return T.pow(x, int(e.p))
    return T.pow(x, float(e))


def _pow_rounding(P: ErrorPass, k: int, args: tuple[int, ...], data: Any) -> None:
    x, e = P.v[args[0]], float(data)
    r = P.T.pow(x, e)
    P.v[k] = r
    if P.errors:
        d = e * P.T.pow(x, e - 1)
        ulps = 1.0 if data in (2, -1, sp.Rational(1, 2)) else 2.0
        P.E[k], P.V[k] = P.combine([(args[0], d)], [ulps * r])


def _pow_partial(prog: Program, k: int, i: int) -> int:
    e = prog.data[k]
    assert isinstance(e, sp.Rational)
    b = prog.args[k][0]
    if e == 2:
        return prog.emit("mul", (_emit_const(prog, sp.Integer(2)), b))
    if e == -1:  # -(1/b)**2, from the node's own value
        return prog.emit("mul", (_emit_const(prog, sp.Integer(-1)), prog.emit("pow", (k,), sp.Integer(2))))
    if e == sp.Rational(1, 2):  # 1 / (2 sqrt(b))
        return prog.emit("mul", (_emit_const(prog, sp.Rational(1, 2)), prog.emit("pow", (k,), sp.Integer(-1))))
    return prog.emit("mul", (_emit_const(prog, e), prog.emit("pow", (b,), e - 1)))


def _parse_pow(node: sp.Basic) -> tuple[tuple[sp.Basic, ...], object] | None:
    return ((node.base,), node.exp) if node.exp.is_Rational else None


register(OpSpec(
    name="pow", exact=lambda A, xs, e: A.pow(xs[0], e), torch=_pow_torch, rounding=_pow_rounding,
    partial=_pow_partial, sympy=(sp.Pow,), parse=_parse_pow, ulps=2.0,
    label=lambda e: {-1: "INV", sp.Rational(1, 2): "sqrt"}.get(e, f"POW {e}"),
))


def _powv_rounding(P: ErrorPass, k: int, args: tuple[int, ...], data: Any) -> None:
    T = P.T
    b, e = P.v[args[0]], P.v[args[1]]
    r = T.pow(b, e)
    P.v[k] = r
    if P.errors:
        parts = [(args[0], e * T.pow(b, e - 1)), (args[1], r * T.log(abs(b)))]
        P.E[k], P.V[k] = P.combine(parts, [2.0 * r])


def _powv_partial(prog: Program, k: int, i: int) -> int:
    b, e = prog.args[k]
    if i == 0:
        e_minus_1 = prog.emit("add", (e, _emit_const(prog, sp.Integer(-1))))
        return prog.emit("mul", (e, prog.emit("powv", (b, e_minus_1))))
    return prog.emit("mul", (k, prog.emit("log", (b,))))


register(OpSpec(
    name="powv", exact=lambda A, xs, d: A.powv(xs[0], xs[1]), torch=lambda T, xs, d, dt: T.pow(xs[0], xs[1]),
    rounding=_powv_rounding, partial=_powv_partial, sympy=(sp.Pow,),
    parse=lambda node: None if node.exp.is_Rational else ((node.base, node.exp), None), ulps=2.0,
    transcendental=True, label=lambda d: "POW",
))


# ---------------------------------------------------------------------------------------------
# conditions and branches


RELATIONS: dict[type, str] = {
    sp.StrictLessThan: "<",
    sp.LessThan: "<=",
    sp.StrictGreaterThan: ">",
    sp.GreaterThan: ">=",
    sp.Eq: "==",
    sp.Ne: "!=",
}
SIGN_TESTS: dict[str, Callable[[int], bool]] = {  # the relation, from the sign of lhs - rhs
    "<": lambda s: s < 0,
    "<=": lambda s: s <= 0,
    ">": lambda s: s > 0,
    ">=": lambda s: s >= 0,
    "==": lambda s: s == 0,
    "!=": lambda s: s != 0,
}
_TORCH_REL = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge", "==": "eq", "!=": "ne"}


def _rel_exact(A: Any, xs: list[Any], rel: str) -> bool | None:
    s = A.compare(xs[0], xs[1])
    return None if s is None else SIGN_TESTS[rel](s)


def _rel_rounding(P: ErrorPass, k: int, args: tuple[int, ...], rel: str) -> None:
    P.v[k] = getattr(P.T, _TORCH_REL[rel])(P.v[args[0]], P.v[args[1]])


register(OpSpec(
    name="rel", exact=_rel_exact, torch=lambda T, xs, rel, dt: getattr(T, _TORCH_REL[rel])(xs[0], xs[1]),
    rounding=_rel_rounding, test=lambda s, rel: SIGN_TESTS[rel](s), boolean=True, sympy=tuple(RELATIONS),
    parse=lambda node: (tuple(node.args), RELATIONS[type(node)]),
))


def _logical_torch(op: str) -> Lower:
    def lower(T: Any, xs: list[Any], data: Any, dtype: Any) -> Any:
        if op == "not":
            return (not xs[0]) if isinstance(xs[0], bool) else T.logical_not(xs[0])
        f = T.logical_and if op == "and" else T.logical_or
        acc: Any = xs[0]
        for x in xs[1:]:
            if isinstance(acc, bool) and isinstance(x, bool):
                acc = (acc and x) if op == "and" else (acc or x)
            elif isinstance(acc, bool) or isinstance(x, bool):
                b, t = (acc, x) if isinstance(acc, bool) else (x, acc)
                acc = t if (b if op == "and" else not b) else b
            else:
                acc = f(acc, x)
        return acc

    return lower


def _logical_rounding(op: str) -> Rounding:
    def rule(P: ErrorPass, k: int, args: tuple[int, ...], data: Any) -> None:
        T = P.T
        if op == "not":
            P.v[k] = T.logical_not(T.as_tensor(P.v[args[0]]))
            return
        f = T.logical_and if op == "and" else T.logical_or
        acc = T.as_tensor(P.v[args[0]])
        for a in args[1:]:
            acc = f(acc, T.as_tensor(P.v[a]))
        P.v[k] = acc

    return rule


for _op, _cls in (("and", sp.And), ("or", sp.Or), ("not", sp.Not)):
    register(OpSpec(
        name=_op, exact=(lambda op: lambda A, xs, d: logic(op, xs))(_op), torch=_logical_torch(_op),
        rounding=_logical_rounding(_op), boolean=True, sympy=(_cls,),
    ))


def _ite_exact(A: Any, xs: list[Any], data: Any) -> bool | None:
    """``ITE(a, b, c)`` (if a then b else c) in three-valued logic: an undecided ``a`` decides
    nothing unless both branches agree.  SymPy writes nested ``Min``/``Max`` (clamp, ReLU6) with it."""
    a, b, c = xs
    if a is None:
        return b if b == c else None
    return b if a else c  # type: ignore[no-any-return]


def _ite_torch(T: Any, xs: list[Any], data: Any, dtype: Any) -> Any:
    a, b, c = xs
    if isinstance(a, bool):
        return b if a else c
    return T.where(a, T.as_tensor(b), T.as_tensor(c))


def _ite_rounding(P: ErrorPass, k: int, args: tuple[int, ...], data: Any) -> None:
    T = P.T
    a, b, c = (T.as_tensor(P.v[i]) for i in args)
    P.v[k] = T.where(a, b, c)


register(OpSpec(
    name="ite", exact=_ite_exact, torch=_ite_torch, rounding=_ite_rounding, boolean=True, sympy=(sp.ITE,),
))


def _pw_exact(A: Any, xs: list[Any], data: Any) -> Any:
    b = pick(xs[1::2])
    return A.nan() if b is None else xs[2 * b]


def _where_chain(T: Any, conds: list[Any]) -> Any:
    """The index of the first condition that holds, per point (-1: none)."""
    chosen = T.tensor(-1)
    for b in range(len(conds) - 1, -1, -1):
        chosen = T.where(T.as_tensor(conds[b]), b, chosen)
    return chosen


def _pw_torch(T: Any, xs: list[Any], data: Any, dtype: Any) -> Any:
    """Nested ``torch.where``; NaN where no condition holds (SymPy's Piecewise is undefined)."""
    result: Any = T.tensor(float("nan"), dtype=dtype)
    for b in range(len(xs) - 2, -1, -2):
        value, cond = xs[b], xs[b + 1]
        if cond is True:
            result = value
        elif cond is not False:
            result = T.where(cond, value, result)
    return result


def _pw_rounding(P: ErrorPass, k: int, args: tuple[int, ...], data: Any) -> None:
    T = P.T
    inf = _f64(P, float("inf"))
    value, e, var = _f64(P, float("nan")), inf, inf
    for b in range(len(args) - 2, -1, -2):
        cond = T.as_tensor(P.v[args[b + 1]])
        value = T.where(cond, P.v[args[b]], value)
        e = T.where(cond, P.E[args[b]], e)
        var = T.where(cond, P.V[args[b]], var)
    P.v[k], P.E[k], P.V[k] = value, e, var


def _pw_vjp(prog: Program, k: int, i: int, adj: int) -> int:
    """Only into the branch selected: a gate on the conditions up to that branch."""
    args = prog.args[k]
    assert i % 2 == 0, "conditions have no adjoint"
    return prog.emit("gate", (adj, *args[1:i + 2:2]), i // 2)


def _pw_jvp(prog: Program, k: int, tangents: list[int | None]) -> int | None:
    args = prog.args[k]
    values = tangents[0::2]
    if all(t is None for t in values):
        return None
    zero = _emit_const(prog, sp.Integer(0))
    out: list[int] = []
    for b in range(0, len(args), 2):
        t = tangents[b]
        out += [zero if t is None else t, args[b + 1]]
    return prog.emit("pw", tuple(out))


register(OpSpec(
    name="pw", exact=_pw_exact, torch=_pw_torch, rounding=_pw_rounding, vjp=_pw_vjp, jvp=_pw_jvp,
    partial=lambda prog, k, i: ONE, sympy=(sp.Piecewise,), selects=True, label=lambda d: "Piecewise",
    carries=lambda n: range(0, n, 2),
    parse=lambda node: (tuple(x for pair in node.args for x in pair), None),
))


# ---------------------------------------------------------------------------------------------
# the backward pass's own ops: "nothing" (None) is the adjoint of a branch that is not selected


def _gate_exact(A: Any, xs: list[Any], b: int) -> Any:
    return xs[0] if pick(xs[1:]) == b else None


def _gate_torch(T: Any, xs: list[Any], b: int, dtype: Any) -> Any:
    live = _where_chain(T, xs[1:]) == b
    return T.where(live, xs[0], T.zeros((), dtype=xs[0].dtype if hasattr(xs[0], "dtype") else dtype))


def _gate_rounding(P: ErrorPass, k: int, args: tuple[int, ...], b: int) -> None:
    T = P.T
    live = _where_chain(T, [P.v[c] for c in args[1:]]) == b
    zero = P.zero()
    a = args[0]
    P.v[k] = T.where(live, P.v[a], zero)
    if P.errors:
        P.E[k], P.V[k] = T.where(live, P.E[a], zero), T.where(live, P.V[a], zero)


register(OpSpec(
    name="gate", exact=_gate_exact, torch=_gate_torch, rounding=_gate_rounding, passes_nothing=True, selects=True,
    carries=lambda n: range(1),
    partial=lambda prog, k, i: ONE,  # only the adjoint (argument 0) is differentiable
    vjp=lambda prog, k, i, adj: prog.emit("gate", (adj, *prog.args[k][1:]), prog.data[k]),
    jvp=lambda prog, k, ts: None if ts[0] is None else prog.emit("gate", (ts[0], *prog.args[k][1:]), prog.data[k]),
))


def _cmul_exact(A: Any, xs: list[Any], data: Any) -> Any:
    a, p = xs
    return None if a is None or p is None else a * p


def _cmul_torch(T: Any, xs: list[Any], data: Any, dtype: Any) -> Any:
    a, p = xs
    return T.where(a == 0, T.zeros((), dtype=a.dtype), a * p)  # no adjoint: a dead branch's NaNs stay out


def _cmul_rounding(P: ErrorPass, k: int, args: tuple[int, ...], data: Any) -> None:
    T, zero = P.T, P.zero()
    s, p = args
    a, pv = P.v[s], P.v[p]
    dead = a == 0
    c = T.where(dead, zero, a * pv)
    P.v[k] = c
    if not P.errors:
        return
    ea, va = P.E[s], P.V[s]
    P.E[k] = T.where(dead & (ea == 0), zero, abs(pv) * ea + abs(a) * P.E[p] + abs(c))
    P.V[k] = T.where(dead & (va == 0), zero, pv * pv * va + a * a * P.V[p] + c * c)


register(OpSpec(
    name="cmul", exact=_cmul_exact, torch=_cmul_torch, rounding=_cmul_rounding, passes_nothing=True,
    partial=lambda prog, k, i: prog.args[k][1 - i], code=lambda a: f"{a[0]} * {a[1]}",
))


def _acc_exact(A: Any, xs: list[Any], data: Any) -> Any:
    r = None
    for x in xs:
        if x is not None:
            r = x if r is None else r + x
    return r


def _acc_rounding(P: ErrorPass, k: int, args: tuple[int, ...], data: Any) -> None:
    T, zero = P.T, P.zero()
    s, e, var = P.v[args[0]], P.E[args[0]], P.V[args[0]]
    for a in args[1:]:
        old, c = s, P.v[a]
        s = old + c
        if P.errors:
            rounding = T.where((c == 0) | (old == 0), zero, abs(s))  # adding to or of zero is exact
            e, var = e + P.E[a] + rounding, var + P.V[a] + rounding * rounding
    P.v[k] = s
    if P.errors:
        P.E[k], P.V[k] = e, var


register(OpSpec(
    name="acc", exact=_acc_exact, torch=lambda T, xs, d, dt: reduce(operator.add, xs), rounding=_acc_rounding,
    passes_nothing=True, partial=lambda prog, k, i: ONE, code=lambda a: " + ".join(a),
))


# Written by users but not functions in SymPy's sense; listed so error messages can name them.
STRUCTURAL = ("+", "-", "*", "/", "** (any real power, sqrt)", "Piecewise", "pi", "E")


# What to write instead, for functions people reach for that have no entry (by SymPy class name).
HINTS: dict[str, str] = {
    "gamma": "for x > 0 write exp(loggamma(x)) (torch: torch.lgamma(x).exp())",
    "polygamma": "its order must be a whole number >= 0 (polygamma(0, x) is digamma, torch.digamma)",
    "Mod": "write x - m*floor(x/m) (SymPy's Mod is floor division's remainder, as torch.remainder)",
    "Derivative": "SymPy could not differentiate something in it; write the derivative out as a formula",
    "Integral": "integrals are not evaluated; declare the integrated formula",
}


def supported_names() -> list[str]:
    """The function names a model may use, for error messages and the README.

    >>> "loggamma" in supported_names()
    True
    """
    return sorted(s.name for s in REGISTRY.values() if s.function) + list(STRUCTURAL)


from . import functions as _functions  # noqa: E402,F401 - registers the function entries
