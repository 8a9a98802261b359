"""Exact second derivatives: Hessian rows and Hessian-vector products of a scalar function.

This is the one place the rest of gradcheck_sym asks for exact higher-order quantities, so that
its body can be replaced by the engine's (the gradient emitted as IR and differentiated again)
without touching the callers.  What goes in and what comes out:

* in: a scalar SymPy expression ``f`` over ``variables`` (a model's loss, one output of an
  operator, or ``Σ c_o f_o`` for a cotangent ``c``: `scalarize`), the entries differentiated
  (``wrt``), and points as ``{symbol: Fraction or float}`` (a float is taken at its exact binary
  value);
* out: an `ExactTable` per quantity: for each point a `reference.PointReference` whose ``loss``
  is a first derivative (``∂f/∂w_i``, or ``∇f·v``) and whose ``grads`` are the second
  derivatives (``∂²f/∂w_i∂w_j`` for every ``j``, or ``(Hv)_j``), each an `ExactValue` (a value,
  *nondifferentiable* with both one-sided values, or *undefined*), and the rounding-error scale
  of each of them in units of ``u`` (`compare.error_scale` of `errorbound`'s sizes), the same
  scale the first-order checks use.

**The stand-in.**  Today the first derivatives are built as SymPy expressions by reverse
accumulation over the expression DAG (`gradient_expressions`: shared subexpressions stay shared
and nothing is simplified, so the size is linear in the loss's DAG, unlike ``sympy.diff`` of the
whole loss per weight); each one, or ``Σ v_i ∂f/∂w_i`` for an HVP, is then handed to the existing
first-order machinery (`symbolic.gradient_program`, `reference.reference_at`,
`errorbound.error_scales_batch`), which differentiates it once more, exactly.  Functions with
corners are rewritten to ``Piecewise`` first (`functions.rewrite_kink`), and the adjoint of a
``Piecewise`` flows only into the branch its conditions select, so kinks keep working:
``∂²|w|/∂w²`` at 0 is *undefined* (the first derivative jumps), ``∂²(w·|w|)/∂w²`` at 0 is
*nondifferentiable* with left −2 and right 2.

Where a first derivative itself does not exist (a corner along that entry), its row of second
derivatives is *undefined* (the programs would otherwise differentiate the branch they pick).

What it cannot do: removable singularities at second order (``sin(x)/x`` at 0) come out
*undefined* (no ``sympy.limit`` fallback here); an undefined condition of a ``Piecewise``
makes the adjoint undefined where first-order reverse accumulation would skip a dead branch; the
error scales are those of this program, not of torch's double backward.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

import sympy as sp
import torch
from flint import fmpq

from .compare import error_scale
from .errorbound import error_scales_batch
from .functions import FUNCTIONS, rewrite_kink
from .graph import walk
from .reference import ExactValue, PointReference, reference_at
from .symbolic import GradientProgram, gradient_program

Point = Mapping[sp.Symbol, Fraction | float]


@dataclass(frozen=True)
class ExactTable:
    """One first derivative (or ``∇f·v``) and its partials at each point, exactly."""

    refs: tuple[PointReference, ...]  # per point: .loss the first derivative, .grads[j] ∂/∂wrt[j]
    scale: torch.Tensor  # (points, 1 + len(wrt)): rounding-error scale in units of u


# -- first derivatives as SymPy expressions ----------------------------------------------------

ZERO, ONE = sp.S.Zero, sp.S.One


def _rebuild(node: sp.Basic, args: tuple[sp.Basic, ...]) -> sp.Basic:
    """``node`` with new arguments, without SymPy's automatic simplification where it allows."""
    try:
        return node.func(*args, evaluate=False)
    except TypeError:
        return node.func(*args)


def _substitute(expr: sp.Basic, mapping: Mapping[sp.Basic, sp.Basic]) -> sp.Basic:
    """``expr.xreplace(mapping)``, rebuilding unevaluated (no assumption queries on large args)."""
    done: dict[sp.Basic, sp.Basic] = {}
    for node in walk(expr, lambda e: () if e in mapping else e.args):
        if node in mapping:
            done[node] = mapping[node]
        elif node.args:
            args = tuple(done[a] for a in node.args)
            done[node] = node if all(a is b for a, b in zip(args, node.args)) else _rebuild(node, args)
        else:
            done[node] = node
    return done[expr]


def without_kinks(expr: sp.Expr) -> sp.Expr:
    """``expr`` with ``Abs``, ``sign``, ``Max``, ``Min``, ``Heaviside`` as ``Piecewise``."""
    done: dict[sp.Basic, sp.Basic] = {}
    for node in walk(expr, lambda e: e.args):
        args = tuple(done[a] for a in node.args)
        new = node if all(a is b for a, b in zip(args, node.args)) else _rebuild(node, args)
        if type(new) in FUNCTIONS and FUNCTIONS[type(new)].kink:
            new = rewrite_kink(new)
        done[node] = new
    return done[expr]  # type: ignore[return-value]


def _mul(*factors: sp.Basic) -> sp.Basic:
    fs = [f for f in factors if f != ONE]
    if any(f == ZERO for f in fs):
        return ZERO
    if not fs:
        return ONE
    return fs[0] if len(fs) == 1 else sp.Mul(*fs, evaluate=False)


def _add(terms: Sequence[sp.Basic]) -> sp.Basic:
    ts = [t for t in terms if t != ZERO]
    if not ts:
        return ZERO
    return ts[0] if len(ts) == 1 else sp.Add(*ts, evaluate=False)


def _pow(base: sp.Basic, e: sp.Basic) -> sp.Basic:
    if e == ZERO:
        return ONE
    if e == ONE:
        return base
    return sp.Pow(base, e, evaluate=False)


_VALUE = sp.Dummy("value", real=True)


@lru_cache(maxsize=None)
def _template(f: type, nargs: int, i: int) -> tuple[sp.Basic, tuple[sp.Dummy, ...]]:
    """``∂f(d0, d1, ...)/∂di`` over dummies, with ``f(d...)`` itself replaced by ``_VALUE``."""
    ds = tuple(sp.Dummy(f"d{j}", real=True) for j in range(nargs))
    applied = f(*ds)
    return without_kinks(sp.diff(applied, ds[i]).xreplace({applied: _VALUE})), ds


def _children(node: sp.Basic) -> tuple[sp.Basic, ...]:
    """The arguments an adjoint flows into (never a Piecewise's conditions)."""
    if isinstance(node, sp.Piecewise):
        return tuple(pair.expr for pair in node.args)
    if isinstance(node, sp.Pow) and node.exp.is_Rational:
        return (node.base,)
    if isinstance(node, (sp.Symbol, sp.Number, sp.NumberSymbol)) or not isinstance(node, sp.Expr):
        return ()
    return node.args


def gradient_expressions(expr: sp.Expr, wrt: Sequence[sp.Symbol]) -> list[sp.Expr]:
    """``[∂expr/∂w for w in wrt]`` as SymPy expressions, by reverse accumulation over the DAG of
    ``expr`` (kinks rewritten to ``Piecewise``).  Linear in the DAG's size; nothing simplified.

    >>> x, w = sp.symbols("x w", real=True)
    >>> g, = gradient_expressions((x*w - 1)**2, [w])
    >>> sp.expand(g - sp.diff((x*w - 1)**2, w))
    0
    """
    root = without_kinks(expr)
    order = list(walk(root, _children))
    targets = set(wrt)
    active: dict[sp.Basic, bool] = {}
    for node in order:
        active[node] = node in targets or any(active[c] for c in _children(node))
    contributions: dict[sp.Basic, list[sp.Basic]] = {root: [ONE]}
    adjoint: dict[sp.Basic, sp.Basic] = {}

    def add(node: sp.Basic, term: sp.Basic) -> None:
        if active[node] and term != ZERO:
            contributions.setdefault(node, []).append(term)

    for node in reversed(order):
        if not active[node] or node not in contributions:
            continue
        a = adjoint[node] = _add(contributions.pop(node))
        if isinstance(node, sp.Symbol):
            continue
        if isinstance(node, sp.Add):
            for arg in node.args:
                add(arg, a)
        elif isinstance(node, sp.Mul):
            args = node.args
            for i, arg in enumerate(args):
                add(arg, _mul(a, *args[:i], *args[i + 1 :]))
        elif isinstance(node, sp.Pow):
            b, e = node.args
            add(b, _mul(a, e, _pow(b, e - 1) if e.is_Rational else _pow(b, _add([e, -ONE]))))
            if not e.is_Rational:
                add(e, _mul(a, node, sp.log(b, evaluate=False)))
        elif isinstance(node, sp.Piecewise):
            pairs = node.args
            for j, pair in enumerate(pairs):
                if pair.cond is sp.true and j == 0:
                    add(pair.expr, a)
                    continue
                selected = [(ZERO, p.cond) for p in pairs[:j]] + [(a, pair.cond), (ZERO, sp.true)]
                add(pair.expr, sp.Piecewise(*selected, evaluate=False))
        elif type(node) in FUNCTIONS:
            for i, arg in enumerate(node.args):
                template, ds = _template(type(node), len(node.args), i)  # type: ignore[arg-type]
                local = _substitute(template, {**dict(zip(ds, node.args)), _VALUE: node})
                add(arg, _mul(a, local))
        else:  # pragma: no cover - the model's validation admits nothing else with an adjoint
            raise AssertionError(f"no derivative rule for {type(node).__name__}")
    return [adjoint.get(w, ZERO) for w in wrt]  # type: ignore[misc]


def scalarize(outputs: Sequence[sp.Expr], cotangent: Sequence[Fraction | int]) -> sp.Expr:
    """``Σ c_o f_o``: the scalar whose gradient is the vector-Jacobian product with ``c``."""
    return _add([_mul(sp.Rational(c.numerator, c.denominator) if isinstance(c, Fraction) else sp.Integer(c), f)
                 for c, f in zip(cotangent, outputs) if c != 0])  # type: ignore[return-value]


# -- exact tables --------------------------------------------------------------------------------


class SecondOrder:
    """The exact second derivatives of one scalar ``f`` w.r.t. ``wrt``, compiled lazily.

    >>> x, w = sp.symbols("x w", real=True)
    >>> so = SecondOrder((x*w - 1)**3, (x, w), (w,))
    >>> [str(r.grads[0].value) for r in so.hessian_rows([{x: Fraction(2), w: Fraction(1)}])[0].refs]
    ['24']
    """

    def __init__(self, f: sp.Expr, variables: tuple[sp.Symbol, ...], wrt: tuple[sp.Symbol, ...], *,
                 model: str = "") -> None:
        self.f, self.variables, self.wrt, self.model = f, variables, wrt, model
        self._grads: list[sp.Expr] | None = None
        self._programs: dict[Any, GradientProgram] = {}

    @property
    def first(self) -> list[sp.Expr]:
        if self._grads is None:
            self._grads = gradient_expressions(self.f, self.wrt)
        return self._grads

    def _program(self, key: Any, expr: sp.Expr) -> GradientProgram:
        if key not in self._programs:
            self._programs[key] = gradient_program(sp.sympify(expr), self.variables, self.wrt, model=self.model)
        return self._programs[key]

    def hessian_rows(self, points: Sequence[Point], factor: float = 1.0) -> list[ExactTable]:
        """Row ``i``: ``∂f/∂wrt[i]`` and ``∂²f/∂wrt[i]∂wrt[j]`` for every ``j``, at each point."""
        missing = self._missing_first(points)
        return [_table(self._program(("row", i), g), self.variables, points, factor,
                       [m[i] for m in missing]) for i, g in enumerate(self.first)]

    def hvp(self, vector: Sequence[Fraction], points: Sequence[Point], factor: float = 1.0) -> ExactTable:
        """``∇f·v`` and the Hessian-vector product ``Hv`` at each point."""
        key = ("hvp", tuple(vector))
        if key not in self._programs:
            self._program(key, scalarize(self.first, vector))
        missing = self._missing_first(points)
        gone = [next((r for r, c in zip(m, vector) if r and c), "") for m in missing]
        return _table(self._programs[key], self.variables, points, factor, gone)

    def _missing_first(self, points: Sequence[Point]) -> list[list[str]]:
        """Per point and entry: why the first derivative does not exist there ("" where it does).
        The programs above pick one branch at a corner, so a first derivative that is only
        one-sided would otherwise get derivatives of its own."""
        gp = self._program("first", self.f)
        out = []
        for p in points:
            ref = reference_at(gp, [_fmpq(p[s]) for s in self.variables], rational=gp.maybe_rational)
            out.append([
                "" if g.is_value else f"∂/∂{w} itself does not exist here ({g.kind}: {g.reason}), so neither "
                "do its derivatives" for w, g in zip(self.wrt, ref.grads)
            ])
        return out


def second_order(f: sp.Expr, variables: tuple[sp.Symbol, ...], wrt: tuple[sp.Symbol, ...], *, cache: Any = None,
                 model: str = "") -> SecondOrder:
    """A `SecondOrder` for ``f``, kept in ``cache`` (a dict, e.g. on the model) between runs."""
    if cache is None:
        return SecondOrder(f, variables, wrt, model=model)
    key = (f, variables, wrt)
    if key not in cache:
        cache[key] = SecondOrder(f, variables, wrt, model=model)
    return cache[key]  # type: ignore[no-any-return]


def _fmpq(x: Fraction | float) -> fmpq:
    return fmpq(*Fraction(x).as_integer_ratio())


def _table(gp: GradientProgram, variables: tuple[sp.Symbol, ...], points: Sequence[Point], factor: float,
           missing: Sequence[str]) -> ExactTable:
    rows = [tuple(float(p[s]) for s in variables) for p in points]
    es = error_scales_batch(gp, rows)
    scale = factor * error_scale(es.worst, es.probable)
    worst = es.worst.tolist()
    refs = []
    for k, p in enumerate(points):
        ref = reference_at(gp, [_fmpq(p[s]) for s in variables], scales=worst[k], rational=gp.maybe_rational)
        if missing[k]:
            gone = ExactValue("undefined", reason=missing[k])
            ref = dataclasses.replace(ref, loss=gone, grads=tuple(gone for _ in ref.grads))
        refs.append(ref)
    return ExactTable(refs=tuple(refs), scale=scale)
