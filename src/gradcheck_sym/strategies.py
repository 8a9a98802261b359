"""Hypothesis strategies for the points of a model.

>>> import sympy as sp
>>> from gradcheck_sym import Model
>>> x, w = sp.symbols("x w", real=True)
>>> m = Model(name="abs", loss=sp.Abs(w - x), params=[w], inputs=[x], domain={"*": (-2, 2)})
>>> strategy = points(m, kinks=True)

``points(model)`` draws a point inside the model's domain as ``{name: value}`` (a nested list for
a matrix), ready for ``verify(model, points=[p])``.  Values are float32 numbers, so the same
point is exact in float32 and float64, and Hypothesis shrinks a failure to the simplest such
point, which its report prints.  With ``kinks=True`` about half the points are moved onto a
corner of the loss (where an ``Abs``, ``Max``, ``Min``, ``sign``, ``Heaviside`` or ``Piecewise``
switches), solved for with SymPy from the other coordinates.
"""

from __future__ import annotations

from typing import Any

import sympy as sp
from hypothesis import strategies as st

from .errors import ModelError
from .graph import walk
from .model import Model, Variable
from .sampling import to_float32

_KINKS = (sp.Abs, sp.sign, sp.Heaviside)


def _floats(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(min_value=lo, max_value=hi, width=32, allow_nan=False, allow_infinity=False)


def _variable(model: Model, v: Variable) -> st.SearchStrategy[Any]:
    entries = [_floats(float(model.domain[s][0]), float(model.domain[s][1])) for s in v.symbols]
    if not v.shape:
        return entries[0]
    rows, cols = v.shape
    return st.tuples(*entries).map(lambda xs: [list(xs[r * cols : (r + 1) * cols]) for r in range(rows)])


def kink_expressions(loss: sp.Expr) -> list[sp.Expr]:
    """Expressions whose zeros are the corners of ``loss``."""
    out: list[sp.Expr] = []
    for node in walk(loss, lambda e: e.args):
        if isinstance(node, _KINKS):
            out.append(node.args[0])
        elif isinstance(node, (sp.Max, sp.Min)):
            args = node.args
            out += [args[i] - args[j] for i in range(len(args)) for j in range(i + 1, len(args))]
        elif isinstance(node, sp.Piecewise):
            for _, cond in node.args:
                for rel in cond.atoms(sp.core.relational.Relational):
                    out.append(rel.lhs - rel.rhs)
    return [g for g in dict.fromkeys(out) if g.free_symbols]


def _flat(model: Model, point: dict[str, Any]) -> dict[sp.Symbol, float]:
    out = {}
    for v in model.variables:
        value = point[v.name]
        flat = [value] if not v.shape else [x for row in value for x in row]
        out.update(zip(v.symbols, flat))
    return out


def _set(model: Model, point: dict[str, Any], symbol: sp.Symbol, value: float) -> dict[str, Any]:
    out = {k: (v if not isinstance(v, list) else [list(r) for r in v]) for k, v in point.items()}
    for v in model.variables:
        if symbol in v.symbols:
            if not v.shape:
                out[v.name] = value
            else:
                r, c = v.index(v.symbols.index(symbol))
                out[v.name][r][c] = value
    return out


def points(model: Model, *, kinks: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    """Points of ``model`` inside its domain (``kinks=True``: half of them on a corner)."""
    missing = [s for s in model.symbols if s not in model.domain]
    if missing:
        raise ModelError(
            f"model `{model.name}`: points() needs a domain for every symbol; `{missing[0]}` has none "
            "(add it to `domain=`, or the key \"*\")"
        )
    base = st.fixed_dictionaries({v.name: _variable(model, v) for v in model.variables})
    if not kinks:
        return base
    gs = kink_expressions(model.loss)
    if not gs:
        return base

    @st.composite
    def on_a_corner(draw: st.DrawFn) -> dict[str, Any]:
        point = draw(base)
        g = draw(st.sampled_from(gs))
        symbol = draw(st.sampled_from(sorted(g.free_symbols, key=str)))
        values = _flat(model, point)
        h = g.subs({s: sp.Rational(values[s]) for s in g.free_symbols if s != symbol})
        lo, hi = (float(b) for b in model.domain[symbol])
        try:
            roots = [complex(r) for r in sp.solve(h, symbol)]
        except (NotImplementedError, TypeError, ValueError):
            roots = []
        real = sorted({r.real for r in roots if abs(r.imag) < 1e-12 and lo <= r.real <= hi})
        if not real:
            return point
        root = draw(st.sampled_from(real))
        return _set(model, point, symbol, to_float32(root))

    return st.one_of(base, on_a_corner())
