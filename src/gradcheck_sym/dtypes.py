"""The float types checked, described once: every module that needs a dtype fact reads it here.

>>> FLOAT32.unit_roundoff == 2.0**-24 and FLOAT32.mantissa_bits == 23
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, kw_only=True)
class DType:
    """An IEEE binary float type, as the tolerance rule, finite differences and torch see it."""

    name: str  # "float64" | "float32": how options, results and reports name it
    mantissa_bits: int  # stored fraction bits (52, 23)
    min_exponent: int  # exponent of the smallest normal number (-1022, -126)
    max_exponent: int  # exponent of the largest finite number (1023, 127)

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

    @property
    def torch(self) -> torch.dtype:
        """The torch dtype (torch is imported only when this is asked for)."""
        import torch

        return getattr(torch, self.name)  # type: ignore[no-any-return]


FLOAT64 = DType(name="float64", mantissa_bits=52, min_exponent=-1022, max_exponent=1023)
FLOAT32 = DType(name="float32", mantissa_bits=23, min_exponent=-126, max_exponent=127)
DTYPES: dict[str, DType] = {d.name: d for d in (FLOAT64, FLOAT32)}
UNIT_ROUNDOFF: dict[str, float] = {d.name: d.unit_roundoff for d in DTYPES.values()}
