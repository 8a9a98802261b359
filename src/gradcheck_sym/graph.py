"""The expression graph: a SymPy expression compiled to a flat program of slots.

SymPy shares equal subexpressions (a layer's output is one object however many units of the next
layer read it), so a loss is a DAG far smaller than its printed tree.  Everything here walks it
once per node, never once per path, and never recursively (deep models would hit Python's limit).

A `Program` is a list of instructions in topological order.  Instruction ``k`` computes slot
``k`` from earlier slots:

=========  ==========================  =====================================================
op         args                        data
=========  ==========================  =====================================================
``const``  ()                          the SymPy number (Rational, Float, pi, E, True, ...)
``var``    ()                          index into ``Program.variables``
``add``    (a, b, ...)                 --
``mul``    (a, b, ...)                 --
``pow``    (base,)                     the constant exponent (a SymPy Rational)
``powv``   (base, exponent)            --
``fn``     (a, ...)                    the SymPy function class (a key of ``FUNCTIONS``)
``pw``     (v1, c1, v2, c2, ...)       -- (value and condition slots, first true wins)
``rel``    (lhs, rhs)                  one of ``< <= > >= == !=``
``and``    (a, b, ...)                 --
``or``     (a, b, ...)                 --
``not``    (a,)                        --
=========  ==========================  =====================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import sympy as sp
from sympy.core.function import AppliedUndef

from .errors import ModelError, UnsupportedFunctionError
from .functions import FUNCTIONS, rewrite_kink, supported_names

CONSTANTS = (sp.pi, sp.E, sp.EulerGamma, sp.Catalan)
RELATIONS: dict[type, str] = {
    sp.StrictLessThan: "<",
    sp.LessThan: "<=",
    sp.StrictGreaterThan: ">",
    sp.GreaterThan: ">=",
    sp.Eq: "==",
    sp.Ne: "!=",
}


@dataclass
class Program:
    """Instructions in topological order; slot ``k`` is the result of instruction ``k``."""

    ops: list[str] = field(default_factory=list)
    args: list[tuple[int, ...]] = field(default_factory=list)
    data: list[object] = field(default_factory=list)
    variables: tuple[sp.Symbol, ...] = ()
    output: int = -1

    def __len__(self) -> int:
        return len(self.ops)

    def emit(self, op: str, args: tuple[int, ...] = (), data: object = None) -> int:
        self.ops.append(op)
        self.args.append(args)
        self.data.append(data)
        return len(self.ops) - 1

    def var_slots(self) -> dict[sp.Symbol, int]:
        return {self.variables[self.data[k]]: k for k, op in enumerate(self.ops) if op == "var"}


def logic(op: str, xs: list[bool | None]) -> bool | None:
    """``and`` / ``or`` / ``not`` in three-valued logic: ``None`` is a condition that cannot be
    evaluated (an undefined operand); it decides nothing unless nothing else does."""
    if op == "not":
        return None if xs[0] is None else not xs[0]
    decisive = op == "or"  # True decides an `or`, False decides an `and`
    if decisive in xs:
        return decisive
    return None if None in xs else not decisive


def walk(root: sp.Basic, children: Callable[[sp.Basic], tuple[sp.Basic, ...]]) -> Iterator[sp.Basic]:
    """Every distinct node of ``root``'s DAG once, children before parents (iterative)."""
    done: set[sp.Basic] = set()
    stack: list[tuple[sp.Basic, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if node in done:
            continue
        if expanded:
            done.add(node)
            yield node
            continue
        stack.append((node, True))
        for child in reversed(children(node)):
            if child not in done:
                stack.append((child, False))


def free_symbols(expr: sp.Basic) -> set[sp.Symbol]:
    """``expr.free_symbols`` in time linear in the DAG (SymPy's own revisits shared nodes)."""
    return {n for n in walk(expr, lambda e: e.args) if isinstance(n, sp.Symbol)}


def count_nodes(expr: sp.Basic) -> int:
    """Distinct nodes in the DAG: the size that matters for everything done here."""
    return sum(1 for _ in walk(expr, lambda e: e.args))


def _children(node: sp.Basic) -> tuple[sp.Basic, ...]:
    if isinstance(node, sp.Piecewise):
        return tuple(x for pair in node.args for x in pair)
    if isinstance(node, sp.Pow) and node.exp.is_Rational:
        return (node.base,)
    if isinstance(node, (sp.Symbol, sp.Number, sp.NumberSymbol)) or node in (sp.true, sp.false):
        return ()
    return node.args


def _unsupported(node: sp.Basic, model: str) -> ModelError:
    where = f"model `{model}`: " if model else ""
    if isinstance(node, AppliedUndef):
        return UnsupportedFunctionError(
            f"{where}the loss calls the undefined function `{node}`; gradcheck_sym needs an "
            f"explicit formula. Write it out with supported functions: {', '.join(supported_names())}."
        )
    if node.has(sp.I) or isinstance(node, sp.core.numbers.ImaginaryUnit):
        return ModelError(
            f"{where}the loss contains the imaginary unit (`{node}`); gradcheck_sym checks real "
            "losses of real variables. Declare symbols with real=True and keep the loss real."
        )
    if isinstance(node, (sp.core.numbers.Infinity, sp.core.numbers.NegativeInfinity,
                         sp.core.numbers.ComplexInfinity, sp.core.numbers.NaN)):
        return ModelError(f"{where}the loss contains `{node}`; it must be finite for some point.")
    kind = type(node).__name__
    return UnsupportedFunctionError(
        f"{where}`{kind}` (in `{_short(node)}`) has no exact evaluation or torch equivalent in "
        f"gradcheck_sym. Supported: {', '.join(supported_names())}."
    )


def _short(node: sp.Basic, limit: int = 60) -> str:
    text = str(node)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def compile_expr(
    expr: sp.Basic,
    variables: tuple[sp.Symbol, ...],
    *,
    rewrite_kinks: bool,
    model: str = "",
) -> Program:
    """Compile ``expr`` over ``variables`` into a `Program` (one slot per distinct node).

    With ``rewrite_kinks`` the functions with corners (``Abs``, ``Max``, ...) become
    ``Piecewise``, as the exact side wants; without, they stay, as the torch side wants.

    >>> x, w = sp.symbols("x w", real=True)
    >>> p = compile_expr((x * w - 1) ** 2, (x, w), rewrite_kinks=False)
    >>> p.ops[p.output]
    'pow'
    """
    prog = Program(variables=tuple(variables))
    leaves = {s: prog.emit("var", (), i) for i, s in enumerate(variables)}
    prog.output = compile_into(prog, expr, leaves, rewrite_kinks=rewrite_kinks, model=model)
    return prog


def compile_into(
    prog: Program,
    expr: sp.Basic,
    leaves: dict[sp.Basic, int],
    *,
    rewrite_kinks: bool,
    model: str = "",
) -> int:
    """Append the instructions computing ``expr`` to ``prog``; ``leaves`` maps known
    subexpressions (symbols, dummies) to their slots.  Returns the slot of ``expr``."""
    rewritten: dict[sp.Basic, sp.Basic] = {}

    def target(node: sp.Basic) -> sp.Basic:
        if rewrite_kinks and type(node) in FUNCTIONS and FUNCTIONS[type(node)].kink:
            if node not in rewritten:
                rewritten[node] = rewrite_kink(node)
            return rewritten[node]
        return node

    slot: dict[sp.Basic, int] = dict(leaves)

    def children(node: sp.Basic) -> tuple[sp.Basic, ...]:
        return () if node in slot else _children(target(node))

    for node in walk(expr, children):
        if node not in slot:
            slot[node] = _emit(prog, target(node), slot, model)
    return slot[expr]


def _emit(prog: Program, node: sp.Basic, slot: dict[sp.Basic, int], model: str) -> int:
    if node in slot:  # a kink rewritten to an expression compiled already
        return slot[node]
    if isinstance(node, sp.Symbol):
        raise ModelError(f"model `{model}`: symbol `{node}` is not declared")
    if isinstance(node, sp.Rational) or isinstance(node, sp.Float) or node in CONSTANTS:
        return prog.emit("const", (), node)
    if node is sp.true or node is sp.false:
        return prog.emit("const", (), bool(node))
    kids = tuple(slot[c] for c in _children(node))
    if isinstance(node, sp.Add):
        return prog.emit("add", kids)
    if isinstance(node, sp.Mul):
        return prog.emit("mul", kids)
    if isinstance(node, sp.Pow):
        if node.exp.is_Rational:
            return prog.emit("pow", kids, node.exp)
        return prog.emit("powv", kids)
    if isinstance(node, sp.Piecewise):
        return prog.emit("pw", kids)
    if type(node) in RELATIONS:
        return prog.emit("rel", kids, RELATIONS[type(node)])
    if isinstance(node, sp.And):
        return prog.emit("and", kids)
    if isinstance(node, sp.Or):
        return prog.emit("or", kids)
    if isinstance(node, sp.Not):
        return prog.emit("not", kids)
    if type(node) in FUNCTIONS:
        return prog.emit("fn", kids, type(node))
    raise _unsupported(node, model)
