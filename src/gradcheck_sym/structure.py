"""The computation graph of a model, one node per layer: what the report draws and explains.

The scalar program (`graph`) of the 5-6-7-7-6-5 network has about 600 instructions; the lecture
draws it as a dozen nodes: MM, ADD, sigmoid per layer, then the loss.  This module recovers that
picture from the scalar program of any model:

1. known composites are collapsed: SymPy's ``1/(1 + exp(u))`` is one *sigmoid* node, and a
   negation ``-1·x`` is not a node but a minus sign on the edge (SymPy writes ``a - b`` as
   ``a + (-1)·b``, and ``exp(-(Wx + b))`` as ``exp(-Wx - b)``: the sum is read back as ``Wx + b``
   when every term of it is negated);
2. every node gets a label (``MM`` for a product of a weight entry with another value, ``ADD``,
   ``POW 2``, the function's name, ...) and a depth (longest path from the inputs);
3. nodes with the same depth, label and input layers form one layer; variables are grouped by
   name.  Each input of a layer carries the sign it enters with: ``+``, ``-`` or ``±``.

The result is data (`results.Layer`), stored in the results; the Mermaid flowchart and the
per-layer backward recurrence are rendered from it (`report_graph`).
"""

from __future__ import annotations

from typing import Any


from .ir.ops import REGISTRY, carried
from .ir.program import Program
from .model import Model
from .results import Layer

MAX_LAYERS = 60  # beyond this the picture is no clearer than the formula


def _silent(op: str) -> bool:
    """Variables, constants and conditions are not drawn as nodes."""
    spec = REGISTRY[op]
    return spec.leaf or spec.constant or spec.boolean


def _consts(prog: Program, k: int) -> list[object]:
    return [prog.data[a] for a in prog.args[k] if REGISTRY[prog.ops[a]].constant]


def _nonconst(prog: Program, k: int) -> list[int]:
    return [a for a in prog.args[k] if not REGISTRY[prog.ops[a]].constant]


def _sigmoid_argument(prog: Program, k: int) -> int | None:
    """u if slot k computes 1/(1 + exp(u)) (SymPy's form of sigmoid(-u)), else None.  (Layer
    recognition matches SymPy's spellings of sigmoid, negation and products by op name: patterns
    of several ops, which no single registry entry can know.)"""
    ops, args, data = prog.ops, prog.args, prog.data
    if ops[k] != "pow" or data[k] != -1:
        return None
    add = args[k][0]
    if ops[add] != "add" or len(args[add]) != 2:
        return None
    one = [a for a in args[add] if REGISTRY[ops[a]].constant and data[a] == 1]
    rest = [a for a in args[add] if a not in one]
    if len(one) != 1 or len(rest) != 1 or ops[rest[0]] != "exp":
        return None
    return args[rest[0]][0]


def _label(prog: Program, k: int, param_slots: set[int]) -> str:
    op, data = prog.ops[k], prog.data[k]
    if op == "mul":  # a product's name depends on what it multiplies (a weight: MM)
        nonconst = _nonconst(prog, k)
        scale = [c for c in _consts(prog, k) if c not in (1, -1)]
        base = "MM" if len(nonconst) == 2 and any(a in param_slots for a in nonconst) else "MUL"
        if len(nonconst) == 1:
            base = "SCALE"
        return f"{base} {scale[0]}" if len(scale) == 1 else base
    label = REGISTRY[op].label
    if label is not None:
        return label(data)
    return op.upper()


class _Signs:
    """Which nodes are drawn as a sign on an edge instead of a node."""

    def __init__(self, prog: Program) -> None:
        self.prog = prog
        # -1·x: the edge into x gets a minus; k·x·y with k = -1: the node is drawn without it
        self.negation: dict[int, int] = {}
        self.negative: set[int] = set()
        for k in range(len(prog)):
            if prog.ops[k] != "mul":
                continue
            consts, rest = _consts(prog, k), _nonconst(prog, k)
            if consts.count(-1) % 2 == 1:
                if len(rest) == 1 and len(consts) == 1:
                    self.negation[k] = rest[0]
                else:
                    self.negative.add(k)

    def source(self, a: int) -> tuple[int, int]:
        """The node an edge really reads, and the sign it reads it with."""
        sign = 1
        while a in self.negation:
            a, sign = self.negation[a], -sign
        return a, (-sign if a in self.negative else sign)


def layers(model: Model, prog: Program) -> tuple[Layer, ...] | None:
    """The model's computation graph grouped into layers, variables first and the loss last
    (None when it has more than ``MAX_LAYERS`` layers)."""
    n = len(prog)
    ops = prog.ops
    slots = prog.var_slots()
    var_of = {slots[s]: v.name for v in model.variables for s in v.symbols}
    param_slots = {slots[s] for v in model.params for s in v.symbols}
    signs = _Signs(prog)
    reads: dict[int, list[tuple[int, int]]] = {}  # node -> (source node, sign)
    label: dict[int, str] = {}
    sigmoid_of: dict[int, int] = {}
    for k in range(n):
        u = _sigmoid_argument(prog, k)
        if u is not None:
            sigmoid_of[k] = u
    for k in range(n):
        if k in signs.negation or _silent(ops[k]):
            continue
        if k in sigmoid_of:
            continue
        spec = REGISTRY[ops[k]]
        args = tuple(prog.args[k][i] for i in carried(spec, len(prog.args[k]))) if spec.selects else prog.args[k]
        reads[k] = [signs.source(a) for a in args if not REGISTRY[ops[a]].constant]
        label[k] = _label(prog, k, param_slots)
    for k, u in sigmoid_of.items():
        # 1/(1 + exp(u)) = sigmoid(-u): read -u as z when u is a negation or a sum of negations
        z, s = signs.source(u)
        if ops[z] == "add" and s == 1 and all(sign == -1 for _, sign in reads.get(z, [(0, 1)])):
            reads[z] = [(a, -sign) for a, sign in reads[z]]
            s = -1
        reads[k], label[k] = [(z, -s)], "sigmoid"
    live = _reachable(prog.output, reads)
    depth: dict[int, int] = {}
    group: dict[int, str] = {}
    keys: dict[tuple[object, ...], str] = {}
    out: dict[str, dict[str, Any]] = {}
    for v in model.variables:
        if any(slots[s] in live for s in v.symbols):
            out[f"v_{_safe(v.name)}"] = dict(
                label=v.name, kind=v.role, size=v.size, inputs={}, shape=v.shape, depth=0
            )
    for k in range(n):
        if k not in live:
            continue
        if k in var_of:
            depth[k], group[k] = 0, f"v_{_safe(var_of[k])}"
            continue
        if k not in reads:
            continue
        depth[k] = 1 + max((depth[a] for a, _ in reads[k] if a in depth), default=0)
        inputs = tuple(sorted({(group[a], s) for a, s in reads[k] if a in group}))
        gid = keys.setdefault((depth[k], label[k], inputs), f"n{len(keys) + 1}")
        group[k] = gid
        g = out.setdefault(gid, dict(label=label[k], kind="op", size=0, inputs={}, shape=(), depth=depth[k]))
        g["size"] += 1
        for a, s in reads[k]:
            if a in group:
                g["inputs"].setdefault(group[a], set()).add(s)
    if prog.output in group and out[group[prog.output]]["kind"] == "op":
        out[group[prog.output]]["kind"] = "loss"
    if len(out) > MAX_LAYERS:
        return None
    order = sorted(out, key=lambda gid: (out[gid]["depth"], out[gid]["kind"] != "param", out[gid]["label"]))
    result = []
    for gid in order:
        g = out[gid]
        ins = sorted(g["inputs"], key=order.index)
        result.append(Layer(
            id=gid, label=g["label"], kind=g["kind"], size=g["size"], inputs=tuple(ins),
            signs=tuple(_sign_text(g["inputs"][i]) for i in ins), shape=g["shape"],
        ))
    return tuple(result)


def _sign_text(signs: set[int]) -> str:
    return "±" if len(signs) > 1 else ("-" if signs == {-1} else "+")


def _reachable(root: int, reads: dict[int, list[tuple[int, int]]]) -> set[int]:
    seen = {root}
    stack = [root]
    while stack:
        for a, _ in reads.get(stack.pop(), ()):
            if a not in seen:
                seen.add(a)
                stack.append(a)
    return seen


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)
