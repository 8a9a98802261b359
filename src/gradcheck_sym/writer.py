"""Writing report files atomically: a run killed at any moment (SIGINT, SIGTERM) leaves the
report as it was or the new one complete, never half-written files or a mixture of two runs."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .results import RunResult


def _mode(path: Path) -> int:
    """The existing file's permissions, else what a plain open() would give (0o666 - umask);
    mkstemp's private 0o600 must not leak into reports meant to be shared."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    write_all_atomic(path.parent, {path.name: data})


def _stage(path: Path, data: str | bytes) -> str:
    """A complete temporary copy of ``path``'s new content, beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def write_all_atomic(out: Path, files: dict[str, str | bytes]) -> None:
    """Write a set of files so that an interruption leaves either the old set or the new one:
    every file is first written completely beside its target, then all are renamed into place
    with SIGINT and SIGTERM held back (they take effect right after)."""
    staged: list[tuple[str, Path]] = []
    try:
        for name, data in files.items():
            staged.append((_stage(out / name, data), out / name))
        held = {signal.SIGINT, signal.SIGTERM}
        can_hold = hasattr(signal, "pthread_sigmask")
        old = signal.pthread_sigmask(signal.SIG_BLOCK, held) if can_hold else None
        try:
            for tmp, target in staged:
                os.replace(tmp, target)
            staged = []
        finally:
            if can_hold:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
    finally:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)


def save_report(run: RunResult, out: Path) -> None:
    """Write the whole report of ``run`` into ``out``: Markdown, plots and ``results.json``."""
    from .report_md import render
    from .results import to_json

    write_all_atomic(out, {**render(run), "results.json": to_json(run)})


def save_rendering(run: RunResult, out: Path) -> None:
    """Write the Markdown and plots of ``run`` into ``out`` (not the results)."""
    from .report_md import render

    write_all_atomic(out, render(run))
