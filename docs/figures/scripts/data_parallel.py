"""Chapter 17: data-parallel training. Gradient agreement with one process, and step time.

Measures, with the real DataParallel: the largest difference between the averaged gradient of R
workers and the single-process gradient of the whole batch (float64), and the median step time of
the small GPT with 1 process (2 BLAS threads) against 2 workers (1 BLAS thread each).
"""
import functools
import time

from _common import write_table

import numpy as np

from minitransformer import backend
from minitransformer.models.gpt import GPT, GPTConfig
from minitransformer.parallel import DataParallel

CFG = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, d_model=128)


def build(dtype):
    return GPT(CFG, seed=0).to("cpu", dtype)


def gradient_agreement(n_workers: int) -> float:
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 65, (12, 64)), rng.integers(0, 65, (12, 64))
    single = build("float64")
    single.forward(x, y)
    single.backward()
    parent = build("float64")
    with DataParallel(parent, functools.partial(build, "float64"), n_workers) as dp:
        dp.forward_backward(x, y)
    return max(float(np.abs(p.grad - q.grad).max()) for p, q in zip(single.parameters(), parent.parameters()))


def step_time(n_workers: int, steps: int = 20) -> float:
    rng = np.random.default_rng(0)
    model = build("float32")
    times = []
    dp = DataParallel(model, functools.partial(build, "float32"), n_workers) if n_workers > 1 else None
    try:
        for i in range(steps + 3):
            x, y = rng.integers(0, 65, (12, 64)), rng.integers(0, 65, (12, 64))
            t = time.perf_counter()
            if dp:
                dp.forward_backward(x, y)
            else:
                model.forward(x, y)
                model.backward()
            model.zero_grad()
            if i >= 3:
                times.append(time.perf_counter() - t)
    finally:
        if dp:
            dp.close()
    return float(np.median(times))


def main():
    backend.tune_host_allocator()
    rows = [[f"{r} workers", f"{gradient_agreement(r):.1e}"] for r in (2, 3, 4)]
    write_table("data_parallel_grads", ["split of a batch of 12", "largest absolute difference from one process"], rows,
                note="float64, small GPT (4 layers, width 128, context 64). Produced by "
                     "`docs/figures/scripts/data_parallel.py`.")
    t1, t2 = step_time(1), step_time(2)
    write_table("data_parallel_time", ["setting", "forward + backward, ms", "relative"],
                [["1 process, 2 BLAS threads", f"{t1 * 1e3:.1f}", "1.00"],
                 ["2 workers, 1 BLAS thread each", f"{t2 * 1e3:.1f}", f"{t1 / t2:.2f}x"]],
                note="Median of 20 steps, batch 12 x 64 tokens, float32, on this 2-core machine. Produced "
                     "by `docs/figures/scripts/data_parallel.py`.")


if __name__ == "__main__":
    main()
