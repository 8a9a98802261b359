"""Builders for declaring layers: the usual pieces of a network as SymPy, built fast.

Written the plain way, ``(W*a + b).applyfunc(lambda z: 1/(1 + sp.exp(-z)))`` and
``sum(e**2 for e in ...)`` spend seconds to minutes in SymPy's automatic simplification for a
network of a few thousand weights; these builders make the same expressions with ``Add``,
``Mul`` and ``Pow`` left unevaluated, in milliseconds.  Every builder takes and returns SymPy
matrices (column vectors, or one column per sample for a batch) or scalars, so they compose::

    >>> import sympy as sp
    >>> from gradcheck_sym import matrix
    >>> from gradcheck_sym import nn
    >>> W, b, X = matrix("W", (2, 3)), matrix("b", 2), matrix("X", 3)
    >>> logits = nn.dense(W, X, b)
    >>> loss = nn.cross_entropy(logits, 1)
    >>> sorted(s.name for s in loss.free_symbols)[:3]
    ['W[0,0]', 'W[0,1]', 'W[0,2]']

Each is the function of the same name in ``torch`` / ``torch.nn.functional`` (the tests check
every builder against it through `gradcheck_sym.verify`).  ``logsumexp`` and the softmax family
are written as the mathematics reads, ``log Σ exp(v)``: their exact value and gradient are exact
everywhere, but the declaration's own float evaluation (source ``autograd``) overflows where
``exp(v)`` does (v > 88 in float32); declare logits in a range where it does not, or compare
your implementation as ``impl``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sympy as sp

Matrix = sp.MatrixBase


def _add(terms: Iterable[sp.Expr]) -> sp.Expr:
    terms = list(terms)
    if not terms:
        return sp.Integer(0)
    return terms[0] if len(terms) == 1 else sp.Add(*terms, evaluate=False)


def _entries(v: Matrix | Sequence[sp.Expr]) -> list[sp.Expr]:
    return list(v) if not isinstance(v, sp.MatrixBase) else [v[i] for i in range(len(v))]


def _same_shape(v: Matrix, entries: Sequence[sp.Expr]) -> sp.ImmutableMatrix:
    return sp.ImmutableMatrix(v.rows, v.cols, list(entries))


def dense(W: Matrix, a: Matrix, b: Matrix | None = None) -> sp.ImmutableMatrix:
    """``W·a + b``: ``a`` is a column (n_in × 1) or a batch (n_in × batch, one column per
    sample), ``b`` a column (n_out × 1) added to every column (broadcast), or ``None``.

    >>> from gradcheck_sym import matrix
    >>> dense(matrix("W", (1, 2)), matrix("x", 2), matrix("b", 1))
    Matrix([[W[0,0]*x[0,0] + W[0,1]*x[1,0] + b[0,0]]])
    """
    if W.cols != a.rows:
        raise ValueError(f"dense: `W` is {W.rows}x{W.cols} but `a` has {a.rows} rows; W.cols must equal a.rows")
    if b is not None and (b.cols != 1 or b.rows != W.rows):
        raise ValueError(f"dense: `b` is {b.rows}x{b.cols}; it must be a column of {W.rows} entries")
    rows = []
    for i in range(W.rows):
        for c in range(a.cols):
            terms = [sp.Mul(W[i, j], a[j, c], evaluate=False) for j in range(W.cols)]
            if b is not None:
                terms.append(b[i, 0])
            rows.append(_add(terms))
    return sp.ImmutableMatrix(W.rows, a.cols, rows)


def sigmoid(z: sp.Expr | Matrix) -> sp.Expr | sp.ImmutableMatrix:
    """The logistic sigmoid ``1/(1 + e^(−z))``, entrywise on a matrix.

    >>> z = sp.Symbol("z", real=True)
    >>> sigmoid(z)
    1/(1 + exp(-z))
    """
    if isinstance(z, sp.MatrixBase):
        return _same_shape(z, [sigmoid(e) for e in _entries(z)])  # type: ignore[misc]
    return sp.Pow(sp.Add(1, sp.exp(sp.Mul(-1, z, evaluate=False), evaluate=False), evaluate=False), -1, evaluate=False)


def tanh(z: sp.Expr | Matrix) -> sp.Expr | sp.ImmutableMatrix:
    """``tanh``, entrywise on a matrix."""
    if isinstance(z, sp.MatrixBase):
        return _same_shape(z, [sp.tanh(e) for e in _entries(z)])
    return sp.tanh(z)


def relu(z: sp.Expr | Matrix) -> sp.Expr | sp.ImmutableMatrix:
    """``max(z, 0)``, entrywise; a corner at 0 (the check reports both one-sided derivatives).

    >>> relu(sp.Symbol("z", real=True))
    Max(0, z)
    """
    if isinstance(z, sp.MatrixBase):
        return _same_shape(z, [relu(e) for e in _entries(z)])  # type: ignore[misc]
    # unevaluated: SymPy's Max asks its assumption system whether z >= 0, which for a deep
    # network's pre-activation took 25 s for 224 weights
    return sp.Max(z, 0, evaluate=False)


def clamp(z: sp.Expr | Matrix, low: float | sp.Expr | None = None,
          high: float | sp.Expr | None = None) -> sp.Expr | sp.ImmutableMatrix:
    """``torch.clamp(z, low, high)``, entrywise; corners at both bounds.  ``relu6`` is
    ``clamp(z, 0, 6)``, ``hardtanh`` is ``clamp(z, -1, 1)``.

    >>> clamp(sp.Symbol("z", real=True), 0, 6)
    Piecewise((0, z < 0), (6, z > 6), (z, True))
    """
    if isinstance(z, sp.MatrixBase):
        return _same_shape(z, [clamp(e, low, high) for e in _entries(z)])  # type: ignore[misc]
    if low is None and high is None:
        raise ValueError("clamp: give `low`, `high` or both")
    if low is not None and high is not None and sp.sympify(low) > sp.sympify(high):
        raise ValueError(f"clamp: `low` ({low}) is above `high` ({high})")
    pieces: list[tuple[sp.Expr, sp.Basic]] = []  # unevaluated, as in `relu`
    if low is not None:
        pieces.append((sp.sympify(low), sp.StrictLessThan(z, low, evaluate=False)))
    if high is not None:
        pieces.append((sp.sympify(high), sp.StrictGreaterThan(z, high, evaluate=False)))
    return sp.Piecewise(*pieces, (z, True), evaluate=False)


def total(v: Matrix | Sequence[sp.Expr]) -> sp.Expr:
    """``Σ vᵢ`` over every entry."""
    return _add(_entries(v))


def mean(v: Matrix | Sequence[sp.Expr]) -> sp.Expr:
    """The mean of every entry.

    >>> mean([sp.Symbol("a"), sp.Symbol("b")])
    (a + b)/2
    """
    entries = _entries(v)
    if not entries:
        raise ValueError("mean: no entries")
    return sp.Mul(sp.Rational(1, len(entries)), _add(entries), evaluate=False)


def logsumexp(v: Matrix | Sequence[sp.Expr]) -> sp.Expr:
    """``log Σ exp(vᵢ)`` over every entry (``torch.logsumexp``)."""
    return sp.log(_add(sp.exp(e) for e in _entries(v)))


def log_softmax(v: Matrix) -> sp.ImmutableMatrix:
    """``vᵢ − log Σⱼ exp(vⱼ)`` for a column (``torch.log_softmax(v, 0)``)."""
    lse = logsumexp(v)
    return _same_shape(v, [sp.Add(e, sp.Mul(-1, lse, evaluate=False), evaluate=False) for e in _entries(v)])


def softmax(v: Matrix) -> sp.ImmutableMatrix:
    """``exp(vᵢ) / Σⱼ exp(vⱼ)`` for a column (``torch.softmax(v, 0)``)."""
    exps = [sp.exp(e) for e in _entries(v)]
    inv = sp.Pow(_add(exps), -1, evaluate=False)
    return _same_shape(v, [sp.Mul(e, inv, evaluate=False) for e in exps])


def cross_entropy(logits: Matrix, label: int) -> sp.Expr:
    """``−log softmax(logits)[label]`` for one sample (``F.cross_entropy`` with a class index).

    >>> from gradcheck_sym import matrix
    >>> cross_entropy(matrix("z", 2), 0)
    -z[0,0] + log(exp(z[0,0]) + exp(z[1,0]))
    """
    n = len(_entries(logits))
    if not 0 <= int(label) < n:
        raise ValueError(f"cross_entropy: label {label} is not a class index in 0..{n - 1}")
    return sp.Add(logsumexp(logits), sp.Mul(-1, _entries(logits)[int(label)], evaluate=False), evaluate=False)


def mse(y_hat: Matrix, y: Matrix) -> sp.Expr:
    """``mean((ŷ − y)²)`` (``F.mse_loss``); ``sse`` is the sum instead of the mean."""
    return mean(_squares(y_hat, y))


def sse(y_hat: Matrix, y: Matrix) -> sp.Expr:
    """``Σ (ŷ − y)²``, the lecture's loss."""
    return sp.Add(*_squares(y_hat, y))


def _squares(y_hat: Matrix, y: Matrix) -> list[sp.Expr]:
    if y_hat.shape != y.shape:
        raise ValueError(f"shapes differ: {y_hat.shape} and {y.shape}")
    return [sp.Pow(e, 2, evaluate=False) for e in _entries(y_hat - y)]


def binary_cross_entropy(p: sp.Expr, y: sp.Expr) -> sp.Expr:
    """``−(y log p + (1 − y) log(1 − p))`` for one probability ``p`` (``F.binary_cross_entropy``)."""
    return -(y * sp.log(p) + (1 - y) * sp.log(1 - p))
