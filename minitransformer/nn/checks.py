"""Checks at the door: public entry points call these so bad input fails with a clear message
(what was expected, what came) instead of a broadcasting error deep inside the math."""
from __future__ import annotations

from .. import backend


def check_array(x, name: str, *, ndim=None, last_dim=None, dtype=None, device=None) -> None:
    """Raise TypeError/ValueError unless `x` is an array with the given properties.

    ndim may be an int or a tuple of allowed ints; dtype is compared exactly; device is 'cpu'/'cuda'.
    """
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            raise ValueError(f"{name}: expected {' or '.join(map(str, allowed))} dimensions, got shape {tuple(x.shape)}")
    if last_dim is not None and (x.ndim == 0 or x.shape[-1] != last_dim):
        raise ValueError(f"{name}: expected last dimension {last_dim}, got shape {tuple(x.shape)}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype}, got {x.dtype} (cast the input or call model.to(dtype=...))")
    if device is not None and backend.device_of(x) != device:
        raise ValueError(f"{name}: expected an array on {device!r}, got one on {backend.device_of(x)!r} "
                         "(move it with minitransformer.backend.to_device)")


def check_token_ids(idx, name: str, vocab_size: int, max_len: int | None = None) -> None:
    """Token ids: an integer array (B, T) with 0 <= id < vocab_size and T <= max_len."""
    check_array(idx, name, ndim=2)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer token ids, got dtype {idx.dtype}")
    if max_len is not None and idx.shape[1] > max_len:
        raise ValueError(f"{name}: sequence length {idx.shape[1]} exceeds the context length {max_len}")
    if idx.size:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(f"{name}: token ids must lie in [0, {vocab_size}), got values in [{lo}, {hi}]")


def check_targets(targets, name: str, n_classes: int, ignore_index: int, shape: tuple) -> None:
    """Class-id targets: integers of the given shape, each in [0, n_classes) or equal to ignore_index."""
    check_array(targets, name)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer class ids, got dtype {targets.dtype}")
    if tuple(targets.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(targets.shape)}")
    used = targets[targets != ignore_index]
    if used.size and (int(used.min()) < 0 or int(used.max()) >= n_classes):
        raise ValueError(f"{name}: class ids must lie in [0, {n_classes}) or equal ignore_index={ignore_index}, "
                         f"got values in [{int(used.min())}, {int(used.max())}]")
