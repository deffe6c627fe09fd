r"""Activation checkpointing: keep a block's input, not its activations, and recompute in backward.

A block's backward needs what its forward computed: the attention probabilities
$(B, H, T, T)$, the feed-forward hidden layer $(B, T, 4C)$, every LayerNorm's normalised input, and
so on; for an $L$-block model all of them are alive at once, between the end of the forward and the
backward of the first block. A *checkpointed* block keeps only its input $x$ (one $(B,T,C)$ array)
during the forward, running it as in inference; its backward first runs the forward again, this
time keeping the activations, then the ordinary backward, which frees them. At any moment at most
one block's activations are alive (they are dropped after its backward): memory falls from about $L \cdot a$ to $L \cdot BTC + a$ (with
$a$ one block's activations) for the price of one more forward per block, about a third more
compute (Chen et al., 2016, "Training deep nets with sublinear memory cost").

The recomputation must see the same randomness: the block's dropout generators are copied before
the first forward and the copies draw the recomputed masks, so the gradient is the one of the
forward that produced the loss, to the last bit.
"""
from __future__ import annotations

import copy

from .. import backend
from ..blocks import DecoderBlock, EncoderBlock
from ..gradcheck import check_module, float64_inputs, register
from ..nn.dropout import Dropout


class RecomputedBlock:
    """Mixed in front of a block class: forward keeps the inputs only, backward recomputes."""

    _recompute_inputs = None

    def forward(self, *inputs, **options):
        if not self.keep_cache or options.get("kv_cache") is not None:    # inference: nothing to save
            return super().forward(*inputs, **options)
        generators = [(m, copy.deepcopy(m._rng)) for m in self.modules() if isinstance(m, Dropout)]
        with self.no_grad():                                     # no activations kept
            out = super().forward(*inputs, **options)
        self._recompute_inputs = (inputs, options, generators)
        return out

    # --8<-- [start:recompute_backward]
    def backward(self, dy):
        if self._recompute_inputs is None:
            raise RuntimeError(f"{type(self).__name__}.backward: no forward was kept (it ran inside "
                               "no_grad(), or backward was called twice)")
        inputs, options, generators = self._recompute_inputs
        self._recompute_inputs = None
        for dropout, saved in generators:                        # the same masks as the first forward
            dropout._rng = saved
        super().forward(*inputs, **options)                      # again, keeping the activations
        dx = super().backward(dy)
        _release_activations(self)                               # at most one block's alive at a time
        return dx
    # --8<-- [end:recompute_backward]


def _release_activations(block) -> None:
    """Drop what the block's layers kept for their backward (their `cache`, and the attention
    probabilities a dense kernel exposes as `last_weights`), now that the backward has used it."""
    for module in block.modules():
        if getattr(module, "cache", None) is not None:
            module.cache = None
        if "last_weights" in vars(module):                        # an attribute, not MHA's property
            module.last_weights = None


_classes: dict = {}


def recomputed_class(cls):
    """The class `cls` with RecomputedBlock in front (made once per class)."""
    if cls not in _classes:
        _classes[cls] = type(f"Recomputed{cls.__name__}", (RecomputedBlock, cls), {"__module__": __name__})
    return _classes[cls]


# --8<-- [start:checkpoint_blocks]
def checkpoint_blocks(model) -> int:
    """Turn every encoder and decoder block of `model` into one that recomputes its forward in
    backward (in place: parameter names, state_dict and outputs are unchanged); calling it again
    changes nothing. Returns how many blocks recompute."""
    count = 0
    for module in model.modules():
        if isinstance(module, (EncoderBlock, DecoderBlock)):
            if not isinstance(module, RecomputedBlock):        # already recomputed: left as it is
                module.__class__ = recomputed_class(type(module))
            count += 1
    if count == 0:
        raise ValueError(f"checkpoint_activations: {type(model).__name__} has no encoder or decoder blocks "
                         "to recompute")
    return count
# --8<-- [end:checkpoint_blocks]


@register("distributed.RecomputedBlock")
def _gradcheck_recomputed_block(device: str):
    """A checkpointed encoder block: its backward (recompute, then the block's own) against
    finite differences."""
    block = EncoderBlock(8, 2, 16, rng=backend.host_rng(5))
    checkpoint_blocks(block)
    block.to(device, "float64")
    (x,) = float64_inputs(device, 6, (2, 3, 8))
    return [check_module("distributed.RecomputedBlock", block, [x], run=lambda m, a: m.forward(a, causal=True))]
