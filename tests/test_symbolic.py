"""The gradient program: reverse accumulation agrees with sympy.diff, and stays linear in size."""

from __future__ import annotations

import sympy as sp
from flint import arb, ctx, fmpq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import expressions
from gradcheck_sym.graph import count_nodes
from gradcheck_sym.reference import reference_at
from gradcheck_sym.symbolic import closed_form, gradient_program
from gradcheck_sym.zoo import mlp

x, y, w, b = sp.symbols("x y w b", real=True)
VARS = (x, y, w, b)


def exact_gradient(expr, point):
    gp = gradient_program(expr, VARS, (w, b))
    return reference_at(gp, [fmpq(p.p, p.q) for p in point])


def sympy_gradient(expr, point):
    subs = dict(zip(VARS, point))
    return [sp.diff(expr, v).subs(subs) for v in (w, b)]


def contains(value, truth) -> bool:
    """Whether our exact value (fmpq or arb ball) is the SymPy value."""
    if isinstance(value, fmpq):
        return sp.Rational(int(value.p), int(value.q)) == sp.nsimplify(truth) if truth.is_Rational else False
    ctx.prec = 300
    t = arb(str(sp.N(truth, 80)))
    ok = value.overlaps(t)
    ctx.prec = 53
    return ok


POINT = [sp.Rational(3, 7), sp.Rational(-5, 4), sp.Rational(2, 3), sp.Rational(1, 5)]


def test_rational_loss_is_exact_rational():
    expr = (x * w + b - y) ** 2 / (1 + w**2)
    ref = exact_gradient(expr, POINT)
    assert ref.arithmetic == "rational"
    for got, want in zip(ref.grads, sympy_gradient(expr, POINT)):
        assert sp.Rational(int(got.value.p), int(got.value.q)) == want


def test_transcendental_loss_is_a_certified_ball():
    expr = sp.exp(-w * x) * sp.sin(b + y) + sp.log(1 + w**2) * sp.tanh(b)
    ref = exact_gradient(expr, POINT)
    assert ref.arithmetic.startswith("ball/")
    for got, want in zip(ref.grads, sympy_gradient(expr, POINT)):
        assert contains(got.value, want)


def test_shared_subexpressions_stay_shared():
    model = mlp()
    gp = gradient_program(model.loss, model.symbols, tuple(e.symbol for e in model.entries))
    forward = count_nodes(model.loss)
    # linear: forward plus a few local-derivative slots per node, never per weight and path
    assert gp.n_forward <= forward + len(model.symbols)
    assert len(gp.prog) <= 3 * gp.n_forward
    assert len(gp.wrt_slots) == 224


def test_closed_form_for_small_models_only():
    assert closed_form((x * w - y) ** 2, (w,)) == {w: 2 * x * (w * x - y)}
    assert closed_form(mlp().loss, (w,)) is None


leaf = st.sampled_from([x, y, w, b, sp.Integer(2), sp.Rational(1, 3)])
unary = st.sampled_from([sp.exp, sp.sin, sp.cos, sp.atan, sp.tanh, sp.erf, lambda e: e**2, lambda e: 1 / (1 + e**2)])


def _expr():
    return expressions(leaf, unary, max_leaves=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_expr())
def test_random_smooth_expressions_match_sympy_diff(expr):
    expr = expr + w * b  # every differentiated variable occurs
    ref = exact_gradient(expr, POINT)
    for got, want in zip(ref.grads, sympy_gradient(expr, POINT)):
        assert got.kind == "value"
        assert contains(got.value, want), (expr, got.value, sp.N(want, 30))


def test_float64_gradient_program_matches_the_exact_one():
    import torch

    from gradcheck_sym.compare import as_float
    from gradcheck_sym.errorbound import gradient_batch

    model = mlp()
    gp = gradient_program(model.loss, model.symbols, tuple(e.symbol for e in model.entries))
    points = torch.rand(3, len(model.symbols), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    loss, grads = gradient_batch(gp, points)
    for i, row in enumerate(points.tolist()):
        ref = reference_at(gp, [fmpq(*v.as_integer_ratio()) for v in row])
        exact = torch.tensor([as_float(g.value) for g in ref.grads], dtype=torch.float64)
        assert torch.allclose(grads[i], exact, rtol=1e-12, atol=1e-15)
        assert abs(float(loss[i]) - as_float(ref.loss.value)) < 1e-12
