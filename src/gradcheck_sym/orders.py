"""Forward mode and second order: the checks `verify` adds with ``modes=("fwd",)`` and ``order=2``.

* **fwd**: each source's forward-mode AD (``torch.autograd.forward_ad``) along every entry's unit
  direction, against the exact partial derivatives (a JVP with ``e_j`` is column ``j`` of the
  Jacobian), with the first-order tolerance and finite-difference attribution;
* **order 2**: each source's double backward (``create_graph=True`` twice, as ``gradgradcheck``
  does) against exact second derivatives from `higher`: the whole Hessian for models with at
  most ``HESSIAN_MAX_ENTRIES`` entries, else Hessian-vector products with ``HVP_VECTORS`` seeded
  random ±1 vectors.

A source that cannot do it (``grad_impl``; a ``once_differentiable`` backward; a custom Function
without ``jvp``) is reported as `NotSupported` with the reason, never as a failure.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import sympy as sp
import torch

from . import checks as ch
from . import sources as src
from .higher import ExactTable, second_order
from .model import Model
from .results import NotSupported

HESSIAN_MAX_ENTRIES = 30  # larger models are checked with Hessian-vector products
# Forward mode and double backward run torch's own derivative formulas (logsigmoid's second
# derivative is a cancellation 1 − e^(−softplus)), whose rounding the analysed program does not
# contain: measured up to 0.9 of the first-order rule's tolerance on correct torch functions
# (silu, logsigmoid, softplus, gelu at 300 points), so these checks get this much head-room.
# A wrong formula (a lost term, a detached factor) is off by far more.
HEADROOM = 8.0
HVP_VECTORS = 2  # seeded random ±1 vectors per model and output

JVP_SOURCES: dict[str, Callable[..., src.SourceOutput]] = {"autograd": src.jvp_autograd, "impl": src.jvp_impl}
SECOND_SOURCES: dict[str, Callable[..., src.SourceOutput]] = {"autograd": src.second_autograd, "impl": src.second_impl}


def not_supported(source: str, quantity: str) -> NotSupported | None:
    """Sources that by their nature cannot compute ``quantity`` (``jvp`` or ``second``)."""
    if source == "grad_impl":
        return NotSupported(source=source, quantity=quantity, reason=src.GRAD_IMPL_HIGHER)
    return None


def fwd_groups(subject: src.Subject, names: Sequence[str], pts: Sequence[src.Point], dtype: str,
               ex: ch.ExactArrays, fd_for: Callable[[str], ch.Group | None], *,
               judged: Callable[[str], str] | None = None) -> tuple[list[ch.Group], list[NotSupported]]:
    """Forward-mode JVPs of every source in ``names`` against the exact gradient ``ex``.
    ``judged(name)``: the dtype a source is judged in, where its code computes in another than it
    is given (as for its gradient: `verifier._judged_in`)."""
    outs, unsupported = _outputs(names, "jvp", lambda name: JVP_SOURCES[name](subject, pts, dtype))
    # forward mode is not judged near kinks yet (`nearkinks`: first-order gradients only)
    loose = dataclasses.replace(ex, scale=ex.scale * HEADROOM, near_lo=None, near_hi=None, near_notes=None)
    groups = []
    for name, out in outs:
        g = ch.source_group(name, ch.as_tensor(out.grads).reshape(len(pts), -1), loose,
                            judged(name) if judged else dtype, fd_for(name))
        groups.append(dataclasses.replace(g, quantity="jvp", exact=loose))
    return groups, unsupported


def _outputs(names: Sequence[str], quantity: str, call: Callable[[str], src.SourceOutput]
             ) -> tuple[list[tuple[str, src.SourceOutput]], list[NotSupported]]:
    """``call(name)`` for each source that can compute ``quantity``; the others, with the reason."""
    outs, unsupported = [], []
    for name in names:
        refused = not_supported(name, quantity)
        if refused is not None:
            unsupported.append(refused)
            continue
        try:
            outs.append((name, call(name)))
        except src.Unsupported as exc:
            unsupported.append(NotSupported(source=name, quantity=quantity, reason=str(exc)))
    return outs, unsupported


@dataclass(frozen=True)
class SecondExact:
    """The exact second derivatives of one scalar at the unique points."""

    tables: list[ExactTable]  # Hessian rows, or one per HVP vector
    layout: tuple[str, int]  # ("hessian", entries) or ("hvp", entries)
    vectors: list[list[Fraction]] | None  # the HVP vectors (None: the whole Hessian)

    @property
    def method(self) -> str:
        if self.vectors is None:
            n = self.layout[1]
            return f"the whole Hessian ({n}×{n} second derivatives per point)"
        return (f"Hessian-vector products with {len(self.vectors)} seeded random ±1 vectors (more than "
                f"{HESSIAN_MAX_ENTRIES} entries)")


def second_exact(model: Model, f: sp.Expr, unique: Sequence[tuple[float, ...]], factor: float, seed: int,
                 salt: str = "") -> SecondExact:
    """Exact second derivatives of ``f`` (the loss, or one output) at the points ``unique``."""
    wrt = tuple(e.symbol for e in model.entries)
    cache = model.__dict__.setdefault("_gradcheck_second", {})
    so = second_order(f, model.symbols, wrt, cache=cache, model=model.name)
    points = [dict(zip(model.symbols, p)) for p in unique]
    n = len(wrt)
    factor *= HEADROOM
    if n <= HESSIAN_MAX_ENTRIES:
        return SecondExact(tables=so.hessian_rows(points, factor), layout=("hessian", n), vectors=None)
    rng = random.Random(f"{seed}:{model.name}:hvp{salt}")
    vectors = [[Fraction(rng.choice((-1, 1))) for _ in range(n)] for _ in range(HVP_VECTORS)]
    return SecondExact(tables=[so.hvp(v, points, factor) for v in vectors], layout=("hvp", n), vectors=vectors)


def exact_arrays_at(table: ExactTable, rows: Sequence[int], dtype: str = "float64") -> ch.ExactArrays:
    """A table's exact values at the given unique-point rows (one per point of a dtype)."""
    index = torch.tensor(list(rows), dtype=torch.long)
    return ch.exact_arrays([table.refs[r] for r in rows], table.by_dtype.get(dtype, table.scale)[index])


def second_groups(subject: src.Subject, names: Sequence[str], pts: Sequence[src.Point], dtype: str,
                  exact: SecondExact, rows: Sequence[int], *, output: int | None = None,
                  judged: Callable[[str], str] | None = None) -> tuple[list[ch.Group], list[NotSupported]]:
    """Every source's double backward against the exact second derivatives (``judged``: as for
    `fwd_groups`)."""
    ex = ch.stack_exact([exact_arrays_at(t, rows, dtype) for t in exact.tables])
    vectors = None if exact.vectors is None else [[float(c) for c in v] for v in exact.vectors]
    outs, unsupported = _outputs(names, "second",
                                 lambda name: SECOND_SOURCES[name](subject, pts, dtype, vectors=vectors))
    groups = []
    for name, out in outs:
        values = ch.as_tensor(out.grads).reshape(len(pts), -1)
        in_dtype = judged(name) if judged else dtype
        g = ch.source_group(name, values, ex, in_dtype, None)
        if bool((g.verdict == 1).any()):  # attribute: differences of the source's own gradient
            fd = src.gradient_differences(subject, pts, dtype, source=name, vectors=vectors)
            fd_g = ch.fd_group(name, ch.as_tensor(fd.grads).reshape(len(pts), -1),
                               ch.as_tensor(fd.error_estimate).reshape(len(pts), -1), ex, in_dtype, None)
            g = ch.source_group(name, values, ex, in_dtype, fd_g)
        groups.append(dataclasses.replace(g, quantity="second", exact=ex, layout=exact.layout, output=output))
    return groups, unsupported


def unique_unsupported(items: Sequence[NotSupported]) -> tuple[NotSupported, ...]:
    """Each (source, quantity) once, in the order met."""
    seen: dict[tuple[str, str], NotSupported] = {}
    for u in items:
        seen.setdefault((u.source, u.quantity), u)
    return tuple(seen.values())
