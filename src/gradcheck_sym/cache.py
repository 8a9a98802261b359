"""An on-disk cache, so that checking unchanged models again costs almost nothing.

Location: ``$GRADCHECK_SYM_CACHE`` if set, else ``$XDG_CACHE_HOME/gradcheck_sym``, else
``~/.cache/gradcheck_sym``.  ``python -m gradcheck_sym cache clear`` empties it, ``cache info``
shows where it is and how big; ``verify --no-cache`` neither reads nor writes it.

What is kept, each under a key that changes whenever anything it depends on changes:

* ``programs/``: a model's compiled gradient program and layer graph, keyed by its expression
  (the flat program of its loss, symbol by symbol) and the versions of gradcheck_sym and SymPy;
* ``results/``: a model's whole result, for models without ``impl``/``grad_impl`` (whose code
  gradcheck_sym cannot see change), keyed by the expression, everything else the model declares,
  the options of the run and the versions of gradcheck_sym, SymPy, torch and python-flint;
* ``replay/`` and ``plots/``: the training replay and the report's PNGs, keyed likewise.

A changed model gets a new key and invalidates only itself.  Entries are written atomically and
read defensively: anything unreadable is deleted and rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

from . import __version__
from .writer import write_atomic

ENV = "GRADCHECK_SYM_CACHE"
_DISABLED = False


def location() -> Path:
    """Where the cache lives (see the module docstring)."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gradcheck_sym"


def disable() -> None:
    """Neither read nor write the cache for the rest of this process."""
    global _DISABLED
    _DISABLED = True


def enabled() -> bool:
    return not _DISABLED


_CODE: list[str] = []


def code_digest() -> str:
    """A digest of gradcheck_sym's own source: a change to it invalidates the cache even when the
    version number stays the same (as it does between releases)."""
    if not _CODE:
        h = hashlib.sha256()
        for path in sorted(Path(__file__).parent.glob("*.py")):
            h.update(path.name.encode())
            h.update(path.read_bytes())
        _CODE.append(h.hexdigest()[:16])
    return _CODE[0]


def versions(*packages: str) -> dict[str, str]:
    """Installed versions, read without importing the packages."""
    out = {"gradcheck_sym": f"{__version__}+{code_digest()}"}
    for p in packages:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = "none"
    return out


def key(*parts: Any) -> str:
    """A stable digest of JSON-able parts."""
    text = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _path(kind: str, digest: str, suffix: str) -> Path:
    return location() / kind / f"{digest}{suffix}"


def load_bytes(kind: str, digest: str, suffix: str) -> bytes | None:
    if _DISABLED:
        return None
    path = _path(kind, digest, suffix)
    try:
        return path.read_bytes()
    except OSError:
        return None


def store_bytes(kind: str, digest: str, suffix: str, data: bytes) -> None:
    if _DISABLED:
        return
    try:
        write_atomic(_path(kind, digest, suffix), data)
    except OSError:
        pass  # a cache that cannot be written is only a slower run


def forget(kind: str, digest: str, suffix: str) -> None:
    try:
        _path(kind, digest, suffix).unlink()
    except OSError:
        pass


def load_pickle(kind: str, digest: str) -> Any:
    """A cached object, or None (a corrupt entry is deleted)."""
    data = load_bytes(kind, digest, ".pkl")
    if data is None:
        return None
    try:
        return pickle.loads(data)  # noqa: S301 - our own files, written by store_pickle
    except Exception:  # noqa: BLE001 - anything unreadable is rebuilt, not trusted
        forget(kind, digest, ".pkl")
        return None


def store_pickle(kind: str, digest: str, value: Any) -> None:
    store_bytes(kind, digest, ".pkl", pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def load_json(kind: str, digest: str) -> Any:
    data = load_bytes(kind, digest, ".json")
    if data is None:
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        forget(kind, digest, ".json")
        return None


def store_json(kind: str, digest: str, value: Any) -> None:
    store_bytes(kind, digest, ".json", json.dumps(value, ensure_ascii=False).encode("utf-8"))


def info() -> str:
    root = location()
    files = [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []
    size = sum(p.stat().st_size for p in files)
    return f"{root}: {len(files)} entries, {size / 1e6:.1f} MB"


def clear() -> str:
    root = location()
    existed = root.is_dir()
    if existed:
        shutil.rmtree(root)
    return f"cleared {root}" if existed else f"{root} was already empty"


def _datum(d: Any) -> Any:
    """An instruction's data as stable text (SymPy numbers by srepr, functions by name)."""
    if d is None or isinstance(d, (bool, int, str)):
        return d
    if isinstance(d, type):
        return d.__name__
    import sympy as sp

    return sp.srepr(d)


def expression_key(model: Any) -> str:
    """The model's loss and variables: what the compiled programs depend on."""
    prog = model.program
    return key(
        "expression",
        [(v.name, list(v.shape), v.role) for v in model.variables],
        [str(s) for s in prog.variables],
        prog.ops, [list(a) for a in prog.args], [_datum(d) for d in prog.data], prog.output,
        model.input_grads,
    )


def result_key(model: Any, options: dict[str, Any]) -> str:
    """Everything a model's result depends on, for a model without user code."""
    return key(
        "result", expression_key(model), model.name, model.description, list(model.notes), model.latex,
        {str(s): [str(lo), str(hi)] for s, (lo, hi) in model.domain.items()},
        [{str(s): str(v) for s, v in p.items()} for p in model.points],
        options, versions("sympy", "torch", "python-flint"),
    )
