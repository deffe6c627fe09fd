"""Chapter 2 table: the same functional pair (linear_forward / linear_backward) timed on every device
this machine has, in float32 and float64, with the achieved FLOP rate.

Writes docs/figures/tables/backend_linear.md. On a machine with CuPy and a GPU, a 'cuda' row appears
next to each 'cpu' row; the code that runs is the same lines in both cases.
"""
from __future__ import annotations

import os
import time

# One BLAS thread and the process's CPU time: a multi-threaded BLAS on a busy two-core machine can be
# slowed down a hundredfold by oversubscription, which would measure the machine, not the code.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from _common import write_table  # noqa: E402

from minitransformer import backend  # noqa: E402
from minitransformer.nn.functional.linear import linear_backward, linear_forward  # noqa: E402

SIZES = [(12 * 64, 128, 128), (12 * 64, 128, 512), (8 * 256, 384, 1536)]   # (N, C_in, C_out)


def time_pair(device, dtype, n, cin, cout, repeat=5):
    rng = backend.host_rng(0)
    x = backend.to_device(rng.standard_normal((n, cin)), device, dtype)
    w = backend.to_device(rng.standard_normal((cin, cout)) / np.sqrt(cin), device, dtype)
    b = backend.to_device(np.zeros(cout), device, dtype)
    dy = backend.to_device(rng.standard_normal((n, cout)), device, dtype)
    best = float("inf")
    for _ in range(repeat + 1):                       # the first run warms up (and compiles on GPU)
        clock = time.process_time if device == "cpu" else time.perf_counter   # GPU: wall time
        backend.synchronize(device)
        t0 = clock()
        y, cache = linear_forward(x, w, b)
        dx, dw, db = linear_backward(dy, cache)
        backend.synchronize(device)
        best = min(best, clock() - t0)
    flops = 3 * 2 * n * cin * cout                    # forward x@w, backward dy@w^T and x^T@dy
    return best, flops / best / 1e9


def main():
    devices = ["cpu"] + (["cuda"] if backend.cuda_available() else [])
    rows = []
    for n, cin, cout in SIZES:
        for device in devices:
            for dtype in ("float32", "float64"):
                t, gflops = time_pair(device, dtype, n, cin, cout)
                rows.append([f"({n}, {cin}) @ ({cin}, {cout})", device, dtype, f"{t * 1e3:.2f}", f"{gflops:.1f}"])
                print(rows[-1])
    write_table("backend_linear", ["x @ W", "device", "dtype", "forward + backward (ms)", "GFLOP/s"], rows,
                note=f"Best of 5 runs of `linear_forward` + `linear_backward`; CPU rows: one BLAS thread, CPU time of the "
                     f"process; devices found: {', '.join(devices)}. "
                     "Produced by `docs/figures/scripts/backend_linear.py`.")


if __name__ == "__main__":
    main()
