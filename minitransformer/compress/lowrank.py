r"""Model surgery: swap a model's Linear layers for other layers, and factorise them.

:func:`replace_linears` walks a model and swaps the Linear layers whose dotted names match a list of
targets; every compression method uses it. :func:`factorize_model` turns the chosen Linears into
:class:`~minitransformer.nn.lowrank.LowRankLinear` layers (fresh or from the truncated SVD of the
trained weights, :func:`from_linear`). The layer itself lives with the layers, in ``nn/lowrank.py``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from .. import backend
from ..nn.linear import Linear
from ..nn.lowrank import (LowRankCache, LowRankLinear, WeightView, check_rank, lowrank_linear_backward,
                          lowrank_linear_forward)
from ..nn.module import Module

__all__ = ["LowRankCache", "LowRankLinear", "WeightView", "check_rank", "lowrank_linear_forward",
           "lowrank_linear_backward", "from_linear", "replace_linears", "factorize_model", "DEFAULT_TARGETS"]


def from_linear(linear: Linear, rank: int) -> LowRankLinear:
    """The rank-K layer closest to `linear` in Frobenius and spectral norm (Eckart–Young):
    A = U_K sqrt(S_K), B = sqrt(S_K) V_K^T, bias copied. Same device and dtype as `linear`."""
    from .svd import truncated_factors  # svd.py imports this file; import here to avoid a cycle
    w = linear.weight.data
    check_rank(rank, *w.shape, "from_linear")
    a, b = truncated_factors(w, rank)
    layer = LowRankLinear(w.shape[0], w.shape[1], rank, bias=linear.bias is not None)
    layer.to(linear.weight.device, w.dtype)
    layer.a.data, layer.b.data = a.astype(w.dtype), b.astype(w.dtype)
    if linear.bias is not None:
        layer.bias.data = linear.bias.data.astype(w.dtype)   # astype copies
    return layer


# -- model surgery ----------------------------------------------------------------------------

def _matches(name: str, targets) -> bool:
    """True when the dotted pieces of some target appear, contiguous, among the pieces of `name`:
    "attn.qkv" matches "blocks.0.attn.qkv", "ffn" matches "blocks.3.ffn.fc1"."""
    parts = name.split(".")
    for target in targets:
        t = target.split(".")
        if any(parts[i:i + len(t)] == t for i in range(len(parts) - len(t) + 1)):
            return True
    return False


def _slots(module: Module, prefix: str = ""):
    """(dotted name, owner, key, child) for every Module reachable through attributes and lists;
    `owner[key]` (a list) or `setattr(owner, key, ...)` (a Module) replaces the child."""
    for attr, value in list(vars(module).items()):
        if isinstance(value, Module):
            yield f"{prefix}{attr}", module, attr, value
            yield from _slots(value, f"{prefix}{attr}.")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, Module):
                    yield f"{prefix}{attr}.{i}", value, i, item
                    yield from _slots(item, f"{prefix}{attr}.{i}.")


# --8<-- [start:replace_linears]
def replace_linears(model: Module, targets, make: Callable[[str, Linear], Module],
                    kind: type = Linear) -> list[str]:
    """Swap every `kind` (default Linear) sub-module whose dotted name matches one of `targets`
    for `make(name, layer)`; return the names replaced. Raises ValueError if nothing matched."""
    if isinstance(targets, str):
        targets = [targets]
    targets = list(targets)
    if not targets:
        raise ValueError("replace_linears: expected at least one target name, got none")
    found = [(n, owner, key, child) for n, owner, key, child in _slots(model)
             if isinstance(child, kind) and _matches(n, targets)]
    if not found:
        names = [n for n, _, _, c in _slots(model) if isinstance(c, kind)]
        raise ValueError(f"replace_linears: no {kind.__name__} matches targets {targets}; "
                         f"the model has {names[:12]}{' ...' if len(names) > 12 else ''}")
    for name, owner, key, child in found:
        new = make(name, child)
        if isinstance(owner, list):
            owner[key] = new
        else:
            setattr(owner, key, new)
    return [n for n, *_ in found]
# --8<-- [end:replace_linears]


DEFAULT_TARGETS = ("attn.qkv", "attn.proj", "ffn.fc1", "ffn.fc2")


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
