r"""LoRA: a frozen pretrained Linear plus a trainable low-rank update (Hu et al., 2021).

In our layout ($y = xW + b$, $W \in \mathbb{R}^{C_{in} \times C_{out}}$), with $A \in \mathbb{R}^{C_{in} \times r}$,
$B \in \mathbb{R}^{r \times C_{out}}$ and scale $s = \alpha / r$:

$$h = x W_0 + b + s\, (x A) B, \qquad A \sim \mathcal{N}(0, 1/C_{in}),\ B = 0,$$

so the adapted model starts exactly equal to the pretrained one. Only $A$ and $B$ train:

$$dB = s\,(xA)^\top dh, \qquad dA = s\, x^\top (dh\, B^\top), \qquad
  dx = dh\, W_0^\top + s\, (dh\, B^\top) A^\top .$$

Merging folds the update into the weight, $W = W_0 + sAB$ (no extra cost at inference);
unmerging subtracts it again, giving back $W_0$ up to one rounding of the addition.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from .. import backend
from ..gradcheck import check_functional, check_module, float64_inputs, register
from ..nn.checks import check_array
from ..nn.linear import Linear
from ..nn.module import Module, Parameter
from ..nn.lowrank import check_rank
from .surgery import DEFAULT_TARGETS, replace_linears


class LoRACache(NamedTuple):
    x: Any          # (N, C_in) the input, flattened
    h: Any          # (N, r) x @ A, kept (r wide)
    w: Any          # (C_in, C_out) the frozen weight
    a: Any          # (C_in, r)
    b: Any          # (r, C_out)
    scale: float    # alpha / r
    in_shape: tuple
    has_bias: bool


# --8<-- [start:lora]
def lora_linear_forward(x, w, bias, a, b, scale: float):
    """y = x @ w + bias + scale * (x @ a) @ b over the last axis of x (bias may be None)."""
    x2 = x.reshape(-1, w.shape[0])                    # (..., C_in) -> (N, C_in)
    h = x2 @ a                                        # (N, C_in) @ (C_in, r) -> (N, r)
    y = x2 @ w                                        # (N, C_in) @ (C_in, C_out) -> (N, C_out)
    y += scale * (h @ b)                              # (N, r) @ (r, C_out) -> (N, C_out)
    if bias is not None:
        y += bias
    y = y.reshape(*x.shape[:-1], w.shape[1])          # (N, C_out) -> (..., C_out)
    return y, LoRACache(x2, h, w, a, b, scale, x.shape, bias is not None)


def lora_linear_backward(dy, cache: LoRACache, frozen: bool = True):
    """Returns (dx, dw, dbias, da, db); dw and dbias are None when `frozen` (or no bias)."""
    dy2 = dy.reshape(-1, cache.w.shape[1])            # (..., C_out) -> (N, C_out)
    # fwd: y = ... + s * h @ b  =>  db = s h^T dy,  dh = s dy b^T
    db = cache.scale * (cache.h.T @ dy2)              # (r, N) @ (N, C_out) -> (r, C_out)
    dh = cache.scale * (dy2 @ cache.b.T)              # (N, C_out) @ (C_out, r) -> (N, r)
    # fwd: h = x @ a  =>  da = x^T dh
    da = cache.x.T @ dh                               # (C_in, N) @ (N, r) -> (C_in, r)
    # fwd: y = x @ w + ... and h = x @ a  =>  dx = dy w^T + dh a^T  (two paths into x)
    dx = dy2 @ cache.w.T                              # (N, C_out) @ (C_out, C_in) -> (N, C_in)
    dx += dh @ cache.a.T                              # (N, r) @ (r, C_in) -> (N, C_in)
    dx = dx.reshape(cache.in_shape)                   # (N, C_in) -> (..., C_in)
    dw = None if frozen else cache.x.T @ dy2          # (C_in, N) @ (N, C_out) -> (C_in, C_out)
    dbias = dy2.sum(axis=0) if cache.has_bias and not frozen else None
    return dx, dw, dbias, da, db
# --8<-- [end:lora]


class LoRALinear(Module):
    """A Linear with a frozen weight and bias and a trainable rank-r update scaled by alpha / r.

    The weight and bias keep their names (`weight`, `bias`), so a pretrained state dict loads into
    an adapted model unchanged; the adapters are `lora_a` (C_in, r) and `lora_b` (r, C_out).
    """

    def __init__(self, linear: Linear, rank: int, alpha: float | None = None,
                 rng: np.random.Generator | None = None):
        super().__init__()
        if not isinstance(linear, Linear):
            raise TypeError(f"LoRALinear: expected a Linear to wrap, got {type(linear).__name__}")
        m, n = linear.weight.shape
        check_rank(rank, m, n, "LoRALinear")
        rng = rng if rng is not None else backend.host_rng(0)
        self.in_features, self.out_features, self.rank = m, n, rank
        self.alpha = float(alpha if alpha is not None else rank)
        self.scale = self.alpha / rank
        self.weight, self.bias = linear.weight, linear.bias        # shared with the wrapped layer
        self.weight.requires_grad = False
        if self.bias is not None:
            self.bias.requires_grad = False
        xp = backend.get_array_module(self.weight.data)
        dtype = self.weight.dtype
        a = backend.to_device(rng.standard_normal((m, rank)) * m ** -0.5, self.weight.device, dtype)
        self.lora_a = Parameter(a)
        self.lora_b = Parameter(xp.zeros((rank, n), dtype=dtype))
        self.merged = False
        self.cache = None

    def delta(self):
        """The update s * A @ B, (C_in, C_out)."""
        return self.scale * (self.lora_a.data @ self.lora_b.data)  # (C_in, r) @ (r, C_out) -> (C_in, C_out)

    # --8<-- [start:merge]
    def merge(self) -> None:
        """W <- W0 + s A B: inference at the cost of the plain Linear."""
        if self.merged:
            raise RuntimeError("LoRALinear.merge: already merged")
        self.weight.data += self.delta()
        self.merged = True

    def unmerge(self) -> None:
        """W <- W - s A B, giving back W0 (up to one float rounding)."""
        if not self.merged:
            raise RuntimeError("LoRALinear.unmerge: not merged")
        self.weight.data -= self.delta()
        self.merged = False
    # --8<-- [end:merge]

    def forward(self, x):
        check_array(x, "LoRALinear input", last_dim=self.in_features, dtype=self.weight.dtype,
                    device=self.weight.device)
        bias = None if self.bias is None else self.bias.data
        if self.merged:
            x2 = x.reshape(-1, self.in_features)                      # (..., C_in) -> (N, C_in)
            y = x2 @ self.weight.data                                 # (N, C_in) @ (C_in, C_out)
            if bias is not None:
                y += bias
            self.cache = None
            return y.reshape(*x.shape[:-1], self.out_features)      # (N, C_out) -> (..., C_out)
        y, cache = lora_linear_forward(x, self.weight.data, bias, self.lora_a.data, self.lora_b.data,
                                       self.scale)
        self.cache = cache if self.keep_cache else None
        return y

    def backward(self, dy):
        if self.merged:
            raise RuntimeError("LoRALinear is merged: unmerge() before training the adapters")
        if self.cache is None:
            raise RuntimeError("LoRALinear.backward called without a cached forward")
        frozen = not self.weight.requires_grad
        dx, dw, dbias, da, db = lora_linear_backward(dy, self.cache, frozen=frozen)
        self.lora_a.grad += da
        self.lora_b.grad += db
        if not frozen:
            self.weight.grad += dw
            if self.bias is not None:
                self.bias.grad += dbias
        return dx

    def num_trainable(self) -> int:
        return int(self.lora_a.data.size + self.lora_b.data.size)

    def extra_repr(self) -> str:
        return (f"{self.in_features}, {self.out_features}, rank={self.rank}, alpha={self.alpha:g}, "
                f"merged={self.merged}")


# --8<-- [start:apply_lora]
def apply_lora(model: Module, targets=DEFAULT_TARGETS, rank: int = 4, alpha: float | None = None,
               seed: int = 0) -> list[str]:
    """Wrap the Linears named by `targets` in LoRALinear and freeze every other parameter of the
    model too (embeddings, norms): afterwards only the adapters have requires_grad=True."""
    rng = backend.host_rng(seed)
    names = replace_linears(model, targets, lambda name, lin: LoRALinear(lin, rank, alpha, rng=rng))
    for pname, p in model.named_parameters():
        p.requires_grad = pname.endswith(".lora_a") or pname.endswith(".lora_b")
    return names


def lora_layers(model: Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def merge_lora(model: Module) -> None:
    for layer in lora_layers(model):
        layer.merge()


def unmerge_lora(model: Module) -> None:
    for layer in lora_layers(model):
        layer.unmerge()


def parameter_counts(model: Module) -> dict:
    """{'total', 'trainable', 'frozen', 'fraction_trainable'} for the model as it is."""
    params = model.parameters()
    trainable = int(sum(p.data.size for p in params if p.requires_grad))
    total = int(sum(p.data.size for p in params))
    return {"total": total, "trainable": trainable, "frozen": total - trainable,
            "fraction_trainable": trainable / max(total, 1)}
# --8<-- [end:apply_lora]


@register("compress.lora_linear")
def _gradcheck_lora_pair(device: str):
    x, w, bias, a, b = float64_inputs(device, 5, (2, 3, 6), (6, 5), (5,), (6, 2), (2, 5))

    def backward(dy, cache):
        dx, _, _, da, db = lora_linear_backward(dy, cache, frozen=True)
        return dx, None, None, da, db
    return check_functional("compress.lora_linear", lambda *a: lora_linear_forward(*a, 0.75),
                            backward, [x, w, bias, a, b], wrt=[0, 3, 4])


@register("compress.LoRALinear")
def _gradcheck_lora_module(device: str):
    base = Linear(5, 4, rng=backend.host_rng(6)).to(device, "float64")
    layer = LoRALinear(base, rank=2, alpha=3.0, rng=backend.host_rng(7))
    # B = 0 at start would make dA = 0 trivially; give B values so the check means something
    layer.lora_b.data = backend.to_device(np.random.default_rng(8).standard_normal((2, 4)), device)
    (x,) = float64_inputs(device, 9, (2, 1, 5))
    return check_module("compress.LoRALinear", layer, [x])     # weight and bias are frozen: skipped


@register("compress.GPT(LoRA)")
def _gradcheck_gpt_lora(device: str):
    """A GPT with LoRA adapters on every Linear: only the adapters are checked (the rest is frozen)."""
    from ..models.gpt import GPT, GPTConfig
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, d_model=8)
    model = GPT(cfg, seed=7).to(device, "float64")
    apply_lora(model, DEFAULT_TARGETS, rank=2, alpha=4.0, seed=8)
    rng = np.random.default_rng(9)
    for layer in lora_layers(model):
        layer.lora_b.data = backend.to_device(rng.standard_normal(layer.lora_b.shape) * 0.3, device)
    idx = backend.to_device(rng.integers(0, 11, (2, 4)), device)
    targets = backend.to_device(rng.integers(0, 11, (2, 4)), device)
    return check_module("compress.GPT(LoRA r=2)", model, [idx, targets],
                        run=lambda m, i, t: m.forward(i, t)[1],
                        backward=lambda m, d: m.backward(dloss=float(d)), eps=1e-5, max_coords=24)
