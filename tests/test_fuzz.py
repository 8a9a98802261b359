"""Fuzzing with Hypothesis, in bounded time: random models through the whole pipeline, random
text into the expression parser, random garbage for options and model files."""

from __future__ import annotations

import builtins
import contextlib
import sys
from pathlib import Path
from unittest import mock

import pytest
import sympy as sp
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gradcheck_sym import Model, ModelError, verify
from gradcheck_sym.cli import main
from gradcheck_sym.compare import VERDICTS
from gradcheck_sym.functions import FUNCTIONS
from sympy.codegen.cfunctions import expm1, log1p
from gradcheck_sym.special import normalized_sinc, xlog1py, xlogy
from gradcheck_sym.text import TextError, parse_expression

w, v, x = sp.symbols("w v x", real=True)
FAST = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

# Each function applied where it is smooth and finite on the whole domain, so that exact,
# float64 autograd and finite differences must agree at every random point.
SMOOTH = {
    "exp": lambda u: sp.exp(u / 4), "log": lambda u: sp.log(1 + u**2), "sin": sp.sin, "cos": sp.cos,
    "tan": lambda u: sp.tan(sp.atan(u) / 2), "asin": lambda u: sp.asin(sp.tanh(u) / 2),
    "acos": lambda u: sp.acos(sp.tanh(u) / 2), "atan": sp.atan, "sinh": lambda u: sp.sinh(u / 2),
    "cosh": lambda u: sp.cosh(u / 2), "tanh": sp.tanh, "asinh": sp.asinh, "acosh": lambda u: sp.acosh(2 + u**2),
    "atanh": lambda u: sp.atanh(sp.tanh(u) / 2), "erf": sp.erf, "erfc": sp.erfc,
    "atan2": lambda u: sp.atan2(u, 2 + u**2), "Abs": sp.Abs, "sign": lambda u: sp.sign(u) * u,
    "Max": lambda u: sp.Max(u, w * v), "Min": lambda u: sp.Min(u, -(w**2)),
    "Heaviside": lambda u: sp.Heaviside(u) * u, "sqrt": lambda u: sp.sqrt(1 + u**2),
    "log1p": lambda u: log1p(u**2), "expm1": lambda u: expm1(u / 4),
    "loggamma": lambda u: sp.loggamma(1 + u**2), "polygamma": lambda u: sp.polygamma(0, 1 + u**2),
    "erfinv": lambda u: sp.erfinv(sp.tanh(u) / 2), "softplus": lambda u: sp.log(1 + sp.exp(u)),
    "xlogy": lambda u: xlogy(u, 1 + u**2), "xlog1py": lambda u: xlog1py(u, u**2), "sinc": sp.sinc,
    "normalized_sinc": normalized_sinc, "floor": lambda u: sp.floor(u) * u, "ceiling": lambda u: sp.ceiling(u) * u,
    "frac": sp.frac,
}
assert {spec.name for spec in FUNCTIONS.values()} <= set(SMOOTH)  # every table row is fuzzed


def _trees(functions):
    leaf = st.sampled_from([w, v, x, sp.Integer(2), sp.Rational(-1, 3)])
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.tuples(st.sampled_from(sorted(functions)), inner).map(lambda t: functions[t[0]](t[1])),
            st.tuples(inner, inner).map(lambda t: t[0] + t[1]),
            st.tuples(inner, inner).map(lambda t: t[0] * t[1]),
        ),
        max_leaves=6,
    )


@FAST
@given(_trees(SMOOTH), st.integers(0, 2**16))
def test_random_smooth_models_agree_everywhere(expr, seed):
    loss = expr * (1 + w**2) + v * w  # every weight occurs
    m = Model(name="fuzz", loss=loss, params=[w, v], inputs=[x], domain={"*": (-2, 2)})
    r = verify(m, samples=3, seed=seed, dtypes=["float64"])
    assert r.status != "error", r.error
    bad = [c for c in r.checks if c.source == "autograd" and c.verdict == "mismatch"]
    assert not bad, (loss, bad[:2])


RAW = {spec.name: f for f, spec in FUNCTIONS.items()
       if f not in (sp.atan2, sp.Max, sp.Min, sp.Heaviside, sp.polygamma, xlogy, xlog1py)}
RAW.update({"xlogy": lambda u: xlogy(u, w), "xlog1py": lambda u: xlog1py(w, u)})
RAW.update({"digamma": lambda u: sp.polygamma(0, u), "sqrt": sp.sqrt, "inv": lambda u: 1 / u, "Max": lambda u: sp.Max(u, 0), "Heaviside": sp.Heaviside})


@FAST
@given(_trees(RAW), st.lists(st.sampled_from([-2, -1, -0.5, 0, 0.5, 1, 2]), min_size=3, max_size=3))
def test_random_models_at_awkward_points_are_classified_not_crashed(expr, values):
    loss = expr + v * w
    point = dict(zip((w, v, x), values))
    try:
        m = Model(name="raw", loss=loss, params=[w, v], inputs=[x], points=[point])
    except ModelError as exc:  # constants like log(-3) make the loss complex: refused on declaration
        assert "non-real constant" in str(exc)
        assume(False)
    r = verify(m, samples=0, dtypes=["float64"])
    assert r.status != "error", (loss, r.error)
    assert all(c.verdict in VERDICTS for c in r.checks)
    for c in r.checks:
        if c.verdict in ("agree", "mismatch"):
            assert c.exact is not None and c.exact == c.exact  # a finite exact value behind every verdict


DANGEROUS = ["__import__('os').system('touch PWNED')", "().__class__.__bases__[0]", "lambda: 0", "open('x')",
             "exec('1')", "eval('1')", "[x for x in w]", "w.__dict__", "9**9**9**9", "x if w else v", "f'{w}'",
             "globals()", "getattr(w, 'x')", "(w := 1)", "sin(x=1)", "exp(*w)", "1j", "'a'", "None", "..."]


def _importing() -> bool:
    """Whether the caller runs inside an import: a module's code (and the dataclasses and named
    tuples it defines) is run by exec/eval, which is not the parser evaluating text."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def no_eval_or_exec():
    """eval and exec raise while the block runs, unless a module is being imported (a module
    first used here, by SymPy or by Hypothesis itself, is imported with exec; which ones are new
    depends on the tests that ran before in the process, so counting those made this test fail
    now and then)."""
    def trap(real):
        def call(*args, **kwargs):
            if _importing():
                return real(*args, **kwargs)
            raise AssertionError("the parser called eval/exec")
        return call

    with mock.patch.object(builtins, "eval", trap(builtins.eval)), mock.patch.object(builtins, "exec", trap(builtins.exec)):
        yield


# deadline: per example, with room for a busy machine (a parse takes milliseconds)
@settings(max_examples=300, deadline=10_000, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.sampled_from(DANGEROUS), st.text(max_size=60),
                 st.lists(st.sampled_from(["w", "x", "2", "*", "**", "+", "(", ")", "exp(", "9", ".", "_", "[", "]",
                                           "lambda", ":", ",", "'", "__import__", "os"]), max_size=25).map("".join)))
def test_random_text_never_runs_code(monkeypatch, tmp_path, text):
    monkeypatch.chdir(tmp_path)
    try:
        with no_eval_or_exec():
            expr = parse_expression(text)
    except TextError as exc:
        assert str(exc).startswith("expression: ") and "\n" not in str(exc)
    else:
        assert isinstance(expr, sp.Expr)
    assert not Path("PWNED").exists()


def test_the_trap_catches_eval_and_exec_but_not_imports():
    with no_eval_or_exec():
        with pytest.raises(AssertionError, match="called eval/exec"):
            eval("1")
        with pytest.raises(AssertionError, match="called eval/exec"):
            exec("x = 1")
        sys.modules.pop("json.tool", None)
        import json.tool  # noqa: F401 - a module's code, run by exec inside the import system


GOOD_VALUES = {"--samples": "3", "--seed": "1", "--dtypes": "float64", "--timeout": "10"}


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(sorted(GOOD_VALUES)), st.text(max_size=12))
def test_random_option_values_exit_2_with_one_line(capsys, flag, value):
    from gradcheck_sym.options import SHARED

    opt = next(o for o in SHARED if o.flag == flag)
    try:
        opt.parse(value)
        assume(False)  # a valid value would start a real run
    except ValueError:
        pass
    rc = main(["verify", flag, value])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert flag in err and err.strip().splitlines()[-1].startswith("python -m gradcheck_sym verify: error:")


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.sampled_from([".py", ".toml"]), st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_random_model_files_exit_2_with_one_line(capsys, tmp_path_factory, suffix, data):
    path = tmp_path_factory.mktemp("garbage") / f"models{suffix}"
    path.write_bytes(data)
    rc = main(["list", str(path)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert rc == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: `") and str(path) in lines[0]


@pytest.mark.parametrize(
    "toml",
    [
        'model = 3',
        '[[model]]\nname = "m"\nloss = "w*x"\n',
        '[[model]]\nname = "m"\nloss = "w*x"\nparams = ["q"]\n',
        '[[model]]\nname = "m"\nloss = "__import__(\'os\')"\nparams = ["w"]\n',
        '[[model]]\nname = "m"\nloss = "w*x"\nparams = ["w"]\ncolour = 1\n',
        '[[model]]\nname = "m"\nloss = "w*x"\nparams = ["w"]\ndomain = { w = [1, 0] }\n',
    ],
)
def test_bad_toml_models(capsys, tmp_path, toml):
    (tmp_path / "m.toml").write_text(toml)
    assert main(["list", str(tmp_path / "m.toml")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_good_toml_models_are_checked(capsys, tmp_path):
    (tmp_path / "m.toml").write_text(
        '[[model]]\nname = "linear"\nloss = "(w*x - y)**2"\nparams = ["w"]\n'
        'domain = { w = [-2, 2], "*" = [-4, 4] }\npoints = [{ w = 1, x = 1, y = 2 }]\n'
    )
    assert main(["verify", str(tmp_path / "m.toml"), "--no-report", "--quiet", "--samples", "2"]) == 0
    assert "linear" in capsys.readouterr().out
