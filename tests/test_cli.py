"""The command line, run as a user runs it: one subprocess per behaviour of the process (exit codes,
imports, a closed pipe), the rest through `cli.main` in this process (`run_cli`).  The whole
built-in run, as a process, is read by test_report_md.py (its report is compared with the committed one)."""

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


def test_wrong_gradient_exits_1_and_names_the_entry(run_cli, files):
    r = run_cli("verify", str(files / "good.py"), str(files / "wrong.py"), "--report-dir", str(files / "rep"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL wrong-linear" in r.stdout
    assert "grad_impl" in r.stdout and "∂loss/∂w" in r.stdout and "wrong:" in r.stdout
    assert "good-linear" in r.stdout


def test_unusable_target_exits_2_and_still_checks_the_others(run_cli_process, files):
    """The process's exit code (2 before 1: a target could not be used, another model is wrong)."""
    r = run_cli_process("verify", str(files / "good.py"), str(files / "wrong.py"), str(files / "broken.py"),
                        str(files / "missing.py"), "--report-dir", str(files / "rep"), "--dtypes", "float64")
    assert r.returncode == 2
    assert "good-linear" in r.stdout and "pass" in r.stdout and "FAIL wrong-linear" in r.stdout
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


def test_help_and_a_cached_result_import_no_torch(run_cli, tmp_path):
    """`--help` needs neither torch nor SymPy; a model whose result is in the cache needs no torch
    (torch is imported only when a float source runs); after a worker that ended without a word,
    the command imports torch once for the workers that follow (they inherit it)."""
    import subprocess
    import sys

    (tmp_path / "plain.py").write_text(GOOD.replace(", grad_impl=lambda w, x, y: 2*x*(x*w - y))", ")"))
    first = run_cli("verify", "plain.py", "--no-report", "--quiet", "--samples", "1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    code = ("import sys, gradcheck_sym.cli as c; c.main(['--help']); print('after help:', 'torch' in sys.modules, 'sympy' in sys.modules)\n"
            "code = c.main(['verify', 'plain.py', '--no-report', '--samples', '1'])\n"
            "print('after verify:', code, 'torch' in sys.modules, 'matplotlib' in sys.modules)\n"
            # a worker that crashes says nothing: torch is imported for the workers after it only
            "import os, signal; from gradcheck_sym.worker import run_isolated\n"
            "crash = lambda: os.kill(os.getpid(), signal.SIGSEGV)\n"
            "for more in (False, True):\n"
            "    said = run_isolated(crash, name='c', timeout=None, error=lambda m: m, more=more)\n"
            "    print('after a crash:', more, 'SIGSEGV' in said, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "after help: False False" in r.stdout and "after verify: 0 False False" in r.stdout, r.stdout + r.stderr
    assert "unchanged since the last run (cached result)" in r.stderr
    assert "after a crash: False True False" in r.stdout and "after a crash: True True True" in r.stdout, r.stdout


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
        (("verify", "--dtypes", "float8"), "comma-separated list of float64, float32, bfloat16, float16"),
        (("verify", "--seed", "x"), "expected a whole number"),
        (("frobnicate",), "invalid choice"),
    ],
)
def test_bad_options_exit_2_with_one_line_reason(run_cli, args, message):
    r = run_cli(*args)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("args", [("list",), ("replay",), ("verify", "--expr", "(w*x - 1)**2", "--params", "w",
                                                             "--no-report", "--samples", "1")])
def test_a_closed_pipe_ends_quietly(tmp_path, args):
    """`python -m gradcheck_sym list | head -1`: the reader goes away; no BrokenPipeError."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "gradcheck_sym", *args], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # closed before anything is written: every write meets EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err


def test_nothing_checked_nothing_written_error_once_on_stderr(run_cli, tmp_path):
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep" / "index.md").write_text("the previous report")
    r = run_cli("verify", "--expr", "(w*x)**2", "--report-dir", "rep", "--json", "r.json", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.count("--expr needs --params") == 1 and "--params" not in r.stdout
    assert "nothing was checked" in r.stderr
    assert (tmp_path / "rep" / "index.md").read_text() == "the previous report"
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["index.md"] and not (tmp_path / "r.json").exists()


def test_errors_are_printed_once_on_stderr(run_cli, files):
    r = run_cli("verify", "good.py", "missing.py", "broken.py", "--no-report", "--quiet", "--samples", "1",
                cwd=files)
    assert r.returncode == 2
    for message in ("missing.py`: no such file", "neither a param nor an input"):
        assert r.stderr.count(message) == 1, r.stderr
        assert message not in r.stdout
    assert "good-linear" in r.stdout


def test_domain_adds_to_the_default(run_cli, tmp_path):
    r = run_cli("verify", "--expr", "(w*x - y)**2", "--params", "w", "--domain", "w=5:6", "--samples", "4",
                "--no-report", "--json", "r.json", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    points = json.loads((tmp_path / "r.json").read_text())["models"][0]["points"]["float64"]
    assert len(points) == 4
    assert all(5 <= p["w"] <= 6 and -1 <= p["x"] <= 1 and -1 <= p["y"] <= 1 for p in points)


@pytest.mark.parametrize(("domain", "words"), [
    ("w=2:1", "give --domain NAME=LOW:HIGH with LOW < HIGH"),
    ("q=1:2", "--domain names `q`"),
    ("w:1", "expected NAME=LOW:HIGH, e.g. --domain w=-2:2"),
    ("*=-1e308:1e308", "at most 1e+15"),
    ("w=nan:1", "finite numbers"),
])
def test_domain_hints_are_in_the_commands_syntax(run_cli, tmp_path, domain, words):
    r = run_cli("verify", "--expr", "w*x", "--params", "w", "--domain", domain, "--no-report", cwd=tmp_path)
    assert r.returncode == 2 and words in r.stderr, r.stderr
    assert "(low, high)" not in r.stderr and "Traceback" not in r.stderr and "internal error" not in r.stderr


def test_stale_pages_of_our_own_are_removed_and_only_those(run_cli, files):
    r = run_cli("verify", "good.py", "wrong.py", "--report-dir", "rep", "--samples", "1", cwd=files)
    assert r.returncode == 1 and (files / "rep" / "wrong-linear.md").is_file()
    (files / "rep" / "notes.md").write_text("mine")  # the user's own file in the report folder
    (files / "rep" / "old-model.md").write_text("not in the manifest: not ours to remove")
    r = run_cli("verify", "good.py", "--report-dir", "rep", "--samples", "1", cwd=files)
    assert r.returncode == 0
    names = {p.name for p in (files / "rep").iterdir()}
    assert "wrong-linear.md" not in names and "wrong-linear-fd-steps.png" not in names
    assert {"good-linear.md", "index.md", "results.json", "notes.md", "old-model.md"} <= names
    assert "wrong-linear" not in (files / "rep" / "index.md").read_text()


def test_help_is_complete(run_cli):
    for command in ("verify", "list"):
        text = " ".join(run_cli(command, "--help").stdout.split())
        assert ".toml model file" in text and "builtin" in text, text
    verify_help = " ".join(run_cli("verify", "--help").stdout.split())
    for flag in ("--expr TEXT", "--params NAMES", "--domain NAME=LOW:HIGH", "--name NAME", "--timeout SECONDS",
                 "--no-report", "--no-cache", "--quiet", "added to the default"):
        assert flag in verify_help
    assert "delete the entries the cache wrote" in " ".join(run_cli("cache", "--help").stdout.split())


def test_summary_fits_a_terminal(run_cli, tmp_path):
    (tmp_path / "m.py").write_text(GOOD.replace(
        "grad_impl=lambda w, x, y: 2*x*(x*w - y))",
        "grad_impl=lambda w, x, y: 2*x*(x*w - y), impl=lambda w, x, y: (x*w - y)**2)"))
    r = run_cli("verify", "m.py", "--no-report", "--quiet", "--samples", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert max(len(line) for line in r.stdout.splitlines()) <= 100, r.stdout
    assert "(grad_impl f" in r.stdout or "(impl f" in r.stdout or "(autograd f" in r.stdout


def test_list_says_1_parameter(run_cli):
    out = run_cli("list").stdout
    assert "1 parameter:" in out and "1 parameters" not in out


def test_full_width_params_are_the_names_of_the_expression(run_cli, tmp_path):
    """Python's parser reads `ｗ` in the loss as `w` (NFKC); `--params ｗ` must mean the same weight."""
    r = run_cli("verify", "--expr", "(w*x - 1)**2", "--params", "ｗ", "--samples", "1", "--no-report", "--quiet",
                "--json", "r.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "r.json").read_text())["models"][0]["variables"][0]["name"] == "w"
