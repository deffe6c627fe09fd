r"""Factorising a model: turn its chosen Linear layers into low-rank ones.

:func:`factorize_model` swaps the Linears named by a list of targets for
:class:`~minitransformer.nn.lowrank.LowRankLinear` layers, fresh or from the truncated SVD of the
trained weights (:func:`~minitransformer.compress.svd.from_linear`). The layer itself lives with the
layers, in ``nn/lowrank.py``; the swapping is ``surgery.py``'s.
"""
from __future__ import annotations

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from .. import backend
from ..nn.lowrank import (LowRankCache, LowRankLinear, WeightView, check_rank, lowrank_linear_backward,
                          lowrank_linear_forward)
from ..nn.module import Module
from .surgery import DEFAULT_TARGETS, replace_linears
from .svd import from_linear

__all__ = ["LowRankCache", "LowRankLinear", "WeightView", "check_rank", "lowrank_linear_forward",
           "lowrank_linear_backward", "from_linear", "replace_linears", "factorize_model", "DEFAULT_TARGETS"]


# --8<-- [start:factorize_model]
def factorize_model(model: Module, rank: int, targets=DEFAULT_TARGETS, init: str = "random",
                    rng: np.random.Generator | None = None, seed: int = 0) -> list[str]:
    """Replace the Linears named by `targets` with rank-`rank` LowRankLinears, in place.

    init="random": fresh factors drawn from `rng` (or host_rng(seed)), scaled so that A @ B has the
    standard deviation of the weight it replaces (keeping e.g. GPT-2's residual scaling);
    init="svd": factors from the truncated SVD of the current weights (compressing a trained model).
    The new layers take the device and dtype of the layers they replace. Returns the names replaced.
    """
    if init not in ("random", "svd"):
        raise ValueError(f"factorize_model: init must be 'random' or 'svd', got {init!r}")
    rng = rng if rng is not None else backend.host_rng(seed)

    def make(name, linear):
        check_rank(rank, linear.in_features, linear.out_features, f"factorize_model({name})")
        if init == "svd":
            return from_linear(linear, rank)
        std = float(backend.to_numpy(linear.weight.data).std())
        layer = LowRankLinear(linear.in_features, linear.out_features, rank,
                              bias=linear.bias is not None, rng=rng, std=std)
        return layer.to(linear.weight.device, linear.weight.dtype)

    return replace_linears(model, targets, make)
# --8<-- [end:factorize_model]
