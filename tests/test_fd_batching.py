"""Finite differences of large models in memory-bounded batches (`sources.fd_batch_rows`).

The batch size is asserted, not the memory (a test that measured memory would depend on the
machine); the batched differences must be the same numbers whichever way the rows are split.
"""

from __future__ import annotations

import pytest
import torch

from gradcheck_sym import Model, matrix, nn
from gradcheck_sym import sources as src
from gradcheck_sym.sampling import points_for, rounded
from gradcheck_sym.zoo import mlp


def _linear_net() -> Model:
    # no transcendental function: every torch operation is correctly rounded, so results cannot
    # depend on how a batch is vectorized and the comparisons below can be exact
    X, Y = matrix("X", 3), matrix("Y", 2)
    W1, b1, W2 = matrix("W1", (4, 3)), matrix("b1", 4), matrix("W2", (2, 4))
    loss = nn.sse(nn.dense(W2, nn.dense(W1, X, b1)), Y)
    return Model(name="linear-net", loss=loss, params=[W1, b1, W2], inputs=[X, Y], domain={"*": (-1, 1)})


def test_a_large_model_gets_batches_that_fit_the_budget() -> None:
    m = mlp((50, 100, 100, 50, 10), name="net")  # 20,760 parameters
    subject = src.Subject(m)
    rows, live = src.fd_batch_rows(subject), subject.forward.peak_live
    assert m.n_params == 20760
    assert live < len(subject.forward.program) / 50  # the lean forward holds about a layer, not the program
    assert rows < 4 * m.n_params  # one point needs several calls ...
    assert 8 * rows * (rows // 4 + 1 + live) <= src.FD_BATCH_BYTES  # ... each within the budget
    assert rows >= 1000  # and not degenerate
    # batching whole points would hold every symbol per row: the budget allows far fewer rows
    whole = src.fd_batch_rows(subject, broadcast=False)
    assert 8 * whole * (len(m.symbols) + live) <= src.FD_BATCH_BYTES < 8 * (whole + 1) * (len(m.symbols) + live)


def test_a_small_model_batches_whole_points() -> None:
    subject = src.Subject(mlp())
    assert src.fd_batch_rows(subject) == src.FD_BATCH_ROWS


def test_lean_forward_is_the_forward() -> None:
    m = _linear_net()
    subject = src.Subject(m)
    cols = list(torch.tensor(rounded(points_for(m, 7, 0), m.symbols, "float64")).T)
    with torch.no_grad():
        assert torch.equal(subject.forward.lean(cols), subject.forward(cols))


@pytest.mark.parametrize("rows", [5, 50, 150])  # calls within a point (96 rows: broadcast), across points
def test_differences_do_not_depend_on_the_batching(monkeypatch: pytest.MonkeyPatch, rows: int) -> None:
    m = _linear_net()
    subject = src.Subject(m)
    pts = rounded(points_for(m, 3, 0), m.symbols, "float64")
    one_call = src.finite_differences(subject, pts, "float64")
    assert 4 * len(m.entries) * len(pts) <= src.fd_batch_rows(subject)  # that was a single call
    monkeypatch.setattr(src, "fd_batch_rows", lambda subject, broadcast=True: rows)
    split = src.finite_differences(subject, pts, "float64")
    assert split.grads == one_call.grads
    assert split.error_estimate == one_call.error_estimate
