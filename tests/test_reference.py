"""Exact references: kinks, undefined points, removable singularities, certified precision."""

from __future__ import annotations

import pytest
import sympy as sp
from flint import fmpq

from gradcheck_sym.reference import NARROW, reference_at
from gradcheck_sym.symbolic import gradient_program

x, w, v = sp.symbols("x w v", real=True)


def ref(expr, point, wrt=(w,), variables=(x, w)):
    gp = gradient_program(expr, variables, wrt)
    return reference_at(gp, [fmpq(*p) if isinstance(p, tuple) else fmpq(p) for p in point])


@pytest.mark.parametrize(
    ("expr", "left", "right"),
    [
        (x * sp.Abs(w), -3, 3),
        (sp.Max(w, 0) * x, 0, 3),
        (sp.Min(w, 0) * x, 3, 0),
        (x * w * sp.Heaviside(w), 0, 3),
        (sp.Piecewise((x * w, w < 0), (2 * x * w, True)), 3, 6),
    ],
)
def test_corners_report_both_one_sided_derivatives(expr, left, right):
    r = ref(expr, [3, 0])
    g = r.grads[0]
    if left == right:
        assert g.kind == "value" and g.value == left
    else:
        assert g.kind == "nondifferentiable", g
        assert (g.left, g.right) == (left, right)
    assert r.boundary


def test_relu_like_heaviside_product_has_a_corner():
    g = ref(w * sp.Heaviside(w), [3, 0]).grads[0]
    assert g.kind == "nondifferentiable" and (g.left, g.right) == (0, 1)


def test_smooth_across_a_boundary_is_differentiable():
    g = ref(sp.Max(w, 0) ** 2, [3, 0]).grads[0]
    assert g.kind == "value" and g.value == 0


def test_a_jump_is_undefined():
    g = ref(sp.Heaviside(w) + x, [1, 0]).grads[0]
    assert g.kind == "undefined" and "jump" in g.reason


def test_max_tie_between_two_weights():
    r = ref(sp.Max(w, v), [0, 1, 1], wrt=(w, v), variables=(x, w, v))
    assert [(g.left, g.right) for g in r.grads] == [(0, 1), (0, 1)]


def test_kink_in_a_dead_branch_is_ignored():
    g = ref(sp.Piecewise((w * sp.Abs(x - 5), w > 1), (w**2, True)), [5, 0]).grads[0]
    assert g.kind == "value" and g.value == 0


@pytest.mark.parametrize(
    ("expr", "point"),
    [(sp.log(w), [1, -1]), (sp.sqrt(w), [1, -2]), (1 / w, [1, 0]), (sp.atanh(w), [1, 1])],
)
def test_outside_the_domain_or_at_a_pole_is_undefined(expr, point):
    r = ref(expr, point)
    assert r.grads[0].kind == "undefined"


def test_infinite_derivative_is_undefined_but_loss_is_defined():
    r = ref(sp.sqrt(w) * x, [1, 0])
    assert r.loss.value == 0 and r.grads[0].kind == "undefined"


def test_undefined_dead_branch_does_not_poison_the_gradient():
    # the torch.where NaN-gradient trap: sqrt(w)'s derivative is undefined at w = -1,
    # but that branch is not selected
    g = ref(sp.Piecewise((sp.sqrt(w), w > 0), (x * w, True)), [2, -1]).grads[0]
    assert g.kind == "value" and g.value == 2


def test_removable_singularity_uses_the_limit():
    expr = w * sp.sin(x) / x
    gp = gradient_program(expr, (x, w), (w,))
    plain = reference_at(gp, [fmpq(0), fmpq(2)])
    assert plain.loss.kind == "undefined"
    limited = reference_at(gp, [fmpq(0), fmpq(2)], limit=lambda i: fmpq(2) if i is None else fmpq(1))
    assert limited.loss.value == 2 and limited.grads[0].value == 1


def test_balls_are_narrow_relative_to_the_scale():
    r = ref(sp.exp(w) * x, [1, (1, 3)])
    g = r.grads[0].value
    assert float(g.rad()) <= NARROW * abs(float(g.mid()))


def test_cancellation_to_zero_is_certified_with_a_scale():
    # exactly zero, but only after cancellation of transcendental terms
    expr = (sp.exp(w) - sp.exp(w) * x) ** 2
    gp = gradient_program(expr, (x, w), (w,))
    r = reference_at(gp, [fmpq(1), fmpq(1, 2)], scales=[10.0, 10.0])
    g = r.grads[0].value
    assert g.contains(0) and float(g.rad()) <= NARROW * 10
