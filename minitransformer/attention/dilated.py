r"""Dilated sliding-window attention: query $i$ sees keys $j = p_i + \delta_h (c - W)$,
$c = 0..2W$ (causal: $c = 0..W$), with a gap $\delta_h$ that may differ per head.

Same band machinery as the sliding window (`band.py`): a shared dilation is a strided view of K
and V (stride $\delta$ rows), per-head dilations gather the band rows by index. Receptive field
$2W\delta + 1$ at the cost of $2W + 1$ scores per query.
"""
from __future__ import annotations

import numpy as np   # host-side offsets only

from ..gradcheck import register
from .band import Band, SparsePattern, gradcheck_mha_with_kernel
from .kernel import register_kernel
from .sliding_window import BandKernel, gradcheck_band_kernel


# --8<-- [start:dilated_pattern]
def dilated_pattern(window: int, dilations, causal: bool) -> SparsePattern:
    """Offsets delta_h * (c - W): (1, K) for one dilation, (H, K) for one per head."""
    c = np.arange(-window, 1 if causal else window + 1)                 # (K,)
    offsets = np.asarray(dilations, dtype=np.int64).reshape(-1, 1) * c[None, :]   # (Hp, K)
    return SparsePattern(bands=(Band(offsets, None),), columns=None, rows=None)
# --8<-- [end:dilated_pattern]


@register_kernel("dilated")
class DilatedAttention(BandKernel):
    """Options: `window` W (keys on each side), `dilation` (an int, or a list with one per head)."""

    def __init__(self, n_head, head_dim, max_len=None, rng=None, window: int = 32, dilation=2):
        super().__init__(n_head, head_dim, max_len, rng)
        dil = [int(dilation)] if np.isscalar(dilation) else [int(d) for d in dilation]
        if len(dil) not in (1, n_head) or min(dil) < 1 or int(window) < 0:
            raise ValueError(f"dilated: expected window >= 0 and dilation an int >= 1 or a list of "
                             f"{n_head} ints >= 1, got window={window}, dilation={dilation}")
        self.window, self.dilations = int(window), dil

    def pattern(self, T, S, causal, xp):
        return dilated_pattern(self.window, self.dilations, causal)

    def extra_repr(self) -> str:
        return f"window={self.window}, dilation={self.dilations}"


@register("attention.dilated")
def _gradcheck_dilated(device: str):
    return (gradcheck_band_kernel("dilated", device, {"window": 2, "dilation": 2}, T=9, S=9)
            + gradcheck_band_kernel("dilated", device, {"window": 1, "dilation": [1, 3]}, T=7, S=8)
            + [gradcheck_mha_with_kernel("dilated", device, {"window": 1, "dilation": [1, 2]}, causal=False)])
