"""The audited torch functions, as data: one row per function.

Each row says how the function is called (the same text is run and shown in the report's
snippets, so the two cannot drift apart), its mathematical definition in SymPy, and torch's own
backward formula (from ``tools/autograd/derivatives.yaml``) written over the input and the
intermediate values it reads (`out` is the forward output): the formula whose rounding may
explain an imprecise derivative.  Piecewise definitions spell out every kink; `corners` lists
the points where the first derivative jumps, `special` the poles, zeros, domain edges and
thresholds worth probing, `saturation` the directions in which the output tends to a constant.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

X = sp.Symbol("x", real=True)
Y = sp.Symbol("y", real=True)
OUT = sp.Symbol("out", real=True)  # the forward output, as torch saved it
S = sp.Symbol("s", real=True)  # sigmoid(x), computed inside a kernel
T = sp.Symbol("t", real=True)  # tanh(...), computed inside a kernel

_pi = sp.pi
_sqrt2 = sp.sqrt(2)
_sig = 1 / (1 + sp.exp(-X))
_Phi = sp.erfc(-X / _sqrt2) / 2  # = (1 + erf(x/√2))/2, without its cancellation for x < 0
_phi = sp.exp(-X**2 / 2) / sp.sqrt(2 * _pi)
_SELU_ALPHA = sp.Rational("1.6732632423543772848170429916717")
_SELU_SCALE = sp.Rational("1.0507009873554804934193349852946")
_GELU_K = sp.sqrt(2 / _pi)
_GELU_C = sp.Rational("0.044715")
_gelu_inner = _GELU_K * (X + _GELU_C * X**3)


@dataclass(frozen=True, kw_only=True)
class AuditFunction:
    """One torch function checked as the implementation of its SymPy definition."""

    name: str  # as called, e.g. "torch.sigmoid"; the model's name in the results
    call: str  # the call, on tensors named after `args`, e.g. "torch.sigmoid(x)"
    definition: sp.Expr  # the function, in the symbols of `args`
    args: tuple[sp.Symbol, ...] = (X,)
    backward: dict[str, sp.Expr] = field(default_factory=dict)  # arg name -> torch's formula for ∂out/∂arg
    intermediates: dict[sp.Symbol, sp.Expr] = field(default_factory=dict)  # symbol in `backward` -> value
    range: tuple[float, float] = (-30.0, 30.0)  # where uniform random points go
    positive: bool = False  # real domain (or its interesting part) is x >= 0: log-spaced points only there
    corners: tuple[sp.Rational, ...] = ()  # kinks of the definition (first or second derivative jumps)
    special: tuple[sp.Expr, ...] = ()  # poles, zeros, domain edges, thresholds (exact; rounded per dtype)
    saturation: tuple[tuple[int, sp.Expr], ...] = ()  # (direction ±1, limit of the output)
    removable: tuple[sp.Rational, ...] = ()  # points where the formulas are 0/0 but the function is smooth
    second_order: bool = True  # whether double backward is checked
    # torch's formula for the derivative of each intermediate, over the same symbols: what its
    # double backward multiplies by (the saved output's is the row's own backward formula, the
    # default; a kernel's sigmoid is differentiated by sigmoid_backward, s·(1 − s), ...)
    derivatives: dict[sp.Symbol, sp.Expr] = field(default_factory=dict)
    # torch's double backward where it is its own formula rather than autograd through the first
    # order one (softplus_double_backward, log_sigmoid_double_backward), over `intermediates`
    backward2: sp.Expr | None = None
    convention: str = ""  # torch's documented deviation from the definition, if any


def _f(name: str, call: str, definition: sp.Expr, backward: sp.Expr, **kw: object) -> AuditFunction:
    """A function of one argument `x`."""
    return AuditFunction(name=name, call=call, definition=definition, backward={"x": backward}, **kw)  # type: ignore[arg-type]


def _pw(*pieces: tuple[sp.Expr, sp.Basic]) -> sp.Piecewise:
    return sp.Piecewise(*pieces)


FUNCTIONS: tuple[AuditFunction, ...] = (
    # -- exponentials and logarithms --------------------------------------------------------------
    _f("torch.exp", "torch.exp(x)", sp.exp(X), OUT, intermediates={OUT: sp.exp(X)}),
    _f("torch.exp2", "torch.exp2(x)", 2**X, OUT * sp.log(2), intermediates={OUT: 2**X}),
    _f("torch.expm1", "torch.expm1(x)", sp.exp(X) - 1, OUT + 1, intermediates={OUT: sp.exp(X) - 1}),
    _f("torch.log", "torch.log(x)", sp.log(X), 1 / X, range=(0.0, 30.0), positive=True, special=(sp.Integer(1),)),
    _f("torch.log1p", "torch.log1p(x)", sp.log(1 + X), 1 / (X + 1), range=(-1.0, 30.0), special=(sp.Integer(-1),)),
    _f("torch.log2", "torch.log2(x)", sp.log(X) / sp.log(2), 1 / (X * sp.log(2)), range=(0.0, 30.0), positive=True),
    _f("torch.log10", "torch.log10(x)", sp.log(X) / sp.log(10), 1 / (X * sp.log(10)), range=(0.0, 30.0),
       positive=True),
    _f("torch.sqrt", "torch.sqrt(x)", sp.sqrt(X), 1 / (2 * OUT), intermediates={OUT: sp.sqrt(X)},
       range=(0.0, 30.0), positive=True),
    _f("torch.rsqrt", "torch.rsqrt(x)", 1 / sp.sqrt(X), -OUT**3 / 2, intermediates={OUT: 1 / sp.sqrt(X)},
       range=(0.0, 30.0), positive=True),
    _f("torch.reciprocal", "torch.reciprocal(x)", 1 / X, -OUT**2, intermediates={OUT: 1 / X}),
    _f("torch.square", "torch.square(x)", X**2, 2 * X),
    # -- trigonometric and hyperbolic --------------------------------------------------------------
    _f("torch.sin", "torch.sin(x)", sp.sin(X), sp.cos(X), special=(_pi, _pi / 2)),
    _f("torch.cos", "torch.cos(x)", sp.cos(X), -sp.sin(X), special=(_pi, _pi / 2)),
    _f("torch.tan", "torch.tan(x)", sp.tan(X), 1 + OUT**2, intermediates={OUT: sp.tan(X)}, range=(-1.5, 1.5),
       special=(_pi / 2,)),
    _f("torch.asin", "torch.asin(x)", sp.asin(X), 1 / sp.sqrt(1 - X**2), range=(-1.0, 1.0),
       special=(sp.Integer(1), sp.Integer(-1))),
    _f("torch.acos", "torch.acos(x)", sp.acos(X), -1 / sp.sqrt(1 - X**2), range=(-1.0, 1.0),
       special=(sp.Integer(1), sp.Integer(-1))),
    _f("torch.atan", "torch.atan(x)", sp.atan(X), 1 / (X**2 + 1)),
    _f("torch.sinh", "torch.sinh(x)", sp.sinh(X), sp.cosh(X)),
    _f("torch.cosh", "torch.cosh(x)", sp.cosh(X), sp.sinh(X)),
    _f("torch.tanh", "torch.tanh(x)", sp.tanh(X), 1 - OUT**2, intermediates={OUT: sp.tanh(X)},
       saturation=((1, sp.Integer(1)), (-1, sp.Integer(-1)))),
    _f("torch.asinh", "torch.asinh(x)", sp.asinh(X), 1 / sp.sqrt(X**2 + 1)),
    _f("torch.acosh", "torch.acosh(x)", sp.acosh(X), 1 / sp.sqrt(X**2 - 1), range=(1.0, 30.0), positive=True,
       special=(sp.Integer(1),)),
    _f("torch.atanh", "torch.atanh(x)", sp.atanh(X), 1 / (1 - X**2), range=(-1.0, 1.0),
       special=(sp.Integer(1), sp.Integer(-1))),
    _f("torch.sinc", "torch.sinc(x)", sp.sin(_pi * X) / (_pi * X),
       (_pi * X * sp.cos(_pi * X) - sp.sin(_pi * X)) / (_pi * X * X), range=(-10.0, 10.0), removable=(sp.Integer(0),)),
    # -- error and gamma functions -----------------------------------------------------------------
    _f("torch.erf", "torch.erf(x)", sp.erf(X), 2 / sp.sqrt(_pi) * sp.exp(-X**2), range=(-6.0, 6.0),
       saturation=((1, sp.Integer(1)), (-1, sp.Integer(-1)))),
    _f("torch.erfc", "torch.erfc(x)", sp.erfc(X), -2 / sp.sqrt(_pi) * sp.exp(-X**2), range=(-6.0, 30.0),
       saturation=((-1, sp.Integer(2)),)),
    _f("torch.erfinv", "torch.erfinv(x)", sp.erfinv(X), sp.sqrt(_pi) / 2 * sp.exp(OUT**2),
       intermediates={OUT: sp.erfinv(X)}, range=(-1.0, 1.0), special=(sp.Integer(1), sp.Integer(-1))),
    _f("torch.lgamma", "torch.lgamma(x)", sp.loggamma(X), sp.digamma(X), range=(-10.0, 30.0),
       special=(sp.Integer(1), sp.Integer(2), sp.Integer(-1))),
    _f("torch.digamma", "torch.digamma(x)", sp.digamma(X), sp.polygamma(1, X), range=(-10.0, 30.0),
       special=(sp.Integer(1), sp.Integer(-1), sp.Rational("1.4616321449683623"))),
    _f("torch.special.ndtr", "torch.special.ndtr(x)", _Phi, _phi, range=(-40.0, 10.0),
       saturation=((1, sp.Integer(1)),)),
    _f("torch.special.ndtri", "torch.special.ndtri(x)", _sqrt2 * sp.erfinv(2 * X - 1),
       sp.sqrt(2 * _pi) * sp.exp(OUT**2 / 2), intermediates={OUT: _sqrt2 * sp.erfinv(2 * X - 1)},
       range=(0.0, 1.0), positive=True, special=(sp.Integer(1), sp.Rational(1, 2))),
    _f("torch.special.log_ndtr", "torch.special.log_ndtr(x)", sp.log(_Phi),
       sp.exp(-(OUT + X**2 / 2)) / sp.sqrt(2 * _pi), intermediates={OUT: sp.log(_Phi)}, range=(-40.0, 10.0)),
    _f("torch.special.erfcx", "torch.special.erfcx(x)", sp.exp(X**2) * sp.erfc(X),
       2 * X * OUT - 2 / sp.sqrt(_pi), intermediates={OUT: sp.exp(X**2) * sp.erfc(X)}, range=(-5.0, 100.0)),
    _f("torch.special.i0", "torch.special.i0(x)", sp.besseli(0, X), sp.besseli(1, X), range=(-30.0, 30.0)),
    _f("torch.special.i0e", "torch.special.i0e(x)",
       _pw((sp.exp(X) * sp.besseli(0, X), X < 0), (sp.exp(-X) * sp.besseli(0, X), True)),
       sp.exp(-sp.Abs(X)) * sp.besseli(1, X) - sp.sign(X) * OUT,
       intermediates={OUT: sp.exp(-sp.Abs(X)) * sp.besseli(0, X)}, corners=(sp.Integer(0),)),
    # -- activations --------------------------------------------------------------------------------
    _f("torch.sigmoid", "torch.sigmoid(x)", _sig, OUT * (1 - OUT), intermediates={OUT: _sig},
       saturation=((1, sp.Integer(1)),)),
    _f("torch.logit", "torch.logit(x)", sp.log(X / (1 - X)), 1 / (X * (1 - X)), range=(0.0, 1.0), positive=True,
       special=(sp.Integer(1), sp.Rational(1, 2))),
    _f("torch.abs", "torch.abs(x)", _pw((-X, X < 0), (X, True)), sp.sign(X), corners=(sp.Integer(0),)),
    _f("torch.relu", "torch.relu(x)", _pw((0, X <= 0), (X, True)), sp.Heaviside(X, 0), corners=(sp.Integer(0),)),
    _f("torch.nn.functional.silu", "torch.nn.functional.silu(x)", X * _sig, S * (1 + X * (1 - S)),
       intermediates={S: _sig}, derivatives={S: S * (1 - S)}),
    _f("torch.nn.functional.gelu", "torch.nn.functional.gelu(x)", X * _Phi, _Phi + X * _phi, range=(-40.0, 10.0)),
    _f("torch.nn.functional.gelu(approximate='tanh')", "torch.nn.functional.gelu(x, approximate='tanh')",
       X / 2 * (1 + sp.tanh(_gelu_inner)),
       (1 + T) / 2 + X / 2 * (1 - T**2) * _GELU_K * (1 + 3 * _GELU_C * X**2), intermediates={T: sp.tanh(_gelu_inner)},
       derivatives={T: (1 - T**2) * _GELU_K * (1 + 3 * _GELU_C * X**2)},
       range=(-40.0, 10.0)),
    _f("torch.nn.functional.softplus", "torch.nn.functional.softplus(x)", sp.log(1 + sp.exp(X)),
       sp.exp(X) / (sp.exp(X) + 1), special=(sp.Integer(20),), saturation=((-1, sp.Integer(0)),),
       intermediates={S: _sig}, backward2=_pw((S * (1 - S), X < 20), (0, True)),  # softplus_double_backward
       convention="documented: for x > threshold (default 20) softplus returns x itself, so its derivative is "
       "exactly 1 there"),
    _f("torch.nn.functional.mish", "torch.nn.functional.mish(x)", X * sp.tanh(sp.log(1 + sp.exp(X))),
       T + X * S * (1 - T**2), intermediates={T: sp.tanh(sp.log(1 + sp.exp(X))), S: _sig},
       derivatives={T: (1 - T**2) * sp.exp(X) / (sp.exp(X) + 1), S: S * (1 - S)}),
    _f("torch.nn.functional.elu", "torch.nn.functional.elu(x)", _pw((sp.exp(X) - 1, X <= 0), (X, True)),
       sp.Piecewise((sp.exp(X), X <= 0), (1, True)), corners=(sp.Integer(0),),  # elu_backward(is_result=false): exp(x)
       saturation=((-1, sp.Integer(-1)),)),
    _f("torch.nn.functional.selu", "torch.nn.functional.selu(x)",
       _SELU_SCALE * _pw((_SELU_ALPHA * (sp.exp(X) - 1), X <= 0), (X, True)),
       sp.Piecewise((_SELU_SCALE * _SELU_ALPHA * sp.exp(X), X <= 0), (_SELU_SCALE, True)),
       corners=(sp.Integer(0),)),
    _f("torch.nn.functional.celu", "torch.nn.functional.celu(x)", _pw((sp.exp(X) - 1, X <= 0), (X, True)),
       sp.Piecewise((sp.exp(X), X <= 0), (1, True)), corners=(sp.Integer(0),)),
    _f("torch.nn.functional.logsigmoid", "torch.nn.functional.logsigmoid(x)", -sp.log(1 + sp.exp(-X)),
       1 / (1 + sp.exp(X)), saturation=((1, sp.Integer(0)),),
       intermediates={S: _sig}, backward2=(S - 1) * S),  # log_sigmoid_double_backward: (z − 1)·z, z = sigmoid(x)
    _f("torch.nn.functional.softsign", "torch.nn.functional.softsign(x)", _pw((X / (1 - X), X < 0), (X / (1 + X), True)),
       1 / (1 + sp.Abs(X)) - X * sp.sign(X) / (1 + sp.Abs(X))**2, corners=(sp.Integer(0),)),
    _f("torch.nn.functional.tanhshrink", "torch.nn.functional.tanhshrink(x)", X - sp.tanh(X),
       # x − tanh(x) by autograd: 1 + (−tanh_backward) = 1 − (1 − t²), kept unevaluated (SymPy would make it t²)
       sp.Add(1, sp.Mul(-1, sp.Add(1, -T**2, evaluate=False), evaluate=False), evaluate=False),
       intermediates={T: sp.tanh(X)}, derivatives={T: 1 - T**2}),
    _f("torch.nn.functional.hardtanh", "torch.nn.functional.hardtanh(x)", _pw((-1, X < -1), (X, X <= 1), (1, True)),
       _pw((0, X < -1), (1, X <= 1), (0, True)), corners=(sp.Integer(-1), sp.Integer(1))),
    _f("torch.nn.functional.relu6", "torch.nn.functional.relu6(x)", _pw((0, X < 0), (X, X <= 6), (6, True)),
       _pw((0, X < 0), (1, X <= 6), (0, True)), corners=(sp.Integer(0), sp.Integer(6))),
    _f("torch.nn.functional.hardsigmoid", "torch.nn.functional.hardsigmoid(x)",
       _pw((0, X < -3), (X / 6 + sp.Rational(1, 2), X <= 3), (1, True)),
       _pw((0, X < -3), (sp.Rational(1, 6), X <= 3), (0, True)),
       corners=(sp.Integer(-3), sp.Integer(3))),
    _f("torch.nn.functional.hardswish", "torch.nn.functional.hardswish(x)",
       _pw((0, X < -3), (X * (X + 3) / 6, X <= 3), (X, True)),
       _pw((0, X < -3), (X / 3 + sp.Rational(1, 2), X <= 3), (1, True)),
       corners=(sp.Integer(-3), sp.Integer(3))),
    _f("torch.nn.functional.leaky_relu", "torch.nn.functional.leaky_relu(x)",
       _pw((X / 100, X < 0), (X, True)), _pw((sp.Rational(1, 100), X < 0), (1, True)), corners=(sp.Integer(0),)),
    # -- two arguments ---------------------------------------------------------------------------
    AuditFunction(name="torch.xlogy", call="torch.xlogy(x, y)", args=(X, Y),
                  definition=_pw((0, sp.Eq(X, 0)), (X * sp.log(Y), True)),
                  backward={"x": sp.log(Y), "y": X / Y}, range=(0.0, 30.0), second_order=False,
                  convention="documented: xlogy(0, y) = 0 for every y, NaN included"),
    AuditFunction(name="torch.special.xlog1py", call="torch.special.xlog1py(x, y)", args=(X, Y),
                  definition=_pw((0, sp.Eq(X, 0)), (X * sp.log(1 + Y), True)),
                  backward={"x": sp.log(1 + Y), "y": X / (1 + Y)}, range=(-1.0, 30.0), second_order=False,
                  convention="documented: xlog1py(0, y) = 0 for every y, NaN included"),
    AuditFunction(name="torch.atan2", call="torch.atan2(x, y)", args=(X, Y), definition=sp.atan2(X, Y),
                  backward={"x": Y / (X**2 + Y**2), "y": -X / (X**2 + Y**2)}, second_order=False),
    AuditFunction(name="torch.hypot", call="torch.hypot(x, y)", args=(X, Y), definition=sp.sqrt(X**2 + Y**2),
                  backward={"x": X / OUT, "y": Y / OUT}, intermediates={OUT: sp.sqrt(X**2 + Y**2)},
                  second_order=False),
)

BY_NAME: dict[str, AuditFunction] = {f.name: f for f in FUNCTIONS}


def select(names: list[str] | None) -> list[AuditFunction]:
    """The rows named (as called, or by their last component: `sigmoid`, `silu`), in table order.

    >>> [f.name for f in select(["sigmoid", "torch.exp2"])]
    ['torch.exp2', 'torch.sigmoid']
    """
    if not names:
        return list(FUNCTIONS)
    wanted: set[str] = set()
    for n in names:
        hits = [f.name for f in FUNCTIONS if n in (f.name, short_name(f))]
        if not hits:
            raise KeyError(n)
        wanted.update(hits)
    return [f for f in FUNCTIONS if f.name in wanted]


def short_name(f: AuditFunction) -> str:
    """``sigmoid`` for ``torch.sigmoid``, ``gelu`` for both GELUs."""
    return f.name.split("(")[0].rsplit(".", 1)[-1]
