r"""Linformer, Wang et al. 2020: low-rank attention by projecting keys and values along the sequence.

Learned $E, F \in \mathbb{R}^{K \times N_{max}}$ (of which the first $S$ columns are used) compress the
$S$ keys and values to $K$ rows:

$$\tilde K = E_{:, :S} K,\qquad \tilde V = F_{:, :S} V,\qquad O = \mathrm{softmax}\Big(\frac{Q \tilde K^\top}{\sqrt D}\Big)\tilde V,$$

which costs $O(S K D)$. Each projected row mixes every position, the future included, so Linformer
cannot be causal (it refuses). Padded keys are zeroed before the projection.

Backward: the softmax-attention gradients $d\tilde K, d\tilde V$, then

$$dK = E_{:, :S}^\top d\tilde K,\quad dV = F_{:, :S}^\top d\tilde V,\quad
dE_{:, :S} \mathrel{+}= \sum_{b,h} d\tilde K\, K^\top,\quad dF_{:, :S} \mathrel{+}= \sum_{b,h} d\tilde V\, V^\top.$$
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from .. import backend
from ..backend import get_array_module
from ..gradcheck import float64_inputs, register
from ..nn.functional.softmax import SoftmaxCache, softmax_backward, softmax_forward
from ..nn.module import Parameter
from .kernel import AttentionKernel, register_kernel
from .linear_attention import kernel_case, mha_case


class LinformerCache(NamedTuple):
    q: Any          # (B,H,T,D)
    k: Any          # (B,H,S,D) keys after padding (zeros on padded rows)
    v: Any          # (B,H,S,D) values after padding
    e: Any          # (K,S) the used columns of E
    f: Any          # (K,S) the used columns of F
    kp: Any         # (B,H,K,D) projected keys
    vp: Any         # (B,H,K,D) projected values
    p: Any          # (B,H,T,K) attention weights over the K projected slots
    mask: Any       # (B,1,S,1) or None


# --8<-- [start:linformer_forward]
def linformer_forward(q, k, v, e, f, key_valid=None):
    """Softmax attention of q over E k and F v; e, f are (K, S) (the used columns)."""
    xp = get_array_module(q, k, v)
    mask = None
    if key_valid is not None:
        mask = key_valid[:, None, :, None].astype(k.dtype)   # (B,S) -> (B,1,S,1)
        k, v = k * mask, v * mask                          # padded keys contribute nothing
    kp = e @ k                                             # (K,S) @ (B,H,S,D) -> (B,H,K,D)
    vp = f @ v                                             # (K,S) @ (B,H,S,D) -> (B,H,K,D)
    s = (q @ kp.swapaxes(-1, -2)) * q.shape[-1] ** -0.5    # (B,H,T,D) @ (B,H,D,K) -> (B,H,T,K)
    p, _ = softmax_forward(s)                              # (B,H,T,K), the package's stable softmax
    out = p @ vp                                           # (B,H,T,K) @ (B,H,K,D) -> (B,H,T,D)
    return out, LinformerCache(q, k, v, e, f, kp, vp, p, mask)


def linformer_backward(dout, cache: LinformerCache):
    """Returns (dq, dk, dv, de, df) with de, df of shape (K, S)."""
    c = cache
    scale = c.q.shape[-1] ** -0.5
    # fwd: out = p @ vp  =>  dvp = p^T dout,  dp = dout vp^T
    dvp = c.p.swapaxes(-1, -2) @ dout                      # (B,H,K,T) @ (B,H,T,D) -> (B,H,K,D)
    dp = dout @ c.vp.swapaxes(-1, -2)                      # (B,H,T,D) @ (B,H,D,K) -> (B,H,T,K)
    # fwd: p = softmax(s)  =>  ds = p * (dp - rowsum(dp * p))
    ds = softmax_backward(dp, SoftmaxCache(c.p))
    # fwd: s = scale q kp^T  =>  dq = scale ds kp,  dkp = scale ds^T q
    dq = (ds @ c.kp) * scale                               # (B,H,T,K) @ (B,H,K,D) -> (B,H,T,D)
    dkp = (ds.swapaxes(-1, -2) @ c.q) * scale              # (B,H,K,T) @ (B,H,T,D) -> (B,H,K,D)
    # fwd: kp = e @ k  =>  dk = e^T dkp,  de = sum_{b,h} dkp k^T   (same for vp = f @ v)
    dk = c.e.T @ dkp                                       # (S,K) @ (B,H,K,D) -> (B,H,S,D)
    dv = c.f.T @ dvp
    de = (dkp @ c.k.swapaxes(-1, -2)).sum(axis=(0, 1))     # (B,H,K,D) @ (B,H,D,S) -> (K,S)
    df = (dvp @ c.v.swapaxes(-1, -2)).sum(axis=(0, 1))     # (B,H,K,D) @ (B,H,D,S) -> (K,S)
    if c.mask is not None:                                 # fwd: k = k * mask
        dk, dv = dk * c.mask, dv * c.mask
    return dq, dk, dv, de, df
# --8<-- [end:linformer_forward]


@register_kernel("linformer")
class Linformer(AttentionKernel):
    """Linformer attention. Options: `k` (projected length K, default 64), `share_kv` (one
    projection E for keys and values). Needs `max_len` (the width of E and F); shared by all heads.
    E, F ~ N(0, 1/max_len), the scale of the default init of a Linear(max_len, K)."""

    supports_causal = False

    def __init__(self, n_head: int, head_dim: int, max_len=None, rng=None, k: int = 64,
                 share_kv: bool = False):
        super().__init__(n_head, head_dim, max_len, rng)
        if max_len is None or max_len < 1:
            raise ValueError(f"linformer needs max_len (the width of its projections E, F), got {max_len}")
        if k < 1:
            raise ValueError(f"linformer: k must be >= 1, got {k}")
        rng = rng if rng is not None else backend.host_rng(0)
        std = max_len ** -0.5
        self.k, self.share_kv = k, share_kv
        self.E = Parameter((rng.standard_normal((k, max_len)) * std).astype(np.float32))
        self.F = None if share_kv else Parameter((rng.standard_normal((k, max_len)) * std).astype(np.float32))

    def attend(self, q, k, v, causal, key_valid):
        S = k.shape[2]
        if S > self.max_len:
            raise ValueError(f"linformer: key length {S} exceeds max_len {self.max_len} "
                             "(its projections E, F have max_len columns)")
        if q.dtype != self.E.dtype:
            raise TypeError(f"linformer: inputs are {q.dtype} but E is {self.E.dtype} (call .to(dtype=...))")
        e = self.E.data[:, :S]                             # (K, max_len) -> (K, S): the first S columns
        f = e if self.F is None else self.F.data[:, :S]
        out, cache = linformer_forward(q, k, v, e, f, key_valid)
        self.cache = cache if self.keep_cache else None
        return out

    def backward(self, dout):
        dq, dk, dv, de, df = linformer_backward(dout, self.saved_cache())
        S = de.shape[1]
        self.E.grad[:, :S] += de
        if self.F is None:
            self.E.grad[:, :S] += df                       # shared projection: both paths add into E
        else:
            self.F.grad[:, :S] += df
        return dq, dk, dv

    def extra_repr(self) -> str:
        return f"k={self.k}, max_len={self.max_len}, share_kv={self.share_kv}"


@register("attention.linformer")
def _gradcheck_linformer(device: str):
    q, k, v = float64_inputs(device, 0, (2, 2, 5, 4), (2, 2, 6, 4), (2, 2, 6, 4))
    mask = backend.to_device(backend.host_rng(0).random((2, 6)) > 0.3, device)
    kern = Linformer(2, 4, max_len=8, k=3, rng=backend.host_rng(1)).to(device, "float64")
    shared = Linformer(2, 4, max_len=6, k=4, share_kv=True, rng=backend.host_rng(2)).to(device, "float64")
    return [kernel_case("attention.linformer", kern, q, k, v, False, mask),
            kernel_case("attention.linformer(share_kv)", shared, q, k, v)]


@register("attention.MultiHeadAttention.linformer")
def _gradcheck_mha_linformer(device: str):
    return [mha_case("MHA(linformer)", device, "linformer", {"k": 3}, pad=True, max_len=7),
            mha_case("MHA(linformer)", device, "linformer", {"k": 4, "share_kv": True}, max_len=5)]
