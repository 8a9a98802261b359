"""How close correct torch functions come to the forward-mode and second-order tolerances.

Run by hand: ``python benchmarks/second_order_tolerance.py [POINTS]`` (default 300).  For each
function, the declared SymPy loss and torch's own implementation (``impl``) are checked with
``order=2, modes=("rev", "fwd")`` at POINTS seeded random points; printed is the largest
|error| / tolerance per quantity for each source, and the same number without the head-room
(`orders.HEADROOM`) that these checks get.  Every value must stay below 1 (no false alarm);
any mismatch is printed, whatever its quantity.
"""

from __future__ import annotations

import sys

import sympy as sp
import torch
import torch.nn.functional as F

from gradcheck_sym import Model, verify
from gradcheck_sym.orders import HEADROOM

x, w, b = sp.symbols("x w b", real=True)


def sig(z: sp.Expr) -> sp.Expr:
    return 1 / (1 + sp.exp(-z))


z = w * x + b
CASES = {
    "softplus": (sp.log(1 + sp.exp(z)), lambda w, x, b: F.softplus(w * x + b)),
    "silu": (z * sig(z), lambda w, x, b: F.silu(w * x + b)),
    "logsigmoid": (sp.log(sig(z)), lambda w, x, b: F.logsigmoid(w * x + b)),
    "gelu": (z * (1 + sp.erf(z / sp.sqrt(2))) / 2, lambda w, x, b: F.gelu(w * x + b)),
    "tanh·atan2": (sp.tanh(w) * sp.atan2(x, b + 3), lambda w, x, b: torch.tanh(w) * torch.atan2(x, b + 3)),
    "bce with logits": (-(x * sp.log(sig(w + b)) + (1 - x) * sp.log(1 - sig(w + b))),
                        lambda w, x, b: F.binary_cross_entropy_with_logits(w + b, x)),
    "relu²": (sp.Max(0, z) ** 2, lambda w, x, b: F.relu(w * x + b) ** 2),
}


def main(points: int) -> None:
    print(f"{'function':16s} {'source':9s} {'quantity':7s} {'dtype':8s} {'err/tol':>8s} {'unscaled':>9s}")
    for name, (loss, impl) in CASES.items():
        m = Model(name=name.replace("·", "-").replace("²", "2").replace(" ", "-"), loss=loss, params=[w, b],
                  inputs=[x], domain={x: (0, 1), "*": (-3, 3)}, impl=impl)
        r = verify(m, order=2, modes=("rev", "fwd"), samples=points)
        assert r.error is None, (name, r.error)
        for c in r.failed:  # first-order checks are the existing rule's business; shown, not hidden
            print(f"{name:16s} {c.source:9s} {c.quantity:7s} {c.dtype:8s} MISMATCH at point {c.point}: "
                  f"{c.quantity_text} exact {c.exact!r}, got {c.value!r} ({c.of_tolerance:.2f} of its tolerance)")
        for s in r.summaries:
            if s.source != "fd" and s.quantity in ("jvp", "second") and s.worst_of_tolerance is not None:
                print(f"{name:16s} {s.source:9s} {s.quantity:7s} {s.dtype:8s} {s.worst_of_tolerance:8.3f} "
                      f"{s.worst_of_tolerance * HEADROOM:9.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
