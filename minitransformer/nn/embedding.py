"""Embedding: a Module that owns the (V, C) table and calls the functional lookup."""
from __future__ import annotations

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from .. import backend
from ..gradcheck import check_module, register
from .checks import check_array, check_token_ids
from .functional.embedding import embedding_backward, embedding_forward
from .module import Module, Parameter


class Embedding(Module):
    """y = W[idx] for integer ids idx of shape (B, T); W has shape (num_embeddings, dim).

    Weights are drawn from N(0, std^2) on the host generator `rng`. For weight tying, a model
    uses ``self.weight`` as its output projection too (``linear_forward(h, W.T)``) and adds both
    gradients into the one Parameter.
    """

    def __init__(self, num_embeddings: int, dim: int, rng: np.random.Generator | None = None,
                 std: float = 0.02):
        super().__init__()
        if num_embeddings < 1 or dim < 1:
            raise ValueError(f"Embedding: expected num_embeddings >= 1 and dim >= 1, "
                             f"got {num_embeddings} and {dim}")
        rng = rng if rng is not None else backend.host_rng(0)
        self.num_embeddings, self.dim = num_embeddings, dim
        self.weight = Parameter((rng.standard_normal((num_embeddings, dim)) * std).astype(np.float32))
        self.cache = None

    def forward(self, idx):
        check_token_ids(idx, "Embedding input", self.num_embeddings)
        check_array(idx, "Embedding input", device=self.weight.device)
        y, cache = embedding_forward(idx, self.weight.data)
        self.cache = cache if self.keep_cache else None
        return y

    def backward(self, dy):
        _, dw = embedding_backward(dy, self.cache)
        self.weight.grad += dw
        return None   # integer ids have no gradient

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.dim}"


@register("nn.Embedding")
def _gradcheck_embedding(device: str):
    rng = backend.host_rng(2)
    results = []
    for V in (7, 300):     # the one-hot path and the add.at path
        layer = Embedding(V, 5, rng=rng, std=1.0).to(device, "float64")
        idx = backend.to_device(np.array([[1, 3, 1], [0, 6, 1]]), device)   # repeated ids add up
        results.append(check_module(f"nn.Embedding(V={V})", layer, [idx]))
    return results
