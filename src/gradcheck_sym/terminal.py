"""Results → terminal text: the summary table at the end of a run, and what failed, why."""

from __future__ import annotations

import json

from .formatting import num, short_dtype, ulps
from .results import Check, ModelResult, RunResult, summarize

STATUS = {"pass": "pass", "fail": "FAIL", "error": "ERROR"}
MAX_LISTED = 8  # mismatches listed per model; the report and JSON have all


def _worst(model: ModelResult) -> str:
    """The largest error/tolerance of a gradient source, and whose (the page has each source's)."""
    ratios = [(s.worst_of_tolerance, f"{s.source} {short_dtype(s.dtype)}") for s in summarize(model)
              if s.source != "fd" and s.quantity == "grad" and s.worst_of_tolerance is not None]
    if not ratios:
        return "—"
    ratio, where = max(ratios, key=lambda r: r[0])
    return f"{num(ratio, 2)} ({where})"


def _points(model: ModelResult) -> int:
    return max((len(v) for v in model.points.values()), default=0)


def describe(c: Check) -> str:
    """One line that says what disagreed, by how much, and why."""
    if c.quantity in ("loss", "grad") and c.output is None and c.vector is None:
        what = "loss" if c.quantity == "loss" else f"∂loss/∂{c.entry}"
    else:
        what = c.quantity_text
    head = f"{c.source} {c.dtype} {what} at point {c.point}"
    if c.verdict in ("imprecise", "inconclusive") and c.exact is not None:
        size = f"{ulps(c.ulps)} ulps, " if c.verdict == "imprecise" else ""  # (inconclusive: no relative size)
        return (f"{head}: ⚠ {c.verdict}: exact {num(c.exact, 10)}, got {num(c.value, 10)} ({size}"
                f"tolerance {num(c.tolerance, 3)}): {c.note}")
    if c.verdict == "mismatch":
        meaningful = c.exact is not None and c.tolerance is not None and abs(c.exact) > c.tolerance
        relative = f"; rel {num(c.rel_error, 3)}, {ulps(c.ulps)} ulps" if meaningful else ""
        return (
            f"{head}: exact {num(c.exact, 10)}, got {num(c.value, 10)} (error {num(c.abs_error, 3)} > "
            f"tolerance {num(c.tolerance, 3)}{relative})"
            + (f" — {c.attribution}: {c.note}" if c.attribution else "")
        )
    return f"{head}: {c.verdict}: {c.note}"


def snippet(m: ModelResult, c: Check, *, fence: bool = True, model: str | None = None) -> str:
    """Python that reproduces one check: the model, the point, the dtype.  ``model`` is the
    expression naming the model object; by default it is loaded from where it came from."""
    point = json.dumps(m.points[c.dtype][c.point], ensure_ascii=False)
    lines = ["from gradcheck_sym import load_model, verify" if model is None else "from gradcheck_sym import verify", ""]
    if model is None:
        lines.append(f"model = load_model({json.dumps(m.target or 'models.py')}, {json.dumps(m.name)})")
        model = "model"
    more = "" if m.order == 1 else f", order={m.order}"
    more += "" if m.modes == ("rev",) else f", modes={list(m.modes)!r}"
    lines += [
        f"result = verify({model}, points=[{point}], samples=0, dtypes=[{json.dumps(c.dtype)}]{more})",
        'print(*(c for c in result.failed if c.entry == ' + json.dumps(c.entry) + '), sep="\\n")',
    ]
    return "\n".join(["```python", *lines, "```"] if fence else lines)


def summary(run: RunResult) -> str:
    """The table printed at the end of ``verify``, and what failed (errors are the front end's to
    print, once, on stderr)."""
    if not run.models:
        return "no model was checked"
    rows = [("model", "params", "points", "checks", "mismatch", "kinks/undef", "worst |error|/tolerance", "status")]
    for m in run.models:
        kinks = sum(c.verdict == "nondifferentiable" for c in m.checks)
        undef = sum(c.verdict == "undefined" for c in m.checks)
        rows.append((
            m.name, str(m.n_params), str(_points(m)), str(m.n_checks), str(m.n_failed),
            f"{kinks}/{undef}", _worst(m), STATUS[m.status],
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, r in enumerate(rows):
        cells = [r[i].ljust(widths[i]) if i in (0, 6, 7) else r[i].rjust(widths[i]) for i in range(len(r))]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    for m in run.models:
        if m.status != "error" and m.n_failed:
            lines.append(f"\nFAIL {m.name}: {m.n_failed} mismatching checks")
            for c in m.failed[:MAX_LISTED]:
                lines.append(f"  {describe(c)}")
            if m.n_failed > MAX_LISTED:
                lines.append(f"  ... and {m.n_failed - min(MAX_LISTED, len(m.failed))} more (see the report)")
    for m in run.models:
        if m.status != "error" and (m.n_imprecise or m.n_inconclusive):
            lines.append(f"\n⚠ {m.name}: " + "; ".join(
                f"{n} {what}" for n, what in ((m.n_imprecise, "imprecise (explained by rounding, "
                                              "not a wrong gradient)"),
                                             (m.n_inconclusive, "INCONCLUSIVE (the check cannot resolve the value)"))
                if n) + ("" if m.status == "fail" else " — not failures unless --strict"))
            for c in [c for c in m.checks if c.verdict in ("imprecise", "inconclusive") and c.source != "fd"][:3]:
                lines.append(f"  {describe(c)}")
    for m in run.models:
        for u in m.unsupported:
            lines.append(f"\nnot supported: {m.name}: {u.source} {UNSUPPORTED_WHAT.get(u.quantity, u.quantity)}: "
                         f"{u.reason} (not a failure; the other checks ran)")
    return "\n".join(lines)


UNSUPPORTED_WHAT = {"jvp": "forward mode (--modes fwd)", "second": "second order (--order 2)"}
