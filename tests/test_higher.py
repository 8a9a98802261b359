"""Exact higher-order derivatives: the gradient as a program, differentiated again (Hessians,
Hessian-vector products), forward mode (JVPs), Jacobians and VJPs of vector outputs; all against
sympy.diff, with kinks and undefined points at second order."""

from __future__ import annotations

from fractions import Fraction

import pytest
import sympy as sp
import torch
from flint import arb, ctx, fmpq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import expressions
from gradcheck_sym.errorbound import gradient_batch
from gradcheck_sym.higher import (error_scales, exact_values, float_values, hessian_program, hvp_program,
                                  jacobian_program, jvp_program, vjp_program)
from gradcheck_sym.ir.ops import REGISTRY
from gradcheck_sym.reference import reference_at
from gradcheck_sym.symbolic import gradient_program
from gradcheck_sym.torch_codegen import outputs

x, w, b = sp.symbols("x w b", real=True)
VARS = (x, w, b)
POINT = {x: Fraction(3, 7), w: Fraction(-5, 4), b: Fraction(2, 3)}


def matches(value, truth) -> bool:
    """Our exact value (fmpq or arb ball) is SymPy's value."""
    truth = sp.nsimplify(truth) if truth.is_Rational else truth
    if isinstance(value, fmpq):
        return truth.is_Rational and sp.Rational(int(value.p), int(value.q)) == truth
    old = ctx.prec
    ctx.prec = 300
    try:
        return value.overlaps(arb(str(sp.N(truth, 80))))
    finally:
        ctx.prec = old


def subs(expr):
    return expr.subs({s: sp.Rational(q.numerator, q.denominator) for s, q in POINT.items()})


leaf = st.sampled_from([x, w, b, sp.Integer(2), sp.Rational(1, 3)])
unary = st.sampled_from([sp.exp, sp.sin, sp.atan, sp.tanh, sp.erf, lambda e: e**2, lambda e: 1 / (1 + e**2),
                         lambda e: sp.log(1 + e**2), lambda e: sp.loggamma(2 + e**2)])


def _expr():
    return expressions(leaf, unary, max_leaves=6)


FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@FAST
@given(_expr())
def test_hessian_matches_sympy_diff(expr):
    loss = expr + w * b * x
    h = hessian_program(loss, VARS, (w, b))
    got = exact_values(h, POINT)
    want = [loss] + [sp.diff(loss, v) for v in (w, b)] + [sp.diff(loss, p, q) for p in (w, b) for q in (w, b)]
    for g, t in zip(got, want):
        assert g.kind == "value" and matches(g.value, subs(t)), (loss, g, t)


@FAST
@given(_expr(), st.tuples(st.integers(-3, 3), st.integers(-3, 3)))
def test_jvp_and_hvp_match_sympy_diff(expr, tangent):
    loss = expr + w * b * x
    j = jvp_program([loss, loss * w], VARS, (w, b))
    got = exact_values(j, POINT, extra=list(tangent))
    for out, g in zip([loss, loss * w], got[2:]):
        truth = sum(sp.diff(out, v) * t for v, t in zip((w, b), tangent))
        assert g.kind == "value" and matches(g.value, subs(truth))
    h = hvp_program(loss, VARS, (w, b))
    got = exact_values(h, POINT, extra=list(tangent))
    for p, g in zip((w, b), got[3:]):
        truth = sum(sp.diff(loss, p, q) * t for q, t in zip((w, b), tangent))
        assert g.kind == "value" and matches(g.value, subs(truth))


def test_jacobian_and_vjp_of_vector_outputs():
    outs = [w * x + b, sp.tanh(w * b), w**2 * x]
    jac = exact_values(jacobian_program(outs, VARS, (w, b)), POINT)
    for i, out in enumerate(outs):
        assert matches(jac[i].value, subs(out))
        for j, v in enumerate((w, b)):
            assert matches(jac[3 + 2 * i + j].value, subs(sp.diff(out, v)))
    cot = [2, -1, Fraction(1, 2)]
    vjp = exact_values(vjp_program(outs, VARS, (w, b)), POINT, extra=cot)
    for j, v in enumerate((w, b)):
        truth = sum(sp.Rational(c) * sp.diff(o, v) for c, o in zip(cot, outs))
        assert matches(vjp[3 + j].value, subs(truth))


def test_gradient_is_a_program_of_instructions():
    """The backward pass is instructions (cmul/acc), one program with the loss and every entry as
    outputs; the same exact values as the symbolic gradient, evaluable by torch too."""
    loss = (w * x + b - 1) ** 2 * sp.exp(w) + sp.Abs(b) * x
    gp = gradient_program(loss, VARS, (w, b))
    ops = set(gp.prog.ops)
    assert {"cmul", "gate"} <= ops and all(op in REGISTRY for op in ops)
    assert len(gp.prog.outputs) == 3 and gp.prog.outputs[0] == gp.output
    ref = reference_at(gp, [fmpq(q.numerator, q.denominator) for q in POINT.values()])
    for g, v in zip(ref.grads, (w, b)):
        assert matches(g.value, subs(sp.diff(loss, v)))
    pts = torch.tensor([[float(q) for q in POINT.values()], [0.5, 0.25, -1.0]], dtype=torch.float64)
    via_torch = outputs(gp.prog, list(pts.T))
    loss_b, grads_b = gradient_batch(gp, pts)
    assert torch.allclose(torch.stack(via_torch[1:], dim=1), grads_b, rtol=1e-14)
    assert torch.allclose(via_torch[0], loss_b, rtol=1e-14)


def test_float_values_and_error_scales_of_a_second_order_program():
    h = hessian_program(sp.exp(w * x) * b**2, VARS, (w, b))
    pts = [[0.5, 0.25, -1.5], [1.0, -2.0, 3.0]]
    f = float_values(h, pts)
    es = error_scales(h, pts)
    assert f.shape == es.worst.shape == (2, 7)
    for row, p in zip(f.tolist(), pts):
        exact = exact_values(h, dict(zip(VARS, p)))
        for got, e in zip(row, exact):
            assert abs(got - float(e.value.mid())) <= 1e-12 * max(1.0, abs(got))
    assert (es.worst[:, 3:] > 0).all() and (es.probable <= es.worst + 1e-300).all()


@pytest.mark.parametrize(
    ("loss", "at", "left", "right"),
    [
        (w * sp.Abs(w) * x, 0, -2, 2),  # f' = 2|w| x: a corner in the gradient
        (sp.Max(w, 0) ** 2 * x, 0, 0, 2),  # f' = 2 max(w, 0) x
        (sp.Piecewise((w**3, w < 1), (3 * w - 2, True)) * x, 1, 6, 0),  # C¹ at w = 1, not C²
    ],
)
def test_second_derivative_at_a_kink_is_one_sided(loss, at, left, right):
    point = {x: 1, w: at, b: 0}
    h = exact_values(hessian_program(loss, VARS, (w,)), point)
    grad, second = h[1], h[2]
    assert grad.kind == "value"  # the gradient itself is continuous there
    assert second.kind == "nondifferentiable", second
    assert (second.left, second.right) == (left, right)
    hv = exact_values(hvp_program(loss, VARS, (w,)), point, extra=[1])[2]
    assert hv.kind == "nondifferentiable" and (hv.left, hv.right) == (left, right)


def test_first_order_corner_and_smooth_second_order_away_from_it():
    loss = sp.Abs(w) * x
    h = exact_values(hessian_program(loss, VARS, (w,)), {x: 3, w: 0, b: 0})
    assert h[1].kind == "nondifferentiable" and (h[1].left, h[1].right) == (-3, 3)
    # the first derivative does not exist there, so neither does the second
    assert h[2].kind == "undefined" and "does not exist" in h[2].reason
    # across the corner (w·|v| at v = 0, differentiated along w then v): still none
    m = exact_values(hessian_program(w * sp.Abs(b), VARS, (w, b)), {x: 0, w: 2, b: 0})
    assert m[1].kind == "value" and m[1].value == 0  # ∂/∂w = |b| = 0, smooth along w
    assert m[2].kind == "nondifferentiable" and (m[2].left, m[2].right) == (-2, 2)
    assert [e.kind for e in m[3:]] == ["value", "nondifferentiable", "undefined", "undefined"]
    h = exact_values(hessian_program(loss, VARS, (w,)), {x: 3, w: 2, b: 0})
    assert [e.value for e in h] == [6, 3, 0]


def test_undefined_second_derivative_where_the_first_exists():
    h = exact_values(hessian_program(w ** sp.Rational(3, 2) * x, VARS, (w,)), {x: 1, w: 0, b: 0})
    assert h[0].value == 0 and h[1].kind == "value" and h[1].value == 0
    assert h[2].kind == "undefined"


def test_undefined_dead_branch_does_not_poison_second_derivatives():
    loss = sp.Piecewise((sp.sqrt(w), w > 0), (x * w**2, True))
    h = exact_values(hessian_program(loss, VARS, (w,)), {x: 2, w: -1, b: 0})
    assert [e.kind for e in h] == ["value"] * 3
    assert [e.value for e in h] == [2, -4, 4]
    hv = exact_values(hvp_program(loss, VARS, (w,)), {x: 2, w: -1, b: 0}, extra=[3])
    assert hv[2].value == 12


def test_jvp_at_a_kink_is_one_sided_along_the_tangent():
    j = exact_values(jvp_program([sp.Abs(w - b)], VARS, (w, b)), {x: 0, w: 1, b: 1}, extra=[2, 1])
    assert j[1].kind == "nondifferentiable" and (j[1].left, j[1].right) == (-1, 1)


def test_bad_inputs_are_named():
    h = hvp_program(w**2, VARS, (w,))
    with pytest.raises(ValueError, match="no value for `b`"):
        exact_values(h, {x: 1, w: 1})
    with pytest.raises(ValueError, match="1 extra inputs expected"):
        exact_values(h, {x: 1, w: 1, b: 1})
    with pytest.raises(ValueError, match="`y` is differentiated"):
        hessian_program(w**2, VARS, (sp.Symbol("y"),))


def test_readme_second_order_example_prints_what_it_shows():
    import contextlib
    import io
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    code = re.findall(r"```python example=higher\n(.*?)```", readme, flags=re.S)
    shown = re.findall(r"```text output=higher\n(.*?)```", readme, flags=re.S)
    assert len(code) == len(shown) == 1
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code[0], "README.md", "exec"), {})
    assert out.getvalue() == shown[0]


def test_programs_pickle_after_evaluation():
    """The cache pickles programs; what evaluators cache on them is left out and rebuilt."""
    import pickle

    h = hessian_program(sp.Abs(w) * w * x + sp.exp(b), VARS, (w, b))
    first = exact_values(h, {x: 1, w: 0, b: 0})
    again = pickle.loads(pickle.dumps(h))
    assert exact_values(again, {x: 1, w: 0, b: 0}) == first


def test_second_order_tables_for_the_checks():
    """`second_order` (what the order-2 checks call): Hessian rows and HVP tables, exact values and
    one rounding-error scale per quantity, rows of a missing first derivative undefined."""
    from gradcheck_sym.higher import scalarize, second_order

    f = sp.exp(w * x) * b**2 + sp.Abs(b) * w
    cache: dict = {}
    so = second_order(f, VARS, (w, b), cache=cache)
    assert second_order(f, VARS, (w, b), cache=cache) is so
    pts = [{x: Fraction(1, 2), w: Fraction(1, 3), b: Fraction(-2)}, {x: 1.0, w: 0.5, b: 0.0}]
    rows = so.hessian_rows(pts, factor=2.0)
    assert len(rows) == 2 and all(r.scale.shape == (2, 3) for r in rows)
    for i, p in enumerate((w, b)):
        ref = rows[i].refs[0]
        assert matches(ref.loss.value, sp.diff(f, p).subs({x: sp.Rational(1, 2), w: sp.Rational(1, 3), b: -2}))
        for j, q in enumerate((w, b)):
            truth = sp.diff(f, p, q).subs({x: sp.Rational(1, 2), w: sp.Rational(1, 3), b: -2})
            assert matches(ref.grads[j].value, truth)
    assert rows[0].refs[1].loss.is_value  # ∂f/∂w = x e^{wx} b² + |b| exists at b = 0
    assert rows[1].refs[1].loss.kind == "undefined" and "∂/∂b itself does not exist" in rows[1].refs[1].loss.reason
    table = so.hvp([Fraction(1), Fraction(-1)], pts)
    ref = table.refs[0]
    sub = {x: sp.Rational(1, 2), w: sp.Rational(1, 3), b: -2}
    assert matches(ref.loss.value, (sp.diff(f, w) - sp.diff(f, b)).subs(sub))
    for j, q in enumerate((w, b)):
        assert matches(ref.grads[j].value, (sp.diff(f, q, w) - sp.diff(f, q, b)).subs(sub))
    assert table.refs[1].loss.kind == "undefined"  # v has a b-component and ∂f/∂b is missing there
    assert so.hvp([Fraction(1), Fraction(0)], pts).refs[1].loss.is_value
    assert (table.scale[0] > 0).all()
    assert scalarize([w, b], [0, 3]) == 3 * b


def test_a_program_extended_after_evaluation_is_evaluated_as_it_now_is():
    from gradcheck_sym.reference import program_values

    gp = gradient_program(w**3 * x, VARS, (w,))
    point = [fmpq(2), fmpq(1), fmpq(0)]  # x, w, b
    assert [v.value for v in program_values(gp.prog, point).values] == [2, 6]
    gp.prog.outputs = gp.prog.outputs[::-1]
    assert [v.value for v in program_values(gp.prog, point).values] == [6, 2]
