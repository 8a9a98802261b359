"""The audit as Markdown (``torch-audit.md``, ``torch-audit-cuda.md``) and a PNG: pure rendering.

One row per function × dtype, then every finding with the smallest point that shows it and a
snippet that reproduces it with plain torch, the corner conventions, and which findings torch's
issue tracker already knows (`known.KNOWN`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable

from ..formatting import num
from ..results import Check, ModelResult
from . import bands
from .functions import BY_NAME
from .known import KNOWN, SEARCHED_NO_HIT
from .run import Audit, FunctionAudit

MODES = {  # (source, quantity) -> how the report names it
    ("autograd", "grad"): "∂ reverse",
    ("jvp", "grad"): "∂ forward (jvp)",
    ("autograd", "grad2"): "∂² (double backward)",
    ("autograd", "loss"): "forward value",
}


def report_name(device: str) -> str:
    """``torch-audit`` on the CPU, ``torch-audit-cuda`` on a GPU: the files' stem."""
    return "torch-audit" if device == "cpu" else f"torch-audit-{device}"


def render(audit: Audit) -> dict[str, str | bytes]:
    """The report's files, by name."""
    stem = report_name(audit.device)
    files: dict[str, str | bytes] = {}
    png = _plot(audit)
    if png is not None:
        files[f"{stem}.png"] = png
    files[f"{stem}.md"] = markdown(audit, f"{stem}.png" if png is not None else None)
    return files


def _fmt(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return num(v)
    if v == 0 or 1e-3 <= abs(v) < 1e6:
        return f"{v:.4g}"
    return f"{v:.3g}"


def _point_text(m: ModelResult, c: Check) -> str:
    p = m.points[c.dtype][c.point]
    return ", ".join(f"{k} = {v!r}" for k, v in p.items() if k != "kind")


def _point_values(m: ModelResult, c: Check) -> dict[str, float]:
    return {k: v for k, v in m.points[c.dtype][c.point].items() if k != "kind"}


def snippet(m: ModelResult, c: Check) -> str:
    """Plain torch that reproduces check ``c``: prints torch's value; the exact one in a comment."""
    fn = BY_NAME[m.name]
    vals = _point_values(m, c)
    lines = ["import torch"]
    for k, v in vals.items():
        lines.append(f"{k} = torch.tensor([{v!r}], dtype=torch.{c.dtype}, requires_grad=True)")
    exact = c.exact_text or (f"one-sided {c.left!r} (left), {c.right!r} (right)" if c.left is not None else "undefined")
    if c.quantity == "loss":
        lines.append(f"print({fn.call}.item())  # exact: {exact}")
    elif c.source == "jvp":
        names = ", ".join(vals)
        tangents = ", ".join("torch.ones_like(" + k + ")" if k == c.param else "torch.zeros_like(" + k + ")"
                             for k in vals)
        lines.append(f"_, t = torch.func.jvp(lambda {names}: {fn.call}, ({names},), ({tangents},))")
        lines.append(f"print(t.item())  # exact: {exact}")
    elif c.quantity == "grad2":
        lines.append(f"(g,) = torch.autograd.grad({fn.call}, {c.param}, create_graph=True)")
        lines.append(f"(g2,) = torch.autograd.grad(g, {c.param})")
        lines.append(f"print(g2.item())  # exact: {exact}")
    else:
        lines.append(f"{fn.call}.backward()")
        lines.append(f"print({c.param}.grad.item())  # exact: {exact}")
    return "```python\n" + "\n".join(lines) + "\n```"


def _counts(fa: FunctionAudit, dtype: str, mode: str) -> dict[str, int]:
    return fa.counts.get(dtype, {}).get(mode, {})


def _worst(m: ModelResult, dtype: str, source: str, quantity: str) -> float | None:
    for s in m.summaries:
        if (s.source, s.dtype, s.quantity) == (source, dtype, quantity):
            return s.worst_ulps
    return None


def _conventions(m: ModelResult, dtype: str) -> str:
    seen: dict[str, str] = {}
    for c in m.checks:
        if c.dtype == dtype and c.source == "autograd" and c.quantity == "grad" and c.left is not None:
            p = _point_values(m, c)
            where = ", ".join(f"{v:g}" for v in p.values())
            seen.setdefault(where, c.note.removeprefix("corner: torch picks "))
    return "; ".join(f"at {k}: {v}" for k, v in seen.items())


def _known(name: str) -> list[tuple[str, str]]:
    """The known issues that match one of the function's mismatches."""
    return [(k.url, k.title) for k in KNOWN.get(name, ()) if k.mismatch]


def markdown(audit: Audit, png: str | None) -> str:
    """The report's Markdown."""
    run = audit.run
    v = run.versions
    out: list[str] = []
    w = out.append
    w(f"# torch's derivatives, audited ({audit.device})\n")
    w(f"torch {v.get('torch')}, Python {v.get('python')}, SymPy {v.get('sympy')}, python-flint "
      f"{v.get('python-flint')}; device: {audit.device} ({audit.device_name}). Made by:\n")
    w(f"```bash\n{run.command}\n```\n")
    n_fn = len(run.models)
    total = sum(s.checks for m in run.models for s in m.summaries)
    w(f"{n_fn} functions × {len(run.dtypes)} dtypes ({', '.join(run.dtypes)}); at each, the hard points of "
      f"`audit/hardpoints.py` (±0, subnormals, the smallest normal, 1 and its neighbours, the largest value, the "
      f"overflow and underflow edges of the dtype, the row's poles, zeros, domain edges and corners, where the "
      f"output saturates and the tail beyond) and {run.samples} seeded random points (seed {run.seed}); "
      f"{total:,} checks in all. Every exact value is a python-flint arb ball taken at the point exactly as the "
      "dtype holds it and correctly rounded to the dtype.\n")
    w("Bands (`audit/bands.py`; *e* exact, *v* torch, ulp the dtype's spacing at *e*, absolute at and below the "
      "smallest normal, *S* the rounding-error bound of torch's own formula at that point: for ∂ its backward "
      "formula from `derivatives.yaml`, for ∂² its double backward, the chain rule through that formula with "
      "every value it reads (the saved output, a kernel's sigmoid or tanh) differentiated by torch's own formula "
      "over the rounded value, or the double-backward kernel's formula where torch has one):\n")
    w(f"* **agree** |v − e| ≤ {bands.AGREE_ULPS:g} ulp;")
    w("* **mismatch** NaN/inf where *e* is finite;")
    w("* **imprecise** ⚠ a derivative below the smallest normal lost to underflow (|v − e| ≤ the smallest normal), "
      f"or |v − e| ≤ {bands.EXPLAINED_FACTOR:g}·S + I + {bands.AGREE_ULPS:g} ulp (I: rounding the inputs by half an "
      "ulp): explained by rounding the values torch's formula reads (the saved output in s(1 − s), 1 − y², "
      "x² inside exp(−x²), a function's argument), even where all digits are lost (0 for a derivative far "
      "below the rounding of those values); where no bound could be evaluated, every finite value;")
    w("* **mismatch** beyond that: an error no rounding of the formula's values explains (an intermediate that "
      "overflows or underflows, a wrong constant, a truncated series);")
    w("* **undefined**: the derivative does not exist (outside the domain, a pole, a jump); **corner**: torch's "
      "value must lie between the one-sided derivatives, and the side it picks is its convention.\n")
    w("Modes: ∂ reverse (`backward`), ∂ forward (`torch.func.jvp`), ∂² (double backward), and the forward value "
      "itself. Counts are over every point; the JSON (`"
      f"{report_name(audit.device)}.json`, the `verify` format, one model per function) keeps the smallest points "
      "of each finding and the worst.\n")
    if png:
        w(f"![error of ∂ (reverse) in ulps across the input range, per dtype]({png})\n")
    summary = _summary(audit)
    w(f"## Functions with mismatches ({len(summary)} of {n_fn})\n")
    w("\n".join(summary) + "\n" if summary else "None.\n")
    # -- the table ---------------------------------------------------------------------------------
    w("## Per function and dtype\n")
    w("| function | dtype | worst ulps ∂ | ∂ imprecise | ∂ mismatch | undefined | corners: torch picks "
      "| jvp mismatch | ∂² imprecise / mismatch | forward value mismatch |")
    w("|---|---|---:|---:|---:|---:|---|---:|---|---:|")
    for fa in audit.functions:
        m = fa.result
        if m.status == "error":
            w(f"| ⛔ `{m.name}` | — | {m.error} | | | | | | | |")
            continue
        for dtype in run.dtypes:
            g = _counts(fa, dtype, "autograd/grad")
            j = _counts(fa, dtype, "jvp/grad")
            g2 = _counts(fa, dtype, "autograd/grad2")
            lv = _counts(fa, dtype, "autograd/loss")
            mark = "❌ " if g.get("mismatch") or j.get("mismatch") or g2.get("mismatch") else (
                "⚠ " if g.get("imprecise") or g2.get("imprecise") else "")
            second = f"{g2.get('imprecise', 0)} / {g2.get('mismatch', 0)}" if g2 else "—"
            w(f"| {mark}`{m.name}` | {dtype} | {_fmt(_worst(m, dtype, 'autograd', 'grad'))} | {g.get('imprecise', 0)} "
              f"| {g.get('mismatch', 0)} | {g.get('undefined', 0)} | {_conventions(m, dtype) or '—'} "
              f"| {j.get('mismatch', 0) if j else '—'} | {second} | {lv.get('mismatch', 0)} |")
    w("")
    # -- findings ----------------------------------------------------------------------------------
    w("## Findings\n")
    w("Each with the smallest point that shows it (the JSON has more), torch's value and the exact one, and a "
      "snippet that reproduces it with plain torch on a one-element tensor.\n")
    for fa in audit.functions:
        m = fa.result
        items = list(_findings(fa))
        notes = _merged_notes(m.notes)
        if not items and not notes:
            continue
        w(f"### `{m.name}`\n")
        w(f"Definition: `{m.loss}`.\n")
        for n in notes:
            w(f"* note: {n}")
        known = _known(m.name)
        if known:
            w("* known in torch's tracker: " + "; ".join(f"[{t}]({u})" for u, t in known))
        elif m.status == "fail":
            w(f"* torch's issue tracker: {_novelty(m.name)}")
        w("")
        for c in items:
            mode = MODES.get((c.source, c.quantity), f"{c.source} {c.quantity}")
            icon = "❌" if c.verdict == "mismatch" else "⚠"
            err = f", {_fmt(c.ulps)} ulps" if c.ulps is not None else ""
            w(f"{icon} **{c.dtype}, {mode}: {c.verdict}** at {_point_text(m, c)} "
              f"({m.points[c.dtype][c.point]['kind']} point): torch {c.value!r}, exact {c.exact!r}{err}. "
              f"{c.note}\n")
            w("<details><summary>reproduce</summary>\n\n" + snippet(m, c) + "\n\n</details>\n")
    # -- corners -----------------------------------------------------------------------------------
    w("## Corners: which one-sided derivative torch picks\n")
    w("| function | dtype | point | left | right | torch (∂ reverse) |")
    w("|---|---|---|---:|---:|---|")
    for fa in audit.functions:
        m = fa.result
        for c in m.checks:
            if c.left is not None and c.source == "autograd" and c.quantity == "grad":
                w(f"| `{m.name}` | {c.dtype} | {_point_text(m, c)} | {_fmt(c.left)} | {_fmt(c.right)} | "
                  f"{c.note.removeprefix('corner: torch picks ')} |")
    w("")
    # -- known issues --------------------------------------------------------------------------------
    w("## Against torch's issue tracker\n")
    w("Searched in torch's GitHub issues (queries in `audit/known.py`). Known:\n")
    for name, ks in KNOWN.items():
        if any(m.name == name for m in run.models):
            for k in ks:
                w(f"* `{name}`: [{k.title}]({k.url}) — {k.finding}"
                  + ("" if k.mismatch else " (imprecise in this audit: rounding the values torch's formula reads "
                                           "explains it)"))
    failing = [m.name for m in run.models if m.status == "fail" and not _known(m.name)]
    new = [n for n in failing if n in SEARCHED_NO_HIT]
    unsearched = [n for n in failing if n not in SEARCHED_NO_HIT]
    w("\nWith mismatches, searched for and not found (seem new): "
      + (", ".join(f"`{n}`" for n in new) or "none") + ".\n")
    w("With mismatches, not searched for yet: " + (", ".join(f"`{n}`" for n in unsearched) or "none") + ".\n")
    return "\n".join(out)


def _novelty(name: str) -> str:
    return ("searched, nothing found: seems new" if name in SEARCHED_NO_HIT
            else "not searched for yet")


def _merged_notes(notes: Iterable[str]) -> list[str]:
    """``float64: X`` and ``float32: X`` as ``float64, float32: X``."""
    by_text: dict[str, list[str]] = {}
    for n in notes:
        head, sep, text = n.partition(": ")
        if sep and head in ("float64", "float32", "bfloat16", "float16"):
            by_text.setdefault(text, []).append(head)
        else:
            by_text.setdefault(n, [])
    return [(", ".join(d) + ": " if d else "") + t for t, d in by_text.items()]


def _summary(audit: Audit) -> list[str]:
    """One line per function with mismatches: where (dtype and mode), and known or new."""
    lines = []
    for fa in audit.functions:
        m = fa.result
        if m.status != "fail":
            continue
        where = []
        for mode, label in (("autograd/grad", "∂"), ("jvp/grad", "∂ jvp"), ("autograd/grad2", "∂²")):
            ds = [d for d in audit.run.dtypes if _counts(fa, d, mode).get("mismatch")]
            if ds and not (mode == "jvp/grad" and all(_counts(fa, d, mode) == _counts(fa, d, "autograd/grad")
                                                       for d in audit.run.dtypes)):
                where.append(f"{label} in {', '.join(ds)}")
        known = "known: " + ", ".join(f"[{u.rsplit('/', 2)[-2]} {u.rsplit('/', 1)[-1]}]({u})" for u, _ in _known(m.name)) \
            if _known(m.name) else _novelty(m.name)
        lines.append(f"* `{m.name}`: {'; '.join(where)} ({known})")
    return lines


def _rank(m: ModelResult, c: Check) -> tuple[bool, float]:
    from .formats import fmt

    subnormal = c.exact is None or abs(c.exact) < fmt(c.dtype).tiny
    return subnormal, _single(m, c)


def _single(m: ModelResult, c: Check) -> float:
    return max(abs(v) for v in _point_values(m, c).values())


def _findings(fa: FunctionAudit) -> Iterable[Check]:
    """Per dtype and mode, the mismatch and the imprecise check at the smallest point (among those
    whose exact value is a normal number, if any: they make the case plainest); forward mode only
    where it differs from reverse mode, forward values only where they are lost."""
    m = fa.result
    best: dict[tuple[str, str, str, str], Check] = {}
    for c in m.checks:
        if c.verdict not in ("mismatch", "imprecise"):
            continue
        if c.quantity == "loss" and c.verdict != "mismatch":
            continue
        if c.source == "jvp" and _counts(fa, c.dtype, "jvp/grad") == _counts(fa, c.dtype, "autograd/grad"):
            continue
        key = (c.dtype, c.source, c.quantity, c.verdict)
        if key not in best or _rank(m, c) < _rank(m, best[key]):
            best[key] = c
    order = {"mismatch": 0, "imprecise": 1}
    return sorted(best.values(), key=lambda c: (order[c.verdict], c.dtype, c.source, c.quantity))


# -- the plot -------------------------------------------------------------------------------------

COLOURS = {"float64": "tab:blue", "float32": "tab:orange", "bfloat16": "tab:green", "float16": "tab:red"}


def _plot(audit: Audit) -> bytes | None:
    """Error of ∂ (reverse) in ulps against x, one panel per function with findings, one colour per
    dtype; deterministic bytes; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    shown = [fa for fa in audit.functions if len(BY_NAME[fa.result.name].args) == 1 and fa.profile
             and any(v in ("mismatch", "imprecise") for prof in fa.profile.values() for _, _, v in prof)]
    if not shown:
        return None
    cols = 4
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 2.6 * rows + 0.6), squeeze=False)
    for ax in axes.flat[len(shown):]:
        ax.set_visible(False)
    for ax, fa in zip(axes.flat, shown):
        for dtype, prof in fa.profile.items():
            # x on a signed log scale computed here (matplotlib's symlog overflows at ±1e308)
            xs = [math.copysign(math.log10(1 + abs(x)), x) for x, _, _ in prof]
            ys = [min(max(u, 0.01), 1e20) if not math.isnan(u) else 1e20 for _, u, _ in prof]
            if xs:
                ax.scatter(xs, ys, s=4, color=COLOURS.get(dtype), label=dtype)
        ax.set_yscale("log")
        ax.set_ylim(0.005, 3e20)
        ax.axhline(bands.AGREE_ULPS, color="grey", lw=0.6, ls="--")
        ax.set_title(fa.result.name.replace("torch.nn.functional.", "F."), fontsize=8)
        ax.tick_params(labelsize=6)
    axes.flat[0].legend(fontsize=6, markerscale=2)
    fig.suptitle("error of torch's ∂ (reverse mode) in ulps of the dtype, against sign(x)·log10(1 + |x|); "
                 "clipped to [0.01, 1e20]; dashed: the agree limit", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (2.6 * rows + 0.6)))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
