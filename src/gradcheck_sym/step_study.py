"""The finite-difference step study: error of the central difference against the step h.

Truncation error shrinks like h², rounding error grows like u/h: on a log-log plot the error
falls, bottoms out and rises again (the V), and the bottom is where a finite-difference check is
as good as it gets in that dtype.  Measured against the exact derivative, for one entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch

from .results import StepStudy
from .sources import Subject
from .torch_codegen import TORCH_DTYPES

# h = 2**-k for these k: from coarse to well below the rounding floor of each dtype
EXPONENTS = {"float64": range(1, 46), "float32": range(1, 23)}


@lru_cache(maxsize=None)
def _steps(dtype: str) -> tuple[torch.Tensor, list[float]]:
    """The steps of ``dtype`` as a tensor and a list (the same for every study: made once)."""
    hs = [2.0**-k for k in EXPONENTS[dtype]]
    return torch.tensor(hs, dtype=torch.float64), hs


def step_study(
    subject: Subject,
    entry: int,
    point: int,
    points: dict[str, Sequence[float]],
    exact: dict[str, float],
) -> StepStudy:
    """Central differences of the model's torch forward in each dtype at ``points[dtype]``
    for entry number ``entry``, one batch per dtype."""
    pos = subject.entry_positions[entry]
    steps: dict[str, list[float]] = {}
    errors: dict[str, list[float]] = {}
    for dtype, p in points.items():
        tdtype = TORCH_DTYPES[dtype]
        hs, listed = _steps(dtype)
        base = torch.tensor(p, dtype=torch.float64)
        x = base[pos]
        moved = torch.stack([x + hs, x - hs], dim=1).to(tdtype).to(torch.float64)  # (H, 2)
        rows = base.repeat(2 * len(hs), 1)
        rows[:, pos] = moved.reshape(-1)
        with torch.no_grad():
            f = subject.forward(list(rows.to(tdtype).T)).double().reshape(-1, 2)
        quotient = (f[:, 0] - f[:, 1]) / (moved[:, 0] - moved[:, 1])
        steps[dtype] = list(listed)
        errors[dtype] = (quotient - exact[dtype]).abs().tolist()
    return StepStudy(entry=subject.model.entries[entry].name, point=point, exact=dict(exact), steps=steps, errors=errors)
