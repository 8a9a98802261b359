"""SymPy → program: one instruction per distinct node of the expression's DAG.

SymPy shares equal subexpressions (a layer's output is one object however many units of the next
layer read it), so a loss is a DAG far smaller than its printed tree.  Everything here walks it
once per node, never once per path, and never recursively (deep models would hit Python's limit).
Which op a node becomes is the registry's business (`ir.ops`: each entry names its SymPy classes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import sympy as sp
from sympy.core.function import AppliedUndef

from ..errors import ModelError, UnsupportedFunctionError
from .ops import BY_SYMPY, HINTS, REGISTRY, OpSpec, supported_names
from .program import Program


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


def _op_of(node: sp.Basic) -> tuple[OpSpec, tuple[sp.Basic, ...], object] | None:
    """The registry entry a node compiles to, its children and its data (None: unsupported)."""
    if not node.args or node in (sp.true, sp.false):
        parsed = REGISTRY["const"].parse(node)  # type: ignore[misc]
        return None if parsed is None else (REGISTRY["const"], *parsed)
    for spec in BY_SYMPY.get(type(node), ()):
        if spec.parse is None:
            return spec, tuple(node.args), None
        parsed = spec.parse(node)
        if parsed is not None:
            return spec, *parsed
    return None


def _children(node: sp.Basic) -> tuple[sp.Basic, ...]:
    found = _op_of(node)
    return () if found is None else found[1]


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
    hint = f" Instead: {HINTS[kind]}." if kind in HINTS else ""
    return UnsupportedFunctionError(
        f"{where}`{kind}` (in `{_short(node)}`) has no exact evaluation or torch equivalent in "
        f"gradcheck_sym.{hint} Supported: {', '.join(supported_names())} (xlogy, xlog1py and normalized_sinc "
        "from gradcheck_sym.special)."
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
    leaves: dict[sp.Basic, int] = {s: prog.emit("var", (), i) for i, s in enumerate(variables)}
    prog.outputs = [compile_into(prog, expr, leaves, rewrite_kinks=rewrite_kinks, model=model)]
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
    def kink(node: sp.Basic) -> OpSpec | None:
        specs = BY_SYMPY.get(type(node), ()) if rewrite_kinks else ()
        return specs[0] if specs and specs[0].kink is not None else None

    slot: dict[sp.Basic, int] = dict(leaves)

    def children(node: sp.Basic) -> tuple[sp.Basic, ...]:
        if node in slot:
            return ()
        return tuple(node.args) if kink(node) is not None else _children(node)

    for node in walk(expr, children):
        if node in slot:
            continue
        spec = kink(node)
        if spec is None:
            slot[node] = _emit(prog, node, slot, model)
            continue
        # the corner's Piecewise over dummies standing for its arguments, compiled over their
        # slots: rewriting the node itself rebuilds its whole argument DAG as a tree, once per
        # corner (exponential in depth: a ReLU network of 224 weights did not compile in 10 min)
        dummies = tuple(sp.Dummy(f"a{i}", real=True) for i in range(len(node.args)))
        template = spec.kink(node.func(*dummies))  # type: ignore[misc]
        slot[node] = compile_into(prog, template, {d: slot[a] for d, a in zip(dummies, node.args)},
                                  rewrite_kinks=True, model=model)
    return slot[expr]


def _emit(prog: Program, node: sp.Basic, slot: dict[sp.Basic, int], model: str) -> int:
    if isinstance(node, sp.Symbol):
        raise ModelError(f"model `{model}`: symbol `{node}` is not declared")
    found = _op_of(node)
    if found is None:
        raise _unsupported(node, model)
    spec, kids, data = found
    return prog.emit(spec.name, tuple(slot[c] for c in kids), data)
