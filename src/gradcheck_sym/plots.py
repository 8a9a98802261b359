"""Results → PNG plots (matplotlib, optional): the finite-difference step study and the
lecture's training replay.  Pure: data in, bytes out, the same data the same bytes (no timestamp
in the file); keeping them is the caller's business (`report` caches them).  Without matplotlib
every function returns None and the report says so."""

from __future__ import annotations

import io
import math

from .results import Replay, StepStudy

MISSING = "plot skipped: matplotlib is not installed (`pip install matplotlib`)"


def _pyplot():  # type: ignore[no-untyped-def]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _png(fig) -> bytes:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def step_study_png(study: StepStudy) -> bytes | None:
    """Error of the central difference against h, log-log, one line per dtype."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for dtype in study.steps:
        pairs = [(h, e) for h, e in zip(study.steps[dtype], study.errors[dtype]) if e > 0 and math.isfinite(e)]
        if pairs:
            ax.loglog(*zip(*pairs), marker=".", label=dtype)
    ax.set_xlabel("step h")
    ax.set_ylabel("|central difference − exact|")
    ax.set_title(f"∂loss/∂{study.entry} at point {study.point}: truncation vs rounding")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def replay_png(replay: Replay) -> bytes | None:
    """ω and the loss per epoch, float32 against exact."""
    plt = _pyplot()
    if plt is None:
        return None
    last = {}
    for s in replay.steps:
        last[s.epoch] = s
    epochs = sorted(last)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.6, 3.8))
    a1.semilogy(epochs, [abs(2 - last[e].w_float32) for e in epochs], label="float32 autograd")
    a1.semilogy(epochs, [abs(2 - float(last[e].w_exact.rstrip("…"))) or 1e-300 for e in epochs], label="exact")
    a1.set_xlabel("epoch")
    a1.set_ylabel("|2 − ω| after the epoch")
    a1.legend()
    a1.grid(True, alpha=0.3)
    a2.semilogy(epochs, [max(last[e].loss_float32, 1e-300) for e in epochs], label="float32 autograd")
    a2.semilogy(epochs, [max(float(last[e].loss_exact.rstrip("…")), 1e-300) for e in epochs], label="exact")
    a2.set_xlabel("epoch")
    a2.set_ylabel("loss of the epoch's last sample")
    a2.legend()
    a2.grid(True, alpha=0.3)
    fig.suptitle("The lecture's training loop: float32 stalls, the exact run converges")
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data
