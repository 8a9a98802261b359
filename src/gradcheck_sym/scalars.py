"""The part of the torch namespace that rounding rules and lowerings use, on Python floats.

The running error analysis (`errorbound`) is written against a tensor namespace (``P.T``): one
torch operation per instruction, on a batch of points.  For a single-point check that batch has
one or two elements, and each torch operation costs microseconds of dispatch for one number, most
of a small model's check (issue 12).  `Scalars` runs the same rules on one point's Python floats:

* arithmetic (``+ − × /``), ``abs``, comparisons, ``where`` and logic are Python's own IEEE-754
  float64 operations: bit for bit what torch computes on float64 tensors;
* every other function (``tanh``, ``exp``, ``pow``, ...) is torch's own kernel called on a
  one-element tensor, never ``math``: torch's vectorised kernels (SLEEF) differ from the C
  library's in the last bits (``math.tanh`` differs from ``torch.tanh`` at a fifth of all points),
  and a one-element tensor takes the same code path as the few-element batch it replaces.

So the float pass gives the very bounds the tensor pass gives (`tests/test_scalars.py` runs the
corpus both ways).  It is used only for programs whose every op has a rule here (`supported`):
any other program, or more than `SCALAR_POINTS` points, runs on tensors as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .ir.ops import REGISTRY
from .ir.program import Program

SCALAR_POINTS = 4  # up to this many points, the error pass runs point by point on floats: torch's
#   kernels take their scalar or partial-vector path below 2 vector widths (8 doubles with AVX2),
#   so a batch this small is computed as each of its points alone

# ops whose rounding rule (and lowering) read nothing but this namespace's entries below
STRUCTURAL = frozenset({"const", "var", "add", "mul", "pow", "rel", "and", "or", "not", "ite", "pw", "gate", "cmul",
                        "acc"})
# ops whose lowering may run in `evaluate` (the local partials of a function): no ``x.dtype``
LOWERED = frozenset({"const", "var", "add", "mul", "pow"})
# functions whose lowering is one torch function of whole slots (`ir.functions._unary`,
# softplus's logaddexp, atan2): their names are the torch functions called
FUNCTIONS = frozenset({"exp", "log", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh", "asinh",
                       "acosh", "atanh", "erf", "erfc", "log1p", "expm1", "loggamma", "softplus", "atan2"})


def _one(x: Any) -> torch.Tensor:
    return torch.tensor([x], dtype=torch.float64)


def _torch_unary(f: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Any], float]:
    return lambda x: f(_one(x)).item()


class Scalars:
    """The torch functions the rules call, on floats (see the module docstring); booleans are
    Python's."""

    float64 = torch.float64

    @staticmethod
    def tensor(x: Any, dtype: Any = None) -> Any:
        return float(x) if dtype is not None else x

    @staticmethod
    def as_tensor(x: Any) -> Any:
        return x

    @staticmethod
    def zeros(shape: Any, dtype: Any = None) -> float:
        assert shape == ()
        return 0.0

    @staticmethod
    def zeros_like(x: Any) -> float:
        return 0.0

    @staticmethod
    def where(c: Any, a: Any, b: Any) -> Any:
        return a if c else b

    @staticmethod
    def logical_not(x: Any) -> bool:
        return not x

    @staticmethod
    def logical_and(a: Any, b: Any) -> bool:
        return bool(a) and bool(b)

    @staticmethod
    def logical_or(a: Any, b: Any) -> bool:
        return bool(a) or bool(b)

    lt = staticmethod(lambda a, b: a < b)
    le = staticmethod(lambda a, b: a <= b)
    gt = staticmethod(lambda a, b: a > b)
    ge = staticmethod(lambda a, b: a >= b)
    eq = staticmethod(lambda a, b: a == b)
    ne = staticmethod(lambda a, b: a != b)

    @staticmethod
    def pow(x: Any, e: Any) -> float:  # ``e`` is a Python number in every rule allowed here (not `powv`)
        return torch.pow(_one(x), e).item()

    @staticmethod
    def logaddexp(a: Any, b: Any) -> float:
        return torch.logaddexp(_one(a), _one(b)).item()

    @staticmethod
    def atan2(a: Any, b: Any) -> float:
        return torch.atan2(_one(a), _one(b)).item()

    reciprocal = staticmethod(_torch_unary(torch.reciprocal))
    sqrt = staticmethod(_torch_unary(torch.sqrt))
    rsqrt = staticmethod(_torch_unary(torch.rsqrt))
    lgamma = staticmethod(_torch_unary(torch.lgamma))


for _name in ("exp", "log", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh",
              "atanh", "erf", "erfc", "log1p", "expm1"):
    setattr(Scalars, _name, staticmethod(_torch_unary(getattr(torch, _name))))


def supported(prog: Program, ops: frozenset[str] = STRUCTURAL | FUNCTIONS) -> bool:
    """Whether every op of ``prog`` has its rule on floats (kept on the program: asked per check)."""
    memo: dict[tuple[int, frozenset[str]], bool] = prog.__dict__.setdefault("_scalar_ok", {})
    key = (len(prog), ops)
    if key not in memo:
        memo[key] = all(op in ops for op in prog.ops)
    return memo[key]


def evaluate(prog: Program, inputs: Sequence[Any]) -> list[Any]:
    """`torch_codegen.evaluate` on floats: every slot, each instruction's lowering (the local
    partials of a function, `errorbound._Pass.local_partials`)."""
    vals: list[Any] = [None] * len(prog)
    for k, (op, args, data) in enumerate(zip(prog.ops, prog.args, prog.data)):
        spec = REGISTRY[op]
        vals[k] = inputs[data] if spec.leaf else spec.torch(Scalars, [vals[a] for a in args], data, torch.float64)
    return vals
