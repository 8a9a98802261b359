"""Writing report files atomically: a run killed at any moment leaves each file either as it
was or complete, never half-written."""

from __future__ import annotations

import os
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
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_report(run: RunResult, out: Path) -> None:
    """Write the whole report of ``run`` into ``out``: Markdown, plots and ``results.json``."""
    from .report_md import render
    from .results import to_json

    write_atomic(out / "results.json", to_json(run))
    for name, data in render(run).items():
        write_atomic(out / name, data)


def save_rendering(run: RunResult, out: Path) -> None:
    """Write the Markdown and plots of ``run`` into ``out`` (not the results)."""
    from .report_md import render

    for name, data in render(run).items():
        write_atomic(out / name, data)
