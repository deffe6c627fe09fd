r"""Longformer attention: a local band plus user-chosen global tokens (e.g. [CLS] at position 0).

* every query sees its band $|j - p_i| \le W$ (causal: $p_i - W \le j \le p_i$) **minus** the global
  positions, plus the global keys (band $\cup$ global, each key once, one joint softmax);
* a global query sees every key (a dense row).

So global tokens see all and all see them (symmetric), and nothing is counted twice. Cost
$O(T(2W+1+G) + GS)$. (The paper also uses separate projections for global attention; here the
kernel takes the same q, k, v, as a drop-in for dense attention.)
"""
from __future__ import annotations

import numpy as np   # host-side index logic only

from ..gradcheck import register
from .band import Band, Columns, SparsePattern, gradcheck_mha_with_kernel
from .kernel import register_kernel
from .sliding_window import BandKernel, gradcheck_band_kernel


# --8<-- [start:longformer_pattern]
def longformer_pattern(window: int, global_tokens, T: int, S: int, causal: bool, xp) -> SparsePattern:
    """Band without the global keys + global key columns + global query rows."""
    g = np.unique(np.asarray(global_tokens, dtype=np.int64))
    g_keys = g[g < S]
    g_rows = g[g < T]
    offsets = np.arange(-window, 1 if causal else window + 1)[None, :]      # (1,K)
    is_global = np.zeros(S + 1, bool)
    is_global[g_keys] = True
    j = np.arange(T)[:, None] + (S - T) + offsets                           # (T,K) key positions
    band_valid = ~is_global[np.where((j >= 0) & (j < S), j, S)]             # global keys leave the band
    return SparsePattern(bands=(Band(offsets, xp.asarray(band_valid[None])),),
                         columns=Columns(g_keys, None) if len(g_keys) else None,
                         rows=g_rows if len(g_rows) else None)
# --8<-- [end:longformer_pattern]


@register_kernel("longformer")
class LongformerAttention(BandKernel):
    """Options: `window` W and `global_tokens` (list of positions, default [0])."""

    def __init__(self, n_head, head_dim, max_len=None, rng=None, window: int = 64, global_tokens=(0,)):
        super().__init__(n_head, head_dim, max_len, rng)
        g = [int(t) for t in global_tokens]
        if int(window) < 0 or any(t < 0 for t in g):
            raise ValueError(f"longformer: expected window >= 0 and non-negative global token positions, "
                             f"got window={window}, global_tokens={global_tokens}")
        self.window, self.global_tokens = int(window), g

    def pattern(self, T, S, causal, xp):
        return longformer_pattern(self.window, self.global_tokens, T, S, causal, xp)

    def extra_repr(self) -> str:
        return f"window={self.window}, global_tokens={self.global_tokens}"


@register("attention.longformer")
def _gradcheck_longformer(device: str):
    return (gradcheck_band_kernel("longformer", device, {"window": 1, "global_tokens": [0, 5]}, T=8, S=8)
            + [gradcheck_mha_with_kernel("longformer", device, {"window": 1, "global_tokens": [0]}, causal=False)])
