"""Declaring models: what is accepted, and what is refused with a message that helps."""

from __future__ import annotations

from fractions import Fraction

import pytest
import sympy as sp

from gradcheck_sym import Model, ModelError, UnsupportedFunctionError, matrix

x, y, w, b = sp.symbols("x y w b", real=True)


def linear(**kw):
    args = dict(name="linear", loss=(x * w - y) ** 2, params=[w], inputs=[x, y], domain={"*": (-1, 1)})
    args.update(kw)
    return Model(**args)


def test_issue_example_declares_a_model():
    m = Model(name="linear", loss=(x * w - y) ** 2, params=[w], inputs=[x, y],
              domain={x: (-4, 4), y: (-4, 4), w: (-2, 2)})
    assert m.n_params == 1
    assert [e.name for e in m.entries] == ["w"]
    assert m.domain[w] == (Fraction(-2), Fraction(2))


def test_matrix_weights_are_natural():
    W1, X, b1 = matrix("W1", (6, 5)), matrix("X", 5), matrix("b1", 6)
    layer = W1 * X + b1
    m = Model(name="layer", loss=sum(layer), params=[W1, b1], inputs=[X], domain={"*": (-1, 1)})
    assert m.params[0].shape == (6, 5) and m.params[1].shape == (6, 1)
    assert m.n_params == 36
    entry = m.entries[7]
    assert entry.name == "W1[1,2]" and entry.index == (1, 2)


def test_domain_keys_symbol_matrix_name_and_default():
    W = matrix("W", (2, 2))
    m = Model(name="m", loss=sum(W * matrix("X", 2)) * w, params=[W, w], inputs=[matrix("X", 2)],
              domain={W: (0, 1), "w": (2, 3), "*": (-5, 5)})
    assert m.domain[W[1, 0]] == (0, 1)
    assert m.domain[w] == (2, 3)
    assert m.domain[sp.Symbol("X[1,0]", real=True)] == (-5, 5)


def test_explicit_points_need_no_domain_and_are_exact():
    m = Model(name="m", loss=(x * w - y) ** 2, params=[w], inputs=[x, y],
              points=[{w: 0.1, x: sp.Rational(1, 3), "y": 2}])
    (p,) = m.points
    assert p[w] == Fraction(0.1)  # the float's exact binary value
    assert p[x] == Fraction(1, 3)


def test_matrix_point_values_accept_nested_lists():
    W = matrix("W", (2, 1))
    m = Model(name="m", loss=(W[0, 0] * x + W[1, 0]) ** 2, params=[W], inputs=[x],
              points=[{W: [[1], [2]], x: 3}])
    assert m.points[0][W[1, 0]] == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(loss="(x*w - y)**2"), "is a string"),
        (dict(loss=sp.Matrix([x * w, y])), "2x1 matrix"),
        (dict(inputs=[x]), "the loss uses `y`"),
        (dict(params=[w, x], inputs=[x, y]), "both as a param and as an input"),
        (dict(params=[]), "`params` is empty"),
        (dict(params=["w"]), "must be a SymPy Symbol or a matrix"),
        (dict(domain={"*": (1, 1)}), "empty"),
        (dict(domain={"*": (1, -1)}), "inverted"),
        (dict(domain={x: (-1, 1)}), "no domain for `w`, `y`"),
        (dict(domain={"q": (0, 1)}), "names `q`, which is not a declared symbol"),
        (dict(points=[{w: 1, x: 2}], domain=None), "has no value for `y`"),
        (dict(points=[{w: float("nan"), x: 2, y: 1}], domain=None), "not finite"),
        (dict(name="has space"), "model name"),
        (dict(impl=3), "`impl` must be a callable"),
    ],
)
def test_bad_declarations_are_refused_with_a_helpful_message(kwargs, message):
    with pytest.raises(ModelError, match=message) as info:
        linear(**kwargs)
    assert "linear" in str(info.value) or "model name" in str(info.value)


def test_complex_symbols_are_refused():
    z = sp.Symbol("z", complex=True)
    with pytest.raises(ModelError, match="declared complex"):
        Model(name="c", loss=z * w, params=[w], inputs=[z], domain={"*": (0, 1)})


def test_matrix_not_made_by_the_helper_is_refused():
    M = sp.Matrix([[x, y]])
    with pytest.raises(ModelError, match=r"gradcheck_sym.matrix\(name, shape\)"):
        Model(name="m", loss=x + y, params=[M], domain={"*": (0, 1)})


def test_undefined_and_unsupported_functions_name_themselves():
    f = sp.Function("f")
    with pytest.raises(UnsupportedFunctionError, match=r"undefined function `f\(w\)`"):
        from gradcheck_sym.verifier import prepare

        prepare(Model(name="u", loss=f(w), params=[w], domain={"*": (0, 1)}))
    with pytest.raises(UnsupportedFunctionError, match="`gamma`.*Supported: .*exp"):
        prepare(Model(name="g", loss=sp.gamma(w), params=[w], domain={"*": (1, 2)}))


def test_one_by_one_matrix_loss_is_a_scalar():
    m = linear(loss=sp.Matrix([[(x * w - y) ** 2]]))
    assert m.loss == (x * w - y) ** 2
