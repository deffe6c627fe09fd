"""Train/validation split and random batches of (input, target) windows for language modelling."""
from __future__ import annotations

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp


def train_val_split(ids: np.ndarray, val_fraction: float = 0.1):
    """The first (1 - val_fraction) of the ids for training, the rest for validation."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    n = int(len(ids) * (1 - val_fraction))
    return ids[:n], ids[n:]


def get_batch(ids: np.ndarray, batch_size: int, block_size: int, rng: np.random.Generator):
    """B random windows: x = ids[s : s+T], y = ids[s+1 : s+T+1] (targets are inputs shifted by one).

    Returns host int64 arrays of shape (B, T); move them with backend.to_device.
    """
    if len(ids) <= block_size:
        raise ValueError(f"the text has {len(ids)} tokens, fewer than context length + 1 = "
                         f"{block_size + 1}; use a longer text or a smaller block_size")
    starts = rng.integers(0, len(ids) - block_size, size=batch_size)
    offsets = np.arange(block_size)
    x = ids[starts[:, None] + offsets]            # (B, 1) + (T,) -> (B, T)
    y = ids[starts[:, None] + offsets + 1]        # (B, T), shifted by one
    return x.astype(np.int64), y.astype(np.int64)
