"""Chapter 13: the measured speed-up of generation with the KV cache.

Times `minitransformer.generate.generate` with use_cache=True and use_cache=False on GPT models with
random weights (speed does not depend on what the weights have learned): greedy decoding from a
one-token prompt until the context is full, batch 1, float32, on one CPU thread. Times are process
CPU time (robust to other programs sharing the machine), best of 2 runs. The per-step curve comes from
timing each call of model.forward that `generate` makes.

Writes docs/figures/gpt_kv_cache.png and docs/figures/tables/gpt_kv_cache.md. About 30 s on two cores.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"        # one thread: CPU time then measures work, not spinning BLAS threads

import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from _common import pyplot, save, write_table
from minitransformer import backend
from minitransformer.generate import generate
from minitransformer.models.gpt import GPT, GPTConfig

clock = time.process_time



def _align(path, aligns: str) -> None:
    """Rewrite the separator row of a Markdown table: 'l' left-aligns a column, 'r' right-aligns it."""
    lines = path.read_text().split("\n")
    lines[1] = "|" + "|".join(" :--- " if a == "l" else " ---: " for a in aligns) + "|"
    path.write_text("\n".join(lines))

def run(model, n_new: int, use_cache: bool):
    """(CPU seconds of the whole call, CPU seconds of each model.forward call, generated ids)."""
    step_times = []
    forward = type(model).forward

    def timed_forward(*args, **kwargs):
        t0 = clock()
        out = forward(model, *args, **kwargs)
        step_times.append(clock() - t0)
        return out

    model.forward = timed_forward                   # an instance attribute shadows the method
    try:
        prompt = backend.to_device(np.zeros((1, 1), np.int64), "cpu")
        t0 = clock()
        out = generate(model, prompt, n_new, greedy=True, use_cache=use_cache)
        total = clock() - t0
    finally:
        del model.forward
    return total, step_times, backend.to_numpy(out)


def best_of(model, n_new, use_cache, repeats=2):
    runs = [run(model, n_new, use_cache) for _ in range(repeats)]
    return min(runs, key=lambda r: r[0])


def main() -> None:
    rows, curves = [], {}
    for block in (64, 256):
        model = GPT(GPTConfig(vocab_size=96, block_size=block, n_layer=4, n_head=4, d_model=128), seed=0)
        n_new = block - 1                      # fill the context exactly: both paths see the same input
        run(model, 4, True)                    # warm-up
        t_nc, steps_nc, ids_nc = best_of(model, n_new, use_cache=False)
        t_c, steps_c, ids_c = best_of(model, n_new, use_cache=True)
        same = bool(np.array_equal(ids_nc, ids_c))
        rows.append([f"L=4, C=128, H=4", block, n_new, f"{1e3 * t_nc / n_new:.2f}", f"{1e3 * t_c / n_new:.2f}",
                     f"{t_nc / t_c:.1f}×", "yes" if same else "no"])
        curves[block] = (steps_nc, steps_c)
        print(rows[-1])

    _align(write_table("gpt_kv_cache",
                ["model", "context T", "new tokens", "no cache (ms/token)", "KV cache (ms/token)",
                 "speed-up", "same tokens"], rows,
                note=f"*Greedy decoding from a one-token prompt until the context is full, batch 1, "
                     f"float32, random weights, one thread, CPU time per generated token (best of 2) on "
                     f"{platform.machine()} ({platform.python_implementation()} "
                     f"{platform.python_version()}, NumPy {np.__version__}); written by "
                     f"docs/figures/scripts/gpt_kv_cache.py.*"), "lrrrrrl")

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    steps_nc, steps_c = curves[256]
    ax.plot(np.arange(1, len(steps_nc) + 1), 1e3 * np.array(steps_nc), label="without cache: forward over the prefix")
    ax.plot(np.arange(1, len(steps_c) + 1), 1e3 * np.array(steps_c), label="with KV cache: forward over one token")
    ax.set_xlabel("generation step (prefix length)")
    ax.set_ylabel("CPU ms per step")
    ax.set_title("Cost of each decoding step, context 256")
    ax.legend()
    save(fig, "gpt_kv_cache")


if __name__ == "__main__":
    main()
