"""SymPy → torch: the declared model as a batched torch forward.

The loss is compiled to the same flat program as the exact side (`graph`), without rewriting
``Abs``/``Max``/... (torch has them), and each instruction becomes one torch operation from the
function table in `functions` (data, not an if-chain).  Every scalar symbol is a tensor of shape
``(batch,)``, one entry per point, so a whole set of points is one forward and one backward.

Why not ``sympy.lambdify(..., modules="torch")``: its printer emits ``torch.max(x, y)`` for
``Max`` (a reduction, not an elementwise maximum), ``torch.heaviside`` (no derivative in torch),
and it prints the loss as one tree, repeating every shared subexpression (a layer's output is
printed once per unit of the next layer) unless ``cse=True`` is paid for.  The program here is
linear in the DAG and every mapped function is tested against the exact side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import reduce
import operator

import sympy as sp
import torch

from .functions import FUNCTIONS
from .graph import Program, compile_expr

TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def _heaviside(x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    # torch.heaviside has no derivative ("not implemented"); a where() chain does (zero).
    one = torch.ones((), dtype=x.dtype)
    zero = torch.zeros((), dtype=x.dtype)
    return torch.where(x > 0, one, torch.where(x < 0, zero, h0))


# The table's torch names that are not plain torch functions of the same arguments.
TORCH_SPECIAL: dict[str, Callable[..., torch.Tensor]] = {
    "maximum": lambda *xs: reduce(torch.maximum, xs),  # SymPy's Max is n-ary, torch's binary
    "minimum": lambda *xs: reduce(torch.minimum, xs),
    "heaviside": _heaviside,
}


def torch_function(f: type) -> Callable[..., torch.Tensor]:
    """The torch operation for a SymPy function class of the table."""
    name = FUNCTIONS[f].torch
    return TORCH_SPECIAL.get(name) or getattr(torch, name)

_REL = {"<": torch.lt, "<=": torch.le, ">": torch.gt, ">=": torch.ge, "==": torch.eq, "!=": torch.ne}


class TorchForward:
    """The model's loss as a torch function of one ``(batch,)`` tensor per symbol.

    >>> x, w = sp.symbols("x w", real=True)
    >>> f = TorchForward((x*w - 1)**2, (x, w))
    >>> f([torch.tensor([2.0]), torch.tensor([1.0])]).tolist()
    [1.0]
    """

    def __init__(self, loss: sp.Expr | Program, variables: Sequence[sp.Symbol] = (), *, model: str = "") -> None:
        self.program: Program = (
            loss if isinstance(loss, Program) else compile_expr(loss, tuple(variables), rewrite_kinks=False, model=model)
        )

    def __call__(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        out = evaluate(self.program, inputs)[self.program.output]
        if not isinstance(out, torch.Tensor):
            raise AssertionError("loss compiled to a non-tensor")
        return out.expand(inputs[0].shape) if out.dim() == 0 else out


def evaluate(prog: Program, inputs: Sequence[torch.Tensor]) -> list[object]:
    """Every slot of ``prog`` as a tensor (or bool), one torch operation per instruction."""
    dtype = inputs[0].dtype
    vals: list[object] = [None] * len(prog)
    for k, (op, args, data) in enumerate(zip(prog.ops, prog.args, prog.data)):
        if op == "var":
            vals[k] = inputs[data]  # type: ignore[index]
        elif op == "const":
            vals[k] = data if isinstance(data, bool) else torch.tensor(float(data), dtype=dtype)  # type: ignore[arg-type]
        elif op == "add":
            vals[k] = reduce(operator.add, (vals[a] for a in args))
        elif op == "mul":
            vals[k] = reduce(operator.mul, (vals[a] for a in args))
        elif op == "pow":
            vals[k] = _pow(vals[args[0]], data)  # type: ignore[arg-type]
        elif op == "powv":
            vals[k] = torch.pow(vals[args[0]], vals[args[1]])  # type: ignore[arg-type]
        elif op == "fn":
            vals[k] = torch_function(data)(*(vals[a] for a in args))  # type: ignore[arg-type]
        elif op == "rel":
            vals[k] = _REL[data](vals[args[0]], vals[args[1]])  # type: ignore[index]
        elif op == "pw":
            vals[k] = _piecewise([vals[a] for a in args], dtype)
        elif op in ("and", "or"):
            vals[k] = _logical(op, [vals[a] for a in args])
        elif op == "not":
            x = vals[args[0]]
            vals[k] = (not x) if isinstance(x, bool) else torch.logical_not(x)  # type: ignore[arg-type]
    return vals


def _pow(x: torch.Tensor, e: sp.Rational) -> torch.Tensor:
    if e == -1:
        return torch.reciprocal(x)
    if e == sp.Rational(1, 2):
        return torch.sqrt(x)
    if e == sp.Rational(-1, 2):
        return torch.rsqrt(x)
    if e.q == 1:
        return torch.pow(x, int(e.p))
    return torch.pow(x, float(e))


def _piecewise(xs: list[object], dtype: torch.dtype) -> torch.Tensor:
    """Nested ``torch.where``; NaN where no condition holds (SymPy's Piecewise is undefined)."""
    result: object = torch.tensor(float("nan"), dtype=dtype)
    for b in range(len(xs) - 2, -1, -2):
        value, cond = xs[b], xs[b + 1]
        if cond is True:
            result = value
        elif cond is not False:
            result = torch.where(cond, value, result)  # type: ignore[arg-type]
    return result  # type: ignore[return-value]


def _logical(op: str, xs: list[object]) -> object:
    f = torch.logical_and if op == "and" else torch.logical_or
    acc: object = xs[0]
    for x in xs[1:]:
        if isinstance(acc, bool) and isinstance(x, bool):
            acc = (acc and x) if op == "and" else (acc or x)
        elif isinstance(acc, bool) or isinstance(x, bool):
            b, t = (acc, x) if isinstance(acc, bool) else (x, acc)
            acc = t if (b if op == "and" else not b) else b
        else:
            acc = f(acc, x)  # type: ignore[arg-type]
    return acc
