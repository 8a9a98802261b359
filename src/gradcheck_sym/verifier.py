"""`verify`: one model through the whole pipeline.

model → gradient program (`symbolic`) → points (`sampling`) → exact references (`reference`)
and error scales (`errorbound`) → sources (`sources`) → checks (`compare`) → `ModelResult`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any

import sympy as sp
from flint import arb, ctx, fmpq

from . import sources as src
from .compare import (
    UNIT_ROUNDOFF,
    abs_error,
    as_float,
    attribute,
    error_scale,
    exact_text,
    fd_agrees,
    fd_tolerance,
    relative,
    tolerance,
    ulp,
)
from .budget import TimedOut, time_budget
from .errorbound import error_scales
from .errors import GradcheckError
from .graph import count_nodes
from .model import Model
from .reference import ExactValue, PointReference, reference_at
from .results import Check, Layer, ModelResult, StepStudy, VariableInfo
from .sampling import DTYPES, points_for, round_to, rounded
from .step_study import step_study
from .structure import layers
from .symbolic import GradientProgram, closed_form, gradient_program

Progress = Callable[[str], None]
LIMIT_MAX_NODES = 200  # removable singularities are resolved with sympy.limit up to this size


class Prepared:
    """The per-model work that does not depend on points: compiled once, reused."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.entries = model.entries
        self.gradient: GradientProgram = gradient_program(
            model.loss, model.symbols, tuple(e.symbol for e in self.entries), model=model.name
        )
        self.subject = src.Subject(model)
        self.small = count_nodes(model.loss) <= LIMIT_MAX_NODES
        self.layers: tuple[Layer, ...] = layers(model, self.subject.forward.program) or ()


def prepare(model: Model) -> Prepared:
    """Compile ``model`` (cached on the model object)."""
    cached = getattr(model, "_gradcheck_prepared", None)
    if cached is None:
        cached = Prepared(model)
        model._gradcheck_prepared = cached  # type: ignore[attr-defined]
    return cached


def _limit(prepared: Prepared, point: dict[sp.Symbol, Fraction]) -> Callable[[int | None], Any] | None:
    """Value at a removable singularity: SymPy's limit along a line through the point, from
    both sides; used only when both sides agree and are finite."""
    if not prepared.small:
        return None
    model = prepared.model
    t = sp.Symbol("t", real=True)
    line = {s: sp.Rational(p.numerator, p.denominator) + t / (k + 2) for k, (s, p) in enumerate(point.items())}

    def limit(i: int | None) -> Any:
        expr = model.loss if i is None else sp.diff(model.loss, prepared.entries[i].symbol)
        try:
            f = expr.subs(line)
            lo, hi = sp.limit(f, t, 0, "-"), sp.limit(f, t, 0, "+")
        except Exception:  # noqa: BLE001 - sympy.limit fails in many ways; then there is no limit
            return None
        if lo != hi or not (isinstance(lo, sp.Expr) and lo.is_comparable and lo.is_finite):
            return None  # no limit, a one-sided one, an infinite one or a range (AccumBounds)
        if isinstance(lo, sp.Rational):
            return fmpq(int(lo.p), int(lo.q))
        old = ctx.prec
        ctx.prec = 300
        try:
            return arb(str(sp.N(lo, 80)))
        except ValueError:
            return None
        finally:
            ctx.prec = old

    return limit


def _point_dict(model: Model, values: Sequence[float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    i = 0
    for v in model.variables:
        chunk = list(values[i : i + v.size])
        i += v.size
        out[v.name] = chunk[0] if not v.shape else [chunk[r * v.shape[1] : (r + 1) * v.shape[1]] for r in range(v.shape[0])]
    return out


def verify(
    model: Model,
    *,
    samples: int = 5,
    seed: int = 0,
    dtypes: Sequence[str] = DTYPES,
    points: Sequence[Mapping[Any, Any]] | None = None,
    tolerance: float = 1.0,
    timeout: float | None = None,
    target: str = "",
    progress: Progress | None = None,
) -> ModelResult:
    """Check every gradient source of ``model`` against its exact gradient, at its explicit
    points (or ``points``, which replace them) and ``samples`` seeded random points.
    ``tolerance`` scales every tolerance (above 1 looser, below 1 stricter); after ``timeout``
    seconds the model is given up and reported as an error (see `budget`).

    >>> x, y, w = sp.symbols("x y w", real=True)
    >>> m = Model(name="linear", loss=(x*w - y)**2, params=[w], inputs=[x, y],
    ...           domain={x: (-4, 4), y: (-4, 4), w: (-2, 2)})
    >>> verify(m, samples=3).status
    'pass'
    """
    stage = ["starting"]

    def say(msg: str) -> None:
        stage[0] = msg.split(": ", 1)[-1]
        if progress is not None:
            progress(msg)

    try:
        if not (isinstance(tolerance, (int, float)) and tolerance > 0 and math.isfinite(tolerance)):
            raise GradcheckError(f"`tolerance` must be a positive factor, got {tolerance!r}")
        explicit = model.parse_points(points) if points is not None else model.points
        with time_budget(timeout, f"model `{model.name}` timed out after {timeout:g} s" if timeout else ""):
            return _verify(model, explicit, samples, seed, tuple(dtypes), float(tolerance), target, say)
    except TimedOut as exc:
        return _error_result(model, target, f"{exc} (while: {stage[0]}); give it more time with "
                             "--timeout SECONDS, or fewer points")
    except GradcheckError as exc:
        return _error_result(model, target, str(exc))
    except Exception as exc:  # noqa: BLE001 - one model's crash must not stop the others
        return _error_result(
            model,
            target,
            f"internal error while checking model `{model.name}`: {type(exc).__name__}: {exc} "
            "(this is a bug in gradcheck_sym; please report it with the model)",
        )


def _loss_text(model: Model) -> str:
    """The loss as SymPy prints it, unless it is too large to read (printing a deep network's
    loss expands every shared subexpression and takes longer than checking it)."""
    n = count_nodes(model.loss)
    if n > LIMIT_MAX_NODES:
        return f"(a loss of {n} distinct subexpressions; too large to print)"
    return _clip(str(model.loss))


def _error_result(model: Model, target: str, message: str) -> ModelResult:
    return ModelResult(
        name=model.name, status="error", target=target, description=model.description, loss=_loss_text(model),
        variables=_variable_info(model), n_params=model.n_params, notes=model.notes, error=message,
    )


def _clip(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _variable_info(model: Model) -> tuple[VariableInfo, ...]:
    return tuple(VariableInfo(name=v.name, shape=v.shape, role=v.role) for v in model.variables)


def _sources(model: Model) -> list[tuple[str, src.Source]]:
    out: list[tuple[str, src.Source]] = [("autograd", src.autograd)]
    if model.impl is not None:
        out.append(("impl", src.impl))
    if model.grad_impl is not None:
        out.append(("grad_impl", src.grad_impl))
    return out


def _domain(model: Model) -> dict[str, list[float]]:
    """The domain per variable (per entry where a matrix's entries differ)."""
    out: dict[str, list[float]] = {}
    for v in model.variables:
        bounds = [model.domain.get(s) for s in v.symbols]
        if all(b is None for b in bounds):
            continue
        if len(set(bounds)) == 1 and bounds[0] is not None:
            out[v.name] = [float(bounds[0][0]), float(bounds[0][1])]
        else:
            for k, b in enumerate(bounds):
                if b is not None:
                    out[v.entry_name(k)] = [float(b[0]), float(b[1])]
    return out


def _verify(
    model: Model,
    explicit: Sequence[dict[sp.Symbol, Fraction]],
    samples: int,
    seed: int,
    dtypes: tuple[str, ...],
    factor: float,
    target: str,
    say: Progress,
) -> ModelResult:
    for d in dtypes:
        if d not in DTYPES:
            raise GradcheckError(f"dtype `{d}` is not supported; use {', '.join(DTYPES)}")
    say(f"{model.name}: compiling the gradient program")
    prepared = prepare(model)
    subject = src.Subject(model, forward=prepared.subject.forward)  # this model's impl, shared forward
    exact_points = points_for(model, samples, seed, explicit=explicit)
    if not exact_points:
        raise GradcheckError(f"model `{model.name}`: no points to check (give points= or a domain and --samples > 0)")
    symbols = model.symbols
    refs: dict[tuple[float, ...], tuple[PointReference, list[float]]] = {}
    checks: list[Check] = []
    points_out: dict[str, list[dict[str, Any]]] = {}
    arithmetic: set[str] = set()
    source_names: list[str] = []
    for dtype in dtypes:
        pts = rounded(exact_points, symbols, dtype)
        points_out[dtype] = [_point_dict(model, p) for p in pts]
        say(f"{model.name}: exact gradient at {len(pts)} {dtype} points")
        for p, exact_p in zip(pts, exact_points):
            if p not in refs:
                es = error_scales(prepared.gradient, p)
                scales = [factor * error_scale(w, q) for w, q in zip(es.worst, es.probable)]
                fractions = [Fraction(x) for x in p]
                limit = _limit(prepared, dict(zip(symbols, fractions))) if prepared.small else None
                ref = reference_at(
                    prepared.gradient, [fmpq(q.numerator, q.denominator) for q in fractions],
                    scales=es.worst, limit=limit,
                )
                refs[p] = (ref, scales)
            arithmetic.add(refs[p][0].arithmetic)
        say(f"{model.name}: {dtype} sources")
        outputs = {name: f(subject, pts, dtype) for name, f in _sources(model)}
        fds = {"model": src.finite_differences(subject, pts, dtype)}
        if model.impl is not None:
            fds["impl"] = src.finite_differences(subject, pts, dtype, forward="impl")
        source_names = list(outputs) + ["fd"]
        checks.extend(_checks(prepared, dtype, pts, [refs[p] for p in pts], outputs, fds))
    status = "fail" if any(c.verdict == "mismatch" and c.source != "fd" for c in checks) else "pass"
    cf = closed_form(model.loss, tuple(e.symbol for e in prepared.entries))
    say(f"{model.name}: finite-difference step study")
    study = _step_study(prepared, dtypes, exact_points, refs)
    return ModelResult(
        name=model.name,
        status=status,
        target=target,
        description=model.description,
        loss=_loss_text(model),
        loss_latex=model.latex or (_clip(sp.latex(model.loss)) if prepared.small else ""),
        variables=_variable_info(model),
        domain=_domain(model),
        n_params=model.n_params,
        closed_form={str(s): str(e) for s, e in cf.items()} if cf else {},
        closed_form_latex={str(s): sp.latex(e) for s, e in cf.items()} if cf else {},
        notes=model.notes,
        points=points_out,
        arithmetic=tuple(sorted(arithmetic)),
        sources=tuple(source_names),
        checks=tuple(checks),
        layers=prepared.layers,
        step_study=study,
    )


def _step_study(
    prepared: Prepared,
    dtypes: tuple[str, ...],
    exact_points: Sequence[dict[sp.Symbol, Fraction]],
    refs: dict[tuple[float, ...], tuple[PointReference, list[float]]],
) -> StepStudy | None:
    """The step study for the entry with the largest exact derivative at the first point where
    every dtype has one."""
    for i, p in enumerate(exact_points):
        rounded_p = {d: tuple(round_to(p[s], d) for s in prepared.model.symbols) for d in dtypes}
        grads = {d: refs[rounded_p[d]][0].grads for d in dtypes}
        if not all(g.is_value for d in dtypes for g in grads[d]):
            continue
        first = grads[dtypes[0]]
        j = max(range(len(first)), key=lambda j: abs(as_float(first[j].value)))
        exact = {d: as_float(grads[d][j].value) for d in dtypes}
        return step_study(prepared.subject, j, i, rounded_p, exact)
    return None


def _fd_for(source: str, fds: dict[str, src.SourceOutput]) -> src.SourceOutput:
    return fds["impl"] if source in ("impl", "grad_impl") and "impl" in fds else fds["model"]


def _checks(
    prepared: Prepared,
    dtype: str,
    pts: list[tuple[float, ...]],
    refs: list[tuple[PointReference, list[float]]],
    outputs: dict[str, src.SourceOutput],
    fds: dict[str, src.SourceOutput],
) -> list[Check]:
    u = UNIT_ROUNDOFF[dtype]
    out: list[Check] = []
    for i, (ref, scales) in enumerate(refs):
        forward_ok: dict[str, bool] = {}
        # forward values
        for name, o in outputs.items():
            if o.loss is None:
                continue
            c = _value_check(name, dtype, "loss", None, "loss", i, ref.loss, o.loss[i], scales[0])
            forward_ok[name] = c.verdict != "mismatch"
            if c.verdict == "mismatch":
                c = _with(c, attribution="forward_mismatch",
                          note="the forward value differs from the declared loss: this forward does not compute the model")
            out.append(c)
        # gradient entries
        for j, entry in enumerate(prepared.entries):
            g = ref.grads[j]
            scale = scales[1 + j]
            for name, o in outputs.items():
                c = _value_check(name, dtype, entry.variable.name, entry.index, "grad", i, g, o.grads[i][j], scale)
                if c.verdict in ("agree", "mismatch"):
                    fd = _fd_for(name, fds)
                    fd_err = _fd_error(fd, i, j, u, scales[0])
                    fdv = fd.grads[i][j]
                    attribution, note = attribute(
                        c.verdict == "agree",
                        fd_agrees(fdv, fd_err, c.exact, c.tolerance),  # type: ignore[arg-type]
                        fd_agrees(fdv, fd_err, c.value, c.tolerance),  # type: ignore[arg-type]
                    )
                    c = _with(c, attribution=attribution, note=note)
                out.append(c)
            for fname, fd in fds.items():
                c = _value_check("fd", dtype, entry.variable.name, entry.index, "grad", i, g, fd.grads[i][j], scale)
                fd_err = _fd_error(fd, i, j, u, scales[0])
                c = _with(c, forward=fname, fd_error=fd_err)
                if c.verdict in ("agree", "mismatch"):
                    ok = fd_agrees(c.value, fd_err, c.exact, c.tolerance)  # type: ignore[arg-type]
                    c = _with(c, tolerance=fd_tolerance(fd_err, c.tolerance))  # type: ignore[arg-type]
                    if ok:
                        c = _with(c, verdict="agree")
                    elif fname == "impl" and forward_ok.get("impl") is False:
                        c = _with(c, verdict="mismatch", attribution="forward_mismatch",
                                  note="differences of a forward that does not compute the model")
                    else:
                        c = _with(c, verdict="mismatch", attribution="noise",
                                  note="finite-difference truncation or rounding, not a bug")
                out.append(c)
    return out


def _fd_error(fd: src.SourceOutput, i: int, j: int, u: float, loss_scale: float) -> float:
    """FD's own estimate, plus the rounding the forward's running error bound predicts."""
    assert fd.error_estimate is not None and fd.steps is not None
    h = fd.steps[i][j]
    rounding = 3 * u * loss_scale / (h / 2) if math.isfinite(loss_scale) else math.inf
    return fd.error_estimate[i][j] + rounding


def _with(c: Check, **changes: Any) -> Check:
    import dataclasses

    return dataclasses.replace(c, **changes)


def _value_check(
    source: str, dtype: str, param: str, index: tuple[int, ...] | None, quantity: str, point: int,
    ref: ExactValue, value: float, scale: float,
) -> Check:
    base = dict(source=source, dtype=dtype, param=param, index=index if index else None,
                quantity=quantity, point=point, value=value)
    if ref.kind == "undefined":
        left = as_float(ref.left) if ref.left is not None else None
        right = as_float(ref.right) if ref.right is not None else None
        return Check(**base, exact=None, verdict="undefined", note=ref.reason, left=left, right=right)  # type: ignore[arg-type]
    if ref.kind == "nondifferentiable":
        left, right = as_float(ref.left), as_float(ref.right)
        lo, hi = min(left, right), max(left, right)
        between = math.isfinite(value) and lo - 1e-12 * max(1, abs(lo)) <= value <= hi + 1e-12 * max(1, abs(hi))
        note = f"{ref.reason}: left {left:.17g}, right {right:.17g}; the source returned {value:.17g}" + (
            " (between the two: a valid one-sided choice or subgradient)" if between else " (outside both)"
        )
        return Check(**base, exact=None, verdict="nondifferentiable", note=note, left=left, right=right)  # type: ignore[arg-type]
    e = ref.value
    ef = as_float(e)
    tol = tolerance(ef, scale, dtype)
    err = abs_error(value, e)
    verdict = "agree" if math.isfinite(value) and err <= tol else "mismatch"
    note = ref.reason
    if not math.isfinite(value):
        note = f"the source returned {value} where the exact value is finite"
    return Check(  # type: ignore[arg-type]
        **base, exact=ef, exact_text=exact_text(e), abs_error=err, rel_error=relative(err, ef),
        ulps=err / ulp(ef, dtype), tolerance=tol, verdict=verdict, note=note,
    )


def verify_all(
    models: Sequence[Model], *, samples: int = 5, seed: int = 0, dtypes: Sequence[str] = DTYPES,
    target: str = "", progress: Progress | None = None,
) -> list[ModelResult]:
    """`verify` each model; one model's error never stops the others."""
    return [verify(m, samples=samples, seed=seed, dtypes=dtypes, target=target, progress=progress) for m in models]
