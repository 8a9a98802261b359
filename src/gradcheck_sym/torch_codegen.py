"""SymPy → torch: the declared model as a batched torch forward.

The loss is compiled to the same program as the exact side (`ir.compile`), without rewriting
``Abs``/``Max``/... (torch has them), and each instruction becomes the one torch operation its
registry entry lowers to (`ir.ops`: data, not an if-chain).  Every scalar symbol is a tensor of
shape ``(batch,)``, one entry per point, so a whole set of points is one forward and one backward.
Any program runs this way, a gradient program or a second-order one included.

Why not ``sympy.lambdify(..., modules="torch")``: its printer emits ``torch.max(x, y)`` for
``Max`` (a reduction, not an elementwise maximum), ``torch.heaviside`` (no derivative in torch),
and it prints the loss as one tree, repeating every shared subexpression (a layer's output is
printed once per unit of the next layer) unless ``cse=True`` is paid for.  The program here is
linear in the DAG and every registry entry is tested against the exact side.
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy as sp
import torch

from .dtypes import DTYPES
from .ir.compile import compile_expr
from .ir.ops import REGISTRY
from .ir.program import Program

TORCH_DTYPES: dict[str, torch.dtype] = {name: d.torch for name, d in DTYPES.items()}


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
        self._last: list[int] | None = None
        self._peak: int | None = None

    def __call__(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self._loss(evaluate(self.program, inputs)[self.program.output], inputs)

    def lean(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """The loss without autograd, each intermediate dropped after its last use: a call holds
        at most `peak_live` intermediates per point instead of every slot (what lets finite
        differences of a large model run in big batches)."""
        last = self._last_use()
        vals: list[object] = [None] * len(self.program)
        dtype = inputs[0].dtype
        with torch.no_grad():
            for k, (op, args, data) in enumerate(zip(self.program.ops, self.program.args, self.program.data)):
                spec = REGISTRY[op]
                vals[k] = inputs[data] if spec.leaf else spec.torch(torch, [vals[a] for a in args], data, dtype)
                for a in (*args, k):  # the arguments read for the last time, or a slot never read
                    if last[a] == k:
                        vals[a] = None
        return self._loss(vals[self.program.output], inputs)

    @property
    def peak_live(self) -> int:
        """The most intermediates (slots other than variables) alive at once in `lean`."""
        if self._peak is None:
            last, leaf = self._last_use(), [REGISTRY[op].leaf for op in self.program.ops]
            ends = [0] * (len(self.program) + 1)  # intermediates whose last use is each slot
            for k, end in enumerate(last):
                ends[end] += 0 if leaf[k] else 1
            live = peak = 0
            for k in range(len(self.program)):
                live += 0 if leaf[k] else 1
                peak = max(peak, live)
                live -= ends[k]
            self._peak = max(peak, 1)
        return self._peak

    def _last_use(self) -> list[int]:
        if self._last is None:
            n = len(self.program)
            last = list(range(n))
            for k, args in enumerate(self.program.args):
                for a in args:
                    last[a] = k
            last[self.program.output] = n  # the result is kept
            self._last = last
        return self._last

    @staticmethod
    def _loss(out: object, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        if not isinstance(out, torch.Tensor):
            raise AssertionError("loss compiled to a non-tensor")
        return out.expand(inputs[0].shape) if out.dim() == 0 else out


def evaluate(prog: Program, inputs: Sequence[torch.Tensor]) -> list[object]:
    """Every slot of ``prog`` as a tensor (or bool), one torch operation per instruction."""
    dtype = inputs[0].dtype
    vals: list[object] = [None] * len(prog)
    for k, (op, args, data) in enumerate(zip(prog.ops, prog.args, prog.data)):
        spec = REGISTRY[op]
        if spec.leaf:
            vals[k] = inputs[data]
        else:
            vals[k] = spec.torch(torch, [vals[a] for a in args], data, dtype)
    return vals


def outputs(prog: Program, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The program's outputs, each a ``(batch,)`` tensor."""
    vals = evaluate(prog, inputs)
    shape = inputs[0].shape
    return [torch.as_tensor(vals[o], dtype=inputs[0].dtype).expand(shape) for o in prog.outputs]
