"""The op registry: every entry complete, closed under differentiation, and its exact, torch and
error-analysis rules consistent with each other; adding a function is one entry."""

from __future__ import annotations

import pytest
import sympy as sp
import torch
from flint import arb, ctx, fmpq
from sympy.codegen.cfunctions import expm1

from gradcheck_sym import Model, verify
from gradcheck_sym.arith import Balls
from gradcheck_sym.compare import as_float
from gradcheck_sym.dtypes import DTYPES, FLOAT32, FLOAT64
from gradcheck_sym.errorbound import error_scales_batch
from gradcheck_sym.errors import UnsupportedFunctionError
from gradcheck_sym.functions import FUNCTIONS
from gradcheck_sym.ir import functions, ops
from gradcheck_sym.ir.compile import compile_expr
from gradcheck_sym.ir.program import Program
from gradcheck_sym.reference import program_values
from gradcheck_sym.symbolic import gradient_program
from gradcheck_sym.torch_codegen import evaluate

w, x = sp.symbols("w x", real=True)
FUNCTION_ENTRIES = [s for s in ops.REGISTRY.values() if s.function and s.kink is None]
POINT = {"acosh": 1.7, "loggamma": 1.3, "polygamma": 1.3, "log": 1.3}  # inside each domain


STEPS = {"floor": 0, "ceiling": 0, "frac": 1}  # SymPy cannot differentiate them; their derivative between integers


def _applied(spec: ops.OpSpec, u: sp.Expr) -> sp.Expr:
    f = spec.sympy[0]
    if spec.name == "atan2":
        return f(u, 1 + u**2)
    if spec.name in ("xlogy", "xlog1py"):
        return f(u, 1 + u**2)
    if spec.name == "softplus":
        return sp.log(1 + sp.exp(u))
    if spec.name == "polygamma":
        return f(1, u)
    return f(u)


def test_every_entry_has_every_rule():
    for spec in ops.REGISTRY.values():
        assert callable(spec.exact) and callable(spec.torch) and callable(spec.rounding), spec.name
        if spec.function and spec.kink is None:
            assert spec.partial is not None and spec.arb is not None, spec.name
        if spec.kink is not None:
            assert isinstance(spec.kink(spec.sympy[0](w, x) if spec.name in ("Max", "Min") else spec.sympy[0](w)),
                              sp.Piecewise)


@pytest.mark.parametrize("spec", FUNCTION_ENTRIES, ids=lambda s: s.name)
def test_registry_is_closed_under_differentiation(spec):
    """Second derivatives of every function compile to registry ops (no error blaming the user)."""
    e = _applied(spec, w)
    if spec.name != "atan2":  # SymPy writes atan2(w, 1 + w²) as atan(w/(1 + w²))
        assert spec.name in compile_expr(e, (w,), rewrite_kinks=True).ops  # this entry (softplus: the pattern)
    for _ in range(1 if spec.name in STEPS else 3):
        prog = compile_expr(e, (w,), rewrite_kinks=True)
        assert all(op in ops.REGISTRY for op in prog.ops)
        e = sp.diff(e, w)
    gp = gradient_program(_applied(spec, w), (w,), (w,))
    from gradcheck_sym.higher import hessian_program

    h = hessian_program(_applied(spec, w), (w,), (w,))
    assert all(op in ops.REGISTRY for op in gp.prog.ops + h.program.ops)


@pytest.mark.parametrize("spec", FUNCTION_ENTRIES, ids=lambda s: s.name)
def test_exact_torch_and_error_rules_agree(spec):
    """At one point: the exact ball, torch's float64 lowering and the error analysis's value agree;
    the float partials the error analysis uses are the exact derivative."""
    p = sp.Rational(str(POINT.get(spec.name, 0.4)))
    e = _applied(spec, w)
    prog = compile_expr(e, (w,), rewrite_kinks=True)
    exact = program_values(prog, [fmpq(int(p.p), int(p.q))]).values[0].value
    t = evaluate(prog, [torch.tensor([float(p)], dtype=torch.float64)])[prog.output]
    assert abs(float(t) - as_float(exact)) <= 1e-9 * max(1.0, abs(as_float(exact)))
    gp = gradient_program(e, (w,), (w,))
    exact_d = program_values(gp.prog, [fmpq(int(p.p), int(p.q))]).values[1].value
    truth = STEPS[spec.name] if spec.name in STEPS else sp.N(sp.diff(e, w).subs(w, p), 40)
    ctx.prec = 200
    assert arb(exact_d).overlaps(arb(str(truth)))
    ctx.prec = 53
    es = error_scales_batch(gp, [[float(p)]])
    assert torch.isfinite(es.worst).all() and (es.worst[0, 0] > 0 or spec.name in STEPS)  # floor(0.4) is exact


def test_exact_rule_refuses_outside_the_domain():
    with_domain = [s for s in FUNCTION_ENTRIES if s.domain is not None]
    assert {"log", "asin", "acosh", "atanh", "loggamma", "log1p"} <= {s.name for s in with_domain}
    for spec in with_domain:  # -3 is outside every one of them
        assert Balls(final=True).fn(spec, [arb(-3)], 1 if spec.name == "polygamma" else None).is_nan(), spec.name
        assert not Balls(final=True).fn(spec, [arb(POINT.get(spec.name, 0.4))], 1 if spec.name == "polygamma" else None).is_nan()


def test_unsupported_function_refused_at_declaration_naming_it():
    with pytest.raises(UnsupportedFunctionError, match="`gamma`.*Supported: .*loggamma"):
        Model(name="m", loss=sp.gamma(w) * x, params=[w], inputs=[x])


def test_loggamma_model_verifies_against_torch_lgamma():
    m = Model(name="lg", loss=sp.loggamma(w * x) * x, params=[w], inputs=[x], domain={w: (0.3, 3), x: (0.9, 1.1)})
    r = verify(m, samples=4, seed=2)
    assert r.status == "pass"
    assert any(c.source == "autograd" and c.quantity == "grad" and c.verdict == "agree" for c in r.checks)


def test_adding_a_function_is_one_entry():
    """A new function registered at run time (one `functions.function(...)` call) is parsed, compiled,
    evaluated exactly, lowered to torch, error-analysed and differentiated twice."""
    from sympy import Function

    class cube_expm1(Function):  # noqa: N801 - a SymPy function class, named as SymPy names them
        @classmethod
        def eval(cls, u):
            return None

        def fdiff(self, argindex=1):
            return 3 * expm1(self.args[0]) ** 2 * sp.exp(self.args[0])

    spec = functions.function("cube_expm1", cube_expm1, torch=lambda T, xs, d, dt: T.expm1(xs[0]) ** 3,
                        arb=lambda xs, d: xs[0].expm1() ** 3)
    try:
        m = Model(name="new", loss=cube_expm1(w * x), params=[w], inputs=[x], domain={"*": (-1, 1)})
        r = verify(m, samples=3, seed=0, dtypes=["float64"])
        assert r.status == "pass"
        assert [c.verdict for c in r.checks if c.source == "autograd"].count("agree") == 6
    finally:
        del ops.REGISTRY[spec.name]
        ops.BY_SYMPY.pop(cube_expm1)


def test_one_dtype_description():
    assert FLOAT64.unit_roundoff == 2.0**-53 and FLOAT32.unit_roundoff == 2.0**-24
    for d in DTYPES.values():
        info = torch.finfo(d.torch)
        assert (d.max, d.smallest_normal, 2 * d.unit_roundoff) == (info.max, info.tiny, info.eps)


def test_programs_are_typed_instructions():
    p = compile_expr(sp.exp(w) * x, (w, x), rewrite_kinks=False)
    assert isinstance(p, Program)
    assert [i.op for i in p] == ["var", "var", "exp", "mul"]
    assert p[2].args == (0,)
    assert sorted(FUNCTIONS[sp.exp].name for _ in range(1)) == ["exp"]
