r"""Sliding-window (local) attention in O(T·W): query $i$ sees keys $j$ with $|j - p_i| \le W$
(causal: $p_i - W \le j \le p_i$), where $p_i = i + S - T$.

Scores live in a band $(B,H,T,2W+1)$ (causal: $W+1$) built from a zero-padded strided view of K and
V; out-of-range entries are $-\infty$. No $T\times S$ array exists, not even a mask. The backward
pass is the dense one restricted to the band (see `band.py`): $dq$ from the band, $dk, dv$ from the
transposed band.
"""
from __future__ import annotations

import numpy as np   # host-side offsets and test inputs only

from .. import backend
from ..gradcheck import check_functional, float64_inputs, register
from .band import (Band, SparsePattern, gradcheck_mha_with_kernel, pattern_mask, sparse_backward,
                   sparse_forward)
from .kernel import AttentionKernel, register_kernel


# --8<-- [start:sliding_pattern]
def sliding_window_pattern(window: int, causal: bool) -> SparsePattern:
    """Offsets -W..W (causal: -W..0), one band shared by every head and query."""
    offsets = np.arange(-window, 1 if causal else window + 1)[None, :]    # (1, 2W+1) or (1, W+1)
    return SparsePattern(bands=(Band(offsets, None),), columns=None, rows=None)
# --8<-- [end:sliding_pattern]


class BandKernel(AttentionKernel):
    """Common body of the band kernels: subclasses define `pattern(T, S, causal, xp)`."""

    requires_causal = False

    def pattern(self, T, S, causal, xp):
        raise NotImplementedError

    def pattern_mask(self, T, S=None, causal=False):
        """The (H,T,S) boolean mask this kernel attends with (small T: tests and pictures)."""
        S = T if S is None else S
        return pattern_mask(self.pattern(T, S, causal, np), T, S, causal, self.n_head)

    def attend(self, q, k, v, causal, key_valid):
        name = self.kernel_name
        if self.requires_causal and not causal:
            raise ValueError(f"{name} is a causal pattern (Child et al. 2019); call it with causal=True")
        if not self.supports_cross and q.shape[2] != k.shape[2]:
            raise ValueError(f"{name} needs as many keys as queries, got T={q.shape[2]}, S={k.shape[2]}")
        xp = backend.get_array_module(q)
        out, cache = sparse_forward(q, k, v, self.pattern(q.shape[2], k.shape[2], causal, xp),
                                    causal, key_valid)
        self.cache = cache if self.keep_cache else None
        return out

    def backward(self, dout):
        return sparse_backward(dout, self.saved_cache())


@register_kernel("sliding_window")
class SlidingWindowAttention(BandKernel):
    """Local attention to the W keys on each side (option `window`, default 64)."""

    def __init__(self, n_head, head_dim, max_len=None, rng=None, window: int = 64):
        super().__init__(n_head, head_dim, max_len, rng)
        if int(window) < 0:
            raise ValueError(f"sliding_window: window must be >= 0, got {window}")
        self.window = int(window)

    def pattern(self, T, S, causal, xp):
        return sliding_window_pattern(self.window, causal)

    def extra_repr(self) -> str:
        return f"window={self.window}"


def gradcheck_band_kernel(name: str, device: str, options: dict, T=7, S=7, causal_modes=(False, True)):
    """Registered float64 check of a band kernel's forward/backward, with padding."""
    from .kernel import make_kernel
    q, k, v = float64_inputs(device, 4, (2, 2, T, 4), (2, 2, S, 4), (2, 2, S, 4))
    kpm = backend.to_device(np.arange(S)[None, :] < np.array([[S], [S - 2]]), device)
    results = []
    for causal in causal_modes:
        kern = make_kernel(name, 2, 4, **options)

        def fwd(q, k, v, kern=kern, causal=causal):
            out = kern.forward(q, k, v, causal=causal, key_padding_mask=None if kpm is None else ~kpm)
            return out, kern.cache

        results.append(check_functional(f"attention.{name}(causal={causal})", fwd, sparse_backward, [q, k, v]))
    return results


@register("attention.sliding_window")
def _gradcheck_sliding_window(device: str):
    return (gradcheck_band_kernel("sliding_window", device, {"window": 2}, T=7, S=9)
            + [gradcheck_mha_with_kernel("sliding_window", device, {"window": 2}, causal=True)])
