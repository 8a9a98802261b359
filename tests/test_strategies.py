"""Hypothesis strategies: points inside the domain, and on the loss's corners on request."""

from __future__ import annotations

import pytest
import sympy as sp
from hypothesis import find, given, settings

from gradcheck_sym import Model, ModelError, matrix, verify
from gradcheck_sym.strategies import kink_expressions, points

x, w, v = sp.symbols("x w v", real=True)
kinked = Model(name="kinked", loss=sp.Abs(w - x) + sp.Max(w, v) * x, params=[w, v], inputs=[x],
               domain={w: (-2, 2), v: (-1, 1), x: (0.5, 1.5)})


@settings(max_examples=50, deadline=None)
@given(points(kinked))
def test_points_lie_in_the_domain_and_are_float32(p):
    assert -2 <= p["w"] <= 2 and -1 <= p["v"] <= 1 and 0.5 <= p["x"] <= 1.5
    import struct

    assert all(struct.unpack("f", struct.pack("f", val))[0] == val for val in p.values())


def test_kinks_are_found_and_hit():
    assert {str(g) for g in kink_expressions(kinked.loss)} == {"w - x", "v - w"}
    on_abs = find(points(kinked, kinks=True), lambda p: p["w"] == p["x"])
    r = verify(kinked, points=[on_abs], samples=0, dtypes=["float64"])
    assert any(c.verdict == "nondifferentiable" for c in r.checks)


def test_matrix_points_are_nested_lists():
    W = matrix("W", (2, 2))
    m = Model(name="m", loss=sum(W), params=[W], domain={"*": (0, 1)})
    p = find(points(m), lambda p: True)
    assert len(p["W"]) == 2 and len(p["W"][0]) == 2


def test_points_need_a_domain():
    m = Model(name="nodomain", loss=w * x, params=[w], inputs=[x], points=[{w: 1, x: 1}])
    with pytest.raises(ModelError, match="needs a domain for every symbol"):
        points(m)
