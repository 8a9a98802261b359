"""The lecture's built-in models."""

from __future__ import annotations

import sympy as sp

from gradcheck_sym.model import matrix
from gradcheck_sym.zoo import builtin_models, linear_collapse, mlp, two_linear_layers


def test_builtin_models_are_the_lectures():
    names = [m.name for m in builtin_models()]
    assert names == ["linear", "affine", "quadratic", "two-linear-layers", "mlp-193", "logistic"]


def test_mlp_193_has_193_weights_and_31_biases():
    m = mlp()
    weights = sum(v.size for v in m.params if v.name.startswith("W"))
    biases = sum(v.size for v in m.params if v.name.startswith("b"))
    assert (weights, biases, m.n_params) == (193, 31, 224)
    assert "193 weights, 31 biases" in m.description


def test_two_linear_layers_collapse_to_one_is_proved():
    W1, b1, W2, b2, X = matrix("W1", (4, 3)), matrix("b1", 4), matrix("W2", (2, 4)), matrix("b2", 2), matrix("X", 3)
    W, b, proved = linear_collapse(W1, b1, W2, b2, X)
    assert proved and W == W2 * W1 and b == W2 * b1 + b2
    # and the proof is not vacuous: a wrong bias is refused
    assert sp.expand(W2 * (W1 * X + b1) + b2 - (W * X + b2)) != sp.zeros(2, 1)
    m = two_linear_layers()
    assert "proved" in m.notes[0] and "NOT" not in m.notes[0]
    assert m.notes[1].startswith("$$W = W_2 W_1 =")
