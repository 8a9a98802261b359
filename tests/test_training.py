"""The lecture's training loop: float32 prints what the lecture's program printed; exact beside it."""

from __future__ import annotations

from pathlib import Path

from flint import fmpq

from gradcheck_sym.training import exact_run, replay

# The lecture program's measured output (../shared/seed/README.md), "..." marking omitted lines.
LECTURE = (Path(__file__).parent / "data" / "lecture_output.txt").read_text().splitlines()


def test_float32_run_prints_what_the_lecture_printed():
    lines = list(replay().lines_float32)
    head = LECTURE[: LECTURE.index("...")]
    tail = LECTURE[LECTURE.index("...") + 1 :]
    assert lines[: len(head)] == head
    assert lines[-len(tail) :] == tail
    assert len(lines) == 1 + 100 * 4 + 1


def test_exact_run_is_exact_rational_sgd():
    steps = exact_run()
    assert len(steps) == 300
    g, w1, loss = steps[0]
    assert (g, w1, loss) == (fmpq(-2), fmpq(102, 100), fmpq(1))
    # ω_{k+1} = ω_k - (1/100) * 2x(xω_k - y), checked independently for the whole run
    w = fmpq(1)
    for k, (g, wk, _) in enumerate(steps):
        xv = fmpq([1, 2, 3][k % 3])
        assert g == 2 * xv * (xv * w - 2 * xv)
        w = w - g / 100
        assert wk == w
    assert abs(float(w) - 2) < 1e-12 and w != 2


def test_exact_values_sit_beside_float32():
    r = replay()
    first = r.steps[1]
    assert first.grad_exact == "-7.84" and first.grad_float32 == -7.840000152587891
    assert r.final_w_exact.startswith("1.9999999999999")
    assert r.final_w_float32 == 1.9999996423721313
