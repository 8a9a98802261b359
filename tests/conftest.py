"""Shared helpers for the tests: small models and torch implementations of the lecture's network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

# The audit measures torch's own last bits, which the perturbation moves on purpose: not run
# under it (it no longer crashes there: `audit` in float16/bfloat16 runs to its report).
collect_ignore = ["test_audit.py"] if os.environ.get("GRADCHECK_SYM_PERTURB") else []

if os.environ.get("GRADCHECK_SYM_PERTURB"):  # subprocesses started from other folders find it too
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "perturb"), os.environ.get("PYTHONPATH", "")])


def expressions(leaf, unary, max_leaves: int):
    """Hypothesis strategy: random expression trees over ``leaf`` with ``unary`` functions, + and ×."""
    from hypothesis import strategies as st

    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.tuples(unary, inner).map(lambda t: t[0](t[1])),
            st.tuples(inner, inner).map(lambda t: t[0] + t[1]),
            st.tuples(inner, inner).map(lambda t: t[0] * t[1]),
        ),
        max_leaves=max_leaves,
    )


def mlp_forward(layers: int = 5, matmul=torch.matmul, sigmoid=torch.sigmoid):
    """An implementation of zoo.mlp() as a user would write it: one tensor per weight."""

    def impl(**t: torch.Tensor) -> torch.Tensor:
        a = t["X"]
        for k in range(1, layers + 1):
            a = sigmoid(matmul(t[f"W{k}"], a) + t[f"b{k}"])
        return ((a - t["Y"]) ** 2).sum()

    return impl


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """The fixtures of a module or session (set up before `private_cache`) get a cache of this
    session: no test reads or writes the user's cache, so none passes on a result stored by an
    earlier run."""
    with pytest.MonkeyPatch.context() as m:
        path = tmp_path_factory.mktemp("session-cache")
        m.setenv("GRADCHECK_SYM_CACHE", str(path))
        yield path


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Every test gets an empty cache of its own (subprocesses inherit the variable)."""
    path = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("GRADCHECK_SYM_CACHE", str(path))
    return path


@pytest.fixture
def run_cli_process():
    """Run ``python -m gradcheck_sym ARGS`` in a subprocess, as a user would: for the tests about
    the process itself (exit codes, imports, signals, a fresh interpreter)."""
    import subprocess

    def run(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gradcheck_sym", *args], capture_output=True, text=True,
            cwd=cwd, timeout=timeout,
        )

    return run


def _own_module(module: object, keep: tuple[str, ...]) -> bool:
    """A module a model file brought in (not the standard library, an installed package or ours)."""
    f = getattr(module, "__file__", None) or ""
    return bool(f) and not f.startswith(keep)


def run_in_process(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m gradcheck_sym ARGS`` run in this process: ``cli.main`` with the same argv, working
    folder, ``sys.path`` and a fresh module state, stdout and stderr captured; it returns what the
    subprocess would (``returncode``, ``stdout``, ``stderr``).  Starting a Python that imports
    torch costs seconds per call; `run_cli_process` keeps one real process per behaviour."""
    import _thread
    import contextlib
    import tempfile
    import threading

    from gradcheck_sym import cache, cli

    keep = (sys.prefix, sys.base_prefix, str(ROOT / "src"))
    # One intra-op thread while `cli` forks its model workers from this process: a child forked
    # from a process whose OpenMP pool has run (as this one's has, after other tests) hangs in
    # its first parallel region.  A fresh `python -m gradcheck_sym` forks before any such work.
    threads = torch.get_num_threads()
    # files, not StringIO: the model workers `cli` forks write to the same files (line-buffered)
    out, err = (tempfile.TemporaryFile("w+", buffering=1, encoding="utf-8") for _ in range(2))
    before = set(sys.modules)
    with pytest.MonkeyPatch.context() as m:
        torch.set_num_threads(1)
        m.setattr(cache, "_DISABLED", False)  # process-wide state a fresh process starts without
        m.setattr(cache, "_WARNED", set())
        m.chdir(cwd or Path.cwd())
        m.syspath_prepend(str(cwd or Path.cwd()))  # `python -m` puts the working folder first
        watchdog = threading.Timer(timeout, _thread.interrupt_main)  # as the subprocess's timeout:
        watchdog.start()  # the run is interrupted (exit code 130) instead of hanging the suite
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli.main(list(args))
        finally:
            watchdog.cancel()
            torch.set_num_threads(threads)
            for name in set(sys.modules) - before:
                if _own_module(sys.modules[name], keep):
                    del sys.modules[name]
    texts = []
    for f in (out, err):
        f.seek(0)
        texts.append(f.read())
        f.close()
    return subprocess.CompletedProcess(["python", "-m", "gradcheck_sym", *args], code, *texts)


@pytest.fixture
def run_cli():
    """`run_in_process`, for the tests of what the command line says and writes."""
    return run_in_process


def pytest_configure(config):
    """With GRADCHECK_SYM_PERTURB, every process of the run (the xdist workers too) must have
    torch's float results perturbed (tests/perturb/)."""
    if os.environ.get("GRADCHECK_SYM_PERTURB"):
        if "sitecustomize" not in sys.modules or not hasattr(sys.modules["sitecustomize"], "_install"):
            raise pytest.UsageError("GRADCHECK_SYM_PERTURB is set but tests/perturb is not on PYTHONPATH: run "
                                    "GRADCHECK_SYM_PERTURB=1 PYTHONPATH=tests/perturb python -m pytest")


def pytest_report_header(config):
    """Say so when the suite runs with torch's float results perturbed (tests/perturb/)."""
    if os.environ.get("GRADCHECK_SYM_PERTURB"):
        return "torch float results perturbed by one ulp (tests/perturb/sitecustomize.py)"
    return None
