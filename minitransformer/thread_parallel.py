r"""Data parallelism across threads of one process (CPU).

NumPy lets go of Python's global interpreter lock inside every array operation, so two Python
threads that each run a forward and backward pass keep two cores busy: while one thread is between
operations (in Python, holding the lock), the other is inside a matrix product or an exponential.
This module splits a batch into $R$ shards and runs them at the same time on $R$ *replicas* of the
model: Module objects of their own (each keeps its own activations for its backward, and its own
gradients) whose parameters are the very arrays of the model, so an optimizer step on the model is
seen by every replica without copying anything.

With shard $r$ holding $n_r$ of the $N$ counted targets, the loss of the batch and its gradient are

$$\mathcal{L} = \sum_{r} \frac{n_r}{N}\,\mathcal{L}_r,\qquad
\nabla_\theta \mathcal{L} = \sum_r \frac{n_r}{N}\,\nabla_\theta \mathcal{L}_r ,$$

so each replica runs its backward with ``dloss`` scaled by $n_r / N$ and the model's gradient is the
sum of theirs: the gradient of the whole batch, up to float rounding (the sums are taken in another
order). Replica 0 is the model itself; the others add their gradients into it after the pass.

During the pass the host BLAS is held to one thread, so that $R$ threads use $R$ cores instead of
$R$ times BLAS's own threads. What the threads win is the work BLAS does not parallelise: the
elementwise operations NumPy runs on one core, and the attention's many small matrix products. What
they pay is the lock: every replica runs all of the model's Python-level operations, one thread at a
time. So a model gains only when its arrays are large enough (`auto_threads`). The multi-process
`DataParallel` (``parallel.py``) does the same with processes, at the price of copying weights and
gradients through shared memory every step.
"""
from __future__ import annotations

import copy
import os
from concurrent.futures import ThreadPoolExecutor

from . import backend
from .nn.dropout import reseed_replica
from .tasks.base import Task


# Every replica runs as many Python-level operations as the whole model would (only the arrays are
# smaller), and those run one thread at a time under the interpreter lock. So threads pay off only
# when each shard's arrays are large enough for the array work to dominate: at least this many
# activation elements (sequences x positions x width) per thread: the upper end of the break-even
# measured in docs/figures/tables/data_parallel_sizes.md; past a few threads they mostly wait for it.
MIN_ELEMENTS_PER_THREAD = 32768
MAX_AUTO_THREADS = 4


def available_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def auto_threads(batch_size: int, block_size: int, d_model: int) -> int:
    """The trainer's default thread count: one per core, but at most one per sequence of the batch,
    at most MAX_AUTO_THREADS, and only as many as give each thread MIN_ELEMENTS_PER_THREAD activation
    elements (a small model trains fastest on one thread)."""
    by_size = batch_size * block_size * d_model // MIN_ELEMENTS_PER_THREAD
    return max(1, min(available_cores(), batch_size, MAX_AUTO_THREADS, by_size))


def shard_bounds(batch: int, shards: int) -> list[tuple[int, int]]:
    """(start, stop) of `shards` contiguous, nearly equal row ranges of a batch (none empty)."""
    shards = max(1, min(shards, batch))
    base, extra = divmod(batch, shards)
    bounds, start = [], 0
    for r in range(shards):
        stop = start + base + (r < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


def _replica(model, index: int):
    """A copy of `model` for thread `index`: its own Modules, caches and gradients; dropout draws
    its own masks (a seed derived from the model's and the index)."""
    replica = copy.deepcopy(model)
    reseed_replica(replica, index)
    for p in replica.parameters():
        p.grad[...] = 0
    return replica


# --8<-- [start:thread_parallel]
class ThreadParallel:
    """Split each batch over `n_threads` replicas of `model` run on as many threads (CPU only).

    `task` computes each shard's loss and gradient (``task.forward_backward(model, shard, dloss)``)
    and says how many targets a shard's mean runs over (``task.counted(shard)``); see ``tasks/base.py``.
    The default, ``Task()``, fits a batch ``(inputs..., targets)`` of any model of the contract.
    """

    def __init__(self, model, n_threads: int = 2, task=None):
        if n_threads < 1:
            raise ValueError(f"ThreadParallel: n_threads must be >= 1, got {n_threads}")
        if model.device != "cpu":
            raise ValueError(f"ThreadParallel runs on the CPU; the model is on {model.device!r}")
        self.model, self.n_threads, self.task = model, n_threads, task if task is not None else Task()
        self.replicas = [model] + [_replica(model, r) for r in range(1, n_threads)]
        self.pool = ThreadPoolExecutor(n_threads - 1) if n_threads > 1 else None

    def _sync(self) -> list:
        """Point every replica at the model's current parameter arrays and modes (the model may
        have been given new arrays, by load_state_dict for example, or switched to eval); return
        the model's parameters."""
        params = self.model.parameters()
        modules = list(self.model.modules())
        for replica in self.replicas[1:]:
            for p, q in zip(params, replica.parameters()):
                q.data, q.requires_grad = p.data, p.requires_grad
            for m, n in zip(modules, replica.modules()):
                n.training, n.keep_cache = m.training, m.keep_cache
        return params

    def forward_backward(self, batch, dloss: float = 1.0) -> float:
        """Add dloss times the gradient of the batch's mean loss into the model's Parameter.grad
        (like ``task.forward_backward(model, batch, dloss)``); return that loss.
        batch: a tuple of host arrays sharing their first (batch) axis."""
        sizes = {a.shape[0] for a in batch}
        if len(sizes) != 1:
            raise ValueError(f"ThreadParallel: the arrays of a batch must share the batch size, got "
                             f"{[a.shape[0] for a in batch]}")
        params = self._sync()
        shards = shard_bounds(sizes.pop(), self.n_threads)
        parts = [tuple(a[lo:hi] for a in batch) for lo, hi in shards]
        counted = [self.task.counted(part) for part in parts]
        total = max(sum(counted), 1)

        def run(r: int):
            """(weighted loss, None) of shard r, or (0, the exception) if it failed."""
            weight = counted[r] / total
            try:
                loss = self.task.forward_backward(self.replicas[r], parts[r], dloss * weight)
            except Exception as err:                           # re-raised below, in the caller's thread
                return 0.0, err
            return weight * loss, None

        with backend.host_blas_threads_limited(1):            # one BLAS thread per replica
            others = [self.pool.submit(run, r) for r in range(1, len(shards))]
            outcomes = [run(0)] + [f.result() for f in others]  # replica 0 (the model) on this thread
        errors = [err for _, err in outcomes if err is not None]
        if errors:                                             # drop the other shards' gradients
            for replica in self.replicas[1:]:
                replica.zero_grad()
            raise errors[0]
        for replica in self.replicas[1:len(shards)]:           # all-reduce: sum into the model's
            for p, q in zip(params, replica.parameters()):
                p.grad += q.grad
                q.grad[...] = 0
        return sum(loss for loss, _ in outcomes)
    # --8<-- [end:thread_parallel]

    def random_state(self) -> list:
        """The random generators of replicas 1.. (replica 0 is the model, saved with it)."""
        return [replica.random_state() for replica in self.replicas[1:]]

    def set_random_state(self, states: list) -> None:
        if len(states) != len(self.replicas) - 1:
            raise ValueError(f"ThreadParallel: {len(states)} saved replica states for "
                             f"{len(self.replicas) - 1} replicas (resume with the same --threads)")
        for replica, state in zip(self.replicas[1:], states):
            replica.set_random_state(state)

    def __repr__(self) -> str:
        return f"{self.n_threads} threads (ThreadParallel)"

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
