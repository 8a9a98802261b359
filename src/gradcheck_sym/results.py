"""Results: frozen dataclasses, and JSON in and out.

Rendering never computes and computing never prints: everything a report shows is in here, and
``from_json(to_json(run)) == run``.  Non-finite floats are written as the strings ``"nan"``,
``"inf"`` and ``"-inf"`` (JSON has no NaN).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

SCHEMA = 1


@dataclass(frozen=True, kw_only=True)
class Check:
    """One quantity from one source at one point in one dtype, against the exact value."""

    source: str  # "autograd" | "impl" | "grad_impl" | "fd"
    dtype: str  # "float64" | "float32"
    param: str  # variable name; "loss" for a forward-value check, "value" for an operator's output
    index: tuple[int, ...] | None = None  # entry of an array variable
    quantity: str = "grad"  # "loss" | "value" | "grad" | "jvp" | "second" (see QUANTITIES)
    point: int  # index into ModelResult.points[dtype]
    exact: float | None  # nearest float64 of the exact value (None if none exists)
    exact_text: str | None = None  # the exact value itself: a fraction or a certified ball
    value: float  # what the source computed
    abs_error: float | None = None
    rel_error: float | None = None
    ulps: float | None = None  # |value - exact| in units in the last place of dtype at exact
    tolerance: float | None = None  # the largest error a correct computation may have
    verdict: str  # "agree" | "mismatch" | "nondifferentiable" | "undefined" | "imprecise" | "inconclusive"
    attribution: str | None = None  # "wrong" | "forward_mismatch" | "noise" (mismatches); "imprecise",
    #   "not_computable" (the declared formula overflows or cancels in that dtype) for the two bands
    note: str = ""  # attribution or classification, in words
    left: float | None = None  # one-sided derivatives where nondifferentiable
    right: float | None = None
    forward: str | None = None  # fd only: "model" or "impl"
    fd_error: float | None = None  # fd only: its own error estimate
    output: int | None = None  # operators: the output entry (flat, row-major); None for a loss
    param2: str | None = None  # "second" (Hessian entry): the second variable differentiated
    index2: tuple[int, ...] | None = None
    vector: int | None = None  # which seeded random vector: an HVP's direction, a VJP's cotangent

    @property
    def of_tolerance(self) -> float:
        """|error| / tolerance: above 1 is a mismatch (NaN without an exact value)."""
        if self.abs_error is None or self.tolerance is None:
            return math.nan
        if self.tolerance == 0:
            return 0.0 if self.abs_error == 0 else math.inf
        return self.abs_error / self.tolerance

    @property
    def entry(self) -> str:
        """``w`` or ``W1[2,3]``: the entry as people write it."""
        if self.index is None or not self.index:
            return self.param
        return f"{self.param}[{','.join(map(str, self.index))}]"

    @property
    def entry2(self) -> str | None:
        """The second entry of a Hessian check (``param2``/``index2``), else None."""
        if self.param2 is None:
            return None
        return self.param2 if not self.index2 else f"{self.param2}[{','.join(map(str, self.index2))}]"

    @property
    def quantity_text(self) -> str:
        """The quantity as mathematics: ``∂loss/∂w``, ``∂²loss/∂w∂b``, ``(Hv₁)[w]``, ``∂y₂/∂w (jvp)``."""
        f = "loss" if self.output is None else f"y[{self.output}]"
        if self.quantity == "loss":
            return "loss"
        if self.quantity == "value":
            return f
        if self.quantity == "second":
            if self.vector is not None:
                return f"(H{f} v{self.vector})[{self.entry}]"
            return f"∂²{f}/∂{self.entry}∂{self.entry2}"
        if self.vector is not None:
            return f"(v{self.vector}ᵀJ)[{self.entry}]"
        return f"∂{f}/∂{self.entry}" + (" (jvp)" if self.quantity == "jvp" else "")


QUANTITIES = {
    "loss": "the forward value of a scalar loss",
    "value": "an operator's output entry (`output`: its flat index)",
    "grad": "a first derivative by reverse mode (a VJP; operators: `output`, or `vector` for a random cotangent)",
    "jvp": "a first derivative by forward mode (`param`/`index`: the unit direction; `output` for operators)",
    "second": "a second derivative: `param`/`index` and `param2`/`index2`, or `vector` for an HVP",
}


@dataclass(frozen=True, kw_only=True)
class NotSupported:
    """A source that cannot compute a quantity at all (not a failure): which, and why."""

    source: str  # "autograd" | "impl" | "grad_impl"
    quantity: str  # "jvp" (forward mode) | "second" (order 2)
    reason: str


@dataclass(frozen=True, kw_only=True)
class VariableInfo:
    name: str
    shape: tuple[int, ...]  # () for a scalar
    role: str  # "param" | "input"


@dataclass(frozen=True, kw_only=True)
class Layer:
    """One node of the layer-level computation graph (see `structure`)."""

    id: str  # unique, Mermaid-safe
    label: str  # MM, ADD, sigmoid, POW 2, exp, ..., or the variable's name
    kind: str  # "param" | "input" | "op" | "loss"
    size: int  # scalars in the group
    inputs: tuple[str, ...]  # ids of the layers it reads
    signs: tuple[str, ...] = ()  # per input: "+", "-" or "±" (the sign it enters with)
    shape: tuple[int, ...] = ()  # variables only


@dataclass(frozen=True, kw_only=True)
class StepStudy:
    """Central-difference error against the step h, for one entry at one point."""

    entry: str  # e.g. "W3[2,3]"
    point: int  # index into ModelResult.points[dtype]
    exact: dict[str, float]  # dtype -> exact derivative at that dtype's point
    steps: dict[str, list[float]]  # dtype -> h
    errors: dict[str, list[float]]  # dtype -> |difference quotient(h) - exact|


@dataclass(frozen=True, kw_only=True)
class SourceSummary:
    """One source in one dtype for one model: counts and the worst agreeing/failing error."""

    source: str
    dtype: str
    forward: str | None  # fd only
    quantity: str = "grad"  # "grad", or "loss" for forward values
    checks: int
    agree: int
    mismatch: int
    nondifferentiable: int
    undefined: int
    imprecise: int = 0  # beyond a careful implementation, explained by rounding (not a failure unless strict)
    inconclusive: int = 0  # the check could not resolve the value (not a failure unless strict)
    worst_rel: float | None  # over checks with an exact value
    worst_ulps: float | None
    worst_of_tolerance: float | None  # largest |error| / tolerance: above 1 is a mismatch
    worst: Check | None  # the check nearest to (or furthest beyond) its tolerance
    vectors: bool = False  # checked along seeded random vectors (VJPs with random cotangents, HVPs)

    @property
    def label(self) -> str:
        """``autograd``, ``fd (impl)``, ``impl forward value``: the source as reports name it."""
        text = self.source + (f" ({self.forward})" if self.forward else "")
        return text + SUMMARY_SUFFIX.get(self.quantity, "") + (" (random vectors)" if self.vectors else "")


SUMMARY_SUFFIX = {"loss": " forward value", "value": " outputs", "jvp": " forward mode", "second": " second order"}


@dataclass(frozen=True, kw_only=True)
class ModelResult:
    """Everything checked for one model."""

    name: str
    status: str  # "pass" | "fail" | "error"
    target: str = ""  # where the model came from: a file, a module, or "builtin"
    description: str = ""
    loss: str = ""  # the declared loss, as SymPy prints it
    loss_latex: str = ""  # SymPy's LaTeX for small losses, else the model's own ``latex=``
    variables: tuple[VariableInfo, ...] = ()
    domain: dict[str, list[float]] = field(default_factory=dict)  # variable or entry -> [low, high]
    n_params: int = 0  # scalar weights differentiated
    closed_form: dict[str, str] = field(default_factory=dict)  # entry -> ∂loss/∂entry (small models)
    closed_form_latex: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # model-specific findings (e.g. the linear-stack collapse)
    points: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # dtype -> points
    arithmetic: tuple[str, ...] = ()  # how the references were obtained ("rational", "ball/128")
    sources: tuple[str, ...] = ()  # sources checked, e.g. ("autograd", "fd")
    checks: tuple[Check, ...] = ()  # every check, or for large runs the ones that matter (`complete`)
    complete: bool = True  # whether `checks` holds every check
    summaries: tuple[SourceSummary, ...] = ()  # per source, dtype and quantity: counts over every check
    layers: tuple[Layer, ...] = ()  # the computation graph, one node per layer (empty: too irregular)
    step_study: StepStudy | None = None
    error: str | None = None  # why the model could not be checked (status "error")
    outputs: tuple[int, ...] = ()  # an operator's output shape (empty for a scalar loss)
    order: int = 1  # highest derivative order checked
    modes: tuple[str, ...] = ("rev",)  # "rev" (backward, VJPs), "fwd" (forward mode, JVPs)
    second_method: str = ""  # how second derivatives were checked: the full Hessian, or HVPs
    unsupported: tuple[NotSupported, ...] = ()  # sources that cannot compute a quantity, and why
    fd_points: dict[str, int] = field(default_factory=dict)  # dtype -> points fd was computed at, where not all
    impl_calls: str = ""  # how the user's impl was called: "torch.func.vmap", or one call per point and why

    @property
    def failed(self) -> tuple[Check, ...]:
        """The disagreements of sources (not finite differences) that are in `checks`."""
        return tuple(c for c in self.checks if c.verdict == "mismatch" and c.source != "fd")

    def _total(self, count: str) -> int:
        """A count summed over the sources' summaries (not finite differences)."""
        return sum(getattr(s, count) for s in summarize(self) if s.source != "fd")

    @property
    def n_imprecise(self) -> int:
        return self._total("imprecise")

    @property
    def n_inconclusive(self) -> int:
        return self._total("inconclusive")

    @property
    def n_checks(self) -> int:
        return self._total("checks")

    @property
    def n_failed(self) -> int:
        return self._total("mismatch")


@dataclass(frozen=True, kw_only=True)
class ReplayStep:
    """One SGD step of the lecture's training loop, float32 autograd beside exact."""

    epoch: int
    x: float
    y: float
    grad_float32: float
    grad_exact: str  # exact rational gradient, as a decimal
    w_float32: float  # weight after the step
    w_exact: str
    loss_float32: float
    loss_exact: str


@dataclass(frozen=True, kw_only=True)
class Replay:
    lines_float32: tuple[str, ...]  # exactly what the lecture's program prints
    steps: tuple[ReplayStep, ...]
    final_w_exact: str
    final_w_float32: float
    final_prediction_exact: str  # 4·ω after training, as the lecture's last line predicts
    float32_stalls_at: int | None = None  # first epoch after which float32's ω never changes


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """One `verify` run."""

    tool_version: str
    versions: dict[str, str]  # python, torch, sympy, python-flint
    command: str
    seed: int
    samples: int
    dtypes: tuple[str, ...]
    models: tuple[ModelResult, ...]
    errors: tuple[str, ...] = ()  # targets that could not be loaded
    replay: Replay | None = None


# -- JSON ---------------------------------------------------------------------------------------


_CHECK_FIELDS = tuple(f.name for f in dataclasses.fields(Check))
_UNSET = object()


def _number(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


# Fields added with second order and forward mode: written only when they say something, so
# that first-order results (and older readers) see the same file as before.
_NEW_CHECK_FIELDS = ("output", "param2", "index2", "vector")
_NEW_MODEL_FIELDS = {"outputs": (), "order": 1, "modes": ("rev",), "second_method": "", "unsupported": (),
                     "fd_points": {}, "impl_calls": ""}


def _encode(x: Any) -> Any:
    if type(x) is Check:  # the bulk of a results file: a fast path
        d = {name: _number(getattr(x, name)) for name in _CHECK_FIELDS}
        for name in _NEW_CHECK_FIELDS:
            if d[name] is None:
                del d[name]
        for name in ("index", "index2"):
            if d.get(name) is not None:
                d[name] = list(d[name])
        return d
    if type(x) is ModelResult:
        return {f.name: _encode(getattr(x, f.name)) for f in dataclasses.fields(x)
                if _NEW_MODEL_FIELDS.get(f.name, _UNSET) != getattr(x, f.name)}
    if type(x) is SourceSummary:
        return {f.name: _encode(getattr(x, f.name)) for f in dataclasses.fields(x)
                if not (f.name == "vectors" and not x.vectors)}
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _encode(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return x
    if isinstance(x, (list, tuple)):
        return [_encode(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _encode(v) for k, v in x.items()}
    return x


def to_json(run: RunResult) -> str:
    """The run as JSON text (stable key order, so equal runs give equal bytes), with one check
    and one point per line so that files stay small, greppable and diffable."""
    data = {"schema": SCHEMA, **_encode(run)}
    rows: list[list[Any]] = []

    def one_per_line(items: list[Any]) -> str:
        rows.append(items)
        return f"@rows{len(rows) - 1}@"

    for model in data["models"]:
        model["checks"] = one_per_line(model["checks"])
        model["points"] = {dtype: one_per_line(points) for dtype, points in model["points"].items()}
    text = json.dumps(data, indent=1, ensure_ascii=False)
    for k, items in enumerate(rows):
        body = ",\n".join(json.dumps(item, ensure_ascii=False, separators=(",", ":")) for item in items)
        text = text.replace(f'"@rows{k}@"', f"[\n{body}\n]" if items else "[]", 1)
    return text + "\n"


_FLOAT_FIELDS = {"exact", "value", "abs_error", "rel_error", "ulps", "tolerance", "left", "right", "fd_error"}


def _float(x: Any) -> Any:
    if isinstance(x, str):
        return float(x)
    return x


def _check(d: dict[str, Any]) -> Check:
    kw = {k: (_float(v) if k in _FLOAT_FIELDS else v) for k, v in d.items()}
    for name in ("index", "index2"):
        if kw.get(name) is not None:
            kw[name] = tuple(kw[name])
    return Check(**kw)


def _model(d: dict[str, Any]) -> ModelResult:
    d = dict(d)
    d["layers"] = tuple(
        Layer(**{**layer, "inputs": tuple(layer["inputs"]), "signs": tuple(layer["signs"]),
                 "shape": tuple(layer["shape"])})
        for layer in d["layers"]
    )
    if d.get("step_study") is not None:
        st = d["step_study"]
        d["step_study"] = StepStudy(
            entry=st["entry"], point=st["point"], exact={k: _float(v) for k, v in st["exact"].items()},
            steps={k: [_float(x) for x in v] for k, v in st["steps"].items()},
            errors={k: [_float(x) for x in v] for k, v in st["errors"].items()},
        )
    d["variables"] = tuple(VariableInfo(name=v["name"], shape=tuple(v["shape"]), role=v["role"]) for v in d["variables"])
    d["checks"] = tuple(_check(c) for c in d["checks"])
    d["summaries"] = tuple(
        SourceSummary(**{**x, "worst": _check(x["worst"]) if x.get("worst") else None,
                         **{k: _float(x[k]) for k in ("worst_rel", "worst_ulps", "worst_of_tolerance")}})
        for x in d.get("summaries", ())
    )
    for key in ("notes", "arithmetic", "sources", "outputs", "modes"):
        if key in d:
            d[key] = tuple(d[key])
    d["unsupported"] = tuple(NotSupported(**u) for u in d.get("unsupported", ()))
    return ModelResult(**d)


def _replay(d: dict[str, Any] | None) -> Replay | None:
    if d is None:
        return None
    return Replay(
        lines_float32=tuple(d["lines_float32"]),
        steps=tuple(ReplayStep(**{k: _float(v) if k.endswith("float32") else v for k, v in s.items()})
                    for s in d["steps"]),
        final_w_exact=d["final_w_exact"],
        final_w_float32=d["final_w_float32"],
        final_prediction_exact=d["final_prediction_exact"],
        float32_stalls_at=d.get("float32_stalls_at"),
    )


def model_to_dict(model: ModelResult) -> dict[str, Any]:
    """One model's results as JSON-ready data."""
    return _encode(model)  # type: ignore[no-any-return]


def model_from_dict(data: dict[str, Any]) -> ModelResult:
    """The inverse of `model_to_dict`."""
    return _model(data)


def replay_to_dict(replay: Replay) -> dict[str, Any]:
    return _encode(replay)  # type: ignore[no-any-return]


def replay_from_dict(data: dict[str, Any]) -> Replay:
    replay = _replay(data)
    assert replay is not None
    return replay


def environment_versions() -> dict[str, str]:
    """The versions a run's numbers depend on (read without importing the packages)."""
    import importlib.metadata
    import platform

    out = {"python": platform.python_version()}
    for package in ("torch", "sympy", "python-flint"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "none"
    return out


def from_json(text: str) -> RunResult:
    """A run read back from `to_json`'s output."""
    d = json.loads(text)
    if d.pop("schema", None) != SCHEMA:
        raise ValueError("not a gradcheck_sym results file (or written by another version)")
    d["models"] = tuple(_model(m) for m in d["models"])
    d["dtypes"] = tuple(d["dtypes"])
    d["errors"] = tuple(d["errors"])
    d["replay"] = _replay(d.get("replay"))
    return RunResult(**d)


# -- summaries (derived from checks; renderers show them, never compute them) -------------------


def summarize(model: ModelResult) -> list[SourceSummary]:
    """Per (source, dtype[, forward]) counts and worst errors: the stored summaries, or for results
    written without them, computed from the checks."""
    if model.summaries:
        return list(model.summaries)
    groups: dict[tuple[str, str, str | None], list[Check]] = {}
    for c in model.checks:
        groups.setdefault((c.source, c.dtype, c.forward), []).append(c)
    out = []
    for (source, dtype, forward), cs in groups.items():
        valued = [c for c in cs if c.ulps is not None and c.rel_error is not None]
        worst = max(valued, key=lambda c: (c.ulps if not math.isnan(c.ulps) else math.inf), default=None)  # type: ignore[arg-type]
        out.append(SourceSummary(
            source=source, dtype=dtype, forward=forward, checks=len(cs),
            agree=sum(c.verdict == "agree" for c in cs),
            mismatch=sum(c.verdict == "mismatch" for c in cs),
            nondifferentiable=sum(c.verdict == "nondifferentiable" for c in cs),
            undefined=sum(c.verdict == "undefined" for c in cs),
            imprecise=sum(c.verdict == "imprecise" for c in cs),
            inconclusive=sum(c.verdict == "inconclusive" for c in cs),
            worst_rel=max((c.rel_error for c in valued), default=None),  # type: ignore[type-var]
            worst_ulps=worst.ulps if worst else None,
            worst_of_tolerance=max((c.of_tolerance for c in valued), default=None),
            worst=worst,
        ))
    return out
