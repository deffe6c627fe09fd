r"""T5's relative position bias: one learned scalar per (distance bucket, head), added to the scores.

For query position $i$ and key position $j$ the relative position is $n = j - i$. It is mapped to one
of $N_b$ buckets (32 in T5) and the head $h$ adds the learned scalar $W_{b(n), h}$ to its score:

$$S_{hij} = q_{hi}^\top k_{hj} + W_{b(j - i),\,h}.$$

The buckets (``relative_position_bucket``):

* **bidirectional** (the encoder): half the buckets for keys to the left ($n \le 0$), half for keys to
  the right ($n > 0$, offset by $N_b/2$); **causal** (the decoder): a key is never to the right, so all
  $N_b$ buckets go to $n \le 0$ (a positive $n$, masked anyway, falls into bucket 0);
* of the $N_d$ buckets of one direction ($N_b/2$ or $N_b$), the first $N_d/2$ hold the exact distances
  $0, 1, \dots, N_d/2 - 1$;
  the others cover the distances up to ``max_distance`` (128) logarithmically,

  $$b(d) = \tfrac{N_d}{2} + \Big\lfloor \frac{\log(2d / N_d)}{\log(2\,\text{max\_distance} / N_d)}
  \,\tfrac{N_d}{2} \Big\rfloor,$$

  clipped to $N_d - 1$: every distance beyond ``max_distance`` shares the last bucket.

Backward: the bias is a gather $B_{hij} = W_{b_{ij}, h}$, so its gradient is the scatter-add

$$dW_{b,h} = \sum_{(i,j):\, b_{ij} = b}\ \sum_{\text{batch}} dB_{hij},$$

computed as one matrix product with the one-hot matrix of the buckets (at most 32 rows). The table is
shared by every layer of a stack: the stack adds the layers' $dB$ first and scatters once.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from .. import backend
from ..gradcheck import check_functional, check_module, float64_inputs, register
from ..nn.module import Module, Parameter

NUM_BUCKETS = 32
MAX_DISTANCE = 128


# --8<-- [start:relative_position_bucket]
def relative_position_bucket(relative_position, bidirectional: bool, num_buckets: int = NUM_BUCKETS,
                             max_distance: int = MAX_DISTANCE):
    """The bucket (same shape, int64) of each relative position n = key - query."""
    xp = backend.get_array_module(relative_position)
    n = relative_position.astype(np.int64)
    bucket = xp.zeros(n.shape, dtype=np.int64)
    if bidirectional:
        num_buckets //= 2                                   # half for each direction
        bucket += (n > 0) * num_buckets                     # keys to the right: the upper half
        distance = xp.abs(n)
    else:
        distance = xp.maximum(-n, 0)                        # only keys to the left (n <= 0) count
    max_exact = num_buckets // 2
    # log(0) guarded: distances under max_exact take the exact branch, never the logarithm's value
    log_ratio = xp.log(xp.maximum(distance, 1) / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(np.int64)
    large = xp.minimum(large, num_buckets - 1)              # beyond max_distance: the last bucket
    bucket += xp.where(distance < max_exact, distance, large)
    return bucket
# --8<-- [end:relative_position_bucket]


def bucket_table(T: int, S: int, offset: int, bidirectional: bool, num_buckets: int, max_distance: int,
                 device: str = "cpu"):
    """(T, S) buckets of queries at positions offset..offset+T-1 against keys at 0..S-1."""
    xp = backend.xp_for(device)
    relative = xp.arange(S)[None, :] - (offset + xp.arange(T))[:, None]   # (1,S) - (T,1) -> (T,S), j - i
    return relative_position_bucket(relative, bidirectional, num_buckets, max_distance)


class RelativeBiasCache(NamedTuple):
    buckets: Any     # (T, S) the bucket of each (query, key) pair
    n_buckets: int


# --8<-- [start:relative_bias_pair]
def relative_bias_forward(table, buckets):
    """B[0, h, i, j] = table[buckets[i, j], h]: table (N_b, H), buckets (T, S) -> (1, H, T, S)."""
    xp = backend.get_array_module(table)
    bias = xp.take(table, buckets, axis=0)                 # (N_b,H) at (T,S) -> (T,S,H)
    bias = bias.transpose(2, 0, 1)[None]                   # (T,S,H) -> (1,H,T,S)
    return bias, RelativeBiasCache(buckets, table.shape[0])


def relative_bias_backward(dbias, cache: RelativeBiasCache):
    """Returns (dtable, None) for dbias (B or 1, H, T, S): the batch summed, then scattered by bucket."""
    xp = backend.get_array_module(dbias)
    H = dbias.shape[1]
    d = dbias.sum(axis=0).reshape(H, -1)                   # (B,H,T,S) -> (H,T*S)
    flat = cache.buckets.reshape(-1)                       # (T,S) -> (T*S,)
    # fwd: B[h,i,j] = W[b_ij, h]  =>  dW[b, h] = sum over (i,j) with b_ij = b of dB[h,i,j]
    onehot = (flat == xp.arange(cache.n_buckets)[:, None]).astype(dbias.dtype)   # (N_b,1) vs (T*S,) -> (N_b,T*S)
    return onehot @ d.T, None                              # (N_b,T*S) @ (T*S,H) -> (N_b,H)
# --8<-- [end:relative_bias_pair]


class RelativePositionBias(Module):
    """The learned (num_buckets, n_head) table of one stack; forward(T, S, offset) -> (1, H, T, S).

    One instance serves every layer of a stack: the stack calls forward once per pass and backward
    once with the sum of the layers' bias gradients. Initialised N(0, std^2); T5 and the model here use std = C^-1/2.
    """

    def __init__(self, n_head: int, bidirectional: bool, num_buckets: int = NUM_BUCKETS,
                 max_distance: int = MAX_DISTANCE, rng: np.random.Generator | None = None, std: float = 1.0):
        super().__init__()
        if not isinstance(num_buckets, int) or num_buckets < 4 or num_buckets % 2:
            raise ValueError(f"RelativePositionBias: num_buckets must be an even int >= 4, got {num_buckets!r}")
        exact = num_buckets // (4 if bidirectional else 2)
        if not isinstance(max_distance, int) or max_distance <= exact:
            raise ValueError(f"RelativePositionBias: max_distance must be an int > {exact} (the exact "
                             f"buckets of {num_buckets} {'bidirectional' if bidirectional else 'causal'} "
                             f"buckets), got {max_distance!r}")
        rng = rng if rng is not None else backend.host_rng(0)
        self.n_head, self.bidirectional = n_head, bidirectional
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.weight = Parameter((rng.standard_normal((num_buckets, n_head)) * std).astype(np.float32))
        self._buckets = {}
        self.cache = None

    def buckets(self, T: int, S: int, offset: int = 0):
        """The (T, S) bucket table on the table's device, kept per (T, S, offset, device)."""
        key = (T, S, offset, self.weight.device)
        if key not in self._buckets:
            if len(self._buckets) > 64:
                self._buckets.clear()
            self._buckets[key] = bucket_table(T, S, offset, self.bidirectional, self.num_buckets,
                                              self.max_distance, self.weight.device)
        return self._buckets[key]

    def forward(self, T: int, S: int, offset: int = 0):
        """Bias (1, H, T, S) for T queries at positions offset.. against S keys at positions 0.."""
        if T < 1 or S < 1 or offset < 0:
            raise ValueError(f"RelativePositionBias: expected T, S >= 1 and offset >= 0, got T={T}, S={S}, "
                             f"offset={offset}")
        bias, cache = relative_bias_forward(self.weight.data, self.buckets(T, S, offset))
        self.cache = cache if self.keep_cache else None
        return bias

    def backward(self, dbias):
        if self.cache is None:
            raise RuntimeError("RelativePositionBias.backward: no forward pass was cached")
        dtable, _ = relative_bias_backward(dbias, self.cache)
        self.weight.grad += dtable
        return None

    def extra_repr(self) -> str:
        kind = "bidirectional" if self.bidirectional else "causal"
        return f"n_head={self.n_head}, {kind}, buckets={self.num_buckets}, max_distance={self.max_distance}"


# -- gradient checks (float64) ------------------------------------------------------------------
@register("attention.relative_bias")
def _gradcheck_relative_bias(device: str):
    results = []
    for bidirectional in (True, False):
        buckets = bucket_table(5, 7, 2, bidirectional, 8, 16, device)    # small table: buckets repeat
        (table,) = float64_inputs(device, 40, (8, 3))
        results.append(check_functional(f"attention.relative_bias_forward[bidirectional={bidirectional}]",
                                        relative_bias_forward, relative_bias_backward, [table, buckets],
                                        wrt=[0]))
        module = RelativePositionBias(2, bidirectional, 8, 16, rng=backend.host_rng(41)).to(device, "float64")
        results.append(check_module(f"attention.RelativePositionBias[bidirectional={bidirectional}]", module,
                                    [], run=lambda m: m.forward(4, 6, 0), backward=lambda m, d: m.backward(d)))
    return results
