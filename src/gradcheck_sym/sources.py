"""The gradient sources checked against the exact gradient, all with one signature.

``source(subject, points, dtype) -> SourceOutput``: ``subject`` is the `Subject` (the model with
its compiled torch forward), ``points`` are tuples of ``dtype`` values in ``model.symbols``
order, and the output holds one gradient row per point (one value per entry of
``model.entries``) and, where the source has a forward, the loss per point.

* `autograd`: torch autograd through the model's own generated forward, all points in a batch;
* `impl`: torch autograd through the user's implementation, one call per point;
* `grad_impl`: the user's hand-written gradient;
* `finite_differences`: central differences with one Richardson step, of either forward.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .budget import TimedOut
from .dtypes import UNIT_ROUNDOFF
from .errors import ImplError
from .model import Model, Variable
from .torch_codegen import TORCH_DTYPES, TorchForward

Point = tuple[float, ...]

# Central-difference step for Richardson extrapolation (error O(h^4)): about u**(1/5), a
# power of two so that x ± h is exact for most x.  Scaled by the size of x when |x| > 1.
FD_STEP = {"float64": 2.0**-10, "float32": 2.0**-5, "bfloat16": 2.0**-2, "float16": 2.0**-2}  # last two: noise
FD_BATCH_ROWS = 1 << 16  # perturbed points per forward call, at most (see `fd_batch_rows`)
FD_BATCH_BYTES = 1 << 29  # memory one finite-difference forward call may hold (512 MiB)
# Below this many rows per call the forward runs on one intra-op thread: torch does not split such
# small elementwise operations anyway, and waking its pool for each of a large model's 40,000
# operations made a call 10x slower on a busy machine (0.4 s against 3-5 s for 3,162 rows).
FD_ONE_THREAD_ROWS = 1 << 15
TINY = 4096  # scalars per call of the user's code below which one intra-op thread is faster


@contextlib.contextmanager
def one_thread_if_tiny(model: Model) -> Iterator[None]:
    """The user's code called point by point on tensors of a few numbers: one intra-op thread.
    Waking torch's thread pool costs far more than such an operation (issue 12: `log_softmax` of
    a 3×4 tensor, 12-15 ms with 2 threads on a busy machine, 0.008 ms with 1)."""
    with _threads_for(sum(v.size for v in model.variables)):
        yield


@dataclass(frozen=True, kw_only=True)
class SourceOutput:
    """What one source says at every point."""

    source: str  # "autograd" | "impl" | "grad_impl" | "fd"
    forward: str | None = None  # fd only: which forward was differenced, "model" or "impl"
    grads: list[list[float]]  # [point][entry]
    loss: list[float] | None = None  # forward value per point, where the source has one
    error_estimate: list[list[float]] | None = None  # fd only: its own error estimate
    steps: list[list[float]] | None = None  # fd only: the step h used
    method: str = ""  # fd of the impl: how the user's code was called (`IMPL_VMAP`, or `IMPL_LOOP` and why)
    computed_in: str | None = None  # the dtype the user's code computes in, where it is not the one given


class Subject:
    """A model prepared for the torch sources: its compiled forward and entry layout."""

    def __init__(self, model: Model, forward: TorchForward | None = None) -> None:
        self.model = model
        self.symbols = model.symbols
        self.forward = forward or TorchForward(model.program)
        position = {s: i for i, s in enumerate(self.symbols)}
        self.entry_positions = [position[e.symbol] for e in model.entries]
        self.unbatched: str | None = None  # why the user's code cannot be vmapped (found once per check)


Source = Callable[[Subject, Sequence[Point], str], SourceOutput]


def _columns(points: Sequence[Point], dtype: str) -> list[torch.Tensor]:
    t = torch.tensor(points, dtype=TORCH_DTYPES[dtype]).reshape(len(points), -1)
    return list(t.T)


def _leaf_columns(subject: Subject, points: Sequence[Point], dtype: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The points as one column per variable; the differentiated ones are leaves requiring grad."""
    cols = [c.clone() for c in _columns(points, dtype)]
    leaves = []
    for pos in subject.entry_positions:
        cols[pos] = cols[pos].detach().requires_grad_(True)
        leaves.append(cols[pos])
    return cols, leaves


def autograd(subject: Subject, points: Sequence[Point], dtype: str) -> SourceOutput:
    """Autograd through the generated forward of the declared model, all points at once, with one
    intra-op thread: every slot is one vector over the points, elementwise (`one_thread`; mlp-193
    at 1,000 points in both dtypes, 0.17-0.45 s with 2 threads on the shared machine, 0.06-0.09 s
    with 1)."""
    cols, leaves = _leaf_columns(subject, points, dtype)
    with one_thread(), torch.enable_grad():
        loss = subject.forward(cols)
        grads = torch.autograd.grad(loss.sum(), leaves, allow_unused=True)
    rows = torch.stack([g if g is not None else torch.zeros_like(loss) for g in grads], dim=1)
    return SourceOutput(source="autograd", grads=rows.double().tolist(), loss=loss.detach().double().tolist())


def _kwargs(model: Model, point: Point, dtype: str, requires_grad: bool) -> dict[str, torch.Tensor]:
    out = {}
    i = 0
    for v in model.variables:
        t = torch.tensor(point[i : i + v.size], dtype=TORCH_DTYPES[dtype]).reshape(v.shape)
        i += v.size
        wants = requires_grad and (v.role == "param" or model.input_grads)
        out[v.name] = t.requires_grad_(True) if wants else t
    return out


# torch's words for mistakes people make in implementations -> what it means for them
TORCH_HINTS = (
    ("a leaf Variable that requires grad is being used in an in-place operation",
     "it updates an input tensor in place (`w += ...`, `w.add_(...)`); compute a new tensor instead"),
    ("modified by an inplace operation",
     "a tensor that the backward pass needs was modified in place; compute a new tensor instead"),
    ("does not require grad and does not have a grad_fn",
     "the loss is detached from the inputs (`.detach()`, `.item()`, `torch.no_grad()`)"),
)


def _hint(exc: BaseException) -> str:
    text = str(exc)
    return next((f"; {hint}" for words, hint in TORCH_HINTS if words in text), "")


def _call(model: Model, label: str, f: Callable[..., Any], kwargs: Mapping[str, Any], k: int) -> Any:
    try:
        return f(**kwargs)
    except Exception as exc:  # the user's code: any failure is reported, never re-raised raw
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ImplError(
            f"model `{model.name}`: `{label}` raised {type(exc).__name__}: {first}{_hint(exc)} "
            f"(at point {k}, called with {', '.join(kwargs)})"
        ) from exc


def _check_loss(model: Model, out: Any, dtype: str, k: int) -> torch.Tensor:
    where = f"model `{model.name}`: `impl` (at point {k})"
    if not isinstance(out, torch.Tensor):
        raise ImplError(
            f"{where} returned a {type(out).__name__}, not a tensor; return the loss tensor itself "
            "(not `.item()` or a Python number), so that autograd can differentiate it"
        )
    if out.numel() != 1:
        raise ImplError(f"{where} returned a tensor of shape {tuple(out.shape)}; the loss must be a scalar")
    if out.dtype != TORCH_DTYPES[dtype] and computed_dtype(out) is None:
        raise ImplError(
            f"{where} returned {str(out.dtype).replace('torch.', '')} for {dtype} inputs; compute "
            f"in the inputs' dtype (a silent up- or down-cast hides the {dtype} behaviour being checked)"
        )
    if not out.requires_grad:
        raise ImplError(
            f"{where} returned a loss with no autograd graph (`.detach()`, `.item()`, "
            "`torch.no_grad()` or a new tensor built from numbers); return the tensor computed from the inputs"
        )
    return out.reshape(())


def computed_dtype(t: Any) -> str | None:
    """The name of a checked float dtype that tensor ``t`` holds (None for anything else)."""
    return next((name for name, d in TORCH_DTYPES.items() if isinstance(t, torch.Tensor) and t.dtype == d), None)


def _computed_in(found: set[str], dtype: str) -> str | None:
    """The dtype the user's code computed in, where it is not the ``dtype`` it was given (an
    ``impl`` that casts to float32 inside, as real losses often do): its checks are then judged in
    that dtype, with a note, rather than refused.  Several (a ``grad_impl`` returning float64 for
    one weight and float32 for another): the least precise, whose rounding the values carry."""
    other = found - {dtype}
    if not other:
        return None
    return max(other, key=lambda d: UNIT_ROUNDOFF[d])


def impl(subject: Subject, points: Sequence[Point], dtype: str) -> SourceOutput:
    """Autograd through the user's ``impl``, one call per point.

    Not batched with vmap (its finite differences are): torch runs other kernels on a batch than
    on one point's few numbers, and in float32 they differ by far more than rounding (`F.gelu` at
    x = −3: 1,140 ulps), so a batched call would not check the code as it runs point by point."""
    model = subject.model
    assert model.impl is not None
    with one_thread_if_tiny(model):
        return _impl(subject, points, dtype)


def _impl(subject: Subject, points: Sequence[Point], dtype: str) -> SourceOutput:
    model = subject.model
    assert model.impl is not None
    grads, losses, found = [], [], set()
    for k, p in enumerate(points):
        kwargs = _kwargs(model, p, dtype, requires_grad=True)
        with torch.enable_grad():
            out = _check_loss(model, _call(model, "impl", model.impl, kwargs, k), dtype, k)
            found.add(computed_dtype(out) or dtype)
            wrt = [v for v in _wrt_variables(model)]
            try:
                gs = torch.autograd.grad(out, [kwargs[v.name] for v in wrt], allow_unused=True)
            except RuntimeError as exc:
                raise ImplError(
                    f"model `{model.name}`: autograd through `impl` failed at point {k}: "
                    f"{str(exc).strip().splitlines()[0]}{_hint(exc)}"
                ) from exc
        row: list[float] = []
        for v, g in zip(wrt, gs):
            if g is None and _unreached(model, v):  # no gradient for a weight the loss does not use: 0
                g = torch.zeros(v.shape)
            if g is None:
                raise ImplError(
                    f"model `{model.name}`: the loss returned by `impl` does not depend on `{v.name}` "
                    "(was it detached, turned into a number with `.item()`, or updated in place?); "
                    f"use the `{v.name}` tensor passed in"
                )
            row.extend(g.double().reshape(-1).tolist())
        grads.append(row)
        losses.append(float(out.detach()))
    return SourceOutput(source="impl", grads=grads, loss=losses, computed_in=_computed_in(found, dtype))


def _unreached(model: Model, v: Variable) -> bool:
    """Whether no entry of ``v`` occurs in the declared loss (its exact gradient is 0)."""
    return all(s in getattr(model, "unreached", ()) for s in v.symbols)


# -- the user's code batched with torch.func.vmap (finite differences) ---------------------------

IMPL_VMAP = "torch.func.vmap"  # every finite-difference row in one call
IMPL_LOOP = "one call per row"


class _NotBatchable(Exception):
    """The user's code returned something under vmap that the loop would refuse."""


def _batched(model: Model, rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """``rows`` (points × symbols, in the dtype) as one batched tensor per variable."""
    out, i = {}, 0
    for v in model.variables:
        out[v.name] = rows[:, i : i + v.size].reshape(rows.shape[0], *v.shape)
        i += v.size
    return out


def _scalar(model: Model, dtype: str, kwargs: dict[str, torch.Tensor]) -> torch.Tensor:
    assert model.impl is not None
    out = model.impl(**kwargs)
    if not isinstance(out, torch.Tensor) or out.numel() != 1 or computed_dtype(out) is None:
        raise _NotBatchable("it returned something other than a scalar tensor of a float dtype")
    return out.reshape(())


@contextlib.contextmanager
def _threads_for(scalars: int) -> Iterator[None]:
    if scalars > TINY:
        yield
        return
    with one_thread():
        yield


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread: for tiny tensors, and for the elementwise comparisons of `checks` and
    the finite differences' forwards, which are memory-bound (on the shared 2-core machine,
    `isfinite` and `where` over 1,000 × 224 doubles took 45-67 ms with 2 threads and 8.9 ms with
    1; mlp-193's finite differences at 16 points, 0.67 s and 0.11 s: a second thread waits for a
    core)."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _refuse(subject: Subject, exc: BaseException) -> None:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    subject.unbatched = f"torch.func.vmap refused it: {type(exc).__name__}{': ' + text[:200] if text else ''}"


def _vmap_losses(subject: Subject, dtype: str, columns: torch.Tensor) -> torch.Tensor | None:
    """The impl's loss at every row of ``columns`` (symbols × rows, in the dtype) in one vmapped
    call, or None where that does not work."""
    if subject.unbatched is not None:
        return None
    from torch.func import vmap

    model = subject.model
    try:
        with _threads_for(columns.numel()), torch.no_grad():
            out = vmap(lambda kw: _scalar(model, dtype, kw))(_batched(model, columns.T))
        if out.shape != (columns.shape[1],):
            raise _NotBatchable(f"a batch of {columns.shape[1]} rows gave shape {tuple(out.shape)}")
    except TimedOut:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code under vmap: any failure means "loop"
        _refuse(subject, exc)
        return None
    return out.double()


def _wrt_variables(model: Model) -> list[Variable]:
    return [v for v in model.variables if v.role == "param" or model.input_grads]


def grad_impl(subject: Subject, points: Sequence[Point], dtype: str) -> SourceOutput:
    """The user's hand-written gradient, one call per point."""
    model = subject.model
    assert model.grad_impl is not None
    wrt = _wrt_variables(model)
    grads, found = [], set()
    with one_thread_if_tiny(model):
        for k, p in enumerate(points):
            kwargs = _kwargs(model, p, dtype, requires_grad=False)
            with torch.no_grad():
                out = _call(model, "grad_impl", model.grad_impl, kwargs, k)
            grads.append(_gradient_row(model, wrt, out, k))
            values = out.values() if isinstance(out, Mapping) else out if isinstance(out, (list, tuple)) else [out]
            found.update(d for d in map(computed_dtype, values) if d is not None)
    computed = _computed_in(found, dtype) if found else None
    return SourceOutput(source="grad_impl", grads=grads, computed_in=computed)


def _gradient_row(model: Model, wrt: list[Variable], out: Any, k: int) -> list[float]:
    where = f"model `{model.name}`: `grad_impl` (at point {k})"
    if isinstance(out, Mapping):
        by_name = {getattr(key, "name", key): value for key, value in out.items()}
        missing = [v.name for v in wrt if v.name not in by_name and not _unreached(model, v)]
        if missing:
            raise ImplError(f"{where} returned no gradient for {', '.join(f'`{m}`' for m in missing)}")
        values = [by_name.get(v.name) for v in wrt]
    elif len(wrt) == 1 and not isinstance(out, (list, tuple)):
        values = [out]
    elif isinstance(out, (list, tuple)) and len(out) == len(wrt):
        values = list(out)
    else:
        raise ImplError(
            f"{where} returned {type(out).__name__}; return a dict {{name: gradient}} (or one "
            f"value per parameter in order: {', '.join(v.name for v in wrt)})"
        )
    row: list[float] = []
    for v, value in zip(wrt, values):
        if value is None and _unreached(model, v):  # no gradient for a weight the loss does not use: 0
            value = [0.0] * v.size
        try:
            flat = torch.as_tensor(value, dtype=torch.float64).reshape(-1).tolist()
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ImplError(f"{where}: the gradient for `{v.name}` is not numeric ({exc})") from exc
        if len(flat) != v.size:
            raise ImplError(f"{where}: the gradient for `{v.name}` has {len(flat)} numbers; `{v.name}` has {v.size}")
        row.extend(flat)
    return row


# -- finite differences ------------------------------------------------------------------------


def _impl_losses(subject: Subject, dtype: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The impl's loss at each row, batched with vmap where it works; a row where the code fails
    or returns no number (a step outside its domain) is NaN, never an error of the model."""
    model = subject.model
    assert model.impl is not None

    def run(columns: torch.Tensor) -> torch.Tensor:
        batched = _vmap_losses(subject, dtype, columns)
        if batched is not None:
            return batched
        out = []
        with one_thread_if_tiny(model):
            for p in columns.T.tolist():
                kwargs = _kwargs(model, tuple(p), dtype, requires_grad=False)
                try:
                    with torch.no_grad():
                        r = model.impl(**kwargs)  # type: ignore[misc]
                except TimedOut:
                    raise
                except Exception:  # noqa: BLE001 - it ran at the point itself; a step outside its domain
                    r = None
                out.append(float(r) if isinstance(r, torch.Tensor) and r.numel() == 1 else math.nan)
        return torch.tensor(out, dtype=torch.float64)

    return run


def _model_losses(subject: Subject, dtype: str) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(columns: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        threads = torch.get_num_threads()
        if len(columns[0]) < FD_ONE_THREAD_ROWS:
            torch.set_num_threads(1)
        try:
            return subject.forward.lean(list(columns)).double()
        finally:
            torch.set_num_threads(threads)

    return run


def fd_batch_rows(subject: Subject, *, broadcast: bool = True) -> int:
    """Perturbed points per finite-difference forward call: as many as fit `FD_BATCH_BYTES`, at
    most `FD_BATCH_ROWS`.  Per row, a call holds the forward's intermediates alive at once
    (`TorchForward.peak_live`) and the symbols' values: all of them when whole points are batched,
    or, with ``broadcast`` (a model with more entries than fit one call: one point per call, its
    unperturbed symbols broadcast), only the perturbed ones, one per four rows.  A 20,000-parameter
    network gets about 15,000 rows per call (its 80,000 rows per point were one 14 GB block).

    >>> import sympy as sp
    >>> x, w = sp.symbols("x w", real=True)
    >>> fd_batch_rows(Subject(Model(name="m", loss=(x*w)**2, params=[w], inputs=[x], domain={"*": (-1, 1)})))
    65536
    """
    live, symbols = subject.forward.peak_live, len(subject.symbols)
    rows = max(1, min(FD_BATCH_ROWS, FD_BATCH_BYTES // (8 * (symbols + live))))
    if not broadcast or rows >= 4 * len(subject.entry_positions):
        return rows  # whole points per call
    # 8 R (R/4 + 1 + live) <= bytes, solved for R
    wide = int(2 * (math.sqrt((1 + live) ** 2 + FD_BATCH_BYTES / 8) - (1 + live)))
    return max(rows, min(FD_BATCH_ROWS, wide))


def _one_point(point: torch.Tensor, symbols: torch.Tensor, moved: torch.Tensor) -> list[torch.Tensor]:
    """The columns of a forward call at one point (values ``point``, one per symbol) whose row
    ``j`` moves symbol ``symbols[j]`` to ``moved[j]``: the perturbed symbols get a column each,
    every other symbol is the point's value broadcast (no memory per row)."""
    rows = len(symbols)
    which, owner = torch.unique_consecutive(symbols, return_inverse=True)
    block = point[which].unsqueeze(1).repeat(1, rows)  # (perturbed symbols, rows)
    block[owner, torch.arange(rows)] = moved
    cols = list(point.unsqueeze(1).expand(-1, rows).unbind(0))
    for q, k in enumerate(which.tolist()):
        cols[k] = block[q]
    return cols


def finite_differences(subject: Subject, points: Sequence[Point], dtype: str, *, forward: str = "model",
                       computed_in: str | None = None) -> SourceOutput:
    """Central differences of a forward (the model's, or ``forward="impl"``), with steps ``h`` and
    ``h/2`` combined by Richardson extrapolation; the error estimate is the change the
    extrapolation made plus the rounding error of the differences.  Batched: every point, every
    entry, four perturbed copies each, `fd_batch_rows` rows per forward.

    Where a step leaves the forward's domain (it fails, or returns NaN or inf: a log at 0, a
    probability at 0 or 1), the difference is one-sided on the side that works; where neither
    works it is unavailable (NaN, with an infinite error estimate).

    ``computed_in``: the dtype the forward really computes in, where it is not ``dtype`` (an
    ``impl`` casting to float32 inside): the step and the rounding estimate are that dtype's
    (float64's step under float32's rounding differences noise, not the gradient)."""
    f = _model_losses(subject, dtype) if forward == "model" else _impl_losses(subject, dtype)
    tdtype = TORCH_DTYPES[dtype]
    u = UNIT_ROUNDOFF[computed_in or dtype]
    base = torch.tensor(points, dtype=torch.float64).reshape(len(points), -1)  # (N, S)
    pos = torch.tensor(subject.entry_positions, dtype=torch.long)  # (P,)
    n, p = base.shape[0], pos.shape[0]
    x = base[:, pos]  # (N, P)
    size = torch.where(x.abs() > 1, torch.exp2(torch.ceil(torch.log2(x.abs()))), torch.ones_like(x))
    h = FD_STEP[computed_in or dtype] * size
    steps = torch.stack([h, -h, h / 2, -h / 2], dim=-1)  # (N, P, 4)
    moved = (x.unsqueeze(-1) + steps).to(tdtype).to(torch.float64)  # rounded to the dtype
    values = torch.empty(n * p * 4, dtype=torch.float64)  # row r: point r // 4p, entry (r % 4p) // 4
    per_point = 4 * p
    columns = pos.repeat_interleave(4)
    flat, by_symbol = moved.reshape(-1).to(tdtype), base.T.to(tdtype)  # (N*4p,), (S, N)
    chunk = fd_batch_rows(subject, broadcast=forward == "model")
    if per_point > chunk and forward == "model":  # a large model: calls within one point
        for i in range(n):
            for start in range(0, per_point, chunk):
                stop = min(per_point, start + chunk)
                rows = slice(i * per_point + start, i * per_point + stop)
                values[rows] = f(_one_point(by_symbol[:, i], columns[start:stop], flat[rows]))
    else:
        for start in range(0, n * per_point, chunk):
            stop = min(n * per_point, start + chunk)
            r = torch.arange(start, stop)
            # one contiguous row per symbol (elementwise torch ops are much slower on strided columns)
            cols = by_symbol[:, r // per_point]  # (S, rows)
            cols[columns[r % per_point], torch.arange(stop - start)] = flat[start:stop]
            values[start:stop] = f(cols)
    values = values.reshape(n, p, 4)
    fp, fm, fp2, fm2 = values.unbind(-1)
    d1 = (fp - fm) / (moved[..., 0] - moved[..., 1])
    d2 = (fp2 - fm2) / (moved[..., 2] - moved[..., 3])
    richardson = (4 * d2 - d1) / 3
    rounding = 3 * u * values.abs().amax(-1) / (h / 2)
    estimate = (richardson - d2).abs() + rounding
    edge = ~torch.isfinite(values).all(-1)
    if bool(edge.any()):
        richardson, estimate = _one_sided(f, base, x, moved, values, h, edge, u, tdtype, richardson, estimate)
    return SourceOutput(
        source="fd", forward=forward, grads=richardson.tolist(), error_estimate=estimate.tolist(), steps=h.tolist(),
        method=(IMPL_VMAP if subject.unbatched is None else f"{IMPL_LOOP} ({subject.unbatched})")
        if forward == "impl" else "",
    )


def _one_sided(f: Callable[[torch.Tensor], torch.Tensor], base: torch.Tensor, x: torch.Tensor, moved: torch.Tensor,
               values: torch.Tensor, h: torch.Tensor, edge: torch.Tensor, u: float, tdtype: torch.dtype,
               richardson: torch.Tensor, estimate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """At the ``edge`` entries (a step left the forward's domain): forward or backward differences
    with steps h and h/2 and one Richardson step (error O(h²)), on a side where the forward is
    finite at both steps and at the point; NaN with an infinite estimate where neither side is."""
    at = torch.nonzero(edge.any(-1)).reshape(-1)  # the points that need the value at the point itself
    f0 = torch.full((base.shape[0],), math.nan, dtype=torch.float64)
    f0[at] = f(base[at].T.to(tdtype).contiguous())
    f0 = f0.unsqueeze(-1).expand_as(x)
    finite = torch.isfinite(values)
    richardson, estimate = richardson.clone(), estimate.clone()
    done = ~edge
    for a, b in ((0, 2), (1, 3)):  # forward (+h, +h/2), then backward (-h, -h/2)
        ok = edge & ~done & finite[..., a] & finite[..., b] & torch.isfinite(f0)
        d1 = (values[..., a] - f0) / (moved[..., a] - x)
        d2 = (values[..., b] - f0) / (moved[..., b] - x)
        one = 2 * d2 - d1
        size = torch.maximum(torch.maximum(values[..., a].abs(), values[..., b].abs()), f0.abs())
        err = (one - d2).abs() + 3 * u * size / (h / 2)
        richardson = torch.where(ok, one, richardson)
        estimate = torch.where(ok, err, estimate)
        done = done | ok
    richardson = torch.where(done, richardson, torch.full_like(richardson, math.nan))
    estimate = torch.where(done, estimate, torch.full_like(estimate, math.inf))
    return richardson, estimate


# -- forward mode and second order --------------------------------------------------------------
#
# The same signature again, ``source(subject, points, dtype) -> SourceOutput``; ``grads`` holds
# per point the JVPs along each entry's unit direction (forward mode), or the second derivatives
# row after row (``Hessian`` rows, or one row per Hessian-vector product with ``vectors``).


class Unsupported(Exception):
    """A source cannot produce this quantity at all (not a wrong value): the reason, for people."""


ONCE_DIFFERENTIABLE = (
    "its backward is marked @once_differentiable (torch cannot differentiate it again); write the "
    "backward with differentiable torch operations to check second derivatives"
)
NO_FORWARD_AD = "it has no forward-mode derivative"
NO_DOUBLE_BACKWARD = "torch cannot differentiate its backward again"
GRAD_IMPL_HIGHER = "a hand-written gradient has no derivatives of its own to check"


def _once_differentiable(t: torch.Tensor) -> bool:
    """Whether ``t``'s graph runs through a ``once_differentiable`` backward (torch puts an
    ``Error`` node there, which only fails when that path is differentiated)."""
    seen: set[Any] = set()
    stack = [t.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ in ("Error", "DelayedError"):
            return True
        stack.extend(f for f, _ in node.next_functions)
    return False


def _second_rows(first: list[torch.Tensor], leaves: list[torch.Tensor],
                 vectors: Sequence[Sequence[float]] | None) -> list[list[torch.Tensor]]:
    """Second derivatives from first derivatives computed with ``create_graph=True``:
    ``∂first_i/∂leaf`` for every ``i`` (Hessian rows), or ``∂(first·v)/∂leaf`` for every ``v``
    (Hessian-vector products); one tensor per leaf, of the leaf's shape."""
    if vectors is None:
        wanted = first
    else:
        wanted = [sum((float(c) * g for c, g in zip(v, first) if c), torch.zeros_like(first[0])) for v in vectors]
    rows = []
    for g in wanted:
        if not g.requires_grad:  # the backward returned a constant: its derivative is zero
            rows.append([torch.zeros_like(leaf, dtype=torch.float64) for leaf in leaves])
            continue
        if _once_differentiable(g):
            raise Unsupported(ONCE_DIFFERENTIABLE)
        parts = torch.autograd.grad(g.sum(), leaves, retain_graph=True, allow_unused=True)
        rows.append([torch.zeros_like(leaf, dtype=torch.float64) if d is None else d.double()
                     for d, leaf in zip(parts, leaves)])
    return rows


def second_autograd(subject: Subject, points: Sequence[Point], dtype: str, *,
                    vectors: Sequence[Sequence[float]] | None = None) -> SourceOutput:
    """Torch's double backward through the generated forward (``create_graph=True`` twice, with
    a cotangent that itself requires grad, as ``gradgradcheck`` does), all points at once."""
    cols, leaves = _leaf_columns(subject, points, dtype)
    with torch.enable_grad():
        loss = subject.forward(cols)
        v = torch.ones_like(loss).requires_grad_(True)
        grads = torch.autograd.grad(loss, leaves, grad_outputs=v, create_graph=True, allow_unused=True)
        first = [torch.zeros_like(loss) if g is None else g for g in grads]
        rows = _second_rows(first, leaves, vectors)
    table = torch.stack([torch.stack(r, dim=1) for r in rows], dim=1)  # (points, rows, entries)
    return SourceOutput(source="autograd", grads=table.reshape(len(points), -1).tolist())


def second_impl(subject: Subject, points: Sequence[Point], dtype: str, *,
                vectors: Sequence[Sequence[float]] | None = None) -> SourceOutput:
    """Torch's double backward through the user's ``impl``, one call per point; a
    ``once_differentiable`` backward raises `Unsupported`."""
    model = subject.model
    assert model.impl is not None
    wrt = _wrt_variables(model)
    out_rows = []
    for k, p in enumerate(points):
        kwargs = _kwargs(model, p, dtype, requires_grad=True)
        leaves = [kwargs[v.name] for v in wrt]
        with torch.enable_grad():
            out = _check_loss(model, _call(model, "impl", model.impl, kwargs, k), dtype, k)
            cot = torch.ones_like(out).requires_grad_(True)
            try:
                gs = torch.autograd.grad(out, leaves, grad_outputs=cot, create_graph=True, allow_unused=True)
                first = torch.cat([(torch.zeros_like(t) if g is None else g).reshape(-1) for g, t in zip(gs, leaves)])
                flat = [first[i] for i in range(first.numel())]
                rows = _second_rows(flat, leaves, vectors)
            except NotImplementedError as exc:  # torch: "the derivative for '...' is not implemented"
                raise Unsupported(f"{NO_DOUBLE_BACKWARD} ({str(exc).strip().splitlines()[0]})") from exc
            except RuntimeError as exc:
                if "not implemented" in str(exc) or "twice" in str(exc):
                    raise Unsupported(f"{NO_DOUBLE_BACKWARD} ({str(exc).strip().splitlines()[0]})") from exc
                raise ImplError(
                    f"model `{model.name}`: double backward through `impl` failed at point {k}: "
                    f"{str(exc).strip().splitlines()[0]}{_hint(exc)}"
                ) from exc
        out_rows.append([x for r in rows for part in r for x in part.reshape(-1).tolist()])
    return SourceOutput(source="impl", grads=out_rows)


def jvp_autograd(subject: Subject, points: Sequence[Point], dtype: str) -> SourceOutput:
    """Torch forward-mode AD through the generated forward: one JVP per entry's unit direction,
    every point and direction in one batched forward (replica ``j`` of the points carries the
    tangent ``e_j``)."""
    from torch.autograd import forward_ad as fwAD

    cols = _columns(points, dtype)
    n, p = len(points), len(subject.entry_positions)
    wide = [c.repeat(p) for c in cols]  # replica j = rows j*n .. (j+1)*n - 1
    with torch.no_grad(), fwAD.dual_level():
        for j, pos in enumerate(subject.entry_positions):
            tangent = torch.zeros(n * p, dtype=wide[pos].dtype)
            tangent[j * n : (j + 1) * n] = 1
            wide[pos] = fwAD.make_dual(wide[pos], tangent)
        out = fwAD.unpack_dual(subject.forward(wide)).tangent
    table = torch.zeros(n * p, dtype=torch.float64) if out is None else out.double()
    return SourceOutput(source="autograd", grads=table.reshape(p, n).T.tolist())


def jvp_impl(subject: Subject, points: Sequence[Point], dtype: str) -> SourceOutput:
    """Torch forward-mode AD through the user's ``impl`` (``torch.autograd.forward_ad``: a custom
    Function's ``jvp`` is what runs), one call per point and unit direction; a function without
    forward-mode support raises `Unsupported`."""
    from torch.autograd import forward_ad as fwAD

    model = subject.model
    assert model.impl is not None
    wrt = _wrt_variables(model)
    rows = []
    for k, p in enumerate(points):
        row: list[float] = []
        for v in wrt:
            for e in range(v.size):
                kwargs = _kwargs(model, p, dtype, requires_grad=False)
                with torch.no_grad(), fwAD.dual_level():
                    direction = torch.zeros(v.size, dtype=kwargs[v.name].dtype)
                    direction[e] = 1
                    kwargs[v.name] = fwAD.make_dual(kwargs[v.name], direction.reshape(v.shape))
                    try:
                        result = model.impl(**kwargs)
                    except NotImplementedError as exc:
                        raise Unsupported(f"{NO_FORWARD_AD} ({str(exc).strip().splitlines()[0]})") from exc
                    except RuntimeError as exc:
                        text = str(exc)
                        if "forward AD" in text or "forward-mode" in text or "jvp" in text:
                            raise Unsupported(f"{NO_FORWARD_AD} ({text.strip().splitlines()[0]})") from exc
                        raise ImplError(f"model `{model.name}`: `impl` under forward-mode AD raised "
                                        f"RuntimeError: {text.strip().splitlines()[0]} (at point {k})") from exc
                    except Exception as exc:  # the user's code: reported, never re-raised raw
                        raise ImplError(f"model `{model.name}`: `impl` under forward-mode AD raised "
                                        f"{type(exc).__name__}: {exc} (at point {k})") from exc
                    if not isinstance(result, torch.Tensor) or result.numel() != 1:
                        _check_loss(model, result, dtype, k)
                    tangent = fwAD.unpack_dual(result).tangent
                row.append(0.0 if tangent is None else float(tangent.double().reshape(())))
        rows.append(row)
    return SourceOutput(source="impl", grads=rows)


def gradient_differences(subject: Subject, points: Sequence[Point], dtype: str, *, source: str,
                         vectors: Sequence[Sequence[float]] | None = None) -> SourceOutput:
    """Central differences, with one Richardson step, of a source's *own* gradient (``autograd``
    or ``impl``): along each entry's unit direction (``grads`` row-major as ``[i][j] =
    ∂g_i/∂x_j``, a Hessian), or along each of ``vectors`` (one Hessian-vector product each).
    Used to attribute a second-order mismatch: they agree with the exact value when the
    source's gradient is right and only its double backward is wrong."""
    gradient = autograd if source == "autograd" else impl
    tdtype = TORCH_DTYPES[dtype]
    u = UNIT_ROUNDOFF[dtype]
    base = torch.tensor(points, dtype=torch.float64).reshape(len(points), -1)  # (N, S)
    pos = torch.tensor(subject.entry_positions, dtype=torch.long)
    n, p = base.shape[0], pos.shape[0]
    if vectors is None:
        directions = torch.eye(p, dtype=torch.float64)
    else:
        directions = torch.tensor([list(v) for v in vectors], dtype=torch.float64).reshape(-1, p)
    d = directions.shape[0]
    x = base[:, pos]  # (N, P)
    size = torch.where(x.abs() > 1, torch.exp2(torch.ceil(torch.log2(x.abs()))), torch.ones_like(x))
    h = FD_STEP[dtype] * (size.unsqueeze(1) * (directions != 0)).amax(-1)  # (N, D)
    moved = []
    for factor in (1.0, -1.0, 0.5, -0.5):
        shifted = base.unsqueeze(1).repeat(1, d, 1)  # (N, D, S)
        shifted[:, :, pos] += factor * h.unsqueeze(-1) * directions.unsqueeze(0)
        moved.append(shifted.to(tdtype).to(torch.float64))
    rows = torch.stack(moved, dim=2).reshape(-1, base.shape[1])  # (N * D * 4, S)
    g = torch.tensor(gradient(subject, [tuple(r) for r in rows.tolist()], dtype).grads, dtype=torch.float64)
    g = g.reshape(n, d, 4, p)
    d1 = (g[:, :, 0] - g[:, :, 1]) / (2 * h).unsqueeze(-1)
    d2 = (g[:, :, 2] - g[:, :, 3]) / h.unsqueeze(-1)
    richardson = (4 * d2 - d1) / 3
    estimate = (richardson - d2).abs() + 3 * u * g.abs().amax(2) / (h / 2).unsqueeze(-1)
    if vectors is None:  # direction j gives column j of the Hessian: rows i, columns j
        richardson, estimate = richardson.transpose(1, 2), estimate.transpose(1, 2)
    return SourceOutput(source="fd", forward=source, grads=richardson.reshape(n, -1).tolist(),
                        error_estimate=estimate.reshape(n, -1).tolist())
