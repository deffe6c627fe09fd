r"""Scaled dot-product attention, the exact (dense) kernel every other variant is compared with.

Forward, with $s = 1/\sqrt{D}$ and an additive mask $M$ ($0$ where allowed, $-\infty$ elsewhere):

$$S = s\,QK^\top + M,\qquad P = \mathrm{softmax}_{\text{rows}}(S),\qquad O = PV.$$

Backward, with $D_i = \sum_d dO_{id} O_{id}$ (the row sums of $dO \circ O$, equal to those of $dP \circ P$):

$$dV = P^\top dO,\quad dP = dO\,V^\top,\quad dS = P \circ (dP - D),\quad dQ = s\,dS\,K,\quad dK = s\,dS^\top Q.$$

A row whose keys are all masked has no softmax; its output and all its gradients are defined as 0.

**Layout.** The scores are stored *key-major*, as an array of shape (S, B, H, T) whose transposed view
is the usual (B, H, T, S). NumPy reduces along the last axis of many short rows slowly (a 64-wide row
max costs about as much as the matmul that made it), whereas a reduction over the leading axis is an
elementwise max/sum of long contiguous rows. The matmuls read and write the transposed views directly
(BLAS takes any unit-stride layout), so the layout costs no copies.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from .. import backend
from ..gradcheck import check_functional, check_module, float64_inputs, register
from .kernel import AttentionKernel, register_kernel
from .checks import check_attention_inputs
from .masks import attention_mask, causal_mask, mask_to_bias


class AttentionCache(NamedTuple):
    qs: Any         # (B,H,T,D) the queries times the scale s (dK = dS^T (sQ) reuses it)
    k: Any          # (B,H,S,D)
    v: Any          # (B,H,S,Dv)
    p: Any          # (S,B,H,T) the probabilities, key-major; p.transpose(1,2,3,0) is P (B,H,T,S)
    out: Any        # (B,H,T,Dv) the output, for the row sums D = rowsum(dO * O)
    scale: float


def key_major_bias(mask, dtype):
    """A mask broadcastable to (B,H,T,S) (boolean, True = attend, or an additive float bias) as a
    contiguous additive bias in the key-major layout (S|1, B|1, H|1, T|1) of the scores."""
    xp = backend.get_array_module(mask)
    m = mask.reshape((1,) * (4 - mask.ndim) + tuple(mask.shape))     # (..., T, S) -> (B|1,H|1,T|1,S|1)
    m = m.transpose(3, 0, 1, 2)                                        # -> (S|1,B|1,H|1,T|1)
    if m.dtype.kind == "b":
        return mask_to_bias(m, dtype)
    return xp.ascontiguousarray(m, dtype=dtype)


# --8<-- [start:attention_forward]
def attention_forward(q, k, v, mask=None, scale=None, *, bias=None):
    """O = softmax(s Q K^T + mask) V for q (B,H,T,D), k (B,H,S,D), v (B,H,S,Dv) -> (B,H,T,Dv).

    mask: boolean, broadcastable to (B,H,T,S), True where a query may attend (or an additive float
    bias with 0 / -inf). bias: the same already in key-major layout (see `key_major_bias`), for callers
    that cache it. Returns (out, AttentionCache); out is a (B,H,T,Dv) view of a (B,H,Dv,T) array and
    the cache holds it, so callers must not modify it in place.
    """
    check_attention_inputs("attention_forward", q, k, v, value_size_may_differ=True)
    xp = backend.get_array_module(q, k, v)
    B, H, T, D = q.shape
    S = k.shape[2]
    scale = D ** -0.5 if scale is None else scale
    if mask is not None:
        if bias is not None:
            raise ValueError("attention_forward: give either mask or bias, not both")
        bias = key_major_bias(mask, q.dtype)
    if bias is not None and (bias.ndim != 4 or any(n not in (1, m) for n, m in zip(bias.shape, (S, B, H, T)))):
        raise ValueError(f"attention_forward: mask does not broadcast to (B,H,T,S) = {(B, H, T, S)}")

    qs = q * scale                                                      # (B,H,T,D), s folded into Q
    p = xp.empty((S, B, H, T), dtype=q.dtype)                           # key-major score buffer
    xp.matmul(k, qs.swapaxes(-1, -2), out=p.transpose(1, 2, 0, 3))     # (B,H,S,D) @ (B,H,D,T) -> (B,H,S,T)
    if bias is not None:
        p += bias                                                       # masked scores -> -inf
    # softmax over the keys (axis 0), in place: p <- exp(p - max) / sum
    m = p.max(axis=0)                                                   # (S,B,H,T) -> (B,H,T)
    xp.maximum(m, xp.finfo(p.dtype).min, out=m)                         # all -inf row: avoid -inf - -inf
    p -= m
    xp.exp(p, out=p)
    denom = p.sum(axis=0)                                               # (S,B,H,T) -> (B,H,T), >= 1 ...
    xp.maximum(denom, 1, out=denom)                                     # ... unless the row is fully masked (0)
    p /= denom
    # O = P V computed as (V^T P^T)^T: BLAS reads the key-major P^T row by row (faster than as P)
    out = xp.matmul(v.swapaxes(-1, -2), p.transpose(1, 2, 0, 3))       # (B,H,Dv,S) @ (B,H,S,T) -> (B,H,Dv,T)
    out = out.swapaxes(-1, -2)                                          # -> (B,H,T,Dv) view
    return out, AttentionCache(qs, k, v, p, out, scale)
# --8<-- [end:attention_forward]


# --8<-- [start:attention_backward]
def attention_backward(dout, cache: AttentionCache):
    """Returns (dq, dk, dv) for dout (B,H,T,Dv); fully masked rows give zero dq."""
    xp = backend.get_array_module(dout)
    qs, k, v, p, out, scale = cache
    # fwd: O = P V  =>  dV = P^T dO
    dv = xp.matmul(p.transpose(1, 2, 0, 3), dout)                       # (B,H,S,T) @ (B,H,T,Dv) -> (B,H,S,Dv)
    # fwd: O = P V  =>  dP = dO V^T, built transposed (key-major) like p
    ds = xp.empty_like(p)                                               # (S,B,H,T)
    xp.matmul(v, dout.swapaxes(-1, -2), out=ds.transpose(1, 2, 0, 3))  # (B,H,S,Dv) @ (B,H,Dv,T) -> (B,H,S,T)
    # fwd: P = softmax(S)  =>  dS = P * (dP - D),  D = rowsum(dO * O)
    d = xp.einsum("bhtd,bhtd->bht", dout, out)                          # (B,H,T)
    ds -= d
    ds *= p
    # fwd: S = (sQ) K^T  =>  dQ = s dS K,  dK = dS^T (sQ)
    dq = xp.matmul(k.swapaxes(-1, -2), ds.transpose(1, 2, 0, 3))       # (dS K)^T = K^T dS^T: (B,H,D,S) @ (B,H,S,T)
    dq = dq.swapaxes(-1, -2)                                            # (B,H,D,T) -> (B,H,T,D) view
    dq *= scale
    dk = xp.matmul(ds.transpose(1, 2, 0, 3), qs)                        # (B,H,S,T) @ (B,H,T,D) -> (B,H,S,D)
    return dq, dk, dv
# --8<-- [end:attention_backward]


def attention_weights(cache: AttentionCache):
    """The probabilities P of a forward pass as a (B,H,T,S) view."""
    return cache.p.transpose(1, 2, 3, 0)


@register_kernel("dense")
class DenseAttention(AttentionKernel):
    """Exact softmax attention with O(T*S) memory; keeps P, exposed as `last_weights` (B,H,T,S).

    The causal mask is cached as an additive key-major -inf bias per (T, S, dtype, device), so a
    training step adds it to the scores in one broadcast pass instead of building a mask every call.
    """

    def __init__(self, n_head: int, head_dim: int, max_len: int | None = None, rng=None,
                 scale: float | None = None):
        super().__init__(n_head, head_dim, max_len, rng)
        self.scale = scale
        self.last_weights = None
        self._causal_bias = {}

    def _bias(self, T, S, causal, key_valid, dtype, device):
        bias = None
        if causal and T > 1:                                            # one query sees every key
            key = (T, S, str(dtype), device)
            bias = self._causal_bias.get(key)
            if bias is None:
                if len(self._causal_bias) > 16:
                    self._causal_bias.clear()
                mask = causal_mask(T, S, device).T[:, None, None, :]    # (T,S) -> (S,1,1,T)
                bias = self._causal_bias[key] = mask_to_bias(mask, dtype)
        if key_valid is not None:
            pad = mask_to_bias(key_valid.T[:, :, None, None], dtype)  # (B,S) -> (S,B,1,1)
            bias = pad if bias is None else bias + pad                 # -> (S,B,1,T)
        return bias

    def attend(self, q, k, v, causal, key_valid):
        T, S = q.shape[2], k.shape[2]
        bias = self._bias(T, S, causal, key_valid, q.dtype, backend.device_of(q))
        out, cache = attention_forward(q, k, v, scale=self.scale, bias=bias)
        self.cache = cache if self.keep_cache else None
        self.last_weights = attention_weights(cache) if self.keep_cache else None
        return out

    def backward(self, dout):
        return attention_backward(dout, self.saved_cache())

    def extra_repr(self) -> str:
        return f"n_head={self.n_head}, head_dim={self.head_dim}"


# -- gradient checks (float64) ------------------------------------------------------------------
@register("attention.attention_forward")
def _gradcheck_attention(device: str):
    results = []
    q, k, v = float64_inputs(device, 3, (2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 3))   # T != S, Dv != D
    causal = attention_mask(3, 5, causal=True, device=device)
    pad = backend.to_device(backend.xp_for("cpu").array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool), device)
    full = attention_mask(3, 5, causal=True, key_padding_mask=~pad)
    row_masked = backend.to_device(backend.xp_for("cpu").ones((1, 1, 3, 5), bool), device)
    row_masked[..., 1, :] = False                                      # query 1 sees nothing
    for label, mask in (("none", None), ("causal", causal), ("causal+pad", full), ("empty row", row_masked)):
        fwd = (lambda q_, k_, v_, m=mask: attention_forward(q_, k_, v_, mask=m))
        results.append(check_functional(f"attention.attention_forward[{label}]", fwd, attention_backward, [q, k, v]))
    return results


@register("attention.DenseAttention")
def _gradcheck_dense(device: str):
    results = []
    q, k, v = float64_inputs(device, 4, (2, 3, 4, 2), (2, 3, 4, 2), (2, 3, 4, 2))
    pad = backend.to_device(backend.xp_for("cpu").array([[1, 1, 0, 0], [0, 0, 0, 0]], bool), device)
    for causal, kpm in ((False, None), (True, None), (True, pad)):
        kernel = DenseAttention(3, 2).to(device, "float64")
        run = (lambda m, *a, c=causal, p=kpm: m.forward(*a, causal=c, key_padding_mask=None if p is None else ~p))
        results.append(check_module(f"attention.DenseAttention[causal={causal}, pad={kpm is not None}]",
                                    kernel, [q, k, v], run=run))
    q1, k1, v1 = float64_inputs(device, 5, (1, 1, 1, 3), (1, 1, 4, 3), (1, 1, 4, 3))      # T=1, H=1
    results.append(check_module("attention.DenseAttention[T=1]", DenseAttention(1, 3), [q1, k1, v1],
                                run=lambda m, *a: m.forward(*a, causal=True)))
    return results
