"""`verify`: one model through the whole pipeline.

model → gradient program (`symbolic`) → points (`sampling`) → exact references (`reference`)
and error scales (`errorbound`) → sources (`sources`) → checks (`compare`) → `ModelResult`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import sympy as sp
from flint import arb, ctx, fmpq

from .budget import TimedOut, check_affordable, time_budget
from .compare import UNIT_ROUNDOFF, as_float, error_scale
from .errors import GradcheckError
from .graph import count_nodes
from .model import Model
from .reference import PointReference, collection_paused, program_values_many, reference_at
from .results import Layer, ModelResult, StepStudy, VariableInfo
from .dtypes import DTYPES as FLOAT_TYPES
from .dtypes import FD_NOTE
from .options import SUPPORTED_DTYPES
from .sampling import DTYPES, points_for, round_to, rounded
from .structure import layers
from .symbolic import GradientProgram, closed_form, gradient_program

if TYPE_CHECKING:
    from . import sources as src

Progress = Callable[[str], None]
LIMIT_MAX_NODES = 200  # removable singularities are resolved with sympy.limit up to this size


class Prepared:
    """The per-model work that does not depend on points: compiled once per model object, reused
    (never from the disk cache: a program is code, and compiling it takes milliseconds)."""

    def __init__(self, model: Model) -> None:
        from . import sources as src

        self.model = model
        self.entries = model.entries
        self.gradient: GradientProgram = gradient_program(model.loss, model.symbols,
                                                          tuple(e.symbol for e in self.entries), model=model.name)
        self.layers = layers(model, model.program) or ()
        self.small = count_nodes(model.loss) <= LIMIT_MAX_NODES
        self.subject = src.Subject(model)
        self._texts: dict[str, Any] | None = None
        self._sensitivity: Any = None

    def texts(self) -> dict[str, Any]:
        """The report's formulas (loss LaTeX, closed-form gradient as text and LaTeX): they
        depend only on the model, so they are printed once per model, not once per check."""
        if self._texts is None:
            model = self.model
            cf = closed_form(model.loss, tuple(e.symbol for e in self.entries))
            self._texts = {
                "loss": _loss_text(model),
                "loss_latex": model.latex or (_clip(sp.latex(model.loss)) if self.small else ""),
                "closed_form": {str(s): str(e) for s, e in cf.items()} if cf else {},
                "closed_form_latex": {str(s): sp.latex(e) for s, e in cf.items()} if cf else {},
            }
        return self._texts

    def forward_program(self) -> Any:
        """The loss as a program with its corners rewritten (as error analysis reads them)."""
        from .graph import compile_expr

        if getattr(self, "_forward", None) is None:
            self._forward = compile_expr(self.model.loss, self.model.symbols, rewrite_kinks=True, model=self.model.name)
        return self._forward

    def sensitivity_program(self) -> Any:
        """The exact Hessian over every variable (for `errorbound.input_sensitivity`), for models
        of at most `compare.SENSITIVITY_MAX_VARIABLES` variables; for larger ones the
        Hessian-vector program it is computed from column by column (`errorbound.sensitivity_by_columns`)."""
        from .compare import SENSITIVITY_MAX_VARIABLES
        from .higher import hessian_program, hvp_program

        symbols = self.model.symbols
        small = len(symbols) <= SENSITIVITY_MAX_VARIABLES
        if self._sensitivity is None and (small or not self.model.is_operator):
            build = hessian_program if small else hvp_program
            self._sensitivity = build(self.model.loss, symbols, symbols, model=self.model.name)
        return self._sensitivity


def prepare(model: Model) -> Prepared:
    """Compile ``model`` (cached on the model object, and on the model it was copied from by
    `Model.with_implementations`, so that checking it with one impl after another compiles once)."""
    base = getattr(model, "_gradcheck_base", model)
    cached = getattr(model, "_gradcheck_prepared", None) or getattr(base, "_gradcheck_prepared", None)
    if cached is None:
        cached = Prepared(model)
        model._gradcheck_prepared = cached  # type: ignore[attr-defined]
        base._gradcheck_prepared = cached
    return cached


def _limit(prepared: Prepared, point: dict[sp.Symbol, Fraction]) -> Callable[[int | None], Any] | None:
    """Value at a removable singularity: SymPy's limit along a line through the point, from
    both sides; used only when both sides agree and are finite."""
    if not prepared.small:
        return None
    model = prepared.model

    def limit(i: int | None) -> Any:
        t = sp.Symbol("t", real=True)  # the line is made here: SymPy arithmetic, and rarely needed
        line = {s: sp.Rational(p.numerator, p.denominator) + t / (k + 2) for k, (s, p) in enumerate(point.items())}
        expr = model.loss if i is None else sp.diff(model.loss, prepared.entries[i].symbol)
        try:
            f = expr.subs(line)
            lo, hi = sp.limit(f, t, 0, "-"), sp.limit(f, t, 0, "+")
            if lo != hi or not (isinstance(lo, sp.Expr) and lo.is_comparable and lo.is_finite):
                return None  # no limit, a one-sided one, an infinite one or a range (AccumBounds)
        except Exception:  # noqa: BLE001 - sympy.limit (and mpmath under is_comparable: erfinv(2)) fails in many ways
            return None
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


def _point_dicts(model: Model, points: Sequence[Sequence[float]]) -> list[dict[str, Any]]:
    """`_point_dict` of each point, one array reshape per variable rather than a list per row."""
    import numpy as np

    if not points:
        return []
    table = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    columns, i = [], 0
    for v in model.variables:
        block = table[:, i : i + v.size]
        i += v.size
        columns.append(block[:, 0].tolist() if not v.shape else block.reshape(len(points), *v.shape).tolist())
    names = [v.name for v in model.variables]
    return [dict(zip(names, values)) for values in zip(*columns)]


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
    all_checks: bool = False,
    progress: Progress | None = None,
    order: int = 1,
    modes: Sequence[str] = ("rev",),
    impl: Callable[..., Any] | None = None,
    grad_impl: Callable[..., Any] | None = None,
    strict: bool = False,
) -> ModelResult:
    """Check every gradient source of ``model`` against its exact gradient, at its explicit
    points (or ``points``, which replace them) and ``samples`` seeded random points; ``impl``
    and ``grad_impl``, when given, replace the model's own.
    ``tolerance`` scales every tolerance (above 1 looser, below 1 stricter); after ``timeout``
    seconds the model is given up and reported as an error (see `budget`).  Large runs keep only
    the checks that matter (`checks.DETAIL_LIMIT`) unless ``all_checks``.  ``dtypes``: any of
    float64, float32, bfloat16, float16 (the last two without finite differences, `dtypes.FD_NOTE`).

    ``modes``: ``"rev"`` checks the sources' backward (reverse mode: gradients, an operator's
    VJPs), ``"fwd"`` their forward-mode AD (JVPs); ``order=2`` adds second derivatives (double
    backward against the exact Hessian, or exact Hessian-vector products for large models; see
    `orders`).  A source that cannot compute a quantity is listed in ``result.unsupported``.
    ``strict``: an ``imprecise`` or ``inconclusive`` check fails the model too (by default only a
    ``mismatch`` does; see README "The verdict").

    >>> x, y, w = sp.symbols("x y w", real=True)
    >>> m = Model(name="linear", loss=(x*w - y)**2, params=[w], inputs=[x, y],
    ...           domain={x: (-4, 4), y: (-4, 4), w: (-2, 2)})
    >>> verify(m, samples=3).status
    'pass'
    """
    if impl is not None or grad_impl is not None:
        model = model.with_implementations(impl=impl, grad_impl=grad_impl)
    stage = ["starting"]

    def say(msg: str) -> None:
        stage[0] = msg.split(": ", 1)[-1]
        if progress is not None:
            progress(msg)

    try:
        from .options import check_settings  # torch-free: a cached result needs no torch

        if not (isinstance(tolerance, (int, float)) and tolerance > 0 and math.isfinite(tolerance)):
            raise GradcheckError(f"`tolerance` must be a positive factor, got {tolerance!r}")
        order, modes = check_settings(order, modes)
        dtypes = model.checked_dtypes(dtypes)  # the model's own `dtypes=` narrows the run's
        check_affordable(model)  # sizes that cannot be afforded are refused before computing
        explicit = model.parse_points(points) if points is not None else model.points
        cached, store = _cached_result(model, explicit, samples, seed, tuple(dtypes), float(tolerance), target,
                                       all_checks, order, modes, strict)
        if cached is not None:
            say(f"{model.name}: unchanged since the last run (cached result)")
            return cached
        with time_budget(timeout, f"model `{model.name}` timed out after {timeout:g} s" if timeout else ""):
            if model.is_operator:
                from .operators import verify_operator

                result = verify_operator(model, explicit, samples, seed, tuple(dtypes), float(tolerance), target,
                                         all_checks, say, order, modes, strict=strict)
            else:
                result = _verify(model, explicit, samples, seed, tuple(dtypes), float(tolerance), target,
                                 all_checks, say, order, modes, strict=strict)
        store(result)
        return result
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


def _cached_result(
    model: Model, explicit: Sequence[dict[sp.Symbol, Fraction]], samples: int, seed: int, dtypes: tuple[str, ...],
    factor: float, target: str, all_checks: bool, order: int = 1, modes: tuple[str, ...] = ("rev",),
    strict: bool = False,
) -> tuple[ModelResult | None, Callable[[ModelResult], None]]:
    """A stored result for an unchanged model without user code, and how to store a new one."""
    import dataclasses

    from . import cache
    from .results import model_from_dict, model_to_dict

    if model.impl is not None or model.grad_impl is not None or model.is_operator or not cache.enabled():
        return None, lambda result: None
    options = {"samples": samples, "seed": seed, "dtypes": list(dtypes), "tolerance": factor, "all": all_checks,
               "points": [{str(s): str(v) for s, v in p.items()} for p in explicit]}
    if (order, modes) != (1, ("rev",)):
        options.update(order=order, modes=list(modes))
    if strict:
        options["strict"] = True
    digest = cache.result_key(model, options)
    data = cache.load_json("results", digest)
    if data is not None:
        try:
            return dataclasses.replace(model_from_dict(data), target=target), lambda result: None
        except Exception:  # noqa: BLE001 - an entry that does not read is recomputed
            cache.forget("results", digest, ".json")

    def store(result: ModelResult) -> None:
        if result.status != "error":
            cache.store_json("results", digest, model_to_dict(result))

    return None, store


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
    from . import sources as src

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
    all_checks: bool,
    say: Progress,
    order: int = 1,
    modes: tuple[str, ...] = ("rev",),
    *,
    strict: bool = False,
) -> ModelResult:
    import dataclasses

    import torch

    from . import checks as ch
    from . import orders
    from . import sources as src

    for d in dtypes:
        if d not in SUPPORTED_DTYPES:
            raise GradcheckError(f"dtype `{d}` is not supported; use {', '.join(SUPPORTED_DTYPES)}")
    say(f"{model.name}: compiling the gradient program")
    prepared = prepare(model)
    subject = src.Subject(model, forward=prepared.subject.forward)  # this model's impl, shared forward
    with collection_paused():  # the points, their roundings: hundreds of thousands of small objects
        exact_points = points_for(model, samples, seed, explicit=explicit)
        per_dtype = {d: rounded(exact_points, model.symbols, d) for d in dtypes}
    if not exact_points:
        raise GradcheckError(f"model `{model.name}`: no points to check (give points= or a domain and --samples > 0)")
    symbols = model.symbols
    unique = list(dict.fromkeys(p for pts in per_dtype.values() for p in pts))
    say(f"{model.name}: exact gradient at {len(unique)} points")
    notes: list[str] = []
    # the error analysis: elementwise over the points (0.2 s with 1 thread, 1.9 s with 2)
    with src.one_thread(), collection_paused():
        refs, scale, band = references(prepared, unique, factor)
    if "sensitive" not in band and (model.impl is not None or model.grad_impl is not None):
        notes.append(f"The tolerance of `impl`/`grad_impl` here is the declared program's rounding bound: the input "
                     f"sensitivity of a model of {len(symbols)} variables at {len(unique)} points costs more than "
                     "this run affords (`compare.SENSITIVITY_MAX_WORK`), so an equivalent declaration may judge "
                     "differently; check fewer points for the declaration-independent tolerance.")
    row = {p: u for u, p in enumerate(unique)}
    second = None
    if order >= 2:
        say(f"{model.name}: exact second derivatives at {len(unique)} points")
        second = orders.second_exact(model, model.loss, unique, factor, seed)
    kept, summaries, failed, complete, source_names = [], [], False, True, []
    fd_counts: dict[str, int] = {}  # dtype -> points finite differences were computed at, where not all
    methods: list[str] = []  # how the user's impl was called
    unsupported: list[Any] = []
    # indexing small tensors (a second thread cost 10-100 ms of waiting on the shared machine)
    with src.one_thread(), collection_paused():
        shared = ch.exact_arrays([refs[p] for p in unique], scale, **band)  # each reference converted once
    for dtype in dtypes:
        pts = per_dtype[dtype]
        with src.one_thread():
            ex = rows_of(shared, [row[p] for p in pts])  # a random point is shared by both dtypes
            own = _dtype_scale(prepared, pts, dtype, factor, ex.scale)
        if own is not ex.scale:
            ex = dataclasses.replace(ex, scale=own)
        ex = near_kinks_of(prepared, pts, [refs[p] for p in pts], dtype, factor, ex)
        say(f"{model.name}: {dtype} sources")
        outputs = {name: f(subject, pts, dtype) for name, f in _sources(model)}
        notes += computed_notes(model, outputs, dtype)
        fds = {}
        at, plain = None, {}
        if FLOAT_TYPES[dtype].finite_differences:  # none in bfloat16/float16: a note says so (`dtypes.FD_NOTE`)
            with src.one_thread():  # elementwise comparisons and forwards (see `sources.one_thread`)
                at, plain = fd_points(outputs, ex, dtype, everywhere="fwd" in modes)
                fd_pts = pts if at is None else [pts[i] for i in at]
                fds["model"] = src.finite_differences(subject, fd_pts, dtype)
                if model.impl is not None:
                    fds["impl"] = src.finite_differences(subject, fd_pts, dtype, forward="impl",
                                                         computed_in=_judged_in(outputs, "impl", dtype))
            if at is not None:
                fd_counts[dtype] = len(at)
        methods += [o.method for o in (*outputs.values(), *fds.values()) if o.method]
        with src.one_thread():
            groups = _groups(outputs, fds, ex, dtype, UNIT_ROUNDOFF[dtype], at, plain)
        names = list(outputs)
        if "rev" not in modes:
            groups = [g for g in groups if g.source == "fd" or g.quantity != "grad"]
        if "fwd" in modes:
            say(f"{model.name}: {dtype} forward mode")
            more, refused = orders.fwd_groups(subject, names, pts, dtype, ex, lambda name: _fd_for(groups, name),
                                              judged=lambda name: _judged_in(outputs, name, dtype))
            groups += more
            unsupported += refused
        if second is not None:
            say(f"{model.name}: {dtype} double backward")
            more, refused = orders.second_groups(subject, names, pts, dtype, second, [row[p] for p in pts],
                                                 judged=lambda name: _judged_in(outputs, name, dtype))
            groups += more
            unsupported += refused
        size = sum(g.verdict.numel() for g in groups)
        everything = all_checks or size <= ch.DETAIL_LIMIT
        with src.one_thread(), collection_paused():  # a check object per entry and point
            made, sums = ch.materialize(groups, dtype, prepared.entries, ex, everything=everything)
            failed = failed or ch.any_failure(groups, strict)
        kept += made
        complete = complete and everything
        summaries += sums
        source_names = list(outputs) + ["fd"]
    texts = prepared.texts()
    say(f"{model.name}: finite-difference step study")
    with_fd = tuple(d for d in dtypes if FLOAT_TYPES[d].finite_differences)
    study = _step_study(prepared, subject, with_fd, exact_points, refs) if with_fd else None
    fd_notes = tuple(FD_NOTE.format(dtype=d, bits=FLOAT_TYPES[d].mantissa_bits + 1) for d in dtypes if d not in with_fd)
    with collection_paused():
        dicts = _point_dicts(model, unique)  # a point shared by both dtypes is written out once (read-only)
    points_out = {d: [dicts[row[p]] for p in pts] for d, pts in per_dtype.items()}
    return ModelResult(
        name=model.name,
        status="fail" if failed else "pass",
        target=target,
        description=model.description,
        loss=texts["loss"],
        loss_latex=texts["loss_latex"] if not model.latex else model.latex,
        variables=_variable_info(model),
        domain=_domain(model),
        n_params=model.n_params,
        closed_form=dict(texts["closed_form"]),  # a result's own dicts, not the model's
        closed_form_latex=dict(texts["closed_form_latex"]),
        notes=model.notes + fd_notes + tuple(notes),
        points=points_out,
        arithmetic=tuple(sorted({r.arithmetic for r in refs.values()})),
        sources=tuple(source_names),
        checks=tuple(kept),
        complete=complete,
        summaries=tuple(summaries),
        layers=prepared.layers,
        step_study=study,
        order=order,
        modes=modes,
        second_method=second.method if second is not None else "",
        unsupported=orders.unique_unsupported(unsupported),
        fd_points=fd_counts,
        impl_calls=_impl_calls(methods),
    )


def _impl_calls(methods: Sequence[str]) -> str:
    """How the user's impl was called, for the report: batched, or one call per point and why."""
    from .sources import IMPL_VMAP

    unique = list(dict.fromkeys(methods))
    looped = [m for m in unique if m != IMPL_VMAP]
    return looped[0] if looped else (unique[0] if unique else "")


FD_SAMPLE = 16  # finite differences at the first this many points of a dtype, and wherever a source disagrees


def fd_points(outputs: Mapping[str, Any], ex: Any, dtype: str, *, everywhere: bool = False
              ) -> tuple[tuple[int, ...] | None, dict[str, Any]]:
    """The points of one dtype where finite differences add information (issue 12): the first
    `FD_SAMPLE` (so that their own summary is in the report) and every point where a source's
    loss or gradient does not agree with the exact value (to attribute it); None: every point.
    Also each source's gradient compared without finite differences (for `_groups` to keep where
    nothing disagrees; attribution needs them only where a source disagrees, so verdicts do not
    depend on this)."""
    import torch

    from . import checks as ch

    n = ex.hi.shape[0]
    if everywhere or n <= FD_SAMPLE:
        return None, {}
    off = torch.zeros(n, dtype=torch.bool)
    plain = {}
    for name, o in outputs.items():
        if o.loss is not None:
            off |= (ch.loss_group(name, ch.as_tensor(o.loss), ex, _judged_in(outputs, name, dtype)).verdict != 0
                    ).reshape(-1)
        plain[name] = g = ch.source_group(name, ch.as_tensor(o.grads).reshape(n, -1), ex,
                                          _judged_in(outputs, name, dtype), None)
        off |= (g.verdict != 0).any(dim=1)
    off[:FD_SAMPLE] = True
    rows = tuple(off.nonzero().reshape(-1).tolist())
    return (None, {}) if len(rows) == n else (rows, plain)


def rows_of(ex: Any, rows: Sequence[int]) -> Any:
    """``ex`` (`checks.ExactArrays`) at some of its rows: every per-point field indexed."""
    import dataclasses

    import torch

    from . import checks as ch

    n = ex.hi.shape[0]
    index = torch.tensor(rows, dtype=torch.long)
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(ex):
        value = getattr(ex, f.name)
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == n:
            changes[f.name] = value[index]
        elif isinstance(value, ch.Deferred):  # the explained bound, computed when read
            changes[f.name] = value[index]
        elif isinstance(value, list) and len(value) == n:
            changes[f.name] = [value[i] for i in rows]
    return dataclasses.replace(ex, **changes)


# How far (in units of u, relative) the output ``y`` that a backward formula reads (``1 − y²``,
# ``s·(1 − s)``) may be from the true value: not only its own rounding (1) but the error of the
# library function that made it (torch's vectorised CPU kernels are SLEEF's, 1 ulp = up to 2u;
# other CPUs and GPUs take other code paths), so that a correct torch on another machine is not
# called wrong.  Found with the one-ulp perturbation harness: `torch.tanh` in float32 at x = 4
# was a "mismatch" of 1,519 ulps against `1 − 2/(e²ˣ + 1)` with y allowed 1u, within 4u.
OUTPUT_ROUNDING = 4.0


def references(prepared: Prepared, unique: Sequence[tuple[float, ...]], factor: float
               ) -> tuple[dict[tuple[float, ...], PointReference], Any, dict[str, Any]]:
    """The exact loss and gradient at each of the ``unique`` points, their tolerance scales (one
    row per point, in units of u), and the bands' sizes (`checks.exact_arrays`'s ``explained``,
    ``sensitive``, ``largest``)."""
    import torch

    from .checks import Deferred
    from .errorbound import (activation_sensitivity, error_scales_batch, input_sensitivity, output_sensitivity,
                             sensitivity_affordable)
    from .scalars import SCALAR_POINTS
    from .worker import Beside

    symbols = prepared.model.symbols
    # a few points: the explained bound waits until a source disagrees (`checks.Deferred`; a second
    # float pass then); many: computed with the first pass, as one pass is costly there
    few = len(unique) <= SCALAR_POINTS
    es = error_scales_batch(prepared.gradient, unique, largest=few, explained=not few)
    scale = factor * error_scale(es.worst, es.probable)
    band: dict[str, Any] = {"largest": es.largest}
    layered = len(symbols) > 1 and not prepared.model.is_operator  # its layers' derivatives may be, too
    forward, wrt = (prepared.forward_program() if layered else None), [e.symbol for e in prepared.entries]
    hessian = prepared.sensitivity_program()
    if hessian is not None and hessian.extra and not sensitivity_affordable(hessian, len(unique)):
        hessian = None  # the declared program's bound only (`_verify` says so in a note)

    def explained(activation: Beside | None) -> Any:
        wide = error_scales_batch(prepared.gradient, unique, explained=True).explained if few else es.explained
        out = factor * wide
        if hessian is not None and len(symbols) == 1:  # an elementwise function: its derivative may be
            out = out + factor * OUTPUT_ROUNDING * output_sensitivity(hessian, unique)  # computed from its output
        if layered:
            sizes = activation.result() if activation is not None else activation_sensitivity(forward, wrt, unique)
            out = out + factor * OUTPUT_ROUNDING * sizes
        return out

    # many points: the activation sizes in a forked child while the exact gradient is computed here
    # (`worker.Beside`)
    big = not few and layered and len(unique) * len(prepared.gradient.prog) >= OVERLAP_WORK
    with Beside(lambda: activation_sensitivity(forward, wrt, unique, raises=True), fork=big and core_to_spare(),
                here=lambda: activation_sensitivity(forward, wrt, unique)) as activation:
        if hessian is not None:
            band["sensitive"] = factor * input_sensitivity(hessian, wrt, unique)
        unreached = getattr(prepared.model, "unreached", frozenset())
        if unreached:  # weights that do not occur in the loss: exactly 0 (`checks.unreached`)
            zero = torch.tensor([False] + [e.symbol in unreached for e in prepared.entries])
            band["zero"] = zero.expand(len(unique), -1)
        refs = _exact_references(prepared, unique, es.worst.tolist())
        band["explained"] = Deferred(lambda: explained(None)) if few else explained(activation)
    return refs, scale, band


def near_kinks_of(prepared: Prepared, pts: Sequence[tuple[float, ...]], refs: Sequence[PointReference], dtype: str,
                  factor: float, ex: Any) -> Any:
    """``ex`` with the hull of the branches a float computation may take where a condition is within
    rounding of its kink in ``dtype`` (`nearkinks`; README "The verdict")."""
    from .nearkinks import attach, near_kinks

    gp = prepared.gradient
    return attach(ex, near_kinks(gp.prog, pts, refs, dtype, factor, rational=gp.maybe_rational))


# Points × gradient-program slots from which the activation sizes are computed in a forked child,
# beside the exact gradient, when a core is free (mlp-193 at 1,000 points: 1.2 million slots; the
# fork and the sizes' pickle cost 70-100 ms, the sizes themselves 0.6 s of CPU).  On the shared
# 2-core machine, busy with other work, the child only competed: 4.96 s against 4.35 s in-process.
OVERLAP_WORK = 200_000


def core_to_spare() -> bool:
    """Whether the machine has a core that nothing else is using: at least two cores, and a load
    average over the last minute of at most the number of cores less a half (this process's own
    work counts in it: with "less one and a half" a 2-core machine running nothing but this check
    never forked, its own load being about 1)."""
    import os

    cores = os.cpu_count() or 1
    try:
        return cores >= 2 and os.getloadavg()[0] <= cores - 0.5
    except OSError:  # no load average (some containers, Windows): do not assume a free core
        return False


def _exact_references(prepared: Prepared, unique: Sequence[tuple[float, ...]], worst_rows: list[list[float]]
                      ) -> dict[tuple[float, ...], PointReference]:
    refs: dict[tuple[float, ...], PointReference] = {}
    if not prepared.small:  # no limits at removable singularities: every point in one batch
        values = program_values_many(prepared.gradient.prog, unique, scales=worst_rows,  # floats: exact
                                     rational=prepared.gradient.maybe_rational)
        for p, r in zip(unique, values):
            refs[p] = PointReference(r.values[0], r.values[1:], r.arithmetic, r.boundary)
        return refs
    symbols = prepared.model.symbols
    for u, p in enumerate(unique):
        limit = _limit(prepared, {s: Fraction(x) for s, x in zip(symbols, p)})
        refs[p] = reference_at(prepared.gradient, _exact_point(p), scales=worst_rows[u], limit=limit,
                               rational=prepared.gradient.maybe_rational)
    return refs


def _exact_point(p: Sequence[float]) -> list[fmpq]:
    """A float point's exact values (a float is a binary fraction)."""
    return [fmpq(*x.as_integer_ratio()) for x in p]


def _dtype_scale(prepared: Prepared, pts: Sequence[tuple[float, ...]], dtype: str, factor: float, shared: Any) -> Any:
    """The error sizes for ``dtype``: the shared ones (float64's u), unless an op's torch error is
    the same in every dtype (trigamma's series, `errorbound.dtype_dependent`), then redone with
    this dtype's u (charging float64's 4e6 ulps in float32 made polygamma inconclusive there)."""
    from .errorbound import dtype_dependent, error_scales_batch

    if dtype == "float64" or not dtype_dependent(prepared.gradient):
        return shared
    es = error_scales_batch(prepared.gradient, pts, u=UNIT_ROUNDOFF[dtype])
    return factor * error_scale(es.worst, es.probable)


def _judged_in(outputs: dict[str, src.SourceOutput], name: str, dtype: str) -> str:
    """The dtype a source's values are judged in: where its code returns another dtype than it is
    given (`sources.computed_dtype`), the less precise of the two (a float32 loss cast to float64
    at the end still carries float32's rounding; float32 inputs carry float32's)."""
    o = outputs.get(name)
    other = o.computed_in if o is not None else None
    return other if other is not None and UNIT_ROUNDOFF[other] > UNIT_ROUNDOFF[dtype] else dtype


def computed_notes(model: Model, outputs: dict[str, src.SourceOutput], dtype: str) -> list[str]:
    """A note per source whose code computes in another dtype than it is given."""
    return [f"`{name}` returns {o.computed_in} for {dtype} inputs: its {dtype} checks are judged in "
            f"{_judged_in(outputs, name, dtype)}, the less precise of the two (the rounding of that dtype, inputs "
            "included, is allowed)" for name, o in outputs.items() if o.computed_in]


def _fd_for(groups: Sequence[Any], source: str) -> Any:
    """The finite differences of the forward ``source`` runs (the user's for impl)."""
    fds = {g.forward: g for g in groups if g.source == "fd"}
    return fds.get("impl") if source in ("impl", "grad_impl") and "impl" in fds else fds.get("model")


def _groups(outputs: dict[str, src.SourceOutput], fds: dict[str, src.SourceOutput], ex: Any, dtype: str,
            u: float, at: Sequence[int] | None = None, plain: Mapping[str, Any] | None = None) -> list[Any]:
    """Every source of one dtype compared: forward values, gradients, finite differences (at the
    points ``at`` only, when given: `fd_points`, with ``plain``, the sources compared without
    finite differences, kept where no value is a mismatch: attribution changes nothing there)."""
    import dataclasses

    import torch

    from . import checks as ch

    full = ex
    if at is not None:
        ex = rows_of(full, at)

    groups = []
    forward_wrong: dict[str, Any] = {}
    for name, o in outputs.items():
        if o.loss is not None:
            g = ch.loss_group(name, ch.as_tensor(o.loss), full, _judged_in(outputs, name, dtype))
            forward_wrong[name] = (g.verdict == 1).reshape(-1)
            groups.append(g)
    fd_groups = {}
    for fname, fd in fds.items():
        assert fd.error_estimate is not None and fd.steps is not None
        h = ch.as_tensor(fd.steps)
        loss_scale = ex.scale[:, :1]
        fd_dtype = _judged_in(outputs, "impl", dtype) if fname == "impl" else dtype
        rounding = torch.where(torch.isfinite(loss_scale), 3 * UNIT_ROUNDOFF[fd_dtype] * loss_scale / (h / 2),
                               torch.tensor(float("inf"), dtype=torch.float64))
        fd_err = ch.as_tensor(fd.error_estimate) + rounding
        wrong = forward_wrong.get("impl") if fname == "impl" else None
        if wrong is not None and at is not None:
            wrong = wrong[list(at)]
        fd_groups[fname] = ch.fd_group(fname, ch.as_tensor(fd.grads).reshape(len(fd.grads), -1), fd_err, ex, fd_dtype,
                                       wrong)
    attributing = dict(fd_groups)
    if at is not None:  # attribution reads every point's fd (there are some where a source disagrees)
        for fname, g in fd_groups.items():
            values = torch.full(full.hi[:, 1:].shape, float("nan"), dtype=torch.float64)
            error = torch.full_like(values, float("inf"))
            values[list(at)], error[list(at)] = g.values, g.fd_error
            attributing[fname] = dataclasses.replace(g, values=values, fd_error=error)
            fd_groups[fname] = dataclasses.replace(g, exact=ex, points=tuple(at))
    for name, o in outputs.items():
        kept = (plain or {}).get(name)
        if kept is not None and not bool((kept.verdict == 1).any()):
            groups.append(kept)
            continue
        same_forward = attributing["impl"] if name in ("impl", "grad_impl") and "impl" in fd_groups else attributing.get("model")
        groups.append(ch.source_group(name, ch.as_tensor(o.grads).reshape(len(o.grads), -1), full,
                                      _judged_in(outputs, name, dtype), same_forward))
    return groups + list(fd_groups.values())


def _step_study(
    prepared: Prepared,
    subject: Any,
    dtypes: tuple[str, ...],
    exact_points: Sequence[dict[sp.Symbol, Fraction]],
    refs: dict[tuple[float, ...], PointReference],
) -> StepStudy | None:
    """The step study for the entry with the largest exact derivative at the first point where
    every dtype has one."""
    from .step_study import step_study

    for i, p in enumerate(exact_points):
        rounded_p = {d: tuple(round_to(p[s], d) for s in prepared.model.symbols) for d in dtypes}
        grads = {d: refs[rounded_p[d]].grads for d in dtypes}
        if not all(g.is_value for d in dtypes for g in grads[d]) or not grads[dtypes[0]]:
            continue
        first = grads[dtypes[0]]
        j = max(range(len(first)), key=lambda j: abs(as_float(first[j].value)))
        exact = {d: as_float(grads[d][j].value) for d in dtypes}
        return step_study(subject, j, i, rounded_p, exact)
    return None


def verify_all(
    models: Sequence[Model], *, samples: int = 5, seed: int = 0, dtypes: Sequence[str] = DTYPES,
    target: str = "", progress: Progress | None = None, order: int = 1, modes: Sequence[str] = ("rev",),
    strict: bool = False,
) -> list[ModelResult]:
    """`verify` each model; one model's error never stops the others."""
    return [verify(m, samples=samples, seed=seed, dtypes=dtypes, target=target, progress=progress, order=order,
                   modes=modes, strict=strict) for m in models]
