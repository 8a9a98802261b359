"""The expression graph: a SymPy expression compiled to a flat program of slots.

The work is done in `ir` (`ir.program`: the typed program; `ir.compile`: SymPy → program; `ir.ops`:
what each op means); this module keeps the names the rest of the package imports.
"""

from __future__ import annotations

from .ir.compile import compile_expr as compile_expr
from .ir.compile import compile_into as compile_into
from .ir.compile import count_nodes as count_nodes
from .ir.compile import free_symbols as free_symbols
from .ir.compile import walk as walk
from .ir.ops import logic as logic
from .ir.program import Program as Program
