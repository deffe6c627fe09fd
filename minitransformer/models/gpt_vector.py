r"""A GPT that reads and writes vectors: the model of in-context regression (Garg et al. 2022).

The token embedding becomes a linear *read-in* and the tied output head a linear *read-out*; in
between sit the same causal pre-LN blocks as in `gpt.py`:

$$h_0 = X W_{in} + b_{in} + P, \qquad h_L = \mathrm{Block}_L \circ \dots \circ \mathrm{Block}_1(h_0),
  \qquad \hat Y = \mathrm{LN}(h_L)\, W_{out} + b_{out},$$

with $X$ of shape (B, T, n_in) real numbers and $\hat Y$ of shape (B, T, n_out). The loss is the
weighted mean squared error of ``nn/functional/squared_error.py``: the weights (B, T) say which
positions are predictions (in a prompt $x_1, y_1, \dots, x_k, y_k$ only the $x$ positions are).

Backward replays the forward in reverse: read-out, final LayerNorm, the blocks, positions, read-in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .. import backend
from ..blocks import EncoderBlock
from ..config import require_int
from ..gradcheck import register
from ..nn.checks import check_array
from ..nn.functional.squared_error import squared_error_backward, squared_error_forward
from ..nn.layernorm import LayerNorm
from ..nn.linear import Linear
from ..positional import LearnedPositionalEmbedding
from .model import Model
from .registry import register_model


@dataclass(frozen=True)
class VectorGPTConfig:
    n_in: int = 5                   # real numbers per input position (the read-in's width)
    n_out: int = 1                  # real numbers predicted per position (the read-out's width)
    block_size: int = 40            # T_max: the context length
    n_layer: int = 3                # L: number of blocks
    n_head: int = 2                 # H: attention heads per block
    d_model: int = 64               # C: width of the residual stream
    d_ff: int | None = None         # F: feed-forward width (None: 4 * d_model)

    def __post_init__(self):
        for name in ("n_in", "n_out", "block_size", "n_layer", "n_head", "d_model"):
            require_int(self, name, 1)
        if self.d_ff is not None:
            require_int(self, "d_ff", 1)
        if self.d_model % self.n_head:
            raise ValueError(f"VectorGPTConfig: d_model={self.d_model} is not divisible by n_head={self.n_head}")


@register_model("gpt-vector", VectorGPTConfig, "causal GPT over real vectors (linear read-in/read-out, "
                "squared error): in-context regression")
class VectorGPT(Model):
    """Causal Transformer from vectors (B, T, n_in) to vectors (B, T, n_out)."""

    def __init__(self, config: VectorGPTConfig, seed: int = 0):
        super().__init__()
        self.config = c = config
        rng = backend.host_rng(seed)
        residual_std = 0.02 / math.sqrt(2 * c.n_layer)
        self.read_in = Linear(c.n_in, c.d_model, rng=rng, std=0.02)
        self.wpe = LearnedPositionalEmbedding(c.block_size, c.d_model, rng=rng, std=0.02)
        self.blocks = [EncoderBlock(c.d_model, c.n_head, c.d_ff or 4 * c.d_model, norm="pre",
                                    max_len=c.block_size, rng=rng, out_std=residual_std)
                       for _ in range(c.n_layer)]
        self.ln_f = LayerNorm(c.d_model)
        self.read_out = Linear(c.d_model, c.n_out, rng=rng, std=0.02)
        self.cache = None

    # --8<-- [start:vector_gpt_forward]
    def forward(self, x, targets=None, weights=None):
        """x (B, T, n_in) -> predictions (B, T, n_out); with targets (B, T, n_out) and weights (B, T)
        also the weighted mean squared error."""
        c = self.config
        check_array(x, "VectorGPT input", ndim=3, last_dim=c.n_in, dtype=self.read_in.weight.dtype,
                    device=self.read_in.weight.device)
        if x.shape[1] > c.block_size:
            raise ValueError(f"VectorGPT input: {x.shape[1]} positions exceed block_size={c.block_size}")
        h = self.read_in(x)                                  # (B,T,n_in) @ (n_in,C) -> (B,T,C)
        h = self.wpe(h, 0)
        for block in self.blocks:
            h = block(h, causal=True)
        pred = self.read_out(self.ln_f(h))                   # (B,T,C) @ (C,n_out) -> (B,T,n_out)
        loss = mse_cache = None
        if targets is not None:
            self._check_targets(x, targets, weights)
            loss, mse_cache = squared_error_forward(pred, targets, weights)
        self.cache = (mse_cache,) if self.keep_cache else None
        return pred, loss
    # --8<-- [end:vector_gpt_forward]

    # --8<-- [start:vector_gpt_backward]
    def backward(self, dpred=None, dloss: float = 1.0):
        """Backpropagate from the loss scaled by dloss (dpred=None) or from a given dpred;
        returns dx (B, T, n_in). Gradients add into every Parameter.grad."""
        (mse_cache,) = self.saved_cache()
        if dpred is None:
            if mse_cache is None:
                raise ValueError("VectorGPT.backward(): the forward had no targets; pass dpred explicitly")
            dpred = squared_error_backward(dloss, mse_cache)  # (B, T, n_out)
        dh = self.ln_f.backward(self.read_out.backward(dpred))
        for block in reversed(self.blocks):
            dh = block.backward(dh)
        dh = self.wpe.backward(dh)
        return self.read_in.backward(dh)                     # (B,T,C) -> (B,T,n_in)
    # --8<-- [end:vector_gpt_backward]

    def _check_targets(self, x, targets, weights) -> None:
        c = self.config
        B, T, _ = x.shape
        check_array(targets, "VectorGPT targets", ndim=3, last_dim=c.n_out, dtype=x.dtype, device=self.device)
        if tuple(targets.shape) != (B, T, c.n_out):
            raise ValueError(f"VectorGPT targets: expected shape {(B, T, c.n_out)}, got {tuple(targets.shape)}")
        if weights is None:
            raise ValueError("VectorGPT: targets need weights (B, T) saying which positions are scored")
        check_array(weights, "VectorGPT weights", ndim=2, dtype=x.dtype, device=self.device)
        if tuple(weights.shape) != (B, T):
            raise ValueError(f"VectorGPT weights: expected shape {(B, T)}, got {tuple(weights.shape)}")


@register("models.VectorGPT")
def _gradcheck_vector_gpt(device: str):
    """The whole vector GPT and its squared-error loss, gradients of the input and of every weight."""
    from ..gradcheck import check_module
    cfg = VectorGPTConfig(n_in=3, n_out=2, block_size=6, n_layer=1, n_head=2, d_model=8, d_ff=12)
    model = VectorGPT(cfg, seed=9).to(device, "float64")
    rng = backend.host_rng(10)
    x = backend.to_device(rng.standard_normal((2, 5, 3)), device)
    y = backend.to_device(rng.standard_normal((2, 5, 2)), device)
    w = backend.to_device((rng.random((2, 5)) < 0.6).astype("float64"), device)
    return check_module("models.VectorGPT(squared error)", model, [x, y, w],
                        run=lambda m, a, t, ww: m.forward(a, t, ww)[1],
                        backward=lambda m, d: m.backward(dloss=float(d)), wrt_inputs=[0], eps=1e-5, max_coords=24)

