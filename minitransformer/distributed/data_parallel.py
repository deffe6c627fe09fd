r"""Data parallelism across processes: every rank its shard of the global batch, gradients summed.

Rank $r$ of $R$ holds a full copy of the model and runs the ordinary forward and backward on shard
$r$ of the global batch. With $n_r$ of the batch's $N$ counted targets on shard $r$,

$$\nabla_\theta \mathcal{L} = \sum_{r=0}^{R-1} \frac{n_r}{N}\, \nabla_\theta \mathcal{L}_r ,$$

so each rank runs its backward with ``dloss`` scaled by $n_r/N$ and an all-reduce (a sum) of the
gradients gives every rank the gradient of the whole batch. Every rank then takes the same optimizer
step from the same weights and the replicas never drift apart (up to the all-reduce giving every rank
the same bits, which MPI's reduction does: one fixed order of summation).

Every rank draws the *whole* global batch from the run's batch generator (same seed, same draws)
and keeps its own rows: a batch is a few integer arrays, cheap to draw, and the ranks need not talk
to agree on the data. The shard weights $n_r/N$ are computed from the same global batch on every
rank, so no extra communication is needed for them either.
"""
from __future__ import annotations

from ..nn.dropout import reseed_replica
from ..tasks.base import Task
from ..thread_parallel import shard_bounds
from .buckets import DEFAULT_BUCKET_BYTES, GradientBuckets


class DistributedDataParallel:
    """Split each global batch over the ranks of `comm`; `reduce_gradients` sums the gradients.

    The model's weights are broadcast from rank 0 at construction (every rank starts identical),
    and each rank's dropout draws its own masks (``reseed_replica``). `task` computes a shard's loss
    and gradient (``task.forward_backward``) and its number of targets (``task.counted``).
    """

    def __init__(self, model, comm, task=None, bucket_bytes: int = DEFAULT_BUCKET_BYTES):
        self.model, self.comm = model, comm
        self.task = task if task is not None else Task()
        self.params = [p for p in model.parameters() if p.requires_grad]
        for p in model.parameters():
            comm.broadcast_(p.data, root=0)
        reseed_replica(model, comm.rank)
        self.buckets = GradientBuckets(self.params, bucket_bytes)

    # --8<-- [start:ddp_shard]
    def forward_backward(self, batch, dloss: float = 1.0, run=None) -> float:
        """This rank's part of one global micro-batch: add ``dloss * n_r/N`` times its shard's
        gradient into Parameter.grad and return ``n_r/N`` times its shard's loss (the ranks' returns
        sum to the batch's mean loss). run(model, shard, dloss): how to compute a shard (default:
        ``task.forward_backward``)."""
        B = batch[0].shape[0]
        if B < self.comm.size:
            raise ValueError(f"the global batch of {B} sequences cannot be split over {self.comm.size} ranks; "
                             f"use a batch size of at least {self.comm.size}")
        shards = [tuple(a[lo:hi] for a in batch) for lo, hi in shard_bounds(B, self.comm.size)]
        counted = [self.task.counted(shard) for shard in shards]      # the same on every rank
        weight = counted[self.comm.rank] / max(sum(counted), 1)
        run = run if run is not None else self.task.forward_backward
        loss = run(self.model, shards[self.comm.rank], dloss * weight)
        return weight * loss
    # --8<-- [end:ddp_shard]

    def reduce_gradients(self) -> None:
        """Sum every gradient over the ranks (bucketed all-reduce)."""
        self.buckets.allreduce_(self.comm)

    def reduce_loss(self, local: float) -> float:
        """The sum over the ranks of their `forward_backward` returns (one small all-reduce)."""
        return self.comm.allreduce_scalar(local)

    def random_state(self) -> list:
        """Every rank's dropout generators (collective: all ranks call it), in rank order."""
        return self.comm.allgather_object(self.model.random_state())

    def set_random_state(self, states: list) -> bool:
        """Restore this rank's generators from what random_state() saved. A run saved with another
        number of ranks cannot continue every rank's masks: rank 0 keeps the model's saved stream,
        the others start fresh streams of their own; returns False then."""
        if len(states) != self.comm.size:
            reseed_replica(self.model, self.comm.rank)
            return False
        self.model.set_random_state(states[self.comm.rank])
        return True

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"{self.comm} (data parallel, {len(self.buckets)} gradient bucket(s))"
