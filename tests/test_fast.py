"""Issue 12: finite differences only where they add information, the impl's finite differences
batched with torch.func.vmap (and the loop where that does not work), and finite differences at
the edge of a forward's domain (issue 10, item 5)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import sympy as sp
import torch
import torch.nn.functional as F

from gradcheck_sym import Model, verify, verifier
from gradcheck_sym.checks import FD_UNAVAILABLE
from gradcheck_sym.report import save
from gradcheck_sym.results import RunResult, model_from_dict, model_to_dict
from gradcheck_sym.sources import IMPL_LOOP, IMPL_VMAP

x, y, w, b = sp.symbols("x y w b", real=True)
SAMPLES = 40  # more than verifier.FD_SAMPLE


def tanh_model(**kw):
    return Model(name="tanh-fit", loss=(sp.tanh(w * x) + b - y) ** 2, params=[w, b], inputs=[x, y],
                 domain={"*": (-2, 2)}, **kw)


def tanh_impl(w, b, x, y):
    return (torch.tanh(w * x) + b - y) ** 2


def by_key(r):
    return {(c.source, c.forward, c.dtype, c.param, c.point, c.quantity): c for c in r.checks}


def test_fd_at_a_sample_when_every_source_agrees_and_nothing_else_changes(monkeypatch):
    sample = verifier.FD_SAMPLE
    sampled = verify(tanh_model(impl=tanh_impl), samples=SAMPLES, seed=2)
    monkeypatch.setattr(verifier, "FD_SAMPLE", 10**6)  # the same check with fd at every point
    everywhere = verify(tanh_model(impl=tanh_impl), samples=SAMPLES, seed=2)
    assert sampled.status == everywhere.status == "pass"
    assert sampled.fd_points == {"float64": sample, "float32": sample}
    assert everywhere.fd_points == {}
    fd = [s for s in sampled.summaries if s.source == "fd"]
    assert {(s.forward, s.dtype) for s in fd} == {(f, d) for f in ("model", "impl") for d in ("float64", "float32")}
    assert all(s.checks == sample * 2 for s in fd)  # two entries at each sampled point
    # every other check is the same, bit for bit; the fd checks are those of the sampled points
    mine, full = by_key(sampled), by_key(everywhere)
    assert {k: c for k, c in mine.items() if k[0] != "fd"} == {k: c for k, c in full.items() if k[0] != "fd"}
    sampled_fd = {k: c for k, c in mine.items() if k[0] == "fd"}
    assert sampled_fd and all(full[k] == c for k, c in sampled_fd.items())
    assert {k[4] for k in sampled_fd} == set(range(sample))


class WrongForPositive(torch.autograd.Function):
    """tanh whose backward drops the factor 1 − tanh² where the argument is positive."""

    @staticmethod
    def forward(z):
        return torch.tanh(z)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], output)

    @staticmethod
    def backward(ctx, g):
        z, t = ctx.saved_tensors
        return g * torch.where(z > 0, torch.ones_like(t), 1 - t * t)


def test_fd_is_computed_wherever_a_source_disagrees_so_attribution_is_kept():
    r = verify(tanh_model(impl=lambda w, b, x, y: (WrongForPositive.apply(w * x) + b - y) ** 2), samples=SAMPLES,
               seed=2)
    assert r.status == "fail"
    failed = [c for c in r.failed if c.quantity == "grad" and c.param == "w"]
    assert failed and all(c.attribution == "wrong" for c in failed)  # fd agrees with the exact value there
    fd_at = {(c.dtype, c.point) for c in r.checks if c.source == "fd" and c.forward == "impl"}
    assert {(c.dtype, c.point) for c in failed} <= fd_at
    points = {d: {p for dd, p in fd_at if dd == d} for d in ("float64", "float32")}
    for dtype, n in r.fd_points.items():
        assert len(points[dtype]) == n < SAMPLES


def test_fd_points_and_impl_calls_survive_json_and_are_in_the_report(tmp_path):
    r = verify(tanh_model(impl=tanh_impl), samples=SAMPLES, seed=2)
    assert r.impl_calls == IMPL_VMAP
    assert model_from_dict(model_to_dict(r)) == r
    run = RunResult(tool_version="x", versions={}, command="c", seed=2, samples=SAMPLES, dtypes=("float64", "float32"),
                    models=(r,))
    save(run, tmp_path)
    page = next(p for p in tmp_path.rglob("*.md") if "tanh-fit" in p.name).read_text()
    assert f"Finite differences were computed at {verifier.FD_SAMPLE} of {SAMPLES} points in float64" in page
    assert f"Calls of the `impl` for finite differences: {IMPL_VMAP}." in page


class OldStyle(torch.autograd.Function):
    """A Function without ``setup_context``: torch.func.vmap cannot run it."""

    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return z * z

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        return 2 * z * g


def test_code_vmap_cannot_run_is_called_row_by_row_and_says_why():
    m = Model(name="square", loss=(w * x) ** 2, params=[w], inputs=[x], domain={"*": (-2, 2)},
              impl=lambda w, x: OldStyle.apply(w * x))
    r = verify(m, samples=SAMPLES, seed=1)
    assert r.status == "pass"
    assert r.impl_calls.startswith(f"{IMPL_LOOP} (torch.func.vmap refused it: ")
    fd = [s for s in r.summaries if s.source == "fd" and s.forward == "impl"]
    assert fd and all(s.agree == s.checks for s in fd)


def test_vmapped_and_looped_finite_differences_agree():
    m = tanh_model(impl=tanh_impl)
    plain = verify(m, samples=6, seed=5)
    looped = verify(tanh_model(impl=lambda w, b, x, y: OldStyle.apply(torch.tanh(w * x) + b - y)),
                    samples=6, seed=5)
    assert plain.impl_calls == IMPL_VMAP and looped.impl_calls.startswith(IMPL_LOOP)
    for r in (plain, looped):
        fd = [c for c in r.checks if c.source == "fd" and c.forward == "impl" and c.dtype == "float64"]
        assert len(fd) == 2 * 6 and all(c.verdict == "agree" for c in fd)


# -- the edge of a forward's domain (issue 10, item 5) -------------------------------------------

p = sp.Symbol("p", real=True)
EDGE = sp.Rational(1, 2**12)  # closer to 0 than a finite-difference step in either dtype


def bce_model(**kw):
    # binary cross-entropy of a probability p against a label y, next to the edges of its domain
    return Model(name="bce", loss=-(y * sp.log(p) + (1 - y) * sp.log(1 - p)) * w, params=[w, p], inputs=[y],
                 points=[{y: 0, p: EDGE, w: sp.Rational(3, 2)}, {y: 1, p: 1 - EDGE, w: sp.Rational(1, 2)}], **kw)


def bce_impl(w, p, y):
    return F.binary_cross_entropy(p, y) * w  # raises for p outside [0, 1]


def test_fd_at_the_edge_of_the_impls_domain_is_one_sided_not_an_error():
    r = verify(bce_model(impl=bce_impl), samples=0)
    assert r.status == "pass", r.error or r.failed
    fd = [c for c in r.checks if c.source == "fd" and c.param == "p"]
    assert len(fd) == 2 * 2 * 2  # two points, two dtypes, the model's forward and the impl's
    assert all(c.verdict == "agree" for c in fd)  # one-sided differences


def test_fd_where_neither_side_is_defined_is_unavailable_not_a_mismatch():
    # defined only at w = 1 itself: every step leaves the domain
    m = Model(name="pinned", loss=w * x, params=[w], inputs=[x], points=[{w: 1, x: 3}],
              impl=lambda w, x: torch.where(w == 1, w * x, torch.full_like(w, math.nan)))
    r = verify(m, samples=0)
    assert r.status == "pass"
    fd = [c for c in r.checks if c.source == "fd" and c.forward == "impl"]
    assert fd and all(c.verdict == "undefined" and c.note == FD_UNAVAILABLE for c in fd)
    model_fd = [c for c in r.checks if c.source == "fd" and c.forward == "model"]
    assert model_fd and all(c.verdict == "agree" for c in model_fd)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_one_sided_difference_is_exact_enough_to_attribute(dtype):
    # a wrong backward at the edge is still attributed to the backward
    class Slip(torch.autograd.Function):
        @staticmethod
        def forward(q):
            return torch.log(q)

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])

        @staticmethod
        def backward(ctx, g):
            (q,) = ctx.saved_tensors
            return g / q * 1.5

    m = Model(name="log-edge", loss=sp.log(p), params=[p], inputs=[], points=[{p: EDGE}],
              impl=lambda p: Slip.apply(p))
    r = verify(m, samples=0, dtypes=[dtype])
    assert r.status == "fail"
    bad = [c for c in r.failed if c.source == "impl" and c.quantity == "grad"]
    assert bad and all(c.attribution == "wrong" for c in bad)
    assert dataclasses.asdict(bad[0])["point"] == 0


# -- item 1: the small-group summary counted in Python is the tensor code's, exactly -------------


def summary_models():
    inf_impl = lambda w, b, x, y: (torch.tanh(w * x) + b - y) ** 2 + torch.where(w > 0, w * 0, 1 / (w * 0))  # noqa: E731
    return [
        (tanh_model(impl=tanh_impl), {}),
        (tanh_model(impl=lambda w, b, x, y: (WrongForPositive.apply(w * x) + b - y) ** 2), {}),  # mismatches
        (tanh_model(impl=inf_impl), {}),  # inf and NaN values
        (Model(name="corner", loss=sp.Abs(w) * x, params=[w], inputs=[x], points=[{w: 0, x: 2}, {w: 1, x: 3}],
               impl=lambda w, x: torch.abs(w) * x), {}),  # a corner
        (Model(name="edge", loss=sp.log(p) * w, params=[w, p], inputs=[], points=[{p: 0, w: 1}, {p: EDGE, w: 2}]),
         {}),  # undefined at p = 0
        (bce_model(impl=bce_impl), {}),
    ]


@pytest.mark.parametrize("k", range(6))
def test_small_summaries_equal_the_tensor_summaries(monkeypatch, k):
    from gradcheck_sym import checks

    model, _ = summary_models()[k]
    fast = verify(model, samples=3, seed=4)
    monkeypatch.setattr(checks, "SMALL_SUMMARY", -1)
    slow = verify(model, samples=3, seed=4)
    assert fast.status == slow.status and fast.status != "error", fast.error
    assert model_to_dict(fast) == model_to_dict(slow)  # as JSON: NaN is "nan" on both sides


def test_a_timeout_inside_the_impls_finite_differences_is_not_swallowed():
    import time

    def slow(w, x):
        if not torch.is_grad_enabled():  # the finite differences' rows (vmap refuses OldStyle: one call each)
            time.sleep(0.05)
        return OldStyle.apply(w * x)

    m = Model(name="slow", loss=(w * x) ** 2, params=[w], inputs=[x], domain={"*": (-2, 2)}, impl=slow)
    t0 = time.perf_counter()
    r = verify(m, samples=SAMPLES, seed=1, timeout=1.0)
    assert r.status == "error" and "timed out" in (r.error or "")
    assert time.perf_counter() - t0 < 3.0  # it stopped at the budget, not after every row
