"""`Model`: a loss declared once in SymPy, with its weights, data, domain and points.

Everything about a declaration is checked when the `Model` is built, so a mistake is reported
where it was made, with the model's name, and never later from inside SymPy or torch.
"""

from __future__ import annotations

import keyword
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Union

import sympy as sp

from .errors import ModelError
from .graph import compile_expr, free_symbols, walk

Number = Union[int, float, Fraction, sp.Rational, sp.Float]
Bounds = tuple[Number, Number]

_ENTRY = re.compile(r"^(?P<name>.+)\[(?P<i>\d+),(?P<j>\d+)\]$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
ALL_OTHERS = "*"  # a domain key that covers every symbol not listed


def matrix(name: str, shape: int | tuple[int, int]) -> sp.ImmutableMatrix:
    """A matrix of real symbols for an array-shaped weight or input.

    Entries are named ``name[i,j]``; an implementation receives the whole array as one tensor of
    this shape.  An int ``n`` means a column vector of shape ``(n, 1)``.

    >>> W1 = matrix("W1", (2, 3))
    >>> W1.shape, str(W1[1, 2])
    ((2, 3), 'W1[1,2]')
    """
    rows, cols = (shape, 1) if isinstance(shape, int) else shape
    if not (isinstance(rows, int) and isinstance(cols, int) and rows > 0 and cols > 0):
        raise ModelError(f"matrix `{name}`: shape must be positive ints (rows, cols), got {shape!r}")
    return sp.ImmutableMatrix(
        rows, cols, [sp.Symbol(f"{name}[{i},{j}]", real=True) for i in range(rows) for j in range(cols)]
    )


@dataclass(frozen=True)
class Variable:
    """A declared weight or input: a scalar symbol, or a matrix of them."""

    name: str  # the symbol's name, or the matrix's name (``W1``)
    shape: tuple[int, ...]  # () for a scalar
    symbols: tuple[sp.Symbol, ...]  # row-major
    role: str  # "param" or "input"

    @property
    def size(self) -> int:
        return len(self.symbols)

    def index(self, k: int) -> tuple[int, ...]:
        """The array index of the ``k``-th entry (``()`` for a scalar)."""
        return () if not self.shape else divmod(k, self.shape[1])

    def entry_name(self, k: int) -> str:
        return self.name if not self.shape else str(self.symbols[k])


@dataclass(frozen=True)
class Entry:
    """One scalar that a gradient is taken for: a variable and an index into it."""

    variable: Variable
    k: int  # position in variable.symbols

    @property
    def symbol(self) -> sp.Symbol:
        return self.variable.symbols[self.k]

    @property
    def name(self) -> str:
        return self.variable.entry_name(self.k)

    @property
    def index(self) -> tuple[int, ...]:
        return self.variable.index(self.k)


class Model:
    """A loss declared once, as a SymPy expression, with the weights to differentiate.

    >>> x, y, w = sp.symbols("x y w", real=True)
    >>> linear = Model(name="linear", loss=(x*w - y)**2, params=[w], inputs=[x, y],
    ...                domain={x: (-4, 4), y: (-4, 4), w: (-2, 2)})
    >>> linear.n_params
    1

    * ``params``: symbols or `matrix` weights that gradients are taken for;
    * ``inputs``: data held fixed (``input_grads=True`` checks their gradients too);
    * ``domain``: ``{symbol, matrix or name: (low, high)}`` for seeded random points; the key
      ``"*"`` covers every symbol not listed;
    * ``points``: explicit points ``[{symbol, matrix or name: value}]`` (no domain needed);
    * ``impl``: ``impl(**tensors) -> loss tensor``, a torch implementation to check;
    * ``grad_impl``: ``grad_impl(**tensors) -> {name: gradient}``, a hand-written gradient;
    * ``dtypes``: the float dtypes this model is checked in (default: every one a run asks for);
      a run's ``--dtypes`` is intersected with it;
    * ``description``, ``notes`` (Markdown) and ``latex`` (the loss as you would typeset it, for
      models too large for SymPy's own LaTeX) go into the reports.

    An **operator** (a function with several outputs, such as a custom ``torch.autograd.Function``)
    gives ``outputs=sp.Matrix([...])`` instead of ``loss=``; its ``impl`` returns a tensor with
    the outputs' entries (shape ``(m,)``, ``(m, 1)`` or the matrix's shape), and its Jacobian is
    checked through VJPs (unit and seeded random cotangents) and JVPs.
    """

    def __init__(
        self,
        *,
        name: str,
        loss: Any = None,
        params: Any,
        outputs: Any = None,
        inputs: Any = (),
        domain: Mapping[Any, Bounds] | None = None,
        points: Sequence[Mapping[Any, Any]] | None = None,
        impl: Callable[..., Any] | None = None,
        grad_impl: Callable[..., Any] | None = None,
        input_grads: bool = False,
        description: str = "",
        notes: Sequence[str] = (),
        latex: str = "",
        dtypes: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(name, str) or not _MODEL_NAME.match(name):
            raise ModelError(
                f"model name {name!r} must be a non-empty string of letters, digits, `_`, `.` or "
                "`-` (it names the report file)"
            )
        self.name = name
        if (loss is None) == (outputs is None):
            raise ModelError(
                f"model `{name}`: give exactly one of `loss=` (a scalar expression) and `outputs=` (a "
                f"matrix of expressions, for an operator with several outputs); got {'both' if loss is not None else 'neither'}"
            )
        self.outputs: tuple[sp.Expr, ...] = ()
        self.output_shape: tuple[int, ...] = ()
        if outputs is not None:
            self.output_shape, self.outputs = _outputs(name, outputs)
            loss = sp.ImmutableMatrix(*self.output_shape, list(self.outputs))
            self.loss = loss
        else:
            self.loss = _scalar_loss(name, loss)
        self.params = tuple(_variables(name, params, "param"))
        self.inputs = tuple(_variables(name, inputs, "input"))
        if not self.params:
            raise ModelError(f"model `{name}`: `params` is empty; list the weights to differentiate")
        self.variables = self.params + self.inputs
        self.input_grads = bool(input_grads)
        self.description = description
        self.notes = tuple(notes)
        self.latex = latex
        self._check_symbols()
        self.domain = _domain(name, domain, self.variables)
        self.points = tuple(_point(name, i, p, self.variables) for i, p in enumerate(points or ()))
        if not self.points and len(self.domain) < len(self.symbols):
            missing = [s for s in self.symbols if s not in self.domain]
            raise ModelError(
                f"model `{name}`: no domain for {_names(missing)} and no explicit points; add "
                f"`domain={{{missing[0]}: (low, high)}}` (or the key \"*\" for all) or `points=[...]`"
            )
        for label, f in (("impl", impl), ("grad_impl", grad_impl)):
            if f is not None and not callable(f):
                raise ModelError(f"model `{name}`: `{label}` must be a callable, got {type(f).__name__}")
        if grad_impl is not None and self.outputs:
            raise ModelError(
                f"model `{name}`: `grad_impl` is for a scalar `loss=`; an operator (`outputs=`) is checked "
                "through `impl` (its backward and forward mode give the Jacobian)"
            )
        if impl is not None or grad_impl is not None:
            bad = [v.name for v in self.variables if not v.name.isidentifier() or keyword.iskeyword(v.name)]
            if bad:
                raise ModelError(
                    f"model `{name}`: {_names(bad)} cannot be keyword arguments of `impl`; rename "
                    "the symbols to Python identifiers"
                )
        self.impl = impl
        self.grad_impl = grad_impl
        self.dtypes = _dtypes(name, dtypes)

    def checked_dtypes(self, run: Sequence[str]) -> tuple[str, ...]:
        """The dtypes this model is checked in for a run asking for ``run`` (`verify`'s ``dtypes``,
        the CLI's ``--dtypes``, the plugin's option or marker): those of ``run`` that the model's
        own ``dtypes=`` allows, in ``run``'s order.  Nothing left is an error, never a vacuous pass.

        >>> x, w = sp.symbols("x w", real=True)
        >>> m = Model(name="m", loss=(w*x)**2, params=[w], inputs=[x], domain={"*": (-1, 1)}, dtypes=["float64"])
        >>> m.checked_dtypes(("float64", "float32"))
        ('float64',)
        """
        run = tuple(dict.fromkeys(run))  # a dtype named twice is checked once
        if self.dtypes is None:
            return run
        kept = tuple(d for d in run if d in self.dtypes)
        if not kept:
            raise ModelError(
                f"model `{self.name}` is declared for {_names(self.dtypes)} (`dtypes=`) and this run asks for "
                f"{_names(run)}: nothing is left to check; run it with --dtypes {','.join(self.dtypes)}, or widen "
                "the model's `dtypes=`"
            )
        return kept

    def with_implementations(self, *, impl: Callable[..., Any] | None = None,
                             grad_impl: Callable[..., Any] | None = None) -> Model:
        """The same model with ``impl`` and/or ``grad_impl`` (given ones replace the model's).

        Compiled work cached on the model is shared, so this is cheap."""
        import copy

        for label, f in (("impl", impl), ("grad_impl", grad_impl)):
            if f is not None and not callable(f):
                raise ModelError(f"model `{self.name}`: `{label}` must be a callable, got {type(f).__name__}")
        other = copy.copy(self)
        other._gradcheck_base = getattr(self, "_gradcheck_base", self)  # where `prepare` caches its work
        if impl is not None:
            other.impl = impl
        if grad_impl is not None:
            other.grad_impl = grad_impl
        return other

    def parse_points(self, points: Sequence[Mapping[Any, Any]]) -> tuple[dict[sp.Symbol, Fraction], ...]:
        """Points given as ``{symbol, matrix or name: value}``, checked like ``points=``."""
        return tuple(_point(self.name, i, p, self.variables) for i, p in enumerate(points))

    # -- derived views -------------------------------------------------------------------
    @property
    def symbols(self) -> tuple[sp.Symbol, ...]:
        """Every scalar symbol: params first, then inputs, arrays row-major."""
        return tuple(s for v in self.variables for s in v.symbols)

    @property
    def entries(self) -> tuple[Entry, ...]:
        """The scalars that gradients are checked for (params, and inputs if asked)."""
        wrt = self.variables if self.input_grads else self.params
        return tuple(Entry(v, k) for v in wrt for k in range(v.size))

    @property
    def is_operator(self) -> bool:
        """Declared with ``outputs=`` (several outputs) rather than a scalar ``loss=``."""
        return bool(self.outputs)

    @property
    def n_params(self) -> int:
        return sum(v.size for v in self.params)

    def variable(self, name: str) -> Variable:
        for v in self.variables:
            if v.name == name:
                return v
        raise ModelError(f"model `{self.name}` has no variable `{name}`; it has {_names(v.name for v in self.variables)}")

    def __repr__(self) -> str:
        shapes = ", ".join(f"{v.name}{list(v.shape) if v.shape else ''}" for v in self.params)
        return f"Model(name={self.name!r}, params=[{shapes}])"

    # -- validation ------------------------------------------------------------------------
    def _check_symbols(self) -> None:
        seen: dict[sp.Symbol, str] = {}
        for v in self.variables:
            for s in v.symbols:
                if s in seen:
                    other = seen[s]
                    if other != v.role:
                        raise ModelError(
                            f"model `{self.name}`: `{s}` is listed both as a param and as an "
                            "input; a symbol is either a weight (differentiated) or data (held fixed)"
                        )
                    raise ModelError(f"model `{self.name}`: `{s}` is listed twice in {v.role}s")
                seen[s] = v.role
                if s.is_real is False or (s.is_complex and not s.is_real):
                    raise ModelError(
                        f"model `{self.name}`: symbol `{s}` is declared complex; gradcheck_sym "
                        "checks real variables. Use sp.Symbol(name, real=True)"
                    )
        for n in walk(self.loss, lambda e: e.args):
            if n is sp.I or (isinstance(n, sp.Expr) and not n.is_Atom and n.is_number and n.is_extended_real is False):
                raise ModelError(
                    f"model `{self.name}`: the loss has the non-real constant `{n}` (the log, root or "
                    "inverse function of a constant outside its real domain); gradcheck_sym checks real losses"
                )
        used = set().union(*(free_symbols(e) for e in self.outputs)) if self.outputs else free_symbols(self.loss)
        undeclared = sorted(used - set(seen), key=str)
        if undeclared:
            raise ModelError(
                f"model `{self.name}`: the loss uses {_names(undeclared)} which "
                f"{'is' if len(undeclared) == 1 else 'are'} neither a param nor an input; add "
                f"{'it' if len(undeclared) == 1 else 'them'} to `inputs=` (data) or `params=` (weights)"
            )
        # the loss as a flat program over every symbol (refuses unsupported functions here)
        if self.outputs:
            self.programs = tuple(compile_expr(e, self.symbols, rewrite_kinks=False, model=self.name)
                                  for e in self.outputs)
            self.program = self.programs[0]
        else:
            self.program = compile_expr(self.loss, self.symbols, rewrite_kinks=False, model=self.name)
        unused = [s for v in self.params for s in v.symbols if s not in used]
        if unused and self.outputs:
            raise ModelError(
                f"model `{self.name}`: param {_names(unused)} does not occur in any output, so its "
                "gradient is identically zero; remove it from `params` or fix the outputs"
            )
        # a weight that does not reach the loss (padding, a masked-out row, an ignored class) has
        # the exact gradient 0: every source must return exactly 0 there, or no gradient (None)
        self.unreached: frozenset[sp.Symbol] = frozenset(unused)


def _dtypes(model: str, dtypes: Sequence[str] | None) -> tuple[str, ...] | None:
    """``dtypes=`` checked: known float dtype names (`dtypes.DTYPES`), at least one."""
    from .dtypes import DTYPES

    if dtypes is None:
        return None
    if isinstance(dtypes, str):
        dtypes = [d.strip() for d in dtypes.split(",") if d.strip()]
    out = tuple(dict.fromkeys(dtypes))
    bad = [d for d in out if d not in DTYPES]
    if bad or not out:
        raise ModelError(
            f"model `{model}`: `dtypes=` {_names(bad) if bad else 'is empty'}"
            f"{' is not a dtype gradcheck_sym checks' if bad else ''}; give a list of {_names(DTYPES)}"
        )
    return out


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _names(items: Iterable[Any], limit: int = 6) -> str:
    names = [f"`{x}`" for x in items]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _scalar_loss(model: str, loss: Any, what: str = "`loss`") -> sp.Expr:
    if isinstance(loss, str):
        raise ModelError(
            f"model `{model}`: {what} is a string; pass a SymPy expression built from symbols "
            "(gradcheck_sym never evaluates text)"
        )
    if isinstance(loss, sp.MatrixBase):
        if loss.shape != (1, 1):
            raise ModelError(
                f"model `{model}`: {what} is a {loss.shape[0]}x{loss.shape[1]} matrix; it must be "
                "a scalar (sum the entries, e.g. `sum(e**2 for e in Y_hat - Y)`, or declare an operator "
                "with `outputs=`)"
            )
        loss = loss[0, 0]
    if isinstance(loss, (int, float, Fraction)):
        loss = sp.nsimplify(loss) if isinstance(loss, Fraction) else sp.sympify(loss)
    if not isinstance(loss, sp.Expr):
        raise ModelError(
            f"model `{model}`: {what} must be a scalar SymPy expression, got {type(loss).__name__}"
        )
    if isinstance(loss, (sp.MatrixExpr,)):
        raise ModelError(f"model `{model}`: {what} must be a scalar, not a matrix expression")
    return loss


def _outputs(model: str, outputs: Any) -> tuple[tuple[int, ...], tuple[sp.Expr, ...]]:
    """An operator's outputs: their shape and the entries, row-major, each a scalar."""
    if isinstance(outputs, (list, tuple)):
        outputs = sp.ImmutableMatrix(len(outputs), 1, list(outputs)) if outputs else None
    if not isinstance(outputs, sp.MatrixBase) or outputs.rows * outputs.cols == 0:
        raise ModelError(
            f"model `{model}`: `outputs` must be a non-empty matrix of expressions (`sp.Matrix([f1, f2, ...])`), "
            f"got {_clip(repr(outputs), 40)}"
        )
    entries = tuple(_scalar_loss(model, e, what=f"`outputs[{k}]`") for k, e in enumerate(outputs))
    return (outputs.rows, outputs.cols), entries


def _variables(model: str, items: Any, role: str) -> list[Variable]:
    if isinstance(items, (sp.Symbol, sp.MatrixBase)):
        items = [items]
    if isinstance(items, Mapping):
        raise ModelError(f"model `{model}`: `{role}s` must be a list of symbols or matrices, not a dict")
    out = []
    for i, item in enumerate(items):
        where = f"model `{model}`: `{role}s[{i}]`"
        if isinstance(item, sp.Symbol):
            out.append(Variable(item.name, (), (item,), role))
        elif isinstance(item, sp.MatrixBase):
            out.append(_matrix_variable(where, item, role))
        else:
            raise ModelError(
                f"{where} is {_clip(repr(item), 40)} ({type(item).__name__}); it must be a SymPy "
                "Symbol or a matrix made by gradcheck_sym.matrix(name, shape)"
            )
    return out


def _matrix_variable(where: str, m: sp.MatrixBase, role: str) -> Variable:
    names = set()
    for (i, j), s in zip(((i, j) for i in range(m.rows) for j in range(m.cols)), m):
        match = _ENTRY.match(s.name) if isinstance(s, sp.Symbol) else None
        if match is None or (int(match["i"]), int(match["j"])) != (i, j):
            raise ModelError(
                f"{where} is a matrix whose entry [{i},{j}] is `{s}`; array weights must be made "
                "with gradcheck_sym.matrix(name, shape), which names entries `name[i,j]`"
            )
        names.add(match["name"])
    if len(names) != 1:
        raise ModelError(f"{where} mixes entries of several matrices ({_names(sorted(names))})")
    return Variable(names.pop(), (m.rows, m.cols), tuple(m), role)


def exact_number(value: Any, what: str) -> Fraction:
    """A finite real number as an exact fraction (a float is taken at its exact binary value)."""
    if isinstance(value, bool):
        raise ModelError(f"{what}: expected a number, got a bool")
    try:
        if isinstance(value, Fraction):
            return value
        if isinstance(value, int):
            return Fraction(value)
        if isinstance(value, sp.Rational):
            return Fraction(int(value.p), int(value.q))
        if isinstance(value, sp.Float):
            value = float(value)
        if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # torch / numpy scalars
            value = value.item()
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ModelError(f"{what}: {value} is not finite")
            return Fraction(value)
    except (TypeError, ValueError, OverflowError):
        pass
    raise ModelError(f"{what}: expected a finite real number, got {_clip(repr(value), 40)}")


def _lookup(model: str, key: Any, variables: Sequence[Variable], what: str) -> list[sp.Symbol]:
    """The scalar symbols a domain or point key stands for (a symbol, a matrix, or a name)."""
    for v in variables:
        if isinstance(key, str):
            if key == v.name:
                return list(v.symbols)
            for s in v.symbols:
                if s.name == key:
                    return [s]
        elif isinstance(key, sp.Symbol):
            if key in v.symbols:
                return [key]
        elif isinstance(key, sp.MatrixBase) and v.shape and tuple(key) == v.symbols:
            return list(v.symbols)
    raise ModelError(
        f"model `{model}`: {what} names `{key}`, which is not a declared symbol; declared: "
        f"{_names(v.name for v in variables)}"
    )


def _domain(model: str, domain: Mapping[Any, Bounds] | None, variables: Sequence[Variable]) -> dict[sp.Symbol, tuple[Fraction, Fraction]]:
    if domain is None:
        return {}
    if not isinstance(domain, Mapping):
        raise ModelError(f"model `{model}`: `domain` must be a dict {{symbol: (low, high)}}")
    out: dict[sp.Symbol, tuple[Fraction, Fraction]] = {}
    default = None
    for key, bounds in domain.items():
        what = f"model `{model}`: domain of `{key}`"
        if not (isinstance(bounds, (tuple, list)) and len(bounds) == 2):
            raise ModelError(f"{what} must be a pair (low, high), got {_clip(repr(bounds), 40)}")
        lo, hi = (exact_number(b, what) for b in bounds)
        if not lo < hi:
            raise ModelError(
                f"{what} is ({float(lo)}, {float(hi)}), which is {'empty' if lo == hi else 'inverted'}; "
                "give (low, high) with low < high"
            )
        if isinstance(key, str) and key == ALL_OTHERS:
            default = (lo, hi)
            continue
        for s in _lookup(model, key, variables, "`domain`"):
            out[s] = (lo, hi)
    if default is not None:
        for v in variables:
            for s in v.symbols:
                out.setdefault(s, default)
    return out


def _point(model: str, i: int, point: Mapping[Any, Any], variables: Sequence[Variable]) -> dict[sp.Symbol, Fraction]:
    if not isinstance(point, Mapping):
        raise ModelError(f"model `{model}`: `points[{i}]` must be a dict {{symbol: value}}")
    out: dict[sp.Symbol, Fraction] = {}
    for key, value in point.items():
        symbols = _lookup(model, key, variables, f"`points[{i}]`")
        what = f"model `{model}`: `points[{i}]` value of `{key}`"
        if len(symbols) == 1 and not _is_array(value):
            out[symbols[0]] = exact_number(value, what)
            continue
        flat = _flatten(value, what)
        if len(flat) != len(symbols):
            raise ModelError(f"{what} has {len(flat)} numbers; `{key}` has {len(symbols)} entries")
        for s, x in zip(symbols, flat):
            out[s] = exact_number(x, what)
    missing = [s for v in variables for s in v.symbols if s not in out]
    if missing:
        raise ModelError(f"model `{model}`: `points[{i}]` has no value for {_names(missing)}")
    return out


def _is_array(value: Any) -> bool:
    return isinstance(value, (list, tuple, sp.MatrixBase)) or getattr(value, "ndim", 0) > 0


def _flatten(value: Any, what: str) -> list[Any]:
    if hasattr(value, "tolist") and not isinstance(value, sp.MatrixBase):
        value = value.tolist()
    if isinstance(value, sp.MatrixBase):
        return list(value)
    if isinstance(value, (list, tuple)):
        return [x for item in value for x in _flatten(item, what)]
    return [value]
