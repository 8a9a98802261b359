"""Operators: models declared with ``outputs=`` (several outputs), checked through scalars.

The Jacobian ``J`` of outputs ``f_0 … f_{m-1}`` is checked as people check an operator's
backward: with **unit cotangents** (``e_o``: row ``o`` of ``J``, one output's gradient) and
**seeded random cotangents** (``cᵀJ``, ``VJP_VECTORS`` of them), and, with ``modes=("fwd",)``,
against forward-mode JVPs along each entry's unit direction (column ``j`` of ``J``).  Each
cotangent ``c`` makes a scalar ``Σ c_o f_o`` (`higher.scalarize`), which goes through the same
pipeline as a loss: exact value and gradient, the sources (the generated forward's autograd; the
user's ``impl`` as ``(c · impl(...)).sum()``, whose backward torch then runs with that
cotangent), finite differences for attribution.  The per-scalar comparisons are then put side
by side, one group per source and quantity, so the checks are labelled with their ``output``
(unit cotangents) or ``vector`` (random ones) and the summaries count the whole Jacobian.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import sympy as sp
import torch

from . import checks as ch
from . import orders
from . import sources as src
from .compare import UNIT_ROUNDOFF
from .errors import GradcheckError, ImplError
from .graph import compile_expr
from .higher import scalarize
from .model import Model
from .results import ModelResult
from .sampling import DTYPES, points_for, rounded

VJP_VECTORS = 2  # seeded random cotangents per operator
COTANGENT_DENOMINATOR = 8  # cotangent entries are ±k/8, k = 1..8: exact in float32 and float64


def cotangents(model: Model, seed: int) -> list[list[Fraction]]:
    """The seeded random cotangents (the same seed, the same cotangents)."""
    rng = random.Random(f"{seed}:{model.name}:cotangent")
    d = COTANGENT_DENOMINATOR
    return [[Fraction(rng.choice((-1, 1)) * rng.randint(1, d), d) for _ in model.outputs] for _ in range(VJP_VECTORS)]


def output_tensor(model: Model, out: Any, k: int) -> torch.Tensor:
    """``impl``'s result as a flat tensor of the outputs' entries (row-major), or a clear error."""
    where = f"model `{model.name}`: `impl` (at point {k})"
    m = len(model.outputs)
    shapes = {(m,), (m, 1), tuple(model.output_shape)}
    if not isinstance(out, torch.Tensor):
        raise ImplError(f"{where} returned a {type(out).__name__}, not a tensor; return a tensor of the "
                        f"{m} outputs (shape {' or '.join(map(str, sorted(shapes)))})")
    if tuple(out.shape) not in shapes:
        raise ImplError(f"{where} returned a tensor of shape {tuple(out.shape)}; the model declares "
                        f"{m} outputs of shape {tuple(model.output_shape)}, so return shape "
                        f"{' or '.join(map(str, sorted(shapes)))}")
    return out.reshape(-1)


def _scalar_impl(model: Model, cotangent: Sequence[Fraction]) -> Callable[..., Any]:
    impl = model.impl
    assert impl is not None
    weights = [float(c) for c in cotangent]
    unit = [i for i, c in enumerate(cotangent) if c != 0] if sum(c != 0 for c in cotangent) == 1 else None

    def scalar(**tensors: Any) -> Any:
        out = impl(**tensors)
        if not isinstance(out, torch.Tensor) or out.numel() != len(weights):
            return out  # checked before the run; a later change is reported as a non-scalar loss
        flat = out.reshape(-1)
        if unit is not None and weights[unit[0]] == 1.0:
            return flat[unit[0]]
        return (flat * torch.tensor(weights, dtype=flat.dtype)).sum()

    return scalar


def scalar_view(model: Model, cotangent: Sequence[Fraction]) -> Model:
    """The operator as the scalar loss ``Σ c_o f_o`` (its impl likewise), kept on the model."""
    from .verifier import prepare

    views = model.__dict__.setdefault("_gradcheck_views", {})
    key = tuple(cotangent)
    if key not in views:
        view = _copy(model)
        view.loss = scalarize(model.outputs, cotangent)
        if not isinstance(view.loss, sp.Expr) or view.loss == 0:
            view.loss = sp.Integer(0)
        view.outputs, view.output_shape = (), ()
        view.program = compile_expr(view.loss, model.symbols, rewrite_kinks=False, model=model.name)
        view.impl = None
        prepare(view)  # compiled once, shared by the copies below
        views[key] = view
    view = _copy(views[key])
    view.impl = _scalar_impl(model, cotangent) if model.impl is not None else None
    return view


def _copy(model: Model) -> Model:
    import copy

    return copy.copy(model)


def _unit(m: int, o: int) -> list[Fraction]:
    return [Fraction(int(i == o)) for i in range(m)]


def _side_by_side(groups: Sequence[ch.Group], quantity: str, layout: tuple[str, int] | None) -> ch.Group:
    """Groups of the same source, one per scalar, as one group (columns concatenated)."""
    first = groups[0]

    def cat(name: str) -> Any:
        parts = [getattr(g, name) for g in groups]
        return None if parts[0] is None else torch.cat(parts, dim=1)

    cmp = ch.Comparison(**{f.name: torch.cat([getattr(g.cmp, f.name) for g in groups], dim=1)
                           for f in dataclasses.fields(ch.Comparison)})
    exact = ch.stack_exact([g.exact for g in groups], values=quantity == "value")  # type: ignore[misc]
    return dataclasses.replace(first, quantity=quantity, values=cat("values"), cmp=cmp, verdict=cat("verdict"),
                               attribution=cat("attribution"), fd_error=cat("fd_error"), noise=cat("noise"),
                               exact=exact, layout=layout, columns=slice(1, None), output=None)


def _key(g: ch.Group) -> tuple[str, str | None, str]:
    return g.source, g.forward, g.quantity


def verify_operator(model: Model, explicit: Sequence[Any], samples: int, seed: int, dtypes: tuple[str, ...],
                    factor: float, target: str, all_checks: bool, say: Callable[[str], None], order: int,
                    modes: tuple[str, ...], *, strict: bool = False) -> ModelResult:
    """`verifier.verify` for a model declared with ``outputs=``."""
    from .dtypes import DTYPES as FLOAT_TYPES
    from .dtypes import FD_NOTE
    from .options import SUPPORTED_DTYPES
    from .verifier import (_domain, _dtype_scale, _fd_for, _groups, _judged_in, _loss_text, _sources, _variable_info,
                           computed_notes, prepare,
                           references)

    for d in dtypes:
        if d not in SUPPORTED_DTYPES:
            raise GradcheckError(f"dtype `{d}` is not supported; use {', '.join(SUPPORTED_DTYPES)}")
    m, n = len(model.outputs), len(model.entries)
    exact_points = points_for(model, samples, seed, explicit=explicit)
    if not exact_points:
        raise GradcheckError(f"model `{model.name}`: no points to check (give points= or a domain and --samples > 0)")
    per_dtype = {d: rounded(exact_points, model.symbols, d) for d in dtypes}
    unique = list(dict.fromkeys(p for pts in per_dtype.values() for p in pts))
    row = {p: u for u, p in enumerate(unique)}
    if model.impl is not None:
        first = src._kwargs(model, unique[0], "float64", requires_grad=False)
        with torch.no_grad():
            output_tensor(model, src._call(model, "impl", model.impl, first, 0), 0)
    units = [_unit(m, o) for o in range(m)]
    randoms = cotangents(model, seed) if "rev" in modes else []
    say(f"{model.name}: exact Jacobian ({m} outputs, {len(randoms)} random cotangents) at {len(unique)} points")
    scalars = []
    for c in units + randoms:
        view = scalar_view(model, c)
        prepared = prepare(view)
        refs, scale, _ = references(prepared, unique, factor)
        scalars.append((view, prepared, refs, scale))
    seconds = []
    if order >= 2:
        say(f"{model.name}: exact second derivatives of {m} outputs at {len(unique)} points")
        seconds = [orders.second_exact(model, f, unique, factor, seed, salt=f":{o}") for o, f in enumerate(model.outputs)]
    kept, summaries, failed, complete, unsupported = [], [], False, True, []
    notes: list[str] = []
    for dtype in dtypes:
        pts = per_dtype[dtype]
        index = torch.tensor([row[p] for p in pts])
        say(f"{model.name}: {dtype} sources")
        by_scalar = []
        for k, (view, prepared, refs, scale) in enumerate(scalars):
            subject = src.Subject(view, forward=prepared.subject.forward)
            ex = ch.exact_arrays([refs[p] for p in pts], _dtype_scale(prepared, pts, dtype, factor, scale[index]))
            outs = {name: f(subject, pts, dtype) for name, f in _sources(view)}
            if k == 0:  # the user's code computes in the same dtype for every output: one note
                notes += computed_notes(view, outs, dtype)
            fds = {}
            if FLOAT_TYPES[dtype].finite_differences:  # none in bfloat16/float16 (`dtypes.FD_NOTE`)
                fds["model"] = src.finite_differences(subject, pts, dtype)
                if view.impl is not None:
                    fds["impl"] = src.finite_differences(subject, pts, dtype, forward="impl",
                                                         computed_in=_judged_in(outs, "impl", dtype))
            groups = [dataclasses.replace(g, exact=ex) for g in _groups(outs, fds, ex, dtype, UNIT_ROUNDOFF[dtype])]
            if k < m and "fwd" in modes:
                more, refused = orders.fwd_groups(subject, list(outs), pts, dtype, ex, lambda s: _fd_for(groups, s),
                                                  judged=lambda s: _judged_in(outs, s, dtype))
                groups += more
                unsupported += refused
            if k < m and seconds:
                more, refused = orders.second_groups(subject, list(outs), pts, dtype, seconds[k],
                                                     [row[p] for p in pts], judged=lambda s: _judged_in(outs, s, dtype))
                groups += more
                unsupported += refused
            by_scalar.append(groups)
        combined = _combine(by_scalar, m, n, modes, bool(seconds) and seconds[0].vectors is None)
        size = sum(g.verdict.numel() for g in combined)
        everything = all_checks or size <= ch.DETAIL_LIMIT
        made, sums = ch.materialize(combined, dtype, model.entries, combined[0].exact, everything=everything)  # type: ignore[arg-type]
        kept += made
        summaries += sums
        complete = complete and everything
        failed = failed or ch.any_failure(combined, strict)
    return ModelResult(
        name=model.name, status="fail" if failed else "pass", target=target, description=model.description,
        loss=_loss_text(model), loss_latex=model.latex or (sp.latex(model.loss) if n + m <= 40 else ""),
        variables=_variable_info(model), domain=_domain(model), n_params=model.n_params,
        notes=model.notes + tuple(FD_NOTE.format(dtype=d, bits=FLOAT_TYPES[d].mantissa_bits + 1)
                                  for d in dtypes if not FLOAT_TYPES[d].finite_differences) + tuple(notes),
        points={d: [_point(model, p) for p in pts] for d, pts in per_dtype.items()},
        arithmetic=tuple(sorted({r.arithmetic for _, _, refs, _ in scalars for r in refs.values()})),
        sources=tuple(name for name, _ in _sources(scalars[0][0])) + ("fd",), checks=tuple(kept), complete=complete,
        summaries=tuple(summaries), outputs=tuple(model.output_shape), order=order, modes=modes,
        second_method=seconds[0].method if seconds else "",
        unsupported=orders.unique_unsupported(unsupported),
    )


def _combine(by_scalar: list[list[ch.Group]], m: int, n: int, modes: tuple[str, ...], hessian: bool) -> list[ch.Group]:
    """One group per source and quantity: outputs' values, the Jacobian (unit cotangents, and
    forward mode), the random VJPs, the second derivatives of every output."""
    out = []
    units, randoms = by_scalar[:m], by_scalar[m:]
    keys = list(dict.fromkeys(_key(g) for g in units[0]))
    for source, forward, quantity in keys:
        parts = [next(g for g in gs if _key(g) == (source, forward, quantity)) for gs in units
                 if any(_key(g) == (source, forward, quantity) for g in gs)]
        if len(parts) != m:
            continue  # a source refused for one output refused for all (reported as not supported)
        if quantity == "loss":
            out.append(_side_by_side(parts, "value", None))
        elif quantity == "grad":
            if "rev" in modes or source == "fd":
                out.append(_side_by_side(parts, "grad", ("jacobian", n)))
        elif quantity == "jvp":
            out.append(_side_by_side(parts, "jvp", ("jacobian", n)))
        elif quantity == "second":
            out.append(_side_by_side(parts, "second", ("hessians" if hessian else "hvps", n)))
    for source, forward, quantity in keys:
        if quantity != "grad" or not randoms or (source == "fd" and forward is None):
            continue
        parts = [next(g for g in gs if _key(g) == (source, forward, quantity)) for gs in randoms]
        out.append(_side_by_side(parts, "grad", ("vjp", n)))
    return out


def _point(model: Model, values: Sequence[float]) -> dict[str, Any]:
    from .verifier import _point_dict

    return _point_dict(model, values)
