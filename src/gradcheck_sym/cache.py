"""An on-disk cache, so that checking unchanged models again costs almost nothing.

Location: ``$GRADCHECK_SYM_CACHE`` if set, else ``$XDG_CACHE_HOME/gradcheck_sym``, else
``~/.cache/gradcheck_sym``.  ``python -m gradcheck_sym cache clear`` deletes its entries, ``cache
info`` shows where it is and how big; ``verify --no-cache`` neither reads nor writes it.

What is kept, each under a key that changes whenever anything it depends on changes:

* ``results/``: a model's whole result, for models without ``impl``/``grad_impl`` (whose code
  gradcheck_sym cannot see change), keyed by the expression, everything else the model declares,
  the options of the run and the versions of gradcheck_sym, SymPy, torch and python-flint;
* ``replay/`` and ``plots/``: the training replay and the report's PNGs, keyed likewise.

A changed model gets a new key and invalidates only itself.

**Never trusted.**  Entries are data (JSON, PNG), never code: nothing is unpickled.  Each entry
carries an HMAC-SHA256 of its kind, key and content under a secret of 32 random bytes that the
cache creates for itself (``key``, mode 0600); an entry whose tag does not verify (edited,
planted, truncated, copied from another key) is deleted and recomputed, so a cached entry can
only save work, never change a verdict.  The folder is created 0700; one that belongs to another
user or that others may write is refused (the run goes on without a cache and says so once).
``cache clear`` deletes the entries and the secret it wrote, and nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.metadata
import json
import os
import re
import secrets
import stat
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .writer import write_atomic

ENV = "GRADCHECK_SYM_CACHE"
KINDS = ("results", "replay", "plots")
SUFFIXES = (".json", ".png")
KEY_FILE = "key"
MAGIC = b"gradcheck_sym-cache-1\n"
_ENTRY = re.compile(r"^[0-9a-f]{32}\.(json|png)$")
# What earlier versions wrote and this one never reads: compiled programs (.pkl).  `cache clear`
# removes them too (they are this tool's files); nothing ever loads them.
LEGACY_KINDS = ("programs",)
_LEGACY_ENTRY = re.compile(r"^[0-9a-f]{32}\.pkl$")
_DISABLED = False
_SECRET: dict[str, bytes] = {}  # per cache location
_WARNED: set[str] = set()


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


class Refused(OSError):
    """The cache folder is not this user's own."""


def _own_private(path: Path, what: str) -> None:
    """Refuse ``path`` unless this user owns it and no one else may write it."""
    st = path.stat()
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise Refused(f"{what} `{path}` belongs to another user (uid {st.st_uid})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise Refused(f"{what} `{path}` may be written by other users (mode {stat.filemode(st.st_mode)}); "
                      f"`chmod go-w {path}` or remove it")


def _root() -> Path:
    """The cache folder, created 0700 if missing, refused if it is not this user's own."""
    root = location()
    if not root.exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        try:
            root.mkdir(mode=0o700)
        except FileExistsError:
            pass
    _own_private(root, "the cache folder")
    return root


def _secret(root: Path) -> bytes:
    """This cache's HMAC key, created on first use (0600, this user's)."""
    k = str(root)
    if k not in _SECRET:
        path = root / KEY_FILE
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
        _own_private(path, "the cache's key")
        if path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
            raise Refused(f"the cache's key `{path}` may be read by other users; remove it")
        data = path.read_bytes()
        if len(data) != 32:
            raise Refused(f"the cache's key `{path}` is not one gradcheck_sym wrote; remove it")
        _SECRET[k] = data
    return _SECRET[k]


def _usable() -> tuple[Path, bytes] | None:
    """The folder and key, or None (disabled, or refused: said once on stderr)."""
    if _DISABLED:
        return None
    try:
        root = _root()
        return root, _secret(root)
    except OSError as exc:
        where = str(location())
        if where not in _WARNED:
            _WARNED.add(where)
            reason = str(exc) if isinstance(exc, Refused) else f"`{where}`: {exc.strerror or exc}"
            print(f"warning: not using the cache: {reason}", file=sys.stderr)
        return None


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


def _check_name(kind: str, digest: str, suffix: str) -> None:
    if kind not in KINDS or not _ENTRY.match(digest + suffix):
        raise ValueError(f"not a cache entry: {kind}/{digest}{suffix}")


def _tag(secret: bytes, kind: str, digest: str, suffix: str, data: bytes) -> bytes:
    return hmac.new(secret, f"{kind}/{digest}{suffix}\n".encode() + data, hashlib.sha256).digest()


def load_bytes(kind: str, digest: str, suffix: str) -> bytes | None:
    """An entry's content, if it is there and its tag verifies (else it is deleted)."""
    _check_name(kind, digest, suffix)
    usable = _usable()
    if usable is None:
        return None
    root, secret = usable
    path = root / kind / f"{digest}{suffix}"
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    head, tag, data = raw[: len(MAGIC)], raw[len(MAGIC) : len(MAGIC) + 32], raw[len(MAGIC) + 32 :]
    if head != MAGIC or not hmac.compare_digest(tag, _tag(secret, kind, digest, suffix, data)):
        forget(kind, digest, suffix)
        return None
    return data


def store_bytes(kind: str, digest: str, suffix: str, data: bytes) -> None:
    _check_name(kind, digest, suffix)
    usable = _usable()
    if usable is None:
        return
    root, secret = usable
    try:
        (root / kind).mkdir(mode=0o700, exist_ok=True)
        write_atomic(root / kind / f"{digest}{suffix}", MAGIC + _tag(secret, kind, digest, suffix, data) + data)
    except OSError:
        pass  # a cache that cannot be written is only a slower run


def forget(kind: str, digest: str, suffix: str) -> None:
    _check_name(kind, digest, suffix)
    try:
        (location() / kind / f"{digest}{suffix}").unlink()
    except OSError:
        pass


def load_json(kind: str, digest: str) -> Any:
    """A cached JSON value whose tag verifies, or None."""
    data = load_bytes(kind, digest, ".json")
    if data is None:
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        forget(kind, digest, ".json")
        return None


def store_json(kind: str, digest: str, value: Any) -> None:
    store_bytes(kind, digest, ".json", json.dumps(value, ensure_ascii=False).encode("utf-8"))


def _entries(root: Path) -> list[Path]:
    """The files this cache wrote: entries named by a digest in its own folders."""
    out = []
    for kinds, pattern in ((KINDS, _ENTRY), (LEGACY_KINDS, _LEGACY_ENTRY)):
        for kind in kinds:
            folder = root / kind
            if folder.is_dir() and not folder.is_symlink():
                out += [p for p in folder.iterdir()
                        if pattern.match(p.name) and p.is_file() and not p.is_symlink()]
    return out


def info() -> str:
    root = location()
    files = _entries(root) if root.is_dir() else []
    size = sum(p.stat().st_size for p in files)
    return f"{root}: {len(files)} entries, {size / 1e6:.1f} MB"


def clear() -> str:
    """Delete the entries and the key this cache wrote, then the folders if that left them
    empty; anything else in them is left where it is."""
    root = location()
    if not root.is_dir():
        return f"{root} was already empty"
    entries = _entries(root)
    for p in entries:
        p.unlink()
    key = root / KEY_FILE
    if key.is_file() and not key.is_symlink():
        key.unlink()
    _SECRET.pop(str(root), None)
    for folder in [*(root / k for k in (*KINDS, *LEGACY_KINDS)), root]:
        try:
            folder.rmdir()  # only if empty
        except OSError:
            pass
    left = [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []
    return f"cleared {root}: {len(entries)} entries deleted" + (
        f"; {len(left)} other files left untouched (not written by the cache)" if left else "")


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
