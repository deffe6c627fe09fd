r"""A sequence classifier: an encoder read out at position 0 (the [CLS] token).

$$h = \mathrm{Encoder}(E[x]), \qquad \text{logits} = h_0 W + b, \qquad
  \mathcal{L} = -\frac{1}{B}\sum_b \log \mathrm{softmax}(\text{logits}_b)_{y_b}.$$

No positional encoding by default: the long-range retrieval task (``data/long_range.py``) asks the
attention to find a token by its content. Only position 0 feeds the head, so the gradient entering
the encoder is zero at every other position.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np  # host side only (seeded init, test inputs); array math uses xp

from .. import backend
from ..blocks import Encoder
from ..config import require_int
from ..gradcheck import check_module, register
from ..nn.checks import check_targets, check_token_ids
from ..nn.embedding import Embedding
from ..nn.functional.cross_entropy import cross_entropy_forward
from ..nn.linear import Linear
from .model import IGNORE_INDEX, Model
from .registry import register_model


@dataclass(frozen=True)
class ClassifierConfig:
    vocab_size: int = 32            # V: input tokens
    n_classes: int = 8              # classes of the label
    max_len: int = 64               # T_max: the longest input
    n_layer: int = 1                # L: encoder blocks
    n_head: int = 2                 # H
    d_model: int = 32               # C
    attention: str = "dense"        # attention kernel by name
    attention_options: dict = field(default_factory=dict)  # options of that kernel

    def __post_init__(self):
        for name in ("vocab_size", "n_classes", "max_len", "n_layer", "n_head", "d_model"):
            require_int(self, name, 1)
        if self.d_model % self.n_head:
            raise ValueError(f"ClassifierConfig: d_model={self.d_model} is not divisible by n_head={self.n_head}")


@register_model("classifier", ClassifierConfig, "encoder read out at [CLS] (sequence classification)")
class SequenceClassifier(Model):
    """Embedding -> Encoder -> Linear on position 0."""

    def __init__(self, config: ClassifierConfig, seed: int = 0):
        super().__init__()
        self.config = c = config
        rng = backend.host_rng(seed)
        self.embed = Embedding(c.vocab_size, c.d_model, rng=rng, std=1.0)
        self.encoder = Encoder(c.n_layer, c.d_model, c.n_head, attention=c.attention,
                               attention_options=dict(c.attention_options), max_len=c.max_len, rng=rng)
        self.head = Linear(c.d_model, c.n_classes, rng=rng)
        self.cache = None

    def forward(self, tokens, labels=None):
        """tokens (B, T) -> logits (B, n_classes); with labels (B,) also the mean cross-entropy."""
        c = self.config
        check_token_ids(tokens, "classifier input", c.vocab_size, c.max_len)
        h = self.encoder(self.embed(tokens))              # (B,T) -> (B,T,C)
        logits = self.head(h[:, 0])                        # (B,C) -> (B,n_classes) at [CLS]
        loss = ce_cache = None
        if labels is not None:
            check_targets(labels, "classifier labels", c.n_classes, IGNORE_INDEX, tokens.shape[:1])
            loss, ce_cache = cross_entropy_forward(logits, labels)
        self.cache = (h.shape, ce_cache) if self.keep_cache else None
        return logits, loss

    def backward(self, dlogits=None, dloss: float = 1.0):
        shape, ce_cache = self.saved_cache()
        dlogits = self.output_gradient(dlogits, dloss, ce_cache)   # dL/dlogits, (B, n_classes)
        xp = backend.get_array_module(dlogits)
        dh = xp.zeros(shape, dtype=dlogits.dtype)          # only [CLS] feeds the head
        dh[:, 0] = self.head.backward(dlogits)             # fwd: logits = head(h[:, 0])
        self.embed.backward(self.encoder.backward(dh))


@register("models.SequenceClassifier")
def _gradcheck_classifier(device: str):
    cfg = ClassifierConfig(vocab_size=7, n_classes=3, max_len=5, d_model=8, n_head=2)
    model = SequenceClassifier(cfg, seed=2).to(device, "float64")
    rng = np.random.default_rng(3)
    tokens = backend.to_device(rng.integers(0, 7, (2, 5)), device)
    labels = backend.to_device(np.array([2, 0]), device)
    return check_module("models.SequenceClassifier", model, [tokens, labels],
                        run=lambda m, t, y: m.forward(t, y)[1],
                        backward=lambda m, d: m.backward(dloss=float(d)), eps=1e-5, max_coords=24)
