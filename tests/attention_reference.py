"""A naive float64 dense-attention reference with an explicit boolean mask, for the exact-kernel tests.

    S = q k^T / sqrt(D);  P = softmax(S where mask else -inf);  O = P v   (fully masked rows -> 0)

It is deliberately simple (host NumPy, float64, full (B,H,T,S) arrays) so it can be trusted by
inspection; the kernels under test are compared against it.
"""
from __future__ import annotations

import numpy as np


def reference_attention(q, k, v, mask):
    """q (B,H,T,D), k/v (B,H,S,D), mask broadcastable to (B,H,T,S), True = attend.
    Returns (out, grad_fn) where grad_fn(dout) -> (dq, dk, dv)."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    mask = np.broadcast_to(np.asarray(mask, bool), q.shape[:2] + (q.shape[2], k.shape[2]))
    scale = q.shape[-1] ** -0.5
    s = np.where(mask, q @ k.swapaxes(-1, -2) * scale, -np.inf)      # (B,H,T,S)
    row_max = np.max(s, axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    e = np.exp(s - row_max)                                           # masked -> exp(-inf) = 0
    z = e.sum(-1, keepdims=True)
    p = np.where(z > 0, e / np.where(z > 0, z, 1.0), 0.0)            # fully masked rows -> 0
    out = p @ v

    def grad_fn(dout):
        dout = np.asarray(dout, np.float64)
        dv = p.swapaxes(-1, -2) @ dout
        dp = dout @ v.swapaxes(-1, -2)
        ds = p * (dp - (dp * p).sum(-1, keepdims=True))
        return ds @ k * scale, ds.swapaxes(-1, -2) @ q * scale, dv

    return out, grad_fn


def causal_mask(T, S):
    """(T,S) bottom-right aligned causal mask: query i sees keys j <= i + S - T."""
    return np.arange(S)[None, :] <= np.arange(T)[:, None] + (S - T)


def padding_mask(key_padding_mask):
    """(B,S) True = real token  ->  (B,1,1,S)."""
    return np.asarray(key_padding_mask, bool)[:, None, None, :]
