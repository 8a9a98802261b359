"""Layers → the computation graph as a Mermaid flowchart, and the backward recurrence per layer
in LaTeX, as the lecture writes the chain rule: ∂loss/∂x = ∂loss/∂z · ∂z/∂x.  Pure functions."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .results import Layer

_SUBSCRIPT = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def _names(layers: Sequence[Layer]) -> dict[str, tuple[str, str]]:
    """(Mermaid text, LaTeX) name of every layer: variables by name, ops by label and number."""
    counts: dict[str, int] = {}
    total: dict[str, int] = {}
    for layer in layers:
        total[layer.label] = total.get(layer.label, 0) + 1
    out = {}
    for layer in layers:
        if layer.kind in ("param", "input"):
            out[layer.id] = (layer.label, _latex_symbol(layer.label))
            continue
        if layer.kind == "loss":
            out[layer.id] = (f"loss ({layer.label})", r"\ell")
            continue
        counts[layer.label] = counts.get(layer.label, 0) + 1
        k = counts[layer.label]
        sub = str(k).translate(_SUBSCRIPT) if total[layer.label] > 1 else ""
        tex_sub = f"_{{{k}}}" if sub else ""  # hygiene: the same numbering as the Mermaid text
        if layer.label == "sigmoid":
            out[layer.id] = (f"σ{sub} sigmoid", rf"\sigma{tex_sub}")
        else:
            word = layer.label.split()[0]
            text = f"{word}{sub} {' '.join(layer.label.split()[1:])}".strip()
            out[layer.id] = (text, rf"\mathrm{{{word}}}{tex_sub}")
    return out


def _latex_symbol(name: str) -> str:
    m = re.fullmatch(r"([A-Za-z]+)(\d+)", name)
    if m:
        return f"{m[1]}_{{{m[2]}}}"
    return name if re.fullmatch(r"[A-Za-z]", name) else rf"\mathrm{{{name}}}"


def mermaid(layers: Sequence[Layer]) -> str:
    """A left-to-right Mermaid flowchart: weights, data, then one node per layer, the loss last.

    >>> print(mermaid([Layer(id="v_w", label="w", kind="param", size=1, inputs=()),
    ...                Layer(id="n1", label="POW 2", kind="loss", size=1, inputs=("v_w",), signs=("+",))]))
    flowchart LR
      v_w[/"w"/]
      n1(["loss (POW 2)"])
      v_w --> n1
    """
    names = _names(layers)
    lines = ["flowchart LR"]
    for layer in layers:
        text = names[layer.id][0]
        if layer.shape:
            text += f" {layer.shape[0]}×{layer.shape[1]}"
        elif layer.kind == "op" and layer.size > 1:
            text += f"<br/>{layer.size} values"
        shape = {"param": '[/"{}"/]', "input": '[("{}")]', "loss": '(["{}"])'}.get(layer.kind, '["{}"]')
        lines.append(f"  {layer.id}{shape.format(text)}")
    for layer in layers:
        for source, sign in zip(layer.inputs, layer.signs or ("+",) * len(layer.inputs)):
            arrow = "-->" if sign == "+" else f'-->|"{"−" if sign == "-" else "±"}"|'
            lines.append(f"  {source} {arrow} {layer.id}")
    return "\n".join(lines)


def _delta(name: str) -> str:
    return r"\frac{\partial \ell}{\partial " + name + "}"


def _local(consumer: Layer, layer: Layer, names: dict[str, tuple[str, str]]) -> str:
    """∂consumer/∂layer, as it multiplies ∂ℓ/∂consumer."""
    c = names[consumer.id][1]
    x = names[layer.id][1]
    label = consumer.label
    others = [names[i][1] for i in consumer.inputs if i != layer.id]
    if label == "sigmoid":
        return rf"\odot\, {c} \odot (1 - {c})"
    if label.startswith("POW "):
        n = label.split()[1]
        return rf"\odot\, {n}\, {x}" if n == "2" else rf"\odot\, {n}\, {x}^{{{n}-1}}"
    if label == "INV":
        return rf"\odot\, (-{c}^{{2}})"
    if label == "sqrt":
        return rf"\oslash\, (2 {c})"
    from .ir.ops import REGISTRY  # a function's own rule (imported here: rendering alone needs no SymPy)

    spec = REGISTRY.get(label)
    if spec is not None and spec.local_latex is not None:
        return spec.local_latex(c, x)
    if label.startswith(("MM", "MUL")):
        return (r"\odot\, " + r" \odot ".join(others)) if others else ""
    if label.startswith("SCALE "):
        return rf"\cdot {label.split()[1]}"
    if label == "Piecewise":
        return r"\text{ on the selected branch}"
    if label == "ADD":
        return ""
    return rf"\odot\, \frac{{\partial {c}}}{{\partial {x}}}"


def _sign(sign: str) -> str:
    return {"+": "", "-": "-", "±": r"\pm "}[sign]


def recurrence(layers: Sequence[Layer]) -> list[str]:
    """The backward pass, one LaTeX equation per layer and weight, from the loss back to the
    inputs: each layer's adjoint is the sum over the layers that read it of their adjoint times
    the local derivative.  A product layer (MM) read by one sum is written in matrix form,
    ∂ℓ/∂W = ∂ℓ/∂z · aᵀ and ∂ℓ/∂a = Wᵀ · ∂ℓ/∂z, as the lecture does."""
    names = _names(layers)
    by_id = {layer.id: layer for layer in layers}
    readers: dict[str, list[Layer]] = {}
    for layer in layers:
        for i in layer.inputs:
            readers.setdefault(i, []).append(layer)

    def folded(layer: Layer) -> Layer | None:
        """The sum an MM layer feeds, when it feeds exactly one."""
        if not layer.label.startswith("MM") or layer.label != "MM":
            return None
        rs = readers.get(layer.id, [])
        return rs[0] if len(rs) == 1 and rs[0].label == "ADD" else None

    def equation(layer: Layer) -> str | None:
        terms = []
        for consumer in readers.get(layer.id, []):
            sign = consumer.signs[consumer.inputs.index(layer.id)] if consumer.signs else "+"
            z = folded(consumer)
            if z is not None:
                zsign = z.signs[z.inputs.index(consumer.id)] if z.signs else "+"
                s = _combine(sign, zsign)
                dz = "1" if z.kind == "loss" else _delta(names[z.id][1])
                other = [names[i][1] for i in consumer.inputs if i != layer.id]
                if layer.kind == "param":
                    terms.append(f"{_sign(s)}{dz}\\, {other[0]}^{{\\top}}" if other else f"{_sign(s)}{dz}")
                else:
                    weight = next((names[i][1] for i in consumer.inputs if by_id[i].kind == "param"), "W")
                    terms.append(f"{_sign(s)}{weight}^{{\\top}} {dz}")
                continue
            local = _local(consumer, layer, names)
            if consumer.kind == "loss":
                term = local.removeprefix("\\odot\\, ").removeprefix("\\cdot ") if local else "1"
                term = f"1 {term}" if term.startswith("\\oslash") else term  # hygiene: 1 ⊘ x, not ⊘ x
            else:
                term = _delta(names[consumer.id][1]) + (f" {local}" if local else "")
            terms.append(f"{_sign(sign)}{term}")
        if not terms:
            return None
        return f"{_delta(names[layer.id][1])} = " + " + ".join(terms).replace("+ -", "- ")

    def reads_weights(layer: Layer) -> list[Layer]:
        """The weights this layer reads, directly or through the product layer it sums."""
        ids = list(layer.inputs) + [i for j in layer.inputs if folded(by_id[j]) is layer for i in by_id[j].inputs]
        return [by_id[i] for i in ids if by_id[i].kind == "param"]

    active: set[str] = set()  # layers that depend on a weight: only they have a gradient to explain
    for layer in layers:
        if layer.kind == "param" or any(i in active for i in layer.inputs):
            active.add(layer.id)
    lines: list[str] = []
    done: set[str] = set()
    for layer in reversed(layers):
        if layer.kind in ("input", "param") or folded(layer) is not None or layer.id not in active:
            continue
        if layer.kind != "loss" and (eq := equation(layer)):
            lines.append(eq)
        for w in reads_weights(layer):
            if w.id not in done and (eq := equation(w)):
                done.add(w.id)
                lines.append(eq)
    for layer in layers:  # weights read only by layers drawn above
        if layer.kind == "param" and layer.id not in done and (eq := equation(layer)):
            lines.append(eq)
    return lines


def _combine(a: str, b: str) -> str:
    if "±" in (a, b):
        return "±"
    return "+" if a == b else "-"
