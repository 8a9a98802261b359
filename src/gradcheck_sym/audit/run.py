"""Running the audit: torch's derivatives at every point, against the exact ones.

One function at a time (`audit_function`), all dtypes, all points batched into one tensor per
dtype: the forward value, the first derivative in reverse mode (``autograd.grad``) and forward
mode (``torch.func.jvp``) and the second derivative by double backward, each judged by
`bands.band` against the exact value at the dtype-rounded point.  Functions are independent, so
`audit` spreads them over worker processes.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import sympy as sp

from ..results import Check, ModelResult, RunResult, SourceSummary, environment_versions
from . import bands
from .exact import Exact, ExactValue, rounding_bound
from .formats import FloatFormat, fmt, ulp
from .functions import BY_NAME, AuditFunction
from .hardpoints import Point, points

KEEP_PER_GROUP = 4  # stored checks per (dtype, source, quantity, argument, verdict): smallest |x| first


@dataclass(frozen=True, kw_only=True)
class FunctionAudit:
    """One function's results, and what the report plots."""

    result: ModelResult
    profile: dict[str, list[tuple[float, float, str]]] = field(default_factory=dict)  # dtype -> (x, ulps, verdict)
    counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # dtype -> "source/quantity" -> verdict -> n
    seconds: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Audit:
    run: RunResult
    functions: tuple[FunctionAudit, ...]
    device: str  # "cpu" | "cuda"
    device_name: str  # e.g. "NVIDIA H100 80GB HBM3" or the CPU's description


def torch_callable(fn: AuditFunction) -> Callable[..., Any]:
    """The row's call as a function.  The call text is a constant of the table (never user input)
    and is also the snippet the report shows, so what runs and what is shown cannot drift."""
    import torch

    names = ", ".join(a.name for a in fn.args)
    return eval(f"lambda {names}: {fn.call}", {"torch": torch})  # noqa: S307


def second_formula(fn: AuditFunction) -> sp.Expr | None:
    """torch's double backward of a unary row, over the values it reads: autograd differentiates
    the first-order formula ``g`` (derivatives.yaml) operation by operation, so the chain rule
    ``∂g/∂x + Σ ∂g/∂s · D_s`` where ``D_s`` is torch's own formula for the derivative of the
    intermediate ``s`` over rounded values (the saved output's is ``g`` itself: sigmoid_backward's
    derivative is ``(1 − 2·out)·out·(1 − out)``, tanh_backward's ``−2·out·(1 − out²)``), never the
    exact derivative of ``s`` in ``x``.  None when an intermediate's derivative is not known: then
    no bound is claimed."""
    if fn.backward2 is not None:
        return fn.backward2
    g = fn.backward.get(fn.args[0].name)
    if g is None:
        return None
    x = fn.args[0]
    g2 = sp.diff(g, x)
    for s in fn.intermediates:
        if not g.has(s):
            continue
        d = fn.derivatives.get(s, g if s.name == "out" else None)
        if d is None:
            return None
        g2 = g2 + sp.diff(g, s) * d
    return g2.replace(sp.DiracDelta, lambda *a: sp.Integer(0))  # autograd's sgn and step have derivative 0


class _Judge:
    """The exact side of one function: compiled derivatives and rounding bounds."""

    def __init__(self, fn: AuditFunction) -> None:
        self.fn = fn
        args = fn.args
        self.value = Exact(fn.definition, args, fn.removable)
        self.first = [Exact(sp.diff(fn.definition, a), args, fn.removable) for a in args]
        self.second = (Exact(sp.diff(fn.definition, args[0], 2), args, fn.removable)
                       if fn.second_order and len(args) == 1 else None)
        self.inter = {s: Exact(e, args) for s, e in fn.intermediates.items()}
        # the next derivatives: how much rounding each input by half an ulp moves a derivative
        self.next_first = [[Exact(sp.diff(fn.definition, a, b), args, fn.removable) for b in args] for a in args]
        self.next_second = [Exact(sp.diff(fn.definition, args[0], 3), args, fn.removable)] if self.second else []
        self.formula = [fn.backward.get(a.name) for a in args]
        g = self.formula[0]
        self.formula2: sp.Expr | None = None
        if g is not None and self.second is not None:
            self.formula2 = second_formula(fn)

    def exact(self, which: Exact, point: tuple[float, ...], f: FloatFormat, arg: int) -> tuple[str, ExactValue, ExactValue]:
        """("smooth" | "corner" | "jump", left, right): one-sided values where the definition is
        piecewise, else the value twice."""
        if not which.piecewise:
            v = which.value(point, f)
            return "smooth", v, v
        left, right = which.value(point, f, (arg, -1)), which.value(point, f, (arg, 1))
        if left.kind != "finite" or right.kind != "finite" or left.rounded == right.rounded:
            if left.kind == right.kind == "finite" and self.value.piecewise:
                fl, fr = self.value.value(point, f, (arg, -1)), self.value.value(point, f, (arg, 1))
                if fl.kind == fr.kind == "finite" and fl.ball is not None and fr.ball is not None \
                        and not fl.ball.overlaps(fr.ball):
                    return "jump", left, right
            return "smooth", left, right
        return "corner", left, right

    def sensitivity(self, nexts: list[Exact], point: tuple[float, ...], f: FloatFormat) -> float:
        """Σ |x_b|·u·|∂_b (the derivative)|: how far rounding the inputs moves the derivative."""
        from flint import arb

        total = 0.0
        for v, ex in zip(point, nexts):
            d = ex.value(point, f)
            if d.kind != "finite" or d.ball is None:
                return math.inf
            term = abs(arb(v) * f.u * d.ball.mid())  # in arb: a subnormal x times a huge derivative is not 0·inf
            total += float(term) if term.is_finite() else math.inf
        return total

    def explained(self, formula: sp.Expr | None, point: tuple[float, ...], f: FloatFormat) -> float | None:
        if formula is None:
            return None
        from flint import arb

        from .exact import to_fmpq

        env: dict[Any, Any] = {a: arb(v) for a, v in zip(self.fn.args, point)}
        env["_cond"] = {a: to_fmpq(v) for a, v in zip(self.fn.args, point)}
        for s, ex in self.inter.items():
            v = ex.value(point, fmt("float64"))  # precision raised as far as the value needs
            if v.kind != "finite" or v.ball is None or not v.ball.is_finite():
                return None
            env[s] = v.ball
        # every value rounded in the dtype: composite backward graphs and double backward keep
        # their intermediates in it (fused half kernels work in float32: this is generous there)
        return rounding_bound(formula, env, set(self.inter), f.u, f.u, f.subnormal)


def _torch_values(fn: AuditFunction, dtype: str, device: str, pts: list[Point]) -> tuple[dict[str, list[list[float]]], list[str]]:
    """torch's values at every point, batched: "loss" (forward), "grad", "jvp" per argument,
    "grad2" (unary).  Returns the values and notes for what torch refused."""
    import torch

    call = torch_callable(fn)
    dt = getattr(torch, dtype)
    cols = [[p.values[i] for p in pts] for i in range(len(fn.args))]
    notes: list[str] = []
    out: dict[str, list[list[float]]] = {}
    xs = [torch.tensor(c, dtype=torch.float64).to(dtype=dt, device=device).requires_grad_(True) for c in cols]
    try:
        y = call(*xs)
        grads = torch.autograd.grad(y, xs, torch.ones_like(y), create_graph=True, allow_unused=True)
    except (RuntimeError, NotImplementedError) as exc:  # e.g. a kernel missing for this dtype
        notes.append(f"{dtype}: not audited: torch raised {str(exc).splitlines()[0]}")
        return {}, notes
    out["loss"] = [y.detach().double().cpu().tolist()]
    out["grad"] = [(g if g is not None else torch.zeros_like(x)).detach().double().cpu().tolist() for g, x in zip(grads, xs)]
    if len(fn.args) == 1 and fn.second_order:
        g = grads[0]
        if g is None or not g.requires_grad:
            out["grad2"] = [[0.0] * len(pts)]
        else:
            try:
                (g2,) = torch.autograd.grad(g, xs[0], torch.ones_like(g), allow_unused=True)
                out["grad2"] = [(g2 if g2 is not None else torch.zeros_like(g)).detach().double().cpu().tolist()]
            except (RuntimeError, NotImplementedError) as exc:
                notes.append(f"{dtype}: double backward: torch raised {str(exc).splitlines()[0]}")
    try:
        jv = []
        for i in range(len(fn.args)):
            prim = tuple(x.detach() for x in xs)
            tang = tuple(torch.ones_like(x) if j == i else torch.zeros_like(x) for j, x in enumerate(prim))
            _, t = torch.func.jvp(call, prim, tang)
            jv.append(t.double().cpu().tolist())
        out["jvp"] = jv
    except (RuntimeError, NotImplementedError) as exc:
        notes.append(f"{dtype}: forward mode (torch.func.jvp): torch raised {str(exc).splitlines()[0]}")
    return out, notes


def _alone(fn: AuditFunction, dtype: str, device: str, point: tuple[float, ...], arg: int) -> float:
    """The reverse-mode derivative at one point, as the report's snippet computes it."""
    import torch

    xs = [torch.tensor([v], dtype=getattr(torch, dtype), device=device, requires_grad=True) for v in point]
    y = torch_callable(fn)(*xs)
    y.backward(torch.ones_like(y))
    g = xs[arg].grad
    return float(g.double().item()) if g is not None else 0.0


def _check(*, source: str, quantity: str, dtype: str, param: str, point: int, value: float, ex: ExactValue,
           f: FloatFormat, explain: Callable[[], tuple[float | None, float | None]], bounded: bool = True) -> Check:
    from flint import arb

    assert ex.ball is not None
    exact = float(ex.ball.mid())
    if math.isfinite(value):
        import flint

        old, flint.ctx.prec = flint.ctx.prec, min(max(256, ex.ball.rel_accuracy_bits() + 64), 4200)
        try:
            abs_error = float(abs(arb(value) - ex.ball).mid())
        finally:
            flint.ctx.prec = old
    else:
        abs_error = math.inf if not math.isnan(value) else math.nan
    u = ulp(ex.rounded, f)
    explained, sensitivity = explain() if bands.needs_explanation(value, ex.rounded, abs_error, u, exact) else (None, None)
    b = bands.band(value, exact, ex.rounded, abs_error, u, explained, quantity, sensitivity, f.tiny, bounded)
    return Check(source=source, dtype=dtype, param=param, quantity=quantity, point=point, exact=exact,
                 exact_text=ex.text, value=value, abs_error=abs_error,
                 rel_error=(abs_error / abs(exact) if exact != 0 else (0.0 if abs_error == 0 else math.inf)),
                 ulps=b.ulps, tolerance=bands.AGREE_ULPS * u, verdict=b.verdict, note=b.why)


def audit_function(name: str, dtypes: Sequence[str], device: str, n_random: int, seed: int) -> FunctionAudit:
    """Audit one function (a row of `functions.FUNCTIONS`, by name) in every dtype."""
    t0 = time.perf_counter()
    fn = BY_NAME[name]
    judge = _Judge(fn)
    checks: list[Check] = []
    pts_out: dict[str, list[dict[str, Any]]] = {}
    notes: list[str] = []
    profile: dict[str, list[tuple[float, float, str]]] = {}
    unresolved = 0
    for dtype in dtypes:
        f = fmt(dtype)
        pts = points(fn, f, n_random, seed)
        pts_out[dtype] = [{**{a.name: v for a, v in zip(fn.args, p.values)}, "kind": p.kind} for p in pts]
        values, refused = _torch_values(fn, dtype, device, pts)
        notes += refused
        if not values:
            continue
        prof: list[tuple[float, float, str]] = []
        for i, p in enumerate(pts):
            fx = judge.value.value(p.values, f)
            if fx.kind == "finite" and "loss" in values:
                checks.append(_check(source="autograd", quantity="loss", dtype=dtype, param="loss", point=i,
                                     value=values["loss"][0][i], ex=fx, f=f, explain=lambda: (None, None)))
            for a, arg in enumerate(fn.args):
                kind, left, right = judge.exact(judge.first[a], p.values, f, a)
                if a == 0:
                    first_kind = kind
                for source in ("autograd", "jvp"):
                    key = "grad" if source == "autograd" else "jvp"
                    if key not in values:
                        continue
                    v = values[key][a][i]
                    c = _judged(source, "grad", dtype, arg.name, i, v, kind, left, right, f, fx,
                                lambda a=a: (judge.explained(judge.formula[a], p.values, f),
                                             judge.sensitivity(judge.next_first[a], p.values, f)))
                    if c is None:
                        unresolved += 1
                        continue
                    checks.append(c)
                    if source == "autograd" and a == 0 and c.ulps is not None:
                        prof.append((p.values[0], c.ulps, c.verdict))
            if judge.second is not None and "grad2" in values:
                kind, left, right = judge.exact(judge.second, p.values, f, 0)
                if first_kind in ("corner", "jump"):  # the first derivative jumps: no second derivative
                    kind = "jump"
                c = _judged("autograd", "grad2", dtype, fn.args[0].name, i, values["grad2"][0][i], kind, left, right,
                            f, fx, lambda: (judge.explained(judge.formula2, p.values, f),
                                            judge.sensitivity(judge.next_second, p.values, f)),
                            bounded=judge.formula2 is not None)
                if c is None:
                    unresolved += 1
                else:
                    checks.append(c)
        profile[dtype] = prof
    if unresolved:
        notes.append(f"{unresolved} derivative(s) at points so large that the exact value is beyond arb's exponent "
                     "range were skipped")
    kept = _keep(checks, pts_out, fn, device)
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for c in checks:
        d = counts.setdefault(c.dtype, {}).setdefault(f"{c.source}/{c.quantity}", {})
        d[c.verdict] = d.get(c.verdict, 0) + 1
    status = "fail" if any(c.verdict == "mismatch" and c.quantity != "loss" for c in checks) else "pass"
    result = ModelResult(
        name=fn.name, status=status, target="torch", description=fn.call,
        loss=str(fn.definition), loss_latex=sp.latex(fn.definition),
        domain={"x": list(fn.range)}, n_params=len(fn.args),
        closed_form={a.name: str(sp.diff(fn.definition, a)) for a in fn.args},
        notes=tuple(notes + ([fn.convention] if fn.convention else [])), points=pts_out,
        arithmetic=("ball",), sources=("autograd", "jvp"), checks=tuple(kept), complete=len(kept) == len(checks),
        summaries=tuple(_summaries(checks)),
    )
    return FunctionAudit(result=result, profile=profile, counts=counts, seconds=time.perf_counter() - t0)


def _judged(source: str, quantity: str, dtype: str, param: str, i: int, v: float, kind: str, left: ExactValue,
            right: ExactValue, f: FloatFormat, fx: ExactValue,
            explain: Callable[[], tuple[float | None, float | None]], bounded: bool = True) -> Check | None:
    if kind == "corner":
        tol = bands.AGREE_ULPS * max(ulp(left.rounded, f), ulp(right.rounded, f))
        verdict, convention = bands.corner_band(v, left.rounded, right.rounded, tol)
        return Check(source=source, dtype=dtype, param=param, quantity=quantity, point=i, exact=None,
                     value=v, verdict=verdict, note=f"corner: torch picks {convention}",
                     left=left.rounded, right=right.rounded)
    if kind == "jump" or left.kind == "undefined" or fx.kind == "undefined":
        return Check(source=source, dtype=dtype, param=param, quantity=quantity, point=i, exact=None, value=v,
                     verdict="undefined", note="the derivative does not exist here (outside the domain, a pole or "
                     "a jump)")
    if left.kind != "finite":
        return None
    return _check(source=source, quantity=quantity, dtype=dtype, param=param, point=i, value=v, ex=left, f=f,
                  explain=explain, bounded=bounded)


def _keep(checks: list[Check], pts: dict[str, list[dict[str, Any]]], fn: AuditFunction, device: str) -> list[Check]:
    """The checks worth storing: per group, the ``KEEP_PER_GROUP`` at the smallest |point| and the
    worst one (for agreeing groups only the worst); every corner.  Reverse-mode findings are run
    again alone, as the report's snippet runs them, and say so where the value differs."""
    groups: dict[tuple[str, ...], list[Check]] = {}
    for c in checks:
        groups.setdefault((c.dtype, c.source, c.quantity, c.param, c.verdict), []).append(c)

    def size(c: Check) -> float:
        return max(abs(v) for k, v in pts[c.dtype][c.point].items() if k != "kind")

    kept: list[Check] = []
    for (dtype, source, quantity, param, verdict), cs in groups.items():
        worst = max(cs, key=lambda c: c.ulps if c.ulps is not None and not math.isnan(c.ulps) else -1.0)
        if verdict == "agree":
            chosen = [worst]
        elif verdict == "nondifferentiable":
            chosen = cs
        else:
            ordered = sorted(cs, key=size)
            chosen = ordered[:KEEP_PER_GROUP]
            normal = next((c for c in ordered if c.exact is not None and abs(c.exact) >= fmt(dtype).tiny), None)
            for extra in (worst, normal):  # the worst, and the smallest point whose exact value is normal
                if extra is not None and extra not in chosen:
                    chosen.append(extra)
        for c in chosen:
            if verdict in ("mismatch", "imprecise") and source == "autograd" and quantity == "grad":
                point = tuple(v for k, v in pts[dtype][c.point].items() if k != "kind")
                alone = _alone(fn, dtype, device, point, [a.name for a in fn.args].index(param))
                same = alone == c.value or (math.isnan(alone) and math.isnan(c.value))
                if not same:
                    import dataclasses

                    c = dataclasses.replace(c, note=c.note + f"; computed alone (the snippet) torch returns {alone!r}")
            kept.append(c)
    kept.sort(key=lambda c: (c.dtype, c.source, c.quantity, c.param, c.point))
    return kept


def _summaries(checks: list[Check]) -> list[SourceSummary]:
    groups: dict[tuple[str, str, str], list[Check]] = {}
    for c in checks:
        groups.setdefault((c.source, c.dtype, c.quantity), []).append(c)
    out = []
    for (source, dtype, quantity), cs in groups.items():
        valued = [c for c in cs if c.ulps is not None and c.rel_error is not None]
        worst = max(valued, key=lambda c: c.ulps if not math.isnan(c.ulps) else math.inf, default=None)  # type: ignore[arg-type]
        out.append(SourceSummary(
            source=source, dtype=dtype, forward=None, quantity=quantity, checks=len(cs),
            agree=sum(c.verdict == "agree" for c in cs), mismatch=sum(c.verdict == "mismatch" for c in cs),
            nondifferentiable=sum(c.verdict == "nondifferentiable" for c in cs),
            undefined=sum(c.verdict == "undefined" for c in cs),
            worst_rel=max((c.rel_error for c in valued if not math.isnan(c.rel_error)), default=None),  # type: ignore[type-var, union-attr]
            worst_ulps=worst.ulps if worst else None, worst_of_tolerance=None, worst=worst,
        ))
    return out


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _one(args: tuple[str, tuple[str, ...], str, int, int]) -> FunctionAudit:
    """One function; what goes wrong there is that function's error, and the others go on."""
    try:
        return audit_function(*args)
    except Exception as exc:  # noqa: BLE001 - reported per function, never a crash of the run
        name = args[0]
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return FunctionAudit(result=ModelResult(name=name, status="error", target="torch",
                                                error=f"`{name}` could not be audited: {why}"))


def device_name(device: str) -> str:
    import platform

    import torch

    if device == "cuda":
        return str(torch.cuda.get_device_name(0))
    return platform.processor() or platform.machine()


def audit(names: Sequence[str], dtypes: Sequence[str], *, device: str = "cpu", n_random: int = 48, seed: int = 0,
          jobs: int = 1, command: str = "", progress: Callable[[str], None] | None = None) -> Audit:
    """Audit the functions ``names`` (rows of `functions.FUNCTIONS`) in ``dtypes`` on ``device``.

    ``jobs`` worker processes share the functions (each one whole); ``progress`` gets a line per
    function finished.
    """
    work = [(n, tuple(dtypes), device, n_random, seed) for n in names]
    done: list[FunctionAudit] = []

    def report(r: FunctionAudit, k: int) -> None:
        if progress:
            progress(f"[{k}/{len(work)}] {r.result.name}: {r.result.status} in {r.seconds:.1f} s")

    if jobs <= 1 or len(work) <= 1:
        _init_worker()
        for k, w in enumerate(work, start=1):
            done.append(_one(w))
            report(done[-1], k)
    else:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked workers
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker) as pool:
            for k, r in enumerate(pool.map(_one, work), start=1):
                done.append(r)
                report(r, k)
    run = RunResult(tool_version=_version(), versions={**environment_versions(), "device": device_name(device)},
                    command=command, seed=seed, samples=n_random, dtypes=tuple(dtypes),
                    models=tuple(r.result for r in done))
    return Audit(run=run, functions=tuple(done), device=device, device_name=device_name(device))


def _version() -> str:
    from .. import __version__

    return __version__


if __name__ == "__main__":  # pragma: no cover - a quick look at one function
    a = audit_function(sys.argv[1], ("float64", "float32", "bfloat16", "float16"), "cpu", 16, 0)
    for c in a.result.checks:
        print(c.dtype, c.source, c.quantity, a.result.points[c.dtype][c.point], c.verdict, c.value, c.exact, c.note)
