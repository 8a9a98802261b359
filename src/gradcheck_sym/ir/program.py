"""The typed program every evaluator walks: instructions in topological order.

Instruction ``k`` computes slot ``k`` from earlier slots.  Its operation is the name of an entry
of the op registry (`ir.ops.REGISTRY`), which alone knows what the operation means in each number
system; a `Program` only records the wiring:

=============  ========================  =======================================================
op             args                      data
=============  ========================  =======================================================
``const``      ()                        the SymPy number (Rational, Float, pi, E, True, ...)
``var``        ()                        index into ``Program.variables``
``add``        (a, b, ...)               --
``mul``        (a, b, ...)               --
``pow``        (base,)                   the constant exponent (a SymPy Rational)
``powv``       (base, exponent)          --
``exp`` ...    (a, ...)                  -- (one op per supported function; ``polygamma``: n)
``pw``         (v1, c1, v2, c2, ...)     -- (value and condition slots, first true wins)
``rel``        (lhs, rhs)                one of ``< <= > >= == !=``
``and`` ...    (a, b, ...)               -- (``or``, ``not``)
``gate``       (adj, c1, ..., cb)        b - 1: ``adj`` if ``cb`` is the first condition that holds,
                                         else *nothing* (the adjoint of a branch not selected)
``cmul``       (adj, partial)            -- adjoint times local partial; nothing if adj is nothing
``acc``        (c1, c2, ...)             -- the sum of contributions (nothing ignored)
=============  ========================  =======================================================

``outputs`` are the slots a caller wants (a loss; a loss and its gradient; Hessian entries ...).
``derivatives`` says, for each output that is a derivative, which slot it differentiates and
along what: the exact evaluator uses it to report one-sided values at kinks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import sympy as sp


class Instr(NamedTuple):
    """One instruction, as a typed view (programs store them column-wise for speed)."""

    op: str  # a key of `ir.ops.REGISTRY`
    args: tuple[int, ...]  # slots read
    data: Any  # the op's constant parameter (exponent, relation, variable index, ...)


@dataclass(frozen=True)
class Direction:
    """What a derivative output is taken along: a unit vector (``unit``: index into
    ``Program.variables``) or the vector held by other variables (``vector``: pairs of
    (variable differentiated, variable holding that component))."""

    unit: int = -1
    vector: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Derivative:
    """Output ``i`` is the derivative of slot ``of`` along ``along``."""

    of: int
    along: Direction


@dataclass
class Program:
    """Instructions in topological order; slot ``k`` is the result of instruction ``k``.

    >>> p = Program(variables=(sp.Symbol("w"),))
    >>> w = p.emit("var", (), 0)
    >>> p.outputs = [p.emit("mul", (w, w))]
    >>> list(p)
    [Instr(op='var', args=(), data=0), Instr(op='mul', args=(0, 0), data=None)]
    """

    ops: list[str] = field(default_factory=list)
    args: list[tuple[int, ...]] = field(default_factory=list)
    data: list[Any] = field(default_factory=list)
    variables: tuple[sp.Symbol, ...] = ()
    outputs: list[int] = field(default_factory=list)
    derivatives: list[Derivative | None] = field(default_factory=list)  # per output, or empty

    def __len__(self) -> int:
        return len(self.ops)

    def __iter__(self) -> Iterator[Instr]:
        return (Instr(o, a, d) for o, a, d in zip(self.ops, self.args, self.data))

    def __getitem__(self, k: int) -> Instr:
        return Instr(self.ops[k], self.args[k], self.data[k])

    @property
    def output(self) -> int:
        """The first output (a loss program's only one)."""
        return self.outputs[0]

    @output.setter
    def output(self, slot: int) -> None:
        self.outputs = [slot]

    def emit(self, op: str, args: tuple[int, ...] = (), data: object = None) -> int:
        self.ops.append(op)
        self.args.append(args)
        self.data.append(data)
        return len(self.ops) - 1

    def var_slots(self) -> dict[sp.Symbol, int]:
        """The slot of each variable that the program reads."""
        return {self.variables[d]: k for k, (op, d) in enumerate(zip(self.ops, self.data))
                if op == "var" and isinstance(d, int)}

    def derivative_of(self, i: int) -> Derivative | None:
        return self.derivatives[i] if i < len(self.derivatives) else None

    def __getstate__(self) -> dict[str, Any]:
        # evaluators cache compiled forms on the program (`_specs`, `_straight_line`, `_sided`):
        # rebuilt on demand, never pickled (they hold functions)
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def copy(self) -> Program:
        return Program(list(self.ops), list(self.args), list(self.data), self.variables,
                       list(self.outputs), list(self.derivatives))
