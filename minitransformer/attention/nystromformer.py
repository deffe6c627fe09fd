r"""Nyströmformer, Xiong et al. 2021: a Nyström approximation of the softmax matrix with landmarks.

Landmarks are segment means: $\tilde Q = P_T Q$, $\tilde K = P_S K$ with $P_T \in \mathbb{R}^{m\times T}$
averaging $m$ contiguous, nearly equal segments. With $\sigma$ the row softmax and $s = 1/\sqrt D$,

$$\tilde F = \sigma(s\, Q \tilde K^\top),\quad \tilde A = \sigma(s\, \tilde Q \tilde K^\top),\quad
\tilde B = \sigma(s\, \tilde Q K^\top),\qquad O = \tilde F\, \tilde A^{+}\, (\tilde B V),$$

costing $O(N m D + m^3)$. The pseudo-inverse is approximated by the iteration of Razavi et al.
(six steps), started from $Z_0 = \tilde A^\top / \max_j \sum_i \tilde A_{ij}$ (the max row sum of a
softmax matrix is 1):

$$Z_{k+1} = \tfrac14 Z_k\big(13 I - \tilde A Z_k (15 I - \tilde A Z_k (7 I - \tilde A Z_k))\big).$$

The backward differentiates every step of the iteration (matrix products only), and the
initial scale through its arg-max column. Padded keys are zeroed before the landmark means and get
$-\infty$ in $\tilde B$. Not causal (landmarks mix all positions). The paper's extra depth-wise
convolution skip on $V$ is left out.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from .. import backend
from ..backend import get_array_module
from ..gradcheck import float64_inputs, register
from ..nn.functional.softmax import SoftmaxCache, softmax_backward, softmax_forward
from .kernel import AttentionKernel, register_kernel
from .linear_attention import kernel_case, mha_case


def segment_means_matrix(n: int, m: int, xp, dtype):
    """(m, n) averaging matrix of m contiguous segments of nearly equal size (position t -> t*m // n)."""
    seg = (xp.arange(n) * m) // n                          # (n,) segment of each position
    onehot = (seg[None, :] == xp.arange(m)[:, None]).astype(dtype)   # (m, n)
    return onehot / onehot.sum(axis=1, keepdims=True)


def _softmax(s):
    return softmax_forward(s)[0]                           # the package's one stable softmax


def _softmax_backward(dp, p):
    # fwd: p = softmax(s)  =>  ds = p * (dp - rowsum(dp * p))
    return softmax_backward(dp, SoftmaxCache(p))


class PinvCache(NamedTuple):
    a: Any          # (B,H,m,m)
    scale: Any      # (B,H,1,1) the max column sum c of A (Z0 = A^T / c)
    colsum: Any     # (B,H,1,m)
    steps: list     # per iteration (Z, AZ, T1, T2, T3)


# --8<-- [start:iterative_pinv]
def iterative_pinv_forward(a, n_iter: int = 6):
    """Approximate Moore-Penrose inverse of each (m, m) matrix a[b, h]."""
    xp = get_array_module(a)
    eye = xp.eye(a.shape[-1], dtype=a.dtype)
    colsum = a.sum(axis=-2, keepdims=True)                 # (B,H,1,m)
    scale = colsum.max(axis=-1, keepdims=True)             # (B,H,1,1)
    z = a.swapaxes(-1, -2) / scale                         # Z0 = A^T / (||A||_1 ||A||_inf), ||A||_inf = 1
    steps = []
    for _ in range(n_iter):                                # a few fixed iterations (not over positions)
        az = a @ z                                         # (B,H,m,m)
        t1 = 7 * eye - az
        t2 = 15 * eye - az @ t1
        t3 = 13 * eye - az @ t2
        steps.append((z, az, t1, t2, t3))
        z = 0.25 * z @ t3
    return z, PinvCache(a, scale, colsum, steps)


def iterative_pinv_backward(dz, cache: PinvCache):
    """dA through every iteration and the initial scale."""
    xp = get_array_module(dz)
    a = cache.a
    da = xp.zeros_like(a)
    for z, az, t1, t2, t3 in reversed(cache.steps):     # every matrix here is (B,H,m,m)
        # fwd: z' = z t3 / 4
        dt3 = 0.25 * z.swapaxes(-1, -2) @ dz
        dz_prev = 0.25 * dz @ t3.swapaxes(-1, -2)
        # fwd: t3 = 13 I - az t2 ; t2 = 15 I - az t1 ; t1 = 7 I - az
        daz = -dt3 @ t2.swapaxes(-1, -2)
        dt2 = -az.swapaxes(-1, -2) @ dt3
        daz = daz - dt2 @ t1.swapaxes(-1, -2)
        dt1 = -az.swapaxes(-1, -2) @ dt2
        daz = daz - dt1
        # fwd: az = a z  =>  da += daz z^T,  dz += a^T daz
        da = da + daz @ z.swapaxes(-1, -2)
        dz = dz_prev + a.swapaxes(-1, -2) @ daz
    # fwd: z0 = a^T / c, c = max_j colsum_j  =>  da += dz0^T / c ; dc = -sum(dz0 * a^T) / c^2 to argmax column
    da = da + dz.swapaxes(-1, -2) / cache.scale
    dc = -(dz * a.swapaxes(-1, -2)).sum(axis=(-2, -1), keepdims=True) / cache.scale ** 2   # (B,H,1,1)
    is_max = (cache.colsum == cache.scale).astype(a.dtype)   # (B,H,1,m), ties share nothing special
    is_max = is_max / is_max.sum(axis=-1, keepdims=True)
    return da + dc * is_max                                # colsum_j = sum_i a_ij: broadcast over rows
# --8<-- [end:iterative_pinv]


class NystromCache(NamedTuple):
    q: Any
    k: Any          # keys after zeroing padded rows
    v: Any
    pq: Any         # (m,T) landmark averaging matrices
    pk: Any         # (m,S)
    ql: Any         # (B,H,m,D) landmarks
    kl: Any
    f: Any          # (B,H,T,m)
    b: Any          # (B,H,m,S)
    z: Any          # (B,H,m,m) approximate pinv(A)
    bv: Any         # (B,H,m,Dv)
    w: Any          # (B,H,m,Dv) = z @ bv
    pinv: PinvCache
    a: Any          # (B,H,m,m)
    mask: Any       # (B,1,S,1) or None


# --8<-- [start:nystrom_forward]
def nystrom_forward(q, k, v, n_landmarks: int = 32, n_iter: int = 6, key_valid=None):
    xp = get_array_module(q, k, v)
    T, S, D = q.shape[2], k.shape[2], q.shape[3]
    m = max(1, min(n_landmarks, T, S))
    s = D ** -0.5
    mask = None
    if key_valid is not None:
        mask = key_valid[:, None, :, None].astype(k.dtype)   # (B,S) -> (B,1,S,1)
        k = k * mask
    pq, pk = segment_means_matrix(T, m, xp, q.dtype), segment_means_matrix(S, m, xp, q.dtype)
    ql = pq @ q                                            # (m,T) @ (B,H,T,D) -> (B,H,m,D)
    kl = pk @ k                                            # (m,S) @ (B,H,S,D) -> (B,H,m,D)
    f = _softmax(s * q @ kl.swapaxes(-1, -2))              # (B,H,T,D) @ (B,H,D,m) -> (B,H,T,m)
    a = _softmax(s * ql @ kl.swapaxes(-1, -2))             # (B,H,m,m)
    sb = s * ql @ k.swapaxes(-1, -2)                       # (B,H,m,D) @ (B,H,D,S) -> (B,H,m,S)
    if mask is not None:
        sb = xp.where(mask.swapaxes(-1, -2) > 0, sb, -xp.inf)       # padded keys out of B
    b = _softmax(sb)
    z, pinv = iterative_pinv_forward(a, n_iter)            # (B,H,m,m)
    bv = b @ v                                             # (B,H,m,S) @ (B,H,S,Dv) -> (B,H,m,Dv)
    w = z @ bv                                             # (B,H,m,m) @ (B,H,m,Dv) -> (B,H,m,Dv)
    out = f @ w                                            # (B,H,T,m) @ (B,H,m,Dv) -> (B,H,T,Dv)
    return out, NystromCache(q, k, v, pq, pk, ql, kl, f, b, z, bv, w, pinv, a, mask)


def nystrom_backward(dout, cache: NystromCache):
    """Returns (dq, dk, dv)."""
    c = cache
    s = c.q.shape[3] ** -0.5
    # fwd: out = f w, w = z bv, bv = b v
    df = dout @ c.w.swapaxes(-1, -2)                       # (B,H,T,Dv) @ (B,H,Dv,m) -> (B,H,T,m)
    dw = c.f.swapaxes(-1, -2) @ dout                       # (B,H,m,T) @ (B,H,T,Dv) -> (B,H,m,Dv)
    dz = dw @ c.bv.swapaxes(-1, -2)                        # (B,H,m,m)
    dbv = c.z.swapaxes(-1, -2) @ dw                        # (B,H,m,Dv)
    db = dbv @ c.v.swapaxes(-1, -2)                        # (B,H,m,S)
    dv = c.b.swapaxes(-1, -2) @ dbv                        # (B,H,S,Dv)
    da = iterative_pinv_backward(dz, c.pinv)               # (B,H,m,m)
    dsf, dsa, dsb = _softmax_backward(df, c.f), _softmax_backward(da, c.a), _softmax_backward(db, c.b)
    # fwd: sf = s q kl^T, sa = s ql kl^T, sb = s ql k^T
    dq = s * dsf @ c.kl                                    # (B,H,T,m) @ (B,H,m,D) -> (B,H,T,D)
    dkl = s * (dsf.swapaxes(-1, -2) @ c.q + dsa.swapaxes(-1, -2) @ c.ql)   # (B,H,m,D)
    dql = s * (dsa @ c.kl + dsb @ c.k)                     # (B,H,m,D)
    dk = s * dsb.swapaxes(-1, -2) @ c.ql                   # (B,H,S,m) @ (B,H,m,D) -> (B,H,S,D)
    # fwd: ql = pq q, kl = pk k  =>  dq += pq^T dql, dk += pk^T dkl
    dq = dq + c.pq.T @ dql
    dk = dk + c.pk.T @ dkl
    if c.mask is not None:
        dk = dk * c.mask                                   # fwd: k = k * mask
    return dq, dk, dv
# --8<-- [end:nystrom_forward]


@register_kernel("nystrom")
class Nystromformer(AttentionKernel):
    """Nyström attention. Options: `n_landmarks` m (default 32; capped at the sequence lengths),
    `pinv_iters` (default 6). Not causal."""

    supports_causal = False

    def __init__(self, n_head: int, head_dim: int, max_len=None, rng=None, n_landmarks: int = 32,
                 pinv_iters: int = 6):
        super().__init__(n_head, head_dim, max_len, rng)
        if n_landmarks < 1 or pinv_iters < 0:
            raise ValueError(f"nystrom: need n_landmarks >= 1 and pinv_iters >= 0, got "
                             f"{n_landmarks}, {pinv_iters}")
        self.n_landmarks, self.pinv_iters = n_landmarks, pinv_iters

    def attend(self, q, k, v, causal, key_valid):
        out, cache = nystrom_forward(q, k, v, self.n_landmarks, self.pinv_iters, key_valid)
        self.cache = cache if self.keep_cache else None
        return out

    def backward(self, dout):
        return nystrom_backward(dout, self.saved_cache())

    def extra_repr(self) -> str:
        return f"n_landmarks={self.n_landmarks}, pinv_iters={self.pinv_iters}"


@register("attention.nystrom")
def _gradcheck_nystrom(device: str):
    q, k, v = float64_inputs(device, 0, (2, 2, 7, 4), (2, 2, 9, 4), (2, 2, 9, 4))
    mask = backend.to_device(backend.host_rng(0).random((2, 9)) > 0.3, device)
    mask[:, 0] = True
    kern = Nystromformer(2, 4, n_landmarks=3).to(device, "float64")
    return [kernel_case("attention.nystrom", kern, q, k, v, False, mask),
            kernel_case("attention.nystrom(m=T)", Nystromformer(2, 4, n_landmarks=7), q, k[:, :, :7].copy(),
                        v[:, :, :7].copy())]


@register("attention.MultiHeadAttention.nystrom")
def _gradcheck_mha_nystrom(device: str):
    return [mha_case("MHA(nystrom)", device, "nystrom", {"n_landmarks": 2}, pad=True, T=6)]
