"""The tolerance rule, as the README states it, through its one implementation (`checks.compare`),
and the size of error it catches end to end."""

from __future__ import annotations

import math

import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradcheck_sym import Model, verify
from gradcheck_sym.checks import compare, ulp_array
from gradcheck_sym.compare import error_scale, split, ulp
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


def _tol(exact: float, worst: float, probable: float, dtype: str) -> float:
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    hi, lo = split(exact)
    return float(compare(t(exact), t(hi), t(lo), t(error_scale(worst, probable)), dtype).tol[0])


@pytest.mark.parametrize(
    ("exact", "worst", "probable", "dtype", "expected"),
    [
        # |v − e| ≤ max(min(2·u·E, 8·u·σ), 4 ulp(e)), u = 2⁻⁵³ (float64), 2⁻²⁴ (float32)
        (1.0, 1e6, 1e6, "float64", 2 * 2.0**-53 * 1e6),  # the worst case is the smaller
        (1.0, 1e6, 1e3, "float64", 8 * 2.0**-53 * 1e3),  # eight standard deviations are smaller
        (1.0, 0.0, 0.0, "float32", 4 * 2.0**-23),  # the floor: four ulps of the exact value
        (3.0, 1.0, 1.0, "float32", 4 * 2.0**-22),
        (1.0, math.inf, math.inf, "float64", 64 * 2.0**-52),  # no finite error size: 64 ulps
    ],
)
def test_the_documented_rule(exact, worst, probable, dtype, expected):
    assert _tol(exact, worst, probable, dtype) == expected


@settings(max_examples=200, deadline=None)
@given(st.floats(-1e6, 1e6), st.floats(0, 1e9), st.sampled_from(["float64", "float32"]))
def test_agree_exactly_up_to_the_tolerance(exact, scale, dtype):
    hi, lo = split(exact)
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    tol = float(compare(t(exact), t(hi), t(lo), t(scale), dtype).tol[0])
    inside, outside = exact + 0.5 * tol, exact + 2.0 * tol
    for value, agrees in ((inside, True), (outside, False)):
        c = compare(t(value), t(hi), t(lo), t(scale), dtype)
        assert bool(c.agree[0]) == agrees, (value, exact, tol)


def test_non_finite_values_never_agree():
    c = compare(torch.tensor([math.nan, math.inf]), torch.tensor([1.0, 1.0]).double(),
                torch.zeros(2, dtype=torch.float64), torch.tensor([1e300, 1e300]).double(), "float64")
    assert not c.agree.any()


x, y, w = sp.symbols("x y w", real=True)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("factor", "caught"), [(3.0, True), (0.3, False)])
def test_an_error_of_three_tolerances_is_flagged_and_a_third_is_not(dtype, factor, caught):
    """A hand-written gradient that is off by 3× the tolerance at every point is a mismatch at
    every point; off by 0.3× it agrees everywhere (the tolerances are those of a correct run)."""
    loss = sp.tanh(w * x - y) ** 2 + w**3 * x
    right = sp.lambdify((w, x, y), sp.diff(loss, w), "math")
    model = Model(name="m", loss=loss, params=[w], inputs=[x, y], domain={"*": (-2, 2)})
    good = verify(model.with_implementations(grad_impl=lambda w, x, y: torch.tensor(right(w.item(), x.item(), y.item()), dtype=w.dtype)), samples=6, dtypes=[dtype])
    assert good.status == "pass"
    tol = {}
    for c in good.checks:
        if c.source == "grad_impl":
            p = good.points[dtype][c.point]
            tol[(p["w"], p["x"], p["y"])] = (c.exact, c.tolerance)

    def off(w, x, y):
        exact, t = tol[(w.item(), x.item(), y.item())]
        return torch.tensor(exact + factor * t, dtype=w.dtype)

    r = verify(model.with_implementations(grad_impl=off), samples=6, dtypes=[dtype])
    verdicts = [c.verdict for c in r.checks if c.source == "grad_impl"]
    assert len(verdicts) == 6
    ratios = [c.of_tolerance for c in r.checks if c.source == "grad_impl"]
    if not caught:
        assert verdicts == ["agree"] * 6, ratios
        return
    # beyond the tolerance: a mismatch, or imprecise where rounding the values the gradient is
    # computed from explains that much; either way `strict` fails it
    assert set(verdicts) <= {"mismatch", "imprecise"} and "mismatch" in verdicts, (verdicts, ratios)
    assert verify(model.with_implementations(grad_impl=off), samples=6, dtypes=[dtype], strict=True).status == "fail"
