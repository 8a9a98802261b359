"""Results → PNG plots (matplotlib, optional): the finite-difference step study, the
lecture's training replay, and a small model's Hessian with the entries where a source disagrees.
Pure: data in, bytes out, the same data the same bytes (no timestamp in the file); keeping them is
the caller's business (`report` caches them).  Without matplotlib every function returns None and
the report says so."""

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


def hessian_png(data: dict[str, object]) -> bytes | None:
    """The exact Hessian at one point as a heatmap (symmetric log colour scale), each entry where a
    source's second derivative disagrees somewhere marked with that source's letter."""
    plt = _pyplot()
    if plt is None:
        return None
    from matplotlib.patches import Rectangle

    names: list[str] = data["entries"]  # type: ignore[assignment]
    exact: list[list[float | None]] = data["exact"]  # type: ignore[assignment]
    wrong: dict[str, list[list[int]]] = data["wrong"]  # type: ignore[assignment]
    grid = [[math.nan if v is None else v for v in row] for row in exact]
    top = max((abs(v) for row in grid for v in row if math.isfinite(v)), default=1.0) or 1.0
    n = len(names)
    fig, ax = plt.subplots(figsize=(max(4.8, 1.8 + 0.55 * n), max(4.2, 1.4 + 0.55 * n)))
    image = ax.imshow(grid, cmap="coolwarm", vmin=-top, vmax=top)
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_xticks(range(n), names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    for i in range(n):
        for j in range(n):
            if math.isfinite(grid[i][j]) and n <= 8:
                ax.text(j, i, f"{grid[i][j]:.3g}", ha="center", va="center", fontsize=6)
    marked: dict[tuple[int, int], list[str]] = {}
    for source, cells in sorted(wrong.items()):
        for i, j in cells:
            marked.setdefault((i, j), []).append(source)
    for (i, j), sources in sorted(marked.items()):
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2.5))
        ax.text(j, i + 0.32, "✗ " + ", ".join(sources), ha="center", va="center", fontsize=6, fontweight="bold")
    ax.set_title(f"exact second derivatives of the {data['title']} at point 0 ({data['dtype']})\n"
                 + ("boxed ✗: a source's double backward disagrees (at some point)" if marked
                    else "every source's double backward agrees"), fontsize=8)
    fig.tight_layout()
    png = _png(fig)
    plt.close(fig)
    return png
