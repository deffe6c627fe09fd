r"""T5's blocks and stacks: pre-RMSNorm residual blocks, one relative position table per stack.

A T5 block is a pre-norm block (``blocks.py`` explains pre- vs post-LN) with RMSNorm instead of
LayerNorm and no biases anywhere:

$$x_1 = x + \mathrm{attn}(\mathrm{RMS}(x);\ P),\qquad [x_2 = x_1 + \mathrm{cross}(\mathrm{RMS}(x_1), m)],
\qquad y = x_2 + \mathrm{ffn}(\mathrm{RMS}(x_2)).$$

The position bias $P$ is computed once per stack, by the table that lives in the stack's first block,
and handed to every block's self-attention (none in cross-attention). Its gradient is therefore the
sum over the blocks, $dP = \sum_l dP_l$, scattered into the table once (``relative_bias.py``).

The feed-forward network is T5 v1.0's $\mathrm{ReLU}(xW_i)W_o$ or v1.1's gated GELU,
$(\mathrm{GELU}(xW_0) \odot xW_1)\,W_o$, whose backward has one term per branch:
$dx = \mathrm{GELU}'(xW_0)\,(dh \odot xW_1)\,W_0^\top + (dh \odot \mathrm{GELU}(xW_0))\,W_1^\top$.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from .. import backend
from ..attention.relative_bias import MAX_DISTANCE, NUM_BUCKETS, RelativePositionBias
from ..attention.t5_attention import T5Attention
from ..blocks import FeedForward
from ..gradcheck import check_module, float64_inputs, register
from ..nn.activations import GELU
from ..nn.dropout import Dropout
from ..nn.linear import Linear
from ..nn.module import Module
from ..nn.rmsnorm import RMSNorm

FEED_FORWARDS = ("relu", "gated-gelu")


def _seed(rng) -> int:
    return int(rng.integers(2**31 - 1))


class GatedGELUCache(NamedTuple):
    act: object     # (B,T,F) GELU(x W_0)
    lin: object     # (B,T,F) x W_1


class GatedGELUFeedForward(Module):
    r"""T5 v1.1's feed-forward: $\mathrm{drop}((\mathrm{GELU}(xW_0) \odot xW_1) W_o)$, no biases."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, rng: np.random.Generator | None = None):
        super().__init__()
        rng = rng if rng is not None else backend.host_rng(0)
        self.wi_0 = Linear(d_model, d_ff, bias=False, rng=rng)           # the gate's branch
        self.wi_1 = Linear(d_model, d_ff, bias=False, rng=rng)           # the linear branch
        self.act = GELU(approximate="tanh")                              # T5 v1.1's "gelu_new"
        self.wo = Linear(d_ff, d_model, bias=False, rng=rng, std=d_ff ** -0.5)
        self.drop = Dropout(dropout, seed=_seed(rng))
        self.cache = None

    # --8<-- [start:gated_gelu]
    def forward(self, x):
        act = self.act(self.wi_0(x))                                     # (B,T,C) -> (B,T,F)
        lin = self.wi_1(x)                                               # (B,T,C) -> (B,T,F)
        self.cache = GatedGELUCache(act, lin) if self.keep_cache else None
        return self.drop(self.wo(act * lin))                             # (B,T,F) -> (B,T,C)

    def backward(self, dy):
        act, lin = self.cache
        dh = self.wo.backward(self.drop.backward(dy))                    # (B,T,C) -> (B,T,F)
        # fwd: h = act * lin  =>  dact = dh * lin (term 1),  dlin = dh * act (term 2)
        dx = self.wi_0.backward(self.act.backward(dh * lin))             # (B,T,F) -> (B,T,C)
        dx += self.wi_1.backward(dh * act)
        self.cache = None
        return dx
    # --8<-- [end:gated_gelu]


def make_feed_forward(kind: str, d_model: int, d_ff: int, dropout: float, rng) -> Module:
    """T5 v1.0's ReLU network (the package's FeedForward without biases) or v1.1's gated GELU."""
    if kind == "relu":
        return FeedForward(d_model, d_ff, "relu", dropout, rng=rng, out_std=d_ff ** -0.5, bias=False)
    if kind == "gated-gelu":
        return GatedGELUFeedForward(d_model, d_ff, dropout, rng=rng)
    raise ValueError(f"unknown T5 feed-forward {kind!r}; expected one of {FEED_FORWARDS}")


class T5Block(Module):
    """Self-attention (+ cross-attention when decoder=True) + feed-forward, pre-RMSNorm residuals.

    ``relative_bias``: the stack's position table, present on the first block only (None elsewhere).
    backward(dy) -> (dx, dposition_bias) for an encoder block, (dx, dmemory, dposition_bias) for a
    decoder block.
    """

    def __init__(self, d_model: int, n_head: int, d_ff: int, decoder: bool, feed_forward: str = "relu",
                 dropout: float = 0.0, relative_bias: RelativePositionBias | None = None,
                 rng: np.random.Generator | None = None):
        super().__init__()
        rng = rng if rng is not None else backend.host_rng(0)
        self.decoder = decoder
        self.relative_bias = relative_bias
        self.ln1 = RMSNorm(d_model)
        self.attn = T5Attention(d_model, n_head, rng=rng)
        self.drop = Dropout(dropout, seed=_seed(rng))
        if decoder:
            self.ln_cross = RMSNorm(d_model)
            self.cross_attn = T5Attention(d_model, n_head, cross=True, rng=rng)
            self.drop_cross = Dropout(dropout, seed=_seed(rng))
        self.ln2 = RMSNorm(d_model)
        self.ffn = make_feed_forward(feed_forward, d_model, d_ff, dropout, rng)

    # --8<-- [start:t5_block]
    def forward(self, x, position_bias=None, memory=None, key_padding_mask=None, memory_padding_mask=None,
                kv_cache=None, cross_kv_cache=None):
        """x (B,T,C), position_bias (1,H,T,S) or None, memory (B,S',C) for a decoder -> (B,T,C)."""
        h = self.drop(self.attn(self.ln1(x), position_bias=position_bias, causal=self.decoder,
                                key_padding_mask=key_padding_mask, kv_cache=kv_cache))
        h += x                                                           # x1 = x + attn(RMS(x); P)
        if self.decoder:
            h2 = self.drop_cross(self.cross_attn(self.ln_cross(h), memory, key_padding_mask=memory_padding_mask,
                                                 kv_cache=cross_kv_cache))
            h2 += h                                                      # x2 = x1 + cross(RMS(x1), m)
            h = h2
        y = self.ffn(self.ln2(h))
        y += h                                                           # y = x2 + ffn(RMS(x2))
        return y

    def backward(self, dy):
        # fwd: y = x2 + ffn(RMS(x2))  =>  dx2 = dy + RMS'(ffn'(dy))
        dx = self.ln2.backward(self.ffn.backward(dy))
        dx += dy
        dmemory = None
        if self.decoder:
            # fwd: x2 = x1 + cross(RMS(x1), m)  =>  dx1 = dx2 + RMS'(cross'_x(dx2)),  dm = cross'_m(dx2)
            dh, dmemory = self.cross_attn.backward(self.drop_cross.backward(dx))
            dh = self.ln_cross.backward(dh)
            dh += dx
            dx = dh
        # fwd: x1 = x + attn(RMS(x); P)  =>  dx = dx1 + RMS'(attn'_x(dx1)),  dP = attn'_P(dx1)
        da, dbias = self.attn.backward(self.drop.backward(dx))
        dres = self.ln1.backward(da)
        dres += dx
        return (dres, dmemory, dbias) if self.decoder else (dres, dbias)
    # --8<-- [end:t5_block]


class T5Stack(Module):
    """n_layer T5Blocks and a final RMSNorm; the encoder (decoder=False) or the decoder stack.

    relative=True: the first block owns a RelativePositionBias (bidirectional in the encoder, causal
    in the decoder) whose bias every block adds; relative=False: no bias (positions enter elsewhere).
    """

    def __init__(self, n_layer: int, d_model: int, n_head: int, d_ff: int, decoder: bool,
                 feed_forward: str = "relu", dropout: float = 0.0, relative: bool = True,
                 num_buckets: int = NUM_BUCKETS, max_distance: int = MAX_DISTANCE,
                 rng: np.random.Generator | None = None):
        super().__init__()
        if not isinstance(n_layer, int) or n_layer < 1:
            raise ValueError(f"T5Stack: n_layer must be a positive int, got {n_layer!r}")
        rng = rng if rng is not None else backend.host_rng(0)
        self.decoder = decoder
        table = RelativePositionBias(n_head, bidirectional=not decoder, num_buckets=num_buckets,
                                     max_distance=max_distance, rng=rng, std=d_model ** -0.5) if relative else None
        self.blocks = [T5Block(d_model, n_head, d_ff, decoder, feed_forward, dropout,
                               table if i == 0 else None, rng) for i in range(n_layer)]
        self.ln_f = RMSNorm(d_model)
        self.drop = Dropout(dropout, seed=_seed(rng))

    @property
    def relative_bias(self) -> RelativePositionBias | None:
        """The stack's table: it lives in the first block and serves them all."""
        return self.blocks[0].relative_bias

    # --8<-- [start:t5_stack]
    def forward(self, x, memory=None, key_padding_mask=None, memory_padding_mask=None, kv_caches=None,
                cross_kv_caches=None, offset: int = 0):
        """x (B,T,C) at positions offset..offset+T-1 -> (B,T,C); the keys are the positions 0..offset+T-1."""
        T = x.shape[1]
        bias = None if self.relative_bias is None else self.relative_bias(T, offset + T, offset)  # (1,H,T,S)
        for i, block in enumerate(self.blocks):
            x = block(x, bias, memory, key_padding_mask, memory_padding_mask,
                      None if kv_caches is None else kv_caches[i],
                      None if cross_kv_caches is None else cross_kv_caches[i])
        return self.drop(self.ln_f(x))

    def backward(self, dy):
        """dx for the encoder, (dx, dmemory) for the decoder."""
        dy = self.ln_f.backward(self.drop.backward(dy))
        dbias = dmemory = None
        for block in reversed(self.blocks):
            if self.decoder:
                dy, dm, db = block.backward(dy)
                # fwd: every block reads the same memory  =>  its gradients add up
                dmemory = dm if dmemory is None else dmemory + dm
            else:
                dy, db = block.backward(dy)
            # fwd: every block adds the same bias P  =>  dP = sum over the blocks of dP_l
            if db is not None:
                dbias = db if dbias is None else dbias + db
        if self.relative_bias is not None:
            self.relative_bias.backward(dbias)                           # one scatter into the table
        return (dy, dmemory) if self.decoder else dy
    # --8<-- [end:t5_stack]


# -- gradient checks (float64, dropout off) -------------------------------------------------------
@register("t5.GatedGELUFeedForward")
def _gradcheck_gated_gelu(device: str):
    (x,) = float64_inputs(device, 60, (2, 3, 4))
    ffn = GatedGELUFeedForward(4, 6, rng=backend.host_rng(60)).to(device, "float64")
    return check_module("t5.GatedGELUFeedForward", ffn, [x])


@register("t5.T5Stack")
def _gradcheck_t5_stack(device: str):
    results = []
    pad = backend.to_device(~np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool), device)
    for ffn in FEED_FORWARDS:
        enc = T5Stack(2, 4, 2, 6, decoder=False, feed_forward=ffn, num_buckets=8, max_distance=8,
                      rng=backend.host_rng(61)).to(device, "float64")
        (x,) = float64_inputs(device, 61, (2, 4, 4))
        results.append(check_module(f"t5.T5Stack[encoder, {ffn}, shared relative bias]", enc, [x],
                                    run=lambda m, a: m.forward(a, key_padding_mask=pad), max_coords=30))
    dec = T5Stack(2, 4, 2, 6, decoder=True, num_buckets=8, max_distance=8,
                  rng=backend.host_rng(62)).to(device, "float64")
    x, mem = float64_inputs(device, 62, (2, 3, 4), (2, 4, 4))
    results.append(check_module("t5.T5Stack[decoder, shared relative bias]", dec, [x, mem],
                                run=lambda m, a, s: m.forward(a, s, memory_padding_mask=pad), max_coords=30))
    return results
