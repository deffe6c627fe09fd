r"""Memory compressors of the Compressive Transformer: N old memories -> N / c compressed ones.

Both read the N memories in groups of c consecutive rows (c, the compression rate, divides N):

* **mean pooling** (no parameters): $y_s = \frac1c \sum_{t<c} x_{cs+t}$, backward
  $dx_{cs+t} = dy_s / c$;
* **a strided 1-D convolution** with kernel and stride c: $y_s = \sum_{t<c} x_{cs+t} W_t + b$.
  Reading each group as one row of $cC$ features, $X' \in \mathbb{R}^{N/c \times cC}$, it is the
  linear map $Y = X' W + b$ with $W \in \mathbb{R}^{cC \times C}$, so its backward is Linear's:
  $dX' = dY W^\top$, $dW = X'^\top dY$, $db = \sum_s dy_s$, read back as $N \times C$.

The convolution starts as mean pooling ($W_t = I / c$) plus a little noise, so an untrained
compressor already keeps the average of its group.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np  # host side only (seeded init); array math uses xp

from .. import backend
from ..gradcheck import check_functional, check_module, float64_inputs, register
from .checks import check_array
from .functional.linear import linear_backward, linear_forward
from .module import Module, Parameter

COMPRESSIONS = ("conv", "mean")


def _groups(x, rate: int, name: str):
    """(B, N, C) -> (B, N/c, c, C), checking that c divides N."""
    B, N, C = x.shape
    if N % rate:
        raise ValueError(f"{name}: {N} memories cannot be compressed at rate {rate} (N must be a multiple of c)")
    return x.reshape(B, N // rate, rate, C)                         # (B,N,C) -> (B,N/c,c,C)


# --8<-- [start:mean_pool]
def mean_pool_forward(x, rate: int):
    """(B, N, C) -> (B, N/c, C): the mean of every group of c rows."""
    y = _groups(x, rate, "mean_pool_forward").mean(axis=2)          # (B,N/c,c,C) -> (B,N/c,C)
    return y, rate


def mean_pool_backward(dy, rate: int):
    """fwd: y_s = mean_t x_{cs+t}  =>  dx_{cs+t} = dy_s / c."""
    xp = backend.get_array_module(dy)
    B, S, C = dy.shape
    dx = xp.broadcast_to(dy[:, :, None, :] / rate, (B, S, rate, C))  # (B,N/c,C) -> (B,N/c,c,C)
    return dx.reshape(B, S * rate, C)                                # -> (B,N,C), a fresh array
# --8<-- [end:mean_pool]


class ConvCompressCache(NamedTuple):
    linear: Any      # the LinearCache of the grouped rows
    shape: tuple     # the input's (B, N, C)


# --8<-- [start:conv_compress]
def conv_compress_forward(x, w, b, rate: int):
    """(B, N, C) -> (B, N/c, C): a 1-D convolution with kernel = stride = c, w (cC, C), b (C,)."""
    B, N, C = x.shape
    rows = _groups(x, rate, "conv_compress_forward").reshape(B, N // rate, rate * C)   # -> (B,N/c,cC)
    y, cache = linear_forward(rows, w, b)                            # (B,N/c,cC) @ (cC,C) -> (B,N/c,C)
    return y, ConvCompressCache(cache, x.shape)


def conv_compress_backward(dy, cache: ConvCompressCache):
    """Returns (dx, dw, db): Linear's backward on the grouped rows, read back as (B, N, C)."""
    drows, dw, db = linear_backward(dy, cache.linear)                # (B,N/c,C) -> (B,N/c,cC)
    return drows.reshape(cache.shape), dw, db                        # (B,N/c,cC) -> (B,N,C)
# --8<-- [end:conv_compress]


class MeanPoolCompressor(Module):
    """Mean pooling at rate c; no parameters."""

    def __init__(self, rate: int):
        super().__init__()
        self.rate = rate

    def forward(self, x):
        check_array(x, "MeanPoolCompressor input", ndim=3)
        y, _ = mean_pool_forward(x, self.rate)
        return y

    def backward(self, dy):
        return mean_pool_backward(dy, self.rate)

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class ConvCompressor(Module):
    """Strided 1-D convolution at rate c: weight (c*C, C) starting at mean pooling, bias (C,)."""

    def __init__(self, d_model: int, rate: int, rng: np.random.Generator | None = None, noise: float = 0.02):
        super().__init__()
        rng = rng if rng is not None else backend.host_rng(0)
        self.d_model, self.rate = d_model, rate
        mean = np.tile(np.eye(d_model) / rate, (rate, 1))              # (cC, C): W_t = I / c
        self.weight = Parameter((mean + rng.standard_normal(mean.shape) * noise / rate).astype(np.float32))
        self.bias = Parameter(np.zeros(d_model, np.float32))
        self.cache = None

    def forward(self, x):
        check_array(x, "ConvCompressor input", ndim=3, last_dim=self.d_model, dtype=self.weight.dtype,
                    device=self.weight.device)
        y, cache = conv_compress_forward(x, self.weight.data, self.bias.data, self.rate)
        self.cache = cache if self.keep_cache else None
        return y

    def backward(self, dy):
        if self.cache is None:
            raise RuntimeError("ConvCompressor.backward: no forward pass was cached")
        dx, dw, db = conv_compress_backward(dy, self.cache)
        self.weight.grad += dw
        self.bias.grad += db
        return dx

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, rate={self.rate}"


def make_compressor(kind: str, d_model: int, rate: int, rng=None) -> Module:
    """A compressor by name: "conv" (learned, strided convolution) or "mean" (mean pooling)."""
    if kind == "conv":
        return ConvCompressor(d_model, rate, rng)
    if kind == "mean":
        return MeanPoolCompressor(rate)
    raise ValueError(f"unknown compression {kind!r}; known: {list(COMPRESSIONS)}")


# -- gradient checks (float64) ------------------------------------------------------------------
@register("nn.compressive_mean_pool")
def _gradcheck_mean_pool(device: str):
    (x,) = float64_inputs(device, 31, (2, 6, 3))
    return [check_functional(f"nn.compressive_mean_pool[c={c}]", lambda a, c=c: mean_pool_forward(a, c),
                             lambda d, c: (mean_pool_backward(d, c),), [x]) for c in (1, 2, 3)]


@register("nn.compressive_conv")
def _gradcheck_conv(device: str):
    results = []
    for c in (1, 2, 3):
        comp = ConvCompressor(4, c, rng=backend.host_rng(32), noise=0.5).to(device, "float64")
        (x,) = float64_inputs(device, 33, (2, 6, 4))
        results.append(check_module(f"nn.compressive_conv[c={c}]", comp, [x]))
    return results
