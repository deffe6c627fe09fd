r"""Attention with a score bias handed in from outside: the GPT's T5 relative position bias.

``GPTConfig(positional="t5_bias")`` gives the GPT one causal T5 table $W$ (``relative_bias.py``,
$N_b$ buckets by $H$ heads) that every layer reads. Per forward pass the model computes the bias
$P_{hij} = W_{b(j - i), h}$ once and gives it to each layer's kernel, which adds it to its scores:

$$S^{(l)} = s\,Q^{(l)} K^{(l)\top} + P + M, \qquad s = 1/\sqrt{D}.$$

The score bias and its gradient are ``t5_attention.biased_attention_forward/backward``: the kernel's
backward returns $(dQ, dK, dV)$ like every kernel, and keeps $dP^{(l)}$ (the score gradient summed
over the batch) in ``bias_grad`` for the model to collect. The model adds the layers' $dP^{(l)}$ and
scatters the sum into the table once.

This kernel is not in the registry (``kernel_names()``): without a model that hands it a bias it has
nothing to add, so it refuses to run.
"""
from __future__ import annotations

from .. import backend
from ..gradcheck import check_module, float64_inputs, register
from .kernel import AttentionKernel
from .masks import attention_mask
from .t5_attention import biased_attention_backward, biased_attention_forward


# --8<-- [start:shared_bias_kernel]
class SharedBiasAttention(AttentionKernel):
    """Softmax attention plus the bias of ``set_position_bias`` (1, H, T, S); backward keeps dbias."""

    kernel_name = "t5_bias"

    def __init__(self, n_head: int, head_dim: int, max_len: int | None = None, rng=None,
                 scale: float | None = None):
        super().__init__(n_head, head_dim, max_len, rng)
        self.scale = head_dim ** -0.5 if scale is None else scale
        self.position_bias = None      # set by the model before every forward
        self.bias_grad = None          # dP of the last backward, (1, H, T, S)
        self.last_weights = None

    def set_position_bias(self, bias) -> None:
        self.position_bias = bias

    def attend(self, q, k, v, causal, key_valid):
        B, H, T, _ = q.shape
        S = k.shape[2]
        bias = self.position_bias
        if bias is None:
            raise RuntimeError("SharedBiasAttention: no position bias was set; the kernel serves "
                               "GPTConfig(positional='t5_bias'), whose model sets it every pass")
        if tuple(bias.shape) != (1, H, T, S):
            raise ValueError(f"SharedBiasAttention: the position bias must have shape (1, {H}, {T}, {S}), "
                             f"got {tuple(bias.shape)}")
        mask = attention_mask(T, S, causal and T > 1, None if key_valid is None else ~key_valid,
                              device=backend.device_of(q))                  # bottom-right causal
        out, cache = biased_attention_forward(q, k, v, bias, mask, self.scale)   # (B,H,T,D)
        self.cache = cache if self.keep_cache else None
        self.last_weights = cache.softmax.y if self.keep_cache else None    # (B,H,T,S)
        return out

    def backward(self, dout):
        dq, dk, dv, dbias, _ = biased_attention_backward(dout, self.saved_cache())
        self.cache = None
        self.bias_grad = dbias                                              # (1,H,T,S), batch summed
        return dq, dk, dv
# --8<-- [end:shared_bias_kernel]

    def extra_repr(self) -> str:
        return f"n_head={self.n_head}, head_dim={self.head_dim}, bias from the model"


# -- gradient checks (float64) ------------------------------------------------------------------
@register("attention.SharedBiasAttention")
def _gradcheck_shared_bias(device: str):
    """q, k, v through the kernel (the bias's own gradient: models.GPT(relative bias))."""
    q, k, v, bias = float64_inputs(device, 60, (2, 2, 4, 3), (2, 2, 4, 3), (2, 2, 4, 3), (1, 2, 4, 4))
    kernel = SharedBiasAttention(2, 3).to(device, "float64")
    kernel.set_position_bias(bias)
    return [check_module("attention.SharedBiasAttention[causal]", kernel, [q, k, v],
                         run=lambda m, *a: m.forward(*a, causal=True))]
