r"""Memory-efficient exact attention: online softmax over key blocks (FlashAttention-style).

Forward, for each query block and then each key block, with running row maximum $m$, normaliser
$\ell$ and accumulator $a$ (scale $s = 1/\sqrt D$, $S^{(b)} = s\,Q K_b^\top$ masked with $-\infty$):

$$ m' = \max(m, \max_j S^{(b)}_{\cdot j}),\quad \ell' = e^{m-m'}\ell + \sum_j e^{S^{(b)}_{\cdot j}-m'},\quad
   a' = e^{m-m'} a + e^{S^{(b)} - m'} V_b ,$$

and at the end $O = a/\ell$, $L = m + \log \ell$ (the row logsumexp, the only extra thing stored).

Backward recomputes $P^{(b)} = \exp(S^{(b)} - L)$ block by block, with $D_i = \sum_d dO_{id} O_{id}$:

$$ dV_b = P^{(b)\top} dO,\quad dS^{(b)} = P^{(b)} \circ (dO\, V_b^\top - D),\quad
   dQ \mathrel{+}= s\, dS^{(b)} K_b,\quad dK_b = s\, dS^{(b)\top} Q .$$

Extra memory: O(block_q x block_k) for one tile plus O(T) for $L$; never $T \times S$.
Fully masked rows give $O = 0$, $L = -\infty$ and zero gradients.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np   # host-side test inputs only

from .. import backend
from ..backend import get_array_module
from ..gradcheck import check_functional, float64_inputs, register
from .band import gradcheck_mha_with_kernel
from .kernel import AttentionKernel, register_kernel


class FlashCache(NamedTuple):
    q: Any
    k: Any
    v: Any
    out: Any          # (B,H,T,D)
    lse: Any          # (B,H,T) row logsumexp L; P is recomputed from it instead of stored
    causal: bool
    key_valid: Any
    block_q: int
    block_k: int


def _tile_valid(i0, i1, j0, j1, T, S, causal, key_valid, xp):
    """bool (B|1, 1, bq, bk) mask of one tile, or None when every entry is valid."""
    ok = None
    if causal:                                         # bottom-right: key j <= i + S - T
        ok = (xp.arange(j0, j1)[None, :] <= xp.arange(i0, i1)[:, None] + (S - T))[None, None]
    if key_valid is not None:
        kp = key_valid[:, None, None, j0:j1]   # (B,1,1,bk)
        ok = kp if ok is None else ok & kp
    return ok


def _key_blocks(i0, i1, T, S, block_k, causal):
    """Key-block starts a query block [i0, i1) needs (causal: none entirely above the diagonal)."""
    end = min(S, i1 - 1 + (S - T) + 1) if causal else S
    return range(0, max(end, 0), block_k)


# --8<-- [start:flash_forward]
def flash_attention_forward(q, k, v, causal=False, key_valid=None, block_q=128, block_k=128):
    """Exact attention, tiled; returns (out (B,H,T,D), FlashCache with out and L only)."""
    xp = get_array_module(q)
    B, H, T, D = q.shape
    S = k.shape[2]
    scale = D ** -0.5
    out = xp.zeros_like(q)
    lse = xp.full((B, H, T), -xp.inf, dtype=q.dtype)
    for i0 in range(0, T, block_q):
        i1 = min(i0 + block_q, T)
        qb = q[:, :, i0:i1] * scale                                         # (B,H,bq,D)
        m = xp.full((B, H, i1 - i0, 1), -xp.inf, dtype=q.dtype)           # running max
        ell = xp.zeros((B, H, i1 - i0, 1), dtype=q.dtype)                  # running normaliser
        acc = xp.zeros((B, H, i1 - i0, D), dtype=q.dtype)                  # running P @ V
        for j0 in _key_blocks(i0, i1, T, S, block_k, causal):
            j1 = min(j0 + block_k, S)
            s = qb @ k[:, :, j0:j1].swapaxes(-1, -2)                       # (B,H,bq,D)@(B,H,D,bk) -> (B,H,bq,bk)
            ok = _tile_valid(i0, i1, j0, j1, T, S, causal, key_valid, xp)
            if ok is not None:
                s = xp.where(ok, s, -xp.inf)
            m_new = xp.maximum(m, s.max(axis=-1, keepdims=True))            # (B,H,bq,1)
            m_safe = xp.where(xp.isfinite(m_new), m_new, 0.0)              # all masked so far: no NaN
            p = xp.exp(s - m_safe)                                          # (B,H,bq,bk)
            corr = xp.exp(m - m_safe)                                       # rescales the old sums
            ell = ell * corr + p.sum(axis=-1, keepdims=True)
            acc = acc * corr + p @ v[:, :, j0:j1]                           # (B,H,bq,bk)@(B,H,bk,D)
            m = m_new
        out[:, :, i0:i1] = acc / xp.where(ell > 0, ell, 1.0)               # fully masked row -> 0
        lse[:, :, i0:i1] = xp.where(ell > 0, m + xp.log(xp.where(ell > 0, ell, 1.0)), -xp.inf)[..., 0]
    return out, FlashCache(q, k, v, out, lse, causal, key_valid, block_q, block_k)
# --8<-- [end:flash_forward]


# --8<-- [start:flash_backward]
def flash_attention_backward(dout, cache: FlashCache):
    """Returns (dq, dk, dv), recomputing P = exp(S - L) tile by tile."""
    q, k, v, out, lse, causal, key_valid, block_q, block_k = cache
    xp = get_array_module(dout)
    T, D = q.shape[2], q.shape[3]
    S = k.shape[2]
    scale = D ** -0.5
    # fwd: P = softmax(S)  =>  dS = P * (dP - D_i) with D_i = sum_j P_ij dP_ij = rowsum(dO * O)
    delta = (dout * out).sum(axis=-1, keepdims=True)                        # (B,H,T,1)
    lse_safe = xp.where(xp.isfinite(lse), lse, 0.0)[..., None]              # (B,H,T,1); masked rows: P = 0
    dq, dk, dv = xp.zeros_like(q), xp.zeros_like(k), xp.zeros_like(v)
    for i0 in range(0, T, block_q):
        i1 = min(i0 + block_q, T)
        qb, dob = q[:, :, i0:i1], dout[:, :, i0:i1]                         # (B,H,bq,D)
        for j0 in _key_blocks(i0, i1, T, S, block_k, causal):
            j1 = min(j0 + block_k, S)
            kb, vb = k[:, :, j0:j1], v[:, :, j0:j1]                         # (B,H,bk,D)
            s = qb @ kb.swapaxes(-1, -2) * scale                            # (B,H,bq,bk), recomputed
            ok = _tile_valid(i0, i1, j0, j1, T, S, causal, key_valid, xp)
            if ok is not None:
                s = xp.where(ok, s, -xp.inf)
            p = xp.exp(s - lse_safe[:, :, i0:i1])                           # (B,H,bq,bk) = P tile
            # fwd: O = P @ V  =>  dV = P^T dO,  dP = dO V^T
            dv[:, :, j0:j1] += p.swapaxes(-1, -2) @ dob                     # (B,H,bk,bq)@(B,H,bq,D)
            ds = p * (dob @ vb.swapaxes(-1, -2) - delta[:, :, i0:i1])       # (B,H,bq,bk)
            # fwd: S = s Q K^T  =>  dQ = s dS K,  dK = s dS^T Q
            dq[:, :, i0:i1] += ds @ kb * scale                              # (B,H,bq,bk)@(B,H,bk,D)
            dk[:, :, j0:j1] += ds.swapaxes(-1, -2) @ qb * scale             # (B,H,bk,bq)@(B,H,bq,D)
    return dq, dk, dv
# --8<-- [end:flash_backward]


@register_kernel("memory_efficient")
class MemoryEfficientAttention(AttentionKernel):
    """Exact attention in O(T + S) extra memory; options `block_size` (keys) and `query_block_size`."""

    def __init__(self, n_head, head_dim, max_len=None, rng=None, block_size: int = 128,
                 query_block_size: int | None = None):
        super().__init__(n_head, head_dim, max_len, rng)
        if int(block_size) < 1 or (query_block_size is not None and int(query_block_size) < 1):
            raise ValueError(f"memory_efficient: block sizes must be >= 1, got block_size={block_size}, "
                             f"query_block_size={query_block_size}")
        self.block_k = int(block_size)
        self.block_q = int(query_block_size or block_size)

    def attend(self, q, k, v, causal, key_valid):
        out, cache = flash_attention_forward(q, k, v, causal, key_valid, self.block_q, self.block_k)
        self.cache = cache if self.keep_cache else None
        return out

    def backward(self, dout):
        return flash_attention_backward(dout, self.saved_cache())

    def extra_repr(self) -> str:
        return f"block_q={self.block_q}, block_k={self.block_k}"


@register("attention.memory_efficient")
def _gradcheck_memory_efficient(device: str):
    q, k, v = float64_inputs(device, 3, (2, 2, 7, 4), (2, 2, 9, 4), (2, 2, 9, 4))   # S > T, odd
    kpm = backend.to_device(np.arange(9)[None, :] < np.array([[9], [6]]), device)    # (B,S) padding
    results = []
    for causal in (False, True):
        results.append(check_functional(
            f"attention.memory_efficient(causal={causal})",
            lambda q, k, v: flash_attention_forward(q, k, v, causal, kpm, 3, 4),
            flash_attention_backward, [q, k, v]))
    results.append(gradcheck_mha_with_kernel("memory_efficient", device, {"block_size": 4}, causal=True))
    return results
