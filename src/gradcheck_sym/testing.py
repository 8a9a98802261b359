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
from collections.abc import Callable, Mapping, Sequence
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


def failure_message(result: ModelResult, *, seed: int, model_expr: str = "model") -> str:
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
        snippet(result, failed[0], fence=False, model=model_expr),
    ]
    return "\n".join(lines)


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
) -> ModelResult:
    """`verify` ``model`` (with ``impl``/``grad_impl`` if given) and raise
    `GradientCheckFailure` with an actionable message unless every source agrees."""
    __tracebackhide__ = True
    if impl is not None or grad_impl is not None:
        model = model.with_implementations(impl=impl, grad_impl=grad_impl)
    result = verify(model, samples=samples, seed=seed, dtypes=dtypes, points=points, tolerance=tolerance,
                    order=order, modes=modes)
    if result.status != "pass":
        raise GradientCheckFailure(failure_message(result, seed=seed), result)
    return result
