"""bfloat16 and float16 (issue 10 item 8): the same tolerance machinery with their unit roundoff,
range and smallest normal; no finite differences there (said on the model, not noise); a value
beyond float16's range is not a wrong gradient; through the public API and the CLI."""

from __future__ import annotations

import json
import math
import textwrap

import pytest
import sympy as sp
import torch

from gradcheck_sym import Model, verify
from gradcheck_sym.dtypes import BFLOAT16, DTYPES, FLOAT16
from gradcheck_sym.options import DTYPES_OPTION

w, x = sp.symbols("w x", real=True)
LOW = ("bfloat16", "float16")


def _scaled(f, factor):
    """``f`` with its gradient (not its value) multiplied by ``factor``: a subtly wrong backward."""

    def impl(w, x):
        y = f(w, x)
        return y + (factor - 1) * (y - y.detach())

    return impl


def _model(name, factor=1.0, loss=w**2 * x, f=lambda w, x: w**2 * x):
    return Model(name=name, loss=loss, params=[w], inputs=[x], domain={w: (-2, 2), x: (0.5, 2)}, impl=_scaled(f, factor))


def test_each_low_precision_type_is_described_once():
    for d in (BFLOAT16, FLOAT16):
        info = torch.finfo(d.torch)
        assert (d.max, d.smallest_normal, 2 * d.unit_roundoff) == (info.max, info.tiny, info.eps)
        assert not d.finite_differences
    assert BFLOAT16.round(1 + 2.0**-9) == 1.0 and FLOAT16.round(1 + 3 * 2.0**-12) == 1 + 2.0**-10
    assert FLOAT16.round(70000.0) == math.inf and BFLOAT16.round(70000.0) == 70144.0
    assert DTYPES_OPTION.parse("bfloat16,float16") == LOW
    with pytest.raises(ValueError, match="float64, float32, bfloat16, float16"):
        DTYPES_OPTION.parse("float8")


def test_points_are_rounded_to_each_type_and_checked_exactly_there():
    m = Model(name="pts", loss=w**2 * x, params=[w], inputs=[x], points=[{w: sp.Rational(1, 3), x: 1}])
    r = verify(m, samples=0, dtypes=["float64", *LOW])
    seen = {d: r.points[d][0]["w"] for d in ("float64", *LOW)}
    assert seen["bfloat16"] == BFLOAT16.round(1 / 3) != seen["float16"] == FLOAT16.round(1 / 3) != seen["float64"]
    exact = {c.dtype: c.exact for c in r.checks if c.source == "autograd" and c.quantity == "grad"}
    assert exact["bfloat16"] == 2 * seen["bfloat16"] and exact["float16"] == 2 * seen["float16"]


@pytest.mark.parametrize("loss, f", [(w**2 * x, lambda w, x: w**2 * x), (sp.exp(w) * x, lambda w, x: torch.exp(w) * x),
                                     (sp.tanh(w * x), lambda w, x: torch.tanh(w * x))], ids=["square", "exp", "tanh"])
def test_right_impl_passes_and_a_factor_1_1_is_caught_in_each_low_type(loss, f):
    right = verify(_model("right", 1.0, loss, f), samples=10, seed=3, dtypes=list(LOW))
    assert right.status == "pass"
    for d in LOW:
        verdicts = [c.verdict for c in right.checks if c.dtype == d and c.source != "fd"]
        assert set(verdicts) <= {"agree", "imprecise", "inconclusive"}  # never a mismatch for a right one
        assert verdicts.count("agree") >= len(verdicts) // 2
        assert not [c for c in right.checks if c.dtype == d and c.source == "fd"]  # no noise from differences
    for d in LOW:  # each type on its own: a 10% wrong backward fails there
        wrong = verify(_model("wrong", 1.1, loss, f), samples=10, seed=3, dtypes=[d])
        assert wrong.status == "fail", d
        bad = [c for c in wrong.checks if c.verdict == "mismatch"]
        assert bad and all(c.source == "impl" and c.quantity == "grad" for c in bad)
        assert all(c.note for c in bad)  # attributed without finite differences ("no finite differences to confirm")


def test_the_model_says_finite_differences_are_not_run_there():
    r = verify(_model("notes"), samples=2, seed=0, dtypes=["float32", "bfloat16"])
    assert [n for n in r.notes if "not run in bfloat16" in n] and not [n for n in r.notes if "float32" in n]
    assert {c.dtype for c in r.checks if c.source == "fd"} == {"float32"}


def test_float16_overflow_is_not_computable_not_wrong():
    m = Model(name="big", loss=sp.exp(w * x), params=[w], inputs=[x], points=[{w: 12, x: 1}, {w: 2, x: 1}],
              impl=lambda w, x: torch.exp(w * x))
    r = verify(m, samples=0, dtypes=["float16"])
    assert r.status == "pass"
    over = [c for c in r.checks if c.exact is not None and c.exact > 65504]
    assert len(over) == 4  # loss and gradient of autograd and impl: exp(12) = 162755 > float16's largest
    assert all(c.verdict == "inconclusive" and c.attribution == "not_computable" for c in over)
    assert all(c.verdict == "agree" for c in r.checks if c.exact is not None and c.exact < 100)


def test_cli_checks_bfloat16_and_float16(run_cli_process, tmp_path):
    (tmp_path / "m.py").write_text(textwrap.dedent("""
        import sympy as sp, torch
        from gradcheck_sym import Model
        w, x = sp.symbols("w x", real=True)

        def scaled(factor):
            def impl(w, x):
                y = w**2 * x
                return y + (factor - 1) * (y - y.detach())
            return impl

        right = Model(name="right-square", loss=w**2 * x, params=[w], inputs=[x], domain={w: (-2, 2), x: (0.5, 2)},
                      impl=scaled(1.0))
        wrong = Model(name="wrong-square", loss=w**2 * x, params=[w], inputs=[x], domain={w: (-2, 2), x: (0.5, 2)},
                      impl=scaled(1.1))
    """))
    r = run_cli_process("verify", "m.py", "--dtypes", "bfloat16,float16", "--samples", "6", "--report-dir", "rep",
                        "--json", "r.json", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    results = {m["name"]: m for m in json.loads((tmp_path / "r.json").read_text())["models"]}
    assert results["right-square"]["status"] == "pass" and results["wrong-square"]["status"] == "fail"
    for name in results:
        checks = results[name]["checks"]
        assert {c["dtype"] for c in checks} == set(LOW) and not [c for c in checks if c["source"] == "fd"]
    bad = [c for c in results["wrong-square"]["checks"] if c["verdict"] == "mismatch"]
    assert {c["dtype"] for c in bad} == set(LOW) and {c["source"] for c in bad} == {"impl"}
    page = (tmp_path / "rep" / "wrong-square.md").read_text()
    assert "Finite differences are not run in bfloat16" in page and "float16" in page
    bad_option = run_cli_process("verify", "m.py", "--dtypes", "float8", cwd=tmp_path)
    assert bad_option.returncode == 2 and "bfloat16" in bad_option.stderr


def test_plugin_checks_bfloat16_from_the_marker_and_the_option(pytester):
    pytester.makepyfile(test_it="""
        import pytest, sympy as sp, torch
        from gradcheck_sym import Model
        w, x = sp.symbols("w x", real=True)
        model = Model(name="sq", loss=w**2 * x, params=[w], inputs=[x], domain={w: (-2, 2), x: (0.5, 2)})

        def wrong(w, x):
            y = w**2 * x
            return y + 0.1 * (y - y.detach())

        @pytest.mark.gradcheck(dtypes="bfloat16")
        def test_right(gradcheck):
            result = gradcheck(model, impl=lambda w, x: w**2 * x)
            assert {c.dtype for c in result.checks} == {"bfloat16"}

        def test_wrong(gradcheck):
            gradcheck(model, impl=wrong)
    """)
    r = pytester.runpytest("-p", "no:xdist", "--gradcheck-dtypes", "float16,bfloat16")
    r.assert_outcomes(passed=1, failed=1)
    r.stdout.fnmatch_lines(["*impl * float16: 0 agree, 5 mismatch*", "*impl * bfloat16: 0 agree, 5 mismatch*",
                            "worst error/tolerance in bfloat16: *", "worst error/tolerance in float16: *"])


def test_an_operator_is_checked_in_bfloat16_without_finite_differences():
    a, c = sp.symbols("a c", real=True)

    def op(a, c, factor=1.0):
        y = torch.stack([a * c, a + torch.sin(c)])
        return y + (factor - 1) * (y - y.detach())

    def model(factor):
        return Model(name="op", outputs=sp.Matrix([a * c, a + sp.sin(c)]), params=[a, c], domain={"*": (0.5, 2)},
                     impl=lambda a, c: op(a, c, factor))

    right = verify(model(1.0), samples=4, dtypes=["bfloat16"])
    assert right.status == "pass" and [n for n in right.notes if "not run in bfloat16" in n]
    assert {c.dtype for c in right.checks} == {"bfloat16"} and not [c for c in right.checks if c.source == "fd"]
    wrong = verify(model(1.25), samples=4, dtypes=["bfloat16"])
    assert wrong.status == "fail" and {c.source for c in wrong.failed} == {"impl"}
