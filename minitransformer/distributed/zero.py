r"""ZeRO stage 1: AdamW whose moments are sharded over the data-parallel ranks.

Plain data parallelism keeps $R$ identical copies of everything, AdamW's two moments included: for
$\Psi$ parameters of $b$ bytes each, $2 b \Psi$ bytes of optimizer state on every rank. But the
update is elementwise, so rank $r$ needs the moments (and the summed gradient) of only the elements
it updates. ZeRO-1 (Rajbhandari et al., 2020) splits the flat parameter vector into $R$ chunks of
$\lceil \Psi/R \rceil$ elements and gives rank $r$ chunk $r$:

1. **reduce-scatter** the flat gradient: rank $r$ receives the sum over ranks of chunk $r$;
2. the **global gradient norm** is the square root of the sum over ranks of each chunk's squares
   (a scalar all-reduce), so clipping scales every chunk by the same factor as without sharding;
3. rank $r$ runs AdamW on its chunk with its moments ($2 b \lceil \Psi/R \rceil$ bytes);
4. **all-gather** the updated chunks: every rank has every new weight again.

A reduce-scatter plus an all-gather moves exactly what one all-reduce moves, so the saving in
memory costs no extra communication. The arithmetic of each element is AdamW's own, so the weights
equal plain data parallelism's up to the order in which the gradient sums are taken.
"""
from __future__ import annotations

import math

from .. import backend
from ..optim import AdamW


def shard_range(total: int, size: int, rank: int) -> tuple[int, int, int]:
    """(start, stop, chunk) of rank's shard of `total` elements in chunks of ceil(total/size);
    the last shards may be shorter (stop - start < chunk) or empty."""
    chunk = -(-total // size)
    start = min(rank * chunk, total)
    return start, min(start + chunk, total), chunk


class ZeroAdamW:
    """Wrap an `AdamW` (its parameter groups and hyper-parameters) so that each rank of `comm`
    keeps and updates one shard of the moments; the optimizer's own full moments are released.

    `step()` takes the *unreduced* gradients (each rank's weighted shard gradients, as
    `DistributedDataParallel.forward_backward` leaves them), reduces, clips to `max_norm` by the
    global norm, updates and gathers; it returns the norm before clipping. `lr` and `t` are the
    wrapped optimizer's. `state_arrays()` / `load_state_arrays()` give and take the full moments in
    AdamW's own names, so a checkpoint written with R ranks resumes with any other number, with or
    without sharding (both are collective: every rank calls them).
    """

    state_kinds = AdamW.state_kinds

    def __init__(self, optimizer: AdamW, comm, max_norm: float = 0.0):
        if not isinstance(optimizer, AdamW):
            raise TypeError(f"ZeRO-1 shards AdamW's moments; got a {type(optimizer).__name__} "
                            "(use optimizer = \"adamw\" or \"adam\")")
        self.inner, self.comm, self.max_norm = optimizer, comm, float(max_norm)
        self.params = optimizer.params
        optimizer.m, optimizer.v = [], []                              # the full moments are not kept
        self.sizes = [p.data.size for p in self.params]
        self.total = sum(self.sizes)
        self.start, self.stop, self.chunk = shard_range(self.total, comm.size, comm.rank)
        xp = backend.get_array_module(self.params[0].data)
        dtype = self.params[0].data.dtype
        self.flat_grad = xp.zeros(self.chunk * comm.size, dtype)       # padded to R whole chunks
        self.flat_param = xp.zeros(self.chunk * comm.size, dtype)
        self.grad_shard = xp.zeros(self.chunk, dtype)
        self.param_shard = xp.zeros(self.chunk, dtype)
        self.m = xp.zeros(self.chunk, dtype)                           # this rank's moments only
        self.v = xp.zeros(self.chunk, dtype)
        self.segments = self._segments()

    def _segments(self) -> list:
        """(a, b, group): ranges of this rank's chunk (chunk coordinates) lying in one parameter group."""
        segments, offset = [], 0
        for n, group in zip(self.sizes, self.inner.group_of):
            a, b = max(offset, self.start), min(offset + n, self.stop)
            if a < b:
                a, b = a - self.start, b - self.start
                if segments and segments[-1][2] is group and segments[-1][1] == a:
                    segments[-1] = (segments[-1][0], b, group)         # merge with the previous one
                else:
                    segments.append((a, b, group))
            offset += n
        return segments

    @property
    def lr(self) -> float:
        return self.inner.lr

    @lr.setter
    def lr(self, value: float) -> None:
        self.inner.lr = value

    @property
    def t(self) -> int:
        return self.inner.t

    @t.setter
    def t(self, value: int) -> None:
        self.inner.t = value

    def zero_grad(self) -> None:
        self.inner.zero_grad()

    def _pack(self, arrays, flat) -> None:
        offset = 0
        for a, n in zip(arrays, self.sizes):
            flat[offset:offset + n] = a.reshape(-1)                    # (shape) -> (n,)
            offset += n

    def _unpack(self, flat, arrays) -> None:
        offset = 0
        for a, n in zip(arrays, self.sizes):
            a[...] = flat[offset:offset + n].reshape(a.shape)          # (n,) -> (shape)
            offset += n

    # --8<-- [start:zero_step]
    def step(self):
        """Reduce-scatter the gradients, clip by the global norm, update this rank's shard with
        AdamW, all-gather the weights; return the global gradient norm before clipping."""
        xp = backend.get_array_module(self.flat_grad)
        self._pack([p.grad for p in self.params], self.flat_grad)
        self.comm.reduce_scatter(self.flat_grad, self.grad_shard)      # chunk r of the summed gradient
        local = float(xp.vdot(self.grad_shard, self.grad_shard))       # padding is zero
        norm = math.sqrt(self.comm.allreduce_scalar(local))            # the global norm
        if self.max_norm > 0:
            self.grad_shard *= min(1.0, self.max_norm / (norm + 1e-6))
        self._pack([p.data for p in self.params], self.flat_param)
        self.param_shard[...] = self.flat_param[self.comm.rank * self.chunk:(self.comm.rank + 1) * self.chunk]
        self._adamw_on_shard()
        self.comm.allgather(self.param_shard, self.flat_param)         # every rank: every new weight
        self._unpack(self.flat_param, [p.data for p in self.params])
        return norm

    def _adamw_on_shard(self) -> None:
        """AdamW's update (optim.AdamW.step), element for element, on this rank's chunk."""
        opt = self.inner
        opt.t += 1
        b1, b2 = opt.beta1, opt.beta2
        correction = math.sqrt(1 - b2 ** opt.t) / (1 - b1 ** opt.t)
        eps_hat = opt.eps * math.sqrt(1 - b2 ** opt.t)
        xp = backend.get_array_module(self.m)
        for a, b, group in self.segments:
            p, g, m, v = self.param_shard[a:b], self.grad_shard[a:b], self.m[a:b], self.v[a:b]
            lr = opt.group_lr(group)
            if group.weight_decay:
                p *= 1 - lr * group.weight_decay
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            denom = xp.sqrt(v)
            denom += eps_hat
            update = m / denom
            update *= lr * correction
            p -= update
    # --8<-- [end:zero_step]

    def state_bytes(self) -> int:
        """Bytes of optimizer state this rank holds (its two moment shards)."""
        return int(self.m.nbytes + self.v.nbytes)

    def _gather_full(self, shard) -> list:
        xp = backend.get_array_module(shard)
        full = xp.empty(self.chunk * self.comm.size, shard.dtype)
        self.comm.allgather(shard, full)
        arrays = [xp.empty(p.shape, shard.dtype) for p in self.params]
        self._unpack(full, arrays)
        return arrays

    def state_arrays(self) -> dict:
        """The full moments as AdamW names them (``m.<i>``, ``v.<i>``), gathered from every rank."""
        out = {}
        for kind in self.state_kinds:
            for i, a in enumerate(self._gather_full(getattr(self, kind))):
                out[f"{kind}.{i}"] = backend.to_numpy(a)
        return out

    def load_state_arrays(self, arrays: dict) -> None:
        """Take this rank's shard of full moments (as AdamW or another ZeroAdamW saved them)."""
        expected = {f"{kind}.{i}" for kind in self.state_kinds for i in range(len(self.params))}
        if set(arrays) - expected:
            raise ValueError(f"optimizer state {sorted(set(arrays) - expected)[0]!r}: not a state of AdamW "
                             f"with {len(self.params)} parameters; expected 'm.<i>' and 'v.<i>'")
        xp = backend.get_array_module(self.m)
        for kind in self.state_kinds:
            full = xp.zeros(self.chunk * self.comm.size, self.m.dtype)
            offset = 0
            for i, (p, n) in enumerate(zip(self.params, self.sizes)):
                value = arrays.get(f"{kind}.{i}")
                if value is not None:
                    if tuple(value.shape) != tuple(p.shape):
                        raise ValueError(f"optimizer state {kind}.{i}: expected shape {tuple(p.shape)}, "
                                         f"got {tuple(value.shape)}")
                    full[offset:offset + n] = backend.to_device(value, backend.device_of(self.m),
                                                                self.m.dtype).reshape(-1)
                offset += n
            getattr(self, kind)[...] = full[self.comm.rank * self.chunk:(self.comm.rank + 1) * self.chunk]

    def __repr__(self) -> str:
        return f"ZeRO-1 AdamW over {self.comm}, {self.chunk:,} of {self.total:,} elements per rank"
