"""The on-disk cache: reused when nothing changed, invalidated per model, rebuilt when corrupt."""

from __future__ import annotations

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
    for path in (private_cache / "programs").iterdir():
        path.write_bytes(b"not a pickle")
    again = verify(model(), samples=2)
    assert calls == ["m", "m"] and again == good
    assert verify(model(), samples=2) == good and calls == ["m", "m"]  # rewritten, valid


def test_compiled_programs_are_reused(monkeypatch):
    verify(model(), samples=1)
    monkeypatch.setattr(verifier_module, "gradient_program", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    r = verify(model(), samples=4)  # another result key, same expression: the program comes from disk
    assert r.status == "pass"


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
    assert not private_cache.exists()
