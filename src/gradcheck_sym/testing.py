"""Gradient checks as assertions, for test suites (the pytest plugin's fixture uses this).

>>> import sympy as sp
>>> x, y, w = sp.symbols("x y w", real=True)
>>> from gradcheck_sym import Model
>>> m = Model(name="linear", loss=(x*w - y)**2, params=[w], inputs=[x, y], domain={"*": (-2, 2)})
>>> assert_gradients(m, grad_impl=lambda w, x, y: 2*x*(x*w - y)).status
'pass'
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from .model import Model
from .options import DTYPES
from .results import Check, ModelResult
from .terminal import describe, snippet
from .verifier import verify

LISTED = 5  # disagreements spelled out in the message; the report has all of them
POINT_CHARS = 300  # longer points are cut in the message; the snippet has them whole


class GradientCheckFailure(AssertionError):
    """A gradient source disagrees with the exact gradient (or the model could not be used)."""

    def __init__(self, message: str, result: ModelResult) -> None:
        super().__init__(message)
        self.result = result


def _point_text(result: ModelResult, c: Check) -> str:
    text = json.dumps(result.points[c.dtype][c.point], ensure_ascii=False)
    return text if len(text) <= POINT_CHARS else text[: POINT_CHARS - 1] + "…"


def _module_refs(obj: object, first: Sequence[Any] = ()) -> Iterator[tuple[str, str]]:
    """(module, expression) pairs that name ``obj``: a module-level variable bound to it, or an
    entry of a module-level list of models.  Modules in ``first``, then the ones of the user's
    project (not installed packages), non-test modules before test modules."""
    import sysconfig

    installed = tuple({sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib")})
    candidates = []
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None) or ""
        if name == "__main__" or name.startswith("gradcheck_sym") or not f or f.startswith(installed):
            continue
        candidates.append(mod)
    candidates.sort(key=lambda m: m.__name__.rsplit(".", 1)[-1].startswith("test"))
    for mod in [*first, *candidates]:
        for var, value in list(vars(mod).items()):
            if var.startswith("_"):
                continue
            if value is obj:
                yield mod.__name__, var
            elif isinstance(value, (list, tuple)) and any(v is obj for v in value) and isinstance(obj, Model):
                yield mod.__name__, f"next(m for m in {var} if m.name == {json.dumps(obj.name)})"


def _lambda_source(fn: Callable[..., Any]) -> str | None:
    """The text of a lambda, from its file (one lambda with these argument names on its lines)."""
    import ast
    import inspect
    import textwrap

    try:
        text = textwrap.dedent("".join(inspect.getsourcelines(fn)[0]))
        tree = ast.parse(text)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None
    args = list(fn.__code__.co_varnames[: fn.__code__.co_argcount])
    found = [n for n in ast.walk(tree) if isinstance(n, ast.Lambda) and [a.arg for a in n.args.args] == args]
    return ast.get_source_segment(text, found[0]) if len(found) == 1 else None


def _free_names(fn: Callable[..., Any], imports: dict[str, list[str]], modules: dict[str, str]) -> None:
    """Imports for the global names a lambda uses: modules by name, anything else from the
    lambda's own module."""
    import types

    for name in fn.__code__.co_names:
        if name not in fn.__globals__:
            continue
        value = fn.__globals__[name]
        if isinstance(value, types.ModuleType):
            modules[name] = value.__name__
        elif fn.__module__ not in ("__main__", None):
            imports.setdefault(fn.__module__, []).append(name)


def reproducer(declared: Model, used: Model, result: ModelResult, c: Check, *, first: Sequence[Any] = ()) -> str:
    """Python that, pasted into a shell of the user's project, checks the model the user declared
    (``declared``, found by the module variable that holds it) at the failing point with the
    ``impl``/``grad_impl`` of ``used``, and prints the failing checks."""
    imports: dict[str, list[str]] = {}
    modules: dict[str, str] = {"torch": "torch"}
    lines: list[str] = []

    def name_of(obj: Any) -> str:
        ref = next(_module_refs(obj, first), None)
        if ref is None:
            return ""
        mod, expr = ref
        var = expr[len("next(m for m in "):].split(" ")[0] if expr.startswith("next(") else expr
        imports.setdefault(mod, []).append(var)
        return expr

    model_expr = name_of(declared)
    if not model_expr:
        lines.append(f"model = load_model({json.dumps(result.target or 'models.py')}, {json.dumps(result.name)})")
        model_expr = "model"
    kwargs = []
    for label in ("impl", "grad_impl"):
        fn = getattr(used, label)
        if fn is None or (fn is getattr(declared, label) and model_expr != "model"):
            continue  # the model's own: it comes with the model
        expr = name_of(fn) if getattr(fn, "__name__", "") != "<lambda>" else ""
        if not expr and (expr := _lambda_source(fn) or ""):
            _free_names(fn, imports, modules)
        if not expr:
            lines.append(f"{label} = ...  # paste the definition of {getattr(fn, '__qualname__', label)} here")
            expr = label
        kwargs.append(f"{label}={expr}")
    point = json.dumps(result.points[c.dtype][c.point], ensure_ascii=False)
    head = [f"import {m}" if m == alias else f"import {m} as {alias}" for alias, m in modules.items()]
    head.append("from gradcheck_sym import load_model, verify" if model_expr == "model" else "from gradcheck_sym import verify")
    head += [f"from {mod} import {', '.join(dict.fromkeys(names))}" for mod, names in imports.items()]
    orders = ([f"order={result.order}"] if result.order != 1 else []) + (
        [f"modes={tuple(result.modes)!r}"] if tuple(result.modes) != ("rev",) else [])
    call = ", ".join([model_expr, *kwargs, f"points=[{point}]", "samples=0", f"dtypes=[{json.dumps(c.dtype)}]",
                      *orders])
    return "\n".join([*head, "", *lines, f"result = verify({call})", "assert result.status != 'error', result.error",
                      "print(*(c for c in result.failed if c.entry == " + json.dumps(c.entry) + '), sep="\\n")'])


def failure_message(result: ModelResult, *, seed: int, model_expr: str = "model", reproduce: str | None = None) -> str:
    """What a person needs to act on a failed check: which model, entry, point, dtype and
    source, exact against actual, the errors, why, and code that reproduces it."""
    if result.status == "error":
        return f"gradcheck_sym: model `{result.name}` could not be checked: {result.error}"
    failed = list(result.failed)
    lines = [f"gradcheck_sym: model `{result.name}`: {result.n_failed} of {result.n_checks} checks disagree "
             "with the exact gradient"]
    for c in failed[:LISTED]:
        lines.append(f"  {describe(c)}")
        lines.append(f"    point {c.point} ({c.dtype}): {_point_text(result, c)}")
    if result.n_failed > LISTED:
        lines.append(f"  ... and {result.n_failed - min(LISTED, len(failed))} more")
    lines += [
        f"random points drawn with seed {seed} (pytest --gradcheck-seed {seed} repeats them)",
        "reproduce the first one:",
        reproduce if reproduce is not None else snippet(result, failed[0], fence=False, model=model_expr),
    ]
    return "\n".join(lines)


def _reproduce(declared: Model, used: Model, result: ModelResult, first: Sequence[Any] = ()) -> str | None:
    if result.status == "error" or not result.failed:
        return None
    return reproducer(declared, used, result, result.failed[0], first=first)


def assert_gradients(
    model: Model,
    *,
    impl: Callable[..., Any] | None = None,
    grad_impl: Callable[..., Any] | None = None,
    points: Sequence[Mapping[Any, Any]] | None = None,
    samples: int = 5,
    dtypes: Sequence[str] = DTYPES,
    seed: int = 0,
    tolerance: float = 1.0,
    order: int = 1,
    modes: Sequence[str] = ("rev",),
    strict: bool = False,
) -> ModelResult:
    """`verify` ``model`` (with ``impl``/``grad_impl`` if given) and raise
    `GradientCheckFailure` with an actionable message unless every source agrees."""
    __tracebackhide__ = True
    used = model.with_implementations(impl=impl, grad_impl=grad_impl) if (impl or grad_impl) else model
    result = verify(used, samples=samples, seed=seed, dtypes=dtypes, points=points, tolerance=tolerance,
                    order=order, modes=modes, strict=strict)
    if result.status != "pass":
        raise GradientCheckFailure(failure_message(result, seed=seed, reproduce=_reproduce(model, used, result)), result)
    return result
