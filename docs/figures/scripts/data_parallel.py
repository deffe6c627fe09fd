"""Chapter 17: data-parallel training. Gradient agreement with one process, and step time.

Measures, with the real ThreadParallel: the largest difference between the gradient of R shards
(threads) and the single-thread gradient of the whole batch (float64), and the median
forward+backward time of the small GPT run on one thread (BLAS on 2 threads) and split over 2
threads (1 BLAS thread each), timed in alternating blocks so that a change of the shared machine's
speed hits both; then, for models of growing size, when splitting the batch over 2 threads pays off
(the threshold of `thread_parallel.auto_threads`). Processes (MPI ranks) are measured by
benchmarks/distributed.py (chapter 41).
"""
from _common import write_table

import numpy as np

from minitransformer import backend
from minitransformer.models.gpt import GPT, GPTConfig
from minitransformer.benchmarking.train_step import time_alternating
from minitransformer.thread_parallel import ThreadParallel

CFG = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, d_model=128)


def build(dtype):
    return GPT(CFG, seed=0).to("cpu", dtype)


def gradient_agreement(n: int) -> float:
    """Largest |difference| between the gradients of n shards (ThreadParallel) and of one pass over
    the whole batch."""
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 65, (12, 64)), rng.integers(0, 65, (12, 64))
    single = build("float64")
    single.forward(x, y)
    single.backward()
    parent = build("float64")
    with ThreadParallel(parent, n) as tp:
        tp.forward_backward((x, y))
    return max(float(np.abs(p.grad - q.grad).max()) for p, q in zip(single.parameters(), parent.parameters()))


def step_times(steps: int = 30, rounds: int = 3) -> dict:
    """Median forward+backward seconds of each setting, in `rounds` alternating blocks."""
    rng = np.random.default_rng(0)
    models = {name: build("float32") for name in ("one", "threads")}
    tp = ThreadParallel(models["threads"], 2)
    passes = {"one": lambda x, y: (models["one"].forward(x, y), models["one"].backward()),
              "threads": lambda x, y: tp.forward_backward((x, y))}

    def timed(name):
        def step():
            passes[name](rng.integers(0, 65, (12, 64)), rng.integers(0, 65, (12, 64)))
            models[name].zero_grad()
        return step
    try:
        return time_alternating({name: timed(name) for name in passes}, steps, rounds, warmup=3)
    finally:
        tp.close()


SIZES = [(32, 8, 32), (64, 8, 32), (128, 4, 64), (128, 12, 32), (64, 16, 64), (128, 12, 64), (256, 8, 64)]


def thread_speedup(C: int, B: int, T: int, steps: int = 60, rounds: int = 3) -> tuple:
    """(one-thread ms, two-thread ms) of forward+backward of a 2-layer GPT of width C on a (B, T)
    batch: medians of alternating blocks."""
    cfg = GPTConfig(vocab_size=65, block_size=T, n_layer=2, n_head=max(1, C // 32), d_model=C)
    one, split = GPT(cfg, seed=0), ThreadParallel(GPT(cfg, seed=0), 2)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 65, (B, T)), rng.integers(0, 65, (B, T))
    run = {"one": lambda: (one.forward(x, y), one.backward(), one.zero_grad()),
           "two": lambda: (split.forward_backward((x, y)), split.model.zero_grad())}
    with split:
        t = time_alternating(run, steps, rounds, warmup=3)
    return t["one"] * 1e3, t["two"] * 1e3


def main():
    backend.tune_host_allocator()
    rows = [[str(r), f"{gradient_agreement(r):.1e}"] for r in (2, 3, 4)]
    write_table("data_parallel_grads", ["shards of a batch of 12", "threads"], rows,
                note="Largest absolute difference from the gradient of one pass over the whole batch; "
                     "float64, small GPT (4 layers, width 128, context 64). Produced by "
                     "`docs/figures/scripts/data_parallel.py`.")
    t = step_times()
    write_table("data_parallel_time", ["setting", "forward + backward, ms", "relative"],
                [["1 thread, BLAS on 2 threads", f"{t['one'] * 1e3:.1f}", "1.00"],
                 ["batch split over 2 threads, 1 BLAS thread each", f"{t['threads'] * 1e3:.1f}",
                  f"{t['one'] / t['threads']:.2f}x"]],
                note="Median of 30 steps per setting, timed in alternating blocks; batch 12 x 64 tokens, "
                     "float32, on this 2-core machine. Produced by `docs/figures/scripts/data_parallel.py`.")
    rows = []
    for C, B, T in SIZES:
        t_one, t_two = thread_speedup(C, B, T)
        rows.append([f"C={C}, B={B}, T={T}", f"{B * T * C // 2:,}", f"{t_one:.2f}", f"{t_two:.2f}",
                     f"{t_one / t_two:.2f}x"])
    write_table("data_parallel_sizes", ["2-layer GPT", "activation elements per thread (B*T*C/2)",
                                        "1 thread, ms", "2 threads, ms", "speed-up"], rows,
                note="Forward + backward, float32, medians of alternating blocks on this 2-core machine. "
                     "Produced by `docs/figures/scripts/data_parallel.py`.")


if __name__ == "__main__":
    main()
