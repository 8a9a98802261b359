"""Budgets per model: time (a model whose checking takes too long is reported as timed out and
the others go on), memory (the limit of the process that checks it, see `worker`), and sizes
that cannot be afforded, refused before anything is computed.

SymPy's symbolic work is pure Python, so an alarm signal can interrupt it between any two
bytecodes.  This needs the main thread of a process on a system with ``setitimer`` (Linux,
macOS); elsewhere the budget is not enforced (and the result says nothing about it).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import GradcheckError


REPEAT = 0.05  # seconds between alarms once the budget is spent


class TimedOut(GradcheckError):
    """The model's time budget ran out."""


def can_enforce() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextmanager
def time_budget(seconds: float | None, message: str) -> Iterator[None]:
    """Raise `TimedOut` with ``message`` if the block runs longer than ``seconds``."""
    if not seconds or not can_enforce():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise TimedOut(message)

    previous = signal.signal(signal.SIGALRM, expire)
    # the alarm repeats: an exception raised while a garbage-collector callback or a __del__
    # runs is swallowed by Python ("exception ignored"), so one alarm alone can be lost
    signal.setitimer(signal.ITIMER_REAL, seconds, REPEAT)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


DEFAULT_TIMEOUT = 600.0  # seconds per model unless --timeout says otherwise ("none": no budget)
MEMORY_ENV = "GRADCHECK_SYM_MEMORY_GB"
MEMORY_FRACTION = 0.75  # of the machine's memory, for the process checking one model
MAX_EXPONENT = 10**5  # an exact power of a rational point with a larger exponent has millions of digits
MAX_ARGUMENT = 10**6  # exp(10**99): no exact or float evaluation can afford such an argument


def memory_limit() -> int | None:
    """Bytes the process checking one model may use: ``$GRADCHECK_SYM_MEMORY_GB``, else
    `MEMORY_FRACTION` of the physical memory (None where that is unknown)."""
    import os

    env = os.environ.get(MEMORY_ENV)
    if env:
        try:
            return int(float(env) * 2**30) if float(env) > 0 else None
        except ValueError:
            return None
    try:
        return int(MEMORY_FRACTION * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_affordable(model: object) -> None:
    """Raise `GradcheckError` naming the subexpression when ``model``'s loss holds something whose
    exact value cannot be afforded: a power with an exponent above `MAX_EXPONENT`, a function of
    a constant larger than `MAX_ARGUMENT`.  Cheap: one walk over the expression's DAG."""
    import sympy as sp

    name = getattr(model, "name", "?")
    seen: set[int] = set()
    stack = [model.loss]  # type: ignore[attr-defined]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, sp.Pow) and e.exp.is_Number and abs(e.exp) > MAX_EXPONENT:
            raise GradcheckError(
                f"model `{name}`: the power `{_short(e)}` has the exponent {_short(e.exp)}; its exact value at a "
                f"point would have millions of digits (at most {MAX_EXPONENT} is accepted); write a smaller power")
        if isinstance(e, sp.Function) and e.args and all(a.is_Number for a in e.args):
            big = [a for a in e.args if abs(a) > MAX_ARGUMENT]
            if big:
                raise GradcheckError(
                    f"model `{name}`: `{_short(e)}` has the constant argument {_short(big[0])}, larger than "
                    f"{MAX_ARGUMENT}; it cannot be evaluated exactly or in floats")
        stack.extend(e.args)


def _short(e: object, limit: int = 60) -> str:
    text = str(e)
    return text if len(text) <= limit else text[: limit - 1] + "…"
