r"""Reformer LSH attention, Kitaev et al. 2020: attend only within hash buckets.

Hashing: a random rotation $R \in \mathbb{R}^{D \times b/2}$ per hash round; the bucket of a vector
$x$ is $h(x) = \arg\max [xR; -xR]$, so vectors at a small angle tend to share a bucket.
Per round, queries and keys are sorted by (bucket, position) (a stable order), cut into chunks of $C$,
and every query attends to the keys of its own chunk and of the previous one (wrapping around), an
$O(T \cdot 2C)$ banded softmax:

$$o^{(r)}_i = \sum_{j \in \mathcal{W}_r(i)} \frac{e^{s_{ij}}}{e^{\ell^{(r)}_i}} v_j,\qquad
\ell^{(r)}_i = \log\sum_{j \in \mathcal{W}_r(i)} e^{s_{ij}},\qquad s_{ij} = q_i^\top k_j / \sqrt D.$$

Rounds are combined by their logsumexp weights, $O_i = \sum_r w^{(r)}_i o^{(r)}_i$ with
$w^{(r)}_i = \mathrm{softmax}_r(\ell^{(r)}_i)$, which is exactly the softmax over the union of the
windows when they do not overlap (a key found in several rounds is counted once per round).

Shared QK (`shared_qk=True`): keys are the unit-normalised queries $\hat q_j = q_j/\|q_j\|$, and
`k` is ignored (its gradient is zero); a query then scores highest on itself, so its own score is
replaced by the finite constant $-10^5$ (the paper's choice): it attends to itself only when no other
key is available. With separate q and k (the default) both are hashed with the same rotations and
sorted separately; chunk $c$ of the sorted queries attends to chunks $c$ and $c-1$ of the sorted keys.

Backward (rotations and buckets are piecewise constant, so no gradient flows through the hashing):

$$do^{(r)} = w^{(r)} dO,\quad d\ell^{(r)} = w^{(r)}\big(dO\cdot o^{(r)} - \textstyle\sum_{r'} w^{(r')} dO\cdot o^{(r')}\big),\quad
ds = p \odot (dp - \mathrm{rowsum}(dp \odot p)) + p\, d\ell,$$

then $dq = ds\,k/\sqrt D$, $dk = ds^\top q / \sqrt D$, $dv = p^\top do$ in sorted order, the
look-back half scattered to the previous chunk, and everything gathered back through the inverse
permutation and summed over rounds.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from .. import backend
from ..backend import get_array_module
from ..gradcheck import float64_inputs, register
from ..nn.functional.softmax import softmax_forward, softmax_with_logsumexp
from .kernel import AttentionKernel, register_kernel
from .linear_attention import kernel_case, mha_case

SELF_SCORE = -1e5   # the score a shared-QK query gives itself (finite: used when nothing else is there)


# --8<-- [start:lsh_hash]
def lsh_buckets(x, rotations, n_buckets: int):
    """bucket = argmax([x R; -x R]) per round: x (B,H,T,D), rotations (D, n_hashes, b/2) -> (B,H,n_hashes,T)."""
    xp = get_array_module(x)
    B, H, T, _ = x.shape
    n_hashes = rotations.shape[1]
    if n_buckets == 1:
        return xp.zeros((B, H, n_hashes, T), dtype=xp.int64)
    proj = xp.einsum("bhtd,dnr->bhntr", x, rotations)      # (B,H,T,D) x (D,n,b/2) -> (B,H,n,T,b/2)
    return xp.concatenate([proj, -proj], axis=-1).argmax(axis=-1)   # (B,H,n,T,b) -> (B,H,n,T)


def sort_by_bucket(buckets):
    """Permutation (B,H,n,T) that orders positions by (bucket, position); its inverse."""
    xp = get_array_module(buckets)
    T = buckets.shape[-1]
    key = buckets * T + xp.arange(T)                       # unique keys: the order is stable by position
    perm = xp.argsort(key, axis=-1)                        # sorted slot -> position
    return perm, xp.argsort(perm, axis=-1)                 # position -> sorted slot
# --8<-- [end:lsh_hash]


class LSHCache(NamedTuple):
    q: Any          # (B,H,T,D) the queries (for the shared-QK normalisation backward)
    rnorm: Any      # (B,H,T,1) 1/|q| for shared QK, else None
    qs: Any         # (B,H,n,nc,C,D) sorted, chunked queries
    kx: Any         # (B,H,n,nc,2C,D) sorted keys with the previous chunk appended
    vx: Any         # (B,H,n,nc,2C,D) same for values
    p: Any          # (B,H,n,nc,C,2C) attention weights inside each window
    self_mask: Any  # (B,H,n,nc,C,2C) bool, the entries given the constant SELF_SCORE, or None
    o: Any          # (B,H,n,T,D) per-round outputs in original order
    w: Any          # (B,H,n,T) round weights
    perm_q: Any     # (B,H,n,L) padded permutations (L = nc*C, sentinel index T), and inverses (B,H,n,T)
    perm_k: Any
    inv_q: Any
    inv_k: Any
    lookback: bool
    shared_qk: bool


def _gather(x, perm):
    """x (B,H,N,D), perm (B,H,n,L) of indices into N -> (B,H,n,L,D)."""
    xp = get_array_module(x)
    B, H = x.shape[:2]
    b = xp.arange(B)[:, None, None, None]                  # (B,1,1,1)
    h = xp.arange(H)[None, :, None, None]                  # (1,H,1,1)
    return x[b, h, perm]                                   # (B,H,n,L,D)


def _gather_rounds(x, idx):
    """x (B,H,n,L,...), idx (B,H,n,T) of indices into L -> (B,H,n,T,...)."""
    xp = get_array_module(x)
    B, H, n = x.shape[:3]
    b = xp.arange(B)[:, None, None, None]
    h = xp.arange(H)[None, :, None, None]
    r = xp.arange(n)[None, None, :, None]
    return x[b, h, r, idx]


def _with_previous_chunk(x, lookback: bool):
    """(B,H,n,nc,C,...) -> (B,H,n,nc,2C,...): each chunk followed by the previous one (wrapping)."""
    xp = get_array_module(x)
    if not lookback:
        return x
    return xp.concatenate([x, xp.roll(x, 1, axis=3)], axis=4)


# --8<-- [start:lsh_forward]
def lsh_attention_forward(q, k, v, rotations, n_buckets: int, chunk: int, causal: bool = False,
                          key_valid=None, shared_qk: bool = False):
    """LSH attention with fixed rotations (D, n_hashes, n_buckets/2); T == S (self-attention)."""
    xp = get_array_module(q, k, v)
    B, H, T, D = q.shape
    rnorm = None
    if shared_qk:
        rnorm = 1.0 / xp.sqrt((q * q).sum(axis=-1, keepdims=True) + 1e-12)   # (B,H,T,1)
        k = q * rnorm                                      # keys: the unit-normalised queries
    n_hashes = rotations.shape[1]
    perm_q, inv_q = sort_by_bucket(lsh_buckets(q, rotations, n_buckets))   # (B,H,n,T)
    perm_k, inv_k = (perm_q, inv_q) if shared_qk else sort_by_bucket(lsh_buckets(k, rotations, n_buckets))
    C = min(chunk, T)
    nc = -(-T // C)                                        # chunks per round
    L, lookback = nc * C, nc > 1
    pad = xp.full((B, H, n_hashes, L - T), T, dtype=perm_q.dtype)   # sentinel slots -> index T
    perm_q, perm_k = (xp.concatenate([p_, pad], axis=-1) for p_ in (perm_q, perm_k))   # (B,H,n,L)
    zero = xp.zeros((B, H, 1, D), dtype=q.dtype)
    qe, ke = (xp.concatenate([a, zero], axis=2) for a in (q, k))          # (B,H,T+1,D), row T = 0
    ve = xp.concatenate([v, xp.zeros((B, H, 1, v.shape[3]), dtype=v.dtype)], axis=2)
    real = xp.ones((B, T + 1), dtype=bool) if key_valid is None else \
        xp.concatenate([key_valid, xp.zeros((B, 1), dtype=bool)], axis=1)
    real[:, T] = False                                     # the sentinel is never a key

    qs = _gather(qe, perm_q).reshape(B, H, n_hashes, nc, C, D)            # (B,H,n,L,D) -> (B,H,n,nc,C,D)
    kx = _with_previous_chunk(_gather(ke, perm_k).reshape(B, H, n_hashes, nc, C, D), lookback)  # (B,H,n,nc,2C,D)
    vx = _with_previous_chunk(_gather(ve, perm_k).reshape(B, H, n_hashes, nc, C, -1), lookback)  # (B,H,n,nc,2C,Dv)
    qpos = perm_q.reshape(B, H, n_hashes, nc, C)                          # positions of the queries
    kpos = _with_previous_chunk(perm_k.reshape(B, H, n_hashes, nc, C), lookback)   # (B,H,n,nc,2C)

    s = (qs @ kx.swapaxes(-1, -2)) * D ** -0.5             # (B,H,n,nc,C,D) @ (..,D,2C) -> (B,H,n,nc,C,2C)
    valid = real[xp.arange(B)[:, None, None, None, None], kpos][..., None, :]   # (B,H,n,nc,1,2C)
    if causal:
        valid = valid & (kpos[..., None, :] <= qpos[..., :, None])         # (B,H,n,nc,C,2C)
    s = xp.where(valid, s, -xp.inf)
    self_mask = None
    if shared_qk:
        self_mask = valid & (kpos[..., None, :] == qpos[..., :, None])
        s = xp.where(self_mask, SELF_SCORE, s)             # attend to itself only as a last resort
    p, lse = softmax_with_logsumexp(s)                     # (B,H,n,nc,C,2C), (B,H,n,nc,C); empty: 0, -inf
    o = p @ vx                                             # (B,H,n,nc,C,2C) @ (..,2C,D) -> (B,H,n,nc,C,D)

    o = _gather_rounds(o.reshape(B, H, n_hashes, L, -1), inv_q)   # (B,H,n,L,D) -> (B,H,n,T,D), unsorted
    lse = _gather_rounds(lse.reshape(B, H, n_hashes, L), inv_q)   # (B,H,n,T)
    # combine rounds: w_r = softmax_r(lse_r); rounds that saw nothing (lse = -inf) get weight 0
    w = softmax_forward(lse.swapaxes(2, 3))[0].swapaxes(2, 3)   # (B,H,n,T) -> (B,H,T,n) -> (B,H,n,T)
    out = (w[..., None] * o).sum(axis=2)                   # (B,H,n,T,D) -> (B,H,T,D)
    cache = LSHCache(q, rnorm, qs, kx, vx, p, self_mask, o, w, perm_q, perm_k, inv_q, inv_k,
                     lookback, shared_qk)
    return out, cache
# --8<-- [end:lsh_forward]


# --8<-- [start:lsh_backward]
def lsh_attention_backward(dout, cache: LSHCache):
    """Returns (dq, dk, dv); dk is zero with shared QK (k was not used)."""
    xp = get_array_module(dout)
    c = cache
    B, H, n, nc, C, D = c.qs.shape
    T, Dv, L = dout.shape[2], dout.shape[3], nc * C
    # fwd: out = sum_r w_r o_r  =>  do_r = w_r dout,  dw_r = dout . o_r
    do = c.w[..., None] * dout[:, :, None]                 # (B,H,n,T,D)
    dw = (dout[:, :, None] * c.o).sum(axis=-1)             # (B,H,n,T)
    # fwd: w = softmax_r(lse)  =>  dlse = w (dw - sum_r w dw)
    dlse = c.w * (dw - (c.w * dw).sum(axis=2, keepdims=True))
    # into sorted, chunked order (sentinel slots get zero upstream gradient)
    do = xp.concatenate([do, xp.zeros((B, H, n, 1, Dv), dtype=do.dtype)], axis=3)  # (B,H,n,T+1,Dv)
    dlse = xp.concatenate([dlse, xp.zeros((B, H, n, 1), dtype=dlse.dtype)], axis=3)
    do = _gather_rounds(do, c.perm_q).reshape(B, H, n, nc, C, Dv)       # (B,H,n,L,Dv) -> chunks
    dlse = _gather_rounds(dlse, c.perm_q).reshape(B, H, n, nc, C, 1)           # (B,H,n,L) -> (B,H,n,nc,C,1)
    # fwd: o = p @ vx  =>  dvx = p^T do,  dp = do vx^T
    dvx = c.p.swapaxes(-1, -2) @ do                        # (..,2C,C) @ (..,C,D) -> (B,H,n,nc,2C,D)
    dp = do @ c.vx.swapaxes(-1, -2)                        # (..,C,D) @ (..,D,2C) -> (B,H,n,nc,C,2C)
    # fwd: p = softmax(s), lse = logsumexp(s)  =>  ds = p (dp - rowsum(dp p)) + p dlse
    ds = c.p * (dp - (dp * c.p).sum(axis=-1, keepdims=True) + dlse)
    if c.self_mask is not None:
        ds = xp.where(c.self_mask, 0.0, ds)                # the self score was a constant
    # fwd: s = qs kx^T / sqrt(D)  =>  dqs = ds kx / sqrt(D),  dkx = ds^T qs / sqrt(D)
    dqs = (ds @ c.kx) * D ** -0.5                          # (..,C,2C) @ (..,2C,D) -> (B,H,n,nc,C,D)
    dkx = (ds.swapaxes(-1, -2) @ c.qs) * D ** -0.5         # (..,2C,C) @ (..,C,D) -> (B,H,n,nc,2C,D)
    if c.lookback:   # fwd: kx = [k_c ; k_{c-1}]  =>  the second half goes back to chunk c-1
        dkx = dkx[:, :, :, :, :C] + xp.roll(dkx[:, :, :, :, C:], -1, axis=3)   # (B,H,n,nc,C,D)
        dvx = dvx[:, :, :, :, :C] + xp.roll(dvx[:, :, :, :, C:], -1, axis=3)
    # fwd: sorted = x[perm]  =>  dx = sum over rounds of dsorted[inv]
    dq = _gather_rounds(dqs.reshape(B, H, n, L, D), c.inv_q).sum(axis=2)         # (B,H,T,D)
    dk = _gather_rounds(dkx.reshape(B, H, n, L, D), c.inv_k).sum(axis=2)         # (B,H,T,D)
    dv = _gather_rounds(dvx.reshape(B, H, n, L, -1), c.inv_k).sum(axis=2)        # (B,H,T,Dv)
    if c.shared_qk:
        # fwd: k = q * r, r = (|q|^2 + eps)^{-1/2}  =>  dq += r dk - r^3 (q . dk) q
        dq = dq + c.rnorm * dk - c.rnorm ** 3 * (c.q * dk).sum(axis=-1, keepdims=True) * c.q
        dk = xp.zeros_like(dk)
    return dq, dk, dv
# --8<-- [end:lsh_backward]


def draw_rotations(rng: np.random.Generator, head_dim: int, n_hashes: int, n_buckets: int) -> np.ndarray:
    """Random rotations (D, n_hashes, max(n_buckets // 2, 1)) with N(0, 1) entries, on the host."""
    return rng.standard_normal((head_dim, n_hashes, max(n_buckets // 2, 1)))


@register_kernel("reformer")
class ReformerLSH(AttentionKernel):
    """LSH attention. Options: `n_hashes` (rounds, default 2), `n_buckets` (1 or even, default 8),
    `chunk_size` (default 64), `shared_qk` (keys = normalised queries, k ignored), `redraw`
    (fresh rotations at every training forward, as in the paper; frozen in eval), `seed`.
    Self-attention only (S == T)."""

    supports_cross = False
    _buffers = ("rotations",)

    def __init__(self, n_head: int, head_dim: int, max_len=None, rng=None, n_hashes: int = 2,
                 n_buckets: int = 8, chunk_size: int = 64, shared_qk: bool = False, redraw: bool = True,
                 seed: int = 0):
        super().__init__(n_head, head_dim, max_len, rng)
        if n_hashes < 1 or chunk_size < 1:
            raise ValueError(f"reformer: n_hashes and chunk_size must be >= 1, got {n_hashes}, {chunk_size}")
        if n_buckets < 1 or (n_buckets > 1 and n_buckets % 2):
            raise ValueError(f"reformer: n_buckets must be 1 or even, got {n_buckets}")
        self.n_hashes, self.n_buckets, self.chunk_size = n_hashes, n_buckets, chunk_size
        self.shared_qk, self.redraw = shared_qk, redraw
        self.rng = rng if rng is not None else backend.host_rng(seed)
        self.rotations = draw_rotations(self.rng, head_dim, n_hashes, n_buckets).astype(np.float32)

    def attend(self, q, k, v, causal, key_valid):
        if k.shape[2] != q.shape[2]:
            raise ValueError(f"reformer: LSH attention is self-attention, needs S == T, got "
                             f"S={k.shape[2]}, T={q.shape[2]}")
        if q.shape[3] != self.head_dim:
            raise ValueError(f"reformer: head size {q.shape[3]} != the kernel's head_dim {self.head_dim}")
        if self.training and self.redraw:
            new = draw_rotations(self.rng, self.head_dim, self.n_hashes, self.n_buckets)
            self.rotations = backend.to_device(new, backend.device_of(self.rotations), self.rotations.dtype)
        rot = backend.to_device(self.rotations, backend.device_of(q), q.dtype)
        out, cache = lsh_attention_forward(q, k, v, rot, self.n_buckets, self.chunk_size, causal,
                                           key_valid, self.shared_qk)
        self.cache = cache if self.keep_cache else None
        return out

    def backward(self, dout):
        return lsh_attention_backward(dout, self.saved_cache())

    def extra_repr(self) -> str:
        return (f"n_hashes={self.n_hashes}, n_buckets={self.n_buckets}, chunk_size={self.chunk_size}, "
                f"shared_qk={self.shared_qk}")


@register("attention.reformer")
def _gradcheck_reformer(device: str):
    q, k, v = float64_inputs(device, 0, (2, 2, 7, 4), (2, 2, 7, 4), (2, 2, 7, 4))
    mask = backend.to_device(backend.host_rng(0).random((2, 7)) > 0.3, device)

    def kern(**opt):
        return ReformerLSH(2, 4, rng=backend.host_rng(3), **opt).to(device, "float64").eval()
    return [
        kernel_case("attention.reformer", kern(n_hashes=3, n_buckets=4, chunk_size=2), q, k, v, False, mask),
        kernel_case("attention.reformer(causal)", kern(n_hashes=2, n_buckets=4, chunk_size=3), q, k, v, True),
        kernel_case("attention.reformer(shared_qk,causal)",
                    kern(n_hashes=2, n_buckets=2, chunk_size=2, shared_qk=True), q, k, v, True, mask),
    ]


@register("attention.MultiHeadAttention.reformer")
def _gradcheck_mha_reformer(device: str):
    opts = {"n_hashes": 2, "n_buckets": 2, "chunk_size": 2}
    return [mha_case("MHA(reformer)", device, "reformer", opts, causal=True, pad=True, T=6),
            mha_case("MHA(reformer)", device, "reformer", dict(opts, shared_qk=True), pad=True, T=6)]
