"""Verdicts near kinks, with and without the rule (`nearkinks`).  Run by hand:
``python benchmarks/near_kinks_study.py [EXAMPLES]``.

Two ReLU networks declared with `gradcheck_sym.nn` (2-3-1 and 3-4-4-1), checked at Hypothesis's
corner points (`strategies.points(model, kinks=True)`, derandomized) against a torch impl and a
textbook NumPy backward (``dz = dh·(z > 0)``, ``z = W @ a + b`` through BLAS, as people write it),
in float32 and float64, both sides in one run: with the near-kink rule, and with it switched off
(`nearkinks.near_kinks` returning None).  Correct code: mismatches (must be 0 with the rule) and
the checks it calls imprecise near a kink.  Planted bugs (the loss derivative's factor 2
forgotten; the ReLU mask inverted): mismatching checks and examples with a mismatch.

Writes ``reports/near_kinks.md``.
"""

from __future__ import annotations

import platform
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings

import gradcheck_sym.nearkinks as nk
from gradcheck_sym import Model, matrix, nn, verify
from gradcheck_sym.strategies import points

NEAR = "within rounding of a kink"


def network(sizes: tuple[int, ...]) -> tuple[Model, list[str]]:
    names, params = [], []
    a = X = matrix("X", sizes[0])
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:]), 1):
        W, b = matrix(f"W{i}", (n_out, n_in)), matrix(f"b{i}", n_out)
        params += [W, b]
        names += [f"W{i}", f"b{i}"]
        a = nn.dense(W, a, b)
        if i < len(sizes) - 1:
            a = nn.relu(a)
    Y = matrix("Y", sizes[-1])
    model = Model(name="relu-" + "-".join(map(str, sizes)), loss=nn.mse(a, Y), params=params, inputs=[X, Y],
                  domain={"*": (-1, 1), "X": (0.25, 1)})
    return model, names


def torch_impl(layers: int) -> Callable[..., torch.Tensor]:
    def impl(**t: torch.Tensor) -> torch.Tensor:
        a = t["X"]
        for i in range(1, layers + 1):
            a = t[f"W{i}"] @ a + t[f"b{i}"]
            if i < layers:
                a = torch.relu(a)
        return ((a - t["Y"]) ** 2).mean()

    return impl


def numpy_backprop(layers: int, bug: str = "") -> Callable[..., dict[str, np.ndarray]]:
    def grad(**t: torch.Tensor) -> dict[str, np.ndarray]:
        v = {k: x.numpy() for k, x in t.items()}
        acts, zs = [v["X"]], []
        for i in range(1, layers + 1):
            z = v[f"W{i}"] @ acts[-1] + v[f"b{i}"]
            zs.append(z)
            acts.append(np.maximum(z, 0) if i < layers else z)
        d = (1 if bug == "slip" else 2) * (acts[-1] - v["Y"]) / v["Y"].size
        out = {}
        for i in range(layers, 0, -1):
            out[f"W{i}"], out[f"b{i}"] = d @ acts[i - 1].T, d
            if i > 1:
                z = zs[i - 2]
                d = (v[f"W{i}"].T @ d) * ((z < 0) if bug == "mask" else (z > 0))
        return out

    return grad


def study(sizes: tuple[int, ...], dtype: str, examples: int) -> dict[str, Any]:
    model, _ = network(sizes)
    layers = len(sizes) - 1
    original = nk.near_kinks
    counts: Counter[str] = Counter()
    seconds = {"on": 0.0, "off": 0.0}

    @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(points(model, kinks=True))
    def run(point: dict[str, Any]) -> None:
        counts["points"] += 1
        near: list[int] = []

        def counted(*a: Any, **k: Any) -> Any:
            found = original(*a, **k)
            near.append(0 if found is None else found.near_points)
            return found

        for rule in ("on", "off") if counts["points"] % 2 else ("off", "on"):  # the first call pays for the reference
            nk.near_kinks = counted if rule == "on" else (lambda *a, **k: None)  # type: ignore[assignment]
            try:
                for bug in ("", "slip", "mask"):
                    start = time.perf_counter()
                    r = verify(model, impl=torch_impl(layers), grad_impl=numpy_backprop(layers, bug), points=[point],
                               samples=0, dtypes=[dtype])
                    seconds[rule] += time.perf_counter() - start
                    sources = ("autograd", "impl", "grad_impl") if not bug else ("grad_impl",)
                    checks = [c for c in r.checks if c.source in sources and c.quantity == "grad"]
                    failed = [c for c in checks if c.verdict == "mismatch"]
                    key = bug or "correct"
                    counts[f"{key}/{rule}/checks"] += len(checks)
                    counts[f"{key}/{rule}/mismatch"] += len(failed)
                    counts[f"{key}/{rule}/points with a mismatch"] += bool(failed)
                    counts[f"{key}/{rule}/near"] += sum(1 for c in checks if c.note and NEAR in c.note)
                    if rule == "on" and not bug:  # a condition within rounding of its kink (`nearkinks`)
                        counts["points near a kink"] += bool(near and near[-1])
            finally:
                nk.near_kinks = original

    run()
    return {"counts": counts, "seconds": seconds}


def main(argv: list[str]) -> int:
    examples = int(argv[1]) if len(argv) > 1 else 60
    lines = ["# Verdicts near kinks", "",
             f"`python benchmarks/near_kinks_study.py {examples}` on {platform.machine()}, torch {torch.__version__}, "
             "Python " + platform.python_version() + " (a shared machine: seconds are loaded ones).", "",
             "Hypothesis corner points (`points(model, kinks=True)`, derandomized), ReLU networks declared with "
             "`gradcheck_sym.nn`, a torch impl and textbook NumPy backprop. Each row: the rule on | off.", "",
             "| network | dtype | points | near a kink | correct code: mismatch | correct: imprecise near a kink | "
             "factor 2 forgotten: mismatch (points) | mask inverted: mismatch (points) | seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for sizes in ((2, 3, 1), (3, 4, 4, 1)):
        for dtype in ("float32", "float64"):
            out = study(sizes, dtype, examples)
            c, s = out["counts"], out["seconds"]

            def pair(key: str, c: Counter[str] = c) -> str:
                return f"{c[key.format(rule='on')]} \\| {c[key.format(rule='off')]}"

            lines.append(
                f"| {'-'.join(map(str, sizes))} | {dtype} | {c['points']} | {c['points near a kink']} | "
                f"{pair('correct/{rule}/mismatch')} of {c['correct/on/checks']} | {pair('correct/{rule}/near')} | "
                f"{pair('slip/{rule}/mismatch')} ({pair('slip/{rule}/points with a mismatch')}) | "
                f"{pair('mask/{rule}/mismatch')} ({pair('mask/{rule}/points with a mismatch')}) | "
                f"{s['on']:.1f} \\| {s['off']:.1f} |")
            print(lines[-1], flush=True)
    Path("reports").mkdir(exist_ok=True)
    Path("reports/near_kinks.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
