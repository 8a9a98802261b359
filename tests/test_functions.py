"""The functions of issue 10 item 6, as a user declares them: sinc (SymPy's and torch's normalised
one), erfinv, xlogy/xlog1py with torch's semantics, floor/ceiling/frac (jumps are undefined, never
a pass or a mismatch), softplus forms, polygamma in float32; and the error for a function with no
registry entry, at declaration."""

from __future__ import annotations

import math
import textwrap

import pytest
import sympy as sp
import torch
from flint import arb, ctx, fmpq
from sympy.codegen.cfunctions import log1p

from gradcheck_sym import Model, verify
from gradcheck_sym.errors import UnsupportedFunctionError
from gradcheck_sym.ir.compile import compile_expr
from gradcheck_sym.reference import program_values
from gradcheck_sym.special import normalized_sinc, softplus, xlog1py, xlogy
from gradcheck_sym.torch_codegen import TorchForward

w, v, x = sp.symbols("w v x", real=True)


def _checks(r, *, source="autograd", quantity="grad", dtype="float64", param=None):
    return [c for c in r.checks if c.source == source and c.quantity == quantity and c.dtype == dtype
            and (param is None or c.param == param)]


# -- the torch lowerings, on tensors, against python-flint -------------------------------------

LOWERED = {  # expression in w, points, the exact value as a python-flint ball of the point
    "sinc": (sp.sinc(w), [-7.5, -1.0, -0.25, 0.0, 0.5, 3.0, 40.0], lambda a: a.sinc()),
    "normalized_sinc": (normalized_sinc(w), [-2.5, -0.3, 0.0, 0.75, 1.5, 9.25], lambda a: a.sinc_pi()),
    "erfinv": (sp.erfinv(w), [-0.999, -0.5, 0.0, 0.25, 0.9], lambda a: a.erfinv()),
    "xlogy": (xlogy(w, 2 + w), [-1.5, 0.0, 0.5, 3.0], lambda a: a * (2 + a).log()),
    "xlog1py": (xlog1py(w, w), [-0.5, 0.0, 0.5, 3.0], lambda a: a * a.log1p()),
    "softplus": (sp.log(1 + sp.exp(w)), [-800.0, -30.0, -1.0, 0.0, 2.0, 30.0, 800.0], lambda a: a.exp().log1p()),
    "floor": (sp.floor(w), [-2.5, -2.0, 0.25, 3.0], lambda a: a.floor()),
    "ceiling": (sp.ceiling(w), [-2.5, -2.0, 0.25, 3.0], lambda a: a.ceil()),
    "frac": (sp.frac(w), [-2.25, -2.0, 0.25, 3.5], lambda a: a - a.floor()),  # SymPy's: x - floor(x), not torch.frac
}


@pytest.mark.parametrize("name", list(LOWERED))
def test_torch_lowering_on_a_tensor_matches_python_flint(name):
    expr, points, truth = LOWERED[name]
    out = TorchForward(expr, (w,))([torch.tensor(points, dtype=torch.float64)])
    ctx.prec = 120
    try:
        for p, got in zip(points, out.tolist()):
            want = float(truth(arb(fmpq(*p.as_integer_ratio()))).mid())
            assert got == pytest.approx(want, rel=1e-13, abs=1e-300), (name, p)
    finally:
        ctx.prec = 53


def test_softplus_forms_compile_to_one_stable_op():
    for expr in (sp.log(1 + sp.exp(w * x)), log1p(sp.exp(w * x)), softplus(w * x)):
        ops = compile_expr(expr, (w, x), rewrite_kinks=False).ops
        assert "softplus" in ops and "exp" not in ops and "log" not in ops, (expr, ops)
    assert "softplus" not in compile_expr(sp.log(2 + sp.exp(w)), (w,), rewrite_kinks=False).ops
    # float32: exp(100) overflows, softplus(100) is 100; and its gradient is the sigmoid
    t = torch.tensor([100.0, -100.0], dtype=torch.float32, requires_grad=True)
    y = TorchForward(sp.log(1 + sp.exp(w)), (w,))([t])
    (g,) = torch.autograd.grad(y.sum(), t)
    assert y.tolist()[0] == pytest.approx(100.0, rel=2**-21) and 0 < y.tolist()[1] < 1e-43  # a few ulps: any CPU
    assert g.tolist()[0] == pytest.approx(1.0, rel=2**-21) and 0 <= g.tolist()[1] < 1e-43  # torch's logaddexp backward flushes e⁻¹⁰⁰ to 0


def test_softplus_declared_two_ways_verifies_in_the_tails():
    for loss in (sp.log(1 + sp.exp(w * x)), log1p(sp.exp(w * x))):
        m = Model(name="sp", loss=loss, params=[w], inputs=[x], points=[{w: 40, x: 1}, {w: -40, x: 1}, {w: 0, x: 1}],
                  impl=lambda w, x: torch.logaddexp(torch.zeros_like(w), w * x))
        r = verify(m, samples=0)
        assert r.status == "pass"
        for dtype in ("float64", "float32"):
            assert [c.verdict for c in _checks(r, dtype=dtype) + _checks(r, source="impl", dtype=dtype)] == ["agree"] * 6
        exact = [c.exact for c in _checks(r)]
        assert exact[0] == pytest.approx(1 - math.exp(-40), rel=1e-15) and exact[1] == pytest.approx(math.exp(-40), rel=1e-13)


def test_softplus_with_torch_threshold_is_declared_with_its_jump():
    loss = softplus(w, beta=2, threshold=20)
    assert isinstance(loss, sp.Piecewise)
    m = Model(name="softplus-thr", loss=loss, params=[w], points=[{w: 3}, {w: 10}, {w: 15}],
              impl=lambda w: torch.nn.functional.softplus(w, beta=2, threshold=20))
    r = verify(m, samples=0, dtypes=["float64"])
    verdicts = [c.verdict for c in _checks(r, source="impl")]
    assert verdicts[0] == "agree" and verdicts[2] == "agree"  # torch's softplus is this Piecewise
    assert verdicts[1] in ("undefined", "nondifferentiable")  # βx = 20: the jump, no derivative
    assert r.status == "pass"


# -- sinc ---------------------------------------------------------------------------------------


def test_sympy_sinc_is_exact_at_zero_to_second_order():
    m = Model(name="sinc0", loss=sp.sinc(w * x), params=[w], inputs=[x], points=[{w: 0, x: 1}, {w: 2, x: 1}])
    r = verify(m, samples=0, order=2)
    assert r.status == "pass"
    grads, seconds = _checks(r), _checks(r, quantity="second")
    assert [c.exact for c in grads][0] == 0.0 and [c.exact for c in seconds][0] == pytest.approx(-1 / 3, rel=1e-15)
    assert grads[1].exact == pytest.approx((2 * math.cos(2) - math.sin(2)) / 4, rel=1e-14)
    assert all(c.verdict == "agree" for c in grads + seconds)


def test_normalized_sinc_is_torch_special_sinc():
    assert normalized_sinc(0) == 1 and normalized_sinc(3) == 0
    assert sp.N(normalized_sinc(sp.Rational(1, 2)), 30) == sp.N(2 / sp.pi, 30)
    m = Model(name="nsinc", loss=normalized_sinc(w * x), params=[w], inputs=[x],
              points=[{w: 0, x: 1}, {w: sp.Rational(1, 2), x: 1}], impl=lambda w, x: torch.special.sinc(w * x))
    r = verify(m, samples=0, order=2)
    grads = _checks(r) + _checks(r, source="impl")
    assert all(c.verdict == "agree" for c in grads)
    assert grads[0].exact == 0.0 and grads[1].exact == pytest.approx(-4 / math.pi, rel=1e-14)
    (at0, _) = _checks(r, quantity="second")
    assert at0.exact == pytest.approx(-math.pi**2 / 3, rel=1e-14)
    # torch.special.sinc's double backward at 0 (torch 2.13 returns NaN): whatever it returns, the
    # verdict follows the exact value
    assert at0.verdict == ("agree" if abs(at0.value - at0.exact) < 1e-12 else "mismatch")


# -- erfinv, xlogy, xlog1py ---------------------------------------------------------------------


def test_erfinv_verifies_and_is_undefined_outside_its_domain():
    m = Model(name="erfinv", loss=sp.erfinv(w * x), params=[w], inputs=[x], domain={w: (-0.95, 0.95), x: (0.9, 1)},
              points=[{w: 2, x: 1}], impl=lambda w, x: torch.special.erfinv(w * x))
    r = verify(m, samples=6, seed=4)
    assert r.status == "pass"
    for dtype in ("float64", "float32"):
        verdicts = [c.verdict for c in _checks(r, source="impl", dtype=dtype)]
        assert verdicts[0] == "undefined" and verdicts[1:] == ["agree"] * 6


def test_xlogy_has_torch_semantics_at_x_zero():
    assert xlogy(0, v) == 0 and xlog1py(0, v) == 0
    pts = [{w: 0, v: 2}, {w: 0, v: 0}, {w: 0, v: -1}, {w: sp.Rational(1, 2), v: 3}]
    m = Model(name="xlogy", loss=xlogy(w, v), params=[w, v], points=pts,
              impl=lambda w, v: torch.special.xlogy(w, v))
    r = verify(m, samples=0, dtypes=["float64"])
    loss = [c.exact for c in _checks(r, quantity="loss")]
    assert loss[:3] == [0.0, 0.0, 0.0]  # 0 where x = 0, whatever y
    dw = _checks(r, param="w")
    dv = _checks(r, param="v")
    assert dw[0].exact == pytest.approx(math.log(2), rel=1e-15)  # ∂/∂x at x = 0: log(y) where y > 0
    assert [c.verdict for c in dw[1:3]] == ["undefined", "undefined"]  # ... undefined where y <= 0
    assert [c.exact for c in dv[:3]] == [0.0, 0.0, 0.0]  # ∂/∂y at x = 0: 0, whatever y
    assert dv[3].exact == pytest.approx(1 / 6, rel=1e-15) and dw[3].exact == pytest.approx(math.log(3), rel=1e-15)
    assert all(c.verdict == "agree" for c in _checks(r, source="impl", param="w")[3:])


def test_xlog1py_verifies_against_torch():
    m = Model(name="xlog1py", loss=xlog1py(w, v) * x, params=[w, v], inputs=[x],
              domain={w: (-2, 2), v: (-0.5, 2), x: (0.5, 1)}, points=[{w: 0, v: -1, x: 1}],
              impl=lambda w, v, x: torch.special.xlog1py(w, v) * x)
    r = verify(m, samples=5, seed=2)
    dv = _checks(r, source="impl", param="v")
    # ∂/∂y at x = 0, y = -1 is 0 (the function is 0 all along x = 0); torch 2.13 computes x/(1 + y) = 0/0
    assert dv[0].exact == 0.0 and dv[0].verdict == ("mismatch" if math.isnan(dv[0].value) else "agree")
    assert all(c.verdict == "agree" for c in dv[1:] + _checks(r, source="impl", param="w")[1:])
    assert [c.verdict for c in _checks(r, source="impl", param="w")][0] == "undefined"  # log1p(-1)


# -- floor, ceiling, frac -----------------------------------------------------------------------


@pytest.mark.parametrize("f, slope", [(sp.floor, 0), (sp.ceiling, 0), (sp.frac, 1)], ids=str)
def test_step_functions_are_flat_between_integers_and_undefined_at_a_jump(f, slope):
    m = Model(name="step", loss=f(w * x) * (1 + v**2), params=[w, v], inputs=[x],
              points=[{w: 2, v: 1, x: 1}, {w: -3, v: 1, x: 1}, {w: sp.Rational(5, 4), v: 1, x: 1}],
              domain={w: (-3, 3), v: (-1, 1), x: (0.5, 1)})
    r = verify(m, samples=6, seed=5)
    assert r.status == "pass"
    for dtype in ("float64", "float32"):
        dw = _checks(r, dtype=dtype, param="w")
        assert [c.verdict for c in dw[:2]] == ["undefined", "undefined"]  # at a jump: no derivative, no verdict
        assert dw[2].exact == slope * 2 and all(c.verdict == "agree" for c in dw[2:])
        assert all(c.verdict == "agree" for c in _checks(r, dtype=dtype, param="v"))


# -- polygamma in float32 (its trigamma charge in float32's own units) --------------------------


def test_digamma_resolves_in_float32():
    m = Model(name="digamma", loss=sp.digamma(w * x) * x, params=[w], inputs=[x], domain={w: (0.3, 3), x: (0.9, 1.1)},
              impl=lambda w, x: torch.digamma(w * x) * x)
    r = verify(m, samples=8, seed=2)
    assert r.status == "pass"
    for source in ("autograd", "impl"):
        assert [c.verdict for c in _checks(r, source=source, dtype="float32")] == ["agree"] * 8
    assert [c.verdict for c in _checks(r, dtype="float64")] == ["agree"] * 8
    # torch's own float64 trigamma (digamma's backward) is a short series, 5e-10 relative: beyond a
    # careful implementation, so a user's torch.digamma impl is at best `imprecise` in float64
    assert {c.verdict for c in _checks(r, source="impl")} <= {"agree", "imprecise"}


def test_loggamma_second_derivatives_resolve_in_float32():
    """∂²loggamma is trigamma: its float32 double backward is held to float32's own units too."""
    m = Model(name="lgamma2", loss=sp.loggamma(w * x) * x, params=[w], inputs=[x], domain={w: (0.3, 3), x: (0.9, 1.1)})
    r = verify(m, samples=6, seed=2, order=2)
    for dtype in ("float64", "float32"):
        assert [c.verdict for c in _checks(r, quantity="second", dtype=dtype)] == ["agree"] * 6


# -- subtly wrong backwards are caught -----------------------------------------------------------

WRONG = {  # loss, the torch forward whose gradient is scaled, domain
    "sinc": (sp.sinc(w * x), lambda w, x: torch.sin(w * x) / (w * x), {w: (-30, 30), x: (0.9, 1.1)}),
    "normalized_sinc": (normalized_sinc(w * x), lambda w, x: torch.special.sinc(w * x), {w: (-30, 30), x: (0.9, 1.1)}),
    "erfinv": (sp.erfinv(w * x), lambda w, x: torch.special.erfinv(w * x), {w: (-0.999, 0.999), x: (0.99, 1)}),
    "softplus": (sp.log(1 + sp.exp(w * x)), lambda w, x: torch.nn.functional.softplus(w * x), {w: (-15, 15), x: (0.9, 1.1)}),
    "xlogy": (xlogy(w, x), lambda w, x: torch.special.xlogy(w, x), {w: (-3, 3), x: (0.01, 5)}),
    "xlog1py": (xlog1py(w, x), lambda w, x: torch.special.xlog1py(w, x), {w: (-3, 3), x: (-0.99, 5)}),
    "frac": (sp.frac(w * x) * x, lambda w, x: (w * x - torch.floor(w * x)) * x, {w: (-5, 5), x: (0.9, 1.1)}),
}


@pytest.mark.parametrize("name", list(WRONG))
def test_a_relative_error_in_the_backward_is_caught(name):
    """A backward off by 1e-6 (float64) or 1e-3 (float32) relative: never agrees; a mismatch at
    every point in float64 and at most points in float32 (torch.special.sinc's is `imprecise` at
    some: its derivative near the zeros of sin(πx) is ill-conditioned for |x| up to 30)."""
    loss, f, domain = WRONG[name]
    for dtype, eps in (("float64", 1e-6), ("float32", 1e-3)):
        def impl(w, x, f=f, eps=eps):
            y = f(w, x)
            return y + eps * (y - y.detach())  # the value is right, its gradient (1 + eps) times the truth

        r = verify(Model(name=name, loss=loss, params=[w], inputs=[x], domain=domain, impl=impl),
                   samples=12, seed=7, dtypes=[dtype])
        verdicts = [c.verdict for c in _checks(r, source="impl", dtype=dtype)]
        assert len(verdicts) == 12 and set(verdicts) <= {"mismatch", "imprecise"}, (dtype, verdicts)
        assert verdicts.count("mismatch") >= (12 if dtype == "float64" else 6), (dtype, verdicts)
        right = verify(Model(name=name, loss=loss, params=[w], inputs=[x], domain=domain, impl=f), samples=12, seed=7,
                       dtypes=[dtype])
        assert not [c for c in right.checks if c.verdict == "mismatch" and c.source != "fd"], dtype


# -- no registry entry: a readable error at declaration -----------------------------------------


@pytest.mark.parametrize("loss, name, hint", [
    (sp.gamma(w) * x, "gamma", "loggamma"), (sp.besselj(0, w * x), "besselj", ""), (sp.Mod(w, 2) * x, "Mod", "floor"),
    (sp.polygamma(x, w), "polygamma", "whole number"), (sp.zeta(w) * x, "zeta", ""),
])
def test_unsupported_function_is_refused_at_declaration(loss, name, hint):
    with pytest.raises(UnsupportedFunctionError) as info:
        Model(name="my-layer", loss=loss, params=[w], inputs=[x])
    text = str(info.value)
    assert "model `my-layer`" in text and f"`{name}`" in text and hint in text
    assert "Supported: " in text and "xlogy" in text and "normalized_sinc" in text and "erfinv" in text


def test_unsupported_function_in_a_model_file_is_reported_by_the_cli(run_cli_process, tmp_path):
    (tmp_path / "m.py").write_text(textwrap.dedent("""
        import sympy as sp
        from gradcheck_sym import Model
        from gradcheck_sym.special import xlogy
        w, x = sp.symbols("w x", real=True)
        ok = Model(name="ok-xlogy", loss=xlogy(w, x), params=[w], inputs=[x], domain={w: (-1, 1), x: (0.5, 2)})
        bad = Model(name="bad-gamma", loss=sp.gamma(w) * x, params=[w], inputs=[x], domain={"*": (1, 2)})
    """))
    r = run_cli_process("verify", "m.py", "--samples", "2", "--no-report", cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "bad-gamma" in out and "`gamma`" in out and "loggamma" in out and "Traceback" not in out


def test_new_functions_can_be_typed_on_the_command_line(run_cli, tmp_path):
    r = run_cli("verify", "--expr", "xlogy(w, x) + sinc(w) + normalized_sinc(w*x) + erfinv(w/3) + floor(w*x)*w "
                "+ polygamma(1, x)*w + log(1 + exp(w*x))", "--params", "w", "--domain", "w=-2:2", "--domain", "x=0.5:2",
                "--samples", "3", "--no-report", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "expr" in r.stdout and "pass" in r.stdout
    bad = run_cli("verify", "--expr", "xlogy(w)", "--params", "w", "--domain", "w=1:2", "--no-report", cwd=tmp_path)
    assert bad.returncode == 2 and "`xlogy` takes 2 arguments, got 1" in bad.stderr
