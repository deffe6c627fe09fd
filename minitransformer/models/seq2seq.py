r"""The original encoder-decoder Transformer (Vaswani et al. 2017) for sequence-to-sequence tasks.

The encoder reads the source with bidirectional self-attention; the decoder reads the target
shifted right with causal self-attention and attends to the encoder's output (cross-attention):

$$m = \mathrm{Encoder}(E_s[x]\sqrt{C} + PE), \qquad
  \text{logits} = \mathrm{Decoder}(E_t[y_{<t}]\sqrt{C} + PE,\; m)\, E_t^\top .$$

As in the paper: post-LN blocks by default, sinusoidal positions, embeddings multiplied by
$\sqrt{C}$, and the target embedding shared with the pre-softmax projection. The encoder output
$m$ feeds every decoder block, so its gradient is the sum of the blocks' cross-attention gradients
(`Decoder.backward` adds them up) and flows back into the encoder.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from .. import backend
from ..attention.kv_cache import KVCache
from ..blocks import Decoder, Encoder
from ..config import require_int
from ..gradcheck import check_module, register
from ..nn.checks import check_targets, check_token_ids
from ..nn.embedding import Embedding
from ..nn.functional.cross_entropy import cross_entropy_forward
from ..nn.functional.linear import linear_backward, linear_forward
from ..positional import SinusoidalPositionalEncoding
from .model import IGNORE_INDEX, Model
from .registry import register_model


@dataclass(frozen=True)
class Seq2SeqConfig:
    src_vocab_size: int = 16        # source vocabulary
    tgt_vocab_size: int = 16        # target vocabulary (its ids include BOS and PAD)
    max_src_len: int = 32           # longest source
    max_tgt_len: int = 32           # longest target (decoder input)
    n_layer: int = 2                # encoder blocks
    n_dec_layer: int = 2            # decoder blocks
    n_head: int = 4                 # H
    d_model: int = 64               # C
    d_ff: int | None = None         # F (None: 4 C)
    dropout: float = 0.0
    norm: str = "post"              # "post" as in the paper, or "pre"
    pad_id: int = 0                 # padding id of the source (masked as keys) and of the decoder input

    def __post_init__(self):
        for name in ("src_vocab_size", "tgt_vocab_size", "max_src_len", "max_tgt_len", "n_layer",
                     "n_dec_layer", "n_head", "d_model"):
            require_int(self, name, 1)
        if self.d_model % self.n_head:
            raise ValueError(f"Seq2SeqConfig: d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if self.norm not in ("pre", "post"):
            raise ValueError(f"Seq2SeqConfig.norm must be 'pre' or 'post', got {self.norm!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"Seq2SeqConfig.dropout must lie in [0, 1), got {self.dropout}")


# --8<-- [start:seq2seq_register]
@register_model("seq2seq", Seq2SeqConfig, "encoder-decoder Transformer (synthetic sequence tasks)")
class Seq2SeqTransformer(Model):
# --8<-- [end:seq2seq_register]
    """Encoder-decoder Transformer with a tied target embedding / output projection."""

    def __init__(self, config: Seq2SeqConfig, seed: int = 0):
        super().__init__()
        self.config = c = config
        rng = backend.host_rng(seed)
        std = c.d_model ** -0.5                         # times sqrt(C) below: unit-variance inputs
        self.src_embed = Embedding(c.src_vocab_size, c.d_model, rng=rng, std=std)
        self.tgt_embed = Embedding(c.tgt_vocab_size, c.d_model, rng=rng, std=std)
        self.src_pos = SinusoidalPositionalEncoding(c.max_src_len, c.d_model)
        self.tgt_pos = SinusoidalPositionalEncoding(c.max_tgt_len, c.d_model)
        self.encoder = Encoder(c.n_layer, c.d_model, c.n_head, c.d_ff, c.norm, c.dropout,
                               max_len=c.max_src_len, rng=rng)
        self.decoder = Decoder(c.n_dec_layer, c.d_model, c.n_head, c.d_ff, c.norm, c.dropout,
                               max_len=c.max_tgt_len, rng=rng)
        self.cache = None

    def _embed(self, ids, embed, pos, offset=0):
        x = embed(ids)                                               # (B, T) -> (B, T, C)
        x *= math.sqrt(self.config.d_model)
        return pos(x, offset)

    def encode(self, src):
        """src (B, S) ids -> (memory (B, S, C), source key padding mask (B, S), True on padding)."""
        c = self.config
        check_token_ids(src, "Seq2Seq source", c.src_vocab_size, c.max_src_len)
        pad = src == c.pad_id
        return self.encoder(self._embed(src, self.src_embed, self.src_pos), key_padding_mask=pad), pad

    # --8<-- [start:seq2seq_forward]
    def forward(self, src, tgt_in, tgt_out=None):
        """src (B, S), decoder input tgt_in (B, T) (BOS + target[:-1]) -> logits (B, T, V_t);
        with tgt_out (B, T) also the mean cross-entropy over the targets that are not IGNORE_INDEX."""
        c = self.config
        check_token_ids(tgt_in, "Seq2Seq decoder input", c.tgt_vocab_size, c.max_tgt_len)
        memory, src_pad = self.encode(src)
        h = self.decoder(self._embed(tgt_in, self.tgt_embed, self.tgt_pos), memory,
                         causal=True, memory_padding_mask=src_pad)
        logits, head_cache = linear_forward(h, self.tgt_embed.weight.data.T)   # (B,T,C) @ (C,V) -> (B,T,V)
        loss = ce_cache = None
        if tgt_out is not None:
            check_targets(tgt_out, "Seq2Seq targets", c.tgt_vocab_size, IGNORE_INDEX, tgt_in.shape)
            loss, ce_cache = cross_entropy_forward(logits, tgt_out, ignore_index=IGNORE_INDEX)
        self.cache = (head_cache, ce_cache) if self.keep_cache else None
        return logits, loss
    # --8<-- [end:seq2seq_forward]

    # --8<-- [start:seq2seq_backward]
    def backward(self, dlogits=None, dloss: float = 1.0):
        """The forward in reverse: head, decoder (giving d memory), encoder, embeddings."""
        head_cache, ce_cache = self.saved_cache()
        dlogits = self.output_gradient(dlogits, dloss, ce_cache)   # dL/dlogits, (B, T, V_t)
        # fwd: logits = h @ E_t^T  =>  dh = dlogits @ E_t,  dE_t += (h^T dlogits)^T
        dh, dwt, _ = linear_backward(dlogits, head_cache)
        self.tgt_embed.weight.grad += dwt.T
        dx_tgt, dmemory = self.decoder.backward(dh)
        # fwd: x = E[ids] * sqrt(C) + PE  =>  dE[ids] += dx * sqrt(C)
        scale = math.sqrt(self.config.d_model)
        self.tgt_embed.backward(self.tgt_pos.backward(dx_tgt) * scale)
        dx_src = self.encoder.backward(dmemory)
        self.src_embed.backward(self.src_pos.backward(dx_src) * scale)
    # --8<-- [end:seq2seq_backward]

    # --8<-- [start:greedy_decode]
    def greedy_decode(self, src, bos_id: int, max_new_tokens: int, eos_id: int | None = None):
        """Greedy decoding with KV caches: the encoder runs once; each decoder step feeds one token,
        reusing the cached self-attention keys/values and the cross-attention keys/values of memory."""
        c = self.config
        xp = backend.get_array_module(src)
        B = src.shape[0]
        steps = min(max_new_tokens, c.max_tgt_len)
        out = xp.full((B, 1), bos_id, dtype=src.dtype)
        was_training = self.training
        self.eval()
        with self.no_grad():
            memory, src_pad = self.encode(src)
            self_caches = [KVCache(c.max_tgt_len) for _ in range(c.n_dec_layer)]
            cross_caches = [KVCache(src.shape[1]) for _ in range(c.n_dec_layer)]
            for t in range(steps):
                x = self._embed(out[:, -1:], self.tgt_embed, self.tgt_pos, offset=t)
                h = self.decoder(x, memory, causal=True, memory_padding_mask=src_pad,
                                 kv_caches=self_caches, cross_kv_caches=cross_caches)
                logits, _ = linear_forward(h[:, -1], self.tgt_embed.weight.data.T)   # (B,C) @ (C,V) -> (B,V)
                next_id = xp.argmax(logits, axis=-1).astype(out.dtype)
                out = xp.concatenate([out, next_id[:, None]], axis=1)             # (B, t+2)
                if eos_id is not None and bool((out == eos_id).any(axis=1).all()):
                    break
        self.train(was_training)
        return out[:, 1:]
    # --8<-- [end:greedy_decode]


@register("models.Seq2SeqTransformer")
def _gradcheck_seq2seq(device: str):
    results = []
    for norm in ("post", "pre"):
        cfg = Seq2SeqConfig(src_vocab_size=7, tgt_vocab_size=6, max_src_len=6, max_tgt_len=5, n_layer=1,
                            n_dec_layer=2, n_head=2, d_model=8, norm=norm)
        model = Seq2SeqTransformer(cfg, seed=1).to(device, "float64")
        src = backend.to_device(np.array([[1, 2, 3, 4, 0], [5, 6, 1, 0, 0]]), device)   # padded sources
        tgt_in = backend.to_device(np.array([[1, 2, 3, 4], [1, 5, 2, 0]]), device)
        tgt_out = backend.to_device(np.array([[2, 3, 4, 5], [5, 2, IGNORE_INDEX, IGNORE_INDEX]]), device)
        results.append(check_module(f"models.Seq2SeqTransformer({norm}-LN)", model, [src, tgt_in, tgt_out],
                                    run=lambda m, s, i, o: m.forward(s, i, o)[1],
                                    backward=lambda m, d: m.backward(dloss=float(d)), eps=1e-5,
                                    max_coords=16))
    return results
