"""Each model checked in a process of its own, so that nothing it does ends the run.

The command line forks one worker per model (``fork``: the user's ``impl``/``grad_impl`` need
not be picklable).  The worker runs `verify` under a memory limit and sends the result back as
JSON.  Whatever the model's code does, the run goes on and the model gets a clear error:

* ``sys.exit(3)`` in an ``impl``: "called exit(3)";
* a fatal signal (SIGSEGV in a C extension, SIGFPE from python-flint on a gigantic number):
  "ended by SIGFPE";
* a C call that never returns, or code that masks SIGALRM: the worker is killed at its deadline
  (the model's time budget plus a grace period), "did not finish within N s";
* a memory blow-up: the worker's data (heap and private memory, not its address space) is limited
  (`budget.MEMORY_FRACTION` of the machine's memory), so it fails with MemoryError, or is killed,
  instead of taking the machine towards the OOM killer.

Where ``fork`` is not available (Windows), models are checked in-process, as before.  Where the
calling process imported torch itself (a model file that imports it, a program calling `cli.main`)
the worker runs torch on one thread: torch's thread pools do not survive a fork.  Where the
calling process has run autograd on a CUDA build's device threads, torch refuses autograd in any
forked child: that model and every later one are checked in-process (seen on a GPU machine).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import select
import signal
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

from .budget import memory_limit
from .results import ModelResult, model_from_dict, model_to_dict

GRACE = 5.0  # seconds past the model's own budget (enforced inside by SIGALRM) before it is killed
_OWN_TORCH: list[bool] = []  # torch was imported here, by `run_isolated`, and has run nothing here


def can_isolate() -> bool:
    return "fork" in multiprocessing.get_all_start_methods() and not _NO_FORK


_HELD = {signal.SIGINT, signal.SIGTERM}


def _child(conn: Any, run: Callable[[], ModelResult], memory: int | None, one_thread: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C and SIGTERM are the parent's to handle:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # it kills this process when it stops
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD)
    if one_thread:
        # torch's OpenMP and BLAS thread pools do not survive a fork: a parallel operation in the
        # child of a process that already ran one waits forever.  One thread never enters them.
        import torch

        torch.set_num_threads(1)
    if memory:
        import resource

        # the data limit (heap and private anonymous memory), not the address space: a CUDA build
        # of torch maps gigabytes of libraries and reservations that use no memory, and under an
        # address-space limit its import fails ("failed to map segment from shared object")
        which = getattr(resource, "RLIMIT_DATA", resource.RLIMIT_AS)
        soft, hard = resource.getrlimit(which)
        limit = memory if hard == resource.RLIM_INFINITY else min(memory, hard)
        resource.setrlimit(which, (limit, hard))
    try:
        result = run()
        if result.status == "error" and "MemoryError" in (result.error or ""):
            raise MemoryError
        if result.status == "error" and _AUTOGRAD_FORK in (result.error or ""):
            raise _BadFork
        payload: dict[str, Any] = {"result": model_to_dict(result)}
    except SystemExit as exc:
        payload = {"error": f"called exit({exc.code!r}) while being checked; a model's code must return, not exit"}
    except MemoryError:
        payload = {"error": "memory"}
    except _BadFork:
        payload = {"error": _AUTOGRAD_FORK}
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, whatever it is
        payload = {"error": f"{type(exc).__name__}: {exc}"}
    payload["torch"] = "torch" in sys.modules
    try:
        conn.send_bytes(json.dumps(payload).encode("utf-8"))
    except (OSError, ValueError, TypeError):
        pass
    conn.close()
    os._exit(0)  # no atexit handlers, no flushing of the parent's buffers twice


# A CUDA build of torch whose autograd engine has started its device threads in this process
# refuses autograd in a forked child ("Unable to handle autograd's threading in combination with
# fork-based multiprocessing"): the model is then checked here, and later ones too, in-process.
_AUTOGRAD_FORK = "Autograd-and-Fork"
_NO_FORK: list[bool] = []


class _BadFork(Exception):
    pass


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def run_isolated(
    run: Callable[[], ModelResult],
    *,
    name: str,
    timeout: float | None,
    error: Callable[[str], ModelResult],
    more: bool = True,
) -> ModelResult:
    """``run()`` in a forked worker; its result, or ``error(message)`` saying what ended it.
    ``KeyboardInterrupt`` in the parent kills the worker and propagates.  ``more``: other work
    follows, so a torch the worker needed is imported here once, for the next workers to inherit."""
    if not can_isolate():
        return run()
    memory = memory_limit()
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    one_thread = "torch" in sys.modules and not _OWN_TORCH  # the caller's torch may have run on threads
    proc = ctx.Process(target=_child, args=(child, run, memory, one_thread), daemon=True)
    deadline = None if timeout is None else time.monotonic() + timeout + GRACE
    data = b""
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)  # no interrupt halfway through the fork
        try:
            proc.start()
        finally:
            # a Ctrl-C that came during the fork is raised here, inside the `try` that kills the
            # worker: raised before it, the worker outlived the run and held its output open
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        child.close()
        while True:
            wait = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
            if parent.poll(wait):
                try:
                    data = parent.recv_bytes()
                except EOFError:
                    data = b""
                break
            if not proc.is_alive():
                break
            if deadline is not None and time.monotonic() >= deadline:
                proc.kill()
                proc.join()
                _inherit_torch(more, True)
                return error(f"model `{name}` did not finish within its time budget of {timeout:g} s and was "
                             "stopped (it was inside code that an alarm cannot interrupt: a C extension, or code "
                             "that blocks signals); give it more time with --timeout SECONDS, or fewer points")
    except BaseException:
        if proc.pid is not None:  # started
            proc.kill()
            proc.join()
        raise
    finally:
        parent.close()
        child.close()
    proc.join(timeout=10)
    if proc.is_alive():
        proc.kill()
        proc.join()
    payload = json.loads(data.decode("utf-8")) if data else {}
    _inherit_torch(more, payload.get("torch", True))  # a worker that ended without a word may have needed it
    if payload:
        if "result" in payload:
            return model_from_dict(payload["result"])
        message = payload["error"]
        if message == _AUTOGRAD_FORK:  # the caller's torch ran autograd on device threads: no more forks
            _NO_FORK.append(True)
            return run()
        if message == "memory":
            return error(_out_of_memory(name, memory))
        return error(f"model `{name}`: {message}")
    code = proc.exitcode
    if code is not None and code < 0:
        if -code == signal.SIGKILL and memory:
            return error(_out_of_memory(name, memory) + " (the process was killed)")
        return error(f"model `{name}`: the process checking it was ended by {_signal_name(code)} (a crash in "
                     "native code: torch, python-flint or the model's own); the other models were checked")
    return error(f"model `{name}`: the process checking it ended with exit code {code} without a result "
                 "(did its code call os._exit?)")


def _inherit_torch(more: bool, needed: bool) -> None:
    """Import torch here once when a worker needed it and more work follows: the later workers
    inherit it instead of each importing it again (a second or so each)."""
    if more and needed and "torch" not in sys.modules:
        import torch  # noqa: F401

        _OWN_TORCH.append(True)


def _out_of_memory(name: str, memory: int | None) -> str:
    limit = f" of {memory / 2**30:.1f} GiB" if memory else ""
    return (f"model `{name}` ran out of memory (limit{limit}, set by $GRADCHECK_SYM_MEMORY_GB); check fewer "
            "points (--samples) or a smaller model")


# How long `Beside.result` waits for its child: this many times as long as this process took for
# its own part since the fork, and at least PATIENCE_MIN seconds; then the work is done here.
PATIENCE = 10.0
PATIENCE_MIN = 60.0


class Beside:
    """``work()`` computed in a forked child (unless not ``fork``) while this process does
    something else (the exact gradient here, the activation sizes there: two cores), and its
    (picklable) result collected by `result`.  Wherever the child cannot give it (no ``fork``, a CUDA build's torch
    refusing autograd in a child, a crash, a result that does not pickle), `result` computes it here
    instead, so the answer never depends on the child.  Used as a context manager: leaving the
    block (an exception, Ctrl-C, a time budget's alarm) kills a child still at work."""

    def __init__(self, work: Callable[[], Any], *, fork: bool = True, here: Callable[[], Any] | None = None) -> None:
        # ``here``: what this process computes where the child gives nothing (default ``work``).  A
        # child's ``work`` must raise rather than fall back to a weaker answer of its own: a CUDA
        # build's torch refuses autograd in a forked child with a RuntimeError, and work that turned
        # such errors into a default (no activation sizes: all zeros) would return that default as
        # the child's answer (found on a GPU machine: 1,344 of 1,350 sizes differed)
        self.work = here if here is not None else work
        self.pid: int | None = None
        self.forked = False  # whether the result came from a child (for tests)
        if not (fork and can_isolate()):
            return
        read, write = os.pipe()
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)  # no interrupt halfway through the fork
        try:
            with warnings.catch_warnings():  # Python 3.12+ warns of forking a threaded process (torch's
                warnings.simplefilter("ignore", DeprecationWarning)  # pools): the child runs on one thread
                pid = os.fork()
            if pid == 0:  # pragma: no cover  (the child: coverage does not follow it)
                os.close(read)
                _beside_child(write, work)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        os.close(write)
        self.pid, self.read, self.started = pid, read, time.monotonic()

    def result(self) -> Any:
        if self.pid is None:
            return self.work()
        # a child stuck (on a lock that some thread held when the fork copied it) is given up on
        deadline = time.monotonic() + max(PATIENCE_MIN, PATIENCE * (time.monotonic() - self.started))
        chunks = []
        while True:
            ready, _, _ = select.select([self.read], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                self.close()
                return self.work()
            chunk = os.read(self.read, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(self.read)
        os.waitpid(self.pid, 0)
        self.pid = None
        data = b"".join(chunks)
        try:
            status, value = pickle.loads(data)
        except Exception:  # noqa: BLE001 - nothing (a crash) or half of it: computed here
            status, value = "error", None
        if status != "ok":
            return self.work()
        self.forked = True
        return value

    def close(self) -> None:
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:  # pragma: no cover
                pass
            os.waitpid(self.pid, 0)
            os.close(self.read)
            self.pid = None

    def __enter__(self) -> Beside:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _beside_child(write: int, work: Callable[[], Any]) -> None:  # pragma: no cover  (runs in the child)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it kills this process
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)  # the parent's time budget is the parent's
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD)
    try:
        if "torch" in sys.modules:  # torch's thread pools do not survive a fork (see `_child`)
            import torch

            torch.set_num_threads(1)
        data = pickle.dumps(("ok", work()))
    except BaseException as exc:  # noqa: BLE001 - the parent computes it itself
        data = pickle.dumps(("error", f"{type(exc).__name__}: {exc}"))
    try:
        with os.fdopen(write, "wb") as f:
            f.write(data)
    finally:
        os._exit(0)  # no atexit handlers, no flushing of the parent's buffers twice
