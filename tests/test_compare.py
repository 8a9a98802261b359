"""The tolerance rule: the array implementation against the documented scalar rule, and ulps."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradcheck_sym.checks import compare, ulp_array
from gradcheck_sym.compare import FALLBACK_ULPS, FLOOR_ULPS, error_scale, split, tolerance, ulp
from gradcheck_sym.sampling import to_float32


def test_ulp_of_known_values():
    assert ulp(1.0, "float64") == 2.0**-52 and ulp(1.0, "float32") == 2.0**-23
    assert ulp(3.0, "float32") == 2.0**-22
    assert ulp(0.0, "float32") == 2.0**-149 and ulp(0.0, "float64") == 2.0**-1074
    assert ulp(1e-40, "float32") == 2.0**-149  # subnormal range


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(["float64", "float32"]))
def test_array_ulp_matches_scalar(x, dtype):
    if dtype == "float32":
        x = to_float32(x) if abs(x) < 3e38 else 1.0
    assert float(ulp_array(torch.tensor([x], dtype=torch.float64), dtype)[0]) == ulp(x, dtype)


@settings(max_examples=300, deadline=None)
@given(st.floats(-1e6, 1e6), st.floats(0, 1e9), st.floats(-1e-3, 1e-3), st.sampled_from(["float64", "float32"]))
def test_array_rule_matches_scalar_rule(exact, scale, offset, dtype):
    hi, lo = split(exact)
    value = exact + offset
    c = compare(*(torch.tensor([v], dtype=torch.float64) for v in (value, hi, lo, scale)), dtype)
    tol = tolerance(exact, scale, dtype)
    assert float(c.tol[0]) == tol
    assert bool(c.agree[0]) == (abs(value - exact) <= tol)


def test_tolerance_floor_and_fallback():
    assert tolerance(1.0, 0.0, "float32") == FLOOR_ULPS * 2.0**-23
    assert tolerance(1.0, math.inf, "float64") == FALLBACK_ULPS * 2.0**-52
    assert error_scale(10.0, 1.0) == 8.0 and error_scale(1.0, 10.0) == 2.0


def test_non_finite_values_never_agree():
    c = compare(torch.tensor([math.nan, math.inf]), torch.tensor([1.0, 1.0]).double(),
                torch.zeros(2, dtype=torch.float64), torch.tensor([1e300, 1e300]).double(), "float64")
    assert not c.agree.any()
