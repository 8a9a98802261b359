"""Number formatting shared by the renderers (terminal, Markdown)."""

from __future__ import annotations

import math


def num(x: float | None, digits: int = 6) -> str:
    """A value as people read it: ``—`` for none, ``nan``/``inf`` spelled out."""
    if x is None:
        return "—"
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}g}"


def ulps(x: float | None) -> str:
    if x is None:
        return "—"
    if not math.isfinite(x):
        return num(x)
    return f"{x:.1f}" if x < 1000 else f"{x:.3g}"


def short_dtype(dtype: str) -> str:
    return {"float64": "f64", "float32": "f32", "bfloat16": "bf16", "float16": "f16"}.get(dtype, dtype)
