r"""T5 (Raffel et al. 2020): an encoder-decoder that casts every task as text in, text out.

$$m = \mathrm{Enc}(E[x]),\qquad \text{logits} = \big(C^{-1/2}\,\mathrm{Dec}(E[y_{<t}],\, m)\big)\,E^\top .$$

What sets it apart from the original Transformer (``seq2seq.py``):

* **one shared embedding** $E$ for the encoder input, the decoder input and (tied, v1.0) the output
  head; the decoder's last hidden state is multiplied by $C^{-1/2}$ before the tied head
  (v1.1 unties the head and drops the factor);
* **RMSNorm** pre-norm blocks, **no biases**, **no $1/\sqrt D$** in the scores;
* **relative position buckets** instead of position vectors: the encoder's and the decoder's
  first blocks each own a (32, H) table of learned score offsets shared by the stack's blocks;
  ``position="sinusoidal"`` replaces them by sinusoids added to the embeddings (the baseline of
  the length-generalisation benchmark);
* the decoder starts from the pad id; sentinels and EOS come from the vocabulary.

The shared embedding is read twice (encoder and decoder ids) and written once more by the tied
head, so its gradient is the sum of three terms: $dE = dE_{\text{head}} + dE_{\text{enc}} + dE_{\text{dec}}$.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from .. import backend
from ..attention.kv_cache import KVCache
from ..attention.relative_bias import MAX_DISTANCE, NUM_BUCKETS
from ..config import require_int, require_number
from ..gradcheck import check_module, register
from ..nn.checks import check_targets, check_token_ids
from ..nn.embedding import Embedding
from ..nn.functional.cross_entropy import cross_entropy_forward
from ..nn.functional.embedding import embedding_backward, embedding_forward
from ..nn.functional.linear import linear_backward, linear_forward
from ..nn.linear import Linear
from ..positional import SinusoidalPositionalEncoding
from .model import IGNORE_INDEX, Model
from .registry import register_model
from .t5_blocks import FEED_FORWARDS, T5Stack

POSITIONS = ("relative", "sinusoidal")


@dataclass(frozen=True)
class T5Config:
    vocab_size: int = 128           # V, shared by encoder, decoder and head (sentinels included)
    max_src_len: int = 64           # longest encoder input (relative buckets need no table; KV caches do)
    max_tgt_len: int = 64           # longest decoder input
    n_layer: int = 2                # encoder blocks
    n_dec_layer: int = 2            # decoder blocks
    n_head: int = 4                 # H
    d_model: int = 64               # C
    d_ff: int | None = None         # F (None: 4 C)
    feed_forward: str = "relu"      # "relu" (T5 v1.0) or "gated-gelu" (v1.1)
    position: str = "relative"      # "relative" (T5's buckets) or "sinusoidal" (added to the embeddings)
    num_buckets: int = NUM_BUCKETS  # relative position buckets per table
    max_distance: int = MAX_DISTANCE  # distances beyond this share the last bucket
    tie_embeddings: bool = True     # v1.0: head = E^T with the C^-1/2 factor; v1.1: a separate head
    dropout: float = 0.0
    pad_id: int = 0                 # padding, and the decoder's start token
    eos_id: int = 1                 # end of sequence

    def __post_init__(self):
        for name in ("vocab_size", "max_src_len", "max_tgt_len", "n_layer", "n_dec_layer", "n_head",
                     "d_model", "num_buckets", "max_distance"):
            require_int(self, name, 1)
        if self.d_ff is not None:
            require_int(self, "d_ff", 1)
        if self.d_model % self.n_head:
            raise ValueError(f"T5Config: d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if self.feed_forward not in FEED_FORWARDS:
            raise ValueError(f"T5Config.feed_forward must be one of {FEED_FORWARDS}, got {self.feed_forward!r}")
        if self.position not in POSITIONS:
            raise ValueError(f"T5Config.position must be one of {POSITIONS}, got {self.position!r}")
        require_number(self, "dropout", 0.0, 1.0, high_open=True)
        for name in ("pad_id", "eos_id"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < self.vocab_size:
                raise ValueError(f"T5Config.{name} must be an id in [0, {self.vocab_size}), got {value!r}")
        if self.pad_id == self.eos_id:
            raise ValueError(f"T5Config: pad_id and eos_id must differ, both are {self.pad_id}")


class T5DecodingState:
    """What incremental decoding carries from step to step: the encoder output, its padding mask,
    one self-attention and one cross-attention KV cache per decoder block, and the next position."""

    def __init__(self, memory, src_pad, self_caches, cross_caches):
        self.memory, self.src_pad = memory, src_pad
        self.self_caches, self.cross_caches = self_caches, cross_caches
        self.position = 0

    def reorder(self, rows) -> None:
        """Keep rows `rows` (an int array of the batch) in this order: beam search's reshuffle."""
        self.memory, self.src_pad = self.memory[rows], self.src_pad[rows]
        for cache in self.self_caches + self.cross_caches:
            cache.reorder(rows)


# --8<-- [start:t5_register]
@register_model("t5", T5Config, "T5 encoder-decoder: text-to-text tasks, relative position buckets")
class T5Model(Model):
# --8<-- [end:t5_register]
    """Encoder-decoder with a shared embedding, RMSNorm, relative position bias and no biases."""

    def __init__(self, config: T5Config, seed: int = 0):
        super().__init__()
        self.config = c = config
        rng = backend.host_rng(seed)
        d_ff = 4 * c.d_model if c.d_ff is None else c.d_ff
        relative = c.position == "relative"
        self.shared = Embedding(c.vocab_size, c.d_model, rng=rng, std=1.0)   # T5: N(0, 1)
        stack = dict(d_model=c.d_model, n_head=c.n_head, d_ff=d_ff, feed_forward=c.feed_forward,
                     dropout=c.dropout, relative=relative, num_buckets=c.num_buckets,
                     max_distance=c.max_distance, rng=rng)
        self.encoder = T5Stack(c.n_layer, decoder=False, **stack)
        self.decoder = T5Stack(c.n_dec_layer, decoder=True, **stack)
        self.lm_head = None if c.tie_embeddings else Linear(c.d_model, c.vocab_size, bias=False, rng=rng)
        self.src_pos = None if relative else SinusoidalPositionalEncoding(c.max_src_len, c.d_model)
        self.tgt_pos = None if relative else SinusoidalPositionalEncoding(c.max_tgt_len, c.d_model)
        self.cache = None

    # -- pieces shared by training and decoding ---------------------------------------------------
    def _embed(self, ids, pos, offset: int = 0):
        x, cache = embedding_forward(ids, self.shared.weight.data)          # (B,T) -> (B,T,C)
        return (x if pos is None else pos(x, offset)), cache

    def _head(self, h):
        """(B,T,C) -> logits (B,T,V): tied (scaled by C^-1/2) or a separate linear head."""
        if self.lm_head is not None:
            return self.lm_head(h), None
        h = h * self.config.d_model ** -0.5
        return linear_forward(h, self.shared.weight.data.T)                 # (B,T,C) @ (C,V) -> (B,T,V)

    def encode(self, src):
        """src (B, S) ids -> (memory (B, S, C), key padding mask (B, S), True on padding, embedding cache)."""
        c = self.config
        check_token_ids(src, "T5 encoder input", c.vocab_size, c.max_src_len)
        pad = src == c.pad_id
        x, emb_cache = self._embed(src, self.src_pos)
        return self.encoder(x, key_padding_mask=pad), pad, emb_cache

    # --8<-- [start:t5_forward]
    def forward(self, src, tgt_in, tgt_out=None):
        """src (B, S), decoder input tgt_in (B, T) (pad id + target[:-1]) -> logits (B, T, V);
        with tgt_out (B, T) also the mean cross-entropy over the targets that are not IGNORE_INDEX."""
        c = self.config
        check_token_ids(tgt_in, "T5 decoder input", c.vocab_size, c.max_tgt_len)
        memory, src_pad, src_emb = self.encode(src)
        x, tgt_emb = self._embed(tgt_in, self.tgt_pos)
        h = self.decoder(x, memory, memory_padding_mask=src_pad)
        logits, head_cache = self._head(h)
        loss = ce_cache = None
        if tgt_out is not None:
            check_targets(tgt_out, "T5 targets", c.vocab_size, IGNORE_INDEX, tgt_in.shape)
            loss, ce_cache = cross_entropy_forward(logits, tgt_out, ignore_index=IGNORE_INDEX)
        self.cache = (src_emb, tgt_emb, head_cache, ce_cache) if self.keep_cache else None
        return logits, loss
    # --8<-- [end:t5_forward]

    # --8<-- [start:t5_backward]
    def backward(self, dlogits=None, dloss: float = 1.0):
        """The forward in reverse: head, decoder (giving d memory), encoder; the shared embedding
        collects three gradients (head, decoder ids, encoder ids)."""
        src_emb, tgt_emb, head_cache, ce_cache = self.saved_cache()
        dlogits = self.output_gradient(dlogits, dloss, ce_cache)           # (B,T,V)
        E = self.shared.weight
        if self.lm_head is not None:
            dh = self.lm_head.backward(dlogits)
        else:
            # fwd: logits = (h C^-1/2) E^T  =>  dh = C^-1/2 dlogits E,  dE += (C^-1/2 h)^T dlogits, transposed
            dh, dwt, _ = linear_backward(dlogits, head_cache)
            E.grad += dwt.T
            dh *= self.config.d_model ** -0.5
        dx_tgt, dmemory = self.decoder.backward(dh)
        if self.tgt_pos is not None:
            dx_tgt = self.tgt_pos.backward(dx_tgt)
        E.grad += embedding_backward(dx_tgt, tgt_emb)[1]                    # fwd: x = E[tgt_in]
        dx_src = self.encoder.backward(dmemory)
        if self.src_pos is not None:
            dx_src = self.src_pos.backward(dx_src)
        E.grad += embedding_backward(dx_src, src_emb)[1]                    # fwd: m = Enc(E[src])
        self.cache = None
    # --8<-- [end:t5_backward]

    # -- incremental decoding (greedy here, beam search in beam_search.py) --------------------------
    # --8<-- [start:t5_decoding]
    def start_decoding(self, src) -> T5DecodingState:
        """Run the encoder once and allocate the decoder's KV caches for the rows of src (B, S)."""
        c = self.config
        with self.no_grad():
            memory, src_pad, _ = self.encode(src)
        n = c.n_dec_layer
        return T5DecodingState(memory, src_pad, [KVCache(c.max_tgt_len) for _ in range(n)],
                               [KVCache(src.shape[1]) for _ in range(n)])

    def decode_step(self, state: T5DecodingState, tokens):
        """Feed one token per row, tokens (N,) at position state.position -> logits (N, V)."""
        if state.position >= self.config.max_tgt_len:
            raise ValueError(f"T5 decoding: position {state.position} reaches max_tgt_len="
                             f"{self.config.max_tgt_len}; build the model with a longer max_tgt_len")
        with self.no_grad():
            x, _ = self._embed(tokens[:, None], self.tgt_pos, state.position)   # (N,) -> (N,1,C)
            h = self.decoder(x, state.memory, memory_padding_mask=state.src_pad, kv_caches=state.self_caches,
                             cross_kv_caches=state.cross_caches, offset=state.position)
            logits, _ = self._head(h[:, -1:])                                   # (N,1,C) -> (N,1,V)
        state.position += 1
        return logits[:, 0]                                                     # (N,1,V) -> (N,V)

    def greedy_decode(self, src, max_new_tokens: int | None = None, eos_id: int | None = None):
        """The most likely next token at every step, with KV caches: src (B, S) -> (B, n) ids, the
        start token left out; stops early once every row has produced EOS (default: config.eos_id)."""
        c = self.config
        xp = backend.get_array_module(src)
        eos = c.eos_id if eos_id is None else eos_id
        steps = c.max_tgt_len if max_new_tokens is None else min(max_new_tokens, c.max_tgt_len)
        was_training = self.training
        self.eval()
        state = self.start_decoding(src)
        token = xp.full(src.shape[0], c.pad_id, dtype=src.dtype)               # the decoder starts at pad
        out, done = [], xp.zeros(src.shape[0], dtype=bool)
        for _ in range(steps):
            token = xp.argmax(self.decode_step(state, token), axis=-1).astype(src.dtype)   # (B,V) -> (B,)
            out.append(token)
            done |= token == eos
            if bool(done.all()):
                break
        self.train(was_training)
        return xp.stack(out, axis=1)                                            # (B, n)
    # --8<-- [end:t5_decoding]


@register("models.t5")
def _gradcheck_t5(device: str):
    results = []
    src = backend.to_device(np.array([[3, 4, 5, 1, 0], [6, 2, 1, 0, 0]]), device)      # padded sources
    tgt_in = backend.to_device(np.array([[0, 4, 5, 6], [0, 2, 3, 0]]), device)         # pad id starts
    tgt_out = backend.to_device(np.array([[4, 5, 6, 1], [2, 3, 1, IGNORE_INDEX]]), device)
    for label, options in (("t5 v1.0, relative", {}),
                           ("t5 v1.1, gated-gelu, untied", dict(feed_forward="gated-gelu", tie_embeddings=False)),
                           ("t5 sinusoidal", dict(position="sinusoidal"))):
        cfg = T5Config(vocab_size=7, max_src_len=6, max_tgt_len=5, n_layer=1, n_dec_layer=2, n_head=2,
                       d_model=8, num_buckets=8, max_distance=8, **options)
        model = T5Model(cfg, seed=3).to(device, "float64")
        results.append(check_module(f"models.t5[{label}]", model, [src, tgt_in, tgt_out],
                                    run=lambda m, s, i, o: m.forward(s, i, o)[1],
                                    backward=lambda m, d: m.backward(dloss=float(d)), eps=1e-5, max_coords=12))
    return results
