"""The layer builders against torch's functions of the same name, through `verify`.

Each builder is declared in a model whose `impl` is the torch function it stands for; the model
must pass (exact gradient = torch's), and a planted error in the impl must fail, so the
comparison is not vacuous.
"""

from __future__ import annotations

import sympy as sp
import pytest
import torch
import torch.nn.functional as F

from gradcheck_sym import Model, matrix, nn, verify

W, b, X = matrix("W", (3, 4)), matrix("b", 3), matrix("X", 4)
Y = matrix("Y", 3)
XB = matrix("XB", (4, 2))  # a batch of two samples, one per column


def _model(name, loss, params, inputs, impl, *, domain=(-0.5, 0.5)):
    # pre-activations stay within about ±2.5: in the sigmoid's tail torch's backward s(1 - s)
    # is less accurate than the declared formula's tolerance allows (issue 10, see below)
    return Model(name=name, loss=loss, params=params, inputs=inputs, domain={"*": domain}, impl=impl)


CASES = {
    "dense-sigmoid-sse": (
        nn.sse(nn.sigmoid(nn.dense(W, X, b)), Y), [W, b], [X, Y],
        lambda W, b, X, Y: ((torch.sigmoid(W @ X + b) - Y) ** 2).sum(),
    ),
    "mse": (
        nn.mse(nn.tanh(nn.dense(W, X, b)), Y), [W, b], [X, Y],
        lambda W, b, X, Y: F.mse_loss(torch.tanh(W @ X + b), Y),
    ),
    "batch-bias-broadcast": (
        nn.mean(nn.sigmoid(nn.dense(W, XB, b))), [W, b], [XB],
        lambda W, b, XB: torch.sigmoid(W @ XB + b).mean(),
    ),
    "cross_entropy": (
        nn.cross_entropy(nn.dense(W, X, b), 2), [W, b], [X],
        lambda W, b, X: F.cross_entropy((W @ X + b).T, torch.tensor([2])),
    ),
    "log_softmax": (
        nn.total(nn.log_softmax(nn.dense(W, X, b)).multiply_elementwise(Y)), [W, b], [X, Y],
        lambda W, b, X, Y: (torch.log_softmax(W @ X + b, 0) * Y).sum(),
    ),
    "softmax": (
        nn.sse(nn.softmax(nn.dense(W, X, b)), Y), [W, b], [X, Y],
        lambda W, b, X, Y: ((torch.softmax(W @ X + b, 0) - Y) ** 2).sum(),
    ),
    "logsumexp": (
        nn.logsumexp(nn.dense(W, X, b)), [W, b], [X],
        lambda W, b, X: torch.logsumexp(W @ X + b, 0).sum(),
    ),
    "relu": (
        nn.total(nn.relu(nn.dense(W, X, b))), [W, b], [X],
        lambda W, b, X: torch.relu(W @ X + b).sum(),
    ),
    "clamp": (
        nn.total(nn.clamp(nn.dense(W, X, b), -1, 1)), [W, b], [X],
        lambda W, b, X: torch.clamp(W @ X + b, -1, 1).sum(),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_builder_matches_torch(name: str) -> None:
    loss, params, inputs, impl = CASES[name]
    result = verify(_model(name, loss, params, inputs, impl), samples=3, seed=1)
    assert result.status == "pass", [c.note for c in result.failed][:3]
    impl_checks = [c for c in result.checks if c.source == "impl" and c.quantity == "grad"]
    assert impl_checks and all(c.verdict in ("agree", "nondifferentiable") for c in impl_checks)


def test_planted_error_is_caught() -> None:
    loss, params, inputs, _ = CASES["cross_entropy"]
    wrong = lambda W, b, X: F.cross_entropy((W @ X + 1.001 * b).T, torch.tensor([2]))  # noqa: E731
    result = verify(_model("ce-wrong", loss, params, inputs, wrong), samples=2, seed=1)
    assert result.status == "fail"
    assert {c.param for c in result.failed if c.source == "impl"} >= {"b"}


def test_builders_validate_shapes() -> None:
    with pytest.raises(ValueError, match="W.cols must equal a.rows"):
        nn.dense(W, matrix("Z", 3), b)
    with pytest.raises(ValueError, match="not a class index"):
        nn.cross_entropy(matrix("z", 2), 2)
    with pytest.raises(ValueError, match="above `high`"):
        nn.clamp(sp.Symbol("z", real=True), 1, 0)


def test_large_network_builds_fast_and_shares_nodes() -> None:
    # a 20-30-30-20-10 network (2,390 parameters): the builders keep SymPy from simplifying,
    # so the loss is a DAG whose distinct nodes grow with the parameter count, not with paths
    from gradcheck_sym.graph import count_nodes

    sizes = (20, 30, 30, 20, 10)
    a = matrix("X", sizes[0])
    n_params = 0
    for k, (i, o) in enumerate(zip(sizes, sizes[1:])):
        a = nn.sigmoid(nn.dense(matrix(f"W{k}", (o, i)), a, matrix(f"b{k}", o)))
        n_params += o * i + o
    loss = nn.sse(a, matrix("Y", sizes[-1]))
    assert n_params == 2390
    assert count_nodes(loss) < 10 * n_params


def test_sigmoid_tail_is_not_a_false_alarm() -> None:
    # torch.sigmoid's backward s(1 - s) loses accuracy in the tail: imprecise at worst, not wrong
    loss, params, inputs, impl = CASES["batch-bias-broadcast"]
    result = verify(_model("batch-bias-broadcast", loss, params, inputs, impl, domain=(-2, 2)), samples=3, seed=1)
    assert result.status == "pass"


def test_relu_network_compiles_in_size_linear_in_its_weights() -> None:
    # each corner is compiled over its arguments' slots: rewriting Max nodes with their arguments
    # rebuilt the shared layers as a tree, and a 224-weight ReLU network never finished compiling
    from flint import fmpq

    from gradcheck_sym.reference import reference_at
    from gradcheck_sym.symbolic import gradient_program

    sizes = (20, 30, 30, 20, 10)
    a, params = matrix("X", sizes[0]), []
    for k, (i, o) in enumerate(zip(sizes, sizes[1:])):
        params += [matrix(f"W{k}", (o, i)), matrix(f"b{k}", o)]
        a = nn.relu(nn.dense(params[-2], a, params[-1]))
    Y = matrix("Y", sizes[-1])
    weights = tuple(s for p in params for s in p)
    gp = gradient_program(nn.sse(a, Y), weights + tuple(matrix("X", sizes[0])) + tuple(Y), weights)
    assert len(weights) == 2390 and len(gp.prog) < 10 * len(weights)
    point = [fmpq((k * 37) % 19 - 9, 16) for k in range(len(gp.prog.variables))]
    r = reference_at(gp, point)
    assert r.arithmetic == "rational" and all(g.is_value for g in r.grads)
