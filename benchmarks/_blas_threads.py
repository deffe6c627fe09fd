"""Imported first by the benchmark scripts: pins BLAS to `--threads N` threads (default 1) before
NumPy loads. On a busy 2-core machine a 2-thread BLAS spins against other processes and its timings
scatter by about 10x (measured), so one thread is the default; `--threads 2` uses both cores."""
import os
import sys

THREADS = sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv else "1"
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = THREADS
