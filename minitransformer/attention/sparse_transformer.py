r"""Sparse Transformer patterns (Child et al. 2019), causal, $O(N\sqrt N)$ with stride $l \approx \sqrt N$.

With $p = p_i$ the query position:

* **strided**: $A(i) = \{j : p - l \le j \le p\} \cup \{j \le p : (p - j) \bmod l = 0\}$: a local band
  of offsets $-l..0$ and a strided band of offsets $-ml$, $m \ge 2$ (offsets $0, -l$ are already local);
* **fixed**: $A(i) = \{j \le p : \lfloor j/l \rfloor = \lfloor p/l \rfloor\} \cup
  \{j \le p : j \bmod l \in [l - c, l)\}$: a band of offsets $-(l-1)..0$ kept inside the own block,
  and the summary columns (the last $c$ positions of every block) outside the own block.

Both are bands and columns for `band.py`, so the backward pass needs no scatter.
"""
from __future__ import annotations

import math

import numpy as np   # host-side index logic only

from ..gradcheck import register
from .band import Band, Columns, SparsePattern, gradcheck_mha_with_kernel
from .kernel import register_kernel
from .sliding_window import BandKernel, gradcheck_band_kernel


def default_stride(S: int) -> int:
    return max(1, round(math.sqrt(S)))


# --8<-- [start:strided_pattern]
def strided_pattern(stride: int, S: int) -> SparsePattern:
    """Local offsets -l..0 and strided offsets -2l, -3l, ... (causal)."""
    local = np.arange(-stride, 1)[None, :]                                   # (1, l+1)
    m = np.arange(max(0, (S - 1) // stride - 1))[::-1] + 2                   # ..., 3, 2
    bands = (Band(local, None),)
    if len(m):
        bands += (Band(-(m * stride)[None, :], None),)                       # (1, ~S/l)
    return SparsePattern(bands=bands, columns=None, rows=None)
# --8<-- [end:strided_pattern]


# --8<-- [start:fixed_pattern]
def fixed_pattern(stride: int, summary: int, T: int, S: int, xp) -> SparsePattern:
    """Own-block band plus summary columns from earlier blocks (causal)."""
    offsets = np.arange(-(stride - 1), 1)[None, :]                           # (1, l)
    p = np.arange(T) + (S - T)                                               # query positions
    band_valid = offsets >= -(p % stride)[:, None]                           # (T, l): stay in own block
    cols = np.nonzero(np.arange(S) % stride >= stride - summary)[0]          # (G,) summary keys
    col_valid = (cols[None, :] // stride) != (p // stride)[:, None]          # (T, G): own block is in the band
    return SparsePattern(bands=(Band(offsets, xp.asarray(band_valid[None])),),
                         columns=Columns(cols, xp.asarray(col_valid[None])) if len(cols) else None,
                         rows=None)
# --8<-- [end:fixed_pattern]


class _SparseTransformerKernel(BandKernel):
    requires_causal = True

    def __init__(self, n_head, head_dim, max_len=None, rng=None, stride: int | None = None):
        super().__init__(n_head, head_dim, max_len, rng)
        if stride is not None and int(stride) < 1:
            raise ValueError(f"{type(self).__name__}: stride must be >= 1, got {stride}")
        self.stride = None if stride is None else int(stride)

    def stride_for(self, S: int) -> int:
        return self.stride or default_stride(S)


@register_kernel("sparse_strided")
class StridedSparseAttention(_SparseTransformerKernel):
    """Option `stride` l (default round(sqrt(S)))."""

    def pattern(self, T, S, causal, xp):
        return strided_pattern(self.stride_for(S), S)


@register_kernel("sparse_fixed")
class FixedSparseAttention(_SparseTransformerKernel):
    """Options `stride` l (default round(sqrt(S))) and `summary` c (default 4, at most l).

    c stays fixed as N grows: the summary columns number c * S / l ~ c sqrt(S), so the cost stays
    O(S sqrt(S)); a c proportional to l would make them S * c / l, quadratic again."""

    def __init__(self, n_head, head_dim, max_len=None, rng=None, stride: int | None = None,
                 summary: int | None = None):
        super().__init__(n_head, head_dim, max_len, rng, stride)
        if summary is not None and int(summary) < 1:
            raise ValueError(f"sparse_fixed: summary must be >= 1, got {summary}")
        self.summary = None if summary is None else int(summary)

    def pattern(self, T, S, causal, xp):
        stride = self.stride_for(S)
        return fixed_pattern(stride, min(stride, self.summary or 4), T, S, xp)


@register("attention.sparse_strided")
def _gradcheck_sparse_strided(device: str):
    return (gradcheck_band_kernel("sparse_strided", device, {"stride": 3}, T=10, S=11, causal_modes=(True,))
            + [gradcheck_mha_with_kernel("sparse_strided", device, {"stride": 3}, causal=True)])


@register("attention.sparse_fixed")
def _gradcheck_sparse_fixed(device: str):
    return (gradcheck_band_kernel("sparse_fixed", device, {"stride": 3, "summary": 1}, T=10, S=11,
                                  causal_modes=(True,))
            + [gradcheck_mha_with_kernel("sparse_fixed", device, {"stride": 3, "summary": 1}, causal=True)])
