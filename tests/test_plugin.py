"""The pytest plugin, run exactly as a user runs it: through pytester."""

from __future__ import annotations

import re
import textwrap

import pytest
import sympy  # noqa: F401 - imported once here, so pytester's inline runs share these modules
import torch  # noqa: F401

import gradcheck_sym.report  # noqa: F401 - the package's modules too: a module re-imported by one inline
import gradcheck_sym.testing  # noqa: F401   run would hold classes of another than the lazily
import gradcheck_sym.verifier  # noqa: F401  re-exported `gradcheck_sym.Model` of an earlier run

MODELS = textwrap.dedent(
    """
    import sympy as sp
    import torch
    from gradcheck_sym import Model, matrix

    x, y, w = sp.symbols("x y w", real=True)
    linear = Model(name="linear", loss=(x*w - y)**2, params=[w], inputs=[x, y], domain={"*": (-2, 2)})

    W, X = matrix("W", (2, 3)), matrix("X", 3)
    layer = Model(name="layer", loss=sum(sp.tanh(e)**2 for e in W*X), params=[W], inputs=[X],
                  domain={"*": (-1, 1)})

    class BuggyMatmul(torch.autograd.Function):
        @staticmethod
        def forward(ctx, W, X):
            ctx.save_for_backward(W, X)
            return W @ X

        @staticmethod
        def backward(ctx, g):
            W, X = ctx.saved_tensors
            gW = (g @ X.T).clone()
            gW[1, 2] *= -1          # the bug: one entry's sign
            return gW, W.T @ g

    def good_layer(W, X):
        return (torch.tanh(W @ X) ** 2).sum()

    def buggy_layer(W, X):
        return (torch.tanh(BuggyMatmul.apply(W, X)) ** 2).sum()
    """
)


@pytest.fixture
def project(pytester):
    pytester.makepyfile(models=MODELS)
    return pytester


def test_passing_model_and_summary(project):
    project.makepyfile(test_it="""
        from models import linear, layer, good_layer

        def test_linear(gradcheck):
            result = gradcheck(linear, grad_impl=lambda w, x, y: 2*x*(x*w - y))
            assert result.status == "pass"

        def test_layer(gradcheck):
            gradcheck(layer, impl=good_layer)
    """)
    r = project.runpytest()
    r.assert_outcomes(passed=2)
    r.stdout.fnmatch_lines(["*gradcheck_sym*", "2 gradient checks * 0 failed, 2 passed",
                            "worst error/tolerance in float64: *", "worst error/tolerance in float32: *"])


def test_wrong_custom_backward_fails_with_the_entry_named(project):
    project.makepyfile(test_it="""
        from models import layer, buggy_layer

        def test_layer(gradcheck):
            gradcheck(layer, impl=buggy_layer, samples=3)
    """)
    r = project.runpytest()
    r.assert_outcomes(failed=1)
    out = r.stdout.str()
    assert "model `layer`" in out and "∂loss/∂W[1,2]" in out and "impl" in out
    assert "wrong: finite differences agree with the exact value" in out
    assert re.search(r"point \d \(float(32|64)\): \{", out)
    assert "seed 0" in out and "verify(layer, impl=buggy_layer, points=[" in out
    other_entries = re.findall(r"∂loss/∂W\[(\d),(\d)\]", out)
    assert set(other_entries) == {("1", "2")}
    assert "tensor(" not in out  # no Jacobian dumps


def test_correct_float32_model_passes(project):
    project.makepyfile(test_it="""
        import pytest
        from models import layer, good_layer

        @pytest.mark.gradcheck(dtypes="float32", samples=20)
        def test_layer_float32(gradcheck):
            result = gradcheck(layer, impl=good_layer)
            assert {c.dtype for c in result.checks} == {"float32"}
            assert len(result.points["float32"]) == 20
    """)
    project.runpytest().assert_outcomes(passed=1)


def test_marker_errors_name_the_argument(project):
    project.makepyfile(test_it="""
        import pytest
        from models import linear

        @pytest.mark.gradcheck(sample=3, colour="red")
        def test_typo(gradcheck):
            gradcheck(linear)

        @pytest.mark.gradcheck(3)
        def test_positional(gradcheck):
            gradcheck(linear)

        @pytest.mark.gradcheck(dtypes="float8")
        def test_dtype(gradcheck):
            gradcheck(linear)
    """)
    r = project.runpytest()
    r.assert_outcomes(errors=3)
    r.stdout.fnmatch_lines(["*unknown arguments `colour`, `sample`; it takes samples, dtypes, seed, tolerance*",
                            "*keyword arguments only*", "*dtypes=...*float64, float32*"])


def test_marker_and_ini_options_apply(project):
    project.makeini("[pytest]\ngradcheck_samples = 2\ngradcheck_seed = 4\n")
    project.makepyfile(test_it="""
        import pytest
        from models import linear

        def test_ini(gradcheck):
            assert len(gradcheck(linear).points["float64"]) == 2

        @pytest.mark.gradcheck(samples=3, tolerance=2.0)
        def test_marker(gradcheck):
            r = gradcheck(linear)
            assert len(r.points["float64"]) == 3

        def test_call_wins(gradcheck):
            assert len(gradcheck(linear, samples=1).points["float64"]) == 1
    """)
    project.runpytest().assert_outcomes(passed=3)
    r = project.runpytest("--gradcheck-samples", "x")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    assert "--gradcheck-samples: expected a whole number, got 'x'" in r.stderr.str()


def test_models_in_a_test_file_become_items(project):
    project.makepyfile(test_models="""
        from models import linear, layer, buggy_layer

        gradcheck_models = [linear, layer.with_implementations(impl=buggy_layer)]
    """)
    r = project.runpytest("-v")
    r.assert_outcomes(passed=1, failed=1)
    r.stdout.fnmatch_lines(["*::gradcheck_models?linear? PASSED*", "*::gradcheck_models?layer? FAILED*",
                            "*∂loss/∂W?1,2?*"])


def test_report_dir_writes_the_cli_report(project):
    project.makepyfile(test_it="""
        from models import linear, layer, good_layer

        def test_a(gradcheck):
            gradcheck(linear)

        def test_b(gradcheck):
            gradcheck(layer, impl=good_layer)
    """)
    r = project.runpytest("--gradcheck-report-dir", "rep")
    r.assert_outcomes(passed=2)
    rep = project.path / "rep"
    assert {"index.md", "results.json", "linear.md", "layer.md"} <= {p.name for p in rep.iterdir()}
    index = (rep / "index.md").read_text()
    assert "[linear](linear.md)" in index and "[layer](layer.md)" in index
    assert "test_it.py::test_b" in (rep / "layer.md").read_text()


def test_xdist_same_verdicts_one_merged_report(project):
    project.makepyfile(test_it="""
        import pytest
        from models import linear, layer, good_layer, buggy_layer

        @pytest.mark.parametrize("k", range(4))
        def test_linear(gradcheck, k):
            gradcheck(linear, seed=k)

        def test_good(gradcheck):
            gradcheck(layer, impl=good_layer)

        def test_buggy(gradcheck):
            gradcheck(layer, impl=buggy_layer)
    """)
    serial = project.runpytest("--gradcheck-report-dir", "serial")  # in this process; xdist needs its own
    # no:hypothesispytest: Hypothesis's plugin imports all of Hypothesis (over a second of CPU) in
    # its terminal summary, and this session does not use it
    parallel = project.runpytest_subprocess("-n", "2", "-p", "no:hypothesispytest", "--gradcheck-report-dir", "parallel")
    serial.assert_outcomes(passed=5, failed=1)
    parallel.assert_outcomes(passed=5, failed=1)
    parallel.stdout.fnmatch_lines(["*6 gradient checks * 1 failed, 5 passed*"])
    a, b = (project.path / d / "index.md" for d in ("serial", "parallel"))
    rows = lambda p: [line for line in p.read_text().splitlines() if line.startswith("| [")]  # noqa: E731
    assert rows(a) == rows(b) and len(rows(b)) == 6


def test_hypothesis_shrinks_to_the_minimal_failing_point(project):
    project.makepyfile(test_it="""
        import torch
        from hypothesis import given, settings
        from gradcheck_sym.strategies import points
        from gradcheck_sym.testing import assert_gradients
        from models import linear

        def bad_when_large(w, x, y):
            g = 2 * x * (x * w - y)
            return g * 1.01 if w >= 3 else g      # wrong from w = 3 on

        wide = linear.__class__(name="wide", loss=linear.loss, params=linear.params[0].symbols,
                                inputs=[s for v in linear.inputs for s in v.symbols], domain={"*": (-10, 10)})

        @settings(max_examples=200, deadline=None, database=None)
        @given(points(wide))
        def test_grad(p):
            assert_gradients(wide, grad_impl=bad_when_large, points=[p], samples=0, dtypes=["float64"])
    """)
    r = project.runpytest("-p", "no:randomly", "--hypothesis-seed=1")
    r.assert_outcomes(failed=1)
    out = r.stdout.str()
    # the simplest point where the gradient is wrong: w = 3 (first wrong), x = 1 (x = 0 hides it)
    assert re.search(r"(Falsifying example|Failing test case): test_grad\(\s*(E\s+)?p=\{'w': 3\.0, 'x': 1\.0, 'y': 0\.0\}", out), out[-3000:]
    assert 'point 0 (float64): {"w": 3.0, "x": 1.0, "y": 0.0}' in out and "grad_impl float64 ∂loss/∂w" in out


def test_a_session_without_the_plugin_in_use_imports_nothing_heavy(pytester):
    pytester.makepyfile(test_light="""
        import sys

        def test_nothing_heavy_loaded():
            assert "gradcheck_sym.plugin" in sys.modules
            assert "torch" not in sys.modules
            assert "sympy" not in sys.modules
    """)
    pytester.runpytest_subprocess("-p", "no:hypothesispytest").assert_outcomes(passed=1)


def test_help_lists_every_option_with_its_default(pytester):
    text = " ".join(pytester.runpytest("--help").stdout.str().split())
    assert "gradcheck_sym: exact gradient checks:" in text
    for flag, default in (("--gradcheck-samples=N", "default: 5"), ("--gradcheck-seed=N", "default: 0"),
                          ("--gradcheck-dtypes=LIST", "default: float64,float32"),
                          ("--gradcheck-report-dir=DIR", "default: none")):
        assert flag in text
        after = text[text.index(flag):][:300]
        assert default in after, after
    assert "gradcheck_samples" in text and "gradcheck(samples=N" not in text  # markers list is --markers


def _snippet(out: str) -> str:
    """The reproducer in a failure message, without pytest's `E   ` prefixes."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "reproduce the first one:" in line) + 1
    code = []
    for line in lines[start:]:
        line = re.sub(r"^E {0,7}", "", line) if line.startswith("E") else line
        if line.startswith(("tests", "test_", "___", "===", "---")) or "Error" in line[:20]:
            break
        code.append(line)
        if line.startswith("print(*(c for c in result.failed"):
            break
    return "\n".join(code)


SNIPPET_CASES = {
    "fixture with a lambda": """
        import torch
        from models import layer, BuggyMatmul

        def test_it(gradcheck):
            gradcheck(layer, impl=lambda W, X: (torch.tanh(BuggyMatmul.apply(W, X)) ** 2).sum(), samples=2)
    """,
    "fixture with a function": """
        from models import layer as my_layer, buggy_layer

        def test_it(gradcheck):
            gradcheck(my_layer, impl=buggy_layer, samples=2, dtypes="float32")
    """,
    "gradcheck_models": """
        from models import linear, layer, buggy_layer

        gradcheck_models = [linear, layer.with_implementations(impl=buggy_layer)]
    """,
}

PASTE = """
import sys, traceback
for n, path in enumerate(sys.argv[1:]):
    print(f"--- snippet {n}", flush=True)
    print(f"--- snippet {n}", file=sys.stderr, flush=True)
    try:
        exec(compile(open(path).read(), path, "exec"), {"__name__": "__main__"})  # a fresh shell's namespace
    except BaseException:
        traceback.print_exc()
        print("FAILED", flush=True)
"""


def test_failure_snippet_reproduces_the_failure_when_pasted(project):
    """The reproducer of each kind of failing test, pasted into a Python shell of the project (one
    process runs the three, each in a namespace of its own, so each needs its own imports)."""
    import subprocess
    import sys

    paths = []
    for n, (how, test) in enumerate(SNIPPET_CASES.items()):
        project.makepyfile(**{f"test_{n}": test})
        r = project.runpytest(f"test_{n}.py")
        r.assert_outcomes(passed=1 if how == "gradcheck_models" else 0, failed=1)
        code = _snippet(r.stdout.str())
        assert "verify(" in code and ("impl=" in code or how == "gradcheck_models"), code  # the item's model has it
        (project.path / f"snippet_{n}.py").write_text(code)
        paths.append(f"snippet_{n}.py")
    run = subprocess.run([sys.executable, "-c", PASTE, *paths], cwd=project.path, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    outs, errs = run.stdout.split("--- snippet ")[1:], run.stderr.split("--- snippet ")[1:]
    assert len(outs) == len(errs) == len(SNIPPET_CASES), run.stdout + run.stderr
    for how, out, err in zip(SNIPPET_CASES, outs, errs):
        assert "FAILED" not in out, (how, err)
        assert "source='impl'" in out and "verdict='mismatch'" in out and "entry" not in err, (how, out, err)


def test_no_report_unless_asked(project):
    project.makepyfile(test_it="""
        from models import linear

        def test_a(gradcheck):
            gradcheck(linear, samples=1)
    """)
    project.runpytest().assert_outcomes(passed=1)
    assert not (project.path / "reports").exists()
    assert sorted(p.name for p in project.path.iterdir() if not p.name.startswith(".")) == [
        "models.py", "test_it.py"] or not any(p.suffix == ".md" for p in project.path.rglob("*.md"))
    project.makeini("[pytest]\ngradcheck_report_dir = viaini\n")
    project.runpytest().assert_outcomes(passed=1)
    assert (project.path / "viaini" / "linear.md").is_file()


def test_help_says_one_thing_about_the_report_dir(pytester):
    text = " ".join(pytester.runpytest("--help").stdout.str().split())
    option = text[text.index("--gradcheck-report-dir=DIR"):][:300]
    ini = text[text.index("gradcheck_report_dir ("):][:300]
    assert "default: none" in option and "default: none" in ini, (option, ini)
    assert "default: reports" not in text


def test_one_model_checked_by_several_tests_is_named_by_test_id(project):
    project.makepyfile(test_it="""
        import pytest
        from models import linear

        @pytest.mark.parametrize("k", range(2))
        def test_linear(gradcheck, k):
            gradcheck(linear, seed=k, samples=1)
    """)
    project.runpytest("--gradcheck-report-dir", "rep").assert_outcomes(passed=2)
    index = (project.path / "rep" / "index.md").read_text()
    # the names as Markdown text: brackets escaped so they are not read as links
    assert r"linear (test\_it.py::test\_linear\[0\])" in index and r"linear (test\_it.py::test\_linear\[1\])" in index
    assert "linear-2" not in index
    for target in re.findall(r"\]\(([^)]+)\)", index):
        assert (project.path / "rep" / target).is_file()


def test_unaffordable_model_in_a_test_fails_at_once_with_the_reason(project):
    project.makepyfile(test_it="""
        import sympy as sp
        from gradcheck_sym import Model

        w, x = sp.symbols("w x", real=True)
        huge = Model(name="huge", loss=((w + 1)**1000000)**1000000 * x, params=[w], inputs=[x], domain={"*": (0, 1)})

        def test_huge(gradcheck):
            gradcheck(huge)
    """)
    r = project.runpytest()
    r.assert_outcomes(failed=1)
    assert "has the exponent 1000000000000" in r.stdout.str()
