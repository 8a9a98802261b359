"""`python -m gradcheck_sym audit`: the point generator, the exact side, the bands, the command
line and the report.  Torch's float digits are never compared against constants: torch's values
are compared with what the same torch prints, and verdicts and structure with exact values."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sympy as sp
import torch

from gradcheck_sym.audit import bands
from gradcheck_sym.audit.exact import Exact, rounding_bound
from gradcheck_sym.audit.formats import DTYPES, fmt, round_to, ulp
from gradcheck_sym.audit.functions import BY_NAME, FUNCTIONS, OUT, X, Y, select
from gradcheck_sym.audit.hardpoints import points, saturation_point
from gradcheck_sym.audit.run import _Judge, second_formula
from gradcheck_sym.results import from_json

F64 = fmt("float64")


# -- the table -----------------------------------------------------------------------------------


def test_the_table_covers_at_least_40_functions_named_as_called() -> None:
    assert len(FUNCTIONS) >= 40
    assert len({f.name for f in FUNCTIONS}) == len(FUNCTIONS)
    assert all(f.name.startswith("torch.") for f in FUNCTIONS)
    assert [f.name for f in select(["gelu"])] == ["torch.nn.functional.gelu",
                                                  "torch.nn.functional.gelu(approximate='tanh')"]
    with pytest.raises(KeyError):
        select(["no_such_function"])


def test_every_backward_formula_is_the_derivative_of_its_definition() -> None:
    """torch's formulas (which explain imprecise results) equal the exact derivative at a point."""
    for f in FUNCTIONS:
        lo, hi = f.range
        point = tuple(round_to(lo + 0.3 * (hi - lo) + 0.01, F64) if a is X else 1.625 for a in f.args)
        for a in f.args:
            formula = f.backward[a.name]
            subs = {s: e for s, e in f.intermediates.items()}
            exact = Exact(sp.diff(f.definition, a), f.args).value(point, F64)
            via = Exact(formula.subs(subs), f.args).value(point, F64)
            assert exact.kind == via.kind == "finite", f.name
            assert abs(exact.rounded - via.rounded) <= 4 * ulp(exact.rounded, F64), (f.name, a)


# -- the point generator -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_each_kind_of_hard_point_is_produced_and_representable(dtype: str) -> None:
    f = fmt(dtype)
    pts = points(BY_NAME["torch.sigmoid"], f, n_random=8, seed=0)
    kinds = {p.kind for p in pts}
    assert {"zero", "subnormal", "tiny", "one", "max", "edge", "saturation", "random"} <= kinds
    values = [p.values[0] for p in pts]
    for v in values:  # each is a value of the dtype: torch holds it exactly
        assert round_to(v, f) == v
        assert torch.tensor([v], dtype=getattr(torch, dtype)).double().item() == v
    zeros = [v for v in values if v == 0]
    assert sorted(math.copysign(1, v) for v in zeros) == [-1, 1]  # +0 and -0
    subnormals = [p.values[0] for p in pts if p.kind == "subnormal"]
    assert f.subnormal in subnormals and all(0 < abs(v) < f.tiny for v in subnormals)
    assert f.max in values and -f.max in values
    exp = Exact(sp.exp(X), (X,))
    edge = max(v for v in values if exp.value((v,), f).rounded < math.inf)  # where exp overflows in this dtype
    above = min(v for v in values if v > edge)
    assert exp.value((above,), f).rounded == math.inf
    assert round_to(edge + ulp(edge, f), f) == above  # the edge and its neighbour are both points


def test_the_saturation_point_is_where_the_output_first_rounds_to_its_limit() -> None:
    sigmoid = BY_NAME["torch.sigmoid"]
    for dtype in DTYPES:
        f = fmt(dtype)
        x0 = saturation_point(sigmoid, f, 1, sp.Integer(1))
        assert x0 is not None and round_to(x0, f) == x0
        value = Exact(sigmoid.definition, (X,))
        assert value.value((x0,), f).rounded == 1.0
        below = round_to(x0 - ulp(x0, f), f)
        assert value.value((below,), f).rounded < 1.0 or value.value((round_to(below - ulp(below, f), f),), f).rounded < 1.0


def test_corners_and_their_neighbours_are_points_and_random_points_follow_the_seed() -> None:
    relu = BY_NAME["torch.relu"]
    f = fmt("float32")
    pts = points(relu, f, n_random=6, seed=3)
    corner = [p.values[0] for p in pts if p.kind == "corner"]
    assert 0.0 in corner and f.subnormal in corner and -f.subnormal in corner
    again = points(relu, f, n_random=6, seed=3)
    other = points(relu, f, n_random=6, seed=4)
    rand = [p.values for p in pts if p.kind == "random"]
    assert rand == [p.values for p in again if p.kind == "random"]
    assert rand != [p.values for p in other if p.kind == "random"]


# -- the exact side ------------------------------------------------------------------------------


def test_exact_derivatives_against_closed_values() -> None:
    d = {f.name: Exact(sp.diff(f.definition, X), f.args, f.removable) for f in FUNCTIONS if f.args == (X,)}
    assert d["torch.sigmoid"].value((0.0,), F64).rounded == 0.25
    assert d["torch.tanh"].value((0.0,), F64).rounded == 1.0
    assert d["torch.erf"].value((0.0,), F64).rounded == 2 / math.sqrt(math.pi)
    assert d["torch.lgamma"].value((1.0,), F64).rounded == -0.5772156649015329  # −γ (Euler)
    sinc2 = Exact(sp.diff(BY_NAME["torch.sinc"].definition, X, 2), (X,), (sp.Integer(0),))
    assert sinc2.value((0.0,), F64).rounded == -(math.pi**2) / 3  # a removable singularity: the limit
    # a representable tail value: σ'(40) = e^-40/(1+e^-40)^2, to the last bit
    assert d["torch.sigmoid"].value((40.0,), F64).rounded == 4.248354255291589e-18
    assert Exact(BY_NAME["torch.log"].definition, (X,)).value((-1.0,), F64).kind == "undefined"  # outside the domain
    assert d["torch.sqrt"].value((0.0,), F64).kind == "undefined"  # a pole of the derivative
    assert d["torch.sigmoid"].value((-1e300,), F64).kind == "unresolved"  # beyond arb's range, not undefined


def test_one_sided_derivatives_of_piecewise_definitions() -> None:
    relu = Exact(sp.diff(BY_NAME["torch.relu"].definition, X), (X,))
    assert (relu.value((0.0,), F64, (0, -1)).rounded, relu.value((0.0,), F64, (0, 1)).rounded) == (0.0, 1.0)
    xlogy = BY_NAME["torch.xlogy"].definition
    dy = Exact(sp.diff(xlogy, Y), (X, Y))
    dx = Exact(sp.diff(xlogy, X), (X, Y))
    assert dy.value((0.0, 0.0), F64, (1, 1)).rounded == 0.0  # xlogy(0, y) = 0 for every y
    left, right = dx.value((0.0, 2.0), F64, (0, -1)), dx.value((0.0, 2.0), F64, (0, 1))
    assert left.rounded == right.rounded == math.log(2)  # the x = 0 branch has measure zero


# -- the bands -----------------------------------------------------------------------------------


def _band(value: float, exact: float, dtype: str = "float64", explained: float | None = None) -> str:
    f = fmt(dtype)
    r = round_to(exact, f)
    return bands.band(value, exact, r, abs(value - exact), ulp(r, f), explained, tiny=f.tiny).verdict


def test_a_planted_wrong_derivative_is_a_mismatch_and_a_correct_one_agrees() -> None:
    assert _band(0.5, 0.25) == "mismatch"  # twice the derivative
    assert _band(0.25 * (1 + 2**-49), 0.25, explained=1e-20) == "mismatch"  # 8 ulps nothing explains
    assert _band(0.25 * (1 + 2**-49), 0.25, explained=3e-16) == "imprecise"  # 8 ulps (4.4e-16) rounding explains
    assert _band(0.25 * (1 + 2**-52), 0.25) == "agree"
    assert _band(-0.25, 0.25, explained=1e-17) == "mismatch"  # the wrong sign, unexplained
    assert _band(0.0, 0.25, explained=1e-17) == "mismatch"  # a derivative lost, unexplained


def test_an_s_times_1_minus_s_rounding_loss_is_imprecise() -> None:
    """σ'(x) computed as torch does, s(1 − s) from the rounded s, in the range where 1 − s keeps a
    few bits: beyond 4 ulps, within what rounding s explains."""
    x = 34.5
    s = 1 / (1 + math.exp(-x))  # IEEE double: the rounded forward output
    value = s * (1 - s)
    d = Exact(sp.diff(BY_NAME["torch.sigmoid"].definition, X), (X,)).value((x,), F64)
    from flint import arb

    out = arb(1) / (1 + arb(-x).exp())
    explained = rounding_bound(OUT * (1 - OUT), {X: arb(x), OUT: out}, {OUT}, F64.u, F64.u)
    exact = float(d.ball.mid())
    err = abs(value - exact)
    b = bands.band(value, exact, d.rounded, err, ulp(d.rounded, F64), explained)
    assert err / ulp(d.rounded, F64) > bands.AGREE_ULPS
    assert b.verdict == "imprecise", b


def test_the_second_order_formula_is_torchs_double_backward_and_equals_the_second_derivative() -> None:
    """The ∂² bound reads what torch's double backward reads: sigmoid_backward's derivative over the
    saved output (derivatives.yaml), not the exact derivative of the output in x; and each row's
    formula is, in exact arithmetic, the second derivative."""
    assert sp.simplify(second_formula(BY_NAME["torch.sigmoid"]) - (1 - 2 * OUT) * OUT * (1 - OUT)) == 0
    assert sp.simplify(second_formula(BY_NAME["torch.tanh"]) + 2 * OUT * (1 - OUT**2)) == 0
    assert not second_formula(BY_NAME["torch.sigmoid"]).has(X)
    for f in FUNCTIONS:
        if not f.second_order or len(f.args) != 1 or f.corners:
            continue
        g2 = second_formula(f)
        assert g2 is not None, f.name
        lo, hi = f.range
        point = (round_to(lo + 0.3 * (hi - lo) + 0.01, F64),)
        exact = Exact(sp.diff(f.definition, X, 2), f.args).value(point, F64)
        via = Exact(g2.subs(f.intermediates), f.args).value(point, F64)
        assert exact.kind == via.kind == "finite", f.name
        assert abs(exact.rounded - via.rounded) <= 64 * ulp(exact.rounded, F64), f.name


def _second_order_band(name: str, dtype: str, x: float, value: float) -> bands.Band:
    f = fmt(dtype)
    judge = _Judge(BY_NAME[name])
    assert judge.second is not None
    ex = judge.second.value((x,), f)
    exact = float(ex.ball.mid())
    return bands.band(value, exact, ex.rounded, abs(value - exact), ulp(ex.rounded, f),
                      judge.explained(judge.formula2, (x,), f), "grad2",
                      judge.sensitivity(judge.next_second, (x,), f), f.tiny)


def test_sigmoids_double_backward_tail_loss_in_float32_is_imprecise_and_a_planted_one_a_mismatch() -> None:
    """torch's ∂² of sigmoid at x = 20 in float32 reads s rounded to 1 and returns (−)0 for −2e-9:
    rounding s by one ulp moves (1 − 2s)·s·(1 − s) by about u, so the loss is imprecise; a wrong
    second derivative (the first derivative returned, the sign flipped) is a mismatch."""
    x = torch.tensor([20.0], dtype=torch.float32, requires_grad=True)
    (g,) = torch.autograd.grad(torch.sigmoid(x), x, torch.ones_like(x), create_graph=True)
    (g2,) = torch.autograd.grad(g, x, torch.ones_like(g))
    value = float(g2.item())
    tail = _second_order_band("torch.sigmoid", "float32", 20.0, value)
    # the formula over s rounded to 1 gives 0: imprecise; torch's own value (0 here, other last
    # bits on another CPU or with the results perturbed by an ulp) is never a mismatch
    assert _second_order_band("torch.sigmoid", "float32", 20.0, 0.0).verdict == "imprecise"
    assert tail.verdict in ("agree", "imprecise"), tail
    exact2 = float(_Judge(BY_NAME["torch.sigmoid"]).second.value((2.0,), fmt("float32")).rounded)
    assert _second_order_band("torch.sigmoid", "float32", 2.0, -exact2).verdict == "mismatch"
    first = 1 / (1 + math.exp(-2.0)) * (1 - 1 / (1 + math.exp(-2.0)))
    assert _second_order_band("torch.sigmoid", "float32", 2.0, first).verdict == "mismatch"
    assert _second_order_band("torch.sigmoid", "float32", 2.0, exact2).verdict == "agree"


def test_zero_for_a_representable_derivative_is_a_mismatch_but_underflow_compares_absolutely() -> None:
    # σ'(40) lost as s(1 − s) with s rounded to 1: far below the rounding of s, imprecise (as
    # tanh'(−30) = 1 − y² returning 0 for 3.5e-26); unexplained, the same loss is a mismatch
    assert _band(0.0, 4.248354255291589e-18, explained=1.1e-16) == "imprecise"
    assert _band(0.0, 4.248354255291589e-18, explained=1e-40) == "mismatch"
    assert _band(0.0, 2 * F64.subnormal) == "agree"  # below the smallest normal: absolute
    assert _band(0.0, 3 * fmt("float16").subnormal, "float16") == "agree"
    # a subnormal derivative lost entirely (atan' = 1/(1 + x²) once x² overflows): underflow
    assert _band(0.0, 1e-310) == "imprecise"
    assert _band(0.0, 1.5258556235409006e-05, "float16") == "imprecise"
    assert _band(0.0, 2 * F64.tiny) == "mismatch"  # a normal derivative lost is not underflow
    assert _band(math.inf, 1e300) == "mismatch"
    assert _band(math.inf, 1e39, "float32") == "agree"  # the exact value overflows float32 too
    assert _band(math.nan, 1.0) == "mismatch"


def test_zero_is_excused_only_where_rounding_the_input_moves_the_derivative_more_than_its_size() -> None:
    f = F64
    e = 1e-30
    r = round_to(e, f)
    lost = bands.band(0.0, e, r, e, ulp(r, f), None, "grad", sensitivity=1e-31)
    excused = bands.band(0.0, e, r, e, ulp(r, f), None, "grad", sensitivity=1e-29)
    assert (lost.verdict, excused.verdict) == ("mismatch", "imprecise")


def test_without_a_rounding_bound_only_nan_or_inf_is_claimed() -> None:
    e, f = 0.25, F64
    off = bands.band(e * (1 + 2**-40), e, e, e * 2**-40, ulp(e, f), None, "grad2", None, f.tiny, bounded=False)
    lost = bands.band(-e, e, e, 2 * e, ulp(e, f), None, "grad2", None, f.tiny, bounded=False)
    unevaluable = bands.band(0.0, e, e, e, ulp(e, f), math.inf, "grad", None, f.tiny)
    nan = bands.band(math.nan, e, e, math.nan, ulp(e, f), None, "grad2", None, f.tiny, bounded=False)
    assert (off.verdict, lost.verdict, unevaluable.verdict, nan.verdict) == ("imprecise", "imprecise", "imprecise",
                                                                             "mismatch")


def test_corner_verdicts() -> None:
    assert bands.corner_band(0.0, 0.0, 1.0, 1e-15) == ("nondifferentiable", "left (0)")
    assert bands.corner_band(0.5, 0.0, 1.0, 1e-15)[0] == "nondifferentiable"
    assert bands.corner_band(math.nan, 0.0, 1.0, 1e-15)[0] == "mismatch"
    assert bands.corner_band(2.0, 0.0, 1.0, 1e-15)[0] == "mismatch"


# -- the command line and the report --------------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "gradcheck_sym", "audit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("audit")
    r = _cli("--functions", "sigmoid,relu,torch.xlogy", "--dtypes", "float64,float32", "--points", "4",
             "--report-dir", str(out / "rep"), "--json", str(out / "copy.json"), "--jobs", "1", cwd=out)
    return r, out


def test_cli_writes_the_report_and_verify_style_json(audited: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    r, out = audited
    assert r.returncode == 1, r.stderr  # xlogy's ∂/∂y is NaN at (0, 0): a mismatch
    rep = out / "rep"
    assert {"torch-audit.md", "torch-audit.json"} <= {p.name for p in rep.iterdir()}
    run = from_json((rep / "torch-audit.json").read_text())
    assert (out / "copy.json").read_text() == (rep / "torch-audit.json").read_text()
    assert [m.name for m in run.models] == ["torch.sigmoid", "torch.relu", "torch.xlogy"]
    assert run.dtypes == ("float64", "float32")
    by = {m.name: m for m in run.models}
    assert [by[n].status for n in ("torch.sigmoid", "torch.relu", "torch.xlogy")] == ["pass", "pass", "fail"]
    corner = [c for c in by["torch.relu"].checks if c.verdict == "nondifferentiable" and c.quantity == "grad"]
    assert corner and all((c.left, c.right) == (0.0, 1.0) for c in corner)
    # s(1 − s) returning 0 in the tail, far below the rounding of s ≈ 1: imprecise, never agree
    tail = [c for c in by["torch.sigmoid"].checks if c.quantity == "grad" and c.value == 0 and c.exact > 0]
    assert tail and all(c.verdict == "imprecise" for c in tail)
    # and its double backward (1 − 2s)·s·(1 − s) the same: imprecise, not a wrong second derivative
    tail2 = [c for c in by["torch.sigmoid"].checks if c.quantity == "grad2" and c.value == 0 and c.exact != 0]
    assert tail2 and all(c.verdict == "imprecise" for c in tail2)
    # xlogy: ∂/∂y at (0, 0) is 0 exactly (xlogy(0, y) = 0 for all y); torch gives NaN
    xy = [c for c in by["torch.xlogy"].checks if c.param == "y" and c.source == "autograd" and c.verdict == "mismatch"]
    assert any(by["torch.xlogy"].points[c.dtype][c.point]["x"] == 0 and c.exact == 0 and math.isnan(c.value)
               for c in xy)
    data = json.loads((rep / "torch-audit.json").read_text())
    assert data["models"][0]["checks"][0].keys() >= {"source", "dtype", "param", "quantity", "verdict", "ulps"}


def test_the_report_has_a_row_per_function_and_dtype_and_snippets_that_reproduce(
        audited: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = audited
    md = (out / "rep" / "torch-audit.md").read_text()
    for name in ("torch.sigmoid", "torch.relu", "torch.xlogy"):
        for dtype in ("float64", "float32"):
            assert f"`{name}` | {dtype} |" in md
    assert "left (0)" in md  # relu's convention at 0
    assert "python -m gradcheck_sym audit --functions sigmoid,relu,torch.xlogy" in md
    assert "issues/195681" in md  # the known sigmoid issue is linked
    # the first sigmoid snippet, run: it prints what the JSON recorded as torch's value
    run = from_json((out / "rep" / "torch-audit.json").read_text())
    sig = next(m for m in run.models if m.name == "torch.sigmoid")
    check = next(c for c in sig.checks if c.verdict in ("mismatch", "imprecise") and c.quantity == "grad"
                 and c.source == "autograd"
                 and "alone" not in c.note)
    from gradcheck_sym.audit.report import snippet

    code = snippet(sig, check).removeprefix("```python\n").removesuffix("\n```")
    assert code in md or check.dtype + ", ∂ reverse" in md
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert float(printed) == check.value


def test_cli_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gradcheck_sym.cli import main

    assert main(["audit", "--functions", "sigmoidd", "--report-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "`sigmoidd`" in err and "torch.sigmoid" in err
    assert main(["audit", "--dtypes", "float8", "--report-dir", str(tmp_path)]) == 2
    assert "float8" in capsys.readouterr().err
    assert not list(tmp_path.glob("torch-audit*"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the no-GPU error cannot be shown")
def test_device_cuda_without_a_gpu_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gradcheck_sym.cli import main

    assert main(["audit", "--device", "cuda", "--functions", "sigmoid", "--report-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--device cuda" in err and "no CUDA GPU" in err
    assert not list(tmp_path.glob("torch-audit*"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_device_cuda_writes_the_cuda_report(tmp_path: Path) -> None:
    r = _cli("--device", "cuda", "--functions", "sigmoid,exp2", "--dtypes", "float32", "--points", "4",
             "--report-dir", str(tmp_path), cwd=tmp_path)
    assert r.returncode in (0, 1), r.stderr
    md = (tmp_path / "torch-audit-cuda.md").read_text()
    assert "audited (cuda)" in md and "`torch.sigmoid` | float32 |" in md
    assert from_json((tmp_path / "torch-audit-cuda.json").read_text()).versions["device"]


def test_audit_help_lists_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    from gradcheck_sym.cli import main

    assert main(["audit", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--functions NAMES", "--dtypes LIST", "--device {cpu,cuda}", "--points N", "--seed N",
                 "--report-dir DIR", "--json PATH", "--jobs N"):
        assert flag in text


def test_same_seed_same_results_and_report() -> None:
    from gradcheck_sym.audit.report import render
    from gradcheck_sym.audit.run import audit
    from gradcheck_sym.results import to_json

    runs = [audit(["torch.relu", "torch.nn.functional.leaky_relu"], ["float32"], n_random=6, seed=s, command="c")
            for s in (1, 1, 2)]
    assert to_json(runs[0].run) == to_json(runs[1].run) != to_json(runs[2].run)
    assert render(runs[0]) == render(runs[1])


def test_the_audit_json_renders_with_verifys_report_command(
        audited: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path) -> None:
    from gradcheck_sym.cli import main

    _, out = audited
    assert main(["report", str(out / "rep" / "torch-audit.json"), "--out", str(tmp_path)]) == 0
    index = (tmp_path / "index.md").read_text()
    assert "torch.sigmoid" in index and "torch.xlogy" in index


def test_a_function_that_cannot_be_audited_is_an_error_and_the_others_go_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from gradcheck_sym.audit import run as run_module
    from gradcheck_sym.audit.report import markdown

    real = run_module.audit_function

    def broken(name: str, *args: object) -> run_module.FunctionAudit:
        if name == "torch.relu":
            raise ValueError("the audit cannot evaluate `foo(x)` exactly")
        return real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(run_module, "audit_function", broken)
    a = run_module.audit(["torch.relu", "torch.abs"], ["float32"], n_random=2, command="c")
    assert [m.status for m in a.run.models] == ["error", "pass"]
    assert "`torch.relu` could not be audited: ValueError" in (a.run.models[0].error or "")
    assert "⛔ `torch.relu`" in markdown(a, None)


def test_without_matplotlib_the_report_has_no_plot_and_says_nothing_broke(monkeypatch: pytest.MonkeyPatch) -> None:
    from gradcheck_sym.audit.report import render
    from gradcheck_sym.audit.run import audit

    a = audit(["torch.sigmoid"], ["float32"], n_random=2, command="c")
    assert "torch-audit.png" in render(a)  # a finding to plot
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    files = render(a)
    assert list(files) == ["torch-audit.md"] and "torch-audit.png" not in str(files["torch-audit.md"])
