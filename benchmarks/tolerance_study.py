"""How tight is the tolerance rule?  Run by hand: ``python benchmarks/tolerance_study.py``.

For correct gradients (torch autograd of each model, float64 and float32, at 30 seeded points)
it measures how much of the tolerance the real rounding errors use, how often a relative error
of 1e-3 would hide inside the tolerance, and, side by side in the same run, how many correct
entries a fixed tolerance (torch.testing's float32 defaults, rtol 1.3e-6, atol 1e-5) would flag.
Writes ``reports/tolerance.md``.
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import sympy as sp
import torch

from gradcheck_sym import Model, verify
from gradcheck_sym.zoo import builtin_models, mlp

SAMPLES, SEED = 30, 11
FIXED = {"float64": (1e-7, 1e-7), "float32": (1.3e-6, 1e-5)}  # torch.testing.assert_close defaults


def tanh_net() -> Model:
    from gradcheck_sym import matrix

    X, Y = matrix("X", 4), matrix("Y", 1)
    W1, W2, W3 = matrix("W1", (8, 4)), matrix("W2", (8, 8)), matrix("W3", (1, 8))
    a = (W1 * X).applyfunc(sp.tanh)
    a = (W2 * a).applyfunc(sp.tanh)
    loss = sum(((W3 * a) - Y).applyfunc(lambda e: e**2), sp.Integer(0))
    return Model(name="tanh-4-8-8-1", loss=loss, params=[W1, W2, W3], inputs=[X, Y], domain={"*": (-1, 1)})


def main() -> None:
    models = builtin_models() + [tanh_net(), mlp((20, 30, 30, 20, 10), name="mlp-20-30-30-20-10")]
    rows = []
    for m in models:
        t0 = time.perf_counter()
        r = verify(m, samples=SAMPLES, seed=SEED, all_checks=True)
        seconds = time.perf_counter() - t0
        for dtype in ("float64", "float32"):
            cs = [c for c in r.checks if c.source == "autograd" and c.dtype == dtype and c.quantity == "grad"
                  and c.exact is not None]
            used = max(c.abs_error / c.tolerance for c in cs)
            hidden = sum(c.tolerance > 1e-3 * abs(c.exact) for c in cs)
            rtol, atol = FIXED[dtype]
            fixed_flags = sum(c.abs_error > atol + rtol * abs(c.exact) for c in cs)
            fixed_hidden = sum(atol + rtol * abs(c.exact) > 1e-3 * abs(c.exact) for c in cs)
            fd = [c for c in r.checks if c.source == "fd" and c.dtype == dtype]
            fd_bad = sum(c.verdict == "mismatch" for c in fd)
            rows.append((m.name, m.n_params, dtype, len(cs), r.status, f"{used:.3f}",
                         f"{hidden} ({100 * hidden / len(cs):.2f}%)", str(fixed_flags),
                         f"{fixed_hidden} ({100 * fixed_hidden / len(cs):.2f}%)", f"{fd_bad}/{len(fd)}",
                         f"{seconds:.1f}"))
        print(m.name, f"{seconds:.1f} s", file=sys.stderr)
    head = ["model", "params", "dtype", "entries", "verdict", "max error/tolerance",
            "1e-3 hidden", "fixed: false alarms", "fixed: 1e-3 hidden", "fd mismatches", "seconds (both dtypes)"]
    lines = [
        "# Tolerance study",
        "",
        f"`python benchmarks/tolerance_study.py`: torch autograd of each model (a correct gradient), "
        f"{SAMPLES} points (seed {SEED}) plus explicit points, float64 and float32. Python "
        f"{platform.python_version()}, torch {torch.__version__}, SymPy {sp.__version__}, "
        f"{platform.machine()}.",
        "",
        "* *max error/tolerance*: the largest share of its tolerance a correct value used (above 1 would "
        "be a false alarm);",
        "* *1e-3 hidden*: entries whose tolerance exceeds 1e-3 of the exact value, where a wrong value off "
        "by a relative 1e-3 would pass (near-cancellations, where the dtype itself cannot resolve 1e-3);",
        "* *fixed*: the same counts for a fixed tolerance, `torch.testing.assert_close`'s defaults "
        "(float64 rtol 1e-7, atol 1e-7; float32 rtol 1.3e-6, atol 1e-5), measured in the same run: "
        "correct entries it would call wrong, and entries where it would let a 1e-3 error pass;",
        "* *fd mismatches*: finite differences outside their own error estimate (reported as noise).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    out = Path(__file__).resolve().parent.parent / "reports" / "tolerance.md"
    out.write_text("\n".join(lines) + "\n")
    print(out)


if __name__ == "__main__":
    main()
