r"""An LSTM language model: the recurrent baseline the Transformer replaced.

Token embedding -> L stacked LSTM layers (dropout between them) -> a linear head to the vocabulary,

$$x^{(0)}_t = W_{te}[\text{idx}_t],\qquad (h^{(l)}_t, c^{(l)}_t) = \mathrm{LSTM}_l\big(x^{(l-1)}_t,
  h^{(l)}_{t-1}, c^{(l)}_{t-1}\big),\qquad \text{logits}_t = h^{(L)}_t W_{out} + b_{out}.$$

It has no context length of its own: everything it knows about the past is in the $2LC$ numbers
of its states. ``block_size`` is the length of the training windows (every window starts from zero
states) and the window `generate` keeps when it recomputes. For decoding, the role of the KV cache
is played by `RecurrentStateCache`, which holds the states after the tokens seen so far: each new
token costs one step of every layer, whatever the length of the text.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import backend
from ..config import require_int
from ..gradcheck import check_module, register
from ..nn.checks import check_array, check_targets, check_token_ids
from ..nn.dropout import Dropout
from ..nn.embedding import Embedding
from ..nn.functional.cross_entropy import cross_entropy_forward
from ..nn.linear import Linear
from ..nn.recurrent import LSTM, LSTMState
from .model import IGNORE_INDEX, Model
from .registry import register_model


@dataclass(frozen=True)
class LSTMConfig:
    vocab_size: int = 96            # V: tokens in the vocabulary (set from the tokenizer)
    block_size: int = 64            # T: length of the training windows (not a limit of the model)
    n_layer: int = 2                # L: stacked LSTM layers
    d_model: int = 128              # C: width of the embedding and of every state h, c
    dropout: float = 0.0            # on the input of every layer and on the last layer's output
    forget_bias: float = 1.0        # initial bias of the forget gate (1: remember by default)

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "d_model"):
            require_int(self, name, 1)
        if not 0 <= self.dropout < 1:
            raise ValueError(f"LSTMConfig.dropout must lie in [0, 1), got {self.dropout}")
        if isinstance(self.forget_bias, bool) or not isinstance(self.forget_bias, (int, float)):
            raise ValueError(f"LSTMConfig.forget_bias must be a number, got {self.forget_bias!r}")


class RecurrentStateCache:
    """The recurrent counterpart of a KV cache: the (h, c) of every layer after `length` tokens.

    `generate` reads ``length`` and calls ``reset()``, exactly as with a KVCache; a step costs the
    same whatever the length, because the past is summarised in a fixed-size state.
    """

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.states: list[LSTMState] | None = None
        self.length = 0

    def reset(self) -> None:
        self.states, self.length = None, 0

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return f"RecurrentStateCache(length={self.length}, batch={self.batch_size})"


@register_model("lstm", LSTMConfig, "LSTM language model, the recurrent baseline (char-level text)")
class LSTMLanguageModel(Model):
    """Embedding, L LSTM layers, linear head; forward(idx, targets=None, kv_caches=None)."""

    can_generate = True
    supports_kv_cache = True        # the recurrent state is the cache

    def __init__(self, config: LSTMConfig, seed: int = 0):
        super().__init__()
        self.config = c = config
        rng = backend.host_rng(seed)
        self.wte = Embedding(c.vocab_size, c.d_model, rng=rng, std=1.0)
        self.layers = [LSTM(c.d_model, c.d_model, forget_bias=float(c.forget_bias), rng=rng)
                       for _ in range(c.n_layer)]
        self.drops = [Dropout(c.dropout, seed=seed + 1 + l) for l in range(c.n_layer + 1)]
        self.head = Linear(c.d_model, c.vocab_size, rng=rng)
        self.cache = None

    # --8<-- [start:lstm_lm_forward]
    def forward(self, idx, targets=None, kv_caches=None, ignore_index: int = IGNORE_INDEX):
        """idx (B, T) int -> logits (B, T, V); with targets (B, T) also the mean cross-entropy.

        kv_caches: [RecurrentStateCache] to continue from the states it holds (and update them).
        """
        c = self.config
        check_token_ids(idx, "LSTM input idx", c.vocab_size)
        check_array(idx, "LSTM input idx", ndim=2, device=self.wte.weight.device)
        memory = self._state_cache(kv_caches, idx.shape[0])
        x = self.wte(idx)                                      # (B, T) -> (B, T, C)
        finals = []
        for l, layer in enumerate(self.layers):
            start = memory.states[l] if memory is not None and memory.states else None
            x, final = layer(self.drops[l](x), start)          # (B, T, C) -> (B, T, C)
            finals.append(LSTMState(final.h.copy(), final.c.copy()))   # not views that pin hs, cs
        x = self.drops[-1](x)
        logits = self.head(x)                                  # (B, T, C) @ (C, V) -> (B, T, V)
        if memory is not None:
            memory.states, memory.length = finals, memory.length + idx.shape[1]
        loss = ce_cache = None
        if targets is not None:
            check_targets(targets, "LSTM targets", c.vocab_size, ignore_index, idx.shape)
            loss, ce_cache = cross_entropy_forward(logits, targets, ignore_index=ignore_index)
        self.cache = (ce_cache,) if self.keep_cache else None    # the layers keep their own caches
        return logits, loss
    # --8<-- [end:lstm_lm_forward]

    # --8<-- [start:lstm_lm_backward]
    def backward(self, dlogits=None, dloss: float = 1.0):
        """Backpropagate from the loss scaled by dloss (or from dlogits): the forward in reverse.
        Gradients stop at the initial states (zero, or a cache's states)."""
        (ce_cache,) = self.saved_cache()
        dlogits = self.output_gradient(dlogits, dloss, ce_cache)       # (B, T, V)
        dx = self.drops[-1].backward(self.head.backward(dlogits))      # (B, T, V) -> (B, T, C)
        for l in reversed(range(len(self.layers))):
            dx, _ = self.layers[l].backward(dx)                        # BPTT through layer l
            dx = self.drops[l].backward(dx)
        self.wte.backward(dx)
    # --8<-- [end:lstm_lm_backward]

    def make_kv_caches(self, batch_size: int):
        """[RecurrentStateCache]: one object holds every layer's state (generate reads caches[0])."""
        return [RecurrentStateCache(batch_size)]

    @staticmethod
    def _state_cache(kv_caches, B: int):
        if not kv_caches:
            return None
        memory = kv_caches[0]
        if not isinstance(memory, RecurrentStateCache):
            raise TypeError(f"LSTM kv_caches: expected [RecurrentStateCache] (from make_kv_caches), got "
                            f"{type(memory).__name__}")
        if memory.batch_size != B:
            raise ValueError(f"LSTM kv_caches: the cache holds states of batch {memory.batch_size}, the "
                             f"input has batch {B}")
        return memory


@register("models.lstm")
def _gradcheck_lstm_lm(device: str):
    """The whole LSTM language model (2 layers, T = 4): BPTT through both layers in context."""
    cfg = LSTMConfig(vocab_size=9, block_size=8, n_layer=2, d_model=5)
    model = LSTMLanguageModel(cfg, seed=3).to(device, "float64")
    rng = backend.host_rng(4)
    idx = backend.to_device(rng.integers(0, 9, (2, 4)), device)
    targets = backend.to_device(rng.integers(0, 9, (2, 4)), device)
    return check_module("models.lstm[L=2, T=4, C=5]", model, [idx, targets],
                        run=lambda m, i, t: m.forward(i, t)[1],
                        backward=lambda m, d: m.backward(dloss=float(d)), eps=1e-5, max_coords=24)
