"""Results → Markdown: ``index.md`` for the run and one page per model.  Pure functions:
the same results give the same bytes (no clock, no paths of this machine)."""

from __future__ import annotations

from .formatting import num, ulps
from .results import Check, ModelResult, RunResult, summarize
from .terminal import describe

VERDICT_ICON = {"pass": "✅", "fail": "❌", "error": "⚠️ error"}
WORST_ROWS = 10


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def page_name(model: ModelResult) -> str:
    return f"{model.name}.md"


def _kinks(model: ModelResult) -> int:
    return sum(c.verdict in ("nondifferentiable", "undefined") for c in model.checks)


def _icon(model: ModelResult) -> str:
    icon = VERDICT_ICON[model.status]
    return icon + (" ⚠" if model.status == "pass" and _kinks(model) else "")


def render_index(run: RunResult) -> str:
    """The run's front page: one row per model."""
    v = run.versions
    lines = [
        "# gradcheck_sym report",
        "",
        f"Reproduce: `{run.command}`",
        "",
        f"Seed {run.seed}, {run.samples} random points per model (after its explicit points), "
        f"dtypes {', '.join(run.dtypes)}.  Versions: Python {v.get('python')}, torch {v.get('torch')}, "
        f"SymPy {v.get('sympy')}, python-flint {v.get('python-flint')}, gradcheck_sym {run.tool_version}.",
        "",
    ]
    rows = []
    for m in run.models:
        worst = []
        for s in summarize(m):
            if s.worst_ulps is not None and s.source != "fd":
                worst.append(f"{s.source} {s.dtype}: {num(s.worst_of_tolerance, 2)} of tolerance, "
                             f"{ulps(s.worst_ulps)} ulps, rel {num(s.worst_rel, 2)}")
        points = max((len(p) for p in m.points.values()), default=0)
        rows.append([
            f"[{m.name}]({page_name(m)})", str(m.n_params), str(points), ", ".join(m.sources) or "—",
            "<br>".join(worst) or (m.error or "—"), _icon(m),
        ])
    lines += _table(["model", "params", "points", "sources", "worst error", "verdict"], rows)
    lines += ["", "✅ every source agrees with the exact gradient · ❌ a source is wrong · "
              "⚠ some points are non-differentiable or undefined (reported, not failures)"]
    for e in run.errors:
        lines += ["", f"⚠️ {e}"]
    if run.replay is not None:
        lines += ["", "## The lecture's training loop, replayed", ""]
        lines += [
            "100 epochs of per-sample SGD (lr 0.01) on x = [1, 2, 3], y = [2, 4, 6] from ω = 1, "
            "once in float32 autograd (the lecture's program) and once with the exact gradient "
            "2x(xω − y) in rational arithmetic.",
            "",
        ]
        r = run.replay
        rows = []
        for s in r.steps:
            if s.epoch in (0, 1, 2, 10, 50, 99) and s.x == 3.0:
                rows.append([str(s.epoch), repr(s.grad_float32), s.grad_exact, repr(s.w_float32), s.w_exact])
        lines += _table(["epoch", "grad (float32)", "grad (exact)", "ω after (float32)", "ω after (exact)"], rows)
        lines += ["", f"Final ω: float32 {r.final_w_float32!r}, exact {r.final_w_exact}."]
    return "\n".join(lines) + "\n"


def _of_tolerance(c: Check) -> float:
    if c.abs_error is None or not c.tolerance:
        return 0.0
    return c.abs_error / c.tolerance


def _worst_rows(checks: list[Check]) -> list[list[str]]:
    """The checks closest to (or beyond) their tolerance, finite differences aside."""
    ranked = sorted((c for c in checks if c.ulps is not None and c.source != "fd"), key=lambda c: -_of_tolerance(c))
    ranked = ranked[:WORST_ROWS]
    return [
        [c.source + (f" ({c.forward})" if c.forward else ""), c.dtype,
         "loss" if c.quantity == "loss" else c.entry, str(c.point), num(c.exact, 12), num(c.value, 12),
         num(c.abs_error, 3), num(c.rel_error, 3), ulps(c.ulps), num(c.tolerance, 3), c.verdict]
        for c in ranked
    ]


def render_model(model: ModelResult) -> str:
    """One model's page: declaration, exact gradient, per-source summary, worst entries."""
    lines = [f"# {model.name} {_icon(model)}", ""]
    if model.description:
        lines += [model.description, ""]
    if model.error:
        lines += ["**Could not be checked:** " + model.error, ""]
    lines += ["## Declaration", ""]
    if model.loss_latex:
        lines += ["$$", f"\\mathrm{{loss}} = {model.loss_latex}", "$$", ""]
    else:
        lines += [f"loss: {model.loss}", ""]
    params = [f"`{v.name}` {'×'.join(map(str, v.shape)) if v.shape else 'scalar'}" for v in model.variables if v.role == "param"]
    inputs = [f"`{v.name}` {'×'.join(map(str, v.shape)) if v.shape else 'scalar'}" for v in model.variables if v.role == "input"]
    lines += [f"Parameters ({model.n_params} scalars): {', '.join(params)}", ""]
    if inputs:
        lines += [f"Inputs: {', '.join(inputs)}", ""]
    if model.closed_form_latex:
        lines += ["## Exact gradient", ""]
        for name, tex in model.closed_form_latex.items():
            lines += ["$$", f"\\frac{{\\partial\\, \\mathrm{{loss}}}}{{\\partial {name}}} = {tex}", "$$", ""]
    if model.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in model.notes] + [""]
    if model.checks:
        lines += ["## Sources", ""]
        rows = [[s.source + (f" ({s.forward})" if s.forward else ""), s.dtype, str(s.checks), str(s.agree),
                 str(s.mismatch), str(s.nondifferentiable), str(s.undefined), num(s.worst_of_tolerance, 2),
                 ulps(s.worst_ulps), num(s.worst_rel, 3)]
                for s in summarize(model)]
        lines += _table(["source", "dtype", "checks", "agree", "mismatch", "non-diff.", "undefined",
                         "worst error/tolerance", "worst ulps", "worst rel. error"], rows)
        lines += ["", f"Exact values computed in: {', '.join(model.arithmetic)}.", ""]
        lines += ["## Worst entries", ""]
        lines += _table(["source", "dtype", "entry", "point", "exact", "value", "abs", "rel", "ulps",
                         "tolerance", "verdict"], _worst_rows(list(model.checks)))
        lines += [""]
        failed = list(model.failed)
        if failed:
            lines += ["## Mismatches", ""] + [f"- {describe(c)}" for c in failed[:50]]
            if len(failed) > 50:
                lines += [f"- … and {len(failed) - 50} more in results.json"]
            lines += [""]
        special = [c for c in model.checks if c.verdict in ("nondifferentiable", "undefined")]
        if special:
            lines += ["## Non-differentiable and undefined points", ""]
            lines += [f"- {describe(c)}" for c in special[:50]] + [""]
    return "\n".join(lines).rstrip() + "\n"


def render(run: RunResult) -> dict[str, str]:
    """Every Markdown file of the report, by file name."""
    files = {"index.md": render_index(run)}
    for m in run.models:
        files[page_name(m)] = render_model(m)
    return files
