r"""Performer (FAVOR+), Choromanski et al. 2021: softmax attention through positive random features.

The softmax kernel is an expectation over Gaussian $\omega$:
$\exp(x^\top y) = \mathbb{E}_\omega\big[\exp(\omega^\top x - \tfrac{\|x\|^2}{2})\exp(\omega^\top y - \tfrac{\|y\|^2}{2})\big]$.
With $M$ features $\omega_1..\omega_M$ (rows of $\Omega$) and inputs pre-scaled by $D^{-1/4}$
(so that $x^\top y = q^\top k / \sqrt D$),

$$\phi^+(x) = M^{-1/2} \exp\big(\Omega x - \tfrac{\|x\|^2}{2} - c\big),$$

where $c$ is a stabiliser: the row maximum for a query, the maximum over all keys and features of the
(batch, head) slice for keys. Both cancel between numerator and denominator of
$O = \phi^+(Q)(\phi^+(K)^\top V) / (\phi^+(Q)\phi^+(K)^\top 1)$, so the backward treats them as
constants. The attention itself is the linear-attention core with these features.

Backward through the features (with $h = \Omega x - \|x\|^2/2 - c$, $f = M^{-1/2}e^{h}$):

$$dh = df \odot f,\qquad dx = dh\,\Omega - \Big(\sum_m dh_m\Big) x,\qquad dq = D^{-1/4} dx.$$

Orthogonal features: blocks of $D$ rows from the QR decomposition $G = QR$ of Gaussian matrices,
with the signs fixed so that $\operatorname{diag}(R) > 0$ (only then is $Q$ uniformly distributed), each row
rescaled to a norm drawn from the chi distribution with $D$ degrees of freedom (the norm of a
Gaussian vector), so each row is still marginally $N(0, I)$ while rows within a block are exactly
orthogonal.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from .. import backend
from ..backend import get_array_module
from ..gradcheck import float64_inputs, register
from .kernel import AttentionKernel, register_kernel
from .linear_attention import (LinearCoreCache, kernel_case,
                               linear_core_backward, linear_core_forward, mha_case)


# --8<-- [start:draw_features]
def draw_features(rng: np.random.Generator, n_features: int, head_dim: int,
                  orthogonal: bool = True) -> np.ndarray:
    """Omega (M, D) on the host: i.i.d. N(0, I) rows, or orthogonal blocks with chi-distributed norms."""
    if not orthogonal:
        return rng.standard_normal((n_features, head_dim))
    blocks = []
    for _ in range(-(-n_features // head_dim)):             # ceil(M / D) blocks of D orthogonal rows
        g = rng.standard_normal((head_dim, head_dim))
        qmat, r = np.linalg.qr(g)                          # columns orthonormal
        # QR fixes Q only up to column signs, and LAPACK's choice depends on g (Q[0, 0] is always
        # negative, so the first row of every block leans away from the first axis). With
        # diag(R) > 0 the factorisation is unique and Q is uniform over rotations (Haar).
        qmat = qmat * np.sign(np.diag(r))                  # (D, D) * (D,): column j times sign(R_jj)
        blocks.append(qmat.T)                              # rows orthonormal, (D, D)
    omega = np.concatenate(blocks, axis=0)[:n_features]    # (M, D)
    norms = np.linalg.norm(rng.standard_normal((n_features, head_dim)), axis=1)   # chi(D) samples
    return omega * norms[:, None]                          # (M, D)
# --8<-- [end:draw_features]


class FeatureCache(NamedTuple):
    xs: Any         # (B,H,L,D) the scaled input D^{-1/4} x
    f: Any          # (B,H,L,M) the features (padded keys zero)
    omega: Any      # (M,D)
    scale: float    # D^{-1/4}


# --8<-- [start:favor_features]
def favor_features_forward(x, omega, is_query: bool, mask=None):
    r"""phi+(x) = M^{-1/2} exp(Omega x' - |x'|^2/2 - c), x' = D^{-1/4} x; mask (B,1,L,1) zeroes rows."""
    xp = get_array_module(x)
    M, D = omega.shape
    scale = D ** -0.25
    xs = x * scale                                         # (B,H,L,D)
    h = xs @ omega.T - 0.5 * (xs * xs).sum(axis=-1, keepdims=True)   # (B,H,L,D) @ (D,M) -> (B,H,L,M)
    if is_query:
        c = h.max(axis=-1, keepdims=True)                  # (B,H,L,1): one constant per query row
    else:
        hm = h if mask is None else xp.where(mask > 0, h, -xp.inf)
        c = hm.max(axis=(-2, -1), keepdims=True)           # (B,H,1,1): one constant per slice
        c = xp.where(xp.isfinite(c), c, 0.0)               # a slice with no real key: any constant
    f = xp.exp(h - c) * M ** -0.5                          # (B,H,L,M), entries in (0, M^{-1/2}]
    if mask is not None:
        f = f * mask
    return f, FeatureCache(xs, f, omega, scale)


def favor_features_backward(df, cache: FeatureCache):
    """dx for phi+, with omega and the stabiliser c held constant (c cancels in the attention)."""
    # fwd: f = M^{-1/2} exp(h)  =>  dh = df * f   (masked rows have f = 0, so dh = 0 there)
    dh = df * cache.f                                      # (B,H,L,M)
    # fwd: h = xs Omega^T - |xs|^2 / 2  =>  dxs = dh Omega - (sum_m dh) xs
    dxs = dh @ cache.omega - dh.sum(axis=-1, keepdims=True) * cache.xs   # (B,H,L,M) @ (M,D) -> (B,H,L,D)
    return dxs * cache.scale                               # fwd: xs = x * D^{-1/4}
# --8<-- [end:favor_features]


class PerformerCache(NamedTuple):
    qfeat: FeatureCache
    kfeat: FeatureCache
    core: LinearCoreCache


def performer_forward(q, k, v, omega, causal: bool = False, key_valid=None,
                      eps: float = 1e-12, chunk: int = 64):
    """FAVOR+ attention with fixed features omega (M, D)."""
    mask = None
    if key_valid is not None:
        mask = key_valid[:, None, :, None].astype(k.dtype)   # (B,S) -> (B,1,S,1)
    qf, qcache = favor_features_forward(q, omega, True)            # (B,H,T,M)
    kf, kcache = favor_features_forward(k, omega, False, mask)     # (B,H,S,M)
    out, core = linear_core_forward(qf, kf, v, causal, eps, chunk)
    return out, PerformerCache(qcache, kcache, core)


def performer_backward(dout, cache: PerformerCache):
    """Returns (dq, dk, dv)."""
    dqf, dkf, dv = linear_core_backward(dout, cache.core)
    return favor_features_backward(dqf, cache.qfeat), favor_features_backward(dkf, cache.kfeat), dv


@register_kernel("performer")
class Performer(AttentionKernel):
    """FAVOR+ attention. Options: `n_features` M (default 256), `orthogonal` (default True),
    `redraw_every` (redraw Omega every that many training forward calls; None: never), `eps`,
    `chunk_size` (causal scans), `seed` (host seed of the feature draws when no rng is given).
    Omega is one (M, D) matrix shared by all heads, a buffer that follows `.to()`; in eval mode it
    is frozen."""

    _buffers = ("omega",)

    def __init__(self, n_head: int, head_dim: int, max_len=None, rng=None, n_features: int = 256,
                 orthogonal: bool = True, redraw_every: int | None = 1000, eps: float = 1e-12,
                 chunk_size: int = 64, seed: int = 0):
        super().__init__(n_head, head_dim, max_len, rng)
        if n_features < 1:
            raise ValueError(f"performer: n_features must be >= 1, got {n_features}")
        if redraw_every is not None and redraw_every < 1:
            raise ValueError(f"performer: redraw_every must be >= 1 or None, got {redraw_every}")
        self.n_features, self.orthogonal, self.redraw_every = n_features, orthogonal, redraw_every
        self.eps, self.chunk_size = eps, chunk_size
        self.rng = rng if rng is not None else backend.host_rng(seed)
        self.omega = draw_features(self.rng, n_features, head_dim, orthogonal).astype(np.float32)
        self.calls = 0            # training forward calls since construction

    def redraw(self) -> None:
        """Draw a fresh Omega on the host, keeping the device and dtype of the current one."""
        new = draw_features(self.rng, self.n_features, self.head_dim, self.orthogonal)
        self.omega = backend.to_device(new, backend.device_of(self.omega), self.omega.dtype)

    def attend(self, q, k, v, causal, key_valid):
        if q.shape[3] != self.head_dim:
            raise ValueError(f"performer: head size {q.shape[3]} != the kernel's head_dim {self.head_dim}")
        if self.training:
            if self.redraw_every is not None and self.calls > 0 and self.calls % self.redraw_every == 0:
                self.redraw()
            self.calls += 1
        omega = backend.to_device(self.omega, backend.device_of(q), q.dtype)
        out, cache = performer_forward(q, k, v, omega, causal, key_valid, self.eps, self.chunk_size)
        self.cache = cache if self.keep_cache else None
        return out

    def backward(self, dout):
        return performer_backward(dout, self.saved_cache())

    def extra_repr(self) -> str:
        return (f"n_features={self.n_features}, orthogonal={self.orthogonal}, "
                f"redraw_every={self.redraw_every}")


def default_n_features(head_dim: int) -> int:
    """The paper's alternative default M = D ln D (at least 1)."""
    return max(1, int(round(head_dim * math.log(head_dim))))


@register("attention.performer")
def _gradcheck_performer(device: str):
    kernel = Performer(2, 4, n_features=6, redraw_every=None).to(device, "float64").eval()
    q, k, v = float64_inputs(device, 0, (2, 2, 5, 4), (2, 2, 5, 4), (2, 2, 5, 4))
    mask = backend.to_device(backend.host_rng(0).random((2, 5)) > 0.3, device)
    mask[:, 0] = True
    k4, v4 = float64_inputs(device, 1, (2, 2, 4, 4), (2, 2, 4, 4))   # S = 4 != T = 5 (cross)
    return [
        kernel_case("attention.performer", kernel, q, k, v, False, mask),
        kernel_case("attention.performer(causal)", kernel, q, k, v, True, mask),
        kernel_case("attention.performer(iid)", Performer(2, 4, n_features=3, orthogonal=False,
                    redraw_every=None).to(device, "float64").eval(), q, k4, v4),
    ]


@register("attention.MultiHeadAttention.performer")
def _gradcheck_mha_performer(device: str):
    opts = {"n_features": 8, "redraw_every": None}
    return [mha_case("MHA(performer)", device, "performer", opts, causal=True, pad=True),
            mha_case("MHA(performer)", device, "performer", opts, causal=False, pad=False)]
