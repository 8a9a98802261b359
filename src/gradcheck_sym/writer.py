"""Writing files atomically: a run killed at any moment (SIGINT, SIGTERM) leaves the files as they
were or the new ones complete, never half-written files or a mixture of two runs.

A leaf module: it knows files, not reports.  Each file is staged beside its target as
``.<name>.<pid>.<random>.tmp``; a run killed by SIGKILL while staging leaves those behind, and
the next write into the folder removes every one whose process is gone.
"""

from __future__ import annotations

import os
import re
import signal
import tempfile
from pathlib import Path

_STAGED = re.compile(r"^\..+\.(\d+)\.[A-Za-z0-9_]+\.tmp$")


def _mode(path: Path) -> int:
    """The existing file's permissions, else what a plain open() would give (0o666 - umask);
    mkstemp's private 0o600 must not leak into reports meant to be shared."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_leftovers(folder: Path) -> list[str]:
    """Delete the staging files of writers into ``folder`` that were killed; the names removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        m = _STAGED.match(e.name)
        if m and e.is_file(follow_symlinks=False) and not _alive(int(m[1])):
            try:
                os.unlink(e.path)
                removed.append(e.name)
            except OSError:
                pass
    return removed


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    write_all_atomic(path.parent, {path.name: data})


def _stage(path: Path, data: str | bytes) -> str:
    """A complete temporary copy of ``path``'s new content, beside it."""
    mode = _mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
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
    """Write a set of files (plain names, no folders) into ``out`` so that an interruption
    leaves either the old set or the new one: every file is first written completely beside its
    target, then all are renamed into place with SIGINT and SIGTERM held back (they take effect
    right after)."""
    for name in files:
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise ValueError(f"{name!r} is not a plain file name")
    out.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out)
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
