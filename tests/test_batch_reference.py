"""Exact references of many points at once (issue 12, row 2): the same values as point by point,
and the batch is what actually runs."""

from __future__ import annotations

import random
import struct
from fractions import Fraction

import pytest
import sympy as sp
import torch
from flint import arb, fmpq

from gradcheck_sym import Model, reference, verify
from gradcheck_sym.errorbound import _chain, _output_errors, activations
from gradcheck_sym.graph import compile_expr
from gradcheck_sym.reference import ExactValue, program_values, program_values_many
from gradcheck_sym.sampling import _float32_bounds, points_for, round_to, rounded, to_float32
from gradcheck_sym.verifier import _point_dict, _point_dicts, prepare, references
from gradcheck_sym.zoo import mlp

x, w, v = sp.symbols("x w v", real=True)


def _described(value: object) -> object:
    if isinstance(value, arb):
        return ("arb", str(value.mid()), str(value.rad()))  # the very same ball
    return value


def _same(a: reference.ProgramValues, b: reference.ProgramValues) -> None:
    assert (a.arithmetic, a.boundary) == (b.arithmetic, b.boundary)
    assert len(a.values) == len(b.values)
    for p, q in zip(a.values, b.values):
        assert (p.kind, p.reason) == (q.kind, q.reason)
        assert [_described(getattr(p, f)) for f in ("value", "left", "right")] == \
            [_described(getattr(q, f)) for f in ("value", "left", "right")]


# exp(w) - 1 - w at a tiny w cancels to w²/2: 128 bits are not narrow enough, the batch hands it on
PROGRAM = compile_expr((sp.exp(x * w) - 1 - x * w) * sp.sqrt(v) + (v - 1) / v, (x, w, v), rewrite_kinks=True)
POINTS = {
    "rational": [fmpq(0), fmpq(3), fmpq(4)],  # exp(0) = 1, sqrt(4) = 2
    "ball": [fmpq(1, 3), fmpq(2), fmpq(5)],
    "undefined": [fmpq(1), fmpq(1), fmpq(-4)],  # sqrt of a negative
    "pole": [fmpq(1), fmpq(1), fmpq(0)],
    "cancellation": [fmpq(1), fmpq(1, 2**70), fmpq(1)],
}


def test_many_points_give_what_each_point_gives() -> None:
    names = list(POINTS)
    many = program_values_many(PROGRAM, [POINTS[n] for n in names])
    for name, got in zip(names, many):
        _same(got, program_values(PROGRAM, POINTS[name]))
    kinds = {n: r.values[0].kind for n, r in zip(names, many)}
    assert kinds == {"rational": "value", "ball": "value", "undefined": "undefined", "pole": "undefined",
                     "cancellation": "value"}
    arithmetic = {n: r.arithmetic for n, r in zip(names, many)}
    assert arithmetic["rational"] == "rational" and arithmetic["ball"] == f"ball/{reference.START_PREC}"
    assert arithmetic["cancellation"] != f"ball/{reference.START_PREC}"  # raised precision, certified
    tiny = many[names.index("cancellation")].values[0].value  # w²/2 + w³/6 + ...
    assert tiny.rel_accuracy_bits() >= reference.NARROW_BITS and float(tiny.mid()) == 2.0**-141


def test_the_batch_runs_without_falling_back(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    original = reference.program_values

    def counted(prog, point, **kw):  # type: ignore[no-untyped-def]
        calls.append(point)
        return original(prog, point, **kw)

    monkeypatch.setattr(reference, "program_values", counted)
    program_values_many(PROGRAM, [POINTS[n] for n in ("rational", "ball", "undefined", "pole")])
    assert calls == []  # every one in the batch, undefined values included
    program_values_many(PROGRAM, [POINTS["ball"], POINTS["cancellation"]])
    assert calls == [POINTS["cancellation"]]  # only the point that needs more precision


def test_exact_value_of_is_an_ordinary_value() -> None:
    a, b = ExactValue.of(arb(3)), ExactValue("value", arb(3))
    assert (a.kind, a.left, a.right, a.reason, a.is_value) == (b.kind, b.left, b.right, b.reason, b.is_value)
    q = ExactValue.of(fmpq(1, 3))
    assert q == ExactValue("value", fmpq(1, 3)) and hash(q) == hash(ExactValue("value", fmpq(1, 3)))


def test_references_of_a_large_model_are_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    m = mlp()
    prepared = prepare(m)
    assert not prepared.small  # no limits: the batch path
    pts = rounded(points_for(m, 3, 5), m.symbols, "float64")
    calls: list[object] = []
    original = reference.program_values

    def counted(prog, point, **kw):  # type: ignore[no-untyped-def]
        if prog is prepared.gradient.prog:
            calls.append(point)
        return original(prog, point, **kw)

    monkeypatch.setattr(reference, "program_values", counted)
    refs, _, _ = references(prepared, pts, 1.0)
    assert calls == []
    monkeypatch.setattr(reference, "program_values", original)
    for p in pts:
        one = reference.reference_at(prepared.gradient, [fmpq(*q.as_integer_ratio()) for q in p],
                                     rational=prepared.gradient.maybe_rational)
        assert refs[p].arithmetic == one.arithmetic == f"ball/{reference.START_PREC}"
        assert [_described(g.value) for g in (refs[p].loss, *refs[p].grads)] == \
            [_described(g.value) for g in (one.loss, *one.grads)]


def test_activation_sizes_are_the_point_by_point_ones() -> None:
    prog = compile_expr(sp.tanh(w * x) ** 2 + sp.exp(-w), (w, x), rewrite_kinks=False)
    y, z = activations(prog)[0]
    sub, _ = _chain(prog, y, z)
    zs = torch.tensor([0.0, 0.5, -3.0, 40.0, float("inf"), float("nan")], dtype=torch.float64)
    expected = []
    for t in zs.tolist():
        if t != t or abs(t) == float("inf"):
            expected.append(0.0)
            continue
        f, d1, d2 = (float(val.value.mid()) if isinstance(val.value, arb) else float(val.value)
                     for val in program_values(sub, [fmpq(*t.as_integer_ratio())]).values)
        expected.append(0.0 if d1 == 0 else abs(f) * abs(d2) / abs(d1))
    assert _output_errors(sub, zs).tolist() == pytest.approx(expected, rel=1e-15, abs=0)
    assert _output_errors(sub, zs)[3] > 0  # the tail: exact values, not a float f' of 0


def _drawn_one_at_a_time(model: Model, samples: int, seed: int) -> list[dict]:
    """The draw as it was written before it was batched: one `struct` rounding per value."""
    rng = random.Random(f"{seed}:{model.name}")
    out = []
    for _ in range(samples):
        point = {}
        for s in model.symbols:
            lo, hi = _float32_bounds(*model.domain[s])
            point[s] = min(max(to_float32(rng.uniform(lo, hi)), lo), hi)
        out.append(point)
    return out


def test_batched_draw_and_rounding_are_the_one_at_a_time_ones() -> None:
    m = Model(name="draw", loss=(w * x - v) ** 2, params=[w], inputs=[x, v],
              domain={x: (-1, 1), w: (-3e38, 3e38), v: (0, Fraction(1, 3))})
    got = points_for(m, 200, 7)
    want = _drawn_one_at_a_time(m, 200, 7)
    assert [[struct.pack("<d", p[s]) for s in m.symbols] for p in got] == \
        [[struct.pack("<d", p[s]) for s in m.symbols] for p in want]  # bit for bit
    exact = [{x: Fraction(1, 3), w: Fraction(-7, 10**40), v: 1e30}]
    for d in ("float64", "float32", "bfloat16"):
        assert rounded(got + exact, m.symbols, d) == [tuple(round_to(p[s], d) for s in m.symbols) for p in got + exact]
    beyond = [{x: 1e39, w: -1e300, v: float("nan")}]  # outside float32's range: as `to_float32` rounds them
    assert str(rounded(beyond, m.symbols, "float32")) == str([tuple(to_float32(p[s]) for s in m.symbols) for p in beyond])


def test_report_points_are_the_per_point_dicts() -> None:
    m = mlp()
    pts = rounded(points_for(m, 4, 2), m.symbols, "float32")
    assert _point_dicts(m, pts) == [_point_dict(m, p) for p in pts]
    assert _point_dicts(m, []) == []


def test_one_conversion_of_the_references_serves_both_dtypes(monkeypatch: pytest.MonkeyPatch) -> None:
    from gradcheck_sym import cache, checks

    monkeypatch.setattr(cache, "_DISABLED", True)  # restored after the test (`cache.disable()` leaked into later tests)
    calls = []
    original = checks.exact_arrays

    def counted(refs, *a, **kw):  # type: ignore[no-untyped-def]
        calls.append(len(refs))
        return original(refs, *a, **kw)

    monkeypatch.setattr(checks, "exact_arrays", counted)
    m = Model(name="both", loss=(sp.tanh(w * x) - v) ** 2, params=[w], inputs=[x, v], domain={"*": (-2, 2)},
              points=[{x: Fraction(1, 3), w: Fraction(1, 7), v: Fraction(2, 3)}])
    r = verify(m, samples=5, seed=1)
    assert r.status == "pass" and set(r.points) == {"float64", "float32"}
    assert calls == [7]  # 5 random points shared by both dtypes + the explicit point rounded twice


# -- the activation sizes beside the exact gradient (`worker.Beside`) ---------------------------

def test_work_beside_runs_in_a_child_and_gives_its_result() -> None:
    import os

    from gradcheck_sym.worker import Beside

    with Beside(lambda: (os.getpid(), torch.arange(3.0) * 2)) as b:
        pid, t = b.result()
    assert b.forked and pid != os.getpid() and t.tolist() == [0.0, 2.0, 4.0]
    with Beside(lambda: os.getpid(), fork=False) as b:
        assert b.result() == os.getpid() and not b.forked


def test_a_child_that_crashes_or_fails_leaves_the_work_to_this_process() -> None:
    import os
    import signal

    from gradcheck_sym.worker import Beside

    parent = os.getpid()

    def crash() -> int:
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)  # a crash in native code, in the child
        return 7

    def fails_there() -> int:
        if os.getpid() != parent:
            raise RuntimeError("Autograd-and-Fork")  # as a CUDA build's torch says it in a child
        return 8

    unpicklable = lambda: (lambda: 9) if os.getpid() != parent else 9  # noqa: E731
    for work, want in ((crash, 7), (fails_there, 8), (unpicklable, 9)):
        with Beside(work) as b:
            assert b.result() == want and not b.forked


def test_leaving_the_block_early_stops_the_child() -> None:
    import os
    import time

    from gradcheck_sym.worker import Beside

    with pytest.raises(KeyboardInterrupt):
        with Beside(lambda: time.sleep(60)) as b:
            pid = b.pid
            assert pid is not None
            raise KeyboardInterrupt  # Ctrl-C while this process computes its half
    assert b.pid is None
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # stopped and reaped: no child left behind


def _recorded_besides(monkeypatch: pytest.MonkeyPatch) -> list:  # type: ignore[type-arg]
    """Every `worker.Beside` made from now on (the test's monkeypatch undoes it)."""
    from gradcheck_sym import worker

    made: list[worker.Beside] = []

    class Recorded(worker.Beside):
        def __init__(self, *a, **kw) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*a, **kw)
            made.append(self)

    monkeypatch.setattr(worker, "Beside", Recorded)
    return made


def test_large_runs_compute_the_activation_sizes_beside(monkeypatch: pytest.MonkeyPatch) -> None:
    from gradcheck_sym import cache, verifier

    monkeypatch.setattr(cache, "_DISABLED", True)  # restored after the test (`cache.disable()` leaked into later tests)
    m = mlp()
    prepared = prepare(m)
    from gradcheck_sym.scalars import SCALAR_POINTS

    # more points than the few whose explained bound waits until a source disagrees
    pts = rounded(points_for(m, SCALAR_POINTS + 2, 3), m.symbols, "float64")
    made = _recorded_besides(monkeypatch)
    monkeypatch.setattr(verifier, "core_to_spare", lambda: True)
    monkeypatch.setattr(verifier, "OVERLAP_WORK", 1)
    _, _, forked = references(prepared, pts, 1.0)
    # the sizes came from the child (unless a CUDA build's torch, having run autograd on device
    # threads in this process, refused it there: then they were computed here, as the next test plants)
    assert made and (made[-1].forked or torch.cuda.is_available())
    monkeypatch.setattr(verifier, "OVERLAP_WORK", 10**12)
    _, _, inline = references(prepared, pts, 1.0)
    assert not made[-1].forked
    assert set(forked) == set(inline)
    for k in forked:
        torch.testing.assert_close(forked[k], inline[k], rtol=0, atol=0, equal_nan=True)  # bit for bit


def test_a_child_whose_torch_refuses_autograd_leaves_the_activation_sizes_to_this_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA build of torch that ran autograd on device threads refuses it in a forked child with
    a RuntimeError; `activation_sensitivity` turns a RuntimeError into "no sizes" (zeros), and
    before the fix the child returned those zeros as its answer (found on a GPU machine: 1,344 of
    1,350 sizes differed from the ones computed here).  Planted here on any machine."""
    import os

    from gradcheck_sym import cache, errorbound, verifier
    from gradcheck_sym.scalars import SCALAR_POINTS

    monkeypatch.setattr(cache, "_DISABLED", True)
    m = mlp()
    prepared = prepare(m)
    pts = rounded(points_for(m, SCALAR_POINTS + 2, 4), m.symbols, "float64")
    parent, real = os.getpid(), errorbound._activation_sensitivity

    def refusing(*a, **kw):  # type: ignore[no-untyped-def]
        if os.getpid() != parent:
            raise RuntimeError("Unable to handle autograd's threading in combination with fork-based multiprocessing")
        return real(*a, **kw)

    made = _recorded_besides(monkeypatch)
    monkeypatch.setattr(errorbound, "_activation_sensitivity", refusing)
    monkeypatch.setattr(verifier, "core_to_spare", lambda: True)
    monkeypatch.setattr(verifier, "OVERLAP_WORK", 1)
    _, _, tried = references(prepared, pts, 1.0)
    assert made and made[-1].pid is None and not made[-1].forked  # a child ran, and gave nothing
    monkeypatch.setattr(verifier, "OVERLAP_WORK", 10**12)
    _, _, inline = references(prepared, pts, 1.0)
    assert bool((inline["explained"] > 0).any())
    for k in inline:
        torch.testing.assert_close(tried[k], inline[k], rtol=0, atol=0, equal_nan=True)


def test_float_points_are_the_binary_fractions_they_are() -> None:
    floats = [[0.1, 2.5, 5.0], [0.0, 3.0, 4.0], [1.0, -0.75, 1e-300]]
    many = program_values_many(PROGRAM, floats)
    for got, p in zip(many, floats):
        _same(got, program_values(PROGRAM, [fmpq(*q.as_integer_ratio()) for q in p]))
    assert many[1].arithmetic == "rational"
    with pytest.raises((OverflowError, ValueError)):  # as a fraction of it would: no such number
        program_values_many(PROGRAM, [[float("inf"), 1.0, 1.0]])


def test_floats_of_many_points_are_those_of_their_exact_values(monkeypatch: pytest.MonkeyPatch) -> None:
    from gradcheck_sym.compare import as_float
    from gradcheck_sym.reference import NOT_VALUES, program_floats_many

    names = list(POINTS)
    want = []
    for n in names:
        r = program_values(PROGRAM, POINTS[n])
        want.append(tuple(as_float(v.value) for v in r.values) if all(v.is_value for v in r.values) else NOT_VALUES)
    calls: list[object] = []
    original = reference.program_values
    monkeypatch.setattr(reference, "program_values", lambda prog, p, **kw: calls.append(p) or original(prog, p, **kw))
    assert program_floats_many(PROGRAM, [POINTS[n] for n in names]) == want
    assert calls == [POINTS["cancellation"]]  # the others in the batch
    assert want[names.index("undefined")] == NOT_VALUES and want[names.index("rational")] == (0.75,)


def test_no_child_on_a_busy_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from gradcheck_sym import verifier

    monkeypatch.setattr(os, "getloadavg", lambda: ((os.cpu_count() or 1) + 0.0, 0.0, 0.0))
    assert not verifier.core_to_spare()
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert verifier.core_to_spare() == ((os.cpu_count() or 1) >= 2)


def test_straight_line_powers_are_the_registry_rule_ball_for_ball() -> None:
    from flint import ctx

    from gradcheck_sym.arith import Balls, Rationals

    prepared = prepare(mlp())
    prog = prepared.gradient.prog
    compiled = reference._straight_line(prog)
    assert compiled is not None
    source = compiled[0].__code__.co_names
    assert "inv" in source  # 1/x without the general power's dispatch
    pts = rounded(points_for(prepared.model, 3, 4), prepared.model.symbols, "float64")
    old = ctx.prec
    ctx.prec = reference.START_PREC
    try:
        A = Balls()
        for p in pts:
            fast, _, _ = reference._evaluate(prog, A, [arb(q) for q in p])
            slots, _ = reference._run(prog, A, [arb(q) for q in p])  # instruction by instruction
            for a, b in zip(fast, (reference._value(A, slots[o]) for o in prog.outputs)):
                assert a.mid() == b.mid() and a.rad() == b.rad()
    finally:
        ctx.prec = old
    Q = Rationals()
    assert (Q.inv(fmpq(-2, 3)), Balls().inv(arb(0)).is_finite()) == (fmpq(-3, 2), False)
    with pytest.raises(reference.NotRational):
        Q.inv(fmpq(0))


def test_the_batch_runs_with_the_cycle_collector_paused_and_restores_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from gradcheck_sym.reference import collection_paused

    seen = []
    original = reference._ball_values

    def recorded(*a, **kw):  # type: ignore[no-untyped-def]
        seen.append(gc.isenabled())
        return original(*a, **kw)

    monkeypatch.setattr(reference, "_ball_values", recorded)
    assert gc.isenabled()
    program_values_many(PROGRAM, [POINTS["ball"]])
    assert seen == [False] and gc.isenabled()
    with pytest.raises(ZeroDivisionError):
        with collection_paused():
            1 / 0  # noqa: B018
    assert gc.isenabled()
    gc.disable()
    try:
        with collection_paused():
            pass
        assert not gc.isenabled()  # paused by someone else: left so
    finally:
        gc.enable()


def test_a_child_that_never_answers_is_given_up_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import time

    from gradcheck_sym import worker

    parent = os.getpid()
    monkeypatch.setattr(worker, "PATIENCE_MIN", 0.3)
    start = time.monotonic()
    with worker.Beside(lambda: time.sleep(60) if os.getpid() != parent else 5) as b:
        pid = b.pid
        assert b.result() == 5 and not b.forked  # computed here
    assert time.monotonic() - start < 30
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # the stuck child was stopped
