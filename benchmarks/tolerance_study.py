"""How tight are the verdicts?  Run by hand: ``python benchmarks/tolerance_study.py``.

1. Correct gradients (torch autograd of each model, float64 and float32, at 30 seeded points):
   the verdicts (no mismatch allowed), how much of the tolerance the real rounding errors use, and
   side by side in the same run how many correct entries a fixed tolerance (torch.testing's
   defaults) would flag.
2. Planted errors: a ``grad_impl`` returning torch autograd's gradient times (1 + r), r = 1e-6 in
   float64 and 1e-3 in float32: the share of entries found (not `agree`), and found as a mismatch.
3. torch's own functions declared in several equivalent ways (tests/corpus.py), −30…30: verdict
   counts of torch's value (``impl``) per declaration: 0 mismatches is the goal (F.softplus above
   its threshold is a documented approximation, a mismatch by the rule).
4. Networks (mlp-193 with a sigmoid, a tanh network) with the activation declared in equivalent
   ways: the same verdicts entry by entry; the tolerance's cost with and without the input
   sensitivity, side by side.
5. A constant wrong in its 11th digit (GELU's 1/√2 as 0.70710678119) in float64.

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
from gradcheck_sym.torch_codegen import TorchForward
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


PLANTED = {"float64": 1e-6, "float32": 1e-3}


def _flat(values: object) -> list[float]:
    if isinstance(values, (list, tuple)):
        return [v for item in values for v in _flat(item)]
    if isinstance(values, torch.Tensor):
        return [float(v) for v in values.reshape(-1)]
    return [float(values)]  # type: ignore[arg-type]


def planted(m: Model, r: float, result: object, dtype: str) -> Model:
    """``m`` with a ``grad_impl`` returning torch autograd's (correct) gradient of ``result`` at each
    of its points times (1 + r): a relative error of r planted on a correct gradient."""
    params = [v for v in m.variables if v.role == "param" or m.input_grads]  # what grad_impl returns
    table = {}
    for i, point in enumerate(result.points[dtype]):  # type: ignore[attr-defined]
        key = tuple(v for var in m.variables for v in _flat(point[var.name]))
        grads = {v.name: torch.zeros(v.shape or (), dtype=torch.float64) for v in params}
        for c in result.checks:  # type: ignore[attr-defined]
            if c.source == "autograd" and c.quantity == "grad" and c.dtype == dtype and c.point == i:
                grads[c.param][tuple(c.index or ())] = c.value * (1 + r)
        table[key] = grads

    def grad_impl(**tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        key = tuple(v for var in m.variables for v in _flat(tensors[var.name]))
        return {name: g.to(tensors[name].dtype) for name, g in table[key].items()}

    return m.with_implementations(grad_impl=grad_impl)


def _counts(cs: list) -> str:
    out = {v: sum(c.verdict == v for c in cs) for v in ("agree", "imprecise", "inconclusive", "mismatch")}
    return " / ".join(str(out[v]) for v in out)


def correct_and_planted(models: list[Model]) -> tuple[list[tuple], list[tuple]]:
    rows, found = [], []
    for m in models:
        t0 = time.perf_counter()
        r = verify(m, samples=SAMPLES, seed=SEED, all_checks=True)
        seconds = time.perf_counter() - t0
        for dtype in ("float64", "float32"):
            cs = [c for c in r.checks if c.source == "autograd" and c.dtype == dtype and c.quantity == "grad"
                  and c.exact is not None]
            agreeing = [c for c in cs if c.verdict == "agree"]
            used = max((c.abs_error / c.tolerance for c in agreeing), default=0.0)
            rtol, atol = FIXED[dtype]
            fixed_flags = sum(c.abs_error > atol + rtol * abs(c.exact) for c in cs)
            fd = [c for c in r.checks if c.source == "fd" and c.dtype == dtype]
            fd_bad = sum(c.verdict == "mismatch" for c in fd)
            rows.append((m.name, m.n_params, dtype, len(cs), r.status, _counts(cs), f"{used:.3f}", str(fixed_flags),
                         f"{fd_bad}/{len(fd)}", f"{seconds:.1f}"))
        print(m.name, f"{seconds:.1f} s", file=sys.stderr)
        if m.n_params < 20:
            continue
        for dtype, rel in PLANTED.items():
            p = verify(planted(m, rel, r, dtype), samples=SAMPLES, seed=SEED, all_checks=True, dtypes=[dtype])
            cs = [c for c in p.checks if c.source == "grad_impl" and c.exact not in (None, 0.0)]
            hit = sum(c.verdict != "agree" for c in cs)
            wrong = sum(c.verdict == "mismatch" for c in cs)
            found.append((m.name, dtype, f"{rel:g}", len(cs), f"{hit} ({100 * hit / len(cs):.2f}%)",
                          f"{wrong} ({100 * wrong / len(cs):.2f}%)", p.status))
    return rows, found


def torch_functions() -> list[tuple]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from corpus import TORCH_FUNCTIONS, torch_function_model

    rows = []
    for name, (_, declarations) in TORCH_FUNCTIONS.items():
        for i, expr in enumerate(declarations):
            r = verify(torch_function_model(name, i), samples=0)
            for dtype in ("float64", "float32"):
                cs = [c for c in r.checks if c.source == "impl" and c.quantity == "grad" and c.dtype == dtype]
                auto = [c for c in r.checks if c.source == "autograd" and c.quantity == "grad" and c.dtype == dtype]
                rows.append((f"`{name}`", f"`{sp.sstr(expr)}`", dtype, _counts(cs), _counts(auto), r.status))
    return rows


def networks() -> tuple[list[tuple], list[tuple]]:
    """Networks with the activation declared in equivalent ways (tests/corpus.py), checked against
    torch's function and textbook NumPy backprop: verdict counts per declaration, and whether the
    verdicts are the same entry by entry; and the cost of the declaration-independent tolerance on
    mlp-193, with and without it, side by side in one run."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import gradcheck_sym.compare as compare
    from corpus import SIGMOIDS, TANHS, mlp_network, tanh_network

    rows = []
    cases = [("mlp-193, torch.sigmoid / NumPy backprop", weights, {f: mlp_network(f, weights=weights, impl="both")
                                                                   for f in SIGMOIDS}) for weights in (1.0, 4.0)]
    cases.append(("4-6-6-3 tanh, torch.tanh", 4.0, {f: tanh_network(f, weights=4.0) for f in TANHS}))
    for label, weights, models in cases:
        results = {f: verify(m, samples=8, seed=SEED, all_checks=True) for f, m in models.items()}
        for source in ("impl", "grad_impl"):
            per = {f: {(c.dtype, c.point, c.param, c.index): c.verdict for c in r.checks
                       if c.source == source and c.quantity == "grad"} for f, r in results.items()}
            if not next(iter(per.values())):
                continue
            same = all(v == next(iter(per.values())) for v in per.values())
            for f, r in results.items():
                cs = [c for c in r.checks if c.source == source and c.quantity == "grad"]
                rows.append((label, f"±{weights:g}", source, f"`{f}`", len(cs), _counts(cs), "yes" if same else "NO"))
    cost = []
    for on in (True, False, True):
        compare.SENSITIVITY_MAX_WORK, saved = (compare.SENSITIVITY_MAX_WORK if on else 0), compare.SENSITIVITY_MAX_WORK
        t0 = time.perf_counter()
        verify(mlp(), samples=SAMPLES, seed=SEED)
        cost.append(("on" if on else "off (declared program's bound)", f"{time.perf_counter() - t0:.1f}"))
        compare.SENSITIVITY_MAX_WORK = saved
    return rows, cost


def eleventh_digit() -> tuple:
    x = sp.Symbol("x", real=True)
    pts = (-3, -2, -1, -0.5, -0.25, 0.25, 0.5, 1, 2, 3)
    gelu = Model(name="gelu-constant", loss=x * (1 + sp.erf(x / sp.sqrt(2))) / 2, params=[x],
                 points=[{x: p} for p in pts],
                 impl=lambda x: x * (1 + torch.erf(x * 0.70710678119)) / 2)
    r = verify(gelu, samples=0, dtypes=["float64"])
    cs = [c for c in r.checks if c.source == "impl" and c.quantity == "grad"]
    return len(cs), sum(c.verdict == "mismatch" for c in cs), sum(c.verdict != "agree" for c in cs)


def _table(head: list[str], rows: list[tuple]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|",
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def main() -> None:
    from gradcheck_sym import cache

    cache.disable()  # timings of real runs, never of cached results
    models = builtin_models() + [tanh_net(), mlp((20, 30, 30, 20, 10), name="mlp-20-30-30-20-10")]
    rows, found = correct_and_planted(models)
    functions = torch_functions()
    n, wrong, hit = eleventh_digit()
    nets, cost = networks()
    lines = [
        "# Tolerance study",
        "",
        f"`python benchmarks/tolerance_study.py`. Python {platform.python_version()}, torch {torch.__version__}, "
        f"SymPy {sp.__version__}, {platform.machine()}. Verdict counts are agree / imprecise / inconclusive / "
        "mismatch (README, \"The verdict\").",
        "",
        f"## Correct gradients: torch autograd of each model, {SAMPLES} points (seed {SEED}) plus explicit points",
        "",
        "* *max error/tolerance*: the largest share of its tolerance an agreeing correct value used;",
        "* *fixed: false alarms*: correct entries `torch.testing.assert_close`'s default tolerance (float64 rtol "
        "1e-7, atol 1e-7; float32 rtol 1.3e-6, atol 1e-5) would call wrong, in the same run;",
        "* *fd mismatches*: finite differences outside their own error estimate (reported as noise).",
        "",
        *_table(["model", "params", "dtype", "entries", "status", "verdicts", "max error/tolerance",
                 "fixed: false alarms", "fd mismatches", "seconds (both dtypes)"], rows),
        "",
        "## Planted relative errors: a `grad_impl` returning torch autograd's gradient times (1 + r)",
        "",
        "Entries with a nonzero exact value; *found*: not `agree` (imprecise, inconclusive or mismatch); "
        "*mismatch*: found as a wrong gradient (a failure without `--strict`).",
        "",
        *_table(["model", "dtype", "r", "entries", "found", "mismatch", "status"], found),
        "",
        "## torch's own functions, each declared in several equivalent ways, at −30…30",
        "",
        "torch's value is the `impl` source (held to the function's own tolerance, the same for every "
        "declaration); `autograd` evaluates the declared formula itself.",
        "",
        *_table(["function", "declared as", "dtype", "impl verdicts", "autograd verdicts", "status"], functions),
        "",
        "## Networks declared in equivalent ways",
        "",
        "The activation written differently, the same seeded points (8, seed "
        f"{SEED}); `impl` is a torch network (torch.sigmoid, torch.tanh: backward formulas from the rounded "
        "output), `grad_impl` textbook NumPy backprop (σ' = s(1 − s)). *same verdicts*: entry by entry, "
        "across the declarations. With weights outside ±1 the saturated layers' derivatives lose digits in "
        "those formulas: imprecise, never a mismatch.",
        "",
        *_table(["network", "weights", "source", "activation declared as", "entries", "verdicts", "same verdicts"],
                nets),
        "",
        f"Cost of the declaration-independent tolerance (input sensitivity from the Hessian's columns) on "
        f"mlp-193, `verify(mlp(), samples={SAMPLES})`, both dtypes, one run, in order:",
        "",
        *_table(["input sensitivity", "seconds"], cost),
        "",
        "## A constant wrong in its 11th digit",
        "",
        f"GELU with 1/√2 written 0.70710678119, float64, {n} points in −3…3: {wrong} mismatches, {hit} not agree.",
    ]
    out = Path(__file__).resolve().parent.parent / "reports" / "tolerance.md"
    out.write_text("\n".join(lines) + "\n")
    print(out)


if __name__ == "__main__":
    main()
