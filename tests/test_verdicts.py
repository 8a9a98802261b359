"""The verdict bands (README "The verdict"): agree, imprecise, inconclusive, mismatch.

Every case is far from its edge (millions of ulps, or a tolerance many times the value), so the
verdicts do not depend on a CPU's last bits.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest
import sympy as sp
import torch

from corpus import TAIL_POINTS, TORCH_FUNCTIONS, torch_function_model
from gradcheck_sym import Model, verify
from gradcheck_sym.results import from_json

x, y, w, z = sp.symbols("x y w z", real=True)


def _impl(result, dtype=None):  # type: ignore[no-untyped-def]
    return [c for c in result.checks if c.source == "impl" and c.quantity == "grad" and dtype in (None, c.dtype)]


def test_mul_charges_its_roundings_at_the_result():
    # y·erfc(wx) at wx = 20: the gradient's factors are 2/√π·x·y (about 5) and e^(−400); charged at
    # the partial product the tolerance was 1e23 times the value, so a dropped sign agreed; now it
    # is what rounding (wx)² = 400 does to e^(−400): about 3·400 u relative
    from gradcheck_sym.errorbound import error_scales
    from gradcheck_sym.symbolic import gradient_program

    gp = gradient_program(y * sp.erfc(w * x), (w, x, y), (w,))
    exact = -2 / math.sqrt(math.pi) * 5 * math.exp(-400)
    assert error_scales(gp, [4.0, 5.0, 1.0]).worst[0, 1] < 1e4 * abs(exact)


@pytest.mark.parametrize("name", ["torch.sigmoid", "torch.tanh", "torch.nn.functional.silu",
                                  "torch.nn.functional.gelu", "torch.nn.functional.logsigmoid"])
def test_same_impl_equivalent_declarations_same_verdicts(name):
    verdicts = []
    for i in range(len(TORCH_FUNCTIONS[name][1])):
        r = verify(torch_function_model(name, i), samples=0)
        assert r.status == "pass", r.failed[:2]
        verdicts.append([(c.dtype, c.point, c.verdict) for c in _impl(r)])
    assert len(verdicts[0]) == 2 * len(TAIL_POINTS)
    assert all(v == verdicts[0] for v in verdicts), verdicts


def test_a_backward_formula_in_terms_of_the_output_is_imprecise_not_wrong():
    # torch.tanh's backward 1 − y² returns 0 at x = −30 where the derivative is 3.5e-26
    m = Model(name="tanh", loss=sp.tanh(x), params=[x], points=[{x: -30}], impl=torch.tanh)
    r = verify(m, samples=0, dtypes=["float64"])
    (c,) = _impl(r)
    assert (c.value, c.verdict, c.attribution) == (0.0, "imprecise", "imprecise")
    assert "rounding" in c.note and "all its digits" in c.note
    assert r.status == "pass" and r.n_imprecise >= 1
    assert verify(m, samples=0, dtypes=["float64"], strict=True).status == "fail"


def test_an_error_as_large_as_the_quantities_is_never_imprecise():
    # torch.sigmoid's derivative taken where tanh's is meant: wrong by the size of the values
    m = Model(name="tanh", loss=sp.tanh(x), params=[x], points=[{x: p} for p in (-8, -1, 0.5, 8)],
              impl=torch.sigmoid)
    r = verify(m, samples=0)
    assert {c.verdict for c in _impl(r)} == {"mismatch"}
    assert r.status == "fail"


def test_the_declared_formula_not_computable_is_not_torch_being_wrong():
    # (e^(2x) − 1)/(e^(2x) + 1) at x = 30: its gradient squares e^60, which overflows float32
    m = Model(name="tanh-exp", loss=(sp.exp(2 * x) - 1) / (sp.exp(2 * x) + 1), params=[x], points=[{x: 30}])
    r = verify(m, samples=0, dtypes=["float32"])
    (c,) = [c for c in r.checks if c.source == "autograd" and c.quantity == "grad"]
    assert abs(c.value - c.exact) > 1  # torch evaluated the declared formula: inf/inf, or worse
    assert (c.verdict, c.attribution) == ("inconclusive", "not_computable")
    assert "not computable" in c.note
    assert r.status == "pass"


def test_ill_conditioned_declaration_is_said_inconclusive():
    m = Model(name="one-minus-cos", loss=(1 - sp.cos(z)) / z**2, params=[z], points=[{z: sp.Rational(1, 10**5)}])
    r = verify(m, samples=0, dtypes=["float64"])
    (c,) = [c for c in r.checks if c.source == "autograd" and c.quantity == "grad"]
    assert c.verdict == "inconclusive" and "INCONCLUSIVE" in c.note
    assert r.status == "pass" and r.n_inconclusive == 1


def test_a_constant_wrong_in_its_eleventh_digit_is_found_in_float64():
    m = Model(name="gelu-constant", loss=x * (1 + sp.erf(x / sp.sqrt(2))) / 2, params=[x],
              points=[{x: p} for p in (-3, -1, -0.25, 0.5, 2, 3)],
              impl=lambda x: x * (1 + torch.erf(x * 0.70710678119)) / 2)
    r = verify(m, samples=0, dtypes=["float64"])
    assert [c.verdict for c in _impl(r)] == ["mismatch"] * 6


def test_planted_relative_errors_are_mismatches_in_a_network():
    # an impl whose loss is the model's and whose gradient is (1 + r) times it: r = 1e-6 in
    # float64, 1e-3 in float32 (the calibration targets; reports/tolerance.md measures them)
    from gradcheck_sym.zoo import builtin_models

    m = next(m for m in builtin_models() if m.name == "two-linear-layers")
    for dtype, r in {"float64": 1e-6, "float32": 1e-3}.items():
        res = verify(m, samples=2, seed=3, dtypes=[dtype], impl=_scaled(m, r))
        cs = [c for c in res.checks if c.source == "impl" and c.quantity == "grad" and c.exact not in (None, 0.0)]
        assert cs and sum(c.verdict == "mismatch" for c in cs) >= 0.95 * len(cs), dtype
        assert res.status == "fail"


def _scaled(m, r):  # type: ignore[no-untyped-def]
    from gradcheck_sym.torch_codegen import TorchForward

    forward = TorchForward(m.program)

    def impl(**tensors):  # type: ignore[no-untyped-def]
        flat = {s: tensors[v.name].reshape(-1)[k].reshape(1) for v in m.variables for k, s in enumerate(v.symbols)}
        loss = forward([flat[s] for s in m.symbols]).reshape(())
        return loss + r * (loss - loss.detach())

    return impl


# -- front ends: the CLI and the plugin say it, and --strict / strict=True fail on it -------------

MODELS = textwrap.dedent(
    """
    import sympy as sp
    import torch
    from gradcheck_sym import Model

    x = sp.Symbol("x", real=True)
    tanh = Model(name="tanh", loss=sp.tanh(x), params=[x], points=[{x: -30}, {x: 1}], impl=torch.tanh)
    """
)


def test_cli_shows_imprecise_exits_0_and_fails_under_strict(tmp_path):
    (tmp_path / "models.py").write_text(MODELS)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gradcheck_sym", "verify", "models.py", "--samples", "0",
                               "--dtypes", "float64", "--json", "out.json", *args],
                              cwd=tmp_path, capture_output=True, text=True)

    r = run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "⚠ tanh: " in r.stdout and "imprecise" in r.stdout and "not failures unless --strict" in r.stdout
    data = json.loads((tmp_path / "out.json").read_text())
    assert "imprecise" in {c["verdict"] for c in data["models"][0]["checks"]}
    back = from_json((tmp_path / "out.json").read_text())
    assert back.models[0].n_imprecise >= 1 and back.models[0].status == "pass"
    page = (tmp_path / "reports" / "tanh.md").read_text()
    assert "## ⚠ Imprecise and inconclusive checks" in page
    strict = run("--strict")
    assert strict.returncode == 1, strict.stdout + strict.stderr


def test_plugin_fixture_strict(pytester):
    pytester.makepyfile(models=MODELS)
    pytester.makepyfile(test_it="""
        import torch
        from models import tanh

        def test_default(gradcheck):
            assert gradcheck(tanh, samples=0, dtypes="float64").n_imprecise >= 1

        def test_strict(gradcheck):
            gradcheck(tanh, samples=0, dtypes="float64", strict=True)
    """)
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    flag = pytester.runpytest("-p", "no:randomly", "--gradcheck-strict", "-k", "default")
    flag.assert_outcomes(failed=1)
