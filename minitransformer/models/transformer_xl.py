r"""Transformer-XL: a causal language model that reads a long text segment by segment with memory.

The text is cut into segments of $T$ tokens, read in order. Layer $\ell$ of segment $\tau$ attends
over its own input and over a **memory** of the inputs it saw in the previous segments, kept with a
stop-gradient (Dai et al. 2019):

$$\tilde h^{\ell-1}_\tau = [\,\mathrm{SG}(m^{\ell-1}_\tau) \,;\, h^{\ell-1}_\tau\,], \qquad
  m^{\ell-1}_{\tau+1} = \text{the last } M \text{ rows of } [\,m^{\ell-1}_\tau \,;\, h^{\ell-1}_\tau\,],$$

queries from $h^{\ell-1}_\tau$, keys and values from $\tilde h^{\ell-1}_\tau$, positions relative
(``attention/relative_xl.py``). The stop-gradient makes training cost one segment while the
forward reaches $M$ tokens back per layer, up to $L \cdot M$ through the stack. Memory is data, not
a parameter: forward takes it in and hands the next one out (``forward_segment``); ``forward``
alone reads a segment with no memory (the contract of ``models/model.py``), or decodes with a
sliding key/value cache (``make_kv_caches``).

Blocks are pre-LN (as the package's GPT); the memory holds each layer's *input* (the residual
stream), and the layer's LayerNorm runs over memory and segment together, so its gain and bias get
gradient through the memory rows too while the memory itself gets none.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from .. import backend
from ..attention.relative_xl import RelativeMultiHeadAttention, SlidingKVCache
from ..blocks import FeedForward
from ..config import require_int
from ..gradcheck import check_module, register
from ..nn.checks import check_array, check_targets, check_token_ids
from ..nn.dropout import Dropout
from ..nn.embedding import Embedding
from ..nn.functional.cross_entropy import cross_entropy_forward
from ..nn.functional.linear import linear_backward, linear_forward
from ..nn.layernorm import LayerNorm
from ..nn.module import Module, Parameter
from ..positional import sinusoidal_encoding
from .model import IGNORE_INDEX, Model
from .registry import register_model


@dataclass(frozen=True)
class TransformerXLConfig:
    vocab_size: int = 96            # V: tokens in the vocabulary (set from the tokenizer)
    segment_len: int = 32           # T: tokens per training segment
    mem_len: int = 32               # M: positions of memory per layer (evaluation may use more)
    n_layer: int = 2                # L: number of blocks
    n_head: int = 4                 # H: attention heads per block
    d_model: int = 64               # C: width of the residual stream
    d_ff: int | None = None         # F: feed-forward width (None: 4 * d_model)
    dropout: float = 0.0            # residual and embedding dropout
    activation: str = "gelu"        # "gelu", "gelu_tanh" or "relu"
    bias: bool = True               # biases in the Linear layers

    def __post_init__(self):
        for name in ("vocab_size", "segment_len", "n_layer", "n_head", "d_model"):
            require_int(self, name, 1)
        require_int(self, "mem_len", 0)
        if self.d_model % self.n_head:
            raise ValueError(f"{type(self).__name__}: d_model={self.d_model} is not divisible by "
                             f"n_head={self.n_head}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"{type(self).__name__}.dropout must lie in [0, 1), got {self.dropout}")

    @property
    def block_size(self) -> int:
        """The window a decoding step sees directly: mem_len cached positions plus a segment."""
        return self.mem_len + self.segment_len


# --8<-- [start:xl_block]
class XLBlock(Module):
    """Pre-LN block: h = x + attn(LN([mem; x])), y = h + ffn(LN(h)); the memory gets no gradient."""

    def __init__(self, d_model: int, n_head: int, d_ff: int, dropout: float, activation: str, bias: bool,
                 rng, out_std: float):
        super().__init__()
        self.ln1 = LayerNorm(d_model)
        self.attn = RelativeMultiHeadAttention(d_model, n_head, bias=bias, rng=rng, out_std=out_std)
        self.drop = Dropout(dropout, seed=int(rng.integers(2 ** 31)))
        self.ln2 = LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff, activation, dropout, rng=rng, out_std=out_std, bias=bias)
        self.mem_rows = 0

    def forward(self, x, memory, pos_emb, u, v, kv_cache=None):
        """x (B,T,C), memory (B,M,C) -> (B,T,C)."""
        xp = backend.get_array_module(x)
        T = x.shape[1]
        self.mem_rows = memory.shape[1]
        context = xp.concatenate([memory, x], axis=1)                 # SG(mem); x: (B,M,C) + (B,T,C) -> (B,K,C)
        h = self.drop(self.attn(self.ln1(context), T, pos_emb, u, v, kv_cache=kv_cache))
        h += x                                                        # x1 = x + attn(LN([mem; x]))
        y = self.ffn(self.ln2(h))
        y += h                                                        # y = x1 + ffn(LN(x1))
        return y

    def backward(self, dy):
        """dy (B,T,C) -> (dx, du, dv); the memory rows' gradient is dropped (stop-gradient)."""
        # fwd: y = x1 + ffn(ln2(x1))  =>  dx1 = dy + ln2'(ffn'(dy))
        dx = self.ln2.backward(self.ffn.backward(dy))
        dx += dy
        # fwd: x1 = x + drop(attn(ln1([mem; x])))
        dcontext, du, dv = self.attn.backward(self.drop.backward(dx))
        dcontext = self.ln1.backward(dcontext)                        # (B,K,C); LN's gain/bias see every row
        dx += dcontext[:, self.mem_rows:]                             # SG(mem): rows :M stop here
        return dx, du, dv
# --8<-- [end:xl_block]


class XLForwardCache(NamedTuple):
    head: object        # the tied output head's LinearCache
    ce: object          # the cross-entropy's cache (None without targets)


@register_model("xl", TransformerXLConfig, "Transformer-XL: segments with memory, relative positions")
class TransformerXL(Model):
    """Segment-level recurrence with a stop-gradient memory per layer; relative attention."""

    can_generate = True

    def __init__(self, config: TransformerXLConfig, seed: int = 0):
        super().__init__()
        self.config = c = config
        rng = backend.host_rng(seed)
        H, D = c.n_head, c.d_model // c.n_head
        residual_std = 0.02 / math.sqrt(2 * c.n_layer)
        self.wte = Embedding(c.vocab_size, c.d_model, rng=rng, std=0.02)
        self.drop = Dropout(c.dropout, seed=seed + 1)
        self.u = Parameter((rng.standard_normal((H, D)) * 0.02).astype("float32"))   # content bias
        self.v = Parameter((rng.standard_normal((H, D)) * 0.02).astype("float32"))   # position bias
        self.blocks = [XLBlock(c.d_model, c.n_head, c.d_ff or 4 * c.d_model, c.dropout, c.activation, c.bias,
                               rng, residual_std) for _ in range(c.n_layer)]
        self.ln_f = LayerNorm(c.d_model)
        for name, p in self.named_parameters():                       # GPT-2 initialisation
            if name.startswith("blocks.") and name.endswith(".weight") and p.data.ndim == 2:
                std = residual_std if name.endswith(("attn.proj.weight", "ffn.fc2.weight")) else 0.02
                p.data = (rng.standard_normal(p.shape) * std).astype(p.dtype)
        self.cache = None
        self._distance_table = None                                   # sinusoids of distances 0, 1, ...

    # -- memory ------------------------------------------------------------------------------------
    def empty_memory(self, batch_size: int) -> list:
        """No memory yet: one (B, 0, C) array per layer."""
        w = self.wte.weight
        xp = backend.xp_for(w.device)
        return [xp.zeros((batch_size, 0, self.config.d_model), w.dtype) for _ in self.blocks]

    def check_memory(self, memory, batch_size: int) -> None:
        if not isinstance(memory, (list, tuple)) or len(memory) != len(self.blocks):
            got = f"a {type(memory).__name__}" + (f" of length {len(memory)}" if hasattr(memory, "__len__") else "")
            raise ValueError(f"{type(self).__name__}: memory must be a list of {len(self.blocks)} arrays "
                             f"(one per layer), got {got}")
        w = self.wte.weight
        for i, m in enumerate(memory):
            check_array(m, f"memory of layer {i}", ndim=3, last_dim=self.config.d_model, dtype=w.dtype,
                        device=w.device)
            if m.shape[0] != batch_size or m.shape[1] != memory[0].shape[1]:
                raise ValueError(f"memory of layer {i}: expected (B={batch_size}, M={memory[0].shape[1]}, C), "
                                 f"got {tuple(m.shape)}")

    def memory_length(self, mem_len) -> int:
        """The memory to keep: config.mem_len, or a given int >= 0 (evaluation may use more)."""
        mem_len = self.config.mem_len if mem_len is None else mem_len
        if isinstance(mem_len, bool) or not isinstance(mem_len, int) or mem_len < 0:
            raise ValueError(f"{type(self).__name__}: mem_len must be an int >= 0, got {mem_len!r}")
        return mem_len

    def relative_embeddings(self, n_keys: int):
        """R: sinusoidal embeddings of the distances n_keys-1, ..., 1, 0 (row c: distance n_keys-1-c).
        Row t of the table does not depend on its length, so one table, grown when needed, serves
        every call (a decoding step would otherwise rebuild it on the host for every token)."""
        w = self.wte.weight
        table = self._distance_table
        if table is None or table.shape[0] < n_keys or table.dtype != w.dtype or backend.device_of(table) != w.device:
            table = sinusoidal_encoding(max(2 * n_keys, 64), self.config.d_model, w.dtype, w.device)
            self._distance_table = table
        return table[:n_keys][::-1]                                   # (n_keys, C), distances n_keys-1 .. 0

    # -- forward / backward ------------------------------------------------------------------------
    # --8<-- [start:xl_forward]
    def forward_segment(self, idx, memory=None, targets=None, mem_len: int | None = None,
                        ignore_index: int = IGNORE_INDEX):
        """Read one segment idx (B, T) after `memory` (None: none). Returns (logits (B,T,V), loss,
        new memory): per layer the last mem_len (default config.mem_len) rows of [memory; input]."""
        c = self.config
        mem_len = self.memory_length(mem_len)
        check_token_ids(idx, f"{type(self).__name__} input idx", c.vocab_size)
        check_array(idx, f"{type(self).__name__} input idx", ndim=2, device=self.wte.weight.device)
        B, T = idx.shape
        memory = self.empty_memory(B) if memory is None else memory
        self.check_memory(memory, B)
        pos_emb = self.relative_embeddings(memory[0].shape[1] + T)    # distances M+T-1 .. 0
        x = self.drop(self.wte(idx))                                  # (B, T) -> (B, T, C)
        inputs = []
        for block, mem in zip(self.blocks, memory):
            inputs.append(x)
            x = block(x, mem, pos_emb, self.u.data, self.v.data)
        logits, loss = self._head(x, targets, ignore_index, idx.shape)
        return logits, loss, self.next_memory(memory, inputs, mem_len)
    # --8<-- [end:xl_forward]

    # --8<-- [start:xl_next_memory]
    def next_memory(self, memory, inputs, mem_len: int) -> list:
        """m_{tau+1} = the last mem_len rows of [m_tau; h_tau], per layer: a copy, so nothing that
        later changes the segment's activations reaches it, and backward never enters it."""
        xp = backend.get_array_module(inputs[0])
        out = []
        for mem, h in zip(memory, inputs):
            both = xp.concatenate([mem, h], axis=1)                   # (B,M,C) + (B,T,C) -> (B,M+T,C)
            out.append(both[:, max(both.shape[1] - mem_len, 0):].copy())   # -> (B, min(M+T, mem_len), C)
        return out
    # --8<-- [end:xl_next_memory]

    def forward(self, idx, targets=None, kv_caches=None, ignore_index: int = IGNORE_INDEX):
        """The model contract: a segment with no memory, or (kv_caches) one decoding step."""
        if kv_caches is None:
            logits, loss, _ = self.forward_segment(idx, None, targets, ignore_index=ignore_index)
            return logits, loss
        return self._decode(idx, kv_caches), None

    def _head(self, x, targets, ignore_index, shape):
        x = self.ln_f(x)
        logits, head_cache = linear_forward(x, self.wte.weight.data.T)   # (B,T,C) @ (C,V) -> (B,T,V)
        loss = ce_cache = None
        if targets is not None:
            check_targets(targets, f"{type(self).__name__} targets", self.config.vocab_size, ignore_index, shape)
            loss, ce_cache = cross_entropy_forward(logits, targets, ignore_index=ignore_index)
        self.cache = XLForwardCache(head_cache, ce_cache) if self.keep_cache else None
        return logits, loss

    # --8<-- [start:xl_backward]
    def backward(self, dlogits=None, dloss: float = 1.0):
        """The forward in reverse; u and v collect the gradient of every layer (they are shared)."""
        cache = self.saved_cache()
        dlogits = self.output_gradient(dlogits, dloss, cache.ce)
        # fwd: logits = LN(x) @ W_te^T  =>  dx = dlogits @ W_te,  dW_te += dlogits^T x
        dx, dwte_t, _ = linear_backward(dlogits, cache.head)
        self.wte.weight.grad += dwte_t.T
        dx = self.ln_f.backward(dx)
        for block in reversed(self.blocks):
            dx, du, dv = block.backward(dx)
            self.u.grad += du
            self.v.grad += dv
        self.wte.backward(self.drop.backward(dx))
        self.cache = None
    # --8<-- [end:xl_backward]

    # -- decoding ------------------------------------------------------------------------------------
    @property
    def supports_kv_cache(self) -> bool:
        return True

    def make_kv_caches(self, batch_size: int):
        """One SlidingKVCache per layer: the keys and values of the last mem_len positions."""
        return [SlidingKVCache(self.config.mem_len) for _ in self.blocks]

    def _decode(self, idx, caches):
        """idx (B, t) after the cached positions -> logits (B, t, V); the caches slide forward."""
        check_token_ids(idx, f"{type(self).__name__} input idx", self.config.vocab_size)
        if len(caches) != len(self.blocks):
            raise ValueError(f"{type(self).__name__}: expected {len(self.blocks)} caches, got {len(caches)}")
        B, t = idx.shape
        pos_emb = self.relative_embeddings(caches[0].length + t)
        x = self.drop(self.wte(idx))
        none = self.empty_memory(B)[0]
        for block, cache in zip(self.blocks, caches):
            x = block(x, none, pos_emb, self.u.data, self.v.data, kv_cache=cache)
        x = self.ln_f(x)
        logits, _ = linear_forward(x, self.wte.weight.data.T)        # (B,t,C) @ (C,V) -> (B,t,V)
        self.cache = None
        return logits


# -- gradient checks (float64) ------------------------------------------------------------------
def _scaled_for_gradcheck(model, std: float = 0.4):
    """Redraw every weight at std 0.4: at GPT-2's 0.02 the scores are nearly flat, the gradients of
    the queries, W_R, u and v are ~1e-6, and the finite differences would measure rounding instead."""
    rng = backend.host_rng(99)
    for _, p in model.named_parameters():
        p.data = backend.to_device(rng.standard_normal(p.shape) * std, model.device, p.dtype)
    return model


def _gradcheck_xl_case(device: str, n_head: int, T: int, M: int, label: str):
    cfg = TransformerXLConfig(vocab_size=11, segment_len=T, mem_len=M, n_layer=2, n_head=n_head, d_model=8)
    model = _scaled_for_gradcheck(TransformerXL(cfg, seed=3).to(device, "float64"))
    rng = backend.host_rng(4)
    ids = backend.to_device(rng.integers(0, 11, (2, 2 * T + 1)), device)
    with model.no_grad():                                             # a first segment fills the memory
        _, _, memory = model.forward_segment(ids[:, :T], None)
    idx, targets = ids[:, T:2 * T], ids[:, T + 1:2 * T + 1]
    return check_module(f"models.TransformerXL_xl[{label}]", model, [idx, targets],
                        run=lambda m, i, y: m.forward_segment(i, memory, y)[1],
                        backward=lambda m, d: m.backward(dloss=float(d)), eps=1e-5, max_coords=8)


@register("models.TransformerXL_xl")
def _gradcheck_xl(device: str):
    """Every parameter of a 2-layer Transformer-XL, reading a segment after a memory of earlier ones."""
    return [_gradcheck_xl_case(device, 2, 4, 4, "H=2, T=4, M=4"),
            _gradcheck_xl_case(device, 1, 3, 5, "H=1, T=3, M=5 (M > T)"),
            _gradcheck_xl_case(device, 2, 1, 0, "H=2, T=1, no memory")]
