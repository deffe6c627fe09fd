r"""Positional information: fixed sinusoids, a learned table, and rotary embeddings (RoPE).

(ALiBi, the fourth scheme of `GPTConfig.positional`, is a bias on the attention scores and lives
with the kernels: ``attention/alibi.py``.)

Attention is blind to order (it treats its keys as a set), so position enters in one of two ways:

* **added to the input** once, before the first block: the sinusoidal encoding of Vaswani et al.,

  $$PE_{t,2i} = \sin\!\big(t / 10000^{2i/C}\big),\qquad PE_{t,2i+1} = \cos\!\big(t / 10000^{2i/C}\big)$$

  or a learned table $P \in \mathbb{R}^{T_{max} \times C}$; forward $y = x + P_{o:o+T}$ (offset $o$
  for a KV cache), backward $dx = dy$, $dP_{o:o+T} = \sum_b dy_b$;

* **rotating queries and keys** in every attention layer (RoPE): the pair of features
  $(x_i, x_{i+D/2})$ at position $t$ is turned by the angle $t\,\theta_i$, $\theta_i = b^{-2i/D}$,

  $$\begin{pmatrix} y_i \\ y_{i+D/2} \end{pmatrix} = \begin{pmatrix} \cos t\theta_i & -\sin t\theta_i \\
  \sin t\theta_i & \cos t\theta_i \end{pmatrix} \begin{pmatrix} x_i \\ x_{i+D/2} \end{pmatrix}$$

  so that $q_s^\top k_t$ depends on $s - t$ only. A rotation's inverse is its transpose: the
  backward turns $dy$ by $-t\,\theta_i$.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from . import backend
from .backend import get_array_module
from .gradcheck import check_functional, check_module, float64_inputs, register
from .nn.checks import check_array
from .nn.module import Module, Parameter


def _check_positions(x, name: str, d_model: int, max_len: int, offset: int) -> int:
    """Check x (..., T, C) against the table; return T."""
    check_array(x, name, last_dim=d_model)
    if x.ndim < 2:
        raise ValueError(f"{name}: expected (B, T, C) (or (T, C)), got shape {tuple(x.shape)}")
    T = x.shape[-2]
    if offset < 0 or T + offset > max_len:
        raise ValueError(f"{name}: positions {offset}..{offset + T - 1} (T={T}, offset={offset}) exceed "
                         f"max_len={max_len}; build the model with a larger context length")
    return T


# -- sinusoidal -------------------------------------------------------------------------------
# --8<-- [start:sinusoidal]
def sinusoidal_encoding(T: int, C: int, dtype=np.float32, device: str = "cpu"):
    """The fixed (T, C) table of Vaswani et al.: sin on even features, cos on odd ones.

    Feature pair (2i, 2i+1) has wavelength 2*pi * 10000^(2i/C); an odd C ends with a lone sin.
    Built once on the host in float64, then cast and moved.
    """
    if T < 0 or C < 1:
        raise ValueError(f"sinusoidal_encoding: expected T >= 0 and C >= 1, got T={T}, C={C}")
    pos = np.arange(T, dtype=np.float64)[:, None]                 # (T, 1)
    inv_freq = 10000.0 ** (-np.arange(0, C, 2) / C)               # (ceil(C/2),)
    angle = pos * inv_freq                                        # (T, 1) * (ceil(C/2),) -> (T, ceil(C/2))
    pe = np.empty((T, C))
    pe[:, 0::2] = np.sin(angle)                                   # (T, ceil(C/2))
    pe[:, 1::2] = np.cos(angle[:, : C // 2])                      # (T, floor(C/2))
    return backend.to_device(pe, device, dtype)
# --8<-- [end:sinusoidal]


class SinusoidalPositionalEncoding(Module):
    """y = x + PE[offset:offset+T] with the fixed sinusoidal table; no parameters.

    The table `pe` is a buffer that follows `.to(device, dtype)`, but it is never cast: whatever is
    assigned to it only sets the dtype and device, and the table is rebuilt from its float64
    definition. (Casting the float32 table up would leave float64 models with float32's rounding
    error, up to 3e-8.)
    """

    _buffers = ("pe",)

    def __init__(self, max_len: int, d_model: int):
        super().__init__()
        self.max_len, self.d_model = max_len, d_model
        self.pe = sinusoidal_encoding(max_len, d_model)           # (max_len, C) float32 to start with

    @property
    def pe(self):
        """The (max_len, C) table in the module's dtype and on its device."""
        return self._pe

    @pe.setter
    def pe(self, table):
        # Module.to assigns the moved and cast buffer: keep its dtype and device, not its values
        self._pe = sinusoidal_encoding(self.max_len, self.d_model, table.dtype, backend.device_of(table))

    def forward(self, x, offset: int = 0):
        T = _check_positions(x, "SinusoidalPositionalEncoding input", self.d_model, self.max_len, offset)
        check_array(x, "SinusoidalPositionalEncoding input", dtype=self.pe.dtype,
                    device=backend.device_of(self.pe))
        return x + self.pe[offset:offset + T]                     # (B, T, C) + (T, C) -> (B, T, C)

    def backward(self, dy):
        # fwd: y = x + PE (a constant)  =>  dx = dy
        return dy

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}, d_model={self.d_model}"


# -- learned ------------------------------------------------------------------------------------
class PositionalAddCache(NamedTuple):
    offset: int     # first position used
    T: int          # number of positions used
    table_shape: tuple


# --8<-- [start:learned]
def positional_add_forward(x, table, offset: int = 0):
    """y = x + table[offset:offset+T] for x of shape (..., T, C)."""
    T = x.shape[-2]
    y = x + table[offset:offset + T]                              # (B, T, C) + (T, C) -> (B, T, C)
    return y, PositionalAddCache(offset, T, table.shape)


def positional_add_backward(dy, cache: PositionalAddCache):
    """Returns (dx, dtable, None): dtable is zero outside the rows used."""
    xp = get_array_module(dy)
    o, T = cache.offset, cache.T
    # fwd: y_b = x_b + table[o:o+T]  =>  dx = dy,  dtable[o:o+T] = sum over the batch of dy
    dtable = xp.zeros(cache.table_shape, dtype=dy.dtype)          # (max_len, C)
    dy3 = dy.reshape(-1, T, dy.shape[-1])                         # (..., T, C) -> (B, T, C)
    dy3.sum(axis=0, out=dtable[o:o + T])                          # (B, T, C) -> (T, C)
    return dy, dtable, None
# --8<-- [end:learned]


class LearnedPositionalEmbedding(Module):
    """y = x + W[offset:offset+T] with a learned (max_len, d_model) table drawn from N(0, std^2)."""

    def __init__(self, max_len: int, d_model: int, rng: np.random.Generator | None = None,
                 std: float = 0.02):
        super().__init__()
        rng = rng if rng is not None else backend.host_rng(0)
        self.max_len, self.d_model = max_len, d_model
        self.weight = Parameter((rng.standard_normal((max_len, d_model)) * std).astype(np.float32))
        self.cache = None

    def forward(self, x, offset: int = 0):
        _check_positions(x, "LearnedPositionalEmbedding input", self.d_model, self.max_len, offset)
        check_array(x, "LearnedPositionalEmbedding input", dtype=self.weight.dtype,
                    device=self.weight.device)
        y, cache = positional_add_forward(x, self.weight.data, offset)
        self.cache = cache if self.keep_cache else None
        return y

    def backward(self, dy):
        dx, dtable, _ = positional_add_backward(dy, self.cache)
        self.weight.grad += dtable
        return dx

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}, d_model={self.d_model}"


# -- rotary (RoPE) ------------------------------------------------------------------------------
class RopeCache(NamedTuple):
    cos: Any    # (T, D/2) cos(t * theta_i) for the positions used
    sin: Any    # (T, D/2)


def rope_tables(T: int, D: int, offset: int = 0, base: float = 10000.0, dtype=np.float32, xp=np):
    """cos and sin of t * theta_i, t = offset..offset+T-1, theta_i = base^(-2i/D); each (T, D/2)."""
    inv_freq = base ** (-xp.arange(0, D, 2, dtype=xp.float64) / D)          # (D/2,)
    pos = xp.arange(offset, offset + T, dtype=xp.float64)[:, None]          # (T, 1)
    angle = pos * inv_freq                                                  # (T, 1) * (D/2,) -> (T, D/2)
    return xp.cos(angle).astype(dtype), xp.sin(angle).astype(dtype)


# --8<-- [start:rope]
def rope_forward(x, offset: int = 0, base: float = 10000.0):
    """Rotate feature pairs (i, i + D/2) of x (B, H, T, D) by the angles of positions offset..offset+T-1."""
    xp = get_array_module(x)
    *_, T, D = x.shape
    if x.ndim != 4 or D % 2:
        raise ValueError(f"rope_forward: expected x of shape (B, H, T, D) with D even, got {tuple(x.shape)}")
    h = D // 2
    cos, sin = rope_tables(T, D, offset, base, x.dtype, xp)                 # (T, D/2) each
    x1, x2 = x[..., :h], x[..., h:]                                         # (B, H, T, D/2) views
    y = xp.empty_like(x)
    y1, y2 = y[..., :h], y[..., h:]                                         # views into the output
    xp.multiply(x1, cos, out=y1)
    y1 -= x2 * sin                                                          # y1 = x1 cos - x2 sin
    xp.multiply(x2, cos, out=y2)
    y2 += x1 * sin                                                          # y2 = x2 cos + x1 sin
    return y, RopeCache(cos, sin)


def rope_backward(dy, cache: RopeCache):
    """Returns dx: dy turned back by the same angles (the transpose of a rotation)."""
    xp = get_array_module(dy)
    cos, sin = cache
    h = dy.shape[-1] // 2
    dy1, dy2 = dy[..., :h], dy[..., h:]                                     # (B, H, T, D/2) views
    dx = xp.empty_like(dy)
    dx1, dx2 = dx[..., :h], dx[..., h:]
    # fwd: y1 = x1 cos - x2 sin,  y2 = x2 cos + x1 sin  =>  dx1 = dy1 cos + dy2 sin,  dx2 = dy2 cos - dy1 sin
    xp.multiply(dy1, cos, out=dx1)
    dx1 += dy2 * sin
    xp.multiply(dy2, cos, out=dx2)
    dx2 -= dy1 * sin
    return dx
# --8<-- [end:rope]


class RotaryEmbedding(Module):
    """RoPE inside attention: turns the queries and keys (B, H, T, D) of a layer by the angles of
    their positions; `MultiHeadAttention(rotary=RotaryEmbedding())` calls it after the split into
    heads and before the KV cache, with offset = the number of positions already cached, so a cached
    key keeps the rotation of the position it was computed at. No parameters.

    forward(q, k, offset) -> (q', k');  backward(dq', dk') -> (dq, dk), both turned back.
    """

    def __init__(self, base: float = 10000.0):
        super().__init__()
        if not base > 1:
            raise ValueError(f"RotaryEmbedding: base must be > 1, got {base!r}")
        self.base = base
        self.cache = None

    # --8<-- [start:rotary_module]
    def forward(self, q, k, offset: int = 0):
        if q.shape[2] != k.shape[2]:
            raise ValueError(f"RotaryEmbedding: queries and keys of one step must cover the same positions, "
                             f"got q {tuple(q.shape)} and k {tuple(k.shape)}")
        q_rot, cache = rope_forward(q, offset, self.base)          # (B,H,T,D), positions offset..offset+T-1
        k_rot, _ = rope_forward(k, offset, self.base)              # the same angles: one cache serves both
        self.cache = cache if self.keep_cache else None
        return q_rot, k_rot

    def backward(self, dq, dk):
        if self.cache is None:
            raise RuntimeError("RotaryEmbedding.backward: no forward pass was cached")
        # fwd: q' = R q, k' = R k (R a rotation per position)  =>  dq = R^T dq', dk = R^T dk'
        return rope_backward(dq, self.cache), rope_backward(dk, self.cache)
    # --8<-- [end:rotary_module]

    def extra_repr(self) -> str:
        return f"base={self.base}"


# -- gradient checks ----------------------------------------------------------------------------
@register("positional.Sinusoidal")
def _gradcheck_sinusoidal(device: str):
    (x,) = float64_inputs(device, 10, (2, 3, 5))
    return check_module("positional.Sinusoidal", SinusoidalPositionalEncoding(6, 5).to(device, "float64"),
                        [x], run=lambda m, a: m.forward(a, offset=2))


@register("positional.Learned")
def _gradcheck_learned(device: str):
    layer = LearnedPositionalEmbedding(7, 4, rng=backend.host_rng(11), std=1.0).to(device, "float64")
    (x,) = float64_inputs(device, 11, (2, 3, 4))
    return check_module("positional.Learned", layer, [x], run=lambda m, a: m.forward(a, offset=3))


@register("positional.rope")
def _gradcheck_rope(device: str):
    (x,) = float64_inputs(device, 12, (2, 3, 5, 6))     # B=2, H=3, T=5, D=6 (odd D/2)
    return check_functional("positional.rope", lambda a: rope_forward(a, offset=4), rope_backward, [x])


@register("positional.RotaryEmbedding(rope)")
def _gradcheck_rotary_module(device: str):
    """Queries and keys turned together, at an offset (a KV-cache step), checked as one output."""
    q, k = float64_inputs(device, 13, (2, 2, 3, 4), (2, 2, 3, 4))
    xp = backend.get_array_module(q)

    def run(m, q_, k_):
        return xp.concatenate(m.forward(q_, k_, offset=5), axis=-1)           # (B,H,T,2D)

    def backward(m, d):
        return m.backward(d[..., :4], d[..., 4:])

    return check_module("positional.RotaryEmbedding(rope, offset=5)", RotaryEmbedding(), [q, k],
                        run=run, backward=backward)
