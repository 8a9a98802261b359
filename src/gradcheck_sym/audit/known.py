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
    mismatch: bool = True  # whether that finding is a mismatch in the audit (else imprecise: rounding explains it)


KNOWN: dict[str, tuple[Known, ...]] = {
    "torch.sigmoid": (
        Known("https://github.com/pytorch/pytorch/issues/195681",
              "torch.sigmoid backward loses a representable float64 derivative at large positive input (open)",
              "∂ reverse returns 0 past x ≈ 36.7 in float64 (the audit's smallest point is the same 37.42994775023705)", mismatch=False),
    ),
    "torch.tanh": (
        Known("https://github.com/pytorch/pytorch/issues/195685",
              "torch.tanh backward loses a representable float32 derivative near saturation (open)",
              "∂ reverse is 0 once tanh rounds to ±1 (1 − y²), in every dtype", mismatch=False),
    ),
    "torch.expm1": (
        Known("https://github.com/pytorch/pytorch/issues/192406",
              "torch.expm1 backward returns zero gradient at -40.0 although the float64 derivative is finite (open)",
              "∂ reverse is 0 once expm1 rounds to −1 (result + 1)", mismatch=False),
    ),
    "torch.sinc": (
        Known("https://github.com/pytorch/pytorch/issues/89459", "Higher order derivatives of sinc explode (open)",
              "∂² is NaN at 0"),
        Known("https://github.com/pytorch/pytorch/issues/196703",
              "torch.sinc produces NaN in the second derivative at its removable singularity (open)", "∂² is NaN at 0"),
    ),
    "torch.nn.functional.gelu": (
        Known("https://github.com/pytorch/pytorch/issues/187806",
              "F.gelu(approximate='none'): 1+erf catastrophic cancellation (open)",
              "the negative tail of the forward value and of ∂ (1 + erf cancels)", mismatch=False),
    ),
    "torch.special.ndtr": (
        Known("https://github.com/pytorch/pytorch/pull/189234",
              "Fix 1+erf catastrophic cancellation in gelu, Normal.cdf, and ndtr (open pull request)",
              "the negative tail (1 + erf cancels)", mismatch=False),
    ),
    "torch.nn.functional.softplus": (
        Known("https://github.com/pytorch/pytorch/issues/55587", "`Softplus` forward and backward discrepancy (closed)",
              "the threshold switch (documented): ∂ is exactly 1 above x = 20, 2e-9 off in float64"),
    ),
    "torch.special.xlog1py": (
        Known("https://github.com/pytorch/pytorch/pull/82713",
              "Fix and improve the efficiency of the backward of xlog* functions (closed)",
              "the backward became `grad * self / (1 + other)`: ∂/∂y is NaN at x = 0, y = −1 where xlog1py(0, y) ≡ 0"),
    ),
    "torch.sinh": (
        Known("https://github.com/pytorch/pytorch/issues/48641", "`torch.sinh`: Incorrect values for vectorized path (open)",
              "inf on the vectorized CPU path at the overflow edge, finite alone (the forward and ∂ of cosh)"),
    ),
    "torch.cosh": (
        Known("https://github.com/pytorch/pytorch/issues/48641", "`torch.sinh`: Incorrect values for vectorized path (open)",
              "the same vectorized overflow, for cosh and for ∂ sinh = cosh"),
    ),
    "torch.nn.functional.silu": (
        Known("https://github.com/pytorch/pytorch/issues/195682",
              "torch.nn.functional.silu loses a representable float64 second-derivative signal (open)",
              "∂² is 0 in the positive tail", mismatch=False),
    ),
    "torch.digamma": (
        Known("https://github.com/pytorch/pytorch/pull/4399",
              "Add low-precision digamma() and polygamma() functions (merged; trigamma 'accurate to at least 5 digits')",
              "∂ digamma = trigamma off in the 10th digit in float64"),
    ),
    "torch.lgamma": (
        Known("https://github.com/pytorch/pytorch/pull/4399",
              "Add low-precision digamma() and polygamma() functions (merged; trigamma 'accurate to at least 5 digits')",
              "∂² lgamma = trigamma off in the 10th digit in float64"),
    ),
    "torch.exp2": (
        Known("https://github.com/pytorch/pytorch/issues/192407",
              "torch.exp2 backward overflows to inf at 1024.0 although the float64 derivative is finite (closed)",
              "∂ is inf at x = log2(max) where ln2·2^x is finite"),
    ),
    "torch.xlogy": (
        Known("https://github.com/pytorch/pytorch/issues/80770",
              "`xlogy` returns wrong gradient when `input` is 0 (closed)",
              "the gradient at input 0; its fix (pull request 82713) made ∂/∂y = grad·x/y, NaN at (0, 0) where "
              "xlogy(0, y) ≡ 0 makes it exactly 0"),
    ),
}


# Functions with mismatches whose findings were searched for in torch's tracker without a match
# (queries such as "hardsigmoid backward float64 1/6", "mish backward wrong sign", "asinh gradient
# x*x overflow", "erfcx backward precision", "hypot gradient overflow", "softsign tanhshrink
# gradient cancellation").  Others with mismatches were not searched: the report says so.
SEARCHED_NO_HIT: frozenset[str] = frozenset({
    "torch.nn.functional.hardsigmoid", "torch.nn.functional.mish", "torch.asinh", "torch.acosh", "torch.atan",
    "torch.special.erfcx", "torch.hypot", "torch.nn.functional.softsign", "torch.nn.functional.tanhshrink",
})
