"""Points within rounding of a kink (`nearkinks`): correct code that takes the other branch there
is imprecise, never a mismatch; wrong code is still a mismatch.

The model is a ReLU network declared with `gradcheck_sym.nn`, checked against a torch impl and a
textbook NumPy backward (``dz1 = dh·(z1 > 0)``).  The NumPy backward computes ``z1`` entrywise
(IEEE products and sums, no fused multiply-add), so the branch it takes at a near-kink point is
the same on every CPU and the tests can assert that it really took the other one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings

from gradcheck_sym import Model, matrix, nn, verify
from gradcheck_sym.strategies import points

W1, b1, W2, b2, X, Y = (matrix("W1", (3, 2)), matrix("b1", 3), matrix("W2", (1, 3)), matrix("b2", 1),
                        matrix("X", 2), matrix("Y", 1))
LOSS = nn.mse(nn.dense(W2, nn.relu(nn.dense(W1, X, b1)), b2), Y)
NEAR = "within rounding of a kink"


def relu_net(domain: Any = None) -> Model:
    return Model(name="relu-net", loss=LOSS, params=[W1, b1, W2, b2], inputs=[X, Y], domain=domain or {"*": (-1, 1)})


def torch_impl(W1, b1, W2, b2, X, Y):  # type: ignore[no-untyped-def]
    h = torch.relu(W1 @ X + b1)
    return ((W2 @ h + b2 - Y) ** 2).mean()


def numpy_backprop(W1, b1, W2, b2, X, Y, *, mask: str = ">", slip: bool = False, matmul: bool = False):  # type: ignore[no-untyped-def]
    """Textbook backprop; ``mask``: the ReLU derivative's test (``"<"``: inverted, a bug);
    ``slip``: the loss derivative's factor 2 forgotten (a bug); ``matmul``: ``z1 = W1 @ X + b1``
    (BLAS, which may fuse) instead of entrywise."""
    W1, b1, W2, b2, X, Y = (t.numpy() for t in (W1, b1, W2, b2, X, Y))
    z1 = W1 @ X + b1 if matmul else W1[:, :1] * X[0, 0] + W1[:, 1:] * X[1, 0] + b1
    h = np.maximum(z1, 0)
    y = W2 @ h + b2
    dy = (1 if slip else 2) * (y - Y) / Y.size
    dh = W2.T @ dy
    dz1 = dh * {">": z1 > 0, ">=": z1 >= 0, "<": z1 < 0}[mask]
    return {"W1": dz1 @ X.T, "b1": dz1, "W2": dy @ h.T, "b2": dy}


# the lead's point: exactly z1[0] = −0.70975995 + 0.9463466·0.75 = +2.98e-8 (active), which float32
# rounds to 0 or below; the other two neurons are exactly on their kink (z = 0)
LEAD_POINT = {"W1": [[-0.7097599506378174, 0.946346640586853], [0, 0], [0, 0]], "b1": [[0], [0], [0]],
              "W2": [[1, 0, 0]], "b2": [[0]], "X": [[1], [0.75]], "Y": [[1]]}
NEAR_ENTRIES = {("W1", (0, 0)), ("W1", (0, 1)), ("b1", (0, 0))}

# a float64 point as near: fl(0.6275345128697108·0.75) is exactly 0.4706508846522831, so z1[0]
# computes to 0 while exactly it is +2.8e-17; the other neurons are active, far from their kinks
F64_POINT = {"W1": [[-0.4706508846522831, 0.6275345128697108], [0.5, -0.25], [-0.3, 0.2]],
             "b1": [[0], [0.1], [0.2]], "W2": [[1, 0.5, -0.5]], "b2": [[0.1]], "X": [[1], [0.75]], "Y": [[0.5]]}


def grads(result: Any, source: str, point: int = 0) -> dict[tuple[str, Any], Any]:
    return {(c.param, c.index): c for c in result.checks
            if c.source == source and c.quantity == "grad" and c.point == point}


@pytest.mark.parametrize("samples", [0, 6])  # one point: judged on NumPy arrays; seven: on torch tensors (`arrays`)
def test_the_leads_point_is_imprecise_near_a_kink_for_every_source_in_float32(samples: int) -> None:
    result = verify(relu_net(), impl=torch_impl, grad_impl=numpy_backprop, points=[LEAD_POINT], samples=samples,
                    dtypes=["float32"])
    assert result.status == "pass", [(c.source, c.param, c.index, c.note) for c in result.failed]
    exact = {k: c.exact for k, c in grads(result, "impl").items() if k in NEAR_ENTRIES}
    assert exact == pytest.approx({("W1", (0, 0)): -2, ("W1", (0, 1)): -1.5, ("b1", (0, 0)): -2}, rel=1e-7)
    assert grads(result, "grad_impl")[("W1", (0, 0))].value == 0  # it really took the other branch
    for source in ("autograd", "impl", "grad_impl"):
        checks = grads(result, source)  # the lead's point is point 0
        for key in NEAR_ENTRIES:
            c = checks[key]
            assert c.verdict in ("agree", "imprecise"), c
            if c.verdict == "imprecise":
                assert NEAR in c.note and "float32" in c.note and "W1[0,0]*X[0,0]" in c.note, c.note
                assert c.attribution == "imprecise"
    assert {c.verdict for c in grads(result, "grad_impl").values() if (c.param, c.index) in NEAR_ENTRIES} \
        == {"imprecise"}


def test_without_the_rule_the_leads_point_was_a_false_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    import gradcheck_sym.nearkinks as nk

    monkeypatch.setattr(nk, "near_kinks", lambda *a, **k: None)
    result = verify(relu_net(), grad_impl=numpy_backprop, points=[LEAD_POINT], samples=0, dtypes=["float32"])
    assert {(c.param, c.index) for c in result.failed if c.source == "grad_impl"} == NEAR_ENTRIES


def test_a_float64_point_nearer_the_kink() -> None:
    result = verify(relu_net(), impl=torch_impl, grad_impl=numpy_backprop, points=[F64_POINT], samples=0,
                    dtypes=["float64"])
    assert result.status == "pass", [(c.source, c.param, c.index, c.note) for c in result.failed]
    c = grads(result, "grad_impl")[("W1", (0, 0))]
    assert c.value == 0 and c.exact == pytest.approx(-0.4375, rel=1e-12)  # 2(ŷ − y)·W2[0]·x = 2(0.28125 − 0.5)
    assert c.verdict == "imprecise" and NEAR in c.note and "float64" in c.note
    # the neurons far from their kinks are judged as anywhere else
    assert all(grads(result, s)[("W1", (1, 0))].verdict == "agree" for s in ("autograd", "impl", "grad_impl"))


def test_near_is_decided_in_the_dtypes_own_rounding() -> None:
    # the lead's gap of 2.98e-8 is within float32's rounding of z1[0], far beyond float64's
    from gradcheck_sym.nearkinks import near_kinks
    from gradcheck_sym.verifier import prepare, references

    model = relu_net()
    prepared = prepare(model)
    parsed = model.parse_points([LEAD_POINT])[0]
    point = tuple(float(parsed[s]) for s in model.symbols)
    refs, _, _ = references(prepared, [point], 1.0)
    prog = prepared.gradient.prog
    assert near_kinks(prog, [point], [refs[point]], "float32") is not None
    assert near_kinks(prog, [point], [refs[point]], "float64") is None  # 2.98e-8 is far beyond float64's rounding


@pytest.mark.parametrize(("kw", "wrong"), [
    ({"mask": "<"}, {"W1", "b1"}),  # the ReLU derivative inverted
    ({"slip": True}, {"W1", "b1", "W2", "b2"}),  # the loss derivative's factor 2 forgotten
])
def test_wrong_backwards_are_still_mismatches_near_a_kink(kw: dict[str, Any], wrong: set[str]) -> None:
    result = verify(relu_net(), grad_impl=lambda **t: numpy_backprop(**t, **kw), points=[F64_POINT], samples=0,
                    dtypes=["float64"])
    failed = {c.param for c in result.failed if c.source == "grad_impl"}
    assert failed == wrong
    assert all(c.attribution == "wrong" for c in result.failed)


@pytest.mark.parametrize("mask", [">", ">="])
def test_either_mask_at_a_tie_is_right(mask: str) -> None:
    result = verify(relu_net(), grad_impl=lambda **t: numpy_backprop(**t, mask=mask), points=[F64_POINT, LEAD_POINT],
                    samples=0)
    assert result.status == "pass", [(c.dtype, c.param, c.index, c.note) for c in result.failed]


@pytest.mark.parametrize(("kw", "wrong"), [
    ({"mask": "<"}, {"W1", "b1"}),
    ({"slip": True}, {"W1", "b1", "W2", "b2"}),
])
def test_wrong_backwards_are_still_mismatches_at_ordinary_points(kw: dict[str, Any], wrong: set[str]) -> None:
    result = verify(relu_net(), grad_impl=lambda **t: numpy_backprop(**t, **kw), samples=4, seed=3)
    assert {c.param for c in result.failed if c.source == "grad_impl"} == wrong
    assert not [c for c in result.checks if c.note and NEAR in c.note]  # random points: nowhere near a kink


def test_finite_differences_near_a_kink_do_not_blame_the_source() -> None:
    result = verify(relu_net(), grad_impl=numpy_backprop, points=[LEAD_POINT], samples=0, dtypes=["float32"])
    fd = [c for c in result.checks if c.source == "fd" and (c.param, c.index) in NEAR_ENTRIES]
    assert fd and all(c.attribution in (None, "noise") for c in fd)  # the differences straddle the kink
    assert all("straddle a kink" in c.note and NEAR in c.note for c in fd if c.attribution == "noise")
    assert not [c for c in result.checks if c.source != "fd" and c.attribution in ("wrong", "forward_mismatch")]


@pytest.mark.parametrize("units", [3, 5])  # every combination of branches; above 4, each alone and all together
def test_several_conditions_near_their_kinks_at_once(units: int) -> None:
    W, b, V = matrix("W1", (units, 2)), matrix("b1", units), matrix("W2", (1, units))
    model = Model(name=f"relu-{units}", loss=nn.mse(nn.dense(V, nn.relu(nn.dense(W, X, b)), b2), Y),
                  params=[W, b, V, b2], inputs=[X, Y],
                  points=[{"W1": [[-0.7097599506378174, 0.946346640586853]] * units, "b1": [[0]] * units,
                           "W2": [[1] * units], "b2": [[0]], "X": [[1], [0.75]], "Y": [[1]]}])
    result = verify(model, grad_impl=numpy_backprop, samples=0, dtypes=["float32"])
    assert result.status == "pass", [(c.param, c.index, c.value, c.exact) for c in result.failed]
    near = [c for c in result.checks if c.source == "grad_impl" and c.verdict == "imprecise"]
    assert {(c.param, c.index) for c in near} >= {("W1", (r, 0)) for r in range(units)}
    assert all(c.value == 0 for c in near if c.param == "W1")  # every unit took the other branch
    assert ("and 2 more" in near[0].note) == (units == 5)
    # a value beyond every combination of branches (twice the exact) is still a mismatch
    doubled = verify(model, grad_impl=lambda **t: {k: 2 * v for k, v in numpy_backprop(**t, mask=">=").items()},
                     samples=0, dtypes=["float32"])
    assert {c.param for c in doubled.failed} >= {"b2"}


def test_an_l1_loss_whose_residual_rounds_to_zero_in_float32() -> None:
    import sympy as sp

    # fl32(0.772114634513855·0.75) = 0.5790859460830688 exactly, so torch computes w·x − y = 0 and
    # torch.abs's derivative there is 0; exactly the residual is +2.98e-8 and ∂/∂w = x = 0.75
    w, x, y = sp.symbols("w x y", real=True)
    model = Model(name="l1", loss=sp.Abs(w * x - y), params=[w], inputs=[x, y],
                  points=[{w: 0.772114634513855, x: 0.75, y: 0.5790859460830688}])
    result = verify(model, impl=lambda w, x, y: torch.abs(w * x - y), samples=0)
    assert result.status == "pass", [(c.source, c.dtype, c.note) for c in result.failed]
    by = {(c.source, c.dtype): c for c in result.checks if c.quantity == "grad" and c.source != "fd"}
    c = by[("impl", "float32")]
    assert (c.exact, c.value, c.verdict) == (0.75, 0.0, "imprecise") and NEAR in c.note, c
    assert by[("impl", "float64")].verdict == "agree"  # float64 resolves a gap of 3e-8
    # the branches are ±0.75: a value beyond both is no rounding of either
    wrong = verify(model, grad_impl=lambda w, x, y: {"w": 2 * x}, samples=0, dtypes=["float32"])
    assert [(c.source, c.param, c.verdict) for c in wrong.failed] == [("grad_impl", "w", "mismatch")]


# -- the corpus: Hypothesis's corner points of a ReLU network, in float32 ------------------------------

HYPOTHESIS = settings(max_examples=30, derandomize=True, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.too_slow])
MODEL = relu_net(domain={"*": (-1, 1), "X": (0.25, 1)})  # inputs away from 0: the corners are not trivial


def _run(point: dict[str, Any], **kw: Any) -> Any:
    return verify(MODEL, impl=torch_impl, grad_impl=lambda **t: numpy_backprop(**t, matmul=True, **kw),
                  points=[point], samples=0, dtypes=["float32"])


def test_hypothesis_kink_points_of_correct_code_are_never_mismatches() -> None:
    near: list[int] = []

    @HYPOTHESIS
    @given(points(MODEL, kinks=True))
    def check(point: dict[str, Any]) -> None:
        result = _run(point)
        assert not result.failed, [(c.source, c.param, c.index, c.value, c.exact) for c in result.failed]
        near.append(sum(1 for c in result.checks if c.note and NEAR in c.note))

    check()
    assert sum(1 for n in near if n) >= 1  # corner points, rounded to float32, did land within rounding of a kink


def test_hypothesis_kink_points_still_find_a_planted_bug() -> None:
    mismatches: list[int] = []

    @HYPOTHESIS
    @given(points(MODEL, kinks=True))
    def check(point: dict[str, Any]) -> None:
        result = _run(point, slip=True)  # every entry of the gradient halved
        for c in grads(result, "grad_impl").values():
            if c.exact is None or abs(c.exact) < 1e-3:
                continue
            # a halved value lies between the exact gradient and 0 (a ReLU switched off): near a kink
            # that is within the hull for W1 and b1; b2 (∂/∂ŷ itself) has no branch to blame
            near = c.verdict == "imprecise" and NEAR in c.note and c.param in ("W1", "b1")
            assert c.verdict == "mismatch" or near, c
        mismatches.append(len([c for c in result.failed if c.source == "grad_impl"]))

    check()
    assert sum(1 for n in mismatches if n) >= len(mismatches) // 2
