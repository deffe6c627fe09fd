r"""Multi-head attention: project, split into heads, attend with any kernel, merge, project.

$$\mathrm{MHA}(X, Y) = \mathrm{concat}_h\big(\mathrm{attn}(X W^Q_h,\; Y W^K_h,\; Y W^V_h)\big)\, W^O,$$

with $Y = X$ for self-attention and $Y$ = the encoder output ("context", "memory") for
cross-attention. The $H$ heads are not separate layers: one fused `Linear(C, 3C)` computes every
head's queries, keys and values at once, and a reshape/transpose turns (B, T, C) into (B, H, T, D)
with $D = C/H$. The attention itself is an `AttentionKernel` picked by name, so every variant of the
package (dense, memory-efficient, sliding window, Performer, ...) drops in here unchanged.

Backward replays the forward in reverse: output projection, merge of heads (a transpose), the
kernel's backward, split of heads, input projection(s). For cross-attention it returns
$(dX, dY)$.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from .. import backend
from ..gradcheck import check_module, float64_inputs, register
from ..nn.checks import check_array
from ..nn.linear import Linear
from ..nn.module import Module
from .kernel import make_kernel
from .kv_cache import KVCache


class MHACache(NamedTuple):
    B: int
    T: int          # query length
    S: int          # key length (T for self-attention without a KV cache)


class MultiHeadAttention(Module):
    """Self- (cross=False) or cross-attention (cross=True) with n_head heads of size d_model/n_head.

    attention / attention_options: the kernel's registered name and its keyword options.
    out_std: std of the output projection's init (GPT scales it by 1/sqrt(2 n_layer)).
    rotary: a module that turns q and k by their positions after the split into heads
    (positional.RotaryEmbedding, RoPE), or None.
    """

    def __init__(self, d_model: int, n_head: int, cross: bool = False, attention: str = "dense",
                 attention_options: dict | None = None, max_len: int | None = None, bias: bool = True,
                 rng: np.random.Generator | None = None, out_std: float | None = None, rotary=None):
        super().__init__()
        if not isinstance(d_model, int) or not isinstance(n_head, int) or d_model <= 0 or n_head <= 0:
            raise ValueError(f"MultiHeadAttention: d_model and n_head must be positive ints, got "
                             f"d_model={d_model!r}, n_head={n_head!r}")
        if d_model % n_head:
            raise ValueError(f"MultiHeadAttention: d_model={d_model} is not divisible by n_head={n_head} "
                             f"(each head gets d_model / n_head features; try n_head in "
                             f"{[h for h in range(1, min(d_model, 16) + 1) if d_model % h == 0]})")
        rng = rng if rng is not None else backend.host_rng(0)
        C = d_model
        self.d_model, self.n_head, self.head_dim, self.cross = C, n_head, C // n_head, cross
        if cross:
            self.q = Linear(C, C, bias=bias, rng=rng)            # queries from x
            self.kv = Linear(C, 2 * C, bias=bias, rng=rng)       # keys and values from the context
        else:
            self.qkv = Linear(C, 3 * C, bias=bias, rng=rng)      # queries, keys, values from x
        self.kernel = make_kernel(attention, n_head, self.head_dim, max_len, rng, **(attention_options or {}))
        if cross and not self.kernel.supports_cross:
            raise ValueError(f"attention kernel {attention!r} cannot do cross-attention (keys of another "
                             "length than the queries); choose another kernel for the decoder")
        self.proj = Linear(C, C, bias=bias, rng=rng, std=out_std)
        if rotary is not None and cross:
            raise ValueError("MultiHeadAttention: rotary positions are for self-attention (cross=False)")
        self.rotary = rotary
        self.cache = None

    # --8<-- [start:mha_forward]
    def forward(self, x, context=None, causal: bool = False, key_padding_mask=None,
                kv_cache: KVCache | None = None):
        """x (B,T,C) -> (B,T,C). context (B,S,C) for cross-attention; key_padding_mask (B,S) True
        on padding keys (as in PyTorch); kv_cache: append this step's keys/values and attend over all cached ones."""
        C, H, D = self.d_model, self.n_head, self.head_dim
        check_array(x, "MultiHeadAttention input", ndim=3, last_dim=C, dtype=self.proj.weight.dtype,
                    device=self.proj.weight.device)
        B, T, _ = x.shape
        if self.cross:
            q = self.q(x).reshape(B, T, H, D).transpose(0, 2, 1, 3)            # (B,T,C) -> (B,H,T,D)
            if kv_cache is not None and kv_cache.length > 0:
                k, v = kv_cache.keys, kv_cache.values      # the context's keys/values never change
            else:
                self._check_context(context, B)
                S = context.shape[1]
                kv = self.kv(context).reshape(B, S, 2, H, D)                   # (B,S,2C) -> (B,S,2,H,D)
                kv = kv.transpose(2, 0, 3, 1, 4)                               # -> (2,B,H,S,D)
                k, v = kv[0], kv[1]
                if kv_cache is not None:
                    k, v = kv_cache.append(k, v)
        else:
            if context is not None:
                raise ValueError("MultiHeadAttention: self-attention takes no context; build it with "
                                 "cross=True for attention over an encoder output")
            qkv = self.qkv(x).reshape(B, T, 3, H, D)                           # (B,T,3C) -> (B,T,3,H,D)
            qkv = qkv.transpose(2, 0, 3, 1, 4)                                 # -> (3,B,H,T,D)
            q, k, v = qkv[0], qkv[1], qkv[2]
            if self.rotary is not None:                    # RoPE: positions continue after the cached ones
                q, k = self.rotary(q, k, offset=kv_cache.length if kv_cache is not None else 0)
            if kv_cache is not None:
                k, v = kv_cache.append(k, v)               # (B,H,S,D), S = cached + T
        y = self.kernel.forward(q, k, v, causal=causal, key_padding_mask=key_padding_mask)  # (B,H,T,D)
        y = y.transpose(0, 2, 1, 3).reshape(B, T, C)                          # (B,H,T,D) -> (B,T,C)
        out = self.proj(y)
        # with a KV cache the keys reach back into earlier steps: no backward through them
        self.cache = MHACache(B, T, k.shape[2]) if self.keep_cache and kv_cache is None else None
        return out
    # --8<-- [end:mha_forward]

    # --8<-- [start:mha_backward]
    def backward(self, dout):
        """dout (B,T,C) -> dx (B,T,C), or (dx, dcontext) with dcontext (B,S,C) for cross-attention."""
        if self.cache is None:
            raise RuntimeError("MultiHeadAttention.backward: no forward pass was cached (forward ran "
                               "inside no_grad() or with a kv_cache, or backward was called twice)")
        B, T, S = self.cache
        C, H, D = self.d_model, self.n_head, self.head_dim
        xp = backend.get_array_module(dout)
        # fwd: out = y @ W_O  =>  dy = dout @ W_O^T
        dy = self.proj.backward(dout)                                          # (B,T,C)
        dy = dy.reshape(B, T, H, D).transpose(0, 2, 1, 3)                      # (B,T,C) -> (B,H,T,D)
        dq, dk, dv = self.kernel.backward(dy)                                  # (B,H,T,D), (B,H,S,D) x2
        self.cache = None
        if self.rotary is not None:
            dq, dk = self.rotary.backward(dq, dk)          # fwd: q, k turned by R  =>  turned back by R^T
        if self.cross:
            # fwd: q = x W_Q  =>  dx = dq W_Q^T (inside Linear.backward)
            dx = self.q.backward(dq.transpose(0, 2, 1, 3).reshape(B, T, C))    # (B,H,T,D) -> (B,T,C)
            # fwd: (k, v) = split(context W_KV)  =>  d(context W_KV) = merge(dk, dv)
            dkv = xp.empty((B, S, 2, H, D), dtype=dout.dtype)
            heads = dkv.transpose(2, 0, 3, 1, 4)                               # (B,S,2,H,D) -> (2,B,H,S,D) view
            heads[0], heads[1] = dk, dv
            dcontext = self.kv.backward(dkv.reshape(B, S, 2 * C))             # (B,S,2C) -> (B,S,C)
            return dx, dcontext
        # fwd: (q, k, v) = split(x W_QKV)  =>  d(x W_QKV) = merge(dq, dk, dv)
        dqkv = xp.empty((B, T, 3, H, D), dtype=dout.dtype)
        heads = dqkv.transpose(2, 0, 3, 1, 4)                                  # (B,T,3,H,D) -> (3,B,H,T,D) view
        heads[0], heads[1], heads[2] = dq, dk, dv
        return self.qkv.backward(dqkv.reshape(B, T, 3 * C))                    # (B,T,3C) -> (B,T,C)
    # --8<-- [end:mha_backward]

    def _check_context(self, context, B: int) -> None:
        if context is None:
            raise ValueError("MultiHeadAttention(cross=True) needs context: the encoder output of shape "
                             f"(B, S, {self.d_model})")
        check_array(context, "MultiHeadAttention context", ndim=3, last_dim=self.d_model,
                    dtype=self.proj.weight.dtype, device=self.proj.weight.device)
        if context.shape[0] != B:
            raise ValueError(f"MultiHeadAttention: context batch size {context.shape[0]} differs from the "
                             f"input's {B}")

    @property
    def last_weights(self):
        """The kernel's last attention probabilities (B,H,T,S), if it keeps them (dense does)."""
        return getattr(self.kernel, "last_weights", None)

    def extra_repr(self) -> str:
        kind = "cross" if self.cross else "self"
        return f"d_model={self.d_model}, n_head={self.n_head}, {kind}, kernel={self.kernel.kernel_name!r}"


# -- gradient checks (float64) ------------------------------------------------------------------
@register("attention.MultiHeadAttention")
def _gradcheck_mha(device: str):
    cpu = backend.xp_for("cpu")
    pad = backend.to_device(~cpu.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool), device)   # True on padding
    results = []
    for label, n_head, causal, kpm in (("self", 2, False, None), ("self causal+pad", 2, True, pad),
                                       ("self one head", 1, True, None)):
        mha = MultiHeadAttention(6, n_head, rng=backend.host_rng(7)).to(device, "float64")
        (x,) = float64_inputs(device, 8, (2, 4, 6))
        run = (lambda m, a, c=causal, p=kpm: m.forward(a, causal=c, key_padding_mask=p))
        results.append(check_module(f"attention.MultiHeadAttention[{label}]", mha, [x], run=run))
    mha = MultiHeadAttention(6, 3, rng=backend.host_rng(9)).to(device, "float64")
    (x1,) = float64_inputs(device, 10, (2, 1, 6))                                 # T = 1
    results.append(check_module("attention.MultiHeadAttention[T=1]", mha, [x1],
                                run=lambda m, a: m.forward(a, causal=True)))
    return results


@register("attention.MultiHeadAttention.cross")
def _gradcheck_mha_cross(device: str):
    cpu = backend.xp_for("cpu")
    mem_pad = backend.to_device(~cpu.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], bool), device)
    results = []
    for label, kpm in (("cross", None), ("cross+pad", mem_pad)):
        mha = MultiHeadAttention(6, 2, cross=True, rng=backend.host_rng(11)).to(device, "float64")
        x, ctx = float64_inputs(device, 12, (2, 3, 6), (2, 5, 6))                 # T=3 != S=5
        run = (lambda m, a, c, p=kpm: m.forward(a, c, key_padding_mask=p))
        results.append(check_module(f"attention.MultiHeadAttention[{label}]", mha, [x, ctx], run=run))
    return results
