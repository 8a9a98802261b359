"""Results → Markdown: ``index.md`` for the run, one page per model, ``training.md`` for the
lecture's loop (`report` assembles them with the plots into files).  Pure: the same results give the same bytes (no clock,
no paths of this machine), readable on GitHub with nothing else installed (tables, ``$$``
LaTeX, Mermaid)."""

from __future__ import annotations

import json
import math
import re

from . import plots
from .formatting import num, ulps
from .report_graph import mermaid, recurrence
from .results import Check, ModelResult, Replay, RunResult, SourceSummary, summarize
from .terminal import describe, snippet

VERDICT_ICON = {"pass": "✅", "fail": "❌", "error": "⚠️ error"}
WORST_PER_SOURCE = 5
SNIPPETS = 10  # mismatches shown with a reproducing snippet; the rest are listed
LISTED = 50
POINTS_SHOWN = 12  # points are tabulated for models with at most this many scalars


_INLINE = re.compile(r"([\\`*_\[\]!|~$])")


def text(s: str) -> str:
    """User text (a name, a message) as literal Markdown: one line, no HTML, no emphasis, links,
    math or code, nothing read as a heading, list or quote.

    >>> print(text("<img src=x onerror=alert(1)>\\n# $x$ [a](b) > 1"))
    &lt;img src=x onerror=alert(1)> \\# \\$x\\$ \\[a\\](b) > 1
    """
    s = " ".join(str(s).split()).replace("&", "&amp;").replace("<", "&lt;")
    s = _INLINE.sub(r"\\\1", s).replace("#", "\\#")
    return "\\" + s if s.startswith((">", "-", "+", "=")) else s


def markdown(s: str) -> str:
    """User Markdown (a description, a note) kept as Markdown, but with no raw HTML and no
    headings or tables of its own (they would break the page's outline); `&` stays, for LaTeX."""
    s = str(s).replace("<", "&lt;").replace(">", "&gt;")
    return "\n".join("\\" + line.lstrip() if line.lstrip().startswith(("#", "|")) else line for line in s.splitlines())


def code(s: str) -> str:
    """User text in a code span, whatever backticks it holds."""
    s = " ".join(str(s).split())
    ticks = "`" * (max((len(r) for r in re.findall(r"`+", s)), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{ticks}{pad}{s}{pad}{ticks}"


def fenced(block: str, lang: str = "") -> str:
    """A fenced code block that no line of ``block`` can close early."""
    ticks = "`" * max(3, max((len(r) for r in re.findall(r"`+", block)), default=0) + 1)
    return f"{ticks}{lang}\n{block}\n{ticks}"


def safe_tex(tex: str) -> bool:
    """Whether LaTeX (SymPy's, or the user's) can go between ``$$`` without breaking the page:
    balanced braces, no ``$``, no blank line, no HTML."""
    depth = 0
    for k, ch in enumerate(tex):
        if ch == "\\":
            continue
        if ch in "{}" and k and tex[k - 1] == "\\":
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0 and "$" not in tex and "\n\n" not in tex and "<" not in tex and ">" not in tex


def _tex_name(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", name) else rf"\text{{{re.sub(r'[^A-Za-z0-9 ]', '?', name)}}}"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (a `|` escaped once)."""
    return re.sub(r"(?<!\\)\|", r"\\|", text.replace("\n", " "))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


TRAINING_PAGE = "training.md"
TRAINING_PLOT = "training.png"
RESERVED = ("index", "training", "results")  # stems of the report's own files
MAX_STEM = 80


def file_stem(name: str) -> str:
    """A model's name as a file name: letters, digits, ``. _ -`` kept, runs of anything else one
    ``-``; never hidden, never a reserved name, never empty.

    >>> file_stem("mlp-193"), file_stem("../../etc/x\\n"), file_stem("index"), file_stem("")
    ('mlp-193', 'etc-x', 'index-model', 'model')
    """
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")[:MAX_STEM].rstrip(".-")
    stem = re.sub(r"\.{2,}", ".", stem) or "model"
    return f"{stem}-model" if stem.lower() in RESERVED else stem


def page_name(model: ModelResult) -> str:
    return f"{file_stem(model.name)}.md"


def step_plot_name(model: ModelResult) -> str:
    return f"{file_stem(model.name)}-fd-steps.png"


def hessian_plot_name(model: ModelResult) -> str:
    return f"{file_stem(model.name)}-hessian.png"


TRAINING_PAGE = "training.md"
TRAINING_PLOT = "training.png"
def resolvable(c: Check) -> bool:
    """Whether relative error and ulps say something about ``c``: not where the exact value is 0
    or smaller than the tolerance (there they measure only the spacing of floats near 0)."""
    return c.exact is not None and c.tolerance is not None and abs(c.exact) > c.tolerance


def _rel_ulps(m: ModelResult, s: SourceSummary) -> tuple[str, str]:
    """The worst relative error and ulps of a source, over its entries where they mean something."""
    if m.complete:
        group = [c for c in m.checks if (c.source, c.dtype, c.forward, c.quantity) == (s.source, s.dtype, s.forward, s.quantity)
                 and c.rel_error is not None and resolvable(c)]
        if not group:
            return "—", "—"
        return num(max(c.rel_error for c in group), 2), ulps(max(c.ulps for c in group))
    shown = [x if x is not None and math.isfinite(x) and x < 1e300 else None for x in (s.worst_rel, s.worst_ulps)]
    return num(shown[0], 2), ulps(shown[1])


def _special(model: ModelResult) -> list[Check]:
    return [c for c in model.checks if c.verdict in ("nondifferentiable", "undefined")]


def _icon(model: ModelResult) -> str:
    icon = VERDICT_ICON[model.status]
    icon += " ⚠" if model.status == "pass" and _special(model) else ""
    return icon + "".join(f" ⚠ {n} {name}" for name, n in _bands(model) if n)


def _bands(model: ModelResult) -> list[tuple[str, int]]:
    """How many checks of a source are imprecise and inconclusive (shown, not failures unless strict)."""
    return [("imprecise", model.n_imprecise), ("inconclusive", model.n_inconclusive)]


def _banded(m: ModelResult) -> list[str]:
    shown = [c for c in m.checks if c.verdict in ("imprecise", "inconclusive") and c.source != "fd"]
    if not shown:
        return []
    lines = [
        "## ⚠ Imprecise and inconclusive checks",
        "",
        f"{m.n_imprecise} imprecise: beyond what a careful implementation returns, but explained by rounding the "
        "values the gradient is computed from (a backward formula in terms of a rounded output, an overflowing "
        f"intermediate); {m.n_inconclusive} inconclusive: the check cannot resolve the value (its tolerance is not "
        "small against it), or the declared formula is not computable in that dtype there.  Neither fails the "
        "model unless `--strict`.",
        "",
    ]
    rows = [[c.source, c.dtype, code(c.entry), str(c.point), "⚠ " + c.verdict, num(c.exact), num(c.value),
             ulps(c.ulps) if c.verdict == "imprecise" else "—", c.note] for c in shown[:LISTED]]
    lines += _table(["source", "dtype", "entry", "point", "verdict", "exact", "returned", "ulps", "why"], rows)
    if len(shown) > LISTED:
        lines += ["", f"… and {len(shown) - LISTED} more in `results.json`"]
    return lines + [""]


def _shape(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape)) if shape else "scalar"


# -- index ------------------------------------------------------------------------------------


def render_index(run: RunResult) -> str:
    """The run's front page: how to reproduce it, then one row per model."""
    v = run.versions
    lines = [
        "# gradcheck_sym report",
        "",
        f"Reproduce: `{run.command}`",
        "",
        f"Seed {run.seed}; {run.samples} random points per model after its explicit points; dtypes "
        f"{', '.join(run.dtypes)}.  Python {v.get('python')}, torch {v.get('torch')}, SymPy "
        f"{v.get('sympy')}, python-flint {v.get('python-flint')}, gradcheck_sym {run.tool_version}.",
        "",
    ]
    rows = []
    for m in run.models:
        worst = [
            "{} {}: rel {}, {} ulps".format(s.source, s.dtype, *_rel_ulps(m, s))
            for s in summarize(m) if s.worst_ulps is not None and s.source != "fd" and s.quantity == "grad"
        ]
        points = max((len(p) for p in m.points.values()), default=0)
        rows.append([
            f"[{text(m.name)}]({page_name(m)})", str(m.n_params), str(points), ", ".join(m.points) or "—",
            ", ".join(m.sources) or "—", "<br>".join(worst) or text(m.error or "—"), _icon(m),
        ])
    lines += _table(["model", "params", "points", "dtypes", "sources", "worst error per source", "verdict"], rows)
    lines += [
        "",
        "✅ every source agrees with the exact gradient · ❌ a source is wrong · ⚠ some points are "
        "non-differentiable or undefined there (reported on the model's page, not failures) · ⚠ N imprecise "
        "/ inconclusive: checks explained by rounding, or that cannot resolve the value (not failures unless "
        "`--strict`) · "
        "⚠️ error: the model could not be checked",
    ]
    for e in run.errors:
        lines += ["", f"⚠️ {text(e)}"]
    if run.replay is not None:
        r = run.replay
        lines += [
            "",
            f"[The lecture's training loop]({TRAINING_PAGE}), replayed in float32 autograd and in exact "
            f"arithmetic: after 100 epochs ω = {r.final_w_float32!r} (float32) and {r.final_w_exact} (exact).",
        ]
    return "\n".join(lines) + "\n"


# -- model page --------------------------------------------------------------------------------


def _declaration(m: ModelResult) -> list[str]:
    lines = ["## Declaration", ""]
    if m.outputs and m.loss_latex and safe_tex(m.loss_latex):
        lines += [f"An operator with outputs of shape {_shape(m.outputs)}:", "", "$$", f"y = {m.loss_latex}", "$$", ""]
    elif m.outputs:
        lines += [f"An operator with outputs of shape {_shape(m.outputs)}: {code(m.loss)}", ""]
    elif m.loss_latex and safe_tex(m.loss_latex):
        lines += ["$$", f"\\ell = {m.loss_latex}", "$$", ""]
    else:
        lines += [f"The loss: {code(m.loss)}", ""]
    rows = [[code(v.name), v.role, _shape(v.shape), str(math.prod(v.shape) if v.shape else 1)]
            for v in m.variables]
    lines += _table(["variable", "role", "shape", "scalars"], rows)
    inputs = [v.name for v in m.variables if v.role == "input"
              and any(c.param == v.name and c.quantity == "grad" for c in m.checks)]
    lines += ["", f"{m.n_params} scalar parameter{'' if m.n_params == 1 else 's'} "
              f"{'is' if m.n_params == 1 else 'are'} differentiated"
              + (f"; the gradients of the inputs ({', '.join(code(n) for n in inputs)}) are checked too "
                 "(`input_grads=True`)." if inputs else ".")]
    if m.domain:
        lines += ["", "Domain of the random points:", ""]
        lines += _table(["variable", "low", "high"], [[code(k), num(lo), num(hi)] for k, (lo, hi) in m.domain.items()])
    return lines + [""]


def _gradient(m: ModelResult) -> list[str]:
    lines = ["## The exact gradient", ""]
    if m.closed_form_latex and all(safe_tex(t) for t in m.closed_form_latex.values()):
        for name, tex in m.closed_form_latex.items():
            lines += ["$$", f"\\frac{{\\partial \\ell}}{{\\partial {_tex_name(name)}}} = {tex}", "$$", ""]
    elif m.closed_form:
        lines += [f"∂loss/∂{code(name)} = {code(expr)}" + "  " for name, expr in m.closed_form.items()] + [""]
    elif m.layers and _plain_labels(m):
        lines += [
            "Too large for one formula; the backward pass layer by layer instead, each adjoint the sum "
            "over the layers that read it of their adjoint times the local derivative (⊙: entrywise):",
            "",
        ]
        eqs = [eq.replace(" = ", " &= ", 1) for eq in recurrence(m.layers)]
        lines += ["$$", "\\begin{aligned}", " \\\\\n".join(eqs), "\\end{aligned}", "$$", ""]
    lines += [
        "Evaluated exactly at every point by reverse accumulation over the expression graph, in "
        f"{', '.join(m.arithmetic) or '—'} arithmetic (`rational`: exact fractions; `ball/N`: intervals "
        "of N-bit precision proven to contain the true value).",
        "",
    ]
    return lines


# what the words of the graph's node labels mean, as data (only those present are listed)
GRAPH_WORDS = {
    "MM": "weight × value products", "MUL": "products", "ADD": "sums", "sigmoid": "σ, the logistic sigmoid",
    "tanh": "hyperbolic tangent", "exp": "exponential", "log": "natural logarithm", "POW": "power",
    "INV": "reciprocal", "sqrt": "square root", "SCALE": "multiplication by a constant",
    "Piecewise": "a choice between branches",
}


def _graph_caption(m: ModelResult) -> str:
    words = list(dict.fromkeys(layer.label.split()[0] for layer in m.layers if layer.kind in ("op", "loss")))
    known = [f"{w}: {GRAPH_WORDS[w]}" for w in words if w in GRAPH_WORDS]
    return ("One node per layer of scalar operations" + (f" ({', '.join(known)})" if known else "")
            + "; a − on an edge means the value enters negated.")


def _plain_labels(m: ModelResult) -> bool:
    """Whether every node label is safe in Mermaid text and LaTeX (variables may have any name)."""
    return all(re.fullmatch(r"[\w .,\[\]-]+", layer.label) for layer in m.layers)


def _graph(m: ModelResult) -> list[str]:
    if not m.layers or not _plain_labels(m):
        return []
    return [
        "## Computation graph",
        "",
        _graph_caption(m),
        "",
        "```mermaid",
        mermaid(m.layers),
        "```",
        "",
    ]


def _sources(m: ModelResult) -> list[str]:
    rows = [[s.label, s.dtype, str(s.checks), str(s.agree),
             str(s.mismatch), str(s.nondifferentiable), str(s.undefined), num(s.worst_of_tolerance, 2),
             *reversed(_rel_ulps(m, s))]
            for s in summarize(m)]
    lines = ["## Sources", ""]
    lines += _table(["source", "dtype", "checks", "agree", "mismatch", "non-diff.", "undefined",
                     "worst error/tolerance", "worst ulps", "worst rel. error"], rows)
    return lines + [
        "",
        "A value agrees when its error is within the tolerance a correct computation in its dtype can "
        "need there (from running error analysis of the gradient; see the README).  Finite differences "
        "(fd) are held to their own error estimate; their mismatches are noise, never failures.",
        "",
        *_fd_coverage(m),
    ]


def _fd_coverage(m: ModelResult) -> list[str]:
    """Where finite differences were computed (when not at every point) and how the impl was called."""
    lines = []
    if m.fd_points:
        counts = ", ".join(f"{n:,} of {len(m.points.get(d, ())):,} points in {d}" for d, n in m.fd_points.items())
        lines += [f"Finite differences were computed at {counts}: a fixed sample (the first points) and every "
                  "point where a source disagrees with the exact value, where they attribute the disagreement.", ""]
    if m.impl_calls:
        lines += [f"Calls of the `impl` for finite differences: {m.impl_calls}.", ""]
    return lines


# -- orders and modes (only on pages of runs with more than first-order reverse mode) ----------

MODE_COLUMNS = (("grad", "reverse mode (backward)"), ("jvp", "forward mode (JVPs)"), ("second", "second order"))
HEATMAP_MAX_ENTRIES = 12  # a Hessian heatmap is drawn for models with at most this many entries


def _ran_more(m: ModelResult) -> bool:
    return m.order != 1 or m.modes != ("rev",) or bool(m.unsupported) or bool(m.outputs)


def _orders(m: ModelResult, have_heatmap: bool | None) -> list[str]:
    if not _ran_more(m):
        return []
    lines = ["## Orders and modes", "",
             f"Checked to order {m.order} in {' and '.join({'rev': 'reverse', 'fwd': 'forward'}[x] for x in m.modes)} "
             "mode" + ("s" if len(m.modes) > 1 else "") + "."]
    if m.outputs:
        lines[-1] += (f"  An operator with {math.prod(m.outputs)} outputs (shape {_shape(m.outputs)}): its "
                      "Jacobian row by row (unit cotangents), along seeded random cotangents, and column by "
                      "column (JVPs).")
    if m.second_method:
        lines[-1] += f"  Second derivatives: {m.second_method}, against torch's double backward."
    lines.append("")
    counts: dict[tuple[str, str], list[int]] = {}
    for s in summarize(m):
        if s.source == "fd":
            continue
        c = counts.setdefault((s.source, s.quantity), [0, 0])
        c[0] += s.checks
        c[1] += s.mismatch
    refused = {(u.source, u.quantity): u.reason for u in m.unsupported}
    rows = []
    for source in [x for x in m.sources if x != "fd"]:
        cells = [source]
        for quantity, _ in MODE_COLUMNS:
            if (source, quantity) in refused:
                cells.append(f"not supported: {refused[source, quantity]}")
            elif (source, quantity) in counts:
                n, bad = counts[source, quantity]
                cells.append(f"❌ {bad} of {n} disagree" if bad else f"✅ {n} agree")
            else:
                cells.append("—")
        rows.append(cells)
    lines += _table(["source", *(title for _, title in MODE_COLUMNS)], rows)
    lines += ["", "Not supported means the source cannot compute the quantity at all (not a failure); the "
              "other checks ran.", ""]
    if have_heatmap is not None:
        lines += [f"![exact Hessian at point 0, disagreements marked]({hessian_plot_name(m)})" if have_heatmap
                  else f"({plots.MISSING})", ""]
    return lines


def hessian_data(m: ModelResult) -> dict[str, object] | None:
    """The exact Hessian at point 0 (of the loss, or of output 0) and the entries where a source
    disagrees anywhere, for the heatmap; None when there is no small whole Hessian."""
    second = [c for c in m.checks if c.quantity == "second" and c.param2 is not None and c.output in (None, 0)]
    if not second or not m.complete:
        return None
    names = list(dict.fromkeys(c.entry for c in second))
    if len(names) > HEATMAP_MAX_ENTRIES:
        return None
    dtype = "float64" if any(c.dtype == "float64" for c in second) else second[0].dtype
    exact: list[list[float | None]] = [[None] * len(names) for _ in names]
    wrong: dict[str, list[list[int]]] = {}
    for c in second:
        i, j = names.index(c.entry), names.index(c.entry2 or "")
        if c.point == 0 and c.dtype == dtype and c.exact is not None:
            exact[i][j] = c.exact
        if c.verdict == "mismatch" and [i, j] not in wrong.setdefault(c.source, []):
            wrong[c.source].append([i, j])
    title = "loss" if not m.outputs else "output 0"
    return {"model": m.name, "title": title, "entries": names, "exact": exact, "dtype": dtype, "wrong": wrong}


def _worst(m: ModelResult) -> list[str]:
    lines = ["## Worst entries", ""]
    rows = []
    for s in summarize(m):
        group = [c for c in m.checks if (c.source, c.dtype, c.forward, c.quantity)
                 == (s.source, s.dtype, s.forward, s.quantity) and c.ulps is not None]
        for c in sorted(group, key=lambda c: -c.of_tolerance)[:WORST_PER_SOURCE]:
            rows.append([
                c.source + (f" ({c.forward})" if c.forward else ""), c.dtype,
                _entry_cell(c), str(c.point), num(c.exact, 12),
                num(c.value, 12), num(c.abs_error, 3), num(c.rel_error, 3) if resolvable(c) else "—",
                ulps(c.ulps) if resolvable(c) else "—", num(c.tolerance, 3),
                c.verdict,
            ])
    lines += _table(["source", "dtype", "entry", "point", "exact", "value", "abs", "rel", "ulps", "tolerance",
                     "verdict"], rows)
    return lines + ["", "Every check is in `results.json`." if m.complete else
                    "`results.json` holds the disagreements, the special points and the entries nearest their "
                    "tolerance (all were checked; a large run keeps only these).", ""]


def _entry_cell(c: Check) -> str:
    if c.quantity in ("loss", "grad") and c.output is None and c.vector is None:
        return "loss" if c.quantity == "loss" else code(c.entry)
    return code(c.quantity_text)


def _mismatches(m: ModelResult) -> list[str]:
    failed = list(m.failed)
    if not failed:
        return []
    lines = ["## Mismatches", "", f"{m.n_failed} checks disagree with the exact value.", ""]
    for c in failed[:SNIPPETS]:
        lines += [f"- {text(describe(c))}", "", fenced(snippet(m, c, fence=False), "python"), ""]
    for c in failed[SNIPPETS:LISTED]:
        lines += [f"- {describe(c)}"]
    if len(failed) > LISTED:
        lines += [f"- … and {len(failed) - LISTED} more in `results.json`"]
    return lines + [""]


def _special_points(m: ModelResult) -> list[str]:
    special = _special(m)
    if not special:
        return []
    lines = [
        "## Non-differentiable and undefined points",
        "",
        "At these points the exact derivative does not exist (one-sided derivatives differ) or is "
        "undefined (infinite, a jump, outside the real domain).  They are reported, not failed.",
        "",
    ]
    rows = [[c.source + (f" ({c.forward})" if c.forward else ""), c.dtype, code(c.entry), str(c.point),
             c.verdict, num(c.left), num(c.right), num(c.value), c.note] for c in special[:LISTED]]
    lines += _table(["source", "dtype", "entry", "point", "verdict", "left", "right", "returned", "why"], rows)
    if len(special) > LISTED:
        lines += ["", f"… and {len(special) - LISTED} more in `results.json`."]
    return lines + [""]


def _step_study(m: ModelResult, have_plot: bool) -> list[str]:
    st = m.step_study
    if st is None:
        return []
    lines = [
        "## Finite differences against the step",
        "",
        f"Central differences (f(x+h) − f(x−h))/2h of {code('∂ℓ/∂' + st.entry)} at point {st.point}, against "
        "the exact value: truncation error falls like h², rounding error grows like u/h.",
        "",
    ]
    lines += [f"![finite-difference error against step h]({step_plot_name(m)})" if have_plot else f"({plots.MISSING})", ""]
    rows = []
    for dtype in st.steps:
        pairs = list(zip(st.steps[dtype], st.errors[dtype]))
        finite = [p for p in pairs if p[1] == p[1]]
        h, e = min(finite, key=lambda p: p[1]) if finite else (float("nan"), float("nan"))
        rows.append([dtype, num(st.exact[dtype], 12), num(h, 3), num(e, 3), num(pairs[0][1], 3), num(pairs[-1][1], 3)])
    lines += _table(["dtype", "exact", "best h", "error at best h", f"error at h = {num(st.steps[next(iter(st.steps))][0])}",
                     "error at the smallest h"], rows)
    return lines + [""]


def _points(m: ModelResult) -> list[str]:
    if sum(math.prod(v.shape) if v.shape else 1 for v in m.variables) > POINTS_SHOWN or not m.points:
        return []
    lines = ["## Points", ""]
    for dtype, pts in m.points.items():
        names = list(pts[0]) if pts else []
        lines += [f"{dtype}:", ""]
        lines += _table(["point", *[code(n) for n in names]], [[str(i), *[json.dumps(p[n]) for n in names]] for i, p in enumerate(pts)])
        lines += [""]
    return lines


def render_model(m: ModelResult, *, have_plot: bool = True, have_heatmap: bool | None = None) -> str:
    """One model's page: declaration, exact gradient, graph, sources, worst entries,
    mismatches with snippets, special points, the step study."""
    lines = [f"# {text(m.name)} {_icon(m)}", ""]
    if m.description:
        lines += [markdown(m.description), ""]
    if m.target:
        lines += [f"From {code(m.target)}.", ""]
    if m.error:
        lines += ["**Could not be checked:** " + text(m.error), ""]
    lines += _declaration(m)
    if not m.error:
        lines += _gradient(m)
    lines += _graph(m)
    if m.notes:
        lines += ["## Notes", ""]
        for n in m.notes:
            lines += [markdown(n), ""]
    if m.checks:
        lines += _sources(m) + _orders(m, have_heatmap) + _worst(m) + _mismatches(m) + _banded(m) + _special_points(m) + _step_study(m, have_plot) + _points(m)
    return "\n".join(lines).rstrip() + "\n"


# -- training ---------------------------------------------------------------------------------


def render_training(r: Replay, *, have_plot: bool = True) -> str:
    """The lecture's loop: per epoch, float32 beside exact."""
    lines = [
        "# The lecture's training loop",
        "",
        "100 epochs of per-sample SGD (learning rate 0.01) fitting ŷ = ωx to x = [1, 2, 3], "
        "y = [2, 4, 6] from ω = 1: once as the lecture's program runs it (float32 autograd) and once "
        "with the exact gradient 2x(xω − y) in rational arithmetic.",
        "",
        f"![ω and the loss per epoch, float32 against exact]({TRAINING_PLOT})" if have_plot else f"({plots.MISSING})",
        "",
        f"After 100 epochs: ω = {r.final_w_float32!r} in float32, {r.final_w_exact} exactly; "
        f"the prediction for x = 4 is {r.lines_float32[-1].split()[-1]} in float32 and "
        f"{r.final_prediction_exact} exactly."
        + (f"  From epoch {r.float32_stalls_at} on, float32's ω no longer changes: each update "
           "0.01·grad is below half a unit in the last place of ω and rounds away, while the exact "
           "run keeps converging." if r.float32_stalls_at is not None else ""),
        "",
        "What the lecture's program prints (first lines), with the exact values beside:",
        "",
        "```text",
    ]
    steps = iter(r.steps)
    for line in r.lines_float32[:9]:
        exact = ""
        if line.startswith("\tgrad:"):
            exact = f"exact {next(steps).grad_exact}"
        lines.append(f"{line.expandtabs(4):<45} {exact}".rstrip())
    lines += ["```", ""]
    last = {}
    for s in r.steps:
        last[s.epoch] = s
    rows = [[str(e), repr(s.w_float32), s.w_exact, repr(s.loss_float32), s.loss_exact] for e, s in sorted(last.items())]
    lines += ["Per epoch (ω after the epoch, and the loss of its last sample, as the lecture prints it):", ""]
    lines += _table(["epoch", "ω float32", "ω exact", "loss float32", "loss exact"], rows)
    return "\n".join(lines) + "\n"
