r"""The ONNX graph of a GPT, built node by node with onnx's helper API (opset 17).

An ONNX file is a data-flow graph: named tensors (the weights, stored as *initializers*), and nodes
(``MatMul``, ``Add``, ``Softmax``, ...) that read named values and write new ones. A runtime such as
onnxruntime loads it, fuses and reorders what it can, and runs it; no Python is involved.

The graph here takes ``input_ids`` (B, T) int64 with B and T free and returns ``logits`` (B, T, V)
float32: the GPT's forward, one node per line of `GPT.forward`, `EncoderBlock.forward`,
`MultiHeadAttention.forward` (dense attention) and `FeedForward.forward`. Dropout is absent
(inference). The causal mask is a constant (T_max, T_max) table of 0 and $-\infty$ above the
diagonal, sliced by the runtime from the input's shape. With ``kv_cache=True`` the graph also takes
every block's cached keys and values and returns them extended (a `KVCache` as inputs and outputs),
so that decoding runs one token per step.

Opset 17 is the first with ``LayerNormalization``; GELU is written out from ``Erf`` or ``Tanh`` (its
own operator arrives in opset 20), so any runtime of the last years runs the file.

**int8 weights (QDQ).** A Linear that ``compress.quantize`` turned into ``QuantizedLinear(mode="int8")``
is stored as its int8 matrix $q$ (C_in, C_out) and float32 scales $s$ (C_out,), and the graph
dequantises it, ``DequantizeLinear(q, s, axis=1)`` $= q \odot s$, right before its ``MatMul``: the
QDQ ("quantize-dequantize") form, which keeps the file four times smaller for those matrices and
computes what our int8 model computes. Embeddings and norms stay float32, as in the int8 model.
"""
from __future__ import annotations

import numpy as np  # I/O at the edge: the graph's initializers are host arrays

from .. import backend
from ..compress.lora import LoRALinear
from ..compress.quantize import QuantizedLinear
from ..nn.activations import GELU, ReLU
from ..nn.linear import Linear
from ..nn.lowrank import LowRankLinear
from ..nn.module import Parameter

OPSET = 17
EXACT_KERNELS = ("dense", "memory_efficient")   # both compute softmax(q k^T / sqrt(D)) v exactly


def _onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install 'minitransformer[onnx]' "
                          "(onnx and onnxruntime)") from None
    return onnx, helper, numpy_helper


class GraphBuilder:
    """Collects nodes and initializers; every value gets a unique readable name."""

    def __init__(self):
        _, self.helper, self.numpy_helper = _onnx()
        self.nodes, self.initializers, self._used = [], [], set()

    def _fresh(self, name: str) -> str:
        base, n = name, 1
        while name in self._used:
            n += 1
            name = f"{base}_{n}"
        self._used.add(name)
        return name

    def graph_input(self, name: str) -> str:
        """Reserve the name of a graph input (nodes read it, none writes it)."""
        self._used.add(name)
        return name

    def const(self, name: str, array) -> str:
        """A tensor stored in the file (a weight, a shape, a scale)."""
        name = self._fresh(name)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        """One node with one output, named `name` (made unique)."""
        out = self._fresh(name)
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], name=out + ":" + op_type, **attrs))
        return out

    def op_multi(self, op_type: str, inputs: list[str], names: list[str], **attrs) -> list[str]:
        outs = [self._fresh(n) for n in names]
        self.nodes.append(self.helper.make_node(op_type, inputs, outs, name=outs[0] + ":" + op_type, **attrs))
        return outs


def _host(a) -> np.ndarray:
    return np.asarray(backend.to_numpy(a), dtype=np.float32)


# --8<-- [start:onnx_linear]
def linear(g: GraphBuilder, x: str, layer, name: str) -> str:
    """y = x @ W + b for a Linear, an int8 QuantizedLinear (DequantizeLinear -> MatMul), a
    LowRankLinear (x @ A @ B) or a LoRALinear (its adapters folded in: W0 + s A B)."""
    if isinstance(layer, Linear):
        y = g.op("MatMul", [x, g.const(f"{name}.weight", _host(layer.weight.data))], f"{name}.matmul")
    elif isinstance(layer, LoRALinear):
        w = layer.weight.data if layer.merged else layer.weight.data + layer.delta()      # (C_in, C_out)
        y = g.op("MatMul", [x, g.const(f"{name}.weight", _host(w))], f"{name}.matmul")
    elif isinstance(layer, QuantizedLinear) and layer.mode == "int8":
        q = g.const(f"{name}.qweight", np.asarray(backend.to_numpy(layer.qweight), np.int8))   # (C_in, C_out)
        scale = g.const(f"{name}.scale", _host(layer.scale))                                 # (C_out,)
        zero = g.const(f"{name}.zero_point", np.zeros(layer.out_features, np.int8))          # symmetric
        w = g.op("DequantizeLinear", [q, scale, zero], f"{name}.weight", axis=1)              # q * scale
        y = g.op("MatMul", [x, w], f"{name}.matmul")
    elif isinstance(layer, LowRankLinear):
        h = g.op("MatMul", [x, g.const(f"{name}.a", _host(layer.a.data))], f"{name}.xa")    # (B,T,K)
        y = g.op("MatMul", [h, g.const(f"{name}.b", _host(layer.b.data))], f"{name}.matmul")
    else:
        mode = f" (mode {layer.mode!r})" if isinstance(layer, QuantizedLinear) else ""
        raise ValueError(f"ONNX export: layer {name} is a {type(layer).__name__}{mode}; exportable are "
                         "Linear, LowRankLinear, LoRALinear and QuantizedLinear(mode='int8')")
    if layer.bias is None:
        return y
    bias = layer.bias.data if isinstance(layer.bias, Parameter) else layer.bias   # QuantizedLinear: a buffer
    return g.op("Add", [y, g.const(f"{name}.bias", _host(bias))], f"{name}.out")
# --8<-- [end:onnx_linear]


def layernorm(g: GraphBuilder, x: str, ln, name: str) -> str:
    return g.op("LayerNormalization", [x, g.const(f"{name}.weight", _host(ln.weight.data)),
                                       g.const(f"{name}.bias", _host(ln.bias.data))],
                name, axis=-1, epsilon=float(ln.eps))


def activation(g: GraphBuilder, x: str, act, name: str) -> str:
    """GELU (exact or tanh) written out, or Relu."""
    if isinstance(act, ReLU):
        return g.op("Relu", [x], name)
    if not isinstance(act, GELU):
        raise ValueError(f"ONNX export: activation {type(act).__name__} is not supported")
    half = g.const(f"{name}.half", np.float32(0.5))
    one = g.const(f"{name}.one", np.float32(1.0))
    if act.approximate == "tanh":                     # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        x3 = g.op("Mul", [g.op("Mul", [x, x], f"{name}.x2"), x], f"{name}.x3")
        inner = g.op("Add", [x, g.op("Mul", [x3, g.const(f"{name}.c", np.float32(0.044715))], f"{name}.cx3")],
                     f"{name}.poly")
        u = g.op("Mul", [inner, g.const(f"{name}.k", np.float32(np.sqrt(2 / np.pi)))], f"{name}.u")
        t = g.op("Tanh", [u], f"{name}.tanh")
    else:                                             # 0.5 x (1 + erf(x / sqrt 2))
        t = g.op("Erf", [g.op("Mul", [x, g.const(f"{name}.rsqrt2", np.float32(2 ** -0.5))], f"{name}.xs")],
                 f"{name}.erf")
    return g.op("Mul", [g.op("Mul", [x, half], f"{name}.halfx"), g.op("Add", [t, one], f"{name}.onep")], name)


# --8<-- [start:onnx_attention]
def attention(g: GraphBuilder, x: str, mha, mask: str, name: str, past: tuple | None = None) -> str:
    """Causal multi-head self-attention, as MultiHeadAttention.forward with the dense kernel.
    past: names of the cached (B,H,P,D) keys and values; the new ones are appended, and the results
    are named `{name}.present_key` / `{name}.present_value` (the next step's past)."""
    C, H, D = mha.d_model, mha.n_head, mha.head_dim
    qkv = linear(g, x, mha.qkv, f"{name}.qkv")                                     # (B,T,3C)
    qkv = g.op("Reshape", [qkv, g.const(f"{name}.shape5", np.array([0, 0, 3, H, D], np.int64))],
               f"{name}.qkv5")                                                     # (B,T,3C) -> (B,T,3,H,D)
    qkv = g.op("Transpose", [qkv], f"{name}.heads", perm=[2, 0, 3, 1, 4])          # -> (3,B,H,T,D)
    q, k, v = g.op_multi("Split", [qkv], [f"{name}.q", f"{name}.k", f"{name}.v"], axis=0)
    q, k, v = (g.op("Squeeze", [t, g.const(f"{name}.axis0", np.array([0], np.int64))], f"{t}.sq")
               for t in (q, k, v))                                                # (1,B,H,T,D) -> (B,H,T,D)
    if past is not None:                                                           # the KV cache
        k = g.op("Concat", [past[0], k], f"{name}.present_key", axis=2)              # (B,H,P,D) + (B,H,T,D) -> (B,H,P+T,D)
        v = g.op("Concat", [past[1], v], f"{name}.present_value", axis=2)
    kt = g.op("Transpose", [k], f"{name}.kT", perm=[0, 1, 3, 2])                   # (B,H,D,S), S = P+T
    scores = g.op("MatMul", [q, kt], f"{name}.scores")                             # (B,H,T,D) @ (B,H,D,S) -> (B,H,T,S)
    scores = g.op("Mul", [scores, g.const(f"{name}.scale", np.float32(D ** -0.5))], f"{name}.scaled")
    scores = g.op("Add", [scores, mask], f"{name}.masked")                         # + 0 / -inf above the diagonal
    p = g.op("Softmax", [scores], f"{name}.probs", axis=-1)
    y = g.op("MatMul", [p, v], f"{name}.context")                                  # (B,H,T,S) @ (B,H,S,D) -> (B,H,T,D)
    y = g.op("Transpose", [y], f"{name}.merge", perm=[0, 2, 1, 3])                 # -> (B,T,H,D)
    y = g.op("Reshape", [y, g.const(f"{name}.shape3", np.array([0, 0, C], np.int64))], f"{name}.y")  # -> (B,T,C)
    return linear(g, y, mha.proj, f"{name}.proj")
# --8<-- [end:onnx_attention]


# --8<-- [start:onnx_block]
def block(g: GraphBuilder, x: str, blk, mask: str, name: str, past: tuple | None = None) -> str:
    """EncoderBlock.forward(x, causal=True): pre-LN x + f(LN(x)) or post-LN LN(x + f(x))."""
    def ffn(h):
        f = activation(g, linear(g, h, blk.ffn.fc1, f"{name}.ffn.fc1"), blk.ffn.act, f"{name}.ffn.act")
        return linear(g, f, blk.ffn.fc2, f"{name}.ffn.fc2")
    if blk.norm == "pre":
        h = g.op("Add", [x, attention(g, layernorm(g, x, blk.ln1, f"{name}.ln1"), blk.attn, mask, f"{name}.attn", past)],
                 f"{name}.x1")                                                     # x1 = x + attn(LN(x))
        return g.op("Add", [h, ffn(layernorm(g, h, blk.ln2, f"{name}.ln2"))], f"{name}.out")  # x1 + ffn(LN(x1))
    h = layernorm(g, g.op("Add", [x, attention(g, x, blk.attn, mask, f"{name}.attn", past)], f"{name}.res1"),
                  blk.ln1, f"{name}.x1")                                           # x1 = LN(x + attn(x))
    return layernorm(g, g.op("Add", [h, ffn(h)], f"{name}.res2"), blk.ln2, f"{name}.out")
# --8<-- [end:onnx_block]


def check_exportable(model) -> None:
    """A GPT with an exact attention kernel; other families and kernels are refused by name."""
    if getattr(model, "kind", None) != "gpt":
        raise ValueError(f"ONNX export supports the 'gpt' family, got a {getattr(model, 'kind', type(model).__name__)!r} model")
    kernel = model.config.attention
    if kernel not in EXACT_KERNELS:
        raise ValueError(f"ONNX export: attention kernel {kernel!r} is not exported; the graph computes "
                         f"exact attention, which kernels {list(EXACT_KERNELS)} compute")
    if model.config.positional not in ("learned", "sinusoidal"):
        raise ValueError(f"ONNX export: positional={model.config.positional!r} is not exported; the graph adds "
                         "a table of absolute positions to the input ('learned' or 'sinusoidal')")


# --8<-- [start:onnx_gpt]
def gpt_to_onnx(model, name: str = "minitransformer-gpt", kv_cache: bool = False):
    """The onnx.ModelProto of a GPT: input_ids (B, T) int64 -> logits (B, T, V) float32.

    kv_cache: also take each block's cached keys and values, past_key.i / past_value.i (B,H,P,D)
    (P = 0 at the start), and return them extended, present_key.i / present_value.i (B,H,P+T,D);
    the new tokens then sit at positions P..P+T-1, which must stay below block_size.
    """
    onnx, helper, _ = _onnx()
    check_exportable(model)
    c = model.config
    H, D = c.n_head, c.d_model // c.n_head
    g = GraphBuilder()
    ids = g.graph_input("input_ids")
    pasts = [(g.graph_input(f"past_key.{i}"), g.graph_input(f"past_value.{i}")) for i in range(c.n_layer)] \
        if kv_cache else [None] * c.n_layer
    T = g.op("Shape", [ids], "T", start=1, end=2)                                 # (1,) the input's length
    P = (g.op("Shape", [pasts[0][0]], "P", start=2, end=3) if kv_cache            # (1,) the cached length
         else g.const("zeros1", np.array([0], np.int64)))
    end = g.op("Add", [P, T], "P_plus_T")                                          # (1,)
    axis0 = g.const("axis0", np.array([0], np.int64))
    x = g.op("Gather", [g.const("wte.weight", _host(model.wte.weight.data)), ids], "tok_emb", axis=0)  # (B,T,C)
    table = (model.wpe.weight.data if hasattr(model.wpe, "weight") else model.wpe.pe)                  # (T_max, C)
    pos = g.op("Slice", [g.const("wpe.table", _host(table)), P, end, axis0], "pos_emb")                 # (T, C): P..P+T-1
    x = g.op("Add", [x, pos], "embed")                                             # (B,T,C) + (T,C)
    causal = np.triu(np.full((c.block_size, c.block_size), -np.inf, np.float32), k=1)
    starts = g.op("Concat", [P, g.const("zero1", np.array([0], np.int64))], "mask_starts", axis=0)   # [P, 0]
    ends = g.op("Concat", [end, end], "mask_ends", axis=0)                                            # [P+T, P+T]
    mask = g.op("Slice", [g.const("causal_mask.table", causal), starts, ends], "causal_mask")       # (T, P+T)
    for i, blk in enumerate(model.blocks):
        x = block(g, x, blk, mask, f"blocks.{i}", pasts[i])
    if model.ln_f is not None:
        x = layernorm(g, x, model.ln_f, "ln_f")
    head = g.op("Transpose", ["wte.weight"], "wte.T", perm=[1, 0])                # tied head: W_te^T (C, V)
    g.op("MatMul", [x, head], "logits")                                            # (B,T,C) @ (C,V) -> (B,T,V)
    inputs = [helper.make_tensor_value_info(ids, onnx.TensorProto.INT64, ["B", "T"])]
    outputs = [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["B", "T", c.vocab_size])]
    if kv_cache:
        for i in range(c.n_layer):
            for part in ("key", "value"):
                inputs.append(helper.make_tensor_value_info(f"past_{part}.{i}", onnx.TensorProto.FLOAT, ["B", H, "P", D]))
                g.nodes.append(helper.make_node("Identity", [f"blocks.{i}.attn.present_{part}"],
                                                [f"present_{part}.{i}"], name=f"present_{part}.{i}"))
                outputs.append(helper.make_tensor_value_info(f"present_{part}.{i}", onnx.TensorProto.FLOAT,
                                                             ["B", H, "P+T", D]))
    graph = helper.make_graph(g.nodes, name, inputs, outputs, initializer=g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="minitransformer")
    proto.ir_version = 8                                   # what opset 17 needs; older runtimes read it
    onnx.checker.check_model(proto)
    return proto
# --8<-- [end:onnx_gpt]
