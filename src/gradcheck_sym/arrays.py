"""The array functions the verdict rules (`checks`) use, in three kinds of arrays, with torch's names.

The rules are written once against a namespace ``N``: `Torch` for batches, `NumPy` for a group
of a few dozen values (a NumPy call costs a third of a torch call's dispatch on a handful of
numbers), `Floats` for a few values judged number by number (a rule is then a few Python
operations).  All three are IEEE-754 float64 elementwise (+ − × /, abs, comparisons, selections,
frexp, exp2 of whole numbers: exact), so they give the same verdicts bit for bit
(`tests/test_scalars.py` runs the corpus all three ways).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


class Torch:
    """The array functions the rules use, in torch."""

    where, maximum, minimum = staticmethod(torch.where), staticmethod(torch.maximum), staticmethod(torch.minimum)
    isfinite, isnan, isinf = staticmethod(torch.isfinite), staticmethod(torch.isnan), staticmethod(torch.isinf)
    frexp, exp2, sign = staticmethod(torch.frexp), staticmethod(torch.exp2), staticmethod(torch.sign)
    clamp_min, nan_to_num = staticmethod(torch.clamp_min), staticmethod(torch.nan_to_num)
    zeros_like, ones_like = staticmethod(torch.zeros_like), staticmethod(torch.ones_like)

    @staticmethod
    def f64(x: Any) -> Any:
        return x.to(torch.float64)

    @staticmethod
    def scalar(x: float) -> Any:
        return torch.tensor(x, dtype=torch.float64)

    @staticmethod
    def expand_as(x: Any, like: Any) -> Any:
        return x.expand_as(like)

    not_ = staticmethod(torch.logical_not)

    @staticmethod
    def any(x: Any) -> bool:
        return bool(x.any())

    @staticmethod
    def column(x: Any) -> Any:
        return x.reshape(-1, 1)

    @staticmethod
    def div(a: Any, b: Any) -> Any:
        return a / b


class NumPy:
    """The same functions in NumPy, with torch's names (`Torch`)."""

    where, maximum, minimum = staticmethod(np.where), staticmethod(np.maximum), staticmethod(np.minimum)
    isfinite, isnan, isinf = staticmethod(np.isfinite), staticmethod(np.isnan), staticmethod(np.isinf)
    frexp, exp2, sign = staticmethod(np.frexp), staticmethod(np.exp2), staticmethod(np.sign)
    clamp_min = staticmethod(np.maximum)
    zeros_like, ones_like = staticmethod(np.zeros_like), staticmethod(np.ones_like)

    @staticmethod
    def nan_to_num(x: Any, nan: float = 0.0, posinf: float | None = None, neginf: float | None = None) -> Any:
        """`torch.nan_to_num` (``np.nan_to_num`` is the same, but several times slower on a few numbers)."""
        big = 1.7976931348623157e308
        out = np.where(np.isnan(x), nan, x)
        out = np.where(out == math.inf, big if posinf is None else posinf, out)
        return np.where(out == -math.inf, -big if neginf is None else neginf, out)

    @staticmethod
    def f64(x: Any) -> Any:
        return x.astype(np.float64)

    @staticmethod
    def scalar(x: float) -> Any:
        return np.float64(x)

    @staticmethod
    def expand_as(x: Any, like: Any) -> Any:
        return np.broadcast_to(x, like.shape)

    not_ = staticmethod(np.logical_not)
    any = staticmethod(Torch.any)
    column = staticmethod(Torch.column)
    div = staticmethod(Torch.div)


def _float_max(a: Any, b: Any) -> Any:  # torch.maximum: NaN if either is NaN
    return a if a != a or a > b else b if b == b else b


def _float_min(a: Any, b: Any) -> Any:
    return a if a != a or a < b else b


def _float_div(a: float, b: float) -> float:
    """IEEE-754 division (Python raises where it divides by zero)."""
    if b == 0:
        return math.nan if a == 0 or a != a else math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _float_nan_to_num(x: float, nan: float = 0.0, posinf: float | None = None, neginf: float | None = None) -> float:
    if x != x:
        return nan
    if x == math.inf:
        return 1.7976931348623157e308 if posinf is None else posinf
    if x == -math.inf:
        return -1.7976931348623157e308 if neginf is None else neginf
    return x


class Floats:
    """The same functions on one number (Python floats, ints and bools): a group of at most
    `checks.FLOAT_VALUES` values is judged number by number (`checks._Element`), each rule a few Python
    operations instead of an array call.  IEEE-754 float64 throughout, as torch and NumPy."""

    where = staticmethod(lambda c, a, b: a if c else b)
    maximum, minimum, clamp_min = staticmethod(_float_max), staticmethod(_float_min), staticmethod(_float_max)
    isfinite, isnan, isinf = staticmethod(math.isfinite), staticmethod(math.isnan), staticmethod(math.isinf)
    frexp = staticmethod(math.frexp)
    exp2 = staticmethod(lambda e: math.ldexp(1.0, int(e)))  # e: a whole number (an exponent)
    sign = staticmethod(lambda x: x if x != x or x == 0 else math.copysign(1.0, x))
    nan_to_num = staticmethod(_float_nan_to_num)
    zeros_like = staticmethod(lambda x: type(x)(0))
    ones_like = staticmethod(lambda x: type(x)(1))
    f64 = staticmethod(float)
    scalar = staticmethod(float)
    expand_as = staticmethod(lambda x, like: x)
    not_ = staticmethod(lambda x: not x)
    any = staticmethod(bool)
    column = staticmethod(lambda x: x)
    div = staticmethod(_float_div)
