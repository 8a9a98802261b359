"""Exact arithmetic for the reference: rationals, or certified balls.

Two interchangeable number systems with the same methods:

* `Rationals` (python-flint ``fmpq``): exact.  Anything that leaves the rationals (``exp``,
  ``pi``, an irrational root) or is undefined (division by zero) raises `NotRational`, and the
  caller starts again with balls.
* `Balls` (python-flint ``arb``): every value is an interval proven to contain the true value.
  Undefined values (``log(-1)``, ``1/0``) are NaN balls.  When a ball is too wide to tell
  whether a denominator or a comparison is zero, `NeedPrecision` asks the caller to raise the
  working precision; at the final precision the question is settled conservatively instead.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import sympy as sp
from flint import arb, fmpq, fmpz



class NotRational(Exception):
    """The value is not a rational number: evaluate with balls instead."""


class NeedPrecision(Exception):
    """A ball is too wide to decide a sign or a domain: raise the precision."""


def to_fmpq(q: Fraction | sp.Rational) -> fmpq:
    if isinstance(q, Fraction):
        return fmpq(q.numerator, q.denominator)
    return fmpq(int(q.p), int(q.q))


def _exact_root(q: fmpq, n: int) -> fmpq | None:
    """The rational n-th root of q >= 0 if there is one."""
    p, d = fmpz(q.p), fmpz(q.q)
    rp, rd = p.root(n), d.root(n)
    if rp**n == p and rd**n == d:
        return fmpq(rp, rd)
    return None


_FN_AT_ZERO: dict[tuple[str, object], fmpq | None] = {}


def _fn_at_zero(spec: Any, data: object) -> fmpq | None:
    key = (spec.name, data)
    if key not in _FN_AT_ZERO:
        try:
            f = spec.sympy[0]
            v = f(sp.Integer(data), sp.Integer(0)) if data is not None else f(sp.Integer(0))
        except (TypeError, ValueError):  # functions of several arguments
            v = None
        _FN_AT_ZERO[key] = to_fmpq(v) if isinstance(v, sp.Rational) else None
    return _FN_AT_ZERO[key]


class Rationals:
    """Exact rational arithmetic; raises `NotRational` when the value leaves the rationals."""

    name = "rational"
    zero = fmpq(0)
    one = fmpq(1)

    def const(self, c: Any) -> Any:
        if isinstance(c, bool):
            return c
        if isinstance(c, sp.Rational):
            return to_fmpq(c)
        if isinstance(c, sp.Float):
            return to_fmpq(sp.Rational(c))
        raise NotRational

    def var(self, q: fmpq) -> fmpq:
        return q

    def pow(self, x: fmpq, e: sp.Rational) -> fmpq:
        p, q = int(e.p), int(e.q)  # Python ints: comparing a SymPy number costs a sympify each time
        if q == 1:
            if x == 0 and p < 0:
                raise NotRational
            return x ** p
        if x < 0:
            raise NotRational
        if x == 0:
            if p > 0:
                return fmpq(0)
            raise NotRational
        root = _exact_root(x, q)
        if root is None:
            raise NotRational
        return root ** p

    def inv(self, x: fmpq) -> fmpq:
        """``pow(x, -1)``."""
        if x == 0:
            raise NotRational
        return 1 / x

    def powv(self, b: fmpq, e: fmpq) -> fmpq:
        if e.q == 1:
            return self.pow(b, sp.Integer(int(e.p)))
        raise NotRational

    def fn(self, spec: Any, xs: list[fmpq], data: object = None) -> fmpq:
        """A registry function (`ir.functions.function`) at rational arguments: rational only where
        SymPy says so at 0 (``sin(0)``, ``atan(0)``) and for ``log(1)``."""
        if len(xs) == 1 and xs[0] == 0:
            v = _fn_at_zero(spec, data)
            if v is not None:
                return v
        if spec.sympy[0] is sp.log and len(xs) == 1 and xs[0] == 1:
            return fmpq(0)
        raise NotRational

    def nan(self) -> fmpq:
        raise NotRational  # rationals cannot hold an undefined value; balls (NaN) can

    def compare(self, x: fmpq, y: fmpq) -> int | None:
        return (x > y) - (x < y)

    def undefined(self, x: Any) -> bool:
        return False

    def sign(self, x: fmpq) -> int:
        return (x > 0) - (x < 0)


def _ipow(x: arb, n: int) -> arb:
    """x**n for n >= 0 by squaring (arb's own power is NaN for balls that contain zero); no
    multiplication by an exact 1 (which widens a radius by a rounding of its own)."""
    result: arb | None = None
    while n:
        if n & 1:
            result = x if result is None else result * x
        n >>= 1
        if n:
            x = x * x
    return arb(1) if result is None else result


class Balls:
    """Ball arithmetic (arb) at the working precision ``flint.ctx.prec``.

    ``final`` is set at the highest precision tried: undecidable signs are then taken as zero
    (the point is treated as on the boundary) and undecidable denominators as undefined.
    """

    name = "ball"
    zero = arb(0)
    one = arb(1)

    def __init__(self, *, final: bool = False) -> None:
        self.final = final

    def const(self, c: Any) -> Any:
        if isinstance(c, bool):
            return c
        if isinstance(c, sp.Rational):
            return arb(to_fmpq(c))
        if isinstance(c, sp.Float):
            return arb(to_fmpq(sp.Rational(c)))
        if c is sp.pi:
            return arb.pi()
        if c is sp.E:
            return arb.const_e()
        if c is sp.EulerGamma:
            return arb.const_euler()
        if c is sp.Catalan:
            return arb.const_catalan()
        raise AssertionError(f"constant {c} passed compile_expr")

    def var(self, q: fmpq) -> arb:
        return arb(q)

    def _zero_or_not(self, x: arb) -> bool | None:
        """True: exactly zero; False: certainly nonzero; None: cannot tell."""
        if x.is_zero():
            return True
        if not x.contains(0):
            return False
        if self.final:
            return True
        raise NeedPrecision

    def pow(self, x: arb, e: sp.Rational) -> arb:
        if not x.is_finite():
            return arb.nan()
        p, q = int(e.p), int(e.q)  # Python ints: comparing a SymPy number costs a sympify each time
        if q == 1:
            if p < 0:
                return arb.nan() if self._zero_or_not(x) else 1 / _ipow(x, -p)
            return _ipow(x, p)
        if x > 0:
            return x.root(q) ** p
        if x < 0:
            return arb.nan()  # SymPy's x**(p/q) for x < 0 is not real
        if self._zero_or_not(x):
            return arb(0) if p > 0 else arb.nan()
        return arb.nan()  # pragma: no cover  (unreachable: _zero_or_not raised or returned)

    def inv(self, x: arb) -> arb:
        """``pow(x, -1)``."""
        if not x.is_finite() or self._zero_or_not(x):
            return arb.nan()
        return 1 / x

    def powv(self, b: arb, e: arb) -> arb:
        if not (b.is_finite() and e.is_finite()):
            return arb.nan()
        if e.is_exact() and e.is_integer():
            return self.pow(b, sp.Integer(int(e.unique_fmpz())))  # type: ignore[arg-type]
        if b > 0:
            return (e * b.log()).exp()
        if b < 0:
            return arb.nan()
        if self._zero_or_not(b):
            if e > 0:
                return arb(0)
            if e <= 0:
                return arb.nan()
            if self.final:
                return arb.nan()
            raise NeedPrecision
        return arb.nan()  # pragma: no cover

    def nan(self) -> arb:
        return arb.nan()

    def fn(self, spec: Any, xs: list[arb], data: object = None) -> arb:
        """A registry function (`ir.functions.function`): NaN outside its real domain or at a pole."""
        for x in xs:
            if not x.is_finite():
                return arb.nan()
        if spec.domain is not None:
            inside = spec.domain(xs[0])
            if inside is False:
                return arb.nan()
            if inside is None and not self.final:
                raise NeedPrecision
        y: arb = spec.arb(xs, data)
        if y.is_finite():
            return y
        if all(x.is_exact() for x in xs) or self.final:
            return arb.nan()  # a pole or the edge of the domain
        raise NeedPrecision

    def compare(self, x: arb, y: arb) -> int | None:
        if not (x.is_finite() and y.is_finite()):
            return None
        return self.sign(x - y)

    def sign(self, d: arb) -> int:
        if d > 0:
            return 1
        if d < 0:
            return -1
        if d.is_zero() or self.final:
            return 0
        raise NeedPrecision

    def undefined(self, x: Any) -> bool:
        return isinstance(x, arb) and not x.is_finite()
