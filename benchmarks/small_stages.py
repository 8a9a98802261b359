"""Where the time of benchmark 8 goes: 100 single-point `assert_gradients` checks of the 2-weight
model, each pipeline stage timed with ``time.perf_counter`` (no profiler: its overhead per call
would distort a pipeline of many small calls), best of ``N`` runs (default 7), with 100
`torch.autograd.gradcheck` calls on the same points alternating with them.

    python benchmarks/small_stages.py [N]

Prints per-check milliseconds per stage; writes nothing (the benchmark row itself is
`python benchmarks/run.py --only small`).
"""

from __future__ import annotations

import random
import sys
import time
from collections import defaultdict
from typing import Any

import sympy as sp
import torch

from gradcheck_sym import Model, checks, sources, verifier
from gradcheck_sym.testing import assert_gradients

x, y, w1, w2 = sp.symbols("x y w1 w2", real=True)
MODEL = Model(name="two-weights", loss=(sp.tanh(w1 * x) * w2 - y) ** 2, params=[w1, w2], inputs=[x, y],
              domain={"*": (-2, 2)})
STAGES = [  # (module, function, what it is)
    (verifier, "references", "exact reference and error analysis"),
    (verifier, "_groups", "verdict rules (groups)"),
    (sources, "finite_differences", "finite differences"),
    (checks, "materialize", "Check objects and summaries"),
    (verifier, "_step_study", "step study"),
    (sources, "autograd", "autograd source"),
    (sources, "impl", "impl source"),
    (checks, "exact_arrays", "exact arrays"),
    (verifier, "points_for", "points"),
]


def impl(w1: torch.Tensor, w2: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (torch.tanh(w1 * x) * w2 - y) ** 2


def main(runs: int = 7) -> None:
    spent: dict[str, float] = defaultdict(float)
    for module, name, label in STAGES:
        def timed(*a: Any, _f: Any = getattr(module, name), _label: str = label, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return _f(*a, **k)
            finally:
                spent[_label] += time.perf_counter() - t
        setattr(module, name, timed)
    rng = random.Random(0)
    points = [{k: rng.uniform(-2, 2) for k in ("w1", "w2", "x", "y")} for _ in range(100)]

    def ours() -> None:
        for p in points:
            assert_gradients(MODEL, impl=impl, points=[p], samples=0)

    def theirs() -> None:
        for p in points:
            ts = [torch.tensor(p[k], dtype=torch.float64, requires_grad=k.startswith("w"))
                  for k in ("w1", "w2", "x", "y")]
            assert torch.autograd.gradcheck(impl, ts)

    ours(), theirs()
    best: tuple[float, float, dict[str, float]] | None = None
    for _ in range(runs):
        spent.clear()
        t = time.perf_counter()
        ours()
        a = time.perf_counter() - t
        t = time.perf_counter()
        theirs()
        b = time.perf_counter() - t
        if best is None or a < best[0]:
            best = (a, b, dict(spent))
    assert best is not None
    a, b, parts = best
    n = len(points)
    print(f"ours {a / n * 1e3:.2f} ms per check; gradcheck {b / n * 1e3:.3f} ms; {a / b:.1f}x "
          "(the run where ours was fastest)")
    for label, s in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"  {s / n * 1e3:6.2f} ms  {label}")
    print(f"  {(a - sum(parts.values())) / n * 1e3:6.2f} ms  everything else")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
