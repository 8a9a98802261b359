"""The lecture's training loop, replayed in float32 autograd and in exact arithmetic.

The lecture's program (``../shared/seed/``) fits ŷ = ωx to x = [1, 2, 3], y = [2, 4, 6] by
per-sample SGD: 100 epochs, learning rate 0.01, from ω = 1.  `float32_run` is that program,
statement for statement, so it prints what the lecture prints; `exact_run` takes the same steps
with the exact gradient ∂loss/∂ω = 2x(xω − y) in rationals (lr = 1/100 exactly), so every ω is
an exact fraction that the float32 run only approximates.
"""

from __future__ import annotations

from dataclasses import dataclass

from flint import arb, ctx, fmpq

from .results import Replay, ReplayStep

X_DATA = [1.0, 2.0, 3.0]
Y_DATA = [2.0, 4.0, 6.0]
EPOCHS = 100
LR = 0.01


def _fmt(*items: object) -> str:
    """What ``print(*items)`` writes."""
    return " ".join(str(i) for i in items)


@dataclass(frozen=True)
class _Step:
    epoch: int
    x: float
    y: float
    grad: float
    w: float
    loss: float


def float32_run() -> tuple[list[str], list[_Step]]:
    """The lecture's program, statement for statement; returns its printed lines and steps."""
    import torch

    lines: list[str] = []
    steps: list[_Step] = []
    w = torch.Tensor([1.0])
    w.requires_grad = True

    def forward(x: float) -> "torch.Tensor":
        return x * w

    def loss(x: float, y: float) -> "torch.Tensor":
        y_pred = forward(x)
        return (y_pred - y) ** 2

    lines.append(_fmt("predict (before training)", 4, forward(4).item()))
    for epoch in range(EPOCHS):
        for x, y in zip(X_DATA, Y_DATA):
            l = loss(x, y)  # noqa: E741 - the lecture's name
            l.backward()
            assert w.grad is not None
            lines.append(_fmt("\tgrad:", x, y, w.grad.item()))
            grad = w.grad.item()
            w.data = w.data - 0.01 * w.grad.data
            w.grad.data.zero_()
            steps.append(_Step(epoch, x, y, grad, w.item(), l.item()))
        lines.append(_fmt("progress:", epoch, l.item()))
    lines.append(_fmt("predict (after training)", 4, forward(4).item()))
    return lines, steps


def exact_run() -> list[tuple[fmpq, fmpq, fmpq]]:
    """(gradient, ω after the step, loss) per step, in exact rationals."""
    w = fmpq(1)
    lr = fmpq(1, 100)
    out = []
    for _ in range(EPOCHS):
        for xf, yf in zip(X_DATA, Y_DATA):
            x, y = fmpq(int(xf)), fmpq(int(yf))
            r = x * w - y
            grad = 2 * x * r
            w = w - lr * grad
            out.append((grad, w, r * r))
    return out


def _terminating(q: fmpq, max_digits: int) -> str | None:
    """The exact decimal of ``q`` when it terminates within ``max_digits`` fractional digits."""
    d = int(q.q)
    twos = fives = 0
    while d % 2 == 0:
        d //= 2
        twos += 1
    while d % 5 == 0:
        d //= 5
        fives += 1
    places = max(twos, fives)
    if d != 1 or places > max_digits:
        return None
    n = abs(int(q.p)) * 10**places // int(q.q)
    sign = "-" if q < 0 else ""
    whole, frac = divmod(n, 10**places)
    return f"{sign}{whole}.{frac:0{places}d}".rstrip("0").rstrip(".") if places else f"{sign}{whole}"


def decimal(q: fmpq, digits: int = 20) -> str:
    """An exact rational as text: its exact decimal when that is short, else ``digits``
    significant digits followed by "…".

    >>> decimal(fmpq(-196, 25)), decimal(fmpq(1, 3), 5)
    ('-7.84', '0.33333…')
    """
    exact = _terminating(q, digits)
    if exact is not None:
        return exact
    old = ctx.prec
    ctx.prec = 4 * digits + 64
    try:
        return arb(q).str(digits, radius=False) + "…"
    finally:
        ctx.prec = old


def replay() -> Replay:
    """Both runs, step by step (from the cache when the versions have not changed).

    >>> r = replay()
    >>> r.lines_float32[0], r.steps[0].grad_exact
    ('predict (before training) 4 4.0', '-2')
    """
    from . import cache
    from .results import replay_from_dict, replay_to_dict

    digest = cache.key("replay", cache.versions("torch", "python-flint"))
    stored = cache.load_json("replay", digest)
    if stored is not None:
        try:
            return replay_from_dict(stored)
        except (KeyError, TypeError, ValueError):
            cache.forget("replay", digest, ".json")
    result = _replay()
    cache.store_json("replay", digest, replay_to_dict(result))
    return result


def _replay() -> Replay:
    lines, steps = float32_run()
    exact = exact_run()
    out = tuple(
        ReplayStep(
            epoch=s.epoch, x=s.x, y=s.y,
            grad_float32=s.grad, grad_exact=decimal(g),
            w_float32=s.w, w_exact=decimal(wq),
            loss_float32=s.loss, loss_exact=decimal(lq),
        )
        for s, (g, wq, lq) in zip(steps, exact)
    )
    return Replay(
        lines_float32=tuple(lines), steps=out,
        final_w_exact=decimal(exact[-1][1], 30), final_w_float32=steps[-1].w,
        final_prediction_exact=decimal(4 * exact[-1][1], 20),
        float32_stalls_at=_stall(steps),
    )


def _stall(steps: list[_Step]) -> int | None:
    """The first epoch in which no step changes float32's ω, if every later one is like it."""
    last_change = None
    before = 1.0
    for s in steps:
        if s.w != before:
            last_change = s.epoch
        before = s.w
    if last_change is None or last_change == steps[-1].epoch:
        return None
    return last_change + 1


def side_by_side(r: Replay) -> list[str]:
    """The lecture's printed lines with the exact values beside them."""
    out = []
    steps = iter(r.steps)
    last: ReplayStep | None = None
    for line in r.lines_float32:
        if line.startswith("\tgrad:"):
            last = next(steps)
            exact = f"exact grad {last.grad_exact}"
        elif line.startswith("progress:"):
            assert last is not None
            exact = f"exact loss {last.loss_exact}"
        elif line.startswith("predict (before"):
            exact = "exact 4"
        else:
            exact = f"exact {r.final_prediction_exact}"
        out.append(f"{line.expandtabs(4):<50} | {exact}")
    return out
