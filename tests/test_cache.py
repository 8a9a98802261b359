"""The on-disk cache: reused when nothing changed, invalidated per model, never trusted."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

import sympy as sp

from gradcheck_sym import Model, cache, verify
from gradcheck_sym import verifier as verifier_module

x, y, w = sp.symbols("x y w", real=True)


def model(name="m", loss=None, **kw):
    return Model(name=name, loss=loss if loss is not None else (x * w - y) ** 2, params=[w], inputs=[x, y],
                 domain={"*": (-2, 2)}, **kw)


def count_runs(monkeypatch):
    calls = []
    real = verifier_module._verify

    def counting(m, *args, **kwargs):
        calls.append(m.name)
        return real(m, *args, **kwargs)

    monkeypatch.setattr(verifier_module, "_verify", counting)
    return calls


def test_unchanged_models_are_not_checked_again(monkeypatch, private_cache):
    calls = count_runs(monkeypatch)
    first = verify(model(), samples=3)
    second = verify(model(), samples=3)  # a new but identical model object
    assert calls == ["m"]
    assert second == first
    assert any((private_cache / "results").iterdir())


def test_a_changed_model_invalidates_only_itself(monkeypatch):
    calls = count_runs(monkeypatch)
    verify(model("a"), samples=2)
    verify(model("b"), samples=2)
    verify(model("a", loss=(x * w - y) ** 2 + w), samples=2)  # a changed
    verify(model("b"), samples=2)
    assert calls == ["a", "b", "a"]


def test_options_are_part_of_the_key(monkeypatch):
    calls = count_runs(monkeypatch)
    verify(model(), samples=2)
    verify(model(), samples=3)
    verify(model(), samples=2, seed=1)
    verify(model(), samples=2, dtypes=["float32"])
    assert len(calls) == 4


def test_user_code_is_never_cached(monkeypatch):
    calls = count_runs(monkeypatch)
    for _ in range(2):
        verify(model(grad_impl=lambda w, x, y: 2 * x * (x * w - y)), samples=2)
    assert len(calls) == 2


def test_corrupt_entries_are_rebuilt_not_trusted(monkeypatch, private_cache):
    calls = count_runs(monkeypatch)
    good = verify(model(), samples=2)
    for path in (private_cache / "results").iterdir():
        path.write_bytes(b"\x00garbage{")
    again = verify(model(), samples=2)
    assert calls == ["m", "m"] and again == good
    assert verify(model(), samples=2) == good and calls == ["m", "m"]  # rewritten, valid


def _entry(private_cache):
    (path,) = (private_cache / "results").iterdir()
    return path


def _edit(path, change):
    """Change a stored result as someone editing the file would: its content, not its tag."""
    from gradcheck_sym.cache import MAGIC

    raw = path.read_bytes()
    head, data = raw[: len(MAGIC) + 32], raw[len(MAGIC) + 32:]
    value = json.loads(data)
    change(value)
    path.write_bytes(head + json.dumps(value).encode())


@pytest.mark.parametrize("change", [
    lambda d: d.update(status="fail"),
    lambda d: d.update(status="Pass"),
    lambda d: d["checks"][0].update(verdict="mismatch", value=123.0),
    lambda d: d.update(name="../../outside"),
], ids=["verdict", "unknown status", "a check", "name"])
def test_an_edited_result_is_recomputed_not_believed(monkeypatch, private_cache, change):
    calls = count_runs(monkeypatch)
    good = verify(model(), samples=2)
    _edit(_entry(private_cache), change)
    again = verify(model(), samples=2)
    assert calls == ["m", "m"] and again == good and again.status == "pass"


def test_an_entry_moved_to_another_key_is_not_believed(monkeypatch, private_cache):
    calls = count_runs(monkeypatch)
    verify(model(), samples=2)
    a = _entry(private_cache)
    verify(model(), samples=3)
    (b,) = [p for p in (private_cache / "results").iterdir() if p != a]
    b.write_bytes(a.read_bytes())  # a valid entry, under another model's key
    r = verify(model(), samples=3)
    assert calls == ["m", "m", "m"] and len(r.points["float64"]) == 3


def test_a_planted_file_never_runs(run_cli, private_cache, tmp_path):
    """Nothing in the cache is code: a pickle planted in the folder (where compiled programs were
    once kept) runs nothing, even in `verify --expr`."""
    import pickle

    marker = tmp_path / "it-ran"

    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    assert run_cli("verify", "--expr", "(w*x)**2", "--params", "w", "--no-report", "--quiet").returncode == 0
    for folder in ("programs", "results", "replay", "plots"):
        (private_cache / folder).mkdir(exist_ok=True)
        for p in list((private_cache / folder).iterdir()) + [private_cache / folder / ("0" * 32 + ".pkl")]:
            p.write_bytes(pickle.dumps(Boom()))
    r = run_cli("verify", "--expr", "(w*x)**2", "--params", "w", "--no-report", "--quiet")
    assert r.returncode == 0 and not marker.exists(), r.stderr
    assert "pickle" not in Path(cache.__file__).read_text().replace("nothing is unpickled", "")


def test_folder_is_private_and_refused_when_others_can_write(run_cli, tmp_path, monkeypatch):
    fresh = tmp_path / "a" / "cache"
    monkeypatch.setenv("GRADCHECK_SYM_CACHE", str(fresh))
    assert run_cli("verify", "--expr", "(w*x)**2", "--params", "w", "--no-report", "--quiet").returncode == 0
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    assert stat.S_IMODE((fresh / "key").stat().st_mode) == 0o600 and (fresh / "results").is_dir()
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("GRADCHECK_SYM_CACHE", str(shared))
    r = run_cli("verify", "--expr", "(w*x)**2", "--params", "w", "--no-report", "--quiet")
    assert r.returncode == 0 and r.stderr.count("warning: not using the cache") == 1, r.stderr
    assert "may be written by other users" in r.stderr and not any(shared.iterdir())


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to give a folder away")
def test_folder_of_another_user_is_refused(run_cli, tmp_path, monkeypatch):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)
    monkeypatch.setenv("GRADCHECK_SYM_CACHE", str(theirs))
    r = run_cli("verify", "--expr", "(w*x)**2", "--params", "w", "--no-report", "--quiet")
    assert r.returncode == 0 and "belongs to another user (uid 65534)" in r.stderr
    assert not any(theirs.iterdir())


def test_clear_deletes_only_what_the_cache_wrote(run_cli, private_cache):
    assert run_cli("verify", "--expr", "(w*x)**2", "--params", "w", "--no-report", "--quiet").returncode == 0
    (private_cache / "notes.txt").write_text("mine")
    (private_cache / "results" / "keep-me.json").write_text("{}")
    (private_cache / "programs").mkdir()  # an earlier version's pickled programs: its own files
    (private_cache / "programs" / ("0" * 32 + ".pkl")).write_bytes(b"old")
    (private_cache / "programs" / "mine.pkl").write_bytes(b"not ours")
    r = run_cli("cache", "clear")
    assert r.returncode == 0 and "3 other files left untouched" in r.stdout, r.stdout
    left = sorted(str(p.relative_to(private_cache)) for p in private_cache.rglob("*"))
    assert left == ["notes.txt", "programs", "programs/mine.pkl", "results", "results/keep-me.json"]


def test_disabled_cache_neither_reads_nor_writes(monkeypatch, private_cache):
    monkeypatch.setattr(cache, "_DISABLED", True)
    calls = count_runs(monkeypatch)
    verify(model(), samples=2)
    verify(model(), samples=2)
    assert calls == ["m", "m"]
    assert not any(private_cache.iterdir())


def test_cache_command(run_cli, private_cache):
    assert run_cli("verify", "--expr", "(w*x)**2", "--params", "w", "--no-report", "--quiet").returncode == 0
    info = run_cli("cache", "info")
    assert str(private_cache) in info.stdout and "entries" in info.stdout
    assert run_cli("cache", "clear").returncode == 0
    assert not private_cache.exists()  # it held only what the cache wrote
