r"""Low-rank linear layer: the weight $W \in \mathbb{R}^{C_{in} \times C_{out}}$ replaced by a product.

Forward:   $h = x A$,  $y = h B + b$, with $A \in \mathbb{R}^{C_{in} \times K}$, $B \in \mathbb{R}^{K \times C_{out}}$.

Backward:  $dB = h^\top dy$,  $dh = dy\, B^\top$,  $dA = x^\top dh$,  $dx = dh\, A^\top$,  $db = \sum_n dy_n$.

Parameters drop from $C_{in} C_{out}$ to $K (C_{in} + C_{out})$ and so do the multiply-adds per token;
both save only when $K < C_{in} C_{out} / (C_{in} + C_{out})$ (see ``accounting.break_even_rank``).

This file also holds the generic model surgery used by every compression method:
:func:`replace_linears` walks a model and swaps the Linear layers whose dotted names match a list of
targets, and :func:`factorize_model` uses it to turn a model's chosen Linears into LowRankLinears.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from .. import backend
from ..gradcheck import check_functional, check_module, float64_inputs, register
from ..nn.checks import check_array
from ..nn.linear import Linear
from ..nn.module import Module, Parameter


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
    :meth:`from_linear` initialises the factors from the truncated SVD of a trained Linear instead.
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

    @classmethod
    def from_linear(cls, linear: Linear, rank: int) -> "LowRankLinear":
        """The rank-K layer closest to `linear` in Frobenius and spectral norm (Eckart–Young):
        A = U_K sqrt(S_K), B = sqrt(S_K) V_K^T, bias copied. Same device and dtype as `linear`."""
        from .svd import truncated_factors  # svd.py imports this file; import here to avoid a cycle
        w = linear.weight.data
        check_rank(rank, *w.shape, "from_linear")
        a, b = truncated_factors(w, rank)
        layer = cls(w.shape[0], w.shape[1], rank, bias=linear.bias is not None)
        layer.to(linear.weight.device, w.dtype)
        layer.a.data, layer.b.data = a.astype(w.dtype), b.astype(w.dtype)
        if linear.bias is not None:
            layer.bias.data = linear.bias.data.astype(w.dtype)   # astype copies
        return layer

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


def from_linear(linear: Linear, rank: int) -> LowRankLinear:
    """The rank-`rank` truncated-SVD LowRankLinear of a Linear (see LowRankLinear.from_linear)."""
    return LowRankLinear.from_linear(linear, rank)


def check_rank(rank, m: int, n: int, where: str) -> None:
    """A rank must be an integer with 1 <= rank <= min(m, n)."""
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
        raise TypeError(f"{where}: rank must be an integer, got {type(rank).__name__}")
    if not 1 <= rank <= min(m, n):
        raise ValueError(f"{where}: rank must lie in [1, min(m, n)] = [1, {min(m, n)}] for a "
                         f"{m}x{n} matrix, got {rank}")


# -- model surgery ----------------------------------------------------------------------------

def _matches(name: str, targets) -> bool:
    """True when the dotted pieces of some target appear, contiguous, among the pieces of `name`:
    "attn.qkv" matches "blocks.0.attn.qkv", "ffn" matches "blocks.3.ffn.fc1"."""
    parts = name.split(".")
    for target in targets:
        t = target.split(".")
        if any(parts[i:i + len(t)] == t for i in range(len(parts) - len(t) + 1)):
            return True
    return False


def _slots(module: Module, prefix: str = ""):
    """(dotted name, owner, key, child) for every Module reachable through attributes and lists;
    `owner[key]` (a list) or `setattr(owner, key, ...)` (a Module) replaces the child."""
    for attr, value in list(vars(module).items()):
        if isinstance(value, Module):
            yield f"{prefix}{attr}", module, attr, value
            yield from _slots(value, f"{prefix}{attr}.")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, Module):
                    yield f"{prefix}{attr}.{i}", value, i, item
                    yield from _slots(item, f"{prefix}{attr}.{i}.")


# --8<-- [start:replace_linears]
def replace_linears(model: Module, targets, make: Callable[[str, Linear], Module],
                    kind: type = Linear) -> list[str]:
    """Swap every `kind` (default Linear) sub-module whose dotted name matches one of `targets`
    for `make(name, layer)`; return the names replaced. Raises ValueError if nothing matched."""
    if isinstance(targets, str):
        targets = [targets]
    targets = list(targets)
    if not targets:
        raise ValueError("replace_linears: expected at least one target name, got none")
    found = [(n, owner, key, child) for n, owner, key, child in _slots(model)
             if isinstance(child, kind) and _matches(n, targets)]
    if not found:
        names = [n for n, _, _, c in _slots(model) if isinstance(c, kind)]
        raise ValueError(f"replace_linears: no {kind.__name__} matches targets {targets}; "
                         f"the model has {names[:12]}{' ...' if len(names) > 12 else ''}")
    for name, owner, key, child in found:
        new = make(name, child)
        if isinstance(owner, list):
            owner[key] = new
        else:
            setattr(owner, key, new)
    return [n for n, *_ in found]
# --8<-- [end:replace_linears]


DEFAULT_TARGETS = ("attn.qkv", "attn.proj", "ffn.fc1", "ffn.fc2")


# --8<-- [start:factorize_model]
def factorize_model(model: Module, rank: int, targets=DEFAULT_TARGETS, init: str = "random",
                    rng: np.random.Generator | None = None, seed: int = 0) -> list[str]:
    """Replace the Linears named by `targets` with rank-`rank` LowRankLinears, in place.

    init="random": fresh factors drawn from `rng` (or host_rng(seed)), scaled so that A @ B has the
    standard deviation of the weight it replaces (keeping e.g. GPT-2's residual scaling);
    init="svd": factors from the truncated SVD of the current weights (compressing a trained model).
    The new layers take the device and dtype of the layers they replace. Returns the names replaced.
    """
    if init not in ("random", "svd"):
        raise ValueError(f"factorize_model: init must be 'random' or 'svd', got {init!r}")
    rng = rng if rng is not None else backend.host_rng(seed)

    def make(name, linear):
        check_rank(rank, linear.in_features, linear.out_features, f"factorize_model({name})")
        if init == "svd":
            return LowRankLinear.from_linear(linear, rank)
        std = float(backend.to_numpy(linear.weight.data).std())
        layer = LowRankLinear(linear.in_features, linear.out_features, rank,
                              bias=linear.bias is not None, rng=rng, std=std)
        return layer.to(linear.weight.device, linear.weight.dtype)

    return replace_linears(model, targets, make)
# --8<-- [end:factorize_model]


@register("compress.lowrank_linear")
def _gradcheck_lowrank_pair(device: str):
    x, a, b, bias = float64_inputs(device, 3, (2, 3, 6), (6, 2), (2, 5), (5,))   # non-square, K=2
    return check_functional("compress.lowrank_linear", lowrank_linear_forward,
                            lowrank_linear_backward, [x, a, b, bias])


@register("compress.LowRankLinear")
def _gradcheck_lowrank_module(device: str):
    layer = LowRankLinear(5, 4, 3, rng=backend.host_rng(2)).to(device, "float64")
    layer.bias.data += backend.to_device(np.arange(4) * 0.1, device)
    (x,) = float64_inputs(device, 4, (3, 1, 5))       # T = 1
    return check_module("compress.LowRankLinear", layer, [x])


@register("compress.GPT(low_rank)")
def _gradcheck_gpt_lowrank(device: str):
    """A whole GPT built with GPTConfig.low_rank: every factor gets the right gradient in context."""
    from ..models.gpt import GPT, GPTConfig
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, d_model=8, low_rank=3)
    model = GPT(cfg, seed=5).to(device, "float64")
    rng = backend.host_rng(6)
    idx = backend.to_device(rng.integers(0, 11, (2, 4)), device)
    targets = backend.to_device(rng.integers(0, 11, (2, 4)), device)
    return check_module("compress.GPT(low_rank=3)", model, [idx, targets],
                        run=lambda m, i, t: m.forward(i, t)[1],
                        backward=lambda m, d: m.backward(dloss=float(d)), eps=1e-5, max_coords=24)
