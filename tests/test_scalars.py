"""Issue 12, item 1: a single-point check runs its error analysis on Python floats
(`scalars`, `errorbound._FloatPass`) and judges its groups number by number or on NumPy arrays (`arrays`).
Both must give what the torch array paths give, bit for bit: bounds, verdicts, bands, notes.
Each test runs the same models both ways (the fast paths switched off by setting their size
limits to 0) and compares entry by entry; and the fast paths must be taken for a small model."""

from __future__ import annotations

import json
import random

import pytest
import sympy as sp
import torch
from corpus import CASES, LAYERS, TAIL_POINTS, TORCH_FUNCTIONS, layer_model, tanh_network, torch_function_model

from gradcheck_sym import Model, checks, errorbound, scalars, verifier, verify
from gradcheck_sym.results import model_to_dict
from gradcheck_sym.testing import assert_gradients

x, y, w, w1, w2, pad = sp.symbols("x y w w1 w2 pad", real=True)


def two_weights() -> Model:
    return Model(name="two-weights", loss=(sp.tanh(w1 * x) * w2 - y) ** 2, params=[w1, w2], inputs=[x, y],
                 domain={"*": (-2, 2)}, impl=lambda w1, w2, x, y: (torch.tanh(w1 * x) * w2 - y) ** 2)


def slipped_impl(w1, w2, x, y):  # type: ignore[no-untyped-def]
    return (torch.tanh(w1 * x) * w2 * (1 + 1e-9) - y) ** 2  # off by a relative 1e-9: a mismatch in float64


@pytest.fixture
def array_paths(monkeypatch):  # type: ignore[no-untyped-def]
    """A function that runs ``f()`` with the fast paths switched off (``numpy=True``: all but the
    NumPy arrays, so that groups are judged on them instead of number by number)."""

    def run(f, numpy=False):  # type: ignore[no-untyped-def]
        with monkeypatch.context() as m:
            m.setattr(checks, "FLOAT_VALUES", 0)
            if not numpy:
                m.setattr(scalars, "SCALAR_POINTS", 0)
                m.setattr(checks, "NUMPY_VALUES", 0)
            return f()

    return run


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype and a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())


def _scales_both_ways(gp, points, array_paths):  # type: ignore[no-untyped-def]
    errorbound._LAST_PASS.clear()
    fast = errorbound.error_scales_batch(gp, points, explained=True)
    slow = array_paths(lambda: errorbound.error_scales_batch(gp, points, explained=True))
    for field in ("worst", "probable", "explained", "largest"):
        assert _same(getattr(fast, field), getattr(slow, field)), (field, getattr(fast, field), getattr(slow, field))


def _result(model: Model, **kw) -> str:  # type: ignore[no-untyped-def]
    errorbound._LAST_PASS.clear()  # the last error pass is kept: the other path must compute its own
    return json.dumps(model_to_dict(verify(model, **kw)), sort_keys=True, default=str)


def _verify_both_ways(model: Model, array_paths, **kw) -> str:  # type: ignore[no-untyped-def]
    fast = _result(model, **kw)
    slow = array_paths(lambda: _result(model, **kw))
    assert fast == slow  # every check's verdict, tolerance, errors, attribution, note; every summary
    assert array_paths(lambda: _result(model, **kw), numpy=True) == slow  # groups too large for floats
    return fast


TORCH_CASES = [(name, i) for name, (_, decls) in TORCH_FUNCTIONS.items() for i in range(len(decls))]


@pytest.mark.parametrize(("name", "i"), TORCH_CASES)
def test_float_error_pass_gives_the_tensor_bounds_bit_for_bit(name, i, array_paths):  # type: ignore[no-untyped-def]
    prepared = verifier.prepare(torch_function_model(name, i))
    assert scalars.supported(prepared.gradient.prog) or name == "torch.nn.functional.softsign"  # Abs: pw
    for p in TAIL_POINTS:  # one point, and two (a check's float64 and float32 points)
        _scales_both_ways(prepared.gradient, [[float(p)]], array_paths)
        _scales_both_ways(prepared.gradient, [[float(p)], [float(torch.tensor(p / 3, dtype=torch.float32))]],
                          array_paths)
    _scales_both_ways(prepared.gradient, [[float(p)] for p in TAIL_POINTS[:scalars.SCALAR_POINTS]], array_paths)
    hessian = prepared.sensitivity_program()
    wrt = [e.symbol for e in prepared.entries]
    errorbound._LAST_PASS.clear()
    fast = errorbound.input_sensitivity(hessian, wrt, [[0.7]])
    errorbound._LAST_PASS.clear()
    assert _same(fast, array_paths(lambda: errorbound.input_sensitivity(hessian, wrt, [[0.7]])))


@pytest.mark.parametrize(("name", "i"), [("torch.tanh", 1), ("torch.nn.functional.gelu", 0),
                                         ("torch.nn.functional.logsigmoid", 1), ("torch.nn.functional.softsign", 0)])
def test_single_point_verdicts_are_the_array_paths_verdicts(name, i, array_paths):  # type: ignore[no-untyped-def]
    model = torch_function_model(name, i)
    for p in (-30, -3, 0.5, 12, 30):
        _verify_both_ways(model, array_paths, points=[{x: p}], samples=0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_real_code_right_and_wrong_same_verdicts_both_ways(name, array_paths):  # type: ignore[no-untyped-def]
    text = _verify_both_ways(CASES[name].model(), array_paths, samples=1, seed=2)
    if CASES[name].wrong:  # mismatches, attributed with finite differences, went through the fast path
        assert '"verdict": "mismatch"' in text


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_corners_same_verdicts_both_ways(name, array_paths):  # type: ignore[no-untyped-def]
    model = layer_model(name)
    corners = LAYERS[name][2]
    for p in (*corners, corners[0] - 0.5, 0.25):
        text = _verify_both_ways(model, array_paths, points=[{x: p}], samples=0)
        if p in corners:
            assert '"verdict": "nondifferentiable"' in text


def test_two_weights_random_points_and_a_planted_error_same_both_ways(array_paths):  # type: ignore[no-untyped-def]
    rng = random.Random(0)
    model = two_weights()
    wrong = two_weights().with_implementations(impl=slipped_impl)
    for m in (model, wrong):
        for _ in range(4):
            point = {s: rng.uniform(-2, 2) for s in (w1, w2, x, y)}
            text = _verify_both_ways(m, array_paths, points=[point], samples=0)
            assert ('"verdict": "mismatch"' in text) == (m is wrong)


def test_unreached_weight_and_ops_without_float_rules_same_both_ways(array_paths):  # type: ignore[no-untyped-def]
    padded = Model(name="padded", loss=(w * x - y) ** 2, params=[w, pad], inputs=[x, y], domain={"*": (-2, 2)},
                   grad_impl=lambda w, pad, x, y: {"w": 2 * (w * x - y) * x, "pad": 1e-300 * x})
    assert '"verdict": "mismatch"' in _verify_both_ways(padded, array_paths, samples=1, seed=3)
    for loss in (sp.loggamma(w * x + 3) * y, sp.floor(3 * w) * w * x, sp.sinc(w * x) + y):
        model = Model(name="other-ops", loss=loss, params=[w], inputs=[x, y], domain={"*": (0.5, 2)})
        _verify_both_ways(model, array_paths, samples=1, seed=1)
        gp = verifier.prepare(model).gradient
        _scales_both_ways(gp, [[0.7, 1.3, 0.9]], array_paths)


def test_a_network_same_both_ways(array_paths):  # type: ignore[no-untyped-def]
    # imprecise verdicts: the explained bound was computed (torch.tanh against 1 − 2/(e²ᶻ + 1))
    text = _verify_both_ways(tanh_network("1-2/(exp(2z)+1)"), array_paths, samples=1, seed=4)
    assert '"verdict": "imprecise"' in text


def test_a_single_point_check_of_a_small_model_takes_the_fast_paths(monkeypatch):  # type: ignore[no-untyped-def]
    calls = {"float": 0, "tensor": 0, "floats": 0}

    def counting(key, f):  # type: ignore[no-untyped-def]
        def wrapped(*a, **k):  # type: ignore[no-untyped-def]
            calls[key] += 1
            return f(*a, **k)

        return wrapped

    monkeypatch.setattr(errorbound._FloatPass, "run", counting("float", errorbound._FloatPass.run))
    monkeypatch.setattr(errorbound._Pass, "run", counting("tensor", errorbound._Pass.run))
    monkeypatch.setattr(checks, "_assembled", counting("floats", checks._assembled))
    model = two_weights()
    assert_gradients(model, points=[{w1: 0.1, w2: -1.3, x: 1.7, y: 0.3}], samples=0)  # not float32 values
    # the error pass at 2 points (float64 and float32), the Hessian's at 2; every source agrees, so
    # the explained bound (a widened pass, and activation_sensitivity's torch pass) is never computed
    assert calls["float"] == 4
    assert calls["tensor"] == 0
    # per dtype, judged number by number: loss and gradient of autograd and impl, the fd of both forwards
    assert calls["floats"] == 2 * 6
    calls.update(float=0, tensor=0, floats=0)
    verify(model, samples=5, seed=0)  # 5 points: the tensor paths
    assert calls["float"] == 0 and calls["tensor"] > 1


def test_the_explained_bound_is_computed_only_where_a_source_disagrees(monkeypatch):  # type: ignore[no-untyped-def]
    computed = []
    sensitivity = errorbound.activation_sensitivity
    monkeypatch.setattr(errorbound, "activation_sensitivity", lambda *a: computed.append(1) or sensitivity(*a))
    point = [{w1: 0.1, w2: -1.3, x: 1.7, y: 0.3}]
    assert verify(two_weights(), points=point, samples=0).status == "pass"
    assert computed == []
    slipped = two_weights().with_implementations(impl=slipped_impl)
    assert verify(slipped, points=point, samples=0).status == "fail"
    assert computed == [1]  # once for both dtypes
