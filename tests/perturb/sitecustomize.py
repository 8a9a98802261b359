"""Another CPU, simulated: torch's float results moved by one unit in the last place.

Torch's float results differ in their last bits between machines (vectorised ``exp``/``tanh``
kernels, the blocking of reductions and matrix products), so a test must never depend on them.
This file proves that the suite does not: run it as

    GRADCHECK_SYM_PERTURB=1 PYTHONPATH=tests/perturb python -m pytest

and every process (pytest, and each ``python -m gradcheck_sym`` it starts, which inherit both
variables) runs torch under a dispatch mode that moves each element of every floating-point
result of an ATen operation one ulp up or down (a seeded pseudo-random choice per element), in
the forward and the backward pass alike.  Operations whose result IEEE 754 fixes to the bit on
every machine (``+ − × ÷ √``, conversions, copies, views, indexing, comparisons) are left exact:
a test may rely on those, as the lecture's float32 training printout does.
"""

from __future__ import annotations

import os

ENV = "GRADCHECK_SYM_PERTURB"


def _install() -> None:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    aten = torch.ops.aten
    exact_packets = {
        # correctly rounded by IEEE 754 on every machine
        aten.add, aten.sub, aten.mul, aten.div, aten.neg, aten.abs, aten.sqrt, aten.rsub, aten.reciprocal,
        aten.square, aten.sign, aten.sgn, aten.floor, aten.ceil, aten.trunc, aten.round, aten.frexp,
        aten.nextafter, aten.fmod, aten.remainder, aten.copysign, aten.clamp, aten.clamp_min, aten.clamp_max,
        aten.maximum, aten.minimum, aten.fmax, aten.fmin, aten.where, aten.exp2, aten.ldexp,
        aten.ge, aten.gt, aten.le, aten.lt, aten.eq, aten.ne, aten.isnan, aten.isinf, aten.isfinite,
        # moving data, not computing
        aten._to_copy, aten.copy_, aten.copy, aten.clone, aten.detach, aten.alias, aten.lift_fresh,
        aten.view, aten._unsafe_view, aten.reshape, aten.expand, aten.permute, aten.t, aten.transpose,
        aten.squeeze, aten.unsqueeze, aten.select, aten.slice, aten.index, aten.index_put, aten.index_put_,
        aten.index_select, aten.gather, aten.scatter, aten.cat, aten.stack, aten.split, aten.split_with_sizes,
        aten.unbind, aten.flip, aten.repeat, aten.narrow, aten.as_strided, aten.masked_fill, aten.fill_,
        aten.zero_, aten.zeros, aten.ones, aten.full, aten.empty, aten.empty_like, aten.zeros_like,
        aten.ones_like, aten.full_like, aten.new_zeros, aten.new_ones, aten.new_full, aten.new_empty,
        aten.empty_strided, aten.new_empty_strided, aten._efficientzerotensor, aten.arange, aten.scalar_tensor, aten._local_scalar_dense,
        aten.max, aten.min, aten.amax, aten.amin, aten.argmax, aten.argmin, aten.sort, aten.topk,
        aten.set_, aten.resize_, aten.random_, aten.uniform_, aten.normal_, aten.bernoulli_,
        aten.exponential_, aten.randperm, aten.randint, aten.rand, aten.randn, aten.view_as_real,
        aten.masked_select, aten.nonzero, aten.any, aten.all, aten.isclose, aten.allclose, aten.equal,
        aten.logical_and, aten.logical_or, aten.logical_not, aten.bitwise_and, aten.bitwise_or,
        aten.bitwise_not, aten.count_nonzero, aten.le_, aten.lt_, aten.add_, aten.sub_, aten.mul_,
        aten.div_, aten.neg_, aten.clamp_, aten.abs_, aten.sqrt_, aten.expand_copy, aten.permute_copy,
        aten.view_copy, aten.diagonal, aten.diag_embed, aten.tril, aten.triu,
    }
    exact = {getattr(p, "_qualified_op_name", str(p)) for p in exact_packets}
    # integer powers and square roots are computed as products/sqrt by torch: correctly rounded
    exact_exponents = {0, 1, 2, 3, 0.5, -1, -2}
    ints = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16,
            torch.bfloat16: torch.int16}

    wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", lambda t: False)

    def nudge(t: object) -> object:
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.numel() == 0 or t.dtype not in ints:
            return t
        # Only plain dense tensors with memory of their own: an efficient zero tensor (autograd's
        # "no gradient here", `_efficientzerotensor`, in forward mode and double backward) has no
        # storage, and reading its bits as integers crashed the interpreter (SIGSEGV); its
        # elements are zeros, which stay anyway.  Subclasses, functorch's wrappers, meta and
        # sparse tensors are left as they are too.
        if (type(t) is not torch.Tensor or t.layout != torch.strided or t.is_meta or t._is_zerotensor()
                or wrapped(t)):
            return t
        # up or down by a function of the value's own bits: the same value is always moved the
        # same way, as a machine's kernel is deterministic; different values go different ways
        bits = t.contiguous().view(ints[t.dtype])
        coin = ((bits ^ (bits >> 1) ^ (bits >> 3)) & 1).bool()
        moved = torch.nextafter(t, torch.where(coin, torch.full_like(t, float("inf")), torch.full_like(t, float("-inf"))))
        keep = ~torch.isfinite(t) | (t == 0)  # no ulp of a zero or an infinity: those stay
        return torch.where(keep, t, moved)

    class OneUlp(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            out = func(*args, **(kwargs or {}))
            packet = func.overloadpacket
            name = getattr(packet, "_qualified_op_name", str(packet))
            if name in exact:
                return out
            if packet is aten.pow and len(args) > 1 and isinstance(args[1], (int, float)) and args[1] in exact_exponents:
                return out
            if func._schema.is_mutable:  # an in-place op: change the tensor it wrote
                return out
            if isinstance(out, tuple):
                return tuple(nudge(o) for o in out)
            return nudge(out)

    mode = OneUlp()
    mode.__enter__()
    torch._gradcheck_sym_perturbed = True  # type: ignore[attr-defined]


class _AfterTorch:
    """Installs the mode right after ``import torch``, so processes that never import torch
    (the tests check that some do not) stay as they are."""

    def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]
        if name != "torch":
            return None
        import importlib.util
        import sys

        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        real = spec.loader.exec_module

        def exec_module(module):  # type: ignore[no-untyped-def]
            real(module)
            _install()

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if os.environ.get(ENV):
    import sys

    sys.meta_path.insert(0, _AfterTorch())
