r"""Gradients all-reduced in buckets: a few large messages instead of one per parameter.

A collective costs a fixed latency $\alpha$ per message plus $\beta$ per byte. A GPT has a dozen
parameters per block, many of them small vectors (biases, LayerNorm gains): all-reducing each on its
own pays $\alpha$ a hundred times per step. Copying consecutive gradients into flat buffers of at
most `bucket_bytes` and all-reducing each buffer pays it once per bucket, for the price of two copies
(pack, unpack), which run at memory speed. This is what PyTorch's DistributedDataParallel does
(25 MiB buckets), there also overlapping the all-reduce of a bucket with the backward of the layers
before it; here the buckets are reduced after the backward, one after the other.
"""
from __future__ import annotations

from .. import backend

DEFAULT_BUCKET_BYTES = 4 * 2 ** 20


def bucket_ranges(sizes: list[int], itemsize: int, bucket_bytes: int) -> list[tuple[int, int]]:
    """(first, stop) index ranges of consecutive entries of `sizes` whose bytes stay within
    bucket_bytes (an entry larger than that gets a bucket of its own)."""
    if bucket_bytes < 1:
        raise ValueError(f"bucket_bytes must be >= 1, got {bucket_bytes}")
    ranges, first, used = [], 0, 0
    for i, n in enumerate(sizes):
        if i > first and used + n * itemsize > bucket_bytes:
            ranges.append((first, i))
            first, used = i, 0
        used += n * itemsize
    if sizes:
        ranges.append((first, len(sizes)))
    return ranges


class GradientBuckets:
    """The gradients of `params` in flat buckets, each all-reduced as one message."""

    def __init__(self, params, bucket_bytes: int = DEFAULT_BUCKET_BYTES):
        self.params = list(params)
        if not self.params:
            raise ValueError("GradientBuckets: no parameters")
        xp = backend.get_array_module(self.params[0].grad)
        sizes = [p.grad.size for p in self.params]
        self.ranges = bucket_ranges(sizes, self.params[0].grad.dtype.itemsize, bucket_bytes)
        self.buffers = [xp.empty(sum(sizes[a:b]), dtype=self.params[0].grad.dtype) for a, b in self.ranges]

    # --8<-- [start:bucketed_allreduce]
    def allreduce_(self, comm) -> None:
        """Replace every gradient by its sum over the ranks of `comm`."""
        for (first, stop), flat in zip(self.ranges, self.buffers):
            group, offset = self.params[first:stop], 0
            for p in group:                                            # pack
                flat[offset:offset + p.grad.size] = p.grad.reshape(-1)  # (shape) -> (n,)
                offset += p.grad.size
            comm.allreduce_(flat)                                      # one message per bucket
            offset = 0
            for p in group:                                            # unpack
                p.grad[...] = flat[offset:offset + p.grad.size].reshape(p.grad.shape)  # (n,) -> shape
                offset += p.grad.size
    # --8<-- [end:bucketed_allreduce]

    def __len__(self) -> int:
        return len(self.ranges)
