r"""Linear (kernel) attention, Katharopoulos et al. 2020: softmax replaced by a feature map.

With a positive feature map $\phi(x) = \mathrm{elu}(x) + 1$ applied row-wise,

$$O_i = \frac{\phi(q_i)^\top \sum_j \phi(k_j) v_j^\top}{\phi(q_i)^\top \sum_j \phi(k_j) + \varepsilon},$$

which costs $O(N M D)$ instead of $O(N^2 D)$ (here $M = D$ features). The causal version sums only
over $j \le i$: running prefix sums of $\phi(k_j) v_j^\top$ and $\phi(k_j)$.

Backward (with $n_i$ the numerator, $d_i$ the denominator, $\bar n_i = dO_i / d_i$ and
$\bar d_i = -dO_i\cdot O_i / d_i$):

$$d\phi(q_i) = \Big(\sum_{j} \phi(k_j) v_j^\top\Big) \bar n_i + \bar d_i \sum_j \phi(k_j),\qquad
d\phi(k_j) = \Big(\sum_{i} \phi(q_i)\bar n_i^\top\Big) v_j + \sum_i \bar d_i \phi(q_i),\qquad
dv_j = \Big(\sum_{i} \bar n_i \phi(q_i)^\top\Big)\phi(k_j),$$

with the sums over $j \le i$ (a forward scan) for $d\phi(q)$ and over $i \ge j$ (a reverse scan) for
$d\phi(k), dv$ in the causal case. The scans run chunk by chunk: inside a chunk of $C$ positions the
masked $C\times C$ block is formed explicitly, across chunks only the $(M, D)$ running state is carried.

The core (:func:`linear_core_forward` / :func:`linear_core_backward`) takes feature maps, so the
Performer reuses it with its random features.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from .. import backend
from ..backend import get_array_module
from ..gradcheck import check_module, float64_inputs, register
from .kernel import AttentionKernel, register_kernel


# -- the feature map ---------------------------------------------------------------------------------
def elu_plus_one(x):
    """phi(x) = elu(x) + 1 = x + 1 for x > 0, exp(x) otherwise; always positive."""
    xp = get_array_module(x)
    return xp.where(x > 0, x + 1, xp.exp(xp.minimum(x, 0)))


def elu_plus_one_grad(x):
    """phi'(x) = 1 for x > 0, exp(x) otherwise."""
    xp = get_array_module(x)
    return xp.where(x > 0, 1.0, xp.exp(xp.minimum(x, 0))).astype(x.dtype)


# -- the core: attention with given feature maps ------------------------------------------------------
class LinearCoreCache(NamedTuple):
    qf: Any         # (B,H,T,M) query features
    kf: Any         # (B,H,S,M) key features (padded keys already zero)
    v: Any          # (B,H,S,Dv)
    out: Any        # (B,H,T,Dv) the output, for the denominator's gradient
    den: Any        # (B,H,T) the denominators
    causal: bool
    chunk: int
    # Stored: O(T (M + D)) numbers; never the (T, M, Dv) prefix sums. The causal backward
    # re-runs the scans (forward for dq, reverse for dk, dv) carrying one (M, Dv) state.


# --8<-- [start:linear_core_forward]
def linear_core_forward(qf, kf, v, causal: bool = False, eps: float = 1e-6, chunk: int = 64):
    r"""O = qf (kf^T v) / (qf kf^T 1 + eps); causal with bottom-right alignment (offset S - T)."""
    xp = get_array_module(qf, kf, v)
    T, S = qf.shape[2], kf.shape[2]
    if not causal:
        kv = kf.swapaxes(-1, -2) @ v                       # (B,H,M,S) @ (B,H,S,Dv) -> (B,H,M,Dv)
        z = kf.sum(axis=2)                                 # (B,H,S,M) -> (B,H,M)
        num = qf @ kv                                      # (B,H,T,M) @ (B,H,M,Dv) -> (B,H,T,Dv)
        den = (qf @ z[..., None])[..., 0] + eps            # (B,H,T,M) @ (B,H,M,1) -> (B,H,T)
    else:
        off = S - T                                        # keys every query sees (a prefix/cache)
        kv = kf[:, :, :off].swapaxes(-1, -2) @ v[:, :, :off]   # (B,H,M,off) @ (B,H,off,Dv) -> (B,H,M,Dv)
        z = kf[:, :, :off].sum(axis=2)                     # (B,H,off,M) -> (B,H,M)
        num = xp.empty(qf.shape[:3] + v.shape[3:], dtype=v.dtype)   # (B,H,T,Dv)
        den = xp.empty(qf.shape[:3], dtype=v.dtype)                 # (B,H,T)
        for a in range(0, T, chunk):                       # loop over blocks of positions
            b = min(a + chunk, T)
            qc, kc, vc = qf[:, :, a:b], kf[:, :, off + a:off + b], v[:, :, off + a:off + b]
            A = xp.tril(qc @ kc.swapaxes(-1, -2))          # (B,H,C,M) @ (B,H,M,C) -> (B,H,C,C), j <= i
            num[:, :, a:b] = qc @ kv + A @ vc              # past chunks through the state + this chunk
            den[:, :, a:b] = (qc @ z[..., None])[..., 0] + A.sum(axis=-1) + eps   # (B,H,C)
            kv = kv + kc.swapaxes(-1, -2) @ vc             # state += sum_j kf_j v_j^T over the chunk
            z = z + kc.sum(axis=2)
    out = num / den[..., None]                             # (B,H,T,Dv)
    return out, LinearCoreCache(qf, kf, v, out, den, causal, chunk)
# --8<-- [end:linear_core_forward]


# --8<-- [start:linear_core_backward]
def linear_core_backward(dout, cache: LinearCoreCache):
    """Returns (dqf, dkf, dv)."""
    xp = get_array_module(dout)
    qf, kf, v, out, den = cache.qf, cache.kf, cache.v, cache.out, cache.den
    # fwd: out = num / den  =>  dnum = dout / den,  dden = -sum_d(dout * num) / den^2 = -sum_d(dout * out) / den
    dnum = dout / den[..., None]                           # (B,H,T,Dv)
    dden = -(dout * out).sum(axis=-1) / den                # (B,H,T)
    if not cache.causal:
        kv = kf.swapaxes(-1, -2) @ v                       # (B,H,M,Dv), recomputed (cheap)
        z = kf.sum(axis=2)                                 # (B,H,M)
        # fwd: num = qf @ kv, den = qf @ z  =>  dqf = dnum @ kv^T + dden z^T
        dqf = dnum @ kv.swapaxes(-1, -2) + dden[..., None] * z[:, :, None, :]   # (B,H,T,M)
        # fwd: kv = kf^T v, z = sum_j kf_j  =>  dkv = qf^T dnum, dz = qf^T dden
        dkv = qf.swapaxes(-1, -2) @ dnum                   # (B,H,M,T) @ (B,H,T,Dv) -> (B,H,M,Dv)
        dz = (qf.swapaxes(-1, -2) @ dden[..., None])[..., 0]   # (B,H,M,T) @ (B,H,T,1) -> (B,H,M)
        dkf = v @ dkv.swapaxes(-1, -2) + dz[:, :, None, :]     # (B,H,S,Dv) @ (B,H,Dv,M) -> (B,H,S,M)
        dv = kf @ dkv                                      # (B,H,S,M) @ (B,H,M,Dv) -> (B,H,S,Dv)
        return dqf, dkf, dv
    T, S, chunk = qf.shape[2], kf.shape[2], cache.chunk
    off = S - T
    dqf, dkf, dv = xp.empty_like(qf), xp.empty_like(kf), xp.empty_like(v)
    # forward scan for dqf: dqf_i = kv_{<chunk} dnum_i + z_{<chunk} dden_i + sum_{a<=j<=i} (dnum_i.v_j + dden_i) kf_j
    kv = kf[:, :, :off].swapaxes(-1, -2) @ v[:, :, :off]   # (B,H,M,Dv)
    z = kf[:, :, :off].sum(axis=2)                         # (B,H,M)
    for a in range(0, T, chunk):
        b = min(a + chunk, T)
        kc, vc = kf[:, :, off + a:off + b], v[:, :, off + a:off + b]
        dn, dd = dnum[:, :, a:b], dden[:, :, a:b]
        # fwd: A = tril(qc kc^T), num += A vc, den += A 1  =>  dA = tril(dn vc^T + dd 1^T)
        dA = xp.tril(dn @ vc.swapaxes(-1, -2) + dd[..., None])   # (B,H,C,Dv) @ (B,H,Dv,C) -> (B,H,C,C)
        dqf[:, :, a:b] = (dn @ kv.swapaxes(-1, -2) + dd[..., None] * z[:, :, None, :]
                          + dA @ kc)                       # (B,H,C,C) @ (B,H,C,M) -> (B,H,C,M)
        kv = kv + kc.swapaxes(-1, -2) @ vc
        z = z + kc.sum(axis=2)
    # reverse scan for dkf, dv: G = sum_{i in later chunks} qf_i dnum_i^T, g = sum_i dden_i qf_i
    G = xp.zeros(kf.shape[:2] + (kf.shape[3], v.shape[3]), dtype=v.dtype)   # (B,H,M,Dv)
    g = xp.zeros(kf.shape[:2] + kf.shape[3:], dtype=v.dtype)                # (B,H,M)
    for a in reversed(range(0, T, chunk)):
        b = min(a + chunk, T)
        qc, kc, vc = qf[:, :, a:b], kf[:, :, off + a:off + b], v[:, :, off + a:off + b]
        dn, dd = dnum[:, :, a:b], dden[:, :, a:b]
        A = xp.tril(qc @ kc.swapaxes(-1, -2))              # (B,H,C,C)
        dA = xp.tril(dn @ vc.swapaxes(-1, -2) + dd[..., None])
        # fwd: A_ij = qf_i.kf_j  =>  dkf_j += sum_i dA_ij qf_i ;  fwd: num += A vc  =>  dvc += A^T dn
        dkf[:, :, off + a:off + b] = (vc @ G.swapaxes(-1, -2) + g[:, :, None, :]   # (B,H,C,Dv) @ (B,H,Dv,M)
                                      + dA.swapaxes(-1, -2) @ qc)                 # (B,H,C,C) @ (B,H,C,M)
        dv[:, :, off + a:off + b] = kc @ G + A.swapaxes(-1, -2) @ dn   # (B,H,C,M) @ (B,H,M,Dv) -> (B,H,C,Dv)
        G = G + qc.swapaxes(-1, -2) @ dn                   # (B,H,M,C) @ (B,H,C,Dv) -> (B,H,M,Dv)
        g = g + (qc.swapaxes(-1, -2) @ dd[..., None])[..., 0]   # (B,H,M,C) @ (B,H,C,1) -> (B,H,M)
    # the first `off` keys are seen by every query: G, g now hold the sums over all queries
    dkf[:, :, :off] = v[:, :, :off] @ G.swapaxes(-1, -2) + g[:, :, None, :]
    dv[:, :, :off] = kf[:, :, :off] @ G
    return dqf, dkf, dv
# --8<-- [end:linear_core_backward]


# -- the full linear attention pair --------------------------------------------------------------------
class LinearAttentionCache(NamedTuple):
    q: Any            # (B,H,T,D) for phi'(q)
    k: Any            # (B,H,S,D) for phi'(k)
    mask: Any         # (B,1,S,1) float key mask, or None
    core: LinearCoreCache


# --8<-- [start:linear_attention]
def linear_attention_forward(q, k, v, causal: bool = False, key_valid=None,
                             eps: float = 1e-6, chunk: int = 64):
    """elu+1 linear attention; padded keys get phi(k) = 0 so they add nothing anywhere."""
    qf = elu_plus_one(q)                                   # (B,H,T,D)
    kf = elu_plus_one(k)                                   # (B,H,S,D)
    mask = None
    if key_valid is not None:
        mask = key_valid[:, None, :, None].astype(k.dtype)   # (B,S) -> (B,1,S,1)
        kf = kf * mask
    out, core = linear_core_forward(qf, kf, v, causal, eps, chunk)
    return out, LinearAttentionCache(q, k, mask, core)


def linear_attention_backward(dout, cache: LinearAttentionCache):
    """Returns (dq, dk, dv)."""
    dqf, dkf, dv = linear_core_backward(dout, cache.core)
    if cache.mask is not None:
        dkf = dkf * cache.mask                             # fwd: kf = phi(k) * mask
    # fwd: qf = phi(q)  =>  dq = dqf * phi'(q)
    dq = dqf * elu_plus_one_grad(cache.q)
    dk = dkf * elu_plus_one_grad(cache.k)
    return dq, dk, dv
# --8<-- [end:linear_attention]


@register_kernel("linear")
class LinearAttention(AttentionKernel):
    """Linear attention with phi = elu + 1. Options: `eps` (denominator guard), `chunk_size`
    (positions per block of the causal scans: memory O(chunk^2) per (B, H) on top of the state)."""

    def __init__(self, n_head: int, head_dim: int, max_len=None, rng=None, eps: float = 1e-6,
                 chunk_size: int = 64):
        super().__init__(n_head, head_dim, max_len, rng)
        if chunk_size < 1:
            raise ValueError(f"linear attention: chunk_size must be >= 1, got {chunk_size}")
        self.eps, self.chunk_size = eps, chunk_size

    def attend(self, q, k, v, causal, key_valid):
        out, cache = linear_attention_forward(q, k, v, causal, key_valid, self.eps, self.chunk_size)
        self.cache = cache if self.keep_cache else None
        return out

    def backward(self, dout):
        return linear_attention_backward(dout, self.saved_cache())

    def extra_repr(self) -> str:
        return f"eps={self.eps}, chunk_size={self.chunk_size}"


def kernel_case(name, kernel, q, k, v, causal=False, key_valid=None):
    """A check_module case for an attention kernel, gradients for q, k, v (and its parameters)."""
    return check_module(
        name, kernel, [q, k, v],
        run=lambda m, q_, k_, v_: m.forward(q_, k_, v_, causal=causal,
                                            key_padding_mask=None if key_valid is None else ~key_valid))


def mha_case(name, device, attention, options=None, causal=False, pad=False, T=5, max_len=None):
    """A gradient check of MultiHeadAttention (d_model 6, 2 heads) running the given kernel, in eval
    mode so random features and rotations stay fixed."""
    from .multi_head import MultiHeadAttention     # late import: multi_head imports the kernel registry
    mha = MultiHeadAttention(6, 2, attention=attention, attention_options=options or {}, max_len=max_len,
                             rng=backend.host_rng(7)).to(device, "float64").eval()
    (x,) = float64_inputs(device, 8, (2, T, 6))
    kpm = None
    if pad:
        kpm = backend.to_device(backend.host_rng(9).random((2, T)) > 0.3, device)
        kpm[:, 0] = True
    return check_module(f"{name}[causal={causal},pad={pad}]", mha, [x],
                        run=lambda m, a: m.forward(a, causal=causal,
                                                   key_padding_mask=None if kpm is None else ~kpm))


@register("attention.MultiHeadAttention.linear")
def _gradcheck_mha_linear(device: str):
    return [mha_case("MHA(linear)", device, "linear", {"chunk_size": 2}, causal=True, pad=True),
            mha_case("MHA(linear)", device, "linear", {}, causal=False, pad=True)]


@register("attention.linear")
def _gradcheck_linear(device: str):
    kernel = LinearAttention(2, 4, chunk_size=2).to(device, "float64")
    q, k, v = float64_inputs(device, 0, (2, 2, 5, 4), (2, 2, 5, 4), (2, 2, 5, 4))
    mask = backend.to_device(backend.host_rng(0).random((2, 5)) > 0.3, device)
    mask[:, 0] = True
    k2, v2 = float64_inputs(device, 1, (1, 2, 7, 4), (1, 2, 7, 4))
    return [
        kernel_case("attention.linear", kernel, q, k, v, False, mask),
        kernel_case("attention.linear(causal)", kernel, q, k, v, True, mask),
        kernel_case("attention.linear(causal,S>T)", kernel, q[:1], k2, v2, True),
    ]
