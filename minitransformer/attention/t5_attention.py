r"""T5's attention: a learned additive score bias, no $1/\sqrt{D}$ scale, no biases in the projections.

The functional pair computes attention with an additive score bias $P$ (the relative position bias,
shape (1 or B, H, T, S)) and a mask $M$ ($0$ / $-\infty$):

$$S = s\,QK^\top + P + M,\qquad A = \mathrm{softmax}_{\text{rows}}(S),\qquad O = AV,$$

with $s = 1$ in T5: the scale is folded into the initialisation of $W^Q$ (standard deviation
$(C D)^{-1/2}$ instead of $C^{-1/2}$), so at the start $q^\top k$ has the spread that
$q^\top k / \sqrt D$ has in the original Transformer. Backward:

$$dV = A^\top dO,\quad dA = dO\,V^\top,\quad dS = A \circ (dA - \mathrm{rowsum}(dA \circ A)),\quad
dQ = s\,dS\,K,\quad dK = s\,dS^\top Q,\quad dP = \textstyle\sum_{\text{broadcast axes}} dS .$$

The bias gradient is the score gradient itself, summed over the axes the bias was broadcast along
(the batch). This is why T5 attention has its own pair here rather than a kernel behind the
`AttentionKernel` door: the kernels return $(dQ, dK, dV)$ only, and the dense kernel's fast
key-major layout stays untouched for every other caller. The scores are kept in the plain
(B, H, T, S) layout and the softmax is the package's one ``softmax_forward``.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from .. import backend
from ..gradcheck import check_functional, check_module, float64_inputs, register
from ..nn.checks import check_array
from ..nn.functional.softmax import softmax_backward, softmax_forward
from ..nn.linear import Linear
from ..nn.module import Module
from .checks import check_attention_inputs
from .kv_cache import KVCache
from .masks import attention_mask, mask_to_bias


class BiasedAttentionCache(NamedTuple):
    q: Any              # (B,H,T,D)
    k: Any              # (B,H,S,D)
    v: Any              # (B,H,S,D)
    softmax: Any        # SoftmaxCache holding A (B,H,T,S)
    scale: float
    bias_shape: tuple   # the shape of the score bias, to sum its gradient over broadcast axes (or None)


# --8<-- [start:biased_attention]
def biased_attention_forward(q, k, v, bias=None, mask=None, scale: float = 1.0):
    """O = softmax(s Q K^T + bias + mask) V: q (B,H,T,D), k, v (B,H,S,D), bias and the boolean mask
    (True = attend) broadcastable to (B,H,T,S) -> (B,H,T,D)."""
    xp = backend.get_array_module(q, k, v)
    scores = xp.matmul(q, k.swapaxes(-1, -2))                            # (B,H,T,D) @ (B,H,D,S) -> (B,H,T,S)
    if scale != 1.0:
        scores *= scale
    if bias is not None:
        scores += bias                                                  # (1|B,H,T,S) broadcast
    if mask is not None:
        scores += mask_to_bias(mask, scores.dtype)                      # masked scores -> -inf
    a, sm_cache = softmax_forward(scores)                               # fully masked rows -> 0
    out = xp.matmul(a, v)                                               # (B,H,T,S) @ (B,H,S,D) -> (B,H,T,D)
    bias_shape = None if bias is None else tuple(bias.shape)
    return out, BiasedAttentionCache(q, k, v, sm_cache, scale, bias_shape)


def biased_attention_backward(dout, cache: BiasedAttentionCache):
    """Returns (dq, dk, dv, dbias, None); dbias has the shape of the forward's bias (None without one)."""
    q, k, v, sm_cache, scale, bias_shape = cache
    a = sm_cache.y
    # fwd: O = A V  =>  dV = A^T dO,  dA = dO V^T
    dv = a.swapaxes(-1, -2) @ dout                                      # (B,H,S,T) @ (B,H,T,D) -> (B,H,S,D)
    da = dout @ v.swapaxes(-1, -2)                                      # (B,H,T,D) @ (B,H,D,S) -> (B,H,T,S)
    # fwd: A = softmax(S)  =>  dS = A * (dA - rowsum(dA * A))
    ds = softmax_backward(da, sm_cache)                                 # (B,H,T,S)
    # fwd: S = s Q K^T + bias  =>  dbias = dS summed over the axes the bias was broadcast along
    dbias = None
    if bias_shape is not None:
        axes = tuple(i for i, n in enumerate(bias_shape) if n == 1 and ds.shape[i] != 1)
        dbias = ds.sum(axis=axes, keepdims=True) if axes else ds.copy()
    # fwd: S = s Q K^T  =>  dQ = s dS K,  dK = s dS^T Q
    dq = ds @ k                                                         # (B,H,T,S) @ (B,H,S,D) -> (B,H,T,D)
    dk = ds.swapaxes(-1, -2) @ q                                        # (B,H,S,T) @ (B,H,T,D) -> (B,H,S,D)
    if scale != 1.0:
        dq *= scale
        dk *= scale
    return dq, dk, dv, dbias, None
# --8<-- [end:biased_attention]


class T5AttentionCache(NamedTuple):
    B: int
    T: int          # query length
    S: int          # key length
    has_bias: bool  # whether a position bias was added (its gradient is returned)


class T5Attention(Module):
    """Multi-head self- (cross=False) or cross-attention (cross=True) as in T5.

    No biases in the four projections and no 1/sqrt(D) in the scores; W_Q starts with std
    (C D)^-1/2, W_K and W_V with C^-1/2, W_O with C^-1/2. ``forward(x, context=None,
    position_bias=None, causal=False, key_padding_mask=None, kv_cache=None)``; ``backward(dout)``
    returns (dx, dposition_bias) for self-attention and (dx, dcontext) for cross-attention.
    """

    def __init__(self, d_model: int, n_head: int, cross: bool = False, rng: np.random.Generator | None = None):
        super().__init__()
        if not isinstance(d_model, int) or not isinstance(n_head, int) or d_model <= 0 or n_head <= 0 \
                or d_model % n_head:
            raise ValueError(f"T5Attention: d_model and n_head must be positive ints with n_head dividing "
                             f"d_model, got d_model={d_model!r}, n_head={n_head!r}")
        rng = rng if rng is not None else backend.host_rng(0)
        C, H = d_model, n_head
        self.d_model, self.n_head, self.head_dim, self.cross = C, H, C // H, cross
        # --8<-- [start:t5_attention_init]
        self.q = Linear(C, C, bias=False, rng=rng, std=(C * self.head_dim) ** -0.5)   # 1/sqrt(D) folded in
        self.kv = Linear(C, 2 * C, bias=False, rng=rng, std=C ** -0.5)
        self.o = Linear(C, C, bias=False, rng=rng, std=C ** -0.5)
        # --8<-- [end:t5_attention_init]
        self.cache = None
        self.attention_cache = None
        self.last_weights = None

    def _heads(self, y, B, T):
        return y.reshape(B, T, self.n_head, self.head_dim).transpose(0, 2, 1, 3)   # (B,T,C) -> (B,H,T,D)

    # --8<-- [start:t5_attention_forward]
    def forward(self, x, context=None, position_bias=None, causal: bool = False, key_padding_mask=None,
                kv_cache: KVCache | None = None):
        """x (B,T,C) -> (B,T,C); context (B,S,C) for cross-attention; position_bias (1,H,T,S)."""
        C, H, D = self.d_model, self.n_head, self.head_dim
        check_array(x, "T5Attention input", ndim=3, last_dim=C, dtype=self.o.weight.dtype,
                    device=self.o.weight.device)
        B, T, _ = x.shape
        q = self._heads(self.q(x), B, T)                                        # (B,T,C) -> (B,H,T,D)
        if self.cross and kv_cache is not None and kv_cache.length > 0:
            k, v = kv_cache.keys, kv_cache.values          # the encoder's keys/values never change
        else:
            source = self._source(x, context, B)
            S = source.shape[1]
            kv = self.kv(source).reshape(B, S, 2, H, D).transpose(2, 0, 3, 1, 4)  # (B,S,2C) -> (2,B,H,S,D)
            k, v = kv[0], kv[1]
            if kv_cache is not None:
                k, v = kv_cache.append(k, v)               # (B,H,S,D), S = cached + new
        key_valid = check_attention_inputs("T5Attention", q, k, v, causal, key_padding_mask)
        S = k.shape[2]
        if position_bias is not None:
            check_array(position_bias, "T5Attention position_bias", ndim=4, dtype=q.dtype)
            if position_bias.shape[1:] != (H, T, S) or position_bias.shape[0] not in (1, B):
                raise ValueError(f"T5Attention: position_bias must have shape (1 or {B}, {H}, {T}, {S}), "
                                 f"got {tuple(position_bias.shape)}")
        mask = attention_mask(T, S, causal and T > 1, None if key_valid is None else ~key_valid,
                              device=backend.device_of(q))
        y, cache = biased_attention_forward(q, k, v, position_bias, mask)      # (B,H,T,D)
        y = y.transpose(0, 2, 1, 3).reshape(B, T, C)                            # (B,H,T,D) -> (B,T,C)
        keep = self.keep_cache and kv_cache is None
        self.attention_cache = cache if keep else None
        self.last_weights = cache.softmax.y if self.keep_cache else None        # (B,H,T,S)
        self.cache = T5AttentionCache(B, T, S, position_bias is not None) if keep else None
        return self.o(y)
    # --8<-- [end:t5_attention_forward]

    # --8<-- [start:t5_attention_backward]
    def backward(self, dout):
        if self.cache is None:
            raise RuntimeError("T5Attention.backward: no forward pass was cached (forward ran inside "
                               "no_grad() or with a kv_cache, or backward was called twice)")
        B, T, S, has_bias = self.cache
        C, H, D = self.d_model, self.n_head, self.head_dim
        xp = backend.get_array_module(dout)
        # fwd: out = y W_O  =>  dy = dout W_O^T
        dy = self._heads(self.o.backward(dout), B, T)                           # (B,T,C) -> (B,H,T,D)
        dq, dk, dv, dbias, _ = biased_attention_backward(dy, self.attention_cache)
        self.cache = self.attention_cache = None
        # fwd: q = x W_Q  =>  dx = dq W_Q^T
        dx = self.q.backward(dq.transpose(0, 2, 1, 3).reshape(B, T, C))        # (B,H,T,D) -> (B,T,C)
        # fwd: (k, v) = split(source W_KV)  =>  d(source W_KV) = merge(dk, dv)
        dkv = xp.stack([dk, dv]).transpose(1, 3, 0, 2, 4).reshape(B, S, 2 * C)  # (2,B,H,S,D) -> (B,S,2C)
        dsource = self.kv.backward(dkv)                                         # (B,S,C)
        if self.cross:
            return dx, dsource
        dx += dsource                                      # self-attention: x fed both paths
        return dx, (dbias if has_bias else None)
    # --8<-- [end:t5_attention_backward]

    def _source(self, x, context, B: int):
        if not self.cross:
            if context is not None:
                raise ValueError("T5Attention: self-attention takes no context; build it with cross=True")
            return x
        if context is None:
            raise ValueError(f"T5Attention(cross=True) needs context: the encoder output (B, S, {self.d_model})")
        check_array(context, "T5Attention context", ndim=3, last_dim=self.d_model, dtype=x.dtype,
                    device=backend.device_of(x))
        if context.shape[0] != B:
            raise ValueError(f"T5Attention: context batch size {context.shape[0]} differs from the input's {B}")
        return context

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_head={self.n_head}, {'cross' if self.cross else 'self'}, no scale"


# -- gradient checks (float64) ------------------------------------------------------------------
def _pad(device, rows):
    return backend.to_device(~np.array(rows, bool), device)            # True on padding


@register("t5.biased_attention")
def _gradcheck_biased_attention(device: str):
    results = []
    q, k, v, bias = float64_inputs(device, 50, (2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 4), (1, 2, 3, 5))
    causal = attention_mask(3, 5, causal=True, device=device)
    empty = backend.to_device(np.ones((1, 1, 3, 5), bool), device)
    empty[..., 1, :] = False                                           # query 1 sees nothing
    for label, mask, scale in (("none", None, 1.0), ("causal", causal, 1.0), ("empty row", empty, 1.0),
                               ("scaled", causal, 0.5)):
        fwd = (lambda a, b, c, p, m=mask, s=scale: biased_attention_forward(a, b, c, p, m, s))
        results.append(check_functional(f"t5.biased_attention[{label}]", fwd, biased_attention_backward,
                                        [q, k, v, bias]))
    return results


@register("t5.T5Attention")
def _gradcheck_t5_attention(device: str):
    results = []
    pad = _pad(device, [[1, 1, 1, 0], [1, 1, 1, 1]])
    (x, bias) = float64_inputs(device, 51, (2, 4, 6), (1, 3, 4, 4))
    for causal, kpm in ((False, pad), (True, None)):
        attn = T5Attention(6, 3, rng=backend.host_rng(52)).to(device, "float64")
        results.append(check_module(f"t5.T5Attention[relative bias, causal={causal}]", attn, [x, bias],
                                    run=lambda m, a, p, c=causal, kp=kpm: m.forward(a, position_bias=p, causal=c,
                                                                                    key_padding_mask=kp)))
    cross = T5Attention(6, 2, cross=True, rng=backend.host_rng(53)).to(device, "float64")
    x2, ctx = float64_inputs(device, 54, (2, 3, 6), (2, 5, 6))
    mem_pad = _pad(device, [[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    results.append(check_module("t5.T5Attention[cross+pad]", cross, [x2, ctx],
                                run=lambda m, a, c: m.forward(a, c, key_padding_mask=mem_pad)))
    return results
