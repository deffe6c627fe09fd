r"""Low-rank linear layer: the weight $W \in \mathbb{R}^{C_{in} \times C_{out}}$ replaced by a product.

Forward:   $h = x A$,  $y = h B + b$, with $A \in \mathbb{R}^{C_{in} \times K}$, $B \in \mathbb{R}^{K \times C_{out}}$.

Backward:  $dB = h^\top dy$,  $dh = dy\, B^\top$,  $dA = x^\top dh$,  $dx = dh\, A^\top$,  $db = \sum_n dy_n$.

Parameters drop from $C_{in} C_{out}$ to $K (C_{in} + C_{out})$ and so do the multiply-adds per token;
both save only when $K < C_{in} C_{out} / (C_{in} + C_{out})$ (see ``compress.accounting.break_even_rank``).

A layer like any other: a model may be built with it from scratch (``GPTConfig.low_rank``). Turning
a trained model's Linears into factors is model surgery and lives in ``compress/lowrank.py``.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from .. import backend
from ..gradcheck import check_functional, check_module, float64_inputs, register
from .checks import check_array
from .module import Module, Parameter


class LowRankCache(NamedTuple):
    x: Any          # (N, C_in) the input, flattened over its leading dimensions
    h: Any          # (N, K) x @ A, kept: it is K wide, cheaper to store than to recompute
    a: Any          # (C_in, K)
    b: Any          # (K, C_out)
    in_shape: tuple  # the input's original shape, to unflatten dx
    has_bias: bool


# --8<-- [start:lowrank]
def lowrank_linear_forward(x, a, b, bias=None):
    """y = (x @ a) @ b + bias over the last axis of x; two thin matmuls instead of one wide one."""
    x2 = x.reshape(-1, a.shape[0])                    # (..., C_in) -> (N, C_in)
    h = x2 @ a                                        # (N, C_in) @ (C_in, K) -> (N, K)
    y = h @ b                                         # (N, K) @ (K, C_out) -> (N, C_out)
    if bias is not None:
        y += bias
    y = y.reshape(*x.shape[:-1], b.shape[1])          # (N, C_out) -> (..., C_out)
    return y, LowRankCache(x2, h, a, b, x.shape, bias is not None)


def lowrank_linear_backward(dy, cache: LowRankCache):
    """Returns (dx, da, db, dbias); dbias is None when the forward had no bias."""
    dy2 = dy.reshape(-1, cache.b.shape[1])            # (..., C_out) -> (N, C_out)
    # fwd: y = h @ b  =>  db = h^T @ dy,  dh = dy @ b^T
    db = cache.h.T @ dy2                              # (K, N) @ (N, C_out) -> (K, C_out)
    dh = dy2 @ cache.b.T                              # (N, C_out) @ (C_out, K) -> (N, K)
    # fwd: h = x @ a  =>  da = x^T @ dh,  dx = dh @ a^T
    da = cache.x.T @ dh                               # (C_in, N) @ (N, K) -> (C_in, K)
    dx = (dh @ cache.a.T).reshape(cache.in_shape)     # (N, K) @ (K, C_in) -> (..., C_in)
    # fwd: y = ... + bias (broadcast over rows)  =>  dbias = sum of dy over rows
    dbias = dy2.sum(axis=0) if cache.has_bias else None  # (N, C_out) -> (C_out,)
    return dx, da, db, dbias
# --8<-- [end:lowrank]


class WeightView:
    """Read-only stand-in for a Linear's `weight` Parameter on layers that store their weight in
    another form (factors, int8): code that asks a layer for `.weight.dtype`, `.device` or `.shape`
    (e.g. MultiHeadAttention's input checks) keeps working; `.data` builds the dense matrix."""

    def __init__(self, build, dtype, device: str, shape: tuple):
        self._build, self.dtype, self.device, self.shape = build, dtype, device, shape

    @property
    def data(self):
        return self._build()

    def __repr__(self) -> str:
        return f"WeightView(shape={self.shape}, dtype={self.dtype}, device={self.device})"


class LowRankLinear(Module):
    """y = (x @ A) @ B + b, a drop-in for Linear with rank K.

    From scratch, A and B are drawn from N(0, std / sqrt(K)) each, so every entry of the product
    A @ B has standard deviation `std` (default 1/sqrt(C_in), like Linear); the bias starts at zero.
    ``compress.lowrank.from_linear`` initialises the factors from the truncated SVD of a trained
    Linear instead.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True,
                 rng: np.random.Generator | None = None, std: float | None = None):
        super().__init__()
        check_rank(rank, in_features, out_features, "LowRankLinear")
        rng = rng if rng is not None else backend.host_rng(0)
        std = std if std is not None else in_features ** -0.5
        f = (std / rank ** 0.5) ** 0.5                     # var(AB) = K f^2 f^2 = std^2
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.a = Parameter((rng.standard_normal((in_features, rank)) * f).astype(np.float32))
        self.b = Parameter((rng.standard_normal((rank, out_features)) * f).astype(np.float32))
        self.bias = Parameter(np.zeros(out_features, np.float32)) if bias else None
        self.cache = None

    def forward(self, x):
        check_array(x, "LowRankLinear input", last_dim=self.in_features, dtype=self.a.dtype,
                    device=self.a.device)
        y, cache = lowrank_linear_forward(x, self.a.data, self.b.data,
                                          None if self.bias is None else self.bias.data)
        self.cache = cache if self.keep_cache else None
        return y

    def backward(self, dy):
        if self.cache is None:
            raise RuntimeError("LowRankLinear.backward called without a cached forward "
                               "(was forward run inside no_grad()?)")
        dx, da, db, dbias = lowrank_linear_backward(dy, self.cache)
        self.a.grad += da
        self.b.grad += db
        if self.bias is not None:
            self.bias.grad += dbias
        return dx

    def dense_weight(self):
        """The (C_in, C_out) matrix A @ B this layer applies."""
        return self.a.data @ self.b.data              # (C_in, K) @ (K, C_out) -> (C_in, C_out)

    @property
    def weight(self) -> WeightView:
        """dtype/device/shape like a Linear's weight; .data is A @ B (computed on access)."""
        return WeightView(self.dense_weight, self.a.dtype, self.a.device, (self.in_features, self.out_features))

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, rank={self.rank}, bias={self.bias is not None}"


def check_rank(rank, m: int, n: int, where: str) -> None:
    """A rank must be an integer with 1 <= rank <= min(m, n)."""
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
        raise TypeError(f"{where}: rank must be an integer, got {type(rank).__name__}")
    if not 1 <= rank <= min(m, n):
        raise ValueError(f"{where}: rank must lie in [1, min(m, n)] = [1, {min(m, n)}] for a "
                         f"{m}x{n} matrix, got {rank}")


@register("nn.lowrank_linear")
def _gradcheck_lowrank_pair(device: str):
    x, a, b, bias = float64_inputs(device, 3, (2, 3, 6), (6, 2), (2, 5), (5,))   # non-square, K=2
    return check_functional("nn.lowrank_linear", lowrank_linear_forward, lowrank_linear_backward,
                            [x, a, b, bias])


@register("nn.LowRankLinear")
def _gradcheck_lowrank_module(device: str):
    layer = LowRankLinear(5, 4, 3, rng=backend.host_rng(2)).to(device, "float64")
    layer.bias.data += backend.to_device(np.arange(4) * 0.1, device)
    (x,) = float64_inputs(device, 4, (3, 1, 5))       # T = 1
    return check_module("nn.LowRankLinear", layer, [x])
