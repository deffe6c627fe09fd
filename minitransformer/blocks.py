r"""Transformer blocks: the feed-forward network, encoder and decoder blocks, and their stacks.

A block wraps each sub-layer $f$ (attention, feed-forward) in a residual connection and a LayerNorm,
in one of two orders:

* **post-LN**, the original Transformer (Vaswani et al., 2017): $x \leftarrow \mathrm{LN}(x + f(x))$;
* **pre-LN**, GPT-2 and most later models: $x \leftarrow x + f(\mathrm{LN}(x))$, with one more
  LayerNorm after the last block. The residual path is then an identity from input to output, so
  gradients reach early layers undiminished and training is stable without a learning-rate warmup.

The gradient of a residual $y = x + g(x)$ is $dx = dy + g'(x)^\top dy$: backward adds the sub-layer's
input gradient to the gradient that flows straight through. Every backward below replays its
forward in reverse, one line per step.

An `EncoderBlock` called with ``causal=True`` is exactly a GPT block; a `DecoderBlock` adds
cross-attention over the encoder output ("memory") between self-attention and the feed-forward
network, and its backward returns ``(dx, dmemory)``.
"""
from __future__ import annotations

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from . import backend
from .attention.multi_head import MultiHeadAttention
from .gradcheck import check_module, float64_inputs, register
from .nn.activations import GELU, ReLU
from .nn.dropout import Dropout
from .nn.layernorm import LayerNorm
from .nn.linear import Linear
from .nn.module import Module
from .positional import RotaryEmbedding

ACTIVATIONS = ("gelu", "gelu_tanh", "relu")
NORMS = ("pre", "post")


def _make_activation(name: str) -> Module:
    if name == "gelu":
        return GELU()
    if name == "gelu_tanh":
        return GELU(approximate="tanh")
    if name == "relu":
        return ReLU()
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


def _check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"unknown norm placement {norm!r}; expected 'pre' (GPT-2) or 'post' (original paper)")
    return norm


def _seed(rng) -> int:
    """A dropout seed drawn from the host generator, so one model seed fixes every mask."""
    return int(rng.integers(2**31 - 1))


class FeedForward(Module):
    r"""Position-wise feed-forward network: $\mathrm{drop}(\mathrm{act}(x W_1 + b_1) W_2 + b_2)$,
    (B,T,C) -> (B,T,F) -> (B,T,C)."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu", dropout: float = 0.0,
                 rng: np.random.Generator | None = None, out_std: float | None = None, bias: bool = True):
        super().__init__()
        rng = rng if rng is not None else backend.host_rng(0)
        self.fc1 = Linear(d_model, d_ff, bias=bias, rng=rng)
        self.act = _make_activation(activation)
        self.fc2 = Linear(d_ff, d_model, bias=bias, rng=rng, std=out_std)
        self.drop = Dropout(dropout, seed=_seed(rng))

    # --8<-- [start:ffn]
    def forward(self, x):
        h = self.act(self.fc1(x))                   # (B,T,C) -> (B,T,F)
        return self.drop(self.fc2(h))               # (B,T,F) -> (B,T,C)

    def backward(self, dy):
        # fwd: y = drop(fc2(act(fc1(x))))  =>  replay in reverse
        dh = self.fc2.backward(self.drop.backward(dy))   # (B,T,C) -> (B,T,F)
        return self.fc1.backward(self.act.backward(dh))  # (B,T,F) -> (B,T,C)
    # --8<-- [end:ffn]


class EncoderBlock(Module):
    """Self-attention + feed-forward, each with a residual connection; norm="pre" or "post".

    forward(x, causal=False, key_padding_mask=None, kv_cache=None); causal=True makes it a GPT block.
    rotary=True: RoPE in the self-attention (queries and keys turned by their positions).
    """

    def __init__(self, d_model: int, n_head: int, d_ff: int | None = None, norm: str = "pre",
                 dropout: float = 0.0, activation: str = "gelu", attention: str = "dense",
                 attention_options: dict | None = None, max_len: int | None = None,
                 rng: np.random.Generator | None = None, out_std: float | None = None, bias: bool = True,
                 rotary: bool = False):
        super().__init__()
        rng = rng if rng is not None else backend.host_rng(0)
        self.norm = _check_norm(norm)
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.ln1 = LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_head, attention=attention, attention_options=attention_options,
                                       max_len=max_len, bias=bias, rng=rng, out_std=out_std,
                                       rotary=RotaryEmbedding() if rotary else None)
        self.drop = Dropout(dropout, seed=_seed(rng))
        self.ln2 = LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff, activation, dropout, rng=rng, out_std=out_std, bias=bias)

    # --8<-- [start:encoder_block]
    def forward(self, x, causal: bool = False, key_padding_mask=None, kv_cache=None):
        """x (B,T,C) -> (B,T,C)."""
        mask = dict(causal=causal, key_padding_mask=key_padding_mask, kv_cache=kv_cache)
        # each residual sum is written into the sub-layer's fresh output (one array less)
        if self.norm == "pre":
            h = self.drop(self.attn(self.ln1(x), **mask))
            h += x                                                     # x1 = x + attn(LN(x))
            y = self.ffn(self.ln2(h))
            y += h                                                     # y = x1 + ffn(LN(x1))
            return y
        h = self.drop(self.attn(x, **mask))
        h += x
        h = self.ln1(h)                                                # x1 = LN(x + attn(x))
        y = self.ffn(h)
        y += h
        return self.ln2(y)                                             # y = LN(x1 + ffn(x1))

    def backward(self, dy):
        if self.norm == "pre":
            # fwd: y = x1 + ffn(ln2(x1))  =>  dx1 = dy + ln2'(ffn'(dy))
            dx = self.ln2.backward(self.ffn.backward(dy))
            dx += dy
            # fwd: x1 = x + drop(attn(ln1(x)))  =>  dx = dx1 + ln1'(attn'(drop'(dx1)))
            dres = self.ln1.backward(self.attn.backward(self.drop.backward(dx)))
            dres += dx
            return dres
        # fwd: y = ln2(x1 + ffn(x1))  =>  dz = ln2'(dy),  dx1 = dz + ffn'(dz)
        dz = self.ln2.backward(dy)
        dx = self.ffn.backward(dz)
        dx += dz
        # fwd: x1 = ln1(x + drop(attn(x)))  =>  dw = ln1'(dx1),  dx = dw + attn'(drop'(dw))
        dw = self.ln1.backward(dx)
        dres = self.attn.backward(self.drop.backward(dw))
        dres += dw
        return dres
    # --8<-- [end:encoder_block]


class AttentionOnlyBlock(Module):
    """Self-attention with its residual connection and LayerNorm, and no feed-forward network: the
    block of an attention-only Transformer (Elhage et al. 2021; Olsson et al. 2022), where every
    computation is a composition of attention heads. norm="pre": y = x + attn(LN(x)); "post":
    y = LN(x + attn(x)). LayerNorm is kept: it rescales each position on its own, so it mixes no
    information between positions and the heads stay the only thing that moves it.
    """

    def __init__(self, d_model: int, n_head: int, norm: str = "pre", dropout: float = 0.0,
                 attention: str = "dense", attention_options: dict | None = None, max_len: int | None = None,
                 rng: np.random.Generator | None = None, out_std: float | None = None, bias: bool = True,
                 rotary: bool = False):
        super().__init__()
        rng = rng if rng is not None else backend.host_rng(0)
        self.norm = _check_norm(norm)
        self.ln1 = LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_head, attention=attention, attention_options=attention_options,
                                       max_len=max_len, bias=bias, rng=rng, out_std=out_std,
                                       rotary=RotaryEmbedding() if rotary else None)
        self.drop = Dropout(dropout, seed=_seed(rng))

    # --8<-- [start:attention_only_block]
    def forward(self, x, causal: bool = False, key_padding_mask=None, kv_cache=None):
        """x (B,T,C) -> (B,T,C)."""
        mask = dict(causal=causal, key_padding_mask=key_padding_mask, kv_cache=kv_cache)
        if self.norm == "pre":
            y = self.drop(self.attn(self.ln1(x), **mask))
            y += x                                                     # y = x + attn(LN(x))
            return y
        h = self.drop(self.attn(x, **mask))
        h += x
        return self.ln1(h)                                             # y = LN(x + attn(x))

    def backward(self, dy):
        if self.norm == "pre":
            # fwd: y = x + drop(attn(ln1(x)))  =>  dx = dy + ln1'(attn'(drop'(dy)))
            dx = self.ln1.backward(self.attn.backward(self.drop.backward(dy)))
            dx += dy
            return dx
        # fwd: y = ln1(x + drop(attn(x)))  =>  dh = ln1'(dy),  dx = dh + attn'(drop'(dh))
        dh = self.ln1.backward(dy)
        dx = self.attn.backward(self.drop.backward(dh))
        dx += dh
        return dx
    # --8<-- [end:attention_only_block]


class DecoderBlock(Module):
    """Masked self-attention, cross-attention over the encoder output `memory`, feed-forward.

    forward(x, memory, causal=True, key_padding_mask=None, memory_padding_mask=None, kv_cache=None,
    cross_kv_cache=None) -> (B,T,C); backward(dy) -> (dx, dmemory).
    """

    def __init__(self, d_model: int, n_head: int, d_ff: int | None = None, norm: str = "pre",
                 dropout: float = 0.0, activation: str = "gelu", attention: str = "dense",
                 attention_options: dict | None = None, max_len: int | None = None,
                 rng: np.random.Generator | None = None, out_std: float | None = None, bias: bool = True):
        super().__init__()
        rng = rng if rng is not None else backend.host_rng(0)
        self.norm = _check_norm(norm)
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.ln1 = LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_head, attention=attention, attention_options=attention_options,
                                       max_len=max_len, bias=bias, rng=rng, out_std=out_std)
        self.drop = Dropout(dropout, seed=_seed(rng))              # after self-attention
        self.ln2 = LayerNorm(d_model)
        # cross-attention keys come from the encoder (another length): the dense kernel serves it
        self.cross_attn = MultiHeadAttention(d_model, n_head, cross=True, bias=bias, rng=rng, out_std=out_std)
        self.drop_cross = Dropout(dropout, seed=_seed(rng))        # after cross-attention (own mask)
        self.ln3 = LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff, activation, dropout, rng=rng, out_std=out_std, bias=bias)

    # --8<-- [start:decoder_block]
    def forward(self, x, memory, causal: bool = True, key_padding_mask=None, memory_padding_mask=None,
                kv_cache=None, cross_kv_cache=None):
        """x (B,T,C), memory (B,S,C) -> (B,T,C)."""
        self_mask = dict(causal=causal, key_padding_mask=key_padding_mask, kv_cache=kv_cache)
        cross_mask = dict(key_padding_mask=memory_padding_mask, kv_cache=cross_kv_cache)
        if self.norm == "pre":
            h = self.drop(self.attn(self.ln1(x), **self_mask))
            h += x                                                     # x1 = x + attn(LN(x))
            h2 = self.drop_cross(self.cross_attn(self.ln2(h), memory, **cross_mask))
            h2 += h                                                    # x2 = x1 + cross(LN(x1), m)
            y = self.ffn(self.ln3(h2))
            y += h2                                                    # y = x2 + ffn(LN(x2))
            return y
        h = self.drop(self.attn(x, **self_mask))
        h += x
        h = self.ln1(h)                                                # x1 = LN(x + attn(x))
        h2 = self.drop_cross(self.cross_attn(h, memory, **cross_mask))
        h2 += h
        h2 = self.ln2(h2)                                              # x2 = LN(x1 + cross(x1, m))
        y = self.ffn(h2)
        y += h2
        return self.ln3(y)                                             # y = LN(x2 + ffn(x2))

    def backward(self, dy):
        """Returns (dx, dmemory)."""
        if self.norm == "pre":
            # fwd: y = x2 + ffn(ln3(x2))  =>  dx2 = dy + ln3'(ffn'(dy))
            dx2 = self.ln3.backward(self.ffn.backward(dy))
            dx2 += dy
            # fwd: x2 = x1 + cross(ln2(x1), m)  =>  dx1 = dx2 + ln2'(dq),  dm = cross'_m(dx2)
            dh, dmemory = self.cross_attn.backward(self.drop_cross.backward(dx2))
            dx1 = self.ln2.backward(dh)
            dx1 += dx2
            # fwd: x1 = x + attn(ln1(x))  =>  dx = dx1 + ln1'(attn'(dx1))
            dx = self.ln1.backward(self.attn.backward(self.drop.backward(dx1)))
            dx += dx1
            return dx, dmemory
        # fwd: y = ln3(x2 + ffn(x2))  =>  dz = ln3'(dy),  dx2 = dz + ffn'(dz)
        dz = self.ln3.backward(dy)
        dx2 = self.ffn.backward(dz)
        dx2 += dz
        # fwd: x2 = ln2(x1 + cross(x1, m))  =>  dw = ln2'(dx2),  dx1 = dw + cross'_x(dw)
        dw = self.ln2.backward(dx2)
        dx1, dmemory = self.cross_attn.backward(self.drop_cross.backward(dw))
        dx1 += dw
        # fwd: x1 = ln1(x + attn(x))  =>  du = ln1'(dx1),  dx = du + attn'(du)
        du = self.ln1.backward(dx1)
        dx = self.attn.backward(self.drop.backward(du))
        dx += du
        return dx, dmemory
    # --8<-- [end:decoder_block]


def _block_options(n_layer, norm, rng):
    if not isinstance(n_layer, int) or n_layer < 1:
        raise ValueError(f"n_layer must be a positive int, got {n_layer!r}")
    return _check_norm(norm), (rng if rng is not None else backend.host_rng(0))


class Encoder(Module):
    """n_layer EncoderBlocks (`self.blocks`), plus a final LayerNorm `ln_f` when norm="pre".

    forward(x, causal=False, key_padding_mask=None, kv_caches=None), kv_caches one per block.
    """

    def __init__(self, n_layer: int, d_model: int, n_head: int, d_ff: int | None = None, norm: str = "pre",
                 dropout: float = 0.0, activation: str = "gelu", attention: str = "dense",
                 attention_options: dict | None = None, max_len: int | None = None,
                 rng: np.random.Generator | None = None, out_std: float | None = None, bias: bool = True):
        super().__init__()
        norm, rng = _block_options(n_layer, norm, rng)
        self.blocks = [EncoderBlock(d_model, n_head, d_ff, norm, dropout, activation, attention,
                                    attention_options, max_len, rng, out_std, bias) for _ in range(n_layer)]
        self.ln_f = LayerNorm(d_model) if norm == "pre" else None

    def forward(self, x, causal: bool = False, key_padding_mask=None, kv_caches=None):
        """x (B,T,C) -> (B,T,C)."""
        _check_caches(kv_caches, len(self.blocks))
        for i, block in enumerate(self.blocks):
            x = block(x, causal=causal, key_padding_mask=key_padding_mask,
                      kv_cache=None if kv_caches is None else kv_caches[i])
        return x if self.ln_f is None else self.ln_f(x)

    def backward(self, dy):
        if self.ln_f is not None:
            dy = self.ln_f.backward(dy)
        for block in reversed(self.blocks):
            dy = block.backward(dy)
        return dy


class Decoder(Module):
    """n_layer DecoderBlocks (`self.blocks`), plus a final LayerNorm `ln_f` when norm="pre".

    forward(x, memory, causal=True, key_padding_mask=None, memory_padding_mask=None, kv_caches=None,
    cross_kv_caches=None); backward(dy) -> (dx, dmemory), dmemory summed over the blocks.
    """

    def __init__(self, n_layer: int, d_model: int, n_head: int, d_ff: int | None = None, norm: str = "pre",
                 dropout: float = 0.0, activation: str = "gelu", attention: str = "dense",
                 attention_options: dict | None = None, max_len: int | None = None,
                 rng: np.random.Generator | None = None, out_std: float | None = None, bias: bool = True):
        super().__init__()
        norm, rng = _block_options(n_layer, norm, rng)
        self.blocks = [DecoderBlock(d_model, n_head, d_ff, norm, dropout, activation, attention,
                                    attention_options, max_len, rng, out_std, bias) for _ in range(n_layer)]
        self.ln_f = LayerNorm(d_model) if norm == "pre" else None

    # --8<-- [start:decoder_stack]
    def forward(self, x, memory, causal: bool = True, key_padding_mask=None, memory_padding_mask=None,
                kv_caches=None, cross_kv_caches=None):
        """x (B,T,C), memory (B,S,C) -> (B,T,C)."""
        _check_caches(kv_caches, len(self.blocks))
        _check_caches(cross_kv_caches, len(self.blocks))
        for i, block in enumerate(self.blocks):
            x = block(x, memory, causal=causal, key_padding_mask=key_padding_mask,
                      memory_padding_mask=memory_padding_mask,
                      kv_cache=None if kv_caches is None else kv_caches[i],
                      cross_kv_cache=None if cross_kv_caches is None else cross_kv_caches[i])
        return x if self.ln_f is None else self.ln_f(x)

    def backward(self, dy):
        """Returns (dx, dmemory)."""
        if self.ln_f is not None:
            dy = self.ln_f.backward(dy)
        dmemory = None
        for block in reversed(self.blocks):
            dy, dm = block.backward(dy)
            # fwd: every block reads the same memory  =>  its gradients add up
            dmemory = dm if dmemory is None else dmemory + dm
        return dy, dmemory
    # --8<-- [end:decoder_stack]


def _check_caches(caches, n_layer: int) -> None:
    if caches is not None and len(caches) != n_layer:
        raise ValueError(f"expected one KV cache per block ({n_layer}), got {len(caches)}")


# -- gradient checks (float64, dropout off) -------------------------------------------------------
def _pad(device, rows):
    """The key padding mask (True on padding) of rows written 1 on real tokens, 0 on padding."""
    return backend.to_device(~np.array(rows, bool), device)


@register("blocks.FeedForward")
def _gradcheck_ffn(device: str):
    (x,) = float64_inputs(device, 20, (2, 3, 4))
    return [check_module(f"blocks.FeedForward[{act}]",
                         FeedForward(4, 7, act, rng=backend.host_rng(20)).to(device, "float64"), [x])
            for act in ACTIVATIONS]


@register("blocks.EncoderBlock")
def _gradcheck_encoder_block(device: str):
    pad = _pad(device, [[1, 1, 1, 0], [1, 1, 1, 1]])
    results = []
    for norm in NORMS:
        for causal, kpm in ((False, None), (True, pad)):
            block = EncoderBlock(4, 2, 6, norm=norm, rng=backend.host_rng(21)).to(device, "float64")
            (x,) = float64_inputs(device, 21, (2, 4, 4))
            run = (lambda m, a, c=causal, p=kpm: m.forward(a, causal=c, key_padding_mask=p))
            results.append(check_module(f"blocks.EncoderBlock[{norm}, causal={causal}, pad={kpm is not None}]",
                                        block, [x], run=run))
    return results


@register("blocks.AttentionOnlyBlock")
def _gradcheck_attention_only_block(device: str):
    results = []
    for norm in NORMS:
        block = AttentionOnlyBlock(4, 2, norm=norm, rng=backend.host_rng(25)).to(device, "float64")
        (x,) = float64_inputs(device, 25, (2, 3, 4))
        results.append(check_module(f"blocks.AttentionOnlyBlock[{norm}]", block, [x],
                                    run=lambda m, a: m.forward(a, causal=True)))
    return results


@register("blocks.DecoderBlock")
def _gradcheck_decoder_block(device: str):
    tgt_pad = _pad(device, [[1, 1, 1], [1, 1, 0]])
    mem_pad = _pad(device, [[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    results = []
    for norm in NORMS:
        block = DecoderBlock(4, 2, 6, norm=norm, activation="relu", rng=backend.host_rng(22)).to(device, "float64")
        x, mem = float64_inputs(device, 22, (2, 3, 4), (2, 5, 4))
        run = (lambda m, a, s: m.forward(a, s, key_padding_mask=tgt_pad, memory_padding_mask=mem_pad))
        results.append(check_module(f"blocks.DecoderBlock[{norm}]", block, [x, mem], run=run))
    return results


@register("blocks.Encoder")
def _gradcheck_encoder(device: str):
    results = []
    for norm in NORMS:
        enc = Encoder(2, 4, 2, 5, norm=norm, rng=backend.host_rng(23)).to(device, "float64")
        (x,) = float64_inputs(device, 23, (2, 3, 4))
        results.append(check_module(f"blocks.Encoder[{norm}]", enc, [x],
                                    run=lambda m, a: m.forward(a, causal=True), max_coords=40))
    return results


@register("blocks.Decoder")
def _gradcheck_decoder(device: str):
    results = []
    for norm in NORMS:
        dec = Decoder(2, 4, 2, 5, norm=norm, rng=backend.host_rng(24)).to(device, "float64")
        x, mem = float64_inputs(device, 24, (2, 3, 4), (2, 4, 4))
        results.append(check_module(f"blocks.Decoder[{norm}]", dec, [x, mem],
                                    run=lambda m, a, s: m.forward(a, s), max_coords=40))
    return results
