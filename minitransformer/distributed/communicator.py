r"""Communicators: the collective operations every form of parallelism here is built from.

A communicator is a group of $R$ processes (*ranks*) numbered $0..R-1$. Four collectives on arrays
are enough for data, optimizer-state and tensor parallelism:

* ``allreduce_(a)``: every rank ends with $\sum_r a_r$ (in place);
* ``reduce_scatter(flat, out)``: ``flat`` (length $R n$) is summed over ranks and rank $r$ receives
  chunk $r$ of the sum (length $n$) in ``out``;
* ``allgather(chunk, out)``: rank $r$ contributes ``chunk`` (length $n$), every rank receives the
  $R$ chunks concatenated in ``out`` (length $R n$);
* ``broadcast_(a, root)``: every rank ends with rank ``root``'s ``a``.

An all-reduce *is* a reduce-scatter followed by an all-gather; that identity is what ZeRO uses.
Three implementations share the interface:

* `LocalWorld`: one process (a run started without ``mpiexec``): every collective is the identity;
* `MPIWorld`: mpi4py over any MPI (shared memory on one host, TCP or InfiniBand between hosts);
  host (NumPy) arrays go to MPI directly, device arrays through a host copy;
* `NCCLWorld`: device (CuPy) arrays all-reduced by NCCL, the GPU-to-GPU library, whose unique id
  rank 0 creates and broadcasts over MPI; everything else (objects, barriers) goes over MPI.

`world(device)` picks one: MPI when the process was started by ``mpiexec`` (one of the launcher's
environment variables is set), NCCL on top of it for ``device="cuda"``, else the local world.
Every communicator counts what it moves (`Traffic`), so measured volumes can be checked against
the formulas of the chapter.
"""
from __future__ import annotations

import os
import sys
import time
from collections import defaultdict

from .. import backend

# environment variables that MPI launchers set in every process they start
# (MPICH/Hydra and Intel MPI: PMI_*, Open MPI: OMPI_*, PMIx launchers such as Slurm's srun: PMIX_*)
LAUNCHER_VARIABLES = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")


class DistributedError(RuntimeError):
    """A distributed run cannot start or went out of step (missing MPI, ranks disagreeing)."""


class Traffic:
    """What a communicator moved: per collective, the number of calls and of array elements and
    bytes handed to it (the payload of one rank, before the algorithm's own copies), and the
    seconds spent inside it (on a GPU: the time to queue it, NCCL runs asynchronously)."""

    def __init__(self):
        self.calls, self.elements, self.bytes = defaultdict(int), defaultdict(int), defaultdict(int)
        self.seconds = defaultdict(float)

    def record(self, op: str, array, seconds: float = 0.0) -> None:
        self.calls[op] += 1
        self.elements[op] += int(array.size)
        self.bytes[op] += int(array.nbytes)
        self.seconds[op] += seconds

    def reset(self) -> None:
        for table in (self.calls, self.elements, self.bytes, self.seconds):
            table.clear()

    def summary(self) -> dict:
        return {op: {"calls": self.calls[op], "elements": self.elements[op], "bytes": self.bytes[op],
                     "seconds": self.seconds[op]} for op in sorted(self.calls)}


def _check_chunks(flat, out, size: int, what: str) -> None:
    if flat.ndim != 1 or out.ndim != 1 or flat.size != size * out.size:
        raise ValueError(f"{what}: expected a flat array of {size} x len(out) elements and a flat out, got "
                         f"shapes {tuple(flat.shape)} and {tuple(out.shape)}")
    if flat.dtype != out.dtype:
        raise ValueError(f"{what}: the arrays must share their dtype, got {flat.dtype} and {out.dtype}")


class Communicator:
    """The interface; `rank`, `size`, `local_rank` (among the ranks of this host) and `name`."""

    name = "communicator"

    def __init__(self, rank: int, size: int, local_rank: int = 0, local_size: int = 1):
        self.rank, self.size, self.local_rank, self.local_size = rank, size, local_rank, local_size
        self.traffic = Traffic()

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    # -- array collectives (in place or into `out`) ---------------------------------------------------
    def allreduce_(self, array):
        start = time.perf_counter()
        self._allreduce(array)
        self.traffic.record("allreduce", array, time.perf_counter() - start)
        return array

    def reduce_scatter(self, flat, out):
        _check_chunks(flat, out, self.size, "reduce_scatter")
        start = time.perf_counter()
        self._reduce_scatter(flat, out)
        self.traffic.record("reduce_scatter", flat, time.perf_counter() - start)
        return out

    def allgather(self, chunk, out):
        _check_chunks(out, chunk, self.size, "allgather")
        start = time.perf_counter()
        self._allgather(chunk, out)
        self.traffic.record("allgather", out, time.perf_counter() - start)
        return out

    def broadcast_(self, array, root: int = 0):
        start = time.perf_counter()
        self._broadcast(array, root)
        self.traffic.record("broadcast", array, time.perf_counter() - start)
        return array

    # -- Python objects and scalars (small: losses, counts, random states, checkpoint metadata) -------
    def allreduce_scalar(self, value: float) -> float:
        return value

    def bcast_object(self, obj, root: int = 0):
        return obj

    def gather_object(self, obj, root: int = 0) -> list | None:
        return [obj]

    def allgather_object(self, obj) -> list:
        return [obj]

    def barrier(self) -> None:
        pass

    def _allreduce(self, array) -> None:
        pass

    def _reduce_scatter(self, flat, out) -> None:
        out[...] = flat

    def _allgather(self, chunk, out) -> None:
        out[...] = chunk

    def _broadcast(self, array, root: int) -> None:
        pass

    def __repr__(self) -> str:
        return f"{self.size} rank{'s' if self.size > 1 else ''} ({self.name})"


class LocalWorld(Communicator):
    """A world of one process: every collective leaves the data as it is."""

    name = "local"

    def __init__(self):
        super().__init__(0, 1)


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise DistributedError("this process was started by an MPI launcher but mpi4py is not installed: "
                               "pip install 'minitransformer[distributed]'") from err
    return MPI


class MPIWorld(Communicator):
    """The ranks of an MPI communicator (default: everyone ``mpiexec`` started)."""

    name = "MPI"

    def __init__(self, comm=None):
        MPI = _mpi()
        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)       # the ranks that share this host
        local_rank, local_size = node.Get_rank(), node.Get_size()
        node.Free()
        super().__init__(self.comm.Get_rank(), self.comm.Get_size(), local_rank, local_size)
        _abort_on_uncaught_exception(self.comm)

    # --8<-- [start:mpi_collectives]
    def _allreduce(self, array) -> None:
        with _on_host(array) as host:
            self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)

    def _reduce_scatter(self, flat, out) -> None:
        with _on_host(flat) as host_flat, _on_host(out) as host_out:
            self.comm.Reduce_scatter_block(host_flat, host_out, op=self.MPI.SUM)

    def _allgather(self, chunk, out) -> None:
        with _on_host(chunk) as host_chunk, _on_host(out) as host_out:
            self.comm.Allgather(host_chunk, host_out)

    def _broadcast(self, array, root: int) -> None:
        with _on_host(array) as host:
            self.comm.Bcast(host, root=root)
    # --8<-- [end:mpi_collectives]

    def allreduce_scalar(self, value: float) -> float:
        return float(self.comm.allreduce(float(value), op=self.MPI.SUM))

    def bcast_object(self, obj, root: int = 0):
        return self.comm.bcast(obj, root=root)

    def gather_object(self, obj, root: int = 0) -> list | None:
        return self.comm.gather(obj, root=root)

    def allgather_object(self, obj) -> list:
        return self.comm.allgather(obj)

    def barrier(self) -> None:
        self.comm.Barrier()


def _abort_on_uncaught_exception(comm) -> None:
    """An exception that ends one rank would leave the others waiting forever in their next
    collective: after printing it, abort the whole job (what ``python -m mpi4py`` does)."""
    previous = sys.excepthook

    def hook(kind, value, traceback):
        previous(kind, value, traceback)
        sys.stderr.flush()
        comm.Abort(1)
    sys.excepthook = hook


class _on_host:
    """A contiguous host array standing for `array` inside the block (itself when it is one); a
    device array is copied to the host on entry and back on exit. MPI without CUDA support reads
    and writes host memory only."""

    def __init__(self, array):
        self.array = array

    def __enter__(self):
        if backend.device_of(self.array) == "cpu" and self.array.flags.c_contiguous:
            self.host = self.array
        else:
            self.host = backend.to_numpy(self.array).copy()
        return self.host

    def __exit__(self, *exc):
        if self.host is not self.array and exc[0] is None:
            self.array[...] = backend.to_device(self.host, backend.device_of(self.array))


class NCCLWorld(MPIWorld):
    """MPI ranks, one GPU each (``local_rank`` picks it), whose array collectives run in NCCL.

    Rank 0 asks NCCL for a unique id, MPI broadcasts it, and every rank joins the NCCL communicator
    with it: MPI only sets up the group, the gradients travel GPU to GPU (NVLink, PCIe or the
    network, as NCCL finds best). Collectives are queued on the current CUDA stream, so they are
    ordered with the computation that produced their inputs.
    """

    name = "NCCL"

    def __init__(self, comm=None):
        super().__init__(comm)
        cupy = backend._load_cupy()
        from cupy.cuda import nccl  # communication, not compute: NCCL's binding exists only in CuPy
        self.cupy, self.nccl = cupy, nccl
        cupy.cuda.Device(self.local_rank % cupy.cuda.runtime.getDeviceCount()).use()
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = self.comm.bcast(uid, root=0)                          # the NCCL id travels over MPI
        self.nccl_comm = nccl.NcclCommunicator(self.size, uid, self.rank)

    def _dtype(self, array):
        kinds = {"float32": self.nccl.NCCL_FLOAT32, "float64": self.nccl.NCCL_FLOAT64,
                 "float16": self.nccl.NCCL_FLOAT16}
        if str(array.dtype) not in kinds:
            raise ValueError(f"NCCLWorld: unsupported dtype {array.dtype}; expected one of {sorted(kinds)}")
        if not isinstance(array, self.cupy.ndarray) or not array.flags.c_contiguous:
            raise ValueError("NCCLWorld: collectives take contiguous device (CuPy) arrays")
        return kinds[str(array.dtype)]

    # --8<-- [start:nccl_collectives]
    def _allreduce(self, array) -> None:
        stream = self.cupy.cuda.get_current_stream().ptr
        self.nccl_comm.allReduce(array.data.ptr, array.data.ptr, array.size, self._dtype(array),
                                 self.nccl.NCCL_SUM, stream)

    def _reduce_scatter(self, flat, out) -> None:
        stream = self.cupy.cuda.get_current_stream().ptr
        self.nccl_comm.reduceScatter(flat.data.ptr, out.data.ptr, out.size, self._dtype(flat),
                                     self.nccl.NCCL_SUM, stream)

    def _allgather(self, chunk, out) -> None:
        stream = self.cupy.cuda.get_current_stream().ptr
        self.nccl_comm.allGather(chunk.data.ptr, out.data.ptr, chunk.size, self._dtype(chunk), stream)

    def _broadcast(self, array, root: int) -> None:
        stream = self.cupy.cuda.get_current_stream().ptr
        self.nccl_comm.bcast(array.data.ptr, array.size, self._dtype(array), root, stream)
    # --8<-- [end:nccl_collectives]


def launched_by_mpi() -> bool:
    """Whether an MPI launcher (mpiexec, mpirun, srun) started this process."""
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


_worlds: dict = {}


def world(device: str = "cpu") -> Communicator:
    """The communicator of this run: a world of one without a launcher, else MPI (NCCL for the
    array collectives when device is "cuda"). Created once per device and reused."""
    backend.check_device(device)
    if device not in _worlds:
        if not launched_by_mpi() or _mpi().COMM_WORLD.Get_size() == 1:
            _worlds[device] = LocalWorld()
        else:
            _worlds[device] = NCCLWorld() if device == "cuda" else MPIWorld()
    return _worlds[device]
