"""The command line, run as a user runs it: in a subprocess."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

LECTURE = (Path(__file__).parent / "data" / "lecture_output.txt").read_text().splitlines()

GOOD = textwrap.dedent(
    """
    import sympy as sp
    from gradcheck_sym import Model
    x, y, w = sp.symbols("x y w", real=True)
    linear = Model(name="good-linear", loss=(x*w - y)**2, params=[w], inputs=[x, y],
                   domain={"*": (-2, 2)}, grad_impl=lambda w, x, y: 2*x*(x*w - y))
    """
)
WRONG = GOOD.replace("good-linear", "wrong-linear").replace("2*x*(x*w - y))", "x*(x*w - y))")
BROKEN = textwrap.dedent(
    """
    import sympy as sp
    from gradcheck_sym import Model
    x, w = sp.symbols("x w", real=True)
    bad = Model(name="bad", loss=x*w, params=[w], domain={"*": (0, 1)})
    """
)


@pytest.fixture
def files(tmp_path):
    for name, text in (("good.py", GOOD), ("wrong.py", WRONG), ("broken.py", BROKEN)):
        (tmp_path / name).write_text(text)
    return tmp_path


def test_help_lists_commands_options_and_exit_codes(run_cli):
    top = run_cli("--help")
    assert top.returncode == 0
    for word in ("verify", "list", "replay", "exit codes"):
        assert word in top.stdout
    v = run_cli("verify", "--help")
    text = " ".join(v.stdout.split())
    for flag in ("--samples N", "--seed N", "--dtypes LIST", "--report-dir DIR", "--json PATH"):
        assert flag in text
    assert "(default: 5)" in text and "(default: float64,float32)" in text


def test_verify_builtin_models_writes_report_and_json(run_cli, tmp_path):
    out = tmp_path / "rep"
    r = run_cli("verify", "--samples", "2", "--report-dir", str(out), "--json", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("linear", "affine", "quadratic", "two-linear-layers", "mlp-193", "logistic"):
        assert name in r.stdout
        assert (out / f"{name}.md").is_file()
    assert "193 weights, 31 biases" in r.stderr  # progress states the lecture's count
    assert (out / "index.md").is_file() and (out / "results.json").is_file()
    data = json.loads((tmp_path / "r.json").read_text())
    assert [m["status"] for m in data["models"]] == ["pass"] * 6
    mlp = next(m for m in data["models"] if m["name"] == "mlp-193")
    check = next(c for c in mlp["checks"] if c["param"] == "W3" and c["quantity"] == "grad")
    for key in ("source", "dtype", "param", "index", "point", "exact", "value", "abs_error", "rel_error",
                "ulps", "verdict"):
        assert key in check
    assert check["index"] == [0, 0] and check["source"] in ("autograd", "fd")
    assert set(data["models"][0]["points"]) == {"float64", "float32"}
    assert data["replay"]["lines_float32"][:3] == LECTURE[:3]


def test_wrong_gradient_exits_1_and_names_the_entry(run_cli, files):
    r = run_cli("verify", str(files / "good.py"), str(files / "wrong.py"), "--report-dir", str(files / "rep"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL wrong-linear" in r.stdout
    assert "grad_impl" in r.stdout and "∂loss/∂w" in r.stdout and "wrong:" in r.stdout
    assert "good-linear" in r.stdout


def test_unusable_target_exits_2_and_still_checks_the_others(run_cli, files):
    r = run_cli("verify", str(files / "good.py"), str(files / "broken.py"), str(files / "missing.py"),
                "--report-dir", str(files / "rep"), "--dtypes", "float64")
    assert r.returncode == 2
    assert "good-linear" in r.stdout and "pass" in r.stdout
    assert "model `bad`" in r.stderr and "neither a param nor an input" in r.stderr
    assert "missing.py`: no such file" in r.stderr
    assert "Traceback" not in r.stderr


def test_dotted_module_target_and_list(run_cli, files):
    pkg = files / "mymodels"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "linear.py").write_text(GOOD)
    r = run_cli("list", "mymodels.linear", cwd=files)
    assert r.returncode == 0 and "good-linear" in r.stdout
    r = run_cli("verify", "mymodels.linear", "--samples", "1", "--report-dir", "rep", cwd=files)
    assert r.returncode == 0 and (files / "rep" / "good-linear.md").is_file()


def test_help_does_not_import_torch(run_cli):
    import subprocess
    import sys

    code = "import sys, gradcheck_sym.cli as c; c.main(['--help']); print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip().endswith("False")


def test_list_builtin_models(run_cli):
    r = run_cli("list")
    assert r.returncode == 0
    assert r.stdout.count("\n") >= 6 and "mlp-193" in r.stdout and "224 parameters" in r.stdout


def test_replay_prints_the_lecture_output(run_cli):
    r = run_cli("replay", "--only", "float32")
    lines = r.stdout.splitlines()
    assert lines[:9] == LECTURE[:9] and lines[-2:] == LECTURE[-2:]
    both = run_cli("replay").stdout.splitlines()
    assert "exact grad -7.84" in both[2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("verify", "--samples", "-1"), "expected a number >= 0"),
        (("verify", "--dtypes", "float16"), "comma-separated list of float64, float32"),
        (("verify", "--seed", "x"), "expected a whole number"),
        (("frobnicate",), "invalid choice"),
    ],
)
def test_bad_options_exit_2_with_one_line_reason(run_cli, args, message):
    r = run_cli(*args)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
