"""The report as files: every page rendered (`report_md`), every plot drawn (`plots`, kept in the
cache), written atomically (`writer`) into one folder.

The folder keeps a manifest (``.gradcheck_sym-report.json``) of the files this tool wrote there,
so a later run removes its own pages of models no longer checked, and only those: a file the
manifest does not list (a README, a benchmark's page) is never touched.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from . import plots
from .report_md import (
    TRAINING_PAGE,
    TRAINING_PLOT,
    file_stem,
    hessian_data,
    hessian_plot_name,
    page_name,
    render_index,
    render_model,
    render_training,
    step_plot_name,
)
from .results import RunResult, to_json
from .writer import write_all_atomic

MANIFEST = ".gradcheck_sym-report.json"
RESULTS = "results.json"


def _cached_png(kind: str, data: object, draw: Callable[[], bytes | None]) -> bytes | None:
    """The PNG for ``data`` from the cache, or drawn now (and kept).  A cached entry only saves
    drawing: it is used only if it is a PNG."""
    from . import cache

    digest = cache.key("plot", kind, data, cache.versions("matplotlib"))
    png = cache.load_bytes("plots", digest, ".png")
    if png is not None and png.startswith(b"\x89PNG\r\n\x1a\n"):
        return png
    png = draw()
    if png is not None:
        cache.store_bytes("plots", digest, ".png", png)
    return png


def distinct_names(run: RunResult) -> RunResult:
    """``run`` with models renamed where two would share a page (the same name, or names that
    are the same file name): the second ``name-2``, and so on."""
    seen: set[str] = set()
    models = []
    for m in run.models:
        name, k = m.name, 1
        while file_stem(name).casefold() in seen:
            k += 1
            name = f"{m.name}-{k}"
        seen.add(file_stem(name).casefold())
        models.append(m if name == m.name else dataclasses.replace(m, name=name))
    return dataclasses.replace(run, models=tuple(models))


def render_files(run: RunResult) -> dict[str, str | bytes]:
    """Every file of the report, by name: Markdown text and PNG bytes."""
    run = distinct_names(run)
    files: dict[str, str | bytes] = {"index.md": render_index(run)}
    for m in run.models:
        st = m.step_study
        png = _cached_png("steps", dataclasses.asdict(st), lambda: plots.step_study_png(st)) if st is not None else None
        if png is not None:
            files[step_plot_name(m)] = png
        data = hessian_data(m)
        heatmap = _cached_png("hessian", data, lambda: plots.hessian_png(data)) if data is not None else None  # noqa: B023
        if heatmap is not None:
            files[hessian_plot_name(m)] = heatmap
        files[page_name(m)] = render_model(m, have_plot=png is not None,
                                           have_heatmap=None if data is None else heatmap is not None)
    if run.replay is not None:
        r = run.replay
        png = _cached_png("replay", dataclasses.asdict(r), lambda: plots.replay_png(r))
        if png is not None:
            files[TRAINING_PLOT] = png
        files[TRAINING_PAGE] = render_training(r, have_plot=png is not None)
    return files


def _previous(out: Path) -> set[str]:
    """The plain file names an earlier run listed in ``out``'s manifest (anything else in it is
    ignored: the manifest is read, never trusted to name paths)."""
    try:
        data = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return set()
    names = data.get("files") if isinstance(data, dict) else None
    if not isinstance(names, list):
        return set()
    return {n for n in names if isinstance(n, str) and n and "/" not in n and "\\" not in n and n not in (".", "..")
            and not n.startswith(".")}


def save(run: RunResult, out: Path, *, with_json: bool = True) -> list[str]:
    """Write the report of ``run`` into ``out`` (with ``results.json`` unless ``with_json`` is
    false); remove the files an earlier report put there that this one does not have.  Returns
    the names removed."""
    run = distinct_names(run)
    files = render_files(run)
    if with_json:
        files[RESULTS] = to_json(run)
    previous = _previous(out)
    keep = set(files) | ({RESULTS} if not with_json and RESULTS in previous else set())
    manifest = {"tool": "gradcheck_sym", "files": sorted(keep)}
    write_all_atomic(out, {**files, MANIFEST: json.dumps(manifest, indent=1) + "\n"})
    removed = []
    for name in sorted(previous - keep):
        path = out / name
        if path.is_file() and not path.is_symlink():
            path.unlink()
            removed.append(name)
    return removed
