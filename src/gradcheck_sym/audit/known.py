"""Findings torch's issue tracker already knows, as data: function -> issues.

Found with the `search` tool over GitHub issues (queries such as "sigmoid backward precision
float64", "exp2 backward overflow", "xlogy gradient at zero nan"); each entry says which finding
of the audit it matches.  A function with mismatches and no entry here is reported as new.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Known:
    url: str
    title: str
    finding: str  # the audit's finding it matches


KNOWN: dict[str, tuple[Known, ...]] = {
    "torch.sigmoid": (
        Known("https://github.com/pytorch/pytorch/issues/195681",
              "torch.sigmoid backward loses a representable float64 derivative at large positive input (open)",
              "∂ reverse returns 0 past x ≈ 36.7 in float64 (the audit's smallest point is the same 37.42994775023705)"),
    ),
    "torch.exp2": (
        Known("https://github.com/pytorch/pytorch/issues/192407",
              "torch.exp2 backward overflows to inf at 1024.0 although the float64 derivative is finite (closed)",
              "∂ is inf at x = log2(max) where ln2·2^x is finite"),
    ),
    "torch.xlogy": (
        Known("https://github.com/pytorch/pytorch/issues/80770",
              "`xlogy` returns wrong gradient when `input` is 0 (closed)",
              "the gradient at input 0 (the fix made ∂/∂x = log y there); ∂/∂y at (0, 0) is NaN"),
    ),
}
