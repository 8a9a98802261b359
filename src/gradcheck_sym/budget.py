"""A time budget per model: a model whose checking takes too long is reported as timed out and
the others go on.

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
