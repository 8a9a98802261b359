"""Corpora of code we did not write, for calibrating verdicts (issue 10).

* `TORCH_FUNCTIONS`: torch's own functions, each declared in several mathematically equivalent
  ways; checked at `TAIL_POINTS` (−30…30), torch is right, so every verdict must be a pass
  (except where torch documents an approximation that is not rounding: F.softplus above its
  threshold; `test_corpus.KNOWN_APPROXIMATIONS` names the checks, which must be mismatches).
* `mlp_network`, `tanh_network`: sigmoid and tanh networks with the activation declared in
  equivalent ways, against torch's functions and textbook backprop.
* `CASES`: real-style custom `torch.autograd.Function`s and textbook NumPy backprop, each with
  a correct and a subtly wrong version; a wrong one must fail on exactly the named source and
  parameters, a correct one must pass.
* `VACUOUS`: ill-conditioned declarations where a wrong implementation must not be silently
  agreed with (it is a mismatch, or the check says it cannot resolve anything).

Where a function's code is copied from a public project the source is named beside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import sympy as sp
import torch
import torch.nn.functional as F

from gradcheck_sym import Model, matrix, nn

x = sp.Symbol("x", real=True)
_S2 = sp.sqrt(2)
_e = sp.exp

# name as called -> (torch callable, equivalent declarations of the same function of x)
TORCH_FUNCTIONS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], tuple[sp.Expr, ...]]] = {
    "torch.sigmoid": (torch.sigmoid, (1 / (1 + _e(-x)), _e(x) / (1 + _e(x)), (1 + sp.tanh(x / 2)) / 2)),
    "torch.tanh": (torch.tanh, (sp.tanh(x), (_e(2 * x) - 1) / (_e(2 * x) + 1), 1 - 2 / (_e(2 * x) + 1))),
    "torch.nn.functional.silu": (F.silu, (x / (1 + _e(-x)), x * _e(x) / (1 + _e(x)))),
    "torch.nn.functional.softplus": (F.softplus, (sp.log(1 + _e(x)),)),
    "torch.nn.functional.gelu": (F.gelu, (x * (1 + sp.erf(x / _S2)) / 2, x * sp.erfc(-x / _S2) / 2)),
    "torch.nn.functional.logsigmoid": (F.logsigmoid, (-sp.log(1 + _e(-x)), x - sp.log(1 + _e(x)))),
    "torch.nn.functional.softsign": (F.softsign, (x / (1 + sp.Abs(x)),)),
    "torch.exp": (torch.exp, (_e(x),)),
    "torch.erf": (torch.erf, (sp.erf(x),)),
    "torch.atan": (torch.atan, (sp.atan(x),)),
    "torch.asinh": (torch.asinh, (sp.asinh(x), sp.log(x + sp.sqrt(x**2 + 1)))),
}

TAIL_POINTS = (-30, -20, -12, -8, -3, -1, -0.25, 0.5, 2, 4, 8, 12, 20, 30)


def torch_function_model(name: str, i: int) -> Model:
    """Declaration ``i`` of torch function ``name`` as a one-weight model with torch as `impl`."""
    f, declarations = TORCH_FUNCTIONS[name]
    return Model(
        name=f"{name.rsplit('.', 1)[1]}-{i}", loss=declarations[i], params=[x],
        points=[{x: p} for p in TAIL_POINTS], impl=lambda x: f(x),
    )


# -- custom autograd Functions ----------------------------------------------------------------


class SwishImplementation(torch.autograd.Function):
    """lukemelas/EfficientNet-PyTorch, efficientnet_pytorch/utils.py (memory-efficient Swish)."""

    @staticmethod
    def forward(ctx, i):  # type: ignore[no-untyped-def]
        result = i * torch.sigmoid(i)
        ctx.save_for_backward(i)
        return result

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[no-untyped-def]
        i = ctx.saved_tensors[0]
        sigmoid_i = torch.sigmoid(i)
        return grad_output * (sigmoid_i * (1 + i * (1 - sigmoid_i)))


class SwishWrong(SwishImplementation):
    """The same with a plausible slip: ``1 + i·σ`` for ``1 + i·(1 − σ)``."""

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[no-untyped-def]
        i = ctx.saved_tensors[0]
        sigmoid_i = torch.sigmoid(i)
        return grad_output * (sigmoid_i * (1 + i * sigmoid_i))


class LinearFunction(torch.autograd.Function):
    """PyTorch docs, "Extending torch.autograd" (notes/extending.rst), as published."""

    @staticmethod
    def forward(ctx, input, weight, bias=None):  # type: ignore[no-untyped-def]
        ctx.save_for_backward(input, weight, bias)
        output = input.mm(weight.t())
        if bias is not None:
            output += bias.unsqueeze(0).expand_as(output)
        return output

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[no-untyped-def]
        input, weight, bias = ctx.saved_tensors
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = grad_output.mm(weight)
        if ctx.needs_input_grad[1]:
            grad_weight = grad_output.t().mm(input)
        if bias is not None and ctx.needs_input_grad[2]:
            grad_bias = grad_output.sum(0)
        return grad_input, grad_weight, grad_bias


class LinearTransposed(LinearFunction):
    """The classic slip: the weight gradient transposed (the shapes agree for a square W)."""

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[no-untyped-def]
        grad_input, grad_weight, grad_bias = LinearFunction.backward(ctx, grad_output)
        return grad_input, grad_weight.t(), grad_bias


class Exp(torch.autograd.Function):
    """PyTorch docs, torch.autograd.Function's example: backward from the saved output."""

    @staticmethod
    def forward(ctx, i):  # type: ignore[no-untyped-def]
        result = i.exp()
        ctx.save_for_backward(result)
        return result

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[no-untyped-def]
        (result,) = ctx.saved_tensors
        return grad_output * result


# -- textbook NumPy backprop (a two-layer sigmoid network, ½‖ŷ − y‖²) ---------------------------


def _sig(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def numpy_backprop(W1, b1, W2, b2, X, Y, *, slip: bool = False):  # type: ignore[no-untyped-def]
    """The backward pass as textbooks write it (dz = δ ⊙ σ'(z)); with ``slip`` the σ' of the
    hidden layer is forgotten, so only W1 and b1 are wrong."""
    W1, b1, W2, b2, X, Y = (t.numpy() for t in (W1, b1, W2, b2, X, Y))
    h = _sig(W1 @ X + b1)
    y_hat = W2 @ h + b2
    d_out = y_hat - Y
    dW2, db2 = d_out @ h.T, d_out
    d_h = W2.T @ d_out
    d_z1 = d_h if slip else d_h * h * (1 - h)
    return {"W1": d_z1 @ X.T, "b1": d_z1, "W2": dW2, "b2": db2}


# -- the cases ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A model with a source under test; ``wrong`` names the params whose gradient is wrong
    (empty: the code is right)."""

    model: Callable[[], Model]
    source: str  # "impl" or "grad_impl"
    wrong: frozenset[str] = field(default_factory=frozenset)
    attribution: str = "wrong"  # what the failed checks must say: the backward, or the forward


w, b, y = sp.symbols("w b y", real=True)
_W, _b, _X = matrix("W", (3, 3)), matrix("b", 3), matrix("X", 3)
_W1, _b1, _W2, _b2 = matrix("W1", (4, 3)), matrix("b1", 4), matrix("W2", (2, 4)), matrix("b2", 2)
_Y2 = matrix("Y", 2)


def _swish(name: str, fn: type[torch.autograd.Function]) -> Callable[[], Model]:
    return lambda: Model(name=name, loss=sp.Add(*(e * nn.sigmoid(e) for e in nn.dense(_W, _X, _b))),
                         params=[_W, _b], inputs=[_X], domain={"*": (-1, 1)},
                         impl=lambda W, b, X: fn.apply(W @ X + b).sum())


def _linear(name: str, fn: type[torch.autograd.Function]) -> Callable[[], Model]:
    return lambda: Model(name=name, loss=nn.total(nn.tanh(nn.dense(_W, _X, _b))),
                         params=[_W, _b], inputs=[_X], domain={"*": (-1, 1)},
                         impl=lambda W, b, X: torch.tanh(fn.apply(X.T, W, b.reshape(-1))).sum())


def _numpy(name: str, slip: bool) -> Callable[[], Model]:
    loss = sp.Rational(1, 2) * nn.sse(nn.dense(_W2, nn.sigmoid(nn.dense(_W1, _X, _b1)), _b2), _Y2)
    return lambda: Model(name=name, loss=loss, params=[_W1, _b1, _W2, _b2], inputs=[_X, _Y2],
                         domain={"*": (-1, 1)},
                         grad_impl=lambda **t: numpy_backprop(**t, slip=slip))


def _bce_clamped() -> Model:
    # a common "numerically safe" BCE: the clamp makes the gradient 0 where the sigmoid
    # saturates, while the true ∂loss/∂z there is about −1: a wrong gradient, not imprecision
    # (the clamp changes the loss value too, 16.1 for 20, so it is the forward that is blamed)
    p = nn.sigmoid(w * x + b)
    return Model(name="bce-clamped", loss=nn.binary_cross_entropy(p, y), params=[w, b], inputs=[x, y],
                 points=[{w: 4, x: -5, b: 0, y: 1}, {w: 1, x: 1, b: 0, y: 1}],
                 impl=lambda w, x, b, y: F.binary_cross_entropy(torch.sigmoid(w * x + b).clamp(1e-7, 1 - 1e-7), y))


CASES: dict[str, Case] = {
    "swish-efficientnet": Case(_swish("swish-efficientnet", SwishImplementation), "impl"),
    "swish-slip": Case(_swish("swish-slip", SwishWrong), "impl", frozenset({"W", "b"})),
    "linear-docs": Case(_linear("linear-docs", LinearFunction), "impl"),
    "linear-transposed": Case(_linear("linear-transposed", LinearTransposed), "impl", frozenset({"W"})),
    "exp-docs": Case(lambda: Model(name="exp-docs", loss=sp.exp(w * x), params=[w], inputs=[x],
                                   domain={"*": (-3, 3)}, impl=lambda w, x: Exp.apply(w * x)), "impl"),
    "numpy-backprop": Case(_numpy("numpy-backprop", False), "grad_impl"),
    "numpy-backprop-slip": Case(_numpy("numpy-backprop-slip", True), "grad_impl", frozenset({"W1", "b1"})),
    "bce-clamped": Case(_bce_clamped, "impl", frozenset({"w", "b"}), "forward_mismatch"),
}


# -- ill-conditioned declarations: a wrong implementation must not pass silently ---------------

z = sp.Symbol("z", real=True)

VACUOUS: dict[str, tuple[Callable[[], Model], int]] = {
    # (1 − cos z)/z² near 0, implementation off by a factor 2; point 0 is the ill-conditioned one
    "one-minus-cos": (lambda: Model(
        name="one-minus-cos", loss=(1 - sp.cos(z)) / z**2, params=[z],
        points=[{z: sp.Rational(1, 10**5)}], impl=lambda z: 2 * (1 - torch.cos(z)) / z**2), 0),
    # y·erfc(wx) with the hand-written gradient's sign dropped, where erfc(wx) is tiny
    "erfc-sign": (lambda: Model(
        name="erfc-sign", loss=y * sp.erfc(w * x), params=[w], inputs=[x, y],
        points=[{w: 4, x: 5, y: 1}],
        grad_impl=lambda w, x, y: 2 / math.sqrt(math.pi) * x * y * torch.exp(-((w * x) ** 2))), 0),
}


# -- real layers written with nested Min/Max (SymPy rewrites them to ITE conditions) -------------

LAYERS: dict[str, tuple[sp.Expr, Callable[[torch.Tensor], torch.Tensor], tuple[float, ...]]] = {
    # name as called -> (declaration, torch callable, its corners)
    "torch.nn.functional.relu6": (sp.Min(sp.Max(x, 0), 6), F.relu6, (0, 6)),
    "torch.nn.functional.hardtanh": (sp.Min(sp.Max(x, -1), 1), F.hardtanh, (-1, 1)),
    "torch.nn.functional.hardswish": (x * sp.Min(sp.Max(x + 3, 0), 6) / 6, F.hardswish, (-3, 3)),
    "torch.nn.functional.hardsigmoid": (sp.Min(sp.Max(x + 3, 0), 6) / 6, F.hardsigmoid, (-3, 3)),
    "torch.clamp": (sp.Max(sp.Min(x, 2), -2), lambda t: torch.clamp(t, -2, 2), (-2, 2)),
}
LAYER_POINTS = (-7, -4, -3, -2, -1, -0.5, 0, 0.5, 1, 2, 3, 4, 6, 7)


def layer_model(name: str) -> Model:
    expr, f, _ = LAYERS[name]
    return Model(name=name.rsplit(".", 1)[1], loss=expr, params=[x], points=[{x: p} for p in LAYER_POINTS],
                 impl=lambda x: f(x))


# -- the 5-6-7-7-6-5 sigmoid network (mlp-193), declared in equivalent ways ------------------------

MLP_LAYERS = (5, 6, 7, 7, 6, 5)
SIGMOIDS: dict[str, Callable[[sp.Expr], sp.Expr]] = {
    "1/(1+exp(-z))": lambda z: 1 / (1 + _e(-z)),
    "exp(z)/(1+exp(z))": lambda z: _e(z) / (1 + _e(z)),
}


def mlp_network(form: str, *, weights: float = 1.0, impl: str | None = None, slip: float = 0.0) -> Model:
    """mlp-193 with the sigmoid written as ``form`` (a key of `SIGMOIDS`) and weights and biases in
    ±``weights``; ``impl``: ``"torch"`` (a `torch.sigmoid` network through autograd as `impl`),
    ``"numpy"`` (textbook backprop as `grad_impl`, the derivative as s·(1 − s), times 1 + ``slip``),
    ``"both"`` or None."""
    sigma = SIGMOIDS[form]
    X, Y = matrix("X", MLP_LAYERS[0]), matrix("Y", MLP_LAYERS[-1])
    a: sp.Matrix = X
    params = []
    for k, (n_in, n_out) in enumerate(zip(MLP_LAYERS, MLP_LAYERS[1:]), start=1):
        W, b = matrix(f"W{k}", (n_out, n_in)), matrix(f"b{k}", n_out)
        params += [W, b]
        a = nn.dense(W, a, b).applyfunc(sigma)
    kw: dict[str, object] = {}
    if impl in ("torch", "both"):
        kw["impl"] = _torch_mlp
    if impl in ("numpy", "both"):
        kw["grad_impl"] = lambda **t: {k: g * (1 + slip) for k, g in _numpy_mlp(**t).items()}
    return Model(name="mlp-sigmoid", loss=nn.sse(a, Y),  # one name: the same seeded points
                 params=params, inputs=[X, Y], domain={X: (-1, 1), Y: (0, 1), "*": (-weights, weights)}, **kw)


def _layers(t: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(t[f"W{k}"], t[f"b{k}"]) for k in range(1, len(MLP_LAYERS))]


def _torch_mlp(**t: torch.Tensor) -> torch.Tensor:
    a = t["X"]
    for W, b in _layers(t):
        a = torch.sigmoid(W @ a + b)
    return ((a - t["Y"]) ** 2).sum()


def _numpy_mlp(**t: torch.Tensor) -> dict[str, np.ndarray]:
    """Textbook backprop in NumPy: forward keeping each layer's output, backward with σ' = s(1 − s)."""
    acts = [t["X"].numpy()]
    layers = [(W.numpy(), b.numpy()) for W, b in _layers(t)]
    for W, b in layers:
        acts.append(1 / (1 + np.exp(-(W @ acts[-1] + b))))
    delta = 2 * (acts[-1] - t["Y"].numpy())
    out = {}
    for k in range(len(layers), 0, -1):
        s = acts[k]
        dz = delta * s * (1 - s)
        out[f"W{k}"], out[f"b{k}"] = dz @ acts[k - 1].T, dz
        delta = layers[k - 1][0].T @ dz
    return out


# -- a 4-6-6-3 tanh network, tanh declared three ways, checked against torch.tanh -----------------

TANH_LAYERS = (4, 6, 6, 3)
TANHS: dict[str, Callable[[sp.Expr], sp.Expr]] = {
    "tanh(z)": sp.tanh,
    "(exp(2z)-1)/(exp(2z)+1)": lambda z: (_e(2 * z) - 1) / (_e(2 * z) + 1),
    "1-2/(exp(2z)+1)": lambda z: 1 - 2 / (_e(2 * z) + 1),
}


class _TanhSlipped(torch.autograd.Function):
    """tanh whose backward is (1 − y²)(1 + slip): a wrong derivative by a relative ``slip``."""

    @staticmethod
    def forward(ctx, z, slip):  # type: ignore[no-untyped-def]
        y = torch.tanh(z)
        ctx.save_for_backward(y)
        ctx.slip = slip
        return y

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def]
        (y,) = ctx.saved_tensors
        return g * (1 - y * y) * (1 + ctx.slip), None


def tanh_network(form: str, *, weights: float = 4.0, slip: float = 0.0) -> Model:
    """The network with tanh written as ``form`` (a key of `TANHS`), weights and biases in
    ±``weights``, and a torch.tanh network as `impl` (its backward off by ``slip`` if nonzero)."""
    X, Y = matrix("X", TANH_LAYERS[0]), matrix("Y", TANH_LAYERS[-1])
    a: sp.Matrix = X
    params = []
    for k, (n_in, n_out) in enumerate(zip(TANH_LAYERS, TANH_LAYERS[1:]), start=1):
        W, b = matrix(f"W{k}", (n_out, n_in)), matrix(f"b{k}", n_out)
        params += [W, b]
        a = nn.dense(W, a, b).applyfunc(TANHS[form])

    def impl(**t: torch.Tensor) -> torch.Tensor:
        a = t["X"]
        for k in range(1, len(TANH_LAYERS)):
            z = t[f"W{k}"] @ a + t[f"b{k}"]
            a = _TanhSlipped.apply(z, slip) if slip else torch.tanh(z)
        return ((a - t["Y"]) ** 2).sum()

    return Model(name="tanh-net", loss=nn.sse(a, Y), params=params, inputs=[X, Y],
                 domain={X: (-1, 1), Y: (-1, 1), "*": (-weights, weights)}, impl=impl)
