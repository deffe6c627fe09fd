"""Training on many processes: MPI (mpi4py) data parallelism with NCCL on GPUs, ZeRO-1
optimizer-state sharding, Megatron-style tensor parallelism, and activation checkpointing.

Threads on one machine are ``thread_parallel.py``; this package spans processes and machines.
"""
from .communicator import (Communicator, DistributedError, LocalWorld, MPIWorld, NCCLWorld, Traffic,
                           launched_by_mpi, world)
from .buckets import GradientBuckets, bucket_ranges
from .data_parallel import DistributedDataParallel
from .zero import ZeroAdamW, shard_range

__all__ = ["Communicator", "DistributedError", "LocalWorld", "MPIWorld", "NCCLWorld", "Traffic",
           "launched_by_mpi", "world", "GradientBuckets", "bucket_ranges", "DistributedDataParallel",
           "ZeroAdamW", "shard_range"]
