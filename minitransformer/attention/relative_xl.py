r"""Transformer-XL's relative attention: scores from content and from distance, and the relative shift.

Query $i$ of a segment of $T$ positions attends over $K = M + T$ keys: $M$ positions of memory and
the segment itself. With queries $q_i$, keys $k_j$, sinusoidal distance embeddings $R_\delta$
projected by a learned $W_R$, and two learned vectors per head, $u$ (content bias) and $v$
(position bias), shared by every layer (Dai et al. 2019, eq. 4):

$$A_{ij} = \underbrace{q_i^\top k_j}_{(a)} + \underbrace{q_i^\top W_R R_{i-j}}_{(b)}
         + \underbrace{u^\top k_j}_{(c)} + \underbrace{v^\top W_R R_{i-j}}_{(d)}
       = (q_i + u)^\top k_j + \big[(q_i + v)^\top r_\delta\big]_{\delta = i + M - j},
\qquad r = R\, W_R .$$

Terms (a)+(c) are one matrix product over the keys. Terms (b)+(d) are one matrix product over the
$K$ distances $\delta = K-1, \dots, 0$ (column $c$ of the raw product holds distance $K-1-c$):
$BD^{raw}_{ic} = (q_i + v)^\top r_{K-1-c}$. Entry $(i, j)$ needs distance $i + M - j$, that is column
$c = j + T - 1 - i$: every row is the same table shifted by one more place. `rel_shift` moves the rows
with a pad and a reshape instead of a gather; it is exact on every causal entry ($j \le i + M$) and
fills the rest with values the causal mask then discards.

Backward: the shift is a fixed linear map that copies entries, so its gradient is the same pad and
reshape run backwards; the two products give
$d(q+u) = dA\,K$, $dk = dA^\top (q+u)$, $d(q+v) = dBD^{raw}\, r$, $dr = dBD^{raw\top}(q+v)$, and
$du = \sum_{b,i} d(q+u)$, $dv = \sum_{b,i} d(q+v)$ (u and v are added to every query).
"""
from __future__ import annotations

from typing import Any, NamedTuple

from .. import backend
from ..gradcheck import check_functional, check_module, float64_inputs, register
from ..nn.checks import check_array
from ..nn.functional.softmax import SoftmaxCache, softmax_backward, softmax_forward
from ..nn.linear import Linear
from ..nn.module import Module
from .masks import causal_mask


# --8<-- [start:rel_shift]
def rel_shift(x):
    """(..., T, K) scores indexed by distance column c (distance K-1-c) -> (..., T, K) indexed by key j.

    out[..., i, j] = x[..., i, j + T - 1 - i] wherever j <= i + K - T (the causal entries).
    Pad one zero column on the left, read the (T, K+1) buffer as (K+1, T), drop its first row and
    read the rest as (T, K): each row slides one place further left than the row above it.
    """
    xp = backend.get_array_module(x)
    *lead, T, K = x.shape
    padded = xp.zeros((*lead, T, K + 1), dtype=x.dtype)
    padded[..., 1:] = x                                               # (..., T, K) -> (..., T, K+1)
    shifted = padded.reshape(*lead, K + 1, T)[..., 1:, :]             # -> (..., K+1, T) -> (..., K, T)
    return shifted.reshape(*lead, T, K)                               # (..., K, T) -> (..., T, K)


def rel_shift_backward(dout):
    """The transpose of rel_shift: the same steps in reverse (each entry goes back where it came
    from; the gradient of the padding column is dropped)."""
    xp = backend.get_array_module(dout)
    *lead, T, K = dout.shape
    dshifted = dout.reshape(*lead, K, T)                              # (..., T, K) -> (..., K, T)
    dpadded = xp.concatenate([xp.zeros((*lead, 1, T), dout.dtype), dshifted], axis=-2)  # -> (..., K+1, T)
    return dpadded.reshape(*lead, T, K + 1)[..., 1:].copy()           # -> (..., T, K+1) -> (..., T, K)
# --8<-- [end:rel_shift]


# --8<-- [start:rel_shift_reference]
def rel_shift_reference(x):
    """The plain gather rel_shift replaces: out[i, j] = x[i, j + T - 1 - i] on causal entries, 0 above."""
    xp = backend.get_array_module(x)
    T, K = x.shape[-2:]
    i = xp.arange(T)[:, None]                                         # (T, 1)
    j = xp.arange(K)[None, :]                                         # (1, K)
    column = j + T - 1 - i                                            # (T, K) distance column of (i, j)
    causal = j <= i + K - T
    gathered = xp.take_along_axis(x, xp.broadcast_to(xp.minimum(column, K - 1), x.shape), axis=-1)
    return xp.where(causal, gathered, 0)
# --8<-- [end:rel_shift_reference]


class RelativeAttentionCache(NamedTuple):
    qu: Any         # (B,H,T,D) q + u
    qv: Any         # (B,H,T,D) q + v
    k: Any          # (B,H,K,D)
    val: Any        # (B,H,K,D) the values
    r: Any          # (H,K,D) projected distance embeddings
    p: Any          # (B,H,T,K) attention probabilities (masked entries 0)
    keep: Any       # (T,K) the causal mask
    scale: float


# --8<-- [start:relative_attention]
def relative_scores(q, k, r, u, v):
    """A = (q + u) k^T + rel_shift((q + v) r^T), before scaling and masking.
    q (B,H,T,D), k (B,H,K,D), r (H,K,D) for distances K-1..0, u and v (H,D)."""
    qu = q + u[:, None, :]                                            # (B,H,T,D) + (H,1,D)
    qv = q + v[:, None, :]
    ac = qu @ k.swapaxes(-1, -2)                                      # (B,H,T,D) @ (B,H,D,K) -> (B,H,T,K)
    bd_raw = qv @ r.swapaxes(-1, -2)                                  # (B,H,T,D) @ (H,D,K) -> (B,H,T,K)
    return ac + rel_shift(bd_raw), qu, qv


def relative_attention_forward(q, k, val, r, u, v):
    r"""out = softmax(mask(A / sqrt(D))) val, causal aligned bottom-right (key j seen iff j <= i + K - T).
    q (B,H,T,D); k, val (B,H,K,D) with K >= T; r (H,K,D); u, v (H,D). Returns (out, cache)."""
    xp = backend.get_array_module(q)
    T, D, K = q.shape[2], q.shape[3], k.shape[2]
    scale = D ** -0.5
    scores, qu, qv = relative_scores(q, k, r, u, v)
    scores *= scale
    keep = causal_mask(T, K, backend.device_of(q))                    # (T, K)
    scores = xp.where(keep, scores, -xp.inf)                          # the shift's garbage is masked here
    p, _ = softmax_forward(scores)                                    # (B,H,T,K)
    out = p @ val                                                     # (B,H,T,K) @ (B,H,K,D) -> (B,H,T,D)
    return out, RelativeAttentionCache(qu, qv, k, val, r, p, keep, scale)


def relative_attention_backward(dout, cache: RelativeAttentionCache):
    """Returns (dq, dk, dval, dr, du, dv)."""
    qu, qv, k, val, r, p, keep, scale = cache
    # fwd: out = P val  =>  dval = P^T dout,  dP = dout val^T
    dval = p.swapaxes(-1, -2) @ dout                                  # (B,H,K,T) @ (B,H,T,D) -> (B,H,K,D)
    dp = dout @ val.swapaxes(-1, -2)                                  # (B,H,T,D) @ (B,H,D,K) -> (B,H,T,K)
    # fwd: P = softmax(scale * A) (masked entries have P = 0, so they get dA = 0)
    da = softmax_backward(dp, SoftmaxCache(p)) * scale       # (B,H,T,K)
    # fwd: A = AC + rel_shift(BD_raw)  =>  dAC = dA,  dBD_raw = rel_shift^T(dA)
    dbd_raw = rel_shift_backward(da)
    # term 1: AC = (q + u) k^T  =>  d(q+u) = dA k,  dk = dA^T (q + u)
    dqu = da @ k                                                      # (B,H,T,K) @ (B,H,K,D) -> (B,H,T,D)
    dk = da.swapaxes(-1, -2) @ qu                                     # (B,H,K,T) @ (B,H,T,D) -> (B,H,K,D)
    # term 2: BD_raw = (q + v) r^T  =>  d(q+v) = dBD_raw r,  dr = sum_b dBD_raw^T (q + v)
    dqv = dbd_raw @ r                                                 # (B,H,T,K) @ (H,K,D) -> (B,H,T,D)
    dr = (dbd_raw.swapaxes(-1, -2) @ qv).sum(axis=0)                  # (B,H,K,T) @ (B,H,T,D) -> (H,K,D)
    # u and v are added to every query of every sequence: their gradients sum over b and i
    du = dqu.sum(axis=(0, 2))                                         # (B,H,T,D) -> (H,D)
    dv = dqv.sum(axis=(0, 2))
    return dqu + dqv, dk, dval, dr, du, dv
# --8<-- [end:relative_attention]


class RelativeAttentionState(NamedTuple):
    B: int
    T: int          # queries
    K: int          # rows of the context (memory + segment)
    S: int          # keys attended (K, or cached + K when decoding)


class RelativeMultiHeadAttention(Module):
    """Multi-head attention with Transformer-XL's relative positions.

    forward(context, query_len, pos_emb, u, v): context (B, K, C) is [memory; segment] (already
    normalised), the last query_len rows ask the queries; pos_emb (>= S, C) holds the sinusoidal R
    of distances ending at 0 (its last S rows are used: distances S-1..0); u, v (H, D) are the
    model's shared biases. backward(dout) -> (dcontext, du, dv). The projection W_R is this layer's.
    """

    def __init__(self, d_model: int, n_head: int, bias: bool = True, rng=None, out_std: float | None = None):
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"RelativeMultiHeadAttention: d_model={d_model} is not divisible by n_head={n_head}")
        rng = rng if rng is not None else backend.host_rng(0)
        C = d_model
        self.d_model, self.n_head, self.head_dim = C, n_head, C // n_head
        self.query = Linear(C, C, bias=bias, rng=rng)             # queries from the segment only
        self.key_value = Linear(C, 2 * C, bias=bias, rng=rng)     # keys and values from memory + segment
        self.position = Linear(C, C, bias=False, rng=rng)         # W_R: distance embeddings -> keys
        self.proj = Linear(C, C, bias=bias, rng=rng, std=out_std)
        self.cache = self.state = None

    # --8<-- [start:relative_mha_forward]
    def forward(self, context, query_len: int, pos_emb, u, v, kv_cache=None):
        C, H, D = self.d_model, self.n_head, self.head_dim
        check_array(context, "RelativeMultiHeadAttention context", ndim=3, last_dim=C,
                    dtype=self.proj.weight.dtype, device=self.proj.weight.device)
        B, K, _ = context.shape
        T = query_len
        if not 1 <= T <= K:
            raise ValueError(f"RelativeMultiHeadAttention: query_len must lie in [1, K={K}], got {T}")
        q = self.query(context[:, K - T:]).reshape(B, T, H, D).transpose(0, 2, 1, 3)  # (B,T,C) -> (B,H,T,D)
        kv = self.key_value(context).reshape(B, K, 2, H, D).transpose(2, 0, 3, 1, 4)  # (B,K,2C) -> (2,B,H,K,D)
        k, val = kv[0], kv[1]
        if kv_cache is not None:
            k, val = kv_cache.append(k, val)                      # (B,H,S,D): cached positions first
        S = k.shape[2]
        if pos_emb.shape[0] < S:
            raise ValueError(f"RelativeMultiHeadAttention: pos_emb has {pos_emb.shape[0]} distances, "
                             f"{S} keys need {S}")
        r = self.position(pos_emb[pos_emb.shape[0] - S:])         # (S,C) @ (C,C) -> (S,C): r = R W_R
        r = r.reshape(S, H, D).transpose(1, 0, 2)                 # (S,C) -> (H,S,D)
        out, cache = relative_attention_forward(q, k, val, r, u, v)
        y = out.transpose(0, 2, 1, 3).reshape(B, T, C)            # (B,H,T,D) -> (B,T,C)
        keep = self.keep_cache and kv_cache is None               # no backward into earlier decoding steps
        self.cache = cache if keep else None
        self.state = RelativeAttentionState(B, T, K, S) if keep else None
        return self.proj(y)
    # --8<-- [end:relative_mha_forward]

    # --8<-- [start:relative_mha_backward]
    def backward(self, dout):
        if self.cache is None:
            raise RuntimeError("RelativeMultiHeadAttention.backward: no forward pass was cached")
        xp = backend.get_array_module(dout)
        B, T, K, S = self.state
        C, H, D = self.d_model, self.n_head, self.head_dim
        # fwd: out = y W_O  =>  dy = dout W_O^T
        dy = self.proj.backward(dout).reshape(B, T, H, D).transpose(0, 2, 1, 3)   # (B,T,C) -> (B,H,T,D)
        dq, dk, dval, dr, du, dv = relative_attention_backward(dy, self.cache)
        self.cache = None
        # fwd: r = R W_R  =>  dW_R = R^T dr (R is a fixed table: its own gradient is not needed)
        self.position.backward(dr.transpose(1, 0, 2).reshape(S, C))             # (H,S,D) -> (S,C)
        # fwd: (k, val) = split(context W_KV)  =>  d(context W_KV) = merge(dk, dval)
        dkv = xp.empty((B, K, 2, H, D), dtype=dout.dtype)
        heads = dkv.transpose(2, 0, 3, 1, 4)                                    # (B,K,2,H,D) -> (2,B,H,K,D) view
        heads[0], heads[1] = dk, dval
        dcontext = self.key_value.backward(dkv.reshape(B, K, 2 * C))            # (B,K,2C) -> (B,K,C)
        # fwd: q = context[-T:] W_Q  =>  the query rows get dq W_Q^T as well
        dcontext[:, K - T:] += self.query.backward(dq.transpose(0, 2, 1, 3).reshape(B, T, C))
        return dcontext, du, dv
    # --8<-- [end:relative_mha_backward]

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_head={self.n_head}"


# --8<-- [start:sliding_kv_cache]
class SlidingKVCache:
    """Keys and values of the last `mem_len` positions of one layer, for Transformer-XL decoding.

    Relative attention puts no position into the keys (distance enters through r = R W_R), so a
    key computed once stays valid however far the window slides: each step appends the new keys,
    attends over all of them, and then keeps only the newest mem_len for the next step.
    """

    def __init__(self, mem_len: int):
        if not isinstance(mem_len, int) or mem_len < 0:
            raise ValueError(f"SlidingKVCache: mem_len must be an int >= 0, got {mem_len!r}")
        self.mem_len = mem_len
        self.k = self.v = None

    @property
    def length(self) -> int:
        """Positions kept for the next step (at most mem_len)."""
        return 0 if self.k is None else self.k.shape[2]

    def append(self, k, v):
        """k, v (B, H, t, D) -> every key and value to attend over now, (B, H, length + t, D)."""
        xp = backend.get_array_module(k)
        if self.k is not None:
            if k.shape[:2] != self.k.shape[:2] or k.shape[3] != self.k.shape[3]:
                raise ValueError(f"SlidingKVCache.append: expected (B, H, t, D) with (B, H, D) = "
                                 f"{self.k.shape[:2] + self.k.shape[3:]}, got {tuple(k.shape)}")
            k = xp.concatenate([self.k, k], axis=2)                # (B,H,length,D) + (B,H,t,D)
            v = xp.concatenate([self.v, v], axis=2)
        start = max(k.shape[2] - self.mem_len, 0)
        self.k, self.v = k[:, :, start:].copy(), v[:, :, start:].copy()   # the newest mem_len
        return k, v

    def reset(self) -> None:
        self.k = self.v = None
# --8<-- [end:sliding_kv_cache]

    def __repr__(self) -> str:
        return f"SlidingKVCache(length={self.length}, mem_len={self.mem_len})"


# -- gradient checks (float64) ------------------------------------------------------------------
@register("attention.rel_shift")
def _gradcheck_rel_shift(device: str):
    results = []
    for shape in ((2, 3, 4, 4), (1, 2, 3, 7), (1, 1, 1, 5)):                  # K = T, K > T (memory), T = 1
        (x,) = float64_inputs(device, 21, shape)
        results.append(check_functional(f"attention.rel_shift{shape}", lambda a: (rel_shift(a), None),
                                        lambda d, _: (rel_shift_backward(d),), [x]))
    return results


@register("attention.relative_attention_xl")
def _gradcheck_relative_attention(device: str):
    results = []
    for T, K, H in ((3, 3, 2), (3, 5, 2), (1, 4, 1)):                         # no memory, memory, T = 1
        q, k, val, r, u, v = float64_inputs(device, 22, (2, H, T, 4), (2, H, K, 4), (2, H, K, 4), (H, K, 4),
                                            (H, 4), (H, 4))
        results.append(check_functional(f"attention.relative_attention_xl[T={T}, K={K}, H={H}]",
                                        relative_attention_forward, relative_attention_backward,
                                        [q, k, val, r, u, v]))
    return results


@register("attention.RelativeMultiHeadAttention_xl")
def _gradcheck_relative_mha(device: str):
    results = []
    for T, K in ((4, 4), (3, 6)):
        attn = RelativeMultiHeadAttention(6, 2, rng=backend.host_rng(23)).to(device, "float64")
        context, pos, u, v = float64_inputs(device, 24, (2, K, 6), (K, 6), (2, 3), (2, 3))
        results.append(check_module(f"attention.RelativeMultiHeadAttention_xl[T={T}, K={K}]", attn,
                                    [context, u, v], run=lambda m, c, a, b: m.forward(c, T, pos, a, b),
                                    backward=lambda m, d: m.backward(d)))
    return results
