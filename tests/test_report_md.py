"""The reports, read as files: valid GitHub Markdown, Mermaid that parses, links and images that
exist, snippets that reproduce, byte-identical re-rendering, and the committed reports current."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import run_in_process

ROOT = Path(__file__).resolve().parent.parent
LECTURE = (ROOT / "tests" / "data" / "lecture_output.txt").read_text().splitlines()

MODELS = textwrap.dedent(
    """
    import sympy as sp
    from gradcheck_sym import Model
    x, y, w = sp.symbols("x y w", real=True)
    wrong = Model(name="wrong-linear", loss=(x*w - y)**2, params=[w], inputs=[x, y],
                  domain={"*": (-2, 2)}, grad_impl=lambda w, x, y: x*(x*w - y))
    kink = Model(name="kink", loss=x*sp.Abs(w) + sp.log(w + 2), params=[w], inputs=[x],
                 points=[{w: 0, x: 3}, {w: -3, x: 1}, {w: 1, x: 2}])
    """
)


def run(*args, cwd):
    """The command line, in this process (tests/conftest.py; test_cli.py runs it as a process)."""
    return run_in_process(*args, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def builtin_run(tmp_path_factory):
    """`python -m gradcheck_sym verify --no-cache` of the built-in models, run as a user runs it (a
    process, default options): the suite's one end-to-end run of the whole command, whose output,
    report pages, plots and results.json the tests below read and compare with the committed ones."""
    d = tmp_path_factory.mktemp("builtin")
    r = subprocess.run([sys.executable, "-m", "gradcheck_sym", "verify", "--no-cache"], cwd=d, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    return r, d


@pytest.fixture(scope="module")
def report(builtin_run):
    """The built-in report (in reports/) and one of two models that fail (in mine/)."""
    d = builtin_run[1]
    (d / "models.py").write_text(MODELS)
    r = run("verify", "models.py", "--samples", "2", "--report-dir", "mine", cwd=d)
    assert r.returncode == 1, r.stderr
    return d


def test_verify_as_a_process_writes_the_report_and_results(builtin_run):
    r, d = builtin_run
    out = d / "reports"
    for name in ("linear", "affine", "quadratic", "two-linear-layers", "mlp-193", "logistic"):
        assert name in r.stdout
        assert (out / f"{name}.md").is_file()
    assert "193 weights, 31 biases" in r.stderr  # progress states the lecture's count
    assert f"report: {Path('reports') / 'index.md'}" in r.stdout
    data = json.loads((out / "results.json").read_text())
    assert [m["status"] for m in data["models"]] == ["pass"] * 6
    mlp = next(m for m in data["models"] if m["name"] == "mlp-193")
    check = next(c for c in mlp["checks"] if c["param"] == "W3" and c["quantity"] == "grad")
    for key in ("source", "dtype", "param", "index", "point", "exact", "value", "abs_error", "rel_error",
                "ulps", "verdict"):
        assert key in check
    assert check["index"] == [0, 0] and check["source"] in ("autograd", "fd")
    assert set(data["models"][0]["points"]) == {"float64", "float32"}
    assert data["replay"]["lines_float32"][:3] == LECTURE[:3]


def _markdown(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.glob("*.md"))}


def _cells(row: str) -> int:
    return len(re.split(r"(?<!\\)\|", row.strip().strip("|")))


def check_markdown(folder: Path) -> None:
    for name, text in _markdown(folder).items():
        lines = text.splitlines()
        assert sum(line.startswith("```") for line in lines) % 2 == 0, f"{name}: unbalanced fences"
        outside = "\n".join(_outside_fences(lines))
        assert outside.count("$$") % 2 == 0, f"{name}: unbalanced $$"
        for table in _tables(lines):
            widths = {_cells(row) for row in table}
            assert len(widths) == 1, f"{name}: table rows with {widths} columns: {table[0]}"
            assert re.fullmatch(r"\|(---\|)+", table[1]), f"{name}: bad separator {table[1]}"
        for target in re.findall(r"\]\(([^)\s]+)\)", outside):
            if "://" in target:
                continue
            assert (folder / target).is_file(), f"{name}: broken link {target}"
            if target.endswith(".png"):
                assert (folder / target).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        for block in re.findall(r"```mermaid\n(.*?)```", text, flags=re.S):
            check_mermaid(block)


def _outside_fences(lines):
    inside = False
    for line in lines:
        if line.startswith("```"):
            inside = not inside
            continue
        if not inside:
            yield line


def _tables(lines):
    table: list[str] = []
    for line in list(_outside_fences(lines)) + [""]:
        if line.startswith("|"):
            table.append(line)
        elif table:
            yield table
            table = []


NODE = re.compile(r'^  (\w+)(\[/"[^"]+"/\]|\[\("[^"]+"\)\]|\(\["[^"]+"\]\)|\["[^"]+"\])$')
EDGE = re.compile(r'^  (\w+) -->(\|"[^"]+"\|)? (\w+)$')


def check_mermaid(block: str) -> None:
    lines = block.strip("\n").splitlines()
    assert lines[0] == "flowchart LR"
    nodes, edges = set(), []
    for line in lines[1:]:
        if m := NODE.match(line):
            nodes.add(m[1])
        elif m := EDGE.match(line):
            edges.append((m[1], m[3]))
        else:
            raise AssertionError(f"not Mermaid flowchart syntax: {line!r}")
    assert edges and all(a in nodes and b in nodes for a, b in edges)


def test_builtin_report_set(report):
    folder = report / "reports"
    names = {p.name for p in folder.iterdir()}
    for model in ("linear", "affine", "quadratic", "two-linear-layers", "mlp-193", "logistic"):
        assert f"{model}.md" in names and f"{model}-fd-steps.png" in names
    assert {"index.md", "results.json", "training.md", "training.png"} <= names
    check_markdown(folder)
    index = (folder / "index.md").read_text()
    assert "Reproduce: `python -m gradcheck_sym verify`" in index and "--no-cache" not in index  # cosmetic flags left out
    assert "torch 2." in index and "SymPy" in index and "Seed 0" in index
    mlp = (folder / "mlp-193.md").read_text()
    assert "193 weights, 31 biases" in mlp and "```mermaid" in mlp and "sigmoid" in mlp
    assert r"\frac{\partial \ell}{\partial W_{1}}" in mlp  # the backward recurrence, per layer
    linear = (folder / "linear.md").read_text()
    assert r"\frac{\partial \ell}{\partial w} = 2 x \left(w x - y\right)" in linear
    two = (folder / "two-linear-layers.md").read_text()
    assert "proved" in two and "W = W_2 W_1" in two
    training = (folder / "training.md").read_text()
    assert "float32" in training and "exact" in training and training.count("\n| ") >= 100


def test_failing_and_kink_pages(report):
    folder = report / "mine"
    check_markdown(folder)
    wrong = (folder / "wrong-linear.md").read_text()
    assert "## Mismatches" in wrong and "wrong: finite differences agree" in wrong
    kink = (folder / "kink.md").read_text()
    assert "## Non-differentiable and undefined points" in kink
    assert "nondifferentiable" in kink and "undefined" in kink
    assert "| -2.5 | 3.5 |" in kink  # one-sided derivatives of x·|w| + log(w + 2) at w = 0, x = 3


def test_mismatch_snippet_reproduces_the_check(report):
    wrong = (report / "mine" / "wrong-linear.md").read_text()
    code = re.search(r"```python\n(.*?)```", wrong, flags=re.S)[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=report, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "source='grad_impl'" in out.stdout and "verdict='mismatch'" in out.stdout


def test_report_command_re_renders_identically(report, tmp_path):
    out = tmp_path / "again"
    r = run("report", str(report / "reports" / "results.json"), "--out", str(out), cwd=report)
    assert r.returncode == 0, r.stderr
    assert _markdown(out) == _markdown(report / "reports")
    for png in (report / "reports").glob("*.png"):
        assert (out / png.name).read_bytes() == png.read_bytes()


def test_same_seed_same_bytes(report, tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "models.py").write_text(MODELS)
        run("verify", "models.py", "--seed", "3", "--report-dir", "rep", "--no-cache", cwd=tmp_path / d)
    assert _markdown(tmp_path / "a" / "rep") == _markdown(tmp_path / "b" / "rep")
    assert _markdown(tmp_path / "a" / "rep")


def test_report_of_a_bad_file_is_a_clear_error(tmp_path):
    (tmp_path / "bad.json").write_text('{"schema": 1}')
    r = run("report", "bad.json", cwd=tmp_path)
    assert r.returncode == 2 and "not a gradcheck_sym results file" in r.stderr and "Traceback" not in r.stderr
    r = run("report", "missing.json", cwd=tmp_path)
    assert r.returncode == 2 and "cannot read" in r.stderr


def test_without_matplotlib_the_report_says_so(report, monkeypatch):
    from gradcheck_sym import cache, plots
    from gradcheck_sym.report import render_files as render
    from gradcheck_sym.results import from_json

    monkeypatch.setattr(plots, "_pyplot", lambda: None)
    monkeypatch.setattr(cache, "_DISABLED", True)  # not the plots drawn by the run above
    files = render(from_json((report / "reports" / "results.json").read_text()))
    assert not any(name.endswith(".png") for name in files)
    assert plots.MISSING in files["mlp-193.md"] and plots.MISSING in files["training.md"]
    assert "](mlp-193-fd-steps.png)" not in files["mlp-193.md"]


# What a report says that is the same on every machine: exact values, points, verdicts and
# structure.  Torch's float results (a source's value, its errors, the tolerance from the running
# error analysis, finite-difference errors) differ in their last bits between CPUs and are left out.
CHECK_FIELDS = ("source", "dtype", "param", "index", "quantity", "point", "forward", "exact", "exact_text",
                "verdict", "attribution", "left", "right")
SUMMARY_FIELDS = ("source", "dtype", "forward", "quantity", "checks", "agree", "mismatch", "nondifferentiable",
                  "undefined")
FLOAT_SECTIONS = ("## Sources", "## Worst entries", "## Finite differences against the step",
                  "## Non-differentiable and undefined points")


def _results_content(data: dict) -> dict:
    models = []
    for m in data["models"]:
        kept = {k: v for k, v in m.items() if k not in ("checks", "summaries", "step_study")}
        kept["checks"] = [{k: c[k] for k in CHECK_FIELDS} for c in m["checks"]]
        kept["summaries"] = [{k: s[k] for k in SUMMARY_FIELDS} for s in m["summaries"]]
        st = m["step_study"]
        kept["step_study"] = st and {k: st[k] for k in ("entry", "point", "exact", "steps")}
        models.append(kept)
    return {"models": models, "replay": data["replay"], "errors": data.get("errors"), "seed": data["seed"]}


def _page_content(name: str, text: str) -> list[str]:
    """The page with every table cell that holds a torch float digit replaced by `#`; in the
    worst-entries table, which entries are the worst is decided by those digits too, so only
    the source, dtype and verdict of each row are kept (rows sorted)."""
    out, section, worst = [], "", []
    for line in text.splitlines():
        if line.startswith("## "):
            section = line
        if line.startswith("| ") and (name == "index.md" or section in FLOAT_SECTIONS):
            cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
            if section == "## Worst entries":
                worst.append("|".join([*cells[:2], cells[-1]]))
                continue
            line = "|".join("#" if re.search(r"\d", c) and (name != "index.md" or k == 5) else c
                            for k, c in enumerate(cells))
        elif worst:
            out += sorted(worst)
            worst = []
        out.append(line)
    return out + sorted(worst)


def report_content(folder: Path) -> dict:
    # tolerance.md, benchmarks.md and near_kinks.md are written by the benchmarks, torch-audit* by `audit`: not verify
    pages = {name: _page_content(name, text) for name, text in _markdown(folder).items()
             if name not in ("tolerance.md", "benchmarks.md", "near_kinks.md") and not name.startswith("torch-audit")}
    pngs = sorted(p.name for p in folder.glob("*.png") if p.name != "tolerance.png" and not p.name.startswith("torch-audit"))
    for p in pngs:
        assert (folder / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", p
    return {"results": _results_content(json.loads((folder / "results.json").read_text())), "pages": pages,
            "plots": pngs}


def _first_difference(a: object, b: object, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{where}: keys {sorted(a)} != {sorted(b)}"
        return next((d for k in a if (d := _first_difference(a[k], b[k], f"{where}/{k}"))), "")
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} items != {len(b)}"
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := _first_difference(x, y, f"{where}[{i}]"))), "")
    return "" if a == b else f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def fresh_builtin_report(builtin_run):
    return builtin_run[1] / "reports"


def test_committed_reports_are_current(fresh_builtin_report):
    """`python -m gradcheck_sym verify` writes what is committed, on any CPU: exact values, points,
    verdicts and structure are compared; torch's float digits are not."""
    committed = ROOT / "reports"
    data = json.loads((committed / "results.json").read_text())
    import sympy
    import torch

    if (data["versions"]["torch"], data["versions"]["sympy"]) != (torch.__version__, sympy.__version__):
        pytest.skip("the committed reports were made with other torch/SymPy versions")
    diff = _first_difference(report_content(committed), report_content(fresh_builtin_report))
    assert not diff, f"reports/ is stale ({diff}): run `python -m gradcheck_sym verify`"


def test_the_comparison_sees_exact_values_and_verdicts_not_float_digits(fresh_builtin_report, tmp_path):
    """The comparison above ignores a changed float digit of torch but not a changed exact value,
    verdict or sentence."""
    base = report_content(fresh_builtin_report)
    data = json.loads((fresh_builtin_report / "results.json").read_text())

    def content_with(edit) -> dict:
        copy = tmp_path / "copy"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(fresh_builtin_report, copy)
        changed = json.loads(json.dumps(data))
        edit(changed, copy)
        (copy / "results.json").write_text(json.dumps(changed))
        return report_content(copy)

    def digits(d, folder):
        c = d["models"][4]["checks"][7]
        c["value"], c["ulps"], c["tolerance"] = c["value"] * (1 + 2**-52), 0.75, c["tolerance"] * 1.5
        page = folder / "mlp-193.md"
        text, n = re.subn(r"\| (\d\.\d+e-1\d) \|", "| 9.99e-17 |", page.read_text(), count=1)
        assert n == 1
        page.write_text(text)

    assert _first_difference(base, content_with(digits)) == ""
    for edit in (
        lambda d, f: d["models"][0]["checks"][3].update(exact=1.5),
        lambda d, f: d["models"][1]["checks"][2].update(verdict="mismatch"),
        lambda d, f: d["models"][2]["points"]["float32"][0].update(x=0.25),
        lambda d, f: (f / "linear.md").write_text((f / "linear.md").read_text().replace("exact", "exakt", 1)),
        lambda d, f: d["replay"]["lines_float32"].__setitem__(3, "w = 1.5"),
    ):
        assert _first_difference(base, content_with(edit)) != ""


def test_report_keeps_every_page_inside_its_folder(report, tmp_path):
    data = json.loads((report / "mine" / "results.json").read_text())
    names = ["../../evil", "index", "a\nb", "Kink", "kink"]
    data["models"] = [dict(data["models"][1], name=n) for n in names]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "r.json").write_text(json.dumps(data))
    r = run("report", "in/r.json", "--out", "out/rep", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert all(w.startswith(("in/", "out/rep/")) for w in written), written
    pages = sorted(p.name for p in (tmp_path / "out" / "rep").glob("*.md"))
    assert pages == ["Kink.md", "a-b.md", "evil.md", "index-model.md", "index.md", "kink-2.md"], pages
    assert (tmp_path / "out" / "rep" / "index.md").read_text().startswith("# gradcheck_sym report")
    check_markdown(tmp_path / "out" / "rep")


@pytest.mark.parametrize("text", ["{", "[]", '{"models": "x"}', "[" * 100_000 + "]" * 100_000,
                                  '{"models": [{"name": "m", "status": "Pass"}]}', "\xff\xfe"],
                         ids=["unclosed", "list", "models-not-a-list", "nested-100000", "bad-status", "not-utf8"])
# (short ids: the 200,000-character one would go into PYTEST_CURRENT_TEST, and an environment
# variable over 128 KiB makes every subprocess fail with "Argument list too long")
def test_report_of_malformed_json_is_one_line(tmp_path, text):
    (tmp_path / "bad.json").write_text(text, encoding="latin-1")
    r = run("report", "bad.json", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert len(r.stderr.strip().splitlines()) == 1 and "not a gradcheck_sym results file" in r.stderr
    assert not (tmp_path / "index.md").exists()


GLITCHES = textwrap.dedent(
    """
    import sympy as sp
    from gradcheck_sym import Model, matrix
    x, w = sp.symbols("x w", real=True)
    W, X = matrix("W", (3, 3)), matrix("X", 3)
    logloss = Model(name="logloss", loss=sp.log(1 + sum(sp.tanh(e)**2 for e in W*X)), params=[W], inputs=[X],
                    domain={"*": (-1, 1)})
    zero = Model(name="zero", loss=w*(sp.sin(x)**2 + sp.cos(x)**2 - 1) + w**2, params=[w], inputs=[x],
                 points=[{w: 0, x: 0.7}, {w: 0, x: 1.3}])
    """
)


@pytest.fixture(scope="module")
def glitches(tmp_path_factory):
    d = tmp_path_factory.mktemp("glitches")
    (d / "g.py").write_text(GLITCHES)
    r = run("verify", "g.py", "--samples", "2", "--report-dir", "rep", cwd=d)
    assert r.returncode == 0, r.stdout + r.stderr
    return d / "rep"


def test_no_relative_error_or_ulps_where_the_exact_value_is_zero(glitches):
    for name in ("index.md", "zero.md"):
        text = (glitches / name).read_text()
        assert not re.search(r"\de\+(2\d|3\d\d?)\b", text), re.findall(r"[\d.]+e\+\d+", text)  # 1.8e+308, 4.25e+37
    assert "rel —, — ulps" in (glitches / "index.md").read_text()


def test_recurrence_of_a_log_loss_and_names_shared_with_the_graph(glitches):
    page = (glitches / "logloss.md").read_text()
    recurrence = re.search(r"\\begin\{aligned\}(.*?)\\end\{aligned\}", page, flags=re.S)[1]
    assert r"= \oslash" not in recurrence and r"&= 1 \oslash" in recurrence, recurrence
    graph = re.search(r"```mermaid\n(.*?)```", page, flags=re.S)[1]
    nodes = set(re.findall(r'\["([^"]+)"\]', graph))
    sub = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
    for word, k in re.findall(r"\\mathrm\{(\w+)\}(?:_\{(\d+)\})?", recurrence):
        text = word + (k.translate(sub) if k else "")
        assert any(re.split(r" |<br/>", n)[0] == text for n in nodes), (text, nodes)


def test_graph_caption_names_the_functions_of_the_model(glitches, report):
    caption = next(line for line in (glitches / "logloss.md").read_text().splitlines() if line.startswith("One node"))
    assert "tanh" in caption and "log" in caption and "sigmoid" not in caption
    mlp = next(line for line in (report / "reports" / "mlp-193.md").read_text().splitlines()
               if line.startswith("One node"))
    assert "sigmoid" in mlp and "tanh" not in mlp


def test_one_parameter_is_singular_and_input_gradients_are_named(report):
    assert ("1 scalar parameter is differentiated; the gradients of the inputs (`x`, `y`) are checked too"
            in (report / "reports" / "linear.md").read_text())
    assert "224 scalar parameters are differentiated;" in (report / "reports" / "mlp-193.md").read_text()


def test_a_mismatch_compares_the_error_with_the_tolerance_in_one_unit(report):
    text = (report / "mine" / "wrong-linear.md").read_text()
    assert "ulps > tolerance" not in text
    assert re.search(r"error [\d.e+-]+ > tolerance [\d.e+-]+; rel [\d.e+-]+, [\d.e+-]+ ulps\)", text), text


HOSTILE = textwrap.dedent(
    '''
    import sympy as sp
    from gradcheck_sym import Model
    w, x = sp.Symbol("w}$", real=True), sp.Symbol("x<b>", real=True)
    evil = Model(name="index", loss=(w*x - 1)**2, params=[w], inputs=[x], domain={"*": (-1, 1)},
                 description="<img src=x onerror=alert(1)>\\n# injected heading\\n| a | b |",
                 notes=["<script>alert(2)</script>", "# another heading"])
    '''
)
TWIN = textwrap.dedent(
    """
    import sympy as sp
    from gradcheck_sym import Model
    x, w = sp.symbols("x w", real=True)
    twin = Model(name="lin", loss=(w*x - 1)**2 + W, params=[w], inputs=[x], domain={"*": (-1, 1)})
    """
)


def test_user_text_is_escaped_and_names_are_unique_and_safe(tmp_path):
    (tmp_path / "evil.py").write_text(HOSTILE)
    (tmp_path / "a.py").write_text(TWIN.replace(" + W", ""))
    (tmp_path / "b.py").write_text(TWIN.replace(" + W", " + w**3"))
    r = run("verify", "evil.py", "a.py", "b.py", "--samples", "1", "--report-dir", "rep", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    rep = tmp_path / "rep"
    assert sorted(p.name for p in rep.glob("*.md")) == ["index-model.md", "index.md", "lin-2.md", "lin.md"]
    index = (rep / "index.md").read_text()
    assert index.startswith("# gradcheck_sym report") and "[lin-2](lin-2.md)" in index and "(index-model.md)" in index
    assert "From `b.py`" in (rep / "lin-2.md").read_text()
    page = (rep / "index-model.md").read_text()
    prose = re.sub(r"(`+).*?\1", "", re.sub(r"```.*?```", "", page, flags=re.S))  # code is shown literally
    for raw in ("<img", "<script", "<b>"):
        assert raw not in prose, raw
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "&lt;script&gt;" in page
    headings = [line for line in page.splitlines() if line.startswith("#")]
    assert not any("injected" in h or "another heading" in h for h in headings), headings
    for block in re.findall(r"\$\$\n(.*?)\n\$\$", page, flags=re.S):
        assert "$" not in block and "<" not in block, block
    check_markdown(rep)


def _imports(module: str) -> set[str]:
    """The gradcheck_sym modules ``module`` imports (at any depth of its code)."""
    import ast

    tree = ast.parse((ROOT / "src" / "gradcheck_sym" / f"{module}.py").read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            out |= {node.module} if node.module else {a.name for a in node.names}
    return out


def test_layers_go_one_way():
    """writer is a leaf; plots and report_md are pure renderers (no cache, no files); the report
    layer assembles; the cache does not reach back into the report."""
    assert _imports("writer") == set()
    assert _imports("plots") <= {"results"}
    assert not _imports("report_md") & {"cache", "writer", "report"}
    assert not _imports("cache") & {"report", "report_md", "plots"}
    assert {"report_md", "plots", "writer"} <= _imports("report")
