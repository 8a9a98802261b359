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


def _rational(rng, k: int) -> list[fmpq]:
    return [fmpq(rng.randint(-64, 64), rng.randint(1, 32)) for _ in range(k)]


def test_dense_layer_gradient_is_the_matrix_formula() -> None:
    # the scalar program over a 12x20 layer (252 weights) against the same gradient by matrix
    # algebra in exact rationals (flint's fmpq_mat): 2(Wx + b - y) x^T and 2(Wx + b - y)
    import random

    from flint import fmpq_mat

    from gradcheck_sym import matrix, nn

    n_out, n_in = 12, 20
    W, b, X, Y = matrix("W", (n_out, n_in)), matrix("b", n_out), matrix("X", n_in), matrix("Y", n_out)
    loss = nn.sse(nn.dense(W, X, b), Y)
    variables = tuple(W) + tuple(b) + tuple(X) + tuple(Y)
    gp = gradient_program(loss, variables, tuple(W) + tuple(b))
    rng = random.Random(3)
    Wv, bv, xv, yv = _rational(rng, n_out * n_in), _rational(rng, n_out), _rational(rng, n_in), _rational(rng, n_out)
    r = reference_at(gp, Wv + bv + xv + yv)
    assert r.arithmetic == "rational"
    Wm, xm = fmpq_mat(n_out, n_in, Wv), fmpq_mat(n_in, 1, xv)
    e = (Wm * xm + fmpq_mat(n_out, 1, bv) - fmpq_mat(n_out, 1, yv)) * 2
    gW = e * xm.transpose()
    expected = [gW[i, j] for i in range(n_out) for j in range(n_in)] + [e[i, 0] for i in range(n_out)]
    assert [g.value for g in r.grads] == expected


def test_sigmoid_network_gradient_is_certified_against_matrix_backprop() -> None:
    # two sigmoid layers: the scalar program's certified balls against backpropagation written
    # with flint's ball matrices (arb_mat), an independent computation; each must contain the other's
    # midpoint region (the balls overlap) and be far narrower than float64's resolution
    import random

    from flint import arb, arb_mat

    from gradcheck_sym import matrix, nn

    sizes = (6, 8, 3)
    X, Y = matrix("X", sizes[0]), matrix("Y", sizes[2])
    W1, b1, W2, b2 = matrix("W1", (8, 6)), matrix("b1", 8), matrix("W2", (3, 8)), matrix("b2", 3)
    loss = nn.sse(nn.sigmoid(nn.dense(W2, nn.sigmoid(nn.dense(W1, X, b1)), b2)), Y)
    params = tuple(W1) + tuple(b1) + tuple(W2) + tuple(b2)
    gp = gradient_program(loss, params + tuple(X) + tuple(Y), params)
    rng = random.Random(5)
    values = {name: _rational(rng, k) for name, k in (("W1", 48), ("b1", 8), ("W2", 24), ("b2", 3), ("X", 6), ("Y", 3))}
    r = reference_at(gp, [q for vs in values.values() for q in vs])

    def sig(m: arb_mat) -> arb_mat:
        return arb_mat(m.nrows(), 1, [1 / (1 + (-m[i, 0]).exp()) for i in range(m.nrows())])

    col = lambda name, k: arb_mat(k, 1, [arb(q) for q in values[name]])  # noqa: E731
    w1, w2 = arb_mat(8, 6, [arb(q) for q in values["W1"]]), arb_mat(3, 8, [arb(q) for q in values["W2"]])
    x = col("X", 6)
    a1 = sig(w1 * x + col("b1", 8))
    a2 = sig(w2 * a1 + col("b2", 3))
    d2 = arb_mat(3, 1, [2 * (a2[i, 0] - arb(values["Y"][i])) * a2[i, 0] * (1 - a2[i, 0]) for i in range(3)])
    back = w2.transpose() * d2
    d1 = arb_mat(8, 1, [back[i, 0] * a1[i, 0] * (1 - a1[i, 0]) for i in range(8)])
    gw1, gw2 = d1 * x.transpose(), d2 * a1.transpose()
    expected = ([gw1[i, j] for i in range(8) for j in range(6)] + [d1[i, 0] for i in range(8)]
                + [gw2[i, j] for i in range(3) for j in range(8)] + [d2[i, 0] for i in range(3)])
    assert len(expected) == len(r.grads) == 83
    for g, e in zip(r.grads, expected):
        assert g.is_value and g.value.overlaps(e), (g.value, e)
        assert g.value.rad() <= NARROW * max(abs(float(g.value.mid())), 2.0**-60)
