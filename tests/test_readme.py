"""The README's commands and examples, as written."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_first_screen_has_exactly_two_setup_commands():
    first = _blocks("bash")[0].strip().splitlines()
    assert len(first) == 2
    assert first[0].endswith("python -m gradcheck_sym verify")
    assert first[1].endswith("python -m pytest")
    assert README.index(_blocks("bash")[0]) < 1500  # on the first screen


def test_ci_runs_the_readme_test_command():
    test_command = _blocks("bash")[0].strip().splitlines()[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci


def test_worked_example_prints_what_the_readme_shows():
    example = _blocks("python")[0]
    shown = _blocks("text")[0]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(example, "README.md", "exec"), {})
    assert out.getvalue() == shown


def test_every_python_example_runs():
    from gradcheck_sym import Model, verify

    for block in _blocks("python")[1:]:
        namespace: dict = {}
        exec(compile(block, "README.md", "exec"), namespace)
        models = [v for v in namespace.values() if isinstance(v, Model)]
        assert models
        for m in models:
            assert verify(m, samples=1).status == "pass"


def test_plugin_examples_pass_as_test_files(pytester):
    files = re.findall(r"```python file=(\S+)\n(.*?)```", README, flags=re.S)
    assert [name for name, _ in files] == ["test_layer.py", "test_layer_everywhere.py"]
    assert len(files[0][1].strip().splitlines()) <= 10  # "a ten-line example"
    for name, code in files:
        pytester.path.joinpath(name).write_text(code)
    result = pytester.runpytest()
    result.assert_outcomes(passed=2)
