"""Models typed as text: a loss on the command line (``--expr``) or in a ``.toml`` model file.

Text is never evaluated.  SymPy's ``sympify`` and ``parse_expr`` call ``eval`` and run any
code they are given, so they never see it.  Instead Python's own parser (``ast.parse``, which
only builds a syntax tree) reads the text, and a walk over that tree accepts a whitelist:
numbers, names (symbols), ``+ - * / **``, and calls of the functions in `functions.FUNCTIONS`
(plus ``sqrt``).  Everything else (attributes, subscripts, lambdas, comprehensions, strings,
keyword arguments, calls of anything else) is refused with a message that names it, and sizes
are bounded so that ``9**9**9**9`` is refused, not computed.
"""

from __future__ import annotations

import ast
import math
from typing import Any

import sympy as sp

from .errors import GradcheckError
from .functions import FUNCTIONS

MAX_CHARS = 20_000
MAX_NODES = 5_000
MAX_LITERAL_DIGITS = 100
MAX_CONSTANT_BITS = 20_000  # no constant computed from the text may be larger than this
MAX_SYMBOLIC_EXPONENT = 10**6

FUNCTION_NAMES: dict[str, Any] = {spec.name: f for f, spec in FUNCTIONS.items()}
FUNCTION_NAMES["sqrt"] = sp.sqrt
ARITY = {"atan2": (2, 2), "Max": (2, 64), "Min": (2, 64), "Heaviside": (1, 2), "polygamma": (2, 2), "xlogy": (2, 2),
         "xlog1py": (2, 2)}
CONSTANTS = {"pi": sp.pi, "E": sp.E}

_REFUSED = {
    ast.Attribute: "attribute access (`.`)",
    ast.Subscript: "indexing (`[...]`)",
    ast.Lambda: "a lambda",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a comprehension",
    ast.IfExp: "a conditional expression",
    ast.Compare: "a comparison",
    ast.BoolOp: "`and`/`or`",
    ast.NamedExpr: "an assignment (`:=`)",
    ast.Await: "`await`",
    ast.Yield: "`yield`",
    ast.YieldFrom: "`yield`",
    ast.JoinedStr: "a string",
    ast.List: "a list",
    ast.Tuple: "a tuple",
    ast.Set: "a set",
    ast.Dict: "a dict",
    ast.Starred: "`*` unpacking",
}


class TextError(GradcheckError):
    """Text that is not an acceptable expression; the message says what and where."""


def parse_expression(text: str, *, what: str = "expression") -> sp.Expr:
    """A SymPy expression from ``text``, without evaluating it as code.

    >>> parse_expression("(w*x - y)**2")
    (w*x - y)**2
    >>> parse_expression("__import__('os').system('true')")
    Traceback (most recent call last):
    ...
    gradcheck_sym.text.TextError: expression: only the supported functions can be called, by name (column 1)
    """
    if not isinstance(text, str):
        raise TextError(f"{what}: expected text, got {type(text).__name__}")
    if len(text) > MAX_CHARS:
        raise TextError(f"{what}: {len(text)} characters; at most {MAX_CHARS} are accepted")
    if not text.strip():
        raise TextError(f"{what}: is empty; write the loss, e.g. (w*x - y)**2")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise TextError(f"{what}: not a valid expression ({exc.msg}, column {exc.offset})") from None
    except (RecursionError, MemoryError, ValueError) as exc:
        raise TextError(f"{what}: cannot be parsed ({type(exc).__name__}: nested too deeply or too long)") from None
    nodes = sum(1 for _ in ast.walk(tree))
    if nodes > MAX_NODES:
        raise TextError(f"{what}: {nodes} syntax nodes; at most {MAX_NODES} are accepted")
    try:
        return _Converter(what).convert(tree.body)
    except RecursionError:
        raise TextError(f"{what}: nested too deeply") from None


def _too_big(x: sp.Expr) -> bool:
    if isinstance(x, sp.Rational):
        return int(x.p).bit_length() + int(x.q).bit_length() > MAX_CONSTANT_BITS
    return False


class _Converter:
    def __init__(self, what: str) -> None:
        self.what = what

    def refuse(self, node: ast.AST, message: str) -> TextError:
        col = getattr(node, "col_offset", None)
        where = f" (column {col + 1})" if col is not None else ""
        return TextError(f"{self.what}: {message}{where}")

    def convert(self, node: ast.AST) -> Any:
        if type(node) in _REFUSED:
            raise self.refuse(node, f"{_REFUSED[type(node)]} is not allowed") from None
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise self.refuse(node, f"`{type(node).__name__}` is not allowed")
        return method(node)

    def _Constant(self, node: ast.Constant) -> sp.Expr:
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.refuse(node, f"the literal {v!r} is not a real number")
        if isinstance(v, int):
            if len(str(abs(v))) > MAX_LITERAL_DIGITS:
                raise self.refuse(node, f"an integer literal longer than {MAX_LITERAL_DIGITS} digits")
            return sp.Integer(v)
        if not math.isfinite(v):
            raise self.refuse(node, "a number that is not finite")
        return sp.Rational(repr(v))  # 0.1 means one tenth

    def _Name(self, node: ast.Name) -> sp.Expr:
        name = node.id
        if name in CONSTANTS:
            return CONSTANTS[name]
        if name in FUNCTION_NAMES:
            raise self.refuse(node, f"`{name}` is a function; call it, e.g. {name}(x)")
        if name.startswith("_"):
            raise self.refuse(node, f"the name `{name}` is not allowed (names may not start with `_`)")
        return sp.Symbol(name, real=True)

    def _UnaryOp(self, node: ast.UnaryOp) -> sp.Expr:
        x = self.convert(node.operand)
        if isinstance(node.op, ast.USub):
            return -x
        if isinstance(node.op, ast.UAdd):
            return x
        raise self.refuse(node, f"the operator `{type(node.op).__name__}` is not allowed")

    def _BinOp(self, node: ast.BinOp) -> sp.Expr:
        a, b = self.convert(node.left), self.convert(node.right)
        op = node.op
        if isinstance(op, ast.Add):
            r = a + b
        elif isinstance(op, ast.Sub):
            r = a - b
        elif isinstance(op, ast.Mult):
            r = a * b
        elif isinstance(op, ast.Div):
            if b == 0:
                raise self.refuse(node, "division by zero")
            r = a / b
        elif isinstance(op, ast.Pow):
            r = self._power(node, a, b)
        else:
            raise self.refuse(node, f"the operator `{type(op).__name__}` is not allowed (use + - * / **)")
        if _too_big(r):
            raise self.refuse(node, f"a constant of more than {MAX_CONSTANT_BITS} bits")
        return r

    def _power(self, node: ast.BinOp, base: sp.Expr, exponent: sp.Expr) -> sp.Expr:
        if exponent.is_number:
            if not exponent.is_real:
                raise self.refuse(node, "a power with a non-real exponent")
            e = abs(float(exponent)) if exponent.is_finite else math.inf
            if base.is_number:
                bits = max(1.0, math.log2(max(abs(float(base)), 2.0)) if base.is_finite else math.inf)
                if not math.isfinite(e) or bits * e > MAX_CONSTANT_BITS:
                    raise self.refuse(node, f"a power whose value would exceed {MAX_CONSTANT_BITS} bits")
            elif e > MAX_SYMBOLIC_EXPONENT:
                raise self.refuse(node, f"an exponent larger than {MAX_SYMBOLIC_EXPONENT}")
        r = base**exponent
        # SymPy folds (x**a)**b into x**(a*b): the folded exponent is held to the same limit
        if isinstance(r, sp.Pow) and r.exp.is_Number and abs(r.exp) > MAX_SYMBOLIC_EXPONENT:
            raise self.refuse(node, f"an exponent larger than {MAX_SYMBOLIC_EXPONENT} (the powers multiply to {r.exp})")
        return r

    def _Call(self, node: ast.Call) -> sp.Expr:
        if not isinstance(node.func, ast.Name):
            raise self.refuse(node, "only the supported functions can be called, by name")
        name = node.func.id
        if name not in FUNCTION_NAMES:
            raise self.refuse(
                node, f"`{name}` is not a supported function; supported: {', '.join(sorted(FUNCTION_NAMES))}"
            )
        if node.keywords:
            raise self.refuse(node, f"keyword arguments to `{name}` are not allowed")
        lo, hi = ARITY.get(name, (1, 1))
        if not lo <= len(node.args) <= hi:
            count = f"{lo}" if lo == hi else f"{lo} to {hi}"
            raise self.refuse(node, f"`{name}` takes {count} argument{'s' if hi > 1 else ''}, got {len(node.args)}")
        return FUNCTION_NAMES[name](*(self.convert(a) for a in node.args))


def _names(value: Any, what: str) -> list[str]:
    """Symbol names, normalised (NFKC) as Python's parser normalises the names in the loss, so
    that a full-width `ｗ` in ``--params`` is the `w` of the expression."""
    import unicodedata

    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split() if v]
    if isinstance(value, list):
        value = [unicodedata.normalize("NFKC", v) if isinstance(v, str) else v for v in value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.isidentifier() for v in value):
        raise TextError(f"{what}: expected a list of symbol names, got {value!r}")
    return value


def _bounds(value: Any, what: str) -> tuple[Any, Any]:
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise TextError(f"{what}: expected [low, high], got {value!r}")
    return value[0], value[1]


def model_from_text(
    *,
    name: str,
    loss: str,
    params: Any,
    inputs: Any = None,
    domain: dict[str, Any] | None = None,
    points: list[dict[str, Any]] | None = None,
    description: str = "",
    where: str = "",
) -> Any:
    """A `Model` from text: the loss as an expression, the rest as names and numbers.  Symbols
    not listed in ``params`` are inputs; ``domain`` defaults to ``{"*": [-1, 1]}``.

    >>> model_from_text(name="linear", loss="(w*x - y)**2", params=["w"]).n_params
    1
    """
    from .model import Model

    label = f"{where}model `{name}`" if isinstance(name, str) else f"{where}a model"
    expr = parse_expression(loss, what=f"{label}: loss") if isinstance(loss, str) else None
    if expr is None:
        raise TextError(f"{label}: `loss` must be text, got {type(loss).__name__}")
    by_name = {s.name: s for s in expr.free_symbols}
    param_names = _names(params, f"{label}: params")
    missing = [p for p in param_names if p not in by_name]
    if missing:
        raise TextError(f"{label}: param `{missing[0]}` does not occur in the loss `{loss}`")
    input_names = _names(inputs, f"{label}: inputs") if inputs is not None else sorted(set(by_name) - set(param_names))
    for n in input_names:
        by_name.setdefault(n, sp.Symbol(n, real=True))
    if not isinstance(domain, (dict, type(None))):
        raise TextError(f"{label}: domain must be a table {{name = [low, high]}}, got {domain!r}")
    bounds = {k: _bounds(v, f"{label}: domain of `{k}`") for k, v in (domain or {"*": [-1, 1]}).items()}
    if points is not None and not (isinstance(points, list) and all(isinstance(p, dict) for p in points)):
        raise TextError(f"{label}: points must be a list of tables {{name = value}}")
    return Model(
        name=name, loss=expr, params=[by_name[p] for p in param_names],
        inputs=[by_name[n] for n in input_names], domain=bounds, points=points,
        description=description if isinstance(description, str) else "",
    )
