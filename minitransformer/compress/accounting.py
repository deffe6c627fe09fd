r"""Counting what compression buys: parameters, multiply-add FLOPs per token, and bytes.

For a dense $m \times n$ matrix applied to one token: $mn$ parameters and $2mn$ FLOPs (a multiply and
an add per weight). Factorised at rank $K$: $K(m+n)$ parameters and $2K(m+n)$ FLOPs. Factorising
saves anything only when

$$K (m + n) < m n \iff K < K^\ast = \frac{m n}{m + n},$$

and the ideal speed-up is $mn / (K(m+n))$. Bytes are parameters times the bytes per stored number
(4 for float32, 2 for float16, 1 for int8 plus one float32 scale per output channel).

Counts here cover the weight matrices (the part compression changes); the attention scores
$QK^\top$ and $PV$ cost $4 T C$ FLOPs per token per layer whatever the weights, and are not counted.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..nn.linear import Linear
from ..nn.module import Module
from ..nn.lowrank import LowRankLinear
from .surgery import slots


# --8<-- [start:break_even]
def break_even_rank(m: int, n: int) -> float:
    """K* = mn / (m + n): a rank-K factorisation of an m x n matrix is smaller iff K < K*."""
    return m * n / (m + n)


def theoretical_speedup(m: int, n: int, k: int) -> float:
    """Dense FLOPs over factorised FLOPs, mn / (k (m + n)); > 1 only below the break-even rank."""
    return m * n / (k * (m + n))
# --8<-- [end:break_even]


@dataclass
class LayerCost:
    """Cost of one layer for one token."""
    name: str
    kind: str
    shape: tuple          # (in, out) of the map the layer applies
    params: int           # numbers stored (including biases and scales)
    flops: int            # multiply-add FLOPs per token (2 per weight used)
    bytes: int            # storage of its weights
    nonzero: int          # non-zero weights (differs from params after pruning)

    def as_dict(self) -> dict:
        return asdict(self)


def _nbytes(arrays) -> int:
    return int(sum(a.size * a.dtype.itemsize for a in arrays if a is not None))


def _nnz(arrays) -> int:
    return int(sum(int((a != 0).sum()) for a in arrays if a is not None))


# --8<-- [start:layer_cost]
def layer_cost(name: str, layer) -> LayerCost | None:
    """LayerCost of a Linear-like layer (Linear, LowRankLinear, LoRALinear, QuantizedLinear), else None."""
    from .lora import LoRALinear
    from .quantize import QuantizedLinear
    bias = getattr(layer, "bias", None)
    bias_arrays = [bias.data] if bias is not None and hasattr(bias, "data") else []
    if isinstance(layer, LowRankLinear):
        m, n, k = layer.in_features, layer.out_features, layer.rank
        arrays = [layer.a.data, layer.b.data] + bias_arrays
        return LayerCost(name, f"lowrank(k={k})", (m, n), sum(a.size for a in arrays), 2 * k * (m + n),
                         _nbytes(arrays), _nnz(arrays))
    if isinstance(layer, LoRALinear):
        m, n, r = layer.in_features, layer.out_features, layer.rank
        arrays = [layer.weight.data, layer.lora_a.data, layer.lora_b.data] + bias_arrays
        flops = 2 * m * n + (0 if layer.merged else 2 * r * (m + n))
        return LayerCost(name, f"lora(r={r}{', merged' if layer.merged else ''})", (m, n),
                         sum(a.size for a in arrays), flops, _nbytes(arrays), _nnz(arrays))
    if isinstance(layer, QuantizedLinear):
        m, n = layer.in_features, layer.out_features
        extra = [a for a in (layer.scale, layer.bias) if a is not None]
        packed = -(-layer.qweight.size * layer.bits // 8)   # bits per weight, rounded up to bytes
        kind = layer.mode if layer.bits in (8, 16) else f"{layer.mode}({layer.bits}-bit)"
        return LayerCost(name, kind, (m, n), layer.qweight.size + sum(a.size for a in extra),
                         2 * m * n, packed + _nbytes(extra), _nnz([layer.qweight] + extra))
    if isinstance(layer, Linear):
        m, n = layer.in_features, layer.out_features
        arrays = [layer.weight.data] + bias_arrays
        return LayerCost(name, "dense", (m, n), sum(a.size for a in arrays), 2 * m * n,
                         _nbytes(arrays), _nnz(arrays))
    return None
# --8<-- [end:layer_cost]


def model_costs(model: Module) -> list[LayerCost]:
    """One LayerCost per Linear-like layer, plus a row 'other' for every remaining parameter
    (embeddings, norms; counted as parameters and bytes, FLOPs 0: a lookup is free, a norm is O(C))."""
    rows, seen = [], set()
    for name, _, _, child in slots(model):
        if any(name.startswith(s + ".") for s in seen):
            continue                                   # inside a layer already counted
        cost = layer_cost(name, child)
        if cost is not None:
            rows.append(cost)
            seen.add(name)
    children = {n: c for n, _, _, c in slots(model)}
    counted = {id(p) for name in seen for p in children[name].parameters()}
    rest = [p.data for p in model.parameters() if id(p) not in counted]
    if rest:
        rows.append(LayerCost("other", "embeddings/norms", (), sum(a.size for a in rest), 0,
                              _nbytes(rest), _nnz(rest)))
    return rows


def totals(rows: list[LayerCost]) -> dict:
    """Sum of params, FLOPs per token, bytes and non-zeros over rows."""
    return {key: int(sum(getattr(r, key) for r in rows)) for key in ("params", "flops", "bytes", "nonzero")}


def compare_table(before: list[LayerCost], after: list[LayerCost]) -> str:
    """A Markdown table, one line per layer: parameters, FLOPs/token and bytes before -> after."""
    old = {r.name: r for r in before}
    lines = ["| layer | kind | params | FLOPs/token | bytes |", "| --- | --- | --- | --- | --- |"]
    for r in after:
        b = old.get(r.name)
        fmt = (lambda key: f"{getattr(b, key):,} → {getattr(r, key):,}") if b else (lambda key: f"{getattr(r, key):,}")
        lines.append(f"| {r.name} | {r.kind} | {fmt('params')} | {fmt('flops')} | {fmt('bytes')} |")
    tb, ta = totals(before), totals(after)
    lines.append(f"| **total** | | {tb['params']:,} → {ta['params']:,} ({ta['params'] / tb['params']:.2f}×) "
                 f"| {tb['flops']:,} → {ta['flops']:,} ({ta['flops'] / max(tb['flops'], 1):.2f}×) "
                 f"| {tb['bytes']:,} → {ta['bytes']:,} ({ta['bytes'] / tb['bytes']:.2f}×) |")
    return "\n".join(lines)
