"""The supported functions: the registry's function entries (`ir.ops`), by SymPy class.

Each entry says how the function is computed everywhere gradcheck_sym needs it (exact value,
derivative, rounding-error rule, torch lowering, domain, kinks); to support a new function, add
one entry there (`ir.functions.function(...)`).  The tests iterate over this table.
"""

from __future__ import annotations

import sympy as sp

from .ir.ops import REGISTRY, STRUCTURAL, OpSpec, supported_names

FUNCTIONS: dict[type, OpSpec] = {}
for _spec in REGISTRY.values():  # a pattern entry (softplus, on `log`) does not displace the function
    if _spec.function:
        FUNCTIONS.setdefault(_spec.sympy[0], _spec)

__all__ = ["FUNCTIONS", "STRUCTURAL", "rewrite_kink", "supported_names"]


def rewrite_kink(expr: sp.Basic) -> sp.Basic:
    """`Abs`, `sign`, `Max`, `Min` and `Heaviside` as an equivalent `Piecewise`.

    >>> x = sp.Symbol("x", real=True)
    >>> rewrite_kink(sp.Abs(x))
    Piecewise((x, x >= 0), (-x, True))
    """
    spec = FUNCTIONS.get(type(expr))
    if spec is None or spec.kink is None:
        raise AssertionError(f"not a kink function: {type(expr)}")
    return spec.kink(expr)
