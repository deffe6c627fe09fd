r"""ALiBi (Press, Smith and Lewis, 2022): positions as a linear penalty on the attention scores.

No position is added to the input. Instead every head $h$ subtracts from the score of query $i$
and key $j$ a penalty proportional to their distance,

$$S_{hij} = s\,q_i^\top k_j - m_h\,(i - j), \qquad j \le i \text{ (causal)},$$

with a fixed slope per head from a geometric sequence: for $H$ a power of two,
$m_h = 2^{-8h/H}$, $h = 1..H$ (for $H = 8$: $1/2, 1/4, \dots, 1/256$), so some heads look far and
others near. (For other $H$, the paper's recipe: the slopes of the power of two $H' < H$ nearest
$H$, then every other slope of $2H'$.) Without a causal mask the penalty is $-m_h |i - j|$.

**Backward.** The bias is a constant added to the scores: $\partial S / \partial q$ and
$\partial S / \partial k$ are those of dense attention, and no gradient flows into the bias. So the
backward is exactly `attention_backward`, with $P$ the probabilities of the biased scores.

**Positions with a KV cache.** Causal masks align to the bottom right (query $i$ of $T$ sits at
absolute position $i + S - T$ among $S$ keys), and so does the penalty: $-m_h\,(i + S - T - j)$.
A cached decoding step therefore needs no offset: the distance is read off $T$ and $S$. And
because the penalty depends on the distance only, nothing in it is tied to the training length.
"""
from __future__ import annotations

import math

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from .. import backend
from ..gradcheck import check_module, float64_inputs, register
from .kernel import register_kernel
from .masks import mask_to_bias
from .scaled_dot_product import DenseAttention


# --8<-- [start:alibi_slopes]
def alibi_slopes(n_head: int) -> np.ndarray:
    """The head slopes m_1..m_H (host float64): 2^(-8h/H) for H a power of two, else the recipe of
    the paper (the nearest lower power of two, then every other slope of twice that)."""
    if isinstance(n_head, bool) or not isinstance(n_head, int) or n_head < 1:
        raise ValueError(f"alibi_slopes: n_head must be a positive int, got {n_head!r}")

    def geometric(n):
        return 2.0 ** (-8.0 * np.arange(1, n + 1) / n)                 # (n,)

    low = 2 ** int(math.floor(math.log2(n_head)))
    if low == n_head:
        return geometric(n_head)
    return np.concatenate([geometric(low), geometric(2 * low)[0::2][:n_head - low]])
# --8<-- [end:alibi_slopes]


# --8<-- [start:alibi_bias]
def alibi_bias(T: int, S: int, slopes, causal: bool, dtype, device: str = "cpu"):
    """The additive bias in the key-major layout of the dense kernel's scores, (S, 1, H, T):
    -m_h * (i + S - T - j) for key j and query i (bottom-right aligned), -inf above the causal
    diagonal; -m_h * |i + S - T - j| without a causal mask."""
    query_pos = np.arange(S - T, S, dtype=np.float64)                  # (T,) absolute positions
    key_pos = np.arange(S, dtype=np.float64)                           # (S,)
    distance = query_pos[None, :] - key_pos[:, None]                   # (S, 1) - ... -> (S, T), i - j
    if not causal:
        distance = np.abs(distance)
    penalty = -np.asarray(slopes, np.float64)[None, :, None] * distance[:, None, :]  # (S,1,T)*(1,H,1) -> (S,H,T)
    if causal:
        penalty = np.where(distance[:, None, :] < 0, -np.inf, penalty) # keys after the query
    bias = backend.to_device(penalty[:, None], device, dtype)          # (S,H,T) -> (S,1,H,T)
    return bias
# --8<-- [end:alibi_bias]


# --8<-- [start:alibi_kernel]
@register_kernel("alibi")
class ALiBiAttention(DenseAttention):
    """Dense attention with the ALiBi penalty on its scores; chosen by GPTConfig(positional="alibi").

    The bias (penalty, causal -inf, and padding) is cached per (T, S, causal, dtype, device) like
    the dense kernel's causal bias, so a training step adds it to the scores in one broadcast pass.
    The backward is DenseAttention's: the bias is a constant.
    """

    def __init__(self, n_head: int, head_dim: int, max_len: int | None = None, rng=None,
                 scale: float | None = None):
        super().__init__(n_head, head_dim, max_len, rng, scale=scale)
        self.slopes = alibi_slopes(n_head)                             # (H,) host float64, fixed

    def attend(self, q, k, v, causal, key_valid):
        if not causal and q.shape[2] != k.shape[2]:
            raise ValueError(f"ALiBi without a causal mask measures |i - j| within one sequence: it needs as "
                             f"many keys as queries, got T={q.shape[2]}, S={k.shape[2]} (cross-attention "
                             "has no ALiBi; use another kernel there)")
        return super().attend(q, k, v, causal, key_valid)

    def _bias(self, T, S, causal, key_valid, dtype, device):
        key = ("alibi", T, S, causal, str(dtype), device)
        bias = self._causal_bias.get(key)
        if bias is None:
            if len(self._causal_bias) > 16:
                self._causal_bias.clear()
            bias = self._causal_bias[key] = alibi_bias(T, S, self.slopes, causal, dtype, device)
        if key_valid is not None:
            bias = bias + mask_to_bias(key_valid.T[:, :, None, None], dtype)   # (S,1,H,T) + (S,B,1,1)
        return bias
# --8<-- [end:alibi_kernel]


# -- gradient checks (float64) --------------------------------------------------------------------
@register("attention.alibi")
def _gradcheck_alibi(device: str):
    results = []
    q, k, v = float64_inputs(device, 40, (2, 3, 4, 2), (2, 3, 4, 2), (2, 3, 4, 2))   # H = 3: not a power of 2
    pad = backend.to_device(np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool), device)   # True on real keys
    for causal, valid in ((True, None), (False, None), (True, pad)):
        run = (lambda m, *a, c=causal, p=valid: m.forward(*a, causal=c,
                                                          key_padding_mask=None if p is None else ~p))
        results.append(check_module(f"attention.alibi[causal={causal}, pad={valid is not None}]",
                                    ALiBiAttention(3, 2).to(device, "float64"), [q, k, v], run=run))
    q1, k1, v1 = float64_inputs(device, 41, (1, 2, 1, 3), (1, 2, 5, 3), (1, 2, 5, 3))   # a KV-cache step
    results.append(check_module("attention.alibi[T=1, S=5]", ALiBiAttention(2, 3), [q1, k1, v1],
                                run=lambda m, *a: m.forward(*a, causal=True)))
    return results
