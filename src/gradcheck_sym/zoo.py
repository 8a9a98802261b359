"""The lecture's models (`../shared/seed/`), built in: what `verify` checks with no target.

* ``linear``: ŷ = ωx with the squared loss, on the lecture's data x = [1, 2, 3], y = [2, 4, 6];
* ``affine``: ŷ = ωx + b;
* ``quadratic``: ŷ = ω₁x² + ω₂x + b;
* ``two-linear-layers``: ŷ = W₂(W₁X + b₁) + b₂, with the symbolic proof that it is one layer;
* ``mlp-193``: the 5-6-7-7-6-5 network with a sigmoid after each layer (193 weights, 31 biases);
* ``logistic``: a sigmoid with binary cross-entropy.
"""

from __future__ import annotations

import sympy as sp

from .model import Model, matrix
from .nn import dense, sigmoid
from .nn import sse as squared_error

x, y, w, b = sp.symbols("x y w b", real=True)
w1, w2 = sp.symbols("w1 w2", real=True)

LECTURE_DATA = ((1, 2), (2, 4), (3, 6))  # (x, y) pairs from the lecture's program


def linear(*, input_grads: bool = False) -> Model:
    return Model(
        input_grads=input_grads,
        name="linear",
        description="ŷ = ωx with the squared loss (ŷ − y)², the lecture's first model",
        loss=(x * w - y) ** 2,
        params=[w],
        inputs=[x, y],
        domain={x: (-4, 4), y: (-8, 8), w: (-3, 3)},
        # the lecture's three samples at its starting weight ω = 1, and the optimum ω = 2
        points=[{x: xv, y: yv, w: 1} for xv, yv in LECTURE_DATA] + [{x: 3, y: 6, w: 2}],
    )


def affine(*, input_grads: bool = False) -> Model:
    return Model(
        input_grads=input_grads,
        name="affine",
        description="ŷ = ωx + b with the squared loss",
        loss=(w * x + b - y) ** 2,
        params=[w, b],
        inputs=[x, y],
        domain={x: (-4, 4), y: (-8, 8), w: (-3, 3), b: (-2, 2)},
    )


def quadratic(*, input_grads: bool = False) -> Model:
    return Model(
        input_grads=input_grads,
        name="quadratic",
        description="ŷ = ω₁x² + ω₂x + b with the squared loss",
        loss=(w1 * x**2 + w2 * x + b - y) ** 2,
        params=[w1, w2, b],
        inputs=[x, y],
        domain={x: (-3, 3), y: (-8, 8), w1: (-2, 2), w2: (-2, 2), b: (-2, 2)},
    )


def linear_collapse(W1: sp.Matrix, b1: sp.Matrix, W2: sp.Matrix, b2: sp.Matrix, X: sp.Matrix) -> tuple[sp.Matrix, sp.Matrix, bool]:
    """W and b with W₂(W₁X + b₁) + b₂ = WX + b, and whether SymPy proves the identity
    (the expanded difference is zero)."""
    W = W2 * W1
    bias = W2 * b1 + b2
    proved = sp.expand(W2 * (W1 * X + b1) + b2 - (W * X + bias)) == sp.zeros(*bias.shape)
    return W, bias, proved


def two_linear_layers(*, input_grads: bool = False) -> Model:
    X, Y = matrix("X", 3), matrix("Y", 2)
    W1, b1 = matrix("W1", (4, 3)), matrix("b1", 4)
    W2, b2 = matrix("W2", (2, 4)), matrix("b2", 2)
    y_hat = W2 * (W1 * X + b1) + b2
    W, bias, proved = linear_collapse(W1, b1, W2, b2, X)
    return Model(
        input_grads=input_grads,
        name="two-linear-layers",
        description="ŷ = W₂(W₁X + b₁) + b₂ (3 → 4 → 2) with the squared loss: two linear layers",
        loss=sum((e**2 for e in y_hat - Y), sp.Integer(0)),
        params=[W1, b1, W2, b2],
        inputs=[X, Y],
        domain={"*": (-1, 1)},
        latex=r"\sum_i \left(W_2 (W_1 X + b_1) + b_2 - Y\right)_i^2",
        notes=(
            "Stacking linear layers adds no expressive power: W₂(W₁X + b₁) + b₂ = WX + b with "
            f"W = W₂W₁ and b = W₂b₁ + b₂ ({'proved' if proved else 'NOT proved'} by SymPy: "
            "`expand(W₂(W₁X + b₁) + b₂ − (WX + b))` is the zero matrix).",
            f"$$W = W_2 W_1 = {sp.latex(W)}$$",
            f"$$b = W_2 b_1 + b_2 = {sp.latex(bias)}$$",
        ),
    )


MLP_LAYERS = (5, 6, 7, 7, 6, 5)


def mlp(layers: tuple[int, ...] = MLP_LAYERS, name: str = "mlp-193", *, input_grads: bool = False) -> Model:
    """A fully connected network with a sigmoid after every layer and the squared loss."""
    X, Y = matrix("X", layers[0]), matrix("Y", layers[-1])
    a: sp.Matrix = X
    params = []
    for k, (n_in, n_out) in enumerate(zip(layers, layers[1:]), start=1):
        W, bias = matrix(f"W{k}", (n_out, n_in)), matrix(f"b{k}", n_out)
        params += [W, bias]
        a = dense(W, a, bias).applyfunc(sigmoid)
    n_weights = sum(i * o for i, o in zip(layers, layers[1:]))
    n_biases = sum(layers[1:])
    shape = "-".join(map(str, layers))
    return Model(
        input_grads=input_grads,
        name=name,
        description=(
            f"{shape} fully connected network, sigmoid after each layer, squared loss: "
            f"{n_weights} weights, {n_biases} biases ({n_weights + n_biases} parameters)"
        ),
        loss=squared_error(a, Y),
        params=params,
        inputs=[X, Y],
        domain={X: (-1, 1), Y: (0, 1), "*": (-1, 1)},
        latex=(
            rf"\sum_i \left(a_{{{len(layers) - 1}}} - Y\right)_i^2,\quad "
            r"a_k = \sigma\left(W_k a_{k-1} + b_k\right),\quad a_0 = X,\quad "
            r"\sigma(z) = \frac{1}{1 + e^{-z}}"
        ),
    )


def logistic(*, input_grads: bool = False) -> Model:
    p = sigmoid(w * x + b)
    return Model(
        input_grads=input_grads,
        name="logistic",
        description="ŷ = σ(ωx + b) with the binary cross-entropy −(y log ŷ + (1 − y) log(1 − ŷ))",
        loss=-(y * sp.log(p) + (1 - y) * sp.log(1 - p)),
        params=[w, b],
        inputs=[x, y],
        domain={x: (-4, 4), y: (0, 1), w: (-3, 3), b: (-2, 2)},
        points=[{x: 1, y: 1, w: 0, b: 0}, {x: -2, y: 0, w: 1, b: sp.Rational(1, 2)}],
    )


def builtin_models(*, input_grads: bool = True) -> list[Model]:
    """The lecture's models, in the order the lecture meets them, checking ∂loss/∂x too
    (``input_grads``), as the lecture's backward pass forms it at every node."""
    return [m(input_grads=input_grads) for m in (linear, affine, quadratic, two_linear_layers, mlp, logistic)]
