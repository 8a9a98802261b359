"""From arrays to `Check` objects and per-source summaries, for one dtype.

All the comparing is done on arrays (`compare`), every point and entry at once.  `Check`
objects, which are what reports and JSON show, are then made for every entry when there are
few (the default ``verify`` of a handful of points), and for large runs (a thousand points of a
224-weight network is 900,000 values) only for the ones that matter: every disagreement,
every non-differentiable or undefined point, and the entries closest to their tolerance.  The
summaries always count everything.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flint import arb

from .compare import (
    FALLBACK_ULPS,
    FD_SIGMAS,
    FLOOR_ULPS,
    IMPRECISE_FACTOR,
    INCONCLUSIVE_FRACTION,
    SENSITIVITY_FACTOR,
    MANTISSA_BITS,
    MIN_EXPONENT,
    UNIT_ROUNDOFF,
    as_float,
    exact_text,
)
from .arrays import Floats as _Floats
from .arrays import NumPy as _NumPy
from .arrays import Torch as _Torch
from .dtypes import DTYPES
from .model import Entry
from .nearkinks import note_of, within_hull
from .reference import ExactValue, PointReference
from .results import Check, SourceSummary

# -- the rules of `compare`, on arrays: one entry per point and quantity ------------------------
#
# The rules are written once against an array namespace ``N`` (`arrays`): torch, NumPy for a
# group of at most `NUMPY_VALUES` values, Python floats number by number for at most
# `FLOAT_VALUES`; the same verdicts bit for bit.


NUMPY_VALUES = 64  # a group of at most this many values is judged on NumPy arrays (`_NumPy`)
FLOAT_VALUES = 8  # ... and of at most this many, number by number on floats (`_Floats`)


def ulp_array(x: Any, dtype: str, N: Any = _Torch) -> Any:
    """`ulp` of every element."""
    mantissa, exponent = N.frexp(abs(x))
    e = N.clamp_min(N.f64(exponent) - 1, MIN_EXPONENT[dtype])
    e = N.where(x == 0, N.scalar(float(MIN_EXPONENT[dtype])), e)
    spacing = N.exp2(e - MANTISSA_BITS[dtype])
    return N.where(N.isfinite(x), spacing, N.scalar(math.inf))


@dataclass(frozen=True)
class Comparison:
    """Values against exact values, elementwise (NaN where there is no exact value)."""

    err: Any  # |value - exact| (torch tensors, NumPy arrays while `_NumPy` judges)
    rel: Any
    ulps: Any
    tol: Any
    agree: Any  # bool


def compare(values: Any, hi: Any, lo: Any, scale: Any, dtype: str, sensitive: Any | None = None,
            declared: bool = True, N: Any = _Torch, spacing: Any = None) -> Comparison:
    """`compare.tolerance` applied elementwise (``hi + lo`` is the exact value, `compare.split`).

    ``sensitive`` (units of u, NaN where unknown): the function's own sensitivity to rounding its
    inputs (`errorbound.input_sensitivity`), which does not depend on how the maths is written.
    Where it is known, a source running unknown code (``declared=False``: impl, grad_impl) is held
    to it alone; the declaration's own float evaluation (autograd) to the larger of it and the
    declared program's rounding size ``scale``.  ``spacing``: `ulp_array` of ``hi``, if the caller has it."""
    spacing = ulp_array(hi, dtype, N) if spacing is None else spacing
    if sensitive is not None:
        own = SENSITIVITY_FACTOR * sensitive
        known = N.not_(N.isnan(own))
        scale = N.where(known, N.maximum(scale, own) if declared else own, scale)
    tol = N.where(
        N.isfinite(scale), N.maximum(UNIT_ROUNDOFF[dtype] * scale, FLOOR_ULPS * spacing), FALLBACK_ULPS * spacing
    )
    finite = N.isfinite(values)
    err = N.where(finite, abs((values - hi) - lo), N.scalar(math.inf))
    rel = N.where(err == 0, N.zeros_like(err), N.div(err, abs(hi)))
    return Comparison(err=err, rel=rel, ulps=N.div(err, spacing), tol=tol, agree=finite & (err <= tol))


def fd_tolerance_array(fd_error: Any, tol: Any, N: Any = _Torch) -> Any:
    return N.maximum(FD_SIGMAS * fd_error, tol)


def fd_agrees_array(fd: Any, fd_tol: Any, target: Any, N: Any = _Torch) -> Any:
    return N.isfinite(fd) & N.isfinite(target) & (abs(fd - target) <= fd_tol)


# attribution codes -> (attribution, note), as data
NO_ATTRIBUTION, WRONG, FORWARD_MISMATCH, INCONCLUSIVE, UNCONFIRMED, OUTSIDE_CORNER = 0, 1, 2, 3, 4, 5
NOT_COMPUTABLE, EXPLAINED, UNDERFLOW, UNRESOLVED = 6, 7, 8, 9  # notes of the imprecise and inconclusive bands
OUT_OF_RANGE = 10  # the exact value itself is beyond the dtype's largest finite number
NOT_ZERO = 11  # a weight that does not reach the loss got a gradient other than exactly 0
NEAR_KINK = 12  # within the hull of the branches a condition near its kink may take (`nearkinks`)
FD_BOTH = 13  # finite differences agree with the exact value and with the source: too coarse to tell
ATTRIBUTION: dict[int, tuple[str | None, str]] = {
    NO_ATTRIBUTION: (None, ""),
    WRONG: ("wrong", "finite differences agree with the exact value: the gradient is wrong"),
    FORWARD_MISMATCH: (
        "forward_mismatch",
        "finite differences agree with this source, not with the exact value: the forward does not "
        "compute the declared model",
    ),
    INCONCLUSIVE: ("wrong", "finite differences agree with neither (inconclusive); the exact value decides"),
    FD_BOTH: ("wrong", "finite differences agree with both the exact value and this source (the error is below "
              "their resolution); the exact value decides"),
    UNCONFIRMED: ("wrong", "no finite differences to confirm"),
    NOT_ZERO: ("wrong", "this weight does not occur in the declared loss, so its exact gradient is 0: a source "
               "must return exactly 0 (or no gradient) for it"),
}


# the same codes for second derivatives, attributed by differences of the source's own gradient
SECOND_ATTRIBUTION: dict[int, tuple[str | None, str]] = {
    **ATTRIBUTION,
    WRONG: ("wrong", "finite differences of this source's own gradient agree with the exact value: its "
            "double backward is wrong"),
    FORWARD_MISMATCH: (
        "forward_mismatch",
        "finite differences of this source's own gradient agree with it, not with the exact value: its "
        "gradient is not the declared model's (see the first-order checks)",
    ),
    INCONCLUSIVE: ("wrong", "finite differences of this source's gradient agree with neither (inconclusive); the "
                   "exact value decides"),
    FD_BOTH: ("wrong", "finite differences of this source's gradient agree with both the exact value and it (the "
              "error is below their resolution); the exact value decides"),
}


def attribute(agree: Any, fd_ok_exact: Any, fd_ok_source: Any, N: Any = _Torch) -> Any:
    """Attribution codes elementwise: see the module docstring and ``ATTRIBUTION``."""
    # agreeing with both says nothing about which is right: only the exact value does
    code = N.where(fd_ok_exact, N.where(fd_ok_source, FD_BOTH, WRONG), N.where(fd_ok_source, FORWARD_MISMATCH,
                                                                                INCONCLUSIVE))
    return N.where(agree, NO_ATTRIBUTION, code)


DETAIL_LIMIT = 20_000  # a dtype with more checks than this keeps only the interesting ones
WORST_KEPT = 10  # ... plus this many closest to their tolerance, per source
SPECIAL_KEPT = 200  # ... and at most this many disagreements and special points per source

class Deferred:
    """A per-point array computed when first read: the explained bound (`ExactArrays.explained`)
    decides only whether a mismatch is imprecise, and costs a second error pass and the activation
    sensitivity (`verifier.references`), so a check where every source agrees never computes it.
    Indexing defers too (``d[rows]`` is computed from ``d`` when read)."""

    def __init__(self, compute: Any) -> None:
        self._compute: Any = compute
        self._value: Any = None

    def resolve(self) -> Any:
        if self._compute is not None:
            self._value, self._compute = self._compute(), None
        return self._value

    def __getitem__(self, index: Any) -> Deferred:
        return Deferred(lambda: self.resolve()[index])


def resolved(x: Any) -> Any:
    """``x``, or its value if it is `Deferred`."""
    return x.resolve() if isinstance(x, Deferred) else x


VALUE, NONDIFFERENTIABLE, UNDEFINED = 0, 1, 2
_KIND = {"value": VALUE, "nondifferentiable": NONDIFFERENTIABLE, "undefined": UNDEFINED}


@dataclass
class ExactArrays:
    """The exact side at the points of one dtype: column 0 is the loss, then one per entry."""

    kind: torch.Tensor  # VALUE, NONDIFFERENTIABLE or UNDEFINED
    hi: torch.Tensor  # exact = hi + lo (NaN unless VALUE)
    lo: torch.Tensor
    left: torch.Tensor  # one-sided derivatives (NaN where there are none)
    right: torch.Tensor
    scale: torch.Tensor  # rounding-error size, units of u
    refs: list[PointReference]  # one per row, for the exact text and the reasons
    explained: torch.Tensor | Deferred | None = None  # the explained bound (`errorbound.ErrorScales.explained`),
    #   units of u; `Deferred` until a mismatch reads it
    sensitive: torch.Tensor | None = None  # u·Σⱼ|∂gᵢ/∂xⱼ|·|xⱼ| in units of u (NaN: not computed)
    largest: torch.Tensor | None = None  # (rows,) the declared program's largest |value| (float64)
    zero: torch.Tensor | None = None  # bool, True where the entry does not reach the loss (exactly 0)
    near_lo: torch.Tensor | None = None  # hull of the exact value and its branch-flipped alternatives where a
    near_hi: torch.Tensor | None = None  #   condition is within rounding of a kink (`nearkinks`; NaN elsewhere)
    near_notes: list[str | None] | None = None  # per row: which condition, how near (`nearkinks`)

    def value(self, i: int, j: int) -> ExactValue:
        r = self.refs[i]
        return r.loss if j == 0 else r.grads[j - 1]


@dataclass
class StackedArrays(ExactArrays):
    """Several `ExactArrays` side by side: column 0 is the first one's, then the gradient columns
    of each in turn (a Hessian's rows, a Jacobian's rows, several HVPs or VJPs), or with
    ``values`` their column 0s (an operator's outputs)."""

    parts: list[ExactArrays] | None = None
    width: int = 0  # columns per part
    values: bool = False

    def value(self, i: int, j: int) -> ExactValue:
        assert self.parts is not None
        if j == 0:
            return self.parts[0].value(i, 0)
        part, col = divmod(j - 1, self.width)
        return self.parts[part].value(i, 0 if self.values else col + 1)


def stack_exact(parts: Sequence[ExactArrays], *, values: bool = False) -> StackedArrays:
    """``parts`` side by side (see `StackedArrays`); ``values``: their column 0s, not gradients."""
    cols = slice(0, 1) if values else slice(1, None)

    def cat(name: str) -> torch.Tensor:
        first = resolved(getattr(parts[0], name))[:, :1]
        return torch.cat([first, *(resolved(getattr(p, name))[:, cols] for p in parts)], dim=1)

    def maybe(name: str) -> torch.Tensor | None:
        return cat(name) if all(getattr(p, name) is not None for p in parts) else None

    width = 1 if values else parts[0].hi.shape[1] - 1
    return StackedArrays(kind=cat("kind"), hi=cat("hi"), lo=cat("lo"), left=cat("left"), right=cat("right"),
                         scale=cat("scale"), refs=parts[0].refs, parts=list(parts), width=width, values=values,
                         explained=maybe("explained"), sensitive=maybe("sensitive"), largest=parts[0].largest)


def exact_arrays(refs: Sequence[PointReference], scale: torch.Tensor, *,
                 explained: torch.Tensor | Deferred | None = None,
                 sensitive: torch.Tensor | None = None, largest: torch.Tensor | None = None,
                 zero: torch.Tensor | None = None) -> ExactArrays:
    """Arrays of the references (one row per point; a reference shared by several rows, as a
    random point is by both dtypes, is converted once)."""
    from .compare import split

    nan = float("nan")
    rows: dict[int, tuple[list[int], list[float], list[float], list[float], list[float]]] = {}
    for r in refs:
        if id(r) in rows:
            continue
        k, h, l_, a, b = [], [], [], [], []
        for e in (r.loss, *r.grads):
            kind = e.kind
            k.append(_KIND[kind])
            if kind != "value":
                hv, lv = nan, nan
            elif type(e.value) is arb:  # most values: `split` of a ball, inlined (hundreds of thousands)
                v = e.value
                if 0 in v:
                    hv, lv = 0.0, 0.0  # a certified ball around 0 (narrower than any rounding): the value 0
                else:
                    mid = v.mid()
                    hv = float(mid)
                    lv = float(mid - hv) if math.isfinite(hv) else 0.0
            else:
                hv, lv = split(e.value)
                if isinstance(e.value, arb) and 0 in e.value:
                    hv, lv = 0.0, 0.0
            h.append(hv)
            l_.append(lv)
            a.append(as_float(e.left) if e.left is not None else nan)
            b.append(as_float(e.right) if e.right is not None else nan)
        rows[id(r)] = (k, h, l_, a, b)
    table = [rows[id(r)] for r in refs]

    def column(i: int, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor([t[i] for t in table], dtype=dtype).reshape(len(refs), -1)

    return ExactArrays(kind=column(0, torch.int8), hi=column(1, torch.float64), lo=column(2, torch.float64),
                       left=column(3, torch.float64), right=column(4, torch.float64), scale=scale, refs=list(refs),
                       explained=explained, sensitive=sensitive, largest=largest, zero=zero)


@dataclass
class Group:
    """One source's values in one dtype, compared."""

    source: str
    forward: str | None
    quantity: str  # "grad" or "loss"
    values: torch.Tensor  # (points, entries)
    columns: slice  # which columns of the exact arrays
    cmp: Comparison
    verdict: torch.Tensor  # 0 agree, 1 mismatch, 2 nondifferentiable, 3 undefined
    attribution: torch.Tensor  # codes of compare.ATTRIBUTION
    fd_error: torch.Tensor | None = None
    noise: torch.Tensor | None = None  # fd only: which mismatches are noise (else forward)
    exact: ExactArrays | None = None  # the exact side compared with, when not the dtype's own
    layout: tuple[str, int] | None = None  # columns as (kind, entries): see `_label`
    output: int | None = None  # an operator's output entry, for a group of one output
    points: tuple[int, ...] | None = None  # the point each row is (None: row i is point i): fd at some points
    near_notes: list[str | None] | None = None  # per row: the near-kink note (`nearkinks`)


def _label(g: Group, j: int, entries: Sequence[Entry]) -> dict[str, Any]:
    """Which quantity column ``j`` of ``g`` is: the Check fields that name it."""
    if g.quantity == "loss":
        return {"param": "loss"}
    if g.quantity == "value":
        return {"param": "value", "output": j}
    if g.layout is None:
        e = entries[j]
        return {"param": e.variable.name, "index": e.index or None, "output": g.output}
    kind, n = g.layout
    major, col = divmod(j, n)
    e = entries[col]
    out: dict[str, Any] = {"param": e.variable.name, "index": e.index or None, "output": g.output}
    if kind == "hessians":  # an operator's Hessians, output after output
        out["output"], major = divmod(major, n)
        kind = "hessian"
    elif kind == "hvps":  # an operator's Hessian-vector products, output after output
        from .orders import HVP_VECTORS

        out["output"], major = divmod(major, HVP_VECTORS)
        kind = "hvp"
    if kind == "hessian":
        row = entries[major]
        out.update(param=row.variable.name, index=row.index or None, param2=e.variable.name, index2=e.index or None)
    elif kind == "jacobian":
        out["output"] = major
    else:  # "hvp" and "vjp": the seeded random vector's number
        out["vector"] = major
    return out


VERDICT_NAMES = ("agree", "mismatch", "nondifferentiable", "undefined", "imprecise", "inconclusive")
AGREE, MISMATCH, IMPRECISE, UNRESOLVED_VERDICT = 0, 1, 4, 5


def _verdicts(kind: Any, agree: Any, N: Any = _Torch) -> Any:
    v = N.where(agree, 0, 1)
    v = N.where(kind == NONDIFFERENTIABLE, 2, v)
    return N.where(kind == UNDEFINED, 3, v)


def outside_corner(values: Any, ex: ExactArrays, cols: slice, tol: Any, dtype: str, N: Any = _Torch) -> Any:
    """At a corner a source must return a subgradient: a finite value within the closed range of
    the one-sided derivatives (up to the rounding ``tol`` and a few ulps).  NaN, inf, or anything
    outside is a mismatch; any value inside is a valid choice (torch's ``abs`` picks 0, ``relu``
    the left side)."""
    left, right = ex.left[:, cols], ex.right[:, cols]
    lo, hi = N.minimum(left, right), N.maximum(left, right)
    slack = FLOOR_ULPS * ulp_array(N.maximum(abs(lo), abs(hi)), dtype, N) + N.nan_to_num(tol, nan=0.0, posinf=0.0)
    judged = (ex.kind[:, cols] == NONDIFFERENTIABLE) & N.not_(N.isnan(left) | N.isnan(right))
    inside = N.isfinite(values) & (values >= lo - slack) & (values <= hi + slack)
    return judged & N.not_(inside)


def not_computable(ex: ExactArrays, cols: slice, dtype: str, N: Any = _Torch) -> Any:
    """Where the declared program cannot be computed in ``dtype``: an instruction overflows it, or
    its own rounding bound is not small against the exact value (it cancels, or divides 0 by 0)."""
    cancels = N.not_(UNIT_ROUNDOFF[dtype] * ex.scale[:, cols] <= INCONCLUSIVE_FRACTION * abs(ex.hi[:, cols]))
    if ex.largest is None:
        return cancels
    return cancels | N.not_(N.column(ex.largest <= DTYPES[dtype].max))


def out_of_range(values: Any, ex: ExactArrays, cols: slice, dtype: str, N: Any = _Torch) -> Any:
    """Where the exact value is beyond the dtype's largest finite number (float16's 65504) and the
    source returned that dtype's rounding of it (an infinity of its sign, or its largest number):
    no value of the dtype can hold it, so there is nothing to check (every source, not only the
    declared formula's own evaluation)."""
    hi = ex.hi[:, cols]
    big = DTYPES[dtype].max
    return (ex.kind[:, cols] == VALUE) & (abs(hi) > big) & (N.sign(values) == N.sign(hi)) & (abs(values) >= big)


def bands(source: str, values: Any, ex: ExactArrays, cols: slice, cmp: Comparison, verdict: Any,
          dtype: str, N: Any = _Torch, spacing: Any = None) -> tuple[Any, Any]:
    """The imprecise and inconclusive bands over agree/mismatch verdicts, and their note codes.

    * **inconclusive**: it agrees, but its tolerance is not small against the exact value (over
      `compare.INCONCLUSIVE_FRACTION` of it, and above the few-ulp floor): the check could not have
      seen an error as large as the value (an ill-conditioned declaration);
    * **imprecise**: it disagrees, but by no more than `compare.IMPRECISE_FACTOR` times the explained
      bound (rounding the values the gradient is computed from, `errorbound`), or the exact value
      is below the dtype's smallest normal and the error is too (gradual underflow), or the point is
      within rounding of a kink and the value within the hull of the branches (`nearkinks`);
    * the ``autograd`` source (the declaration compiled to torch) disagreeing where the declared
      program overflows the dtype, or where its own rounding bound exceeds the value: the declared
      formula is not computable there (**inconclusive**), not torch being wrong."""
    hi = ex.hi[:, cols]
    u = UNIT_ROUNDOFF[dtype]
    note = N.zeros_like(verdict)
    valued = ex.kind[:, cols] == VALUE
    floor = FLOOR_ULPS * (ulp_array(hi, dtype, N) if spacing is None else spacing)
    unresolved = valued & (verdict == AGREE) & (hi != 0) & (cmp.tol > INCONCLUSIVE_FRACTION * abs(hi)) & (cmp.tol > floor)
    verdict = N.where(unresolved, UNRESOLVED_VERDICT, verdict)
    note = N.where(unresolved, UNRESOLVED, note)
    off = valued & (verdict == MISMATCH)
    finite = N.isfinite(values)
    tiny = DTYPES[dtype].smallest_normal
    underflow = off & finite & (abs(hi) < tiny) & (cmp.err <= tiny)
    # the explained bound matters only where a source disagrees (`Deferred`: computed then)
    explained = N.zeros_like(hi) if ex.explained is None or not N.any(off) else resolved(ex.explained)[:, cols]
    within = off & finite & N.not_(underflow) & (cmp.err <= cmp.tol + IMPRECISE_FACTOR * u * explained)
    verdict = N.where(underflow | within, IMPRECISE, verdict)
    note = N.where(underflow, UNDERFLOW, N.where(within, EXPLAINED, note))
    kink = off & (verdict == MISMATCH) & within_hull(values, ex, cols, cmp.tol, dtype, N)  # `nearkinks`
    verdict, note = N.where(kink, IMPRECISE, verdict), N.where(kink, NEAR_KINK, note)
    if source == "autograd":
        lost = valued & (verdict == MISMATCH) & not_computable(ex, cols, dtype, N)
        verdict = N.where(lost, UNRESOLVED_VERDICT, verdict)
        note = N.where(lost, NOT_COMPUTABLE, note)
    beyond = (verdict == MISMATCH) & out_of_range(values, ex, cols, dtype, N)
    return N.where(beyond, UNRESOLVED_VERDICT, verdict), N.where(beyond, OUT_OF_RANGE, note)


def source_group(source: str, values: torch.Tensor, ex: ExactArrays, dtype: str, fd: Group | None) -> Group:
    """A gradient source's values against the exact gradient, attributed with FD's help."""
    if _floats_judge(values):
        cells, vals = _cells(ex), values.tolist()
        fds = None if fd is None else (fd.values.tolist(), fd.fd_error.tolist())  # type: ignore[union-attr]
        n, m = values.shape
        with_fd = [[None if fds is None else _FdCell(values=fds[0][i][j], fd_error=fds[1][i][j]) for j in range(m)]
                   for i in range(n)]
        g = _assembled(values, [[_source_group(source, vals[i][j], _Element(cells, i, j), dtype, with_fd[i][j],
                                               _Floats) for j in range(m)] for i in range(n)])
        g.near_notes = ex.near_notes  # `nearkinks`
        return g
    if _numpy_judges(values):
        with np.errstate(all="ignore"):
            return _from_numpy(_source_group(source, values.numpy(), _exact_numpy(ex), dtype,
                                             None if fd is None else _group_numpy(fd), _NumPy))
    return _source_group(source, values, ex, dtype, fd, _Torch)


def _source_group(source: str, values: Any, ex: ExactArrays, dtype: str, fd: Group | None, N: Any) -> Group:
    cols = slice(1, None)
    hi, lo, scale = ex.hi[:, cols], ex.lo[:, cols], ex.scale[:, cols]
    spacing = ulp_array(hi, dtype, N)
    cmp = compare(values, hi, lo, scale, dtype, None if ex.sensitive is None else ex.sensitive[:, cols],
                  declared=source == "autograd", N=N, spacing=spacing)
    verdict = _verdicts(ex.kind[:, cols], cmp.agree, N)
    verdict, band_note = bands(source, values, ex, cols, cmp, verdict, dtype, N, spacing)
    if fd is None:
        code = N.where(verdict == 1, 4, 0)
    else:
        fd_tol = fd_tolerance_array(fd.fd_error, cmp.tol, N)
        ok_exact = fd_agrees_array(fd.values, fd_tol, hi, N)
        ok_source = fd_agrees_array(fd.values, fd_tol, values, N)
        code = N.where(verdict == 1, attribute(cmp.agree, ok_exact, ok_source, N), 0)
    code = N.where(band_note > 0, band_note, code)
    corner = outside_corner(values, ex, cols, cmp.tol, dtype, N)
    verdict = N.where(corner, 1, verdict)
    code = N.where(corner, OUTSIDE_CORNER, code)
    if ex.zero is not None:
        verdict, code, cmp = unreached(values, ex.zero[:, cols], verdict, code, cmp, N)
    return Group(source=source, forward=None, quantity="grad", values=values, columns=cols, cmp=cmp,
                 verdict=verdict, attribution=code, near_notes=getattr(ex, "near_notes", None))


def unreached(values: Any, zero: Any, verdict: Any, code: Any, cmp: Comparison, N: Any = _Torch
              ) -> tuple[Any, Any, Comparison]:
    """Entries that do not reach the loss (``zero``) agree when the source returns exactly 0 (a
    missing gradient is read as 0), and anything else, however small, is a mismatch: no rounding
    can make a gradient out of a weight that is never used."""
    zero = N.expand_as(zero, values)
    off = zero & (values != 0)  # NaN too
    verdict = N.where(zero, N.where(off, MISMATCH, AGREE), verdict)
    code = N.where(zero, N.where(off, NOT_ZERO, NO_ATTRIBUTION), code)
    tol = N.where(zero, N.zeros_like(cmp.tol), cmp.tol)
    return verdict, code, Comparison(err=cmp.err, rel=cmp.rel, ulps=cmp.ulps, tol=tol, agree=cmp.agree & N.not_(off))


def loss_group(source: str, values: torch.Tensor, ex: ExactArrays, dtype: str) -> Group:
    """A forward's values against the exact loss: a mismatch means the forward is not the model."""
    if _floats_judge(values):
        cells, vals = _cells(ex), values.reshape(-1).tolist()
        return _assembled(values.reshape(-1, 1), [[_loss_group(source, v, _Element(cells, i, 0), dtype, _Floats)]
                                                  for i, v in enumerate(vals)])
    if _numpy_judges(values):
        with np.errstate(all="ignore"):
            return _from_numpy(_loss_group(source, values.numpy(), _exact_numpy(ex), dtype, _NumPy))
    return _loss_group(source, values, ex, dtype, _Torch)


def _loss_group(source: str, values: Any, ex: ExactArrays, dtype: str, N: Any) -> Group:
    cols = slice(0, 1)
    cmp = compare(N.column(values), ex.hi[:, cols], ex.lo[:, cols], ex.scale[:, cols], dtype, N=N)
    verdict = _verdicts(ex.kind[:, cols], cmp.agree, N)
    code = N.where(verdict == 1, 2, 0)
    if source == "autograd":  # the declared formula itself may not be computable there (`bands`)
        lost = not_computable(ex, cols, dtype, N) & (verdict == MISMATCH)
        verdict = N.where(lost, UNRESOLVED_VERDICT, verdict)
        code = N.where(lost, NOT_COMPUTABLE, code)
    beyond = (verdict == MISMATCH) & out_of_range(N.column(values), ex, cols, dtype, N)
    verdict, code = N.where(beyond, UNRESOLVED_VERDICT, verdict), N.where(beyond, OUT_OF_RANGE, code)
    return Group(source=source, forward=None, quantity="loss", values=N.column(values), columns=cols, cmp=cmp,
                 verdict=verdict, attribution=code)


def _floats_judge(values: torch.Tensor) -> bool:
    """Whether a group of these values is judged number by number (`_Floats`)."""
    return values.numel() <= FLOAT_VALUES and values.dtype == torch.float64 and not values.requires_grad


class _Pick:
    """One entry of an `ExactArrays` field, read as the rules slice it (``a[:, cols]``)."""

    def __init__(self, rows: list[list[Any]], i: int, j: int) -> None:
        self.rows, self.i, self.j = rows, i, j

    def __getitem__(self, key: tuple[slice, slice]) -> Any:
        return self.rows[self.i][(key[1].start or 0) + self.j]


_PER_ENTRY = ("kind", "hi", "lo", "left", "right", "scale", "sensitive", "zero", "near_lo", "near_hi")


def _cells(ex: ExactArrays) -> dict[str, Any]:
    """``ex``'s fields as nested lists, read once (kept on ``ex``)."""
    kept = ex.__dict__.get("_cells")
    if kept is None:
        kept = {name: None if getattr(ex, name) is None else getattr(ex, name).tolist() for name in _PER_ENTRY}
        kept["largest"] = None if ex.largest is None else ex.largest.tolist()
        later = ex.explained
        kept["explained"] = None if later is None else Deferred(lambda: resolved(later).tolist())
        ex.__dict__["_cells"] = kept
    return kept


class _Element:
    """Entry ``(i, j)`` of a group's exact side, with the fields the rules read (`_Pick`)."""

    def __init__(self, cells: dict[str, Any], i: int, j: int) -> None:
        for name in _PER_ENTRY:
            setattr(self, name, None if cells[name] is None else _Pick(cells[name], i, j))
        self.largest = None if cells["largest"] is None else cells["largest"][i]
        lazy = cells["explained"]
        self.explained = None if lazy is None else Deferred(lambda: _Pick(lazy.resolve(), i, j))


@dataclass
class _FdCell:
    values: float
    fd_error: float


def _assembled(values: torch.Tensor, cells: list[list[Group]], fd_error: torch.Tensor | None = None) -> Group:
    """The groups of single entries (`_Floats`) as one group of tensors, as the array paths make it."""
    first = cells[0][0]

    def grid(read: Any, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor([[read(c) for c in row] for row in cells], dtype=dtype)

    f64 = torch.float64
    cmp = Comparison(err=grid(lambda c: c.cmp.err, f64), rel=grid(lambda c: c.cmp.rel, f64),
                     ulps=grid(lambda c: c.cmp.ulps, f64), tol=grid(lambda c: c.cmp.tol, f64),
                     agree=grid(lambda c: c.cmp.agree, torch.bool))
    return Group(source=first.source, forward=first.forward, quantity=first.quantity, values=values,
                 columns=first.columns, cmp=cmp, verdict=grid(lambda c: c.verdict, torch.int64),
                 attribution=grid(lambda c: c.attribution, torch.int64), fd_error=fd_error,
                 noise=None if first.noise is None else grid(lambda c: c.noise, torch.bool))


def _numpy_judges(values: torch.Tensor) -> bool:
    """Whether a group of these values is judged on NumPy arrays (`_NumPy`)."""
    return values.numel() <= NUMPY_VALUES and values.dtype == torch.float64 and not values.requires_grad


def _exact_numpy(ex: ExactArrays) -> ExactArrays:
    """``ex`` with its arrays as NumPy views (no copy)."""
    kept = ex.__dict__.get("_numpy")
    if kept is None:
        changes: dict[str, Any] = {f.name: getattr(ex, f.name).numpy() for f in dataclasses.fields(ex)
                                   if isinstance(getattr(ex, f.name), torch.Tensor)}
        if isinstance(ex.explained, Deferred):
            later = ex.explained
            changes["explained"] = Deferred(lambda: later.resolve().numpy())
        kept = dataclasses.replace(ex, **changes)
        ex.__dict__["_numpy"] = kept
    return kept  # type: ignore[no-any-return]


def _group_numpy(g: Group) -> Group:
    """A (finite-difference) group's values and errors as NumPy views."""
    arrays = {"values": g.values.numpy(), "fd_error": None if g.fd_error is None else g.fd_error.numpy()}
    return dataclasses.replace(g, **arrays)


def _tensor(x: Any) -> Any:
    if not isinstance(x, np.ndarray):
        return x
    return torch.from_numpy(x if x.flags.writeable else x.copy())


def _from_numpy(g: Group) -> Group:
    """A group judged on NumPy arrays (made by the caller, so changed in place), as torch tensors
    (what every reader of a group expects)."""
    c = g.cmp
    g.cmp = Comparison(err=_tensor(c.err), rel=_tensor(c.rel), ulps=_tensor(c.ulps), tol=_tensor(c.tol),
                       agree=_tensor(c.agree))
    g.values, g.verdict, g.attribution = _tensor(g.values), _tensor(g.verdict), _tensor(g.attribution)
    g.fd_error, g.noise = _tensor(g.fd_error), _tensor(g.noise)
    return g


def value_group(source: str, values: torch.Tensor, ex: ExactArrays, dtype: str) -> Group:
    """An operator's outputs (``values``: points × outputs) against the exact outputs, which
    ``ex`` holds as its columns 1, 2, ... (`stack_exact` with ``values=True``)."""
    cols = slice(1, None)
    cmp = compare(values, ex.hi[:, cols], ex.lo[:, cols], ex.scale[:, cols], dtype)
    verdict = _verdicts(ex.kind[:, cols], cmp.agree)
    return Group(source=source, forward=None, quantity="value", values=values, columns=cols, cmp=cmp,
                 verdict=verdict, attribution=torch.where(verdict == 1, 2, 0), exact=ex)


def fd_group(forward: str, values: torch.Tensor, fd_error: torch.Tensor, ex: ExactArrays, dtype: str,
             forward_wrong: torch.Tensor | None) -> Group:
    """Finite differences against the exact gradient, held to their own error estimate."""
    if _floats_judge(values) and fd_error.dtype == torch.float64:
        cells, vals, errs = _cells(ex), values.tolist(), fd_error.tolist()
        wrong = None if forward_wrong is None else forward_wrong.reshape(-1).tolist()
        n, m = values.shape
        g = _assembled(values, [[_fd_group(forward, vals[i][j], errs[i][j], _Element(cells, i, j), dtype,
                                           None if wrong is None else wrong[i], _Floats) for j in range(m)]
                                for i in range(n)], fd_error)
        g.near_notes = ex.near_notes  # `nearkinks`
        return g
    if _numpy_judges(values) and fd_error.dtype == torch.float64:
        with np.errstate(all="ignore"):
            return _from_numpy(_fd_group(forward, values.numpy(), fd_error.numpy(), _exact_numpy(ex), dtype,
                                         None if forward_wrong is None else forward_wrong.numpy(), _NumPy))
    return _fd_group(forward, values, fd_error, ex, dtype, forward_wrong, _Torch)


def _fd_group(forward: str, values: Any, fd_error: Any, ex: ExactArrays, dtype: str, forward_wrong: Any | None,
              N: Any) -> Group:
    cols = slice(1, None)
    hi, lo, scale = ex.hi[:, cols], ex.lo[:, cols], ex.scale[:, cols]
    cmp = compare(values, hi, lo, scale, dtype, N=N)
    fd_tol = fd_tolerance_array(fd_error, cmp.tol, N)
    agree = fd_agrees_array(values, fd_tol, hi, N)
    cmp = Comparison(err=cmp.err, rel=cmp.rel, ulps=cmp.ulps, tol=fd_tol, agree=agree)
    verdict = _verdicts(ex.kind[:, cols], agree, N)
    # no difference could be taken (the forward fails or is not finite on both sides): unavailable
    verdict = N.where(N.isnan(values) & N.isinf(fd_error) & (verdict == 1), 3, verdict)
    noise = N.ones_like(agree) if forward_wrong is None else N.not_(N.expand_as(N.column(forward_wrong), agree))
    return Group(source="fd", forward=forward, quantity="grad", values=values, columns=cols, cmp=cmp,
                 verdict=verdict, attribution=N.zeros_like(verdict), fd_error=fd_error, noise=noise,
                 near_notes=getattr(ex, "near_notes", None))


def _note(g: Group, i: int, j: int, e: ExactValue, value: float, t: _Lists | None = None) -> tuple[str | None, str]:
    t = t if t is not None else _Lists(g, None, whole=False)
    verdict = t.verdict[i][j]
    if verdict == 2:
        left, right = as_float(e.left), as_float(e.right)
        lo, hi = min(left, right), max(left, right)
        between = math.isfinite(value) and lo - 1e-12 * max(1, abs(lo)) <= value <= hi + 1e-12 * max(1, abs(hi))
        return None, (
            f"{e.reason}: left {left:.17g}, right {right:.17g}; the source returned {value:.17g}"
            + (" (between the two: a valid one-sided choice or subgradient)" if between else " (outside both)")
        )
    if verdict == 3:
        return None, e.reason if e.kind != "value" else FD_UNAVAILABLE
    if verdict in (4, 5) and g.source != "fd":
        return BAND_NOTES[t.attribution[i][j]](g, i, j, value)
    if g.source == "fd":
        if verdict == 1:
            if t.noise is not None and t.noise[i][j]:
                if g.near_notes is not None and g.near_notes[i]:  # `nearkinks`
                    return "noise", ("the differences straddle a kink within their step, not a bug ("
                                     + g.near_notes[i].split(", so ")[0] + ")")
                return "noise", "finite-difference truncation or rounding, not a bug"
            return "forward_mismatch", "differences of a forward that does not compute the model"
        return None, e.reason
    if g.quantity in ("loss", "value") and verdict == 1:
        return "forward_mismatch", "the forward value differs from the declared loss: this forward does not compute the model"
    if verdict == 1 and t.attribution[i][j] == OUTSIDE_CORNER:
        left, right = as_float(e.left), as_float(e.right)
        return "wrong", (f"{e.reason}: left {left:.17g}, right {right:.17g}; the source returned {value:.17g}, "
                         "outside both: at a corner a source must return a value between the one-sided "
                         "derivatives (a subgradient)")
    attribution, note = (SECOND_ATTRIBUTION if g.quantity == "second" else ATTRIBUTION)[t.attribution[i][j]]
    if verdict == 1 and not math.isfinite(value):
        note = f"the source returned {value} where the exact value is finite; {note}"
    return attribution, note or e.reason


FD_UNAVAILABLE = ("finite differences unavailable at this point: the forward fails or is not finite on both "
                  "sides of it within the step (the edge of its domain)")


def _explained_note(g: Group, i: int, j: int, value: float) -> tuple[str | None, str]:
    tol, rel = float(g.cmp.tol[i, j]), float(g.cmp.rel[i, j])
    lost = " (all its digits: that way of computing it cannot resolve a value this small)" if rel >= 1 else ""
    return "imprecise", (f"beyond a careful implementation (tolerance {tol:.3g}) but explained by rounding the values "
                         "the gradient is computed from (a backward formula in terms of a rounded output, s·(1 − s), "
                         f"1 − y², or an overflowing intermediate){lost}: not a wrong gradient")


def _band_note(text: str, attribution: str | None = None) -> Any:
    return lambda g, i, j, value: (attribution, text)


BAND_NOTES: dict[int, Any] = {
    NEAR_KINK: lambda g, i, j, value: ("imprecise", note_of(g.near_notes, i)),
    EXPLAINED: _explained_note,
    UNDERFLOW: _band_note("the exact value is below the dtype's smallest normal, and so is the error: lost to "
                          "gradual underflow, not a wrong gradient", "imprecise"),
    UNRESOLVED: _band_note("INCONCLUSIVE: the tolerance (the rounding the declared formula allows) is not small "
                           "against the value, so this check cannot tell a right gradient from a wrong one; declare "
                           "the model in a better-conditioned form"),
    NOT_COMPUTABLE: _band_note("the declared formula is not computable in this dtype at this point (an intermediate "
                               "overflows, or its own rounding exceeds the value): not torch being wrong",
                               "not_computable"),
    OUT_OF_RANGE: _band_note("the exact value is beyond this dtype's largest finite number: no value of the dtype "
                             "can hold it (an infinity is its rounding), so there is nothing to check here",
                             "not_computable"),
}


class _Lists:
    """A group's and its exact side's arrays as nested lists read once (``whole``: indexing a
    tensor element by element costs a torch call per number, most of a small check's time), or
    read element by element (a few checks of a large group)."""

    def __init__(self, g: Group, ex: ExactArrays | None, whole: bool = True) -> None:
        read = (lambda t: t.tolist()) if whole else _Cells
        self.values, self.verdict, self.attribution = read(g.values), read(g.verdict), read(g.attribution)
        self.err, self.rel, self.ulps, self.tol = (read(t) for t in (g.cmp.err, g.cmp.rel, g.cmp.ulps, g.cmp.tol))
        self.fd_error = read(g.fd_error) if g.fd_error is not None else None
        self.noise = read(g.noise) if g.noise is not None else None
        if ex is not None:
            self.kind, self.hi = read(ex.kind), read(ex.hi)
            self.left, self.right = read(ex.left), read(ex.right)
        self.labels: dict[int, dict[str, Any]] = {}  # column -> `_label`
        self.texts: dict[int, str] = {}  # id of an exact value -> `exact_text` (shared by a dtype's groups)


class _Cells:
    """``t[i][j]`` as the Python number `tolist` would give, one element at a time."""

    def __init__(self, t: torch.Tensor) -> None:
        self.t = t

    def __getitem__(self, i: int) -> Any:
        return _Row(self.t, i)


class _Row:
    def __init__(self, t: torch.Tensor, i: int) -> None:
        self.t, self.i = t, i

    def __getitem__(self, j: int) -> Any:
        return self.t[self.i, j].item()


def _check(g: Group, i: int, j: int, dtype: str, entries: Sequence[Entry], ex: ExactArrays,
           lists: _Lists | None = None) -> Check:
    ex = g.exact if g.exact is not None else ex
    t = lists if lists is not None else _Lists(g, ex, whole=False)
    col = j + g.columns.start
    e = ex.value(i, col)
    value = t.values[i][j]
    attribution, note = _note(g, i, j, e, value, t)
    verdict = VERDICT_NAMES[t.verdict[i][j]]
    has_value = verdict in ("agree", "mismatch", "imprecise", "inconclusive") and t.kind[i][col] == VALUE

    def f(rows: list[list[float]]) -> float | None:
        return rows[i][j] if has_value else None

    left = t.left[i][col] if not has_value and t.left[i][col] == t.left[i][col] else None
    right = t.right[i][col] if not has_value and t.right[i][col] == t.right[i][col] else None
    return Check(
        source=g.source, dtype=dtype, **(t.labels.get(j) or t.labels.setdefault(j, _label(g, j, entries))),
        quantity=g.quantity,
        point=i if g.points is None else g.points[i],
        exact=t.hi[i][col] if has_value else None,
        exact_text=(t.texts.get(id(e.value)) or t.texts.setdefault(id(e.value), exact_text(e.value)))
        if has_value else None,
        value=value, abs_error=f(t.err), rel_error=f(t.rel), ulps=f(t.ulps), tolerance=f(t.tol),
        verdict=verdict, attribution=attribution, note=note, left=left, right=right,
        forward=g.forward, fd_error=t.fd_error[i][j] if t.fd_error is not None else None,
    )


def _valued(g: Group) -> torch.Tensor:
    """Agreements and mismatches with an exact value to measure errors against (a corner's mismatch
    has none); imprecise and inconclusive checks are counted apart, so a worst error/tolerance
    above 1 still means a mismatch."""
    return (g.verdict <= 1) & (g.attribution != OUTSIDE_CORNER)


def _of_tolerance(g: Group) -> torch.Tensor:
    r = g.cmp.err / g.cmp.tol
    return torch.where(_valued(g), torch.nan_to_num(r, nan=0.0, posinf=math.inf), torch.full_like(r, -1.0))


def materialize(groups: Sequence[Group], dtype: str, entries: Sequence[Entry], ex: ExactArrays,
                everything: bool) -> tuple[list[Check], list[SourceSummary]]:
    """The checks worth showing, and one summary per group (counting every check)."""
    checks: list[Check] = []
    summaries: list[SourceSummary] = []
    texts: dict[int, str] = {}  # the exact values live as long as this call: their ids stay theirs
    for g in groups:
        n, m = g.verdict.shape
        small = everything and n * m <= SMALL_SUMMARY
        ratio = None if small else _of_tolerance(g)  # a small group's summary is counted in Python
        if everything:
            chosen = [(i, j) for i in range(n) for j in range(m)]
        else:
            assert ratio is not None
            special = torch.nonzero(g.verdict > 0)[:SPECIAL_KEPT].tolist()
            top = torch.topk(ratio.reshape(-1), min(WORST_KEPT, n * m)).indices.tolist()
            chosen = sorted({tuple(x) for x in special} | {divmod(t, m) for t in top})
        lists = _Lists(g, g.exact if g.exact is not None else ex, whole=everything)
        lists.texts = texts
        made = {(i, j): _check(g, i, j, dtype, entries, ex, lists) for i, j in chosen}
        checks.extend(made.values())
        if small:
            counts, worst_index, worst_rel, worst_ulps, worst_ratio = _small_summary(lists, n, m)
        else:
            assert ratio is not None
            valued = _valued(g)
            worst_index = divmod(int(torch.argmax(ratio)), m) if bool(valued.any()) else None
            counts = [int((g.verdict == k).sum()) for k in range(len(VERDICT_NAMES))]
            worst_rel, worst_ulps = _max(g.cmp.rel, valued), _max(g.cmp.ulps, valued)
            worst_ratio = _max(ratio, valued)
        worst = made.get(worst_index) if worst_index else None
        if worst is None and worst_index is not None:
            worst = _check(g, *worst_index, dtype, entries, ex)
        summaries.append(SourceSummary(
            source=g.source, dtype=dtype, forward=g.forward, quantity=g.quantity, checks=n * m,
            vectors=bool(g.layout and g.layout[0] in ("hvp", "hvps", "vjp")),
            agree=counts[AGREE], mismatch=counts[MISMATCH], nondifferentiable=counts[2], undefined=counts[3],
            imprecise=counts[IMPRECISE], inconclusive=counts[UNRESOLVED_VERDICT],
            worst_rel=worst_rel, worst_ulps=worst_ulps, worst_of_tolerance=worst_ratio, worst=worst,
        ))
    return checks, summaries


SMALL_SUMMARY = 4096  # checks per group up to which its summary is counted in Python (no torch calls)
_MOST_NEGATIVE = -1.7976931348623157e308  # what torch.nan_to_num makes of -inf


def _small_summary(t: _Lists, n: int, m: int) -> tuple[list[int], tuple[int, int] | None, float | None,
                                                        float | None, float | None]:
    """The summary's counts and worsts from the lists of a small group, exactly as the tensor
    code computes them (`_valued`, `_of_tolerance`, `_max`, ``argmax``: the first largest)."""
    counts = [0] * len(VERDICT_NAMES)
    best: tuple[float, int, int] | None = None
    rel: float | None = None
    ulps: float | None = None
    for i in range(n):
        for j in range(m):
            v = t.verdict[i][j]
            counts[v] += 1
            if not (v <= 1 and t.attribution[i][j] != OUTSIDE_CORNER):
                continue
            err, tol = t.err[i][j], t.tol[i][j]
            if tol == 0:
                r = math.nan if (err == 0 or math.isnan(err)) else math.inf
            else:
                r = err / tol
            r = 0.0 if math.isnan(r) else (_MOST_NEGATIVE if r == -math.inf else r)
            if best is None or r > best[0]:
                best = (r, i, j)
            a, b = _as_max(t.rel[i][j]), _as_max(t.ulps[i][j])
            rel = a if rel is None or a > rel else rel
            ulps = b if ulps is None or b > ulps else ulps
    if best is None:
        return counts, None, None, None, None
    # the tensor code's argmax runs over every check, the unvalued ones at −1: a valued one wins
    # unless every valued ratio is below −1, which a ratio of non-negative numbers never is
    return counts, (best[1], best[2]), rel, ulps, _as_max(best[0])


def _as_max(x: float) -> float:
    """What `_max`'s ``nan_to_num(nan=inf)`` makes of one number (±inf become the largest finite)."""
    if math.isnan(x):
        return math.inf
    if math.isinf(x):
        return -_MOST_NEGATIVE if x > 0 else _MOST_NEGATIVE
    return x


def _max(t: torch.Tensor, mask: torch.Tensor) -> float | None:
    if not bool(mask.any()):
        return None
    return float(torch.nan_to_num(t[mask], nan=math.inf).max())


def any_failure(groups: Sequence[Group], strict: bool = False) -> bool:
    """Whether a source (not finite differences) disagrees anywhere; with ``strict`` also where it
    is imprecise or inconclusive."""
    codes = (1, 4, 5) if strict else (1,)
    return any(_any_of(g.verdict, codes) for g in groups if g.source != "fd")


def _any_of(verdict: torch.Tensor, codes: tuple[int, ...]) -> bool:
    if verdict.numel() <= NUMPY_VALUES:  # a few numbers: read in Python, not one torch call each
        return any(v in codes for v in verdict.reshape(-1).tolist())
    return bool(torch.isin(verdict, torch.tensor(codes)).any())


def as_tensor(rows: Any) -> torch.Tensor:
    return torch.as_tensor(rows, dtype=torch.float64)
