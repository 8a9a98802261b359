"""SymPy spellings of torch functions that SymPy lacks or names differently.

Declare a model with these where it calls the torch function of the same meaning:

* `xlogy` (``torch.special.xlogy``) and `xlog1py` (``torch.special.xlog1py``): ``x·log(y)`` and
  ``x·log(1 + y)``, **0 where x = 0, whatever y** (torch's semantics);
* `normalized_sinc` (``torch.special.sinc``, ``numpy.sinc``): ``sin(πx)/(πx)``, 1 at 0.  SymPy's
  own ``sympy.sinc`` is the *unnormalised* ``sin(x)/x``; both are supported, and they differ;
* `softplus` (``torch.nn.functional.softplus``): ``log(1 + exp(βx))/β``, optionally with torch's
  ``threshold`` (above it torch returns ``x`` itself, a jump of about ``exp(-threshold)``).

Everything else SymPy already spells the way torch does: ``sympy.erfinv``, ``sympy.floor``,
``sympy.ceiling``, ``sympy.frac`` (``x - floor(x)``, which is *not* ``torch.frac`` for negative x:
torch's is ``x - trunc(x)``), ``sympy.loggamma``, ``sympy.polygamma``/``digamma``,
``sympy.codegen.cfunctions.log1p``/``expm1``; ``log(1 + exp(u))`` and ``log1p(exp(u))`` are
recognised as softplus and lowered to torch stably.

>>> import sympy as sp
>>> x, y = sp.symbols("x y", real=True)
>>> xlogy(0, y), normalized_sinc(0)
(0, 1)
"""

from __future__ import annotations

import sympy as sp
from sympy.codegen.cfunctions import log1p

__all__ = ["normalized_sinc", "softplus", "xlog1py", "xlogy"]


class xlogy(sp.Function):  # noqa: N801 - SymPy function classes are named as users write them
    """``x·log(y)``, and 0 where ``x = 0`` whatever ``y`` (``torch.special.xlogy``).

    Its derivative w.r.t. ``y`` is ``x/y``, 0 where ``x = 0``; w.r.t. ``x`` it is ``log(y)``
    (also at ``x = 0``: the function is ``x·log(y)`` on a neighbourhood when ``y > 0``), and
    undefined where ``y <= 0``.  torch returns 0 for ∂/∂x at ``x = 0`` (and NaN for ∂/∂y at
    ``x = y = 0``); gradcheck_sym reports those as what they are."""

    nargs = 2

    @classmethod
    def eval(cls, x: sp.Expr, y: sp.Expr) -> sp.Expr | None:
        if x.is_zero:
            return sp.S.Zero
        if y == 1:
            return sp.S.Zero
        return None

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        x, y = self.args
        return sp.log(y) if argindex == 1 else x / y

    def _eval_rewrite_as_log(self, x: sp.Expr, y: sp.Expr, **kwargs: object) -> sp.Expr:
        return sp.Piecewise((0, sp.Eq(x, 0)), (x * sp.log(y), True))

    def _eval_evalf(self, prec: int) -> sp.Expr | None:
        x, y = self.args
        return (x * sp.log(y))._eval_evalf(prec) if not x.is_zero else sp.S.Zero


class xlog1py(sp.Function):  # noqa: N801
    """``x·log(1 + y)``, and 0 where ``x = 0`` whatever ``y`` (``torch.special.xlog1py``); its
    derivatives as `xlogy`'s with ``1 + y`` for ``y``."""

    nargs = 2

    @classmethod
    def eval(cls, x: sp.Expr, y: sp.Expr) -> sp.Expr | None:
        if x.is_zero or y.is_zero:
            return sp.S.Zero
        return None

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        x, y = self.args
        return log1p(y) if argindex == 1 else x / (1 + y)

    def _eval_rewrite_as_log(self, x: sp.Expr, y: sp.Expr, **kwargs: object) -> sp.Expr:
        return sp.Piecewise((0, sp.Eq(x, 0)), (x * sp.log(1 + y), True))

    def _eval_evalf(self, prec: int) -> sp.Expr | None:
        x, y = self.args
        return (x * sp.log(1 + y))._eval_evalf(prec) if not x.is_zero else sp.S.Zero


class normalized_sinc(sp.Function):  # noqa: N801
    """``sin(πx)/(πx)``, 1 at 0 (``torch.special.sinc``, ``numpy.sinc``); SymPy's ``sinc`` is
    ``sin(x)/x``, so ``normalized_sinc(x) == sympy.sinc(pi*x)``."""

    nargs = 1

    @classmethod
    def eval(cls, x: sp.Expr) -> sp.Expr | None:
        if x.is_zero:
            return sp.S.One
        if x.is_Integer:
            return sp.S.Zero
        return None

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        x = self.args[0]
        return (sp.cos(sp.pi * x) - normalized_sinc(x)) / x  # 0/0 at 0: the compiled derivative has 0 there

    def _eval_rewrite_as_sinc(self, x: sp.Expr, **kwargs: object) -> sp.Expr:
        return sp.sinc(sp.pi * x)

    def _eval_rewrite_as_sin(self, x: sp.Expr, **kwargs: object) -> sp.Expr:
        return sp.Piecewise((1, sp.Eq(x, 0)), (sp.sin(sp.pi * x) / (sp.pi * x), True))

    def _eval_evalf(self, prec: int) -> sp.Expr | None:
        return sp.sinc(sp.pi * self.args[0])._eval_evalf(prec)

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real


def softplus(x: sp.Expr, beta: float | sp.Expr = 1, threshold: float | sp.Expr | None = None) -> sp.Expr:
    """``torch.nn.functional.softplus(x, beta, threshold)`` as SymPy.

    Without ``threshold``: the smooth ``log(1 + exp(βx))/β`` (evaluated exactly, lowered to torch
    stably).  With it: torch's function, which returns ``x`` itself where ``βx > threshold``; that
    is a jump of ``log(1 + exp(-threshold))/β`` (2e-9 at torch's default 20), so the derivative
    at the threshold is undefined and above it is exactly 1.

    >>> x = sp.Symbol("x", real=True)
    >>> softplus(x)
    log(exp(x) + 1)
    """
    beta = sp.sympify(beta)
    smooth = sp.log(1 + sp.exp(beta * x)) / beta
    if threshold is None:
        return smooth
    return sp.Piecewise((x, beta * x > sp.sympify(threshold)), (smooth, True))
