"""Distributed training measured (speed-up against MPI ranks, where a step's time goes, ZeRO-1
memory, activation checkpointing, tensor-parallel traffic): see
minitransformer/benchmarking/distributed.py. Regenerates docs/benchmarks/distributed*.{json,md}.
Needs mpiexec (pip install '.[distributed]'). Usage: python benchmarks/distributed.py [--help]"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from minitransformer.benchmarking.distributed import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--out", str(ROOT / "docs" / "benchmarks"), *sys.argv[1:]]))
