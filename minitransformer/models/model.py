"""The model contract: what the training loop, checkpoints, `generate` and `compress` rely on.

A model is a Module (forward, backward, parameters, buffers, state_dict, to, train/eval) built from a
frozen config dataclass, and registered by a short name (its *kind*, see ``registry.py``):

* ``forward(*inputs, targets)`` returns ``(output, loss)``; the loss is the mean over the targets
  that are not ``IGNORE_INDEX`` (None without targets). ``backward(dout=None, dloss=1.0)``
  backpropagates from the loss scaled by ``dloss`` (or from a given gradient of the output) and adds
  into every ``Parameter.grad``.
* ``config`` is the dataclass it was built from; ``describe()`` gives ``{"kind", "config"}`` as plain
  JSON, which is all a checkpoint needs to build the same model again.
* ``can_generate`` says whether ``minitransformer.generate`` may sample from it: a causal language
  model with ``forward(idx, kv_caches=...)``, ``config.block_size``, ``supports_kv_cache`` and
  ``make_kv_caches``.

Models know no training, checkpoints, tokenizers, configuration files or compression.
"""
from __future__ import annotations

from ..config import to_dict
from ..nn.functional.cross_entropy import cross_entropy_backward
from ..nn.loss import IGNORE_INDEX
from ..nn.module import Module

__all__ = ["IGNORE_INDEX", "Model"]


# --8<-- [start:model_contract]
class Model(Module):
    """Base class of every registered model family."""

    kind = "model"          # set by @register_model
    can_generate = False    # causal LMs that `generate` can sample from set this True

    def describe(self) -> dict:
        """{"kind": registered name, "config": the config as a JSON-able dict}."""
        return {"kind": self.kind, "config": to_dict(self.config)}

    def saved_cache(self):
        """The cache of the last forward, or a clear error when there is none to backpropagate."""
        if self.cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called without a forward pass that kept its cache")
        return self.cache

    def output_gradient(self, dlogits, dloss: float, ce_cache):
        """The gradient backward starts from: the caller's `dlogits`, or else dloss times the
        cross-entropy's own gradient softmax - onehot (which needs a forward with targets)."""
        if dlogits is not None:
            return dlogits
        if ce_cache is None:
            raise ValueError(f"{type(self).__name__}.backward(): the forward had no targets; pass dlogits explicitly")
        dlogits, _ = cross_entropy_backward(dloss, ce_cache)
        return dlogits
# --8<-- [end:model_contract]
