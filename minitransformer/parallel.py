r"""Multi-process data-parallel training on the CPU.

Each of $R$ worker processes holds a replica of the model, runs forward and backward on its own
shard of the batch, and writes its gradient into shared memory. The gradients are averaged (an
all-reduce done by the parent),

$$g = \frac{1}{R}\sum_{r=1}^{R} g_r = \nabla_\theta \frac{1}{R}\sum_r \mathcal{L}_r,$$

which, with equal shards, is exactly the gradient of the whole batch. The parent applies the
optimizer once and publishes the new parameters through shared memory for the next step, so every
replica stays identical.

The parameters and gradients travel as one flat float array per process (`flatten`/`unflatten`),
never pickled. Workers use one BLAS thread each, so R workers use R cores.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from multiprocessing import shared_memory

import numpy as np  # host-side shared memory: this module is CPU-only by design

from . import backend
from .nn.dropout import reseed_replica
from .tasks.base import Task


def flatten(arrays, out=None):
    """Concatenate arrays into one flat vector (into `out` when given)."""
    sizes = [a.size for a in arrays]
    out = np.empty(sum(sizes), arrays[0].dtype) if out is None else out
    offset = 0
    for a, n in zip(arrays, sizes):
        out[offset:offset + n] = backend.to_numpy(a).reshape(-1)
        offset += n
    return out


def unflatten(flat, arrays) -> None:
    """Copy consecutive pieces of `flat` back into `arrays` (in place)."""
    offset = 0
    for a in arrays:
        a[...] = flat[offset:offset + a.size].reshape(a.shape)
        offset += a.size


def _worker(rank, build, task, conn, param_name, grad_name, n_params, dtype):
    params_shm = shared_memory.SharedMemory(name=param_name)
    grads_shm = shared_memory.SharedMemory(name=grad_name)
    backend.tune_host_allocator()                                       # as in the parent's training loop
    try:
        flat_params = np.ndarray((n_params,), dtype, buffer=params_shm.buf)
        my_grads = np.ndarray((n_params,), dtype, buffer=grads_shm.buf, offset=rank * n_params * np.dtype(dtype).itemsize)
        model = build()
        reseed_replica(model, rank)                                   # its own dropout masks
        params = model.parameters()
        while True:
            message = conn.recv()
            if message is None:
                break
            shard, dloss = message
            unflatten(flat_params, [p.data for p in params])          # the parent's latest weights
            model.zero_grad()
            loss = task.forward_backward(model, shard, dloss)
            flatten([p.grad for p in params], out=my_grads)
            conn.send(loss)
    finally:
        params_shm.close()
        grads_shm.close()


class DataParallel:
    """R worker processes computing gradients of batch shards for the parent's model.

    build: a picklable zero-argument callable returning a fresh model (same architecture as the
    parent's; its weights are overwritten every step). task: picklable, it computes each shard's
    loss and gradient (``task.forward_backward``, see ``tasks/base.py``). Use as a context manager.
    """

    def __init__(self, model, build, n_workers: int = 2, task=None):
        if n_workers < 1:
            raise ValueError(f"DataParallel: n_workers must be >= 1, got {n_workers}")
        if model.device != "cpu":
            raise ValueError("DataParallel runs on the CPU; move the model with .to('cpu')")
        self.model, self.n_workers = model, n_workers
        task = task if task is not None else Task()
        self.params = model.parameters()
        self.dtype = self.params[0].dtype
        n = sum(p.data.size for p in self.params)
        itemsize = np.dtype(self.dtype).itemsize
        self._params_shm = shared_memory.SharedMemory(create=True, size=n * itemsize)
        self._grads_shm = shared_memory.SharedMemory(create=True, size=n * itemsize * n_workers)
        self.flat_params = np.ndarray((n,), self.dtype, buffer=self._params_shm.buf)
        self.all_grads = np.ndarray((n_workers, n), self.dtype, buffer=self._grads_shm.buf)
        ctx = mp.get_context("spawn")
        self.conns, self.procs = [], []
        saved = {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        os.environ.update({k: "1" for k in saved})                     # one BLAS thread per worker
        try:
            for rank in range(n_workers):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker, daemon=True,
                                   args=(rank, build, task, child, self._params_shm.name, self._grads_shm.name, n,
                                         self.dtype))
                proc.start()
                self.conns.append(parent)
                self.procs.append(proc)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    # --8<-- [start:data_parallel_step]
    def forward_backward(self, batch, dloss: float = 1.0) -> float:
        """Split a batch (a tuple of host arrays, batch axis first) into R equal shards, add dloss
        times the averaged gradient into the parent's Parameter.grad (like Module.backward), and
        return the mean loss."""
        B = batch[0].shape[0]
        if B % self.n_workers:
            raise ValueError(f"DataParallel: batch size {B} is not divisible by {self.n_workers} workers")
        flatten([p.data for p in self.params], out=self.flat_params)    # publish the current weights
        shard = B // self.n_workers
        for r, conn in enumerate(self.conns):
            conn.send((tuple(a[r * shard:(r + 1) * shard] for a in batch), dloss / self.n_workers))
        losses = [conn.recv() for conn in self.conns]                    # wait for every replica
        total = self.all_grads.sum(axis=0)                               # all-reduce: sum of dloss-scaled grads
        offset = 0
        for p in self.params:
            p.grad += total[offset:offset + p.data.size].reshape(p.shape)
            offset += p.data.size
        return float(np.mean(losses))
    # --8<-- [end:data_parallel_step]

    def __repr__(self) -> str:
        return f"{self.n_workers} worker processes (DataParallel)"

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
        for shm in (self._params_shm, self._grads_shm):
            shm.close()
            shm.unlink()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
