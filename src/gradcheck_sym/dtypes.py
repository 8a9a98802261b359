"""The float types checked, described once: every module that needs a dtype fact reads it here.

>>> FLOAT32.unit_roundoff == 2.0**-24 and FLOAT32.mantissa_bits == 23
True
>>> FLOAT16.max, BFLOAT16.round(1 + 2.0**-9)
(65504.0, 1.0)
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, kw_only=True)
class DType:
    """An IEEE binary float type, as the tolerance rule, finite differences and torch see it."""

    name: str  # "float64" | "float32" | "bfloat16" | "float16": how options, results and reports name it
    mantissa_bits: int  # stored fraction bits (52, 23, 7, 10)
    min_exponent: int  # exponent of the smallest normal number (-1022, -126, -126, -14)
    max_exponent: int  # exponent of the largest finite number (1023, 127, 127, 15)
    finite_differences: bool = True  # whether a difference quotient keeps any digits (see `FD_NOTE`)

    @property
    def unit_roundoff(self) -> float:
        """u: half the spacing at 1 (2⁻⁵³, 2⁻²⁴)."""
        return 2.0 ** -(self.mantissa_bits + 1)

    @property
    def smallest_normal(self) -> float:
        return 2.0**self.min_exponent

    @property
    def max(self) -> float:
        """The largest finite value."""
        return (2.0 - 2.0**-self.mantissa_bits) * 2.0**self.max_exponent

    def round(self, x: float) -> float:
        """``x`` (a float64) rounded to this type as torch rounds it, back as a Python float
        (beyond the range: ±inf)."""
        if self.name == "float64":
            return float(x)
        if self.name == "float32":
            return struct.unpack("f", struct.pack("f", x))[0] if abs(x) <= self.max or x != x else math.copysign(math.inf, x)
        import torch

        return float(torch.tensor(x, dtype=torch.float64).to(self.torch).item())

    @property
    def torch(self) -> torch.dtype:
        """The torch dtype (torch is imported only when this is asked for)."""
        import torch

        return getattr(torch, self.name)  # type: ignore[no-any-return]


FLOAT64 = DType(name="float64", mantissa_bits=52, min_exponent=-1022, max_exponent=1023)
FLOAT32 = DType(name="float32", mantissa_bits=23, min_exponent=-126, max_exponent=127)
# float32's range with 8 significant bits (u = 2⁻⁸), and IEEE half: 11 bits, largest 65504
BFLOAT16 = DType(name="bfloat16", mantissa_bits=7, min_exponent=-126, max_exponent=127, finite_differences=False)
FLOAT16 = DType(name="float16", mantissa_bits=10, min_exponent=-14, max_exponent=15, finite_differences=False)
DTYPES: dict[str, DType] = {d.name: d for d in (FLOAT64, FLOAT32, BFLOAT16, FLOAT16)}
FD_NOTE = (
    "Finite differences are not run in {dtype}: with {bits} significant bits, a difference quotient "
    "(f(x + h) − f(x − h))/2h keeps no reliable digit at any step h (rounding the two values costs "
    "u·|f|/h, truncation h²·|f‴|, both near 1e-2 at best), so the gradient checks there have the exact "
    "value alone to decide (no finite differences to confirm a mismatch)."
)
UNIT_ROUNDOFF: dict[str, float] = {d.name: d.unit_roundoff for d in DTYPES.values()}
