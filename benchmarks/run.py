"""The performance benchmarks, side by side with what a user would pick instead, in one run.

    python benchmarks/run.py                 # everything; writes reports/benchmarks.md
    python benchmarks/run.py --quick         # fewer repeats and points, for a smoke test
    python benchmarks/run.py --only hvp,second-order   # some sections; the other rows are kept
    python benchmarks/run.py --only small,startup      # rows 8 and 9
    python benchmarks/run.py --only check,small,impl   # rows 2, 8 and 8b (issue 12, items 1-3)
    python benchmarks/run.py --only cold-warm          # row 4
    python benchmarks/run.py --only build,scaling,throughput,large   # rows 1, 3, 5, 11 and the scaling table

1. building mlp-193's exact gradient: ours against sympy.diff per weight + lambdify(cse=True);
2. checking mlp-193 at 1,000 points (float64 and float32, autograd and finite differences,
   programs compiled) against torch.autograd.gradcheck (default, float64) at the same points;
3. scaling of the symbolic stage from 224 to 20,760 parameters: time and peak memory;
4. a whole `python -m gradcheck_sym verify` of the built-in models, cold cache then warm;
5. throughput at 100,000 points of a small model: the float64 gradient program against
   torch.func.vmap(torch.func.grad(...));
6. exact Hessian-vector products of mlp-193 at 100 points (seeded random vectors) against
   torch.autograd.gradgradcheck (float64) at the same points;
7. the symbolic cost of the second-order (Hessian-vector) program against the first-order one;
8. 100 single-point checks of a 2-weight model through `gradcheck_sym.testing.assert_gradients`
   (float64 and float32, autograd, the user's impl and finite differences, exact reference)
   against torch.autograd.gradcheck on the same 100 points (issue 12, item 1);
9. start-up: a whole `python -m gradcheck_sym verify` of one small model file (no cache) against
   `python -c "import torch, sympy"` (issue 12, item 5);
8b. mlp-193 with a custom `impl` (plain torch), checked at 20 points (both dtypes, every source)
   against torch.autograd.gradcheck of that impl at the same points (issue 12, item 2);
11. a 20,760-parameter MLP built with `gradcheck_sym.nn`: the model, its gradient program and the
   exact gradient at 5 points in a fresh process, time and peak RSS; then a whole `verify` of it
   (issue 12, item 4).

Not a test: run by hand, on a quiet machine.  Each ratio is measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "reports" / "benchmarks.md"


def median_time(f, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# -- 1. building the exact gradient -------------------------------------------------------------

NAIVE = textwrap.dedent(
    """
    import sys, time
    import sympy as sp
    from gradcheck_sym.zoo import mlp
    m = mlp()
    t0 = time.perf_counter()
    weights = [s for v in m.params for s in v.symbols]
    grads = []
    for k, w in enumerate(weights):
        grads.append(sp.diff(m.loss, w))
        print(f"diff {k + 1} {time.perf_counter() - t0:.3f}", flush=True)
    f = sp.lambdify(list(m.symbols), grads, cse=True)
    print(f"done {time.perf_counter() - t0:.3f}", flush=True)
    """
)


def bench_build(repeats: int, limit: float) -> dict:
    from gradcheck_sym import cache
    from gradcheck_sym.structure import layers
    from gradcheck_sym.symbolic import gradient_program
    from gradcheck_sym.zoo import mlp

    cache.disable()
    m = mlp()
    wrt = tuple(e.symbol for e in m.entries)
    ours = median_time(lambda: (gradient_program(m.loss, m.symbols, wrt), layers(m, m.program)), repeats)
    done, last = 0, 0.0
    proc = subprocess.Popen([sys.executable, "-c", NAIVE], stdout=subprocess.PIPE, text=True)
    deadline = time.perf_counter() + limit
    finished = None
    try:
        while time.perf_counter() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            word, *rest = line.split()
            if word == "diff":
                done, last = int(rest[0]), float(rest[1])
            elif word == "done":
                finished = float(rest[0])
                break
    finally:
        proc.kill()
        proc.wait()
    return {"ours": ours, "naive": finished, "limit": limit, "naive_done": done, "naive_last": last}


# -- 2. checking at 1,000 points ----------------------------------------------------------------


def bench_check(points: int, repeats: int, gradcheck_repeats: int) -> dict:
    import torch

    from gradcheck_sym import cache
    from gradcheck_sym.sampling import points_for, rounded
    from gradcheck_sym.verifier import prepare, verify
    from gradcheck_sym.zoo import mlp

    cache.disable()  # no stored results: every run checks; the program stays compiled in memory
    m = mlp()
    prepare(m)
    r = verify(m, samples=points, seed=1)
    pts = rounded(points_for(m, points, 1), m.symbols, "float64")

    def f(*ws: torch.Tensor, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        a = X
        for k in range(5):
            a = torch.sigmoid(ws[2 * k] @ a + ws[2 * k + 1])
        return ((a - Y) ** 2).sum()

    shapes = [(v.name, v.shape) for v in m.variables]

    def gradcheck_all() -> None:
        for p in pts:
            i = 0
            tensors = {}
            for name, shape in shapes:
                n = shape[0] * shape[1]
                tensors[name] = torch.tensor(p[i : i + n], dtype=torch.float64).reshape(shape)
                i += n
            ws = [tensors[v.name].requires_grad_(True) for v in m.params]
            assert torch.autograd.gradcheck(lambda *w: f(*w, X=tensors["X"], Y=tensors["Y"]), tuple(ws))

    # alternated (ours, theirs, ours, ...) so that the load of a shared machine falls on both
    ours_times = [median_time(lambda: verify(m, samples=points, seed=1), 1)]
    theirs_times = []
    for _ in range(gradcheck_repeats):
        theirs_times.append(median_time(gradcheck_all, 1))
        ours_times += [median_time(lambda: verify(m, samples=points, seed=1), 1) for _ in range(max(1, repeats - 1))]
    return {"ours": statistics.median(ours_times), "theirs": statistics.median(theirs_times), "points": points,
            "status": r.status, "checks": r.n_checks, "fd_points": dict(r.fd_points), "ours_times": ours_times}


# -- 3. scaling -----------------------------------------------------------------------------------

SCALE = textwrap.dedent(
    """
    import sys, time, tracemalloc, json
    from gradcheck_sym import cache
    from gradcheck_sym.structure import layers
    from gradcheck_sym.symbolic import gradient_program
    from gradcheck_sym.zoo import mlp
    cache.disable()
    sizes = tuple(int(x) for x in sys.argv[1].split("-"))
    t0 = time.perf_counter(); m = mlp(sizes, name="net"); build = time.perf_counter() - t0
    wrt = tuple(e.symbol for e in m.entries)
    tracemalloc.start()
    t0 = time.perf_counter()
    gp = gradient_program(m.loss, m.symbols, wrt)
    layers(m, m.program)
    stage = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    print(json.dumps({"params": m.n_params, "build": build, "stage": stage, "peak": peak, "slots": len(gp.prog)}))
    """
)
SCALING_SIZES = ["5-6-7-7-6-5", "10-15-15-10-5", "15-20-20-15-8", "20-30-30-20-10", "30-60-60-30-10",
                 "40-80-80-40-10", "50-100-100-50-10"]  # 224 to 20,760 parameters


def bench_scaling(sizes: list[str], repeats: int) -> list[dict]:
    import json

    rows = []
    for size in sizes:
        runs = []
        for _ in range(repeats):
            out = subprocess.run([sys.executable, "-c", SCALE, size], capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout))
        row = dict(runs[0])
        row["stage"] = statistics.median(r["stage"] for r in runs)
        row["build"] = statistics.median(r["build"] for r in runs)
        row["peak"] = max(r["peak"] for r in runs)
        row["sizes"] = size
        rows.append(row)
    return rows


# -- 11. a 20,000-parameter network ------------------------------------------------------------

LARGE_LAYERS = "50-100-100-50-10"  # 20,760 parameters
LARGE = textwrap.dedent(
    """
    import json, resource, sys, time
    t0 = time.perf_counter()
    from flint import fmpq
    from gradcheck_sym import cache
    from gradcheck_sym.reference import reference_at
    from gradcheck_sym.sampling import points_for, rounded
    from gradcheck_sym.symbolic import gradient_program
    from gradcheck_sym.zoo import mlp
    cache.disable()
    imports = time.perf_counter() - t0
    sizes = tuple(int(x) for x in sys.argv[1].split("-"))
    t0 = time.perf_counter(); m = mlp(sizes, name="net"); build = time.perf_counter() - t0
    t0 = time.perf_counter()
    gp = gradient_program(m.loss, m.symbols, tuple(e.symbol for e in m.entries))
    stage = time.perf_counter() - t0
    pts = rounded(points_for(m, 5, 0), m.symbols, "float64")
    t0 = time.perf_counter()
    refs = [reference_at(gp, [fmpq(*x.as_integer_ratio()) for x in p], rational=gp.maybe_rational) for p in pts]
    exact = time.perf_counter() - t0
    assert all(g.is_value for r in refs for g in r.grads)
    out = {"params": m.n_params, "imports": imports, "build": build, "stage": stage, "exact": exact,
           "slots": len(gp.prog), "arithmetic": sorted({r.arithmetic for r in refs}),
           "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if len(sys.argv) > 2:
        from gradcheck_sym.verifier import verify
        t0 = time.perf_counter()
        r = verify(m, samples=5, seed=0, timeout=None)
        out.update(verify=time.perf_counter() - t0, status=r.status, checks=r.n_checks,
                   verify_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    print(json.dumps(out))
    """
)


def bench_large(repeats: int, whole: bool) -> dict:
    """The exact gradient of a 20,760-parameter MLP at 5 points, each run a fresh process (median
    time, largest peak RSS); with ``whole``, one more process that also runs `verify` on it."""
    import json

    def one(*extra: str) -> dict:
        out = subprocess.run([sys.executable, "-c", LARGE, LARGE_LAYERS, *extra], capture_output=True, text=True,
                             check=True)
        return json.loads(out.stdout)

    runs = [one() for _ in range(repeats)]
    row = dict(runs[0], layers=LARGE_LAYERS, runs=len(runs))
    for key in ("build", "stage", "exact"):
        row[key] = statistics.median(r[key] for r in runs)
    row["total"] = statistics.median(r["build"] + r["stage"] + r["exact"] for r in runs)
    row["rss"] = max(r["rss"] for r in runs)
    if whole:
        row["whole"] = one("verify")
    return row


# -- 4. cold against warm -----------------------------------------------------------------------


def bench_cold_warm(repeats: int) -> dict:
    cold, warm = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache_dir, tempfile.TemporaryDirectory() as work:
            env = {**os.environ, "GRADCHECK_SYM_CACHE": cache_dir}
            for bucket in (cold, warm):
                bucket.append(_timed([sys.executable, "-m", "gradcheck_sym", "verify", "--quiet"], work, env))
    return {"cold": statistics.median(w for w, _ in cold), "warm": statistics.median(w for w, _ in warm),
            "cold_cpu": statistics.median(c for _, c in cold), "warm_cpu": statistics.median(c for _, c in warm),
            "repeats": repeats}


def cold_warm_row(cw: dict) -> str:
    r4 = cw["warm"] / cw["cold"]
    return (f"| 4 | `python -m gradcheck_sym verify`, whole process: warm cache against cold | {_s(cw['warm'])} | "
            f"cold: {_s(cw['cold'])} | {r4:.2f}× | ≤ 0.3× | {'yes' if r4 <= 0.3 else 'NO'} |")


def cold_warm_note(cw: dict) -> str:
    return (f"Row 4 from `python benchmarks/run.py --only cold-warm` (same machine): medians of {cw['repeats']} "
            f"cold/warm pairs; CPU time (user + system) {_s(cw['warm_cpu'])} warm against {_s(cw['cold_cpu'])} cold "
            f"({cw['warm_cpu'] / cw['cold_cpu']:.2f}×). A warm run imports neither torch nor matplotlib: every "
            "result, the replay and the plots come from the cache.")


def replace_cold_warm(text: str, cw: dict) -> str:
    """The committed report with row 4 and its note replaced (the other rows kept)."""
    lines = [cold_warm_row(cw) if line.startswith("| 4 |") else line for line in text.splitlines()
             if not line.startswith("Row 4 from")]
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join([*lines, "", cold_warm_note(cw)]) + "\n"


# -- 5. throughput --------------------------------------------------------------------------------


def bench_throughput(points: int, repeats: int) -> dict:
    import torch

    from gradcheck_sym import cache
    from gradcheck_sym.errorbound import gradient_batch
    from gradcheck_sym.verifier import prepare
    from gradcheck_sym.zoo import logistic

    cache.disable()
    m = logistic()
    gp = prepare(m).gradient
    gen = torch.Generator().manual_seed(0)
    batch = torch.rand(points, len(m.symbols), generator=gen, dtype=torch.float64) * 2 - 1  # w, b, x, y

    def loss(params: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(params[0] * x + params[1])
        return -(y * torch.log(p) + (1 - y) * torch.log(1 - p))

    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(0, 0, 0))
    params, x, y = batch[:, :2].contiguous(), batch[:, 2].contiguous(), batch[:, 3].contiguous()
    ours = median_time(lambda: gradient_batch(gp, batch), repeats)
    theirs = median_time(lambda: per_sample(params, x, y), repeats)
    _, g = gradient_batch(gp, batch)
    diff = float((g - per_sample(params, x, y)).abs().max())
    return {"ours": ours, "theirs": theirs, "points": points, "max_diff": diff}


# -- 6. exact Hessian-vector products ------------------------------------------------------------


def bench_hvp(points: int, seed: int = 1) -> dict:
    import torch
    from flint import fmpq

    from gradcheck_sym import cache
    from gradcheck_sym.compare import as_float
    from gradcheck_sym.higher import hvp_program
    from gradcheck_sym.reference import program_values
    from gradcheck_sym.sampling import points_for, rounded
    from gradcheck_sym.zoo import mlp

    cache.disable()
    m = mlp()
    wrt = tuple(e.symbol for e in m.entries)
    t0 = time.perf_counter()
    hp = hvp_program(m.loss, m.symbols, wrt)
    build = time.perf_counter() - t0
    pts = rounded(points_for(m, points, seed), m.symbols, "float64")
    gen = torch.Generator().manual_seed(seed)
    vecs = (torch.rand(points, len(wrt), generator=gen, dtype=torch.float64) * 2 - 1).tolist()
    n = len(wrt)

    def exact_all() -> list[list[float]]:
        out = []
        for p, v in zip(pts, vecs):
            vals = program_values(hp.program, [fmpq(*x.as_integer_ratio()) for x in list(p) + v]).values
            out.append([as_float(e.value) for e in vals[1 + n:]])
        return out

    t0 = time.perf_counter()
    ours = exact_all()
    ours_time = time.perf_counter() - t0

    def f(*ws: torch.Tensor, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        a = X
        for k in range(5):
            a = torch.sigmoid(ws[2 * k] @ a + ws[2 * k + 1])
        return ((a - Y) ** 2).sum()

    shapes = [(v.name, v.shape) for v in m.variables]

    def tensors_at(p: tuple[float, ...]) -> dict:
        i, out = 0, {}
        for name, shape in shapes:
            k = shape[0] * shape[1]
            out[name] = torch.tensor(p[i : i + k], dtype=torch.float64).reshape(shape)
            i += k
        return out

    def gradgradcheck_all() -> None:
        for p in pts:
            t = tensors_at(p)
            ws = tuple(t[v.name].requires_grad_(True) for v in m.params)
            assert torch.autograd.gradgradcheck(lambda *w: f(*w, X=t["X"], Y=t["Y"]), ws)

    t0 = time.perf_counter()
    gradgradcheck_all()
    theirs = time.perf_counter() - t0
    # the same products from torch's double backward, float64: how far from exact
    worst = 0.0
    for p, v, exact in zip(pts, vecs, ours):
        t = tensors_at(p)
        ws = tuple(t[v_.name].requires_grad_(True) for v_ in m.params)
        g = torch.autograd.grad(f(*ws, X=t["X"], Y=t["Y"]), ws, create_graph=True)
        flat = torch.cat([x.reshape(-1) for x in g])
        vt = torch.tensor(v, dtype=torch.float64)
        hv = torch.autograd.grad((flat * vt).sum(), ws)
        got = torch.cat([x.reshape(-1) for x in hv]).tolist()
        scale = max(abs(e) for e in exact) or 1.0
        worst = max(worst, max(abs(a - e) for a, e in zip(got, exact)) / scale)
    return {"points": points, "params": n, "build": build, "ours": ours_time, "theirs": theirs,
            "slots": len(hp.program), "max_rel_diff": worst}


# -- 7. symbolic cost of the second-order program ------------------------------------------------


def bench_second_order(repeats: int) -> dict:
    from gradcheck_sym import cache
    from gradcheck_sym.higher import hessian_program, hvp_program
    from gradcheck_sym.symbolic import gradient_program
    from gradcheck_sym.zoo import linear, mlp

    cache.disable()
    m = mlp()
    wrt = tuple(e.symbol for e in m.entries)
    firsts, seconds = [], []
    for _ in range(repeats):  # interleaved, so that a busy moment of the machine hits both
        firsts.append(median_time(lambda: gradient_program(m.loss, m.symbols, wrt), 1))
        seconds.append(median_time(lambda: hvp_program(m.loss, m.symbols, wrt), 1))
    first, second = statistics.median(firsts), statistics.median(seconds)
    n1 = len(gradient_program(m.loss, m.symbols, wrt).prog)
    n2 = len(hvp_program(m.loss, m.symbols, wrt).program)
    small = linear()
    swrt = tuple(e.symbol for e in small.entries)
    h = hessian_program(small.loss, small.symbols, swrt)
    return {"first": first, "second": second, "slots1": n1, "slots2": n2, "repeats": repeats,
            "hessian_small": len(h.program)}


# -- the report ---------------------------------------------------------------------------------



# -- 8. single-point checks of a tiny model ------------------------------------------------------

def bench_small(points: int, repeats: int) -> dict:
    """``points`` calls of `assert_gradients` with one point each, against as many gradcheck calls."""
    import random

    import sympy as sp
    import torch

    from gradcheck_sym import Model
    from gradcheck_sym.testing import assert_gradients

    x, y, w1, w2 = sp.symbols("x y w1 w2", real=True)
    model = Model(name="two-weights", loss=(sp.tanh(w1 * x) * w2 - y) ** 2, params=[w1, w2], inputs=[x, y],
                  domain={"*": (-2, 2)})

    def impl(w1: torch.Tensor, w2: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(w1 * x) * w2 - y) ** 2

    rng = random.Random(0)
    pts = [{k: rng.uniform(-2, 2) for k in ("w1", "w2", "x", "y")} for _ in range(points)]

    def ours() -> None:  # an impl: never a cached result
        for p in pts:
            assert_gradients(model, impl=impl, points=[p], samples=0)

    def theirs() -> None:
        for p in pts:
            ts = [torch.tensor(p[k], dtype=torch.float64, requires_grad=k.startswith("w")) for k in ("w1", "w2", "x", "y")]
            assert torch.autograd.gradcheck(impl, ts)

    ours(), theirs()  # warm: compiled program, torch's first calls
    pairs = []
    for _ in range(repeats):  # alternated, so that the load of a shared machine falls on both
        pairs.append((median_time(ours, 1), median_time(theirs, 1)))
    r = assert_gradients(model, impl=impl, points=[pts[0]], samples=0)
    return {"points": points, "ours": statistics.median(a for a, _ in pairs),
            "theirs": statistics.median(b for _, b in pairs), "ratios": [a / b for a, b in pairs],
            "sources": list(r.sources), "checks": r.n_checks}


# -- 8b. a network with a custom impl ------------------------------------------------------------

def bench_impl(points: int, repeats: int) -> dict:
    """mlp-193 with its forward written in plain torch as the user's ``impl``: `verify` at
    ``points`` points (float64 and float32; autograd, impl, finite differences of both forwards;
    exact reference) against torch.autograd.gradcheck of the impl at the same float64 points.
    The same check with the impl's finite differences forced back to one call per row (the
    code before issue 12's item 2) is timed too."""
    import torch

    from gradcheck_sym import cache, sources
    from gradcheck_sym.sampling import points_for, rounded
    from gradcheck_sym.verifier import prepare, verify
    from gradcheck_sym.zoo import mlp

    cache.disable()

    def impl(**t: torch.Tensor) -> torch.Tensor:
        a = t["X"]
        for k in range(1, 6):
            a = torch.sigmoid(t[f"W{k}"] @ a + t[f"b{k}"])
        return ((a - t["Y"]) ** 2).sum()

    m = mlp().with_implementations(impl=impl)
    prepare(m)
    pts = rounded(points_for(m, points, 1), m.symbols, "float64")
    names = [v.name for v in m.params]

    def gradcheck_all() -> None:
        for p in pts:
            i, tensors = 0, {}
            for v in m.variables:
                tensors[v.name] = torch.tensor(p[i : i + v.size], dtype=torch.float64).reshape(v.shape)
                i += v.size
            ws = tuple(tensors[n].requires_grad_(True) for n in names)
            rest = {k: t for k, t in tensors.items() if k not in names}
            assert torch.autograd.gradcheck(lambda *w: impl(**dict(zip(names, w)), **rest), ws)

    def ours() -> None:
        r = verify(m, samples=points, seed=1)
        assert r.status == "pass", r.error or r.failed[:1]

    original = sources._vmap_losses

    def looped() -> None:
        sources._vmap_losses = lambda *a: None  # type: ignore[assignment]
        try:
            ours()
        finally:
            sources._vmap_losses = original

    ours()
    rows = []
    for _ in range(repeats):  # alternated, so that the load of a shared machine falls on all three
        rows.append((median_time(ours, 1), median_time(gradcheck_all, 1), median_time(looped, 1)))
    r = verify(m, samples=points, seed=1)
    return {"points": points, "ours": statistics.median(a for a, _, _ in rows),
            "theirs": statistics.median(b for _, b, _ in rows), "looped": statistics.median(c for _, _, c in rows),
            "ratios": [a / b for a, b, _ in rows], "impl_calls": r.impl_calls, "fd_points": dict(r.fd_points),
            "checks": r.n_checks, "sources": list(r.sources)}


# -- 9. start-up -------------------------------------------------------------------------------

SMALL_FILE = textwrap.dedent(
    """
    import sympy as sp
    from gradcheck_sym import Model
    x, y, w = sp.symbols("x y w", real=True)
    linear = Model(name="linear", loss=(x*w - y)**2, params=[w], inputs=[x, y], domain={"*": (-2, 2)})
    """
)


STARTUP_ARGS = ["verify", "m.py", "--no-cache", "--quiet", "--no-report"]


def _timed(cmd: list[str], cwd: str, env: dict | None = None) -> tuple[float, float]:
    """Wall time and CPU time (user + system, the process and its children) of a command."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def bench_startup(repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "m.py").write_text(SMALL_FILE)
        verify = [sys.executable, "-m", "gradcheck_sym", *STARTUP_ARGS]
        imports = [sys.executable, "-c", "import torch, sympy"]
        # the files in the page cache, and gradcheck_sym's bytecode written once, as an installed
        # package has it (with PYTHONDONTWRITEBYTECODE set, every run would compile our modules)
        _timed(verify, d, {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"})
        _timed(imports, d)
        pairs = [(_timed(verify, d), _timed(imports, d)) for _ in range(repeats)]
        code = ("import sys, runpy; sys.argv = ['gradcheck_sym', *%r]\ntry:\n    runpy.run_module('gradcheck_sym', "
                "run_name='__main__')\nexcept SystemExit: pass\n"
                "print(','.join(sorted(m for m in ('torch', 'sympy', 'matplotlib', 'flint') if m in sys.modules)))"
                % (STARTUP_ARGS,))
        loaded = subprocess.run([sys.executable, "-c", code], cwd=d, capture_output=True, text=True).stdout.strip()
    return {"ours": statistics.median(a[0] for a, _ in pairs), "theirs": statistics.median(b[0] for _, b in pairs),
            "ours_cpu": statistics.median(a[1] for a, _ in pairs),
            "theirs_cpu": statistics.median(b[1] for _, b in pairs),
            "ratios": [a[0] / b[0] for a, b in pairs], "loaded": loaded.splitlines()[-1] if loaded else "?"}


def _s(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def render(b: dict, quick: bool) -> str:
    import flint
    import sympy
    import torch

    lines = [
        "# Benchmarks",
        "",
        f"`python benchmarks/run.py{' --quick' if quick else ''}`, on {platform.platform()}, "
        f"{os.cpu_count()} cores ({torch.get_num_threads()} torch threads), Python {platform.python_version()}, "
        f"torch {torch.__version__}, SymPy {sympy.__version__}, python-flint {flint.__version__}. "
        f"Times are medians of {b['repeats']} runs unless stated; every ratio is measured in the same run.",
        "",
        "| # | what | ours | theirs | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += build_rows(b)
    lines += check_row(b)
    lines += scaling_rows(b)
    lines.append(cold_warm_row(b["cold_warm"]))
    lines += throughput_rows(b)
    lines += second_order_rows(b) + large_rows(b)
    lines += scaling_table(b) + throughput_notes(b) + large_notes(b)
    for note in second_order_notes(b):
        lines += ["", note]
    return "\n".join(lines) + "\n"


def build_rows(b: dict) -> list[str]:
    """Row 1 (present when that section ran)."""
    if "build" not in b:
        return []
    bb = b["build"]
    if bb["naive"] is None:
        naive = (f"> {bb['limit']:.0f} s (stopped; {bb['naive_done']} of 224 derivatives in "
                 f"{bb['naive_last']:.0f} s, no lambdify yet)")
        ratio = bb["limit"] / bb["ours"]
        ratio_text = f"> {ratio:,.0f}×"
    else:
        naive, ratio = _s(bb["naive"]), bb["naive"] / bb["ours"]
        ratio_text = f"{ratio:,.0f}×"
    return [f"| 1 | mlp-193: build the exact gradient (224 weights) | {_s(bb['ours'])} | sympy.diff per weight + "
            f"lambdify(cse=True): {naive} | {ratio_text} faster | ≥ 500× | {'yes' if ratio >= 500 else 'NO'} |"]


def scaling_rows(b: dict) -> list[str]:
    """Row 3 (present when that section ran)."""
    if "scaling" not in b:
        return []
    sc = b["scaling"]
    per = [r["stage"] / r["params"] for r in sc]
    growth = per[-1] / per[0]  # cost per parameter at the largest size against the smallest
    peak = max(r["peak"] for r in sc)
    return [f"| 3 | symbolic stage, {sc[0]['params']:,} to {sc[-1]['params']:,} parameters: cost per parameter | "
            f"{per[0] * 1e6:.0f} µs to {per[-1] * 1e6:.0f} µs | — | {growth:.2f}× (largest / smallest) | ≤ 1.5× | "
            f"{'yes' if growth <= 1.5 else 'NO'} |",
            f"| 3 | symbolic stage, peak memory at {sc[-1]['params']:,} parameters | {peak / 2**20:.1f} MiB | — | — | "
            f"≤ 1 GiB | {'yes' if peak <= 2**30 else 'NO'} |"]


def scaling_table(b: dict) -> list[str]:
    if "scaling" not in b:
        return []
    lines = ["", "## Scaling of the symbolic stage", "",
             "Gradient program and layer graph from the loss (the model itself, built with `gradcheck_sym.nn` by "
             "`zoo.mlp`, is timed separately), each size in a fresh process, peak memory by tracemalloc.", "",
             "| layers | parameters | program slots | build the model | symbolic stage | per parameter | peak memory |",
             "|---|---|---|---|---|---|---|"]
    for r in b["scaling"]:
        lines.append(f"| {r['sizes']} | {r['params']:,} | {r['slots']:,} | {_s(r['build'])} | {_s(r['stage'])} | "
                     f"{r['stage'] / r['params'] * 1e6:.0f} µs | {r['peak'] / 2**20:.1f} MiB |")
    return lines


def throughput_rows(b: dict) -> list[str]:
    """Row 5 (present when that section ran)."""
    if "throughput" not in b:
        return []
    t = b["throughput"]
    r5 = t["theirs"] / t["ours"]
    return [f"| 5 | logistic: float64 gradient at {t['points']:,} points | {_s(t['ours'])} "
            f"({t['points'] / t['ours'] / 1e6:.1f} M points/s) | torch.func.vmap(grad): {_s(t['theirs'])} "
            f"({t['points'] / t['theirs'] / 1e6:.1f} M points/s) | {r5:.2f}× its throughput | ≥ 0.5× | "
            f"{'yes' if r5 >= 0.5 else 'NO'} |"]


def throughput_notes(b: dict) -> list[str]:
    if "throughput" not in b:
        return []
    t = b["throughput"]
    return ["", f"Benchmark 5: the float64 gradient program and vmap(grad) agree to {t['max_diff']:.1e} at every "
            f"one of the {t['points']:,} points."]


def large_rows(b: dict) -> list[str]:
    """Row 11 (present when that section ran)."""
    if "large" not in b:
        return []
    g = b["large"]
    met = g["total"] <= 60 and g["rss"] <= 2 * 2**30
    return [f"| 11 | {g['params']:,}-parameter MLP ({g['layers']}, `gradcheck_sym.nn`): build the model, its gradient "
            f"program and the certified exact gradient at 5 points, fresh process | {_s(g['total'])}, peak RSS "
            f"{g['rss'] / 2**30:.2f} GiB | — | — | ≤ 60 s and ≤ 2 GiB | {'yes' if met else 'NO'} |"]


def large_notes(b: dict) -> list[str]:
    if "large" not in b:
        return []
    g = b["large"]
    text = (f"Benchmark 11: medians of {g['runs']} fresh processes: building the model {_s(g['build'])}, the gradient "
            f"program ({g['slots']:,} slots) {_s(g['stage'])}, the exact gradient at 5 points ({', '.join(g['arithmetic'])}, "
            f"scalar python-flint over the program) {_s(g['exact'])}; peak RSS of the whole process (imports included), "
            "by `resource.getrusage`.")
    w = g.get("whole")
    if w is not None:
        text += (f" A whole `verify(samples=5)` of the same model (float64 and float32; autograd, finite differences, "
                 f"exact reference, step study; {w['checks']:,} checks) in one more process: {_s(w['verify'])}, "
                 f"status {w['status']}, peak RSS {w['verify_rss'] / 2**30:.2f} GiB.")
    return ["", text]


def check_row(b: dict) -> list[str]:
    """Row 2 (present when that section ran)."""
    if "check" not in b:
        return []
    c = b["check"]
    r2 = c["ours"] / c["theirs"]
    return [f"| 2 | mlp-193: check {c['points']:,} points, float64 + float32, autograd + fd, exact "
            f"reference ({c['checks']:,} values) | {_s(c['ours'])} | torch.autograd.gradcheck, float64, "
            f"{c['points']:,} points (median of {b['gradcheck_repeats']}): {_s(c['theirs'])} | {r2:.3f}× the time "
            f"| ≤ 0.05× | {'yes' if r2 <= 0.05 else 'NO'} |"]


def second_order_rows(b: dict) -> list[str]:
    """Rows 6 and 7 (present when those sections ran)."""
    lines = []
    if "hvp" in b:
        h = b["hvp"]
        r6 = h["ours"] / h["theirs"]
        lines.append(f"| 6 | mlp-193: exact Hessian-vector products ({h['params']} weights, seeded random vectors) "
                     f"at {h['points']} points, certified | {_s(h['ours'])} (+ {_s(h['build'])} to build the program) | "
                     f"torch.autograd.gradgradcheck, float64, the same {h['points']} points: {_s(h['theirs'])} | "
                     f"{r6:.3f}× the time | — | — |")
    if "second_order" in b:
        so = b["second_order"]
        r7 = so["second"] / so["first"]
        lines.append(f"| 7 | mlp-193: build the second-order (Hessian-vector) program against the gradient program | "
                     f"{_s(so['second'])} ({so['slots2']:,} slots) | gradient program: {_s(so['first'])} "
                     f"({so['slots1']:,} slots) | {r7:.2f}× | ≤ 3× | {'yes' if r7 <= 3 else 'NO'} |")
    if "small" in b:
        sm = b["small"]
        r8 = sm["ours"] / sm["theirs"]
        lines.append(f"| 8 | 2-weight model: {sm['points']} single-point checks through `assert_gradients` (float64 + "
                     f"float32; {', '.join(sm['sources'])}; exact reference; an impl, so never cached) | {_s(sm['ours'])} "
                     f"| torch.autograd.gradcheck, float64, the same {sm['points']} points: {_s(sm['theirs'])} | "
                     f"{r8:.1f}× the time | ≤ 1× | {'yes' if r8 <= 1 else 'NO'} |")
    if "impl" in b:
        im = b["impl"]
        r8b = im["ours"] / im["theirs"]
        lines.append(f"| 8b | mlp-193 with a custom `impl` (plain torch): check {im['points']} points (float64 + "
                     f"float32; {', '.join(im['sources'])}; exact reference) | {_s(im['ours'])} | "
                     f"torch.autograd.gradcheck of the impl, float64, the same {im['points']} points: "
                     f"{_s(im['theirs'])} | {r8b:.2f}× the time | ≤ 1× | {'yes' if r8b <= 1 else 'NO'} |")
    if "startup" in b:
        st = b["startup"]
        r9 = st["ours"] / st["theirs"]
        lines.append(f"| 9 | whole-process `python -m gradcheck_sym {' '.join(STARTUP_ARGS)}` of one small model | "
                     f"{_s(st['ours'])} | `python -c \"import torch, sympy\"`: {_s(st['theirs'])} | {r9:.2f}× | ≤ 1.5× | "
                     f"{'yes' if r9 <= 1.5 else 'NO'} |")
    return lines


def second_order_notes(b: dict) -> list[str]:
    lines = []
    if "hvp" in b:
        h = b["hvp"]
        lines.append(f"Benchmark 6: torch's float64 double backward differs from the exact Hessian-vector products by "
                     f"at most {h['max_rel_diff']:.1e} (relative to each product's largest entry); gradgradcheck itself "
                     "says only whether numerical and analytical second derivatives differ.")
    if "second_order" in b:
        so = b["second_order"]
        lines.append(f"Benchmark 7: times are medians of {so['repeats']} builds; the full Hessian program of `linear` "
                     f"has {so['hessian_small']} slots (reverse over reverse: one more backward pass per weight).")
    if "small" in b:
        sm = b["small"]
        lines.append(f"Benchmark 8: {sm['checks']} checks per call; the two sides alternate "
                     f"{len(sm['ratios'])} times (ratios {', '.join(f'{r:.1f}' for r in sm['ratios'])}), the median "
                     "of each is shown.")
    if "check" in b:
        c = b["check"]
        fd = ", ".join(f"{n} in {d}" for d, n in c.get("fd_points", {}).items()) or "every point"
        lines.append(f"Benchmark 2: finite differences at {fd} of the {c['points']:,} (a fixed sample and every "
                     "point where a source disagrees; issue 12, item 3); the elementwise comparisons run in one "
                     "intra-op thread; ours ran before and after gradcheck "
                     f"({', '.join(_s(t) for t in c.get('ours_times', []))}), the median is shown.")
    if "impl" in b:
        im = b["impl"]
        fd = ", ".join(f"{n} in {d}" for d, n in im["fd_points"].items()) or "every point"
        lines.append(f"Benchmark 8b: {im['checks']:,} checks; the impl's finite differences called with "
                     f"{im['impl_calls']}, at {fd} of the {im['points']} points; the three alternate "
                     f"{len(im['ratios'])} times (ratios {', '.join(f'{r:.2f}' for r in im['ratios'])}), the median "
                     f"of each is shown.  The same check with the impl's finite differences called once per row (as "
                     f"before issue 12, item 2): {_s(im['looped'])} ({im['looped'] / im['theirs']:.2f}× gradcheck).")
    if "startup" in b:
        st = b["startup"]
        lines.append(f"Benchmark 9: the two commands alternate {len(st['ratios'])} times (ratios "
                     f"{', '.join(f'{r:.2f}' for r in st['ratios'])}); CPU time (user + system, medians): "
                     f"{_s(st['ours_cpu'])} against {_s(st['theirs_cpu'])} ({st['ours_cpu'] / st['theirs_cpu']:.2f}×); "
                     f"modules the verify process itself loads: {st['loaded']} (torch only in the model's forked "
                     "worker, which ends with `os._exit` and so skips torch's interpreter teardown); gradcheck_sym's "
                     "bytecode compiled once beforehand, as an installed package has it.")
    return lines


def merge(old: str, b: dict, only: set[str]) -> str:
    """The committed report with the rows and notes of the sections that ran replaced."""
    new_rows = build_rows(b) + check_row(b) + scaling_rows(b) + throughput_rows(b) + second_order_rows(b) + large_rows(b)
    numbers = {row.split("|")[1].strip() for row in new_rows}

    def number(line: str) -> str | None:
        return line.split("|")[1].strip() if line.startswith("| ") else None

    lines = old.splitlines()
    placed = set()
    for n in dict.fromkeys(number(row) for row in new_rows):  # rows that were there are replaced where they stand
        at = [i for i, line in enumerate(lines) if number(line) == n]
        if at:
            lines = [line for i, line in enumerate(lines) if i not in at[1:]]  # after at[0]: it stays put
            lines[at[0]:at[0] + 1] = [row for row in new_rows if number(row) == n]
            placed.add(n)
    new_rows = [row for row in new_rows if number(row) not in placed]
    if "scaling" in b and "## Scaling of the symbolic stage" in lines:
        start = lines.index("## Scaling of the symbolic stage")
        end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("|"))
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
        lines[start - 1:end] = scaling_table(b)
    done = tuple(f"Benchmark {n}:" for n in sorted(numbers)) + ("The float64 gradient program and vmap(grad) agree",)
    lines = [line for line in lines if not line.startswith(done)]
    lines = [line for i, line in enumerate(lines) if line or i == 0 or lines[i - 1]]  # no double blank lines
    while lines and lines[-1] == "":
        lines.pop()
    last_row = max(i for i, line in enumerate(lines) if line.startswith("| ") and line.split("|")[1].strip().isdigit())
    lines[last_row + 1:last_row + 1] = new_rows
    notes = [x for x in throughput_notes(b) + large_notes(b) if x] + second_order_notes(b)
    sections = ",".join(sorted(only))
    lines = [line for line in lines if not line.startswith(f"Rows {', '.join(sorted(numbers))} from")]
    lines += ["", f"Rows {', '.join(sorted(numbers))} from `python benchmarks/run.py --only {sections}` (same "
              "machine)."] if notes else []
    for note in notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"


SECTIONS = ("check", "cold-warm", "hvp", "second-order", "small", "impl", "startup",  # the sections --only can run alone
            "build", "scaling", "throughput", "large")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and points (a smoke test)")
    parser.add_argument("--naive-limit", type=float, default=300.0, help="seconds for the naive build (default: 300)")
    parser.add_argument("--only", type=lambda t: set(t.split(",")), default=None, metavar="LIST",
                        help=f"run only these sections ({', '.join(SECTIONS)}) and update their rows, "
                             "keeping the others (default: everything)")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    b: dict = {"repeats": repeats, "gradcheck_repeats": 1}
    if args.only is not None:
        unknown = args.only - set(SECTIONS)
        if unknown:
            parser.error(f"unknown section {sorted(unknown)[0]!r}; choose from {', '.join(SECTIONS)}")
        if "hvp" in args.only:
            print("6/7 hvp", file=sys.stderr)
            b["hvp"] = bench_hvp(20 if args.quick else 100)
        if "second-order" in args.only:
            print("7/7 second order", file=sys.stderr)
            b["second_order"] = bench_second_order(11)
        if "small" in args.only:
            print("8/9 small", file=sys.stderr)
            b["small"] = bench_small(20 if args.quick else 100, repeats)
        if "check" in args.only:
            print("2/9 check", file=sys.stderr)
            b["check"] = bench_check(100 if args.quick else 1000, repeats, 1)
        if "impl" in args.only:
            print("8b/9 impl", file=sys.stderr)
            b["impl"] = bench_impl(5 if args.quick else 20, repeats)
        if "startup" in args.only:
            print("9/9 startup", file=sys.stderr)
            b["startup"] = bench_startup(repeats + 2)
        if "build" in args.only:
            print("1 build", file=sys.stderr)
            b["build"] = bench_build(5 if not args.quick else 1, 20.0 if args.quick else args.naive_limit)
        if "scaling" in args.only:
            print("3 scaling", file=sys.stderr)
            b["scaling"] = bench_scaling(SCALING_SIZES, repeats)
        if "throughput" in args.only:
            print("5 throughput", file=sys.stderr)
            b["throughput"] = bench_throughput(100_000, 5 if not args.quick else 2)
        if "large" in args.only:
            print("11 large", file=sys.stderr)
            b["large"] = bench_large(repeats, whole=not args.quick)
        text = merge(OUT.read_text(), b, args.only) if args.only - {"cold-warm"} else OUT.read_text()
        if "cold-warm" in args.only:
            print("4/7 cold/warm", file=sys.stderr)
            text = replace_cold_warm(text, bench_cold_warm(repeats))
        OUT.write_text(text)
        print(OUT.read_text())
        return
    print("1/7 build", file=sys.stderr)
    b["build"] = bench_build(5 if not args.quick else 1, 20.0 if args.quick else args.naive_limit)
    print("2/7 check", file=sys.stderr)
    b["check"] = bench_check(100 if args.quick else 1000, repeats, 1)
    print("3/7 scaling", file=sys.stderr)
    b["scaling"] = bench_scaling(SCALING_SIZES, repeats)
    print("4/7 cold/warm", file=sys.stderr)
    b["cold_warm"] = bench_cold_warm(repeats)
    print("5/7 throughput", file=sys.stderr)
    b["throughput"] = bench_throughput(100_000, 5 if not args.quick else 2)
    print("6/7 hvp", file=sys.stderr)
    b["hvp"] = bench_hvp(20 if args.quick else 100)
    print("7/7 second order", file=sys.stderr)
    b["second_order"] = bench_second_order(11)
    print("8/9 small", file=sys.stderr)
    b["small"] = bench_small(20 if args.quick else 100, repeats)
    print("8b/9 impl", file=sys.stderr)
    b["impl"] = bench_impl(5 if args.quick else 20, repeats)
    print("9/9 startup", file=sys.stderr)
    b["startup"] = bench_startup(repeats + 2)
    print("11 large", file=sys.stderr)
    b["large"] = bench_large(repeats, whole=not args.quick)
    OUT.write_text(render(b, args.quick))
    print(OUT.read_text())


if __name__ == "__main__":
    main()
