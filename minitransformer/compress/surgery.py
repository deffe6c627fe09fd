"""Model surgery: find a model's sub-modules by dotted name and swap them for others.

Every compression method uses it: :func:`replace_linears` walks a model and swaps the Linear layers
whose dotted names match a list of targets for whatever a method makes of them (factors, int8
layers, LoRA adapters).
"""
from __future__ import annotations

from typing import Callable

from ..nn.linear import Linear
from ..nn.module import Module


def matches(name: str, targets) -> bool:
    """True when the dotted pieces of some target appear, contiguous, among the pieces of `name`:
    "attn.qkv" matches "blocks.0.attn.qkv", "ffn" matches "blocks.3.ffn.fc1"."""
    parts = name.split(".")
    for target in targets:
        t = target.split(".")
        if any(parts[i:i + len(t)] == t for i in range(len(parts) - len(t) + 1)):
            return True
    return False


def slots(module: Module, prefix: str = ""):
    """(dotted name, owner, key, child) for every Module reachable through attributes and lists;
    `owner[key]` (a list) or `setattr(owner, key, ...)` (a Module) replaces the child."""
    for attr, value in list(vars(module).items()):
        if isinstance(value, Module):
            yield f"{prefix}{attr}", module, attr, value
            yield from slots(value, f"{prefix}{attr}.")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, Module):
                    yield f"{prefix}{attr}.{i}", value, i, item
                    yield from slots(item, f"{prefix}{attr}.{i}.")


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
    found = [(n, owner, key, child) for n, owner, key, child in slots(model)
             if isinstance(child, kind) and matches(n, targets)]
    if not found:
        names = [n for n, _, _, c in slots(model) if isinstance(c, kind)]
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
