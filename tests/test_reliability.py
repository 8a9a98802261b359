"""Interrupted runs, time budgets, atomic report writes and broken implementations."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sympy as sp
import torch

from gradcheck_sym import Model, verify
from gradcheck_sym.writer import write_all_atomic

x, y, w = sp.symbols("x y w", real=True)


def linear(**kw):
    return Model(name="linear", loss=(x * w - y) ** 2, params=[w], inputs=[x, y], domain={"*": (-2, 2)}, **kw)


@pytest.mark.parametrize(
    ("impl", "words"),
    [
        (lambda w, x, y: (x * w - y) ** 2 * torch.ones(2), "a tensor of shape (2,)"),
        (lambda w, x, y: ((x * w - y) ** 2).item(), "not a tensor"),
        (lambda w, x, y: ((x * w - y) ** 2).double() if w.dtype == torch.float32 else (x * w - y) ** 2,
         "returned float64 for float32 inputs"),
        (lambda w, x, y: ((x * w - y) ** 2).detach(), "no autograd graph"),
        (lambda w, x, y: (w.add_(1) * x - y) ** 2, "updates an input tensor in place"),
        (lambda w, x, y: (x * 2 - y) ** 2 + 0 * x.sum() + w.new_zeros(()).requires_grad_(), "does not depend on `w`"),
        (lambda w, x, y: x.undefined_method(), "AttributeError"),
    ],
    ids=["non-scalar", "python float", "wrong dtype", "detached", "in-place leaf", "independent", "raises"],
)
def test_broken_implementations_are_errors_that_say_what_happened(impl, words):
    r = verify(linear(impl=impl), samples=2)
    assert r.status == "error"
    assert "model `linear`" in r.error and words in r.error, r.error


def test_one_broken_model_does_not_stop_the_others(tmp_path, run_cli):
    (tmp_path / "m.py").write_text(textwrap.dedent("""
        import sympy as sp
        from gradcheck_sym import Model
        x, w = sp.symbols("x w", real=True)
        broken = Model(name="broken", loss=(w*x)**2, params=[w], inputs=[x], domain={"*": (0, 1)},
                       impl=lambda w, x: 1/0)
        fine = Model(name="fine", loss=(w*x)**2, params=[w], inputs=[x], domain={"*": (0, 1)})
    """))
    r = run_cli("verify", "m.py", "--report-dir", "rep", "--dtypes", "float64", cwd=tmp_path)
    assert r.returncode == 2
    assert "ERROR broken" in r.stdout and "ZeroDivisionError" in r.stdout
    assert "fine" in r.stdout and (tmp_path / "rep" / "fine.md").is_file()


def test_time_budget_times_out_one_model_and_goes_on():
    slow = Model(name="slow", loss=sum(sp.sin(w * x + k) for k in range(400)) ** 2, params=[w], inputs=[x],
                 domain={"*": (0, 1)})
    r = verify(slow, samples=50, timeout=0.2)
    assert r.status == "error" and "timed out after 0.2 s" in r.error and "--timeout" in r.error
    assert verify(linear(), samples=2, timeout=30).status == "pass"


def test_atomic_writes_leave_the_old_report_when_they_fail(tmp_path):
    write_all_atomic(tmp_path, {"index.md": "old index", "a.md": "old a"})
    with pytest.raises(TypeError):
        write_all_atomic(tmp_path, {"index.md": "new index", "a.md": 12345})  # fails while staging
    assert (tmp_path / "index.md").read_text() == "old index"
    assert (tmp_path / "a.md").read_text() == "old a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md", "index.md"]  # no temporary files left


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_run_prints_what_finished_and_keeps_the_old_report(tmp_path, sig):
    report = tmp_path / "reports"
    report.mkdir()
    (report / "index.md").write_text("the previous report")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gradcheck_sym", "verify", "--samples", "40"], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    seen = ""
    deadline = time.time() + 120
    while "mlp-193" not in seen and time.time() < deadline:  # interrupt during the big model
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted after 4 of 6 models" in err and "previous one is intact" in err
    assert "two-linear-layers" in out and "Traceback" not in err
    assert (report / "index.md").read_text() == "the previous report"
    assert sorted(p.name for p in report.iterdir()) == ["index.md"]


def test_same_inputs_same_verdicts():
    a = verify(linear(), seed=3)
    b = verify(linear(), seed=3)
    assert a == b
