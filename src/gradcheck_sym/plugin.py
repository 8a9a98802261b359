"""The pytest plugin (entry point ``pytest11``): gradient checks inside a user's own tests.

* the ``gradcheck`` fixture: ``gradcheck(model, impl=..., grad_impl=..., points=..., samples=...,
  dtypes=..., seed=..., tolerance=..., order=..., modes=...)`` returns the result or fails the
  test with a message a person can act on;
* the marker ``@pytest.mark.gradcheck(samples=, dtypes=, seed=, tolerance=, order=, modes=)`` sets
  them per test;
* ``gradcheck_models = [model, ...]`` at module level in a test file makes one test item per model;
* options ``--gradcheck-samples``, ``--gradcheck-seed``, ``--gradcheck-dtypes``,
  ``--gradcheck-order``, ``--gradcheck-modes``, ``--gradcheck-report-dir`` (and ``gradcheck_*``
  ini keys); with a report directory, the same
  Markdown/JSON report as the command line, merged across pytest-xdist workers;
* a terminal summary: checks run, failed, worst error per dtype.

Nothing heavy is imported until a check runs: a session that does not use the plugin does not
import torch or SymPy because of it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .options import SUPPORTED_DTYPES
from .options import (DTYPES_OPTION, MODES_OPTION, ORDER, PREFIX, REPORT_DIR, SAMPLES, SEED, SHARED, STRICT, TIMEOUT,
                      Option)

if TYPE_CHECKING:
    from .model import Model
    from .results import ModelResult

MARKER = "gradcheck"
MODELS_NAME = "gradcheck_models"  # a module-level list in a test file: one item per model
MARKER_ARGS = ("samples", "dtypes", "seed", "tolerance", "order", "modes", "strict")
_RESULTS = pytest.StashKey[list[tuple[str, dict[str, Any]]]]()
_WORKER_KEY = "gradcheck_sym_results"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(PREFIX, "gradcheck_sym: exact gradient checks")
    for opt in SHARED:
        ini = f"{PREFIX}_{opt.dest}"
        help_text = _help(opt)
        help_text = help_text.replace("(default:", f"(ini: {ini}; default:")
        if opt.switch:
            group.addoption(opt.plugin_flag, dest=ini, action="store_const", const="true", default=None, help=help_text)
        else:
            group.addoption(opt.plugin_flag, dest=ini, metavar=opt.metavar, default=None, help=help_text)
        parser.addini(ini, help=help_text, default="")  # unset: the option's default (see _option)


def _help(opt: Option) -> str:
    """The option's help as the plugin means it: one text for the flag and the ini key."""
    if opt is REPORT_DIR:  # a test session writes no report unless asked to
        return ("write the Markdown report and results.json of every gradient check of the session "
                "into DIR (default: none, no report)")
    return opt.help


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(samples=N, dtypes='float64,float32', seed=N, tolerance=F, order=1|2, modes='rev,fwd', "
        "strict=True|False): "
        "options of the "
        "gradcheck fixture for this test",
    )
    config.stash[_RESULTS] = []
    for opt in SHARED:  # a bad value stops the session here, with the option named
        _option(config, opt)


def _option(config: pytest.Config, opt: Option) -> Any:
    ini = f"{PREFIX}_{opt.dest}"
    value = config.getoption(ini)
    where = opt.plugin_flag
    if value is None:
        value = config.getini(ini)
        where = ini
    if value is None or value == "":
        return opt.default if opt is not REPORT_DIR else None
    try:
        return opt.parse(str(value))
    except ValueError as exc:
        raise pytest.UsageError(f"{where}: {exc}") from None


def _marker_options(node: pytest.Item) -> dict[str, Any]:
    """The options of the closest ``gradcheck`` marker, checked."""
    out: dict[str, Any] = {}
    for mark in reversed(list(node.iter_markers(MARKER))):  # the closest mark wins
        if mark.args:
            pytest.fail(f"@pytest.mark.{MARKER} takes keyword arguments only ({', '.join(MARKER_ARGS)}), "
                        f"got positional {mark.args!r}", pytrace=False)
        unknown = sorted(set(mark.kwargs) - set(MARKER_ARGS))
        if unknown:
            pytest.fail(f"@pytest.mark.{MARKER}: unknown argument{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(f'`{u}`' for u in unknown)}; it takes {', '.join(MARKER_ARGS)}",
                        pytrace=False)
        out.update(mark.kwargs)
    if "dtypes" in out and isinstance(out["dtypes"], str):
        out["dtypes"] = _parse(DTYPES_OPTION, out["dtypes"])
    if "modes" in out and not isinstance(out["modes"], str):
        out["modes"] = ",".join(out["modes"])
    for opt in (SAMPLES, SEED, ORDER, MODES_OPTION):
        if opt.dest in out:
            out[opt.dest] = _parse(opt, str(out[opt.dest]))
    return out


def _parse(opt: Option, text: str) -> Any:
    try:
        return opt.parse(text)
    except ValueError as exc:
        pytest.fail(f"@pytest.mark.{MARKER}({opt.dest}=...): {exc}", pytrace=False)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker(MARKER) is not None:
        _marker_options(item)  # unknown or bad arguments fail here, before the test runs


def _run(config: pytest.Config, node: pytest.Item, model: Model, **given: Any) -> ModelResult:
    __tracebackhide__ = True
    from .testing import GradientCheckFailure, _reproduce, failure_message
    from .verifier import verify

    settings = {"samples": _option(config, SAMPLES), "seed": _option(config, SEED),
                "dtypes": _option(config, DTYPES_OPTION), "tolerance": 1.0, "timeout": _option(config, TIMEOUT),
                "order": _option(config, ORDER), "modes": _option(config, MODES_OPTION),
                "strict": _option(config, STRICT)}
    settings.update(_marker_options(node))
    settings.update({k: v for k, v in given.items() if v is not None and k in MARKER_ARGS})
    impl, grad_impl = given.get("impl"), given.get("grad_impl")
    declared = model
    if impl is not None or grad_impl is not None:
        model = model.with_implementations(impl=impl, grad_impl=grad_impl)
    result = verify(model, points=given.get("points"), target=node.nodeid, **settings)
    config.stash[_RESULTS].append((node.nodeid, _to_dict(result)))
    node.add_report_section("call", "gradcheck", _section(result))
    if result.status != "pass":
        module = getattr(node, "module", None) or getattr(node.parent, "obj", None)
        reproduce = _reproduce(declared, model, result, first=[module] if module is not None else [])
        raise GradientCheckFailure(failure_message(result, seed=settings["seed"], reproduce=reproduce), result)
    return result


def _to_dict(result: ModelResult) -> dict[str, Any]:
    from .results import model_to_dict

    return model_to_dict(result)


def _section(result: ModelResult) -> str:
    from .formatting import num
    from .results import summarize

    lines = [f"model `{result.name}`: {result.status}, {result.n_checks} checks"]
    for s in summarize(result):
        # every check counted: imprecise and inconclusive ones too, where there are any
        bands = "".join(f"{n} {what}, " for n, what in ((s.imprecise, "imprecise"), (s.inconclusive, "inconclusive")) if n)
        lines.append(f"  {s.label:<24} {s.dtype}: {s.agree} agree, {s.mismatch} mismatch, {bands}"
                     f"{s.nondifferentiable + s.undefined} special; worst error/tolerance "
                     f"{num(s.worst_of_tolerance, 3)}")
    for u in result.unsupported:
        lines.append(f"  not supported: {u.source} {u.quantity}: {u.reason} (not a failure)")
    return "\n".join(lines)


@pytest.fixture
def gradcheck(request: pytest.FixtureRequest) -> Callable[..., ModelResult]:
    """Check a model's gradients inside a test::

        def test_my_layer(gradcheck):
            gradcheck(model, impl=my_forward)            # fails the test if a gradient is wrong
    """

    def check(
        model: Model,
        *,
        impl: Callable[..., Any] | None = None,
        grad_impl: Callable[..., Any] | None = None,
        points: Any = None,
        samples: int | None = None,
        dtypes: Any = None,
        seed: int | None = None,
        tolerance: float | None = None,
        order: int | None = None,
        modes: Any = None,
        strict: bool | None = None,
    ) -> ModelResult:
        __tracebackhide__ = True
        if isinstance(dtypes, str):
            dtypes = _parse(DTYPES_OPTION, dtypes)
        if order is not None:
            order = _parse(ORDER, str(order))
        if modes is not None:
            modes = _parse(MODES_OPTION, modes if isinstance(modes, str) else ",".join(modes))
        return _run(request.config, request.node, model, impl=impl, grad_impl=grad_impl, points=points,
                    samples=samples, dtypes=dtypes, seed=seed, tolerance=tolerance, order=order, modes=modes,
                    strict=strict)

    return check


class ModelItem(pytest.Item):
    """One model listed in a test file's ``gradcheck_models``."""

    def __init__(self, *, model: Model, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model

    def runtest(self) -> None:
        _run(self.config, self, self.model)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        from .testing import GradientCheckFailure

        if isinstance(excinfo.value, GradientCheckFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{MODELS_NAME}[{self.model.name}]"


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> list[pytest.Item] | None:
    if name != MODELS_NAME or not isinstance(collector, pytest.Module):
        return None
    from .model import Model

    models = list(obj) if isinstance(obj, (list, tuple)) else [obj]
    bad = [m for m in models if not isinstance(m, Model)]
    if bad:
        raise pytest.UsageError(
            f"{collector.nodeid}: `{MODELS_NAME}` must list gradcheck_sym.Model objects; got {type(bad[0]).__name__}"
        )
    return [ModelItem.from_parent(collector, name=f"{MODELS_NAME}[{m.name}]", model=m) for m in models]


# -- session: report and summary (merged across xdist workers) ---------------------------------


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    results = config.stash[_RESULTS]
    if hasattr(config, "workeroutput"):  # an xdist worker: hand results to the controller
        config.workeroutput[_WORKER_KEY] = json.dumps(results)
        return
    out = _option(config, REPORT_DIR)
    if out and results:
        _write(config, Path(out), results)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: collect a finished worker's results."""
    data = getattr(node, "workeroutput", {}).get(_WORKER_KEY)
    if data:
        node.config.stash[_RESULTS].extend((nodeid, d) for nodeid, d in json.loads(data))


def _models(results: list[tuple[str, dict[str, Any]]]) -> Iterator[ModelResult]:
    """Results in test order, renamed where one model was checked by several tests."""
    import dataclasses

    from .results import model_from_dict

    ordered = sorted(results, key=lambda r: r[0])
    counts: dict[str, int] = {}
    for _nodeid, d in ordered:
        counts[d["name"]] = counts.get(d["name"], 0) + 1
    for nodeid, d in ordered:
        m = model_from_dict(d)
        yield m if counts[m.name] == 1 else dataclasses.replace(m, name=f"{m.name} ({nodeid})")


def _write(config: pytest.Config, out: Path, results: list[tuple[str, dict[str, Any]]]) -> None:
    from . import __version__
    from .report import save
    from .results import RunResult, environment_versions

    run = RunResult(
        tool_version=__version__, versions=environment_versions(),
        command="pytest " + " ".join(config.invocation_params.args),
        seed=_option(config, SEED), samples=_option(config, SAMPLES), dtypes=tuple(_option(config, DTYPES_OPTION)),
        models=tuple(_models(results)),
    )
    save(run, out)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    results = config.stash[_RESULTS]
    if not results or hasattr(config, "workeroutput"):
        return
    from .results import summarize

    models = list(_models(results))
    failed = sum(m.status != "pass" for m in models)
    tr = terminalreporter
    tr.write_sep("=", "gradcheck_sym")
    tr.write_line(f"{len(models)} gradient checks ({sum(m.n_checks for m in models)} values checked): "
                  f"{failed} failed, {len(models) - failed} passed")
    for dtype in SUPPORTED_DTYPES:
        ratios = [s.worst_of_tolerance for m in models for s in summarize(m)
                  if s.dtype == dtype and s.source != "fd" and s.worst_of_tolerance is not None]
        if ratios:
            tr.write_line(f"worst error/tolerance in {dtype}: {max(ratios):.3g} (above 1 is a mismatch)")
    out = _option(config, REPORT_DIR)
    if out:
        tr.write_line(f"report: {Path(out) / 'index.md'}")
