r"""The pieces BERT adds to an encoder: its embeddings, the pooler and the two pretraining heads.

* **Embeddings** (``BertEmbeddings``): the sum of a word, a segment and a learned position vector,
  then LayerNorm and dropout. With a factorised size $E < C$ (ALBERT) the three tables are
  $E$ wide and a projection takes the sum to the model width:
  $e = \mathrm{LN}(A[x] + S[s] + P_t)\,B$, with $A \in \mathbb{R}^{V\times E}$,
  $B \in \mathbb{R}^{E\times C}$ — the lookup $\mathrm{onehot}(x)\,W$ of a $V\times C$ table with
  $W \approx A B$ factorised, $V E + E C$ parameters instead of $V C$.
* **Pooler** (``Pooler``): $p = \tanh(h_{\mathrm{[CLS]}} W_p + b_p)$, backward
  $dz = dp \odot (1 - p^2)$.
* **MLM head** (``MLMHead``): $z = \mathrm{LN}(\mathrm{GELU}(h W_t + b_t))$, logits
  $z A^\top + b_V$ through the *tied* word table $A$ with a bias of its own;
  $dA \mathrel{+}= (z^\top d\ell)^\top$ joins the lookup's gradient in the one Parameter.
* **NSP head** (``NSPHead``): two logits (IsNext, NotNext) from the pooled vector.

``share_parameters(copy, source)`` makes every Parameter of `copy` the very object of `source`
(ALBERT's cross-layer sharing): each copy keeps its own caches, and the gradients of all of them
add into the one ``.grad``.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np  # host side only (seeded init, test inputs); array math uses xp

from .. import backend
from ..gradcheck import check_functional, check_module, float64_inputs, register
from ..nn.activations import GELU
from ..nn.dropout import Dropout
from ..nn.embedding import Embedding
from ..nn.functional.linear import linear_backward, linear_forward
from ..nn.layernorm import LayerNorm
from ..nn.linear import Linear
from ..nn.module import Module, Parameter
from ..positional import LearnedPositionalEmbedding


class TanhCache(NamedTuple):
    y: Any          # tanh(x): the derivative 1 - y^2 needs only the output


def tanh_forward(x):
    """y = tanh(x)."""
    xp = backend.get_array_module(x)
    y = xp.tanh(x)
    return y, TanhCache(y)


def tanh_backward(dy, cache: TanhCache):
    # fwd: y = tanh(x)  =>  dx = dy (1 - y^2)
    return dy * (1.0 - cache.y * cache.y)


# --8<-- [start:embeddings]
class BertEmbeddings(Module):
    """tokens (B,T), segments (B,T) -> LN(word + segment + position) [-> projection E -> C]."""

    def __init__(self, vocab_size: int, max_len: int, d_model: int, d_embed: int | None = None,
                 n_segments: int = 2, dropout: float = 0.0, rng: np.random.Generator | None = None):
        super().__init__()
        rng = rng if rng is not None else backend.host_rng(0)
        E = d_embed or d_model
        self.word = Embedding(vocab_size, E, rng=rng, std=0.02)           # A: (V, E)
        self.segment = Embedding(n_segments, E, rng=rng, std=0.02)        # S: (2, E)
        self.position = LearnedPositionalEmbedding(max_len, E, rng=rng, std=0.02)
        self.ln = LayerNorm(E)
        self.drop = Dropout(dropout, seed=int(rng.integers(2**31 - 1)))
        # ALBERT's factorisation: a V x C table replaced by (V x E) @ (E x C)
        self.project = Linear(E, d_model, rng=rng, std=0.02) if E != d_model else None

    def forward(self, tokens, segments):
        x = self.word(tokens)                              # (B,T) -> (B,T,E)
        x += self.segment(segments)                        # + S[s], (B,T,E)
        x = self.position(x)                               # + P[0:T]
        x = self.drop(self.ln(x))
        return x if self.project is None else self.project(x)   # (B,T,E) @ (E,C) -> (B,T,C)

    def backward(self, dy):
        dx = dy if self.project is None else self.project.backward(dy)   # (B,T,C) -> (B,T,E)
        dx = self.ln.backward(self.drop.backward(dx))
        dx = self.position.backward(dx)
        self.segment.backward(dx)                          # fwd: x = A[t] + S[s] + P: each gets dx
        self.word.backward(dx)
        return None                                        # token ids have no gradient
# --8<-- [end:embeddings]


# --8<-- [start:pooler]
class Pooler(Module):
    """p = tanh(h[:, 0] W + b): the [CLS] vector that NSP and the classifiers read, (B,T,C) -> (B,C)."""

    def __init__(self, d_model: int, rng: np.random.Generator | None = None):
        super().__init__()
        self.dense = Linear(d_model, d_model, rng=rng, std=0.02)
        self.cache = None

    def forward(self, h):
        p, cache = tanh_forward(self.dense(h[:, 0]))       # (B,T,C) -> (B,C) at [CLS]
        self.cache = (cache, h.shape) if self.keep_cache else None
        return p

    def backward(self, dp):
        cache, shape = self.cache
        xp = backend.get_array_module(dp)
        dh = xp.zeros(shape, dtype=dp.dtype)               # only [CLS] feeds the pooler
        dh[:, 0] = self.dense.backward(tanh_backward(dp, cache))   # fwd: p = tanh(dense(h_0))
        return dh
# --8<-- [end:pooler]


# --8<-- [start:mlm_head]
class MLMHead(Module):
    """h (B,T,C) -> logits (B,T,V) = LN(GELU(h W_t + b_t)) A^T + b_V, A the word table (tied)."""

    def __init__(self, word_weight: Parameter, d_model: int, rng: np.random.Generator | None = None):
        super().__init__()
        V, E = word_weight.shape
        self.transform = Linear(d_model, E, rng=rng, std=0.02)     # (C, E)
        self.act = GELU()
        self.ln = LayerNorm(E)
        self.word_weight = word_weight                     # the embeddings' Parameter, not a copy
        self.bias = Parameter(np.zeros(V, np.float32))     # b_V: the decoder's own bias
        self.cache = None

    def forward(self, h):
        z = self.ln(self.act(self.transform(h)))           # (B,T,C) -> (B,T,E)
        logits, cache = linear_forward(z, self.word_weight.data.T, self.bias.data)   # (B,T,E) @ (E,V)
        self.cache = cache if self.keep_cache else None
        return logits

    def backward(self, dlogits):
        # fwd: logits = z A^T + b_V  =>  dz = dlogits A,  dA += (z^T dlogits)^T,  db_V = sum dlogits
        dz, dwt, db = linear_backward(dlogits, self.cache)
        self.word_weight.grad += dwt.T                     # (E,V) -> (V,E), added to the lookup's
        self.bias.grad += db
        return self.transform.backward(self.act.backward(self.ln.backward(dz)))
# --8<-- [end:mlm_head]


class NSPHead(Module):
    """pooled (B,C) -> (B,2) logits: 0 IsNext, 1 NotNext."""

    def __init__(self, d_model: int, rng: np.random.Generator | None = None):
        super().__init__()
        self.dense = Linear(d_model, 2, rng=rng, std=0.02)

    def forward(self, pooled):
        return self.dense(pooled)

    def backward(self, dlogits):
        return self.dense.backward(dlogits)


# --8<-- [start:share_parameters]
def share_parameters(copy: Module, source: Module) -> None:
    """Make every Parameter of `copy` the same object as the one at the same place in `source`
    (the two must have the same structure). `named_parameters` lists a shared Parameter once."""
    for name, value in vars(source).items():
        mine = getattr(copy, name)
        if isinstance(value, Parameter):
            setattr(copy, name, value)
        elif isinstance(value, Module):
            share_parameters(mine, value)
        elif isinstance(value, (list, tuple)):
            for a, b in zip(mine, value):
                if isinstance(b, Parameter):
                    raise TypeError("share_parameters: Parameters inside lists are not supported")
                if isinstance(b, Module):
                    share_parameters(a, b)
# --8<-- [end:share_parameters]


# -- gradient checks (float64) ------------------------------------------------------------------
def _ids(device, rng, high, shape):
    return backend.to_device(rng.integers(0, high, shape), device)


@register("bert.tanh")
def _gradcheck_tanh(device: str):
    (x,) = float64_inputs(device, 40, (3, 5), scale=2.0)
    return check_functional("bert.tanh", tanh_forward, tanh_backward, [x])


@register("bert.BertEmbeddings")
def _gradcheck_embeddings(device: str):
    rng = backend.host_rng(41)
    tokens, segments = _ids(device, rng, 9, (2, 4)), _ids(device, rng, 2, (2, 4))
    results = []
    for E in (None, 3):                                    # plain, and ALBERT's factorised E < C
        layer = BertEmbeddings(9, 6, 5, d_embed=E, rng=backend.host_rng(42)).to(device, "float64")
        layer.ln.weight.data[...] = backend.to_device(rng.standard_normal(E or 5) + 1.0, device)
        results.append(check_module(f"bert.BertEmbeddings(E={E or 'C'})", layer, [tokens, segments],
                                    run=lambda m, t, s: m.forward(t, s), backward=lambda m, d: m.backward(d),
                                    wrt_inputs=[]))
    return results


@register("bert.Pooler")
def _gradcheck_pooler(device: str):
    (h,) = float64_inputs(device, 43, (2, 3, 4), scale=3.0)    # large enough to reach tanh's bend
    layer = Pooler(4, rng=backend.host_rng(43)).to(device, "float64")
    layer.dense.weight.data *= 30                          # 0.02 init would leave tanh nearly linear
    return check_module("bert.Pooler", layer, [h])


@register("bert.MLMHead")
def _gradcheck_mlm_head(device: str):
    rng = backend.host_rng(44)
    results = []
    for E in (4, 3):                                       # E = C, and the factorised E < C
        word = Parameter((rng.standard_normal((7, E))).astype(np.float64))
        head = MLMHead(word, 4, rng=rng).to(device, "float64")
        head.transform.weight.data *= 30
        head.bias.data[...] = backend.to_device(rng.standard_normal(7), device)
        (h,) = float64_inputs(device, 45, (2, 3, 4))
        results.append(check_module(f"bert.MLMHead(tied decoder + bias, E={E})", head, [h]))
    return results


@register("bert.NSPHead")
def _gradcheck_nsp_head(device: str):
    (p,) = float64_inputs(device, 46, (3, 4))
    return check_module("bert.NSPHead", NSPHead(4, rng=backend.host_rng(46)).to(device, "float64"), [p])


@register("bert.share_parameters")
def _gradcheck_shared_layers(device: str):
    """Two Linears applied one after the other with one weight: y = (x W + b) W + b, whose
    gradient is the sum over both uses, dW = x^T dz + z^T dy."""
    class Twice(Module):
        def __init__(self):
            super().__init__()
            self.first, self.second = Linear(4, 4, rng=backend.host_rng(47)), Linear(4, 4, rng=backend.host_rng(48))
            share_parameters(self.second, self.first)

        def forward(self, x):
            return self.second(self.first(x))

        def backward(self, dy):
            return self.first.backward(self.second.backward(dy))

    (x,) = float64_inputs(device, 47, (2, 3, 4))
    return check_module("bert.share_parameters(Linear twice)", Twice().to(device, "float64"), [x])
