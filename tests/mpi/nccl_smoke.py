"""NCCL smoke test (GPU only): collectives on CuPy arrays through NCCLWorld, then two data-parallel
steps with ZeRO-1 on the GPU, compared with the same steps in plain NumPy on the host.
Run with `mpiexec -n R python tests/mpi/nccl_smoke.py`, R <= the number of GPUs (NCCL takes one GPU
per rank); prints "nccl all-reduce ok" on rank 0."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from minitransformer import backend                                   # noqa: E402
from minitransformer.distributed import NCCLWorld, ZeroAdamW          # noqa: E402
from minitransformer.models.gpt import GPT, GPTConfig                 # noqa: E402
from minitransformer.optim import AdamW, clip_grad_norm, decay_groups  # noqa: E402

comm = NCCLWorld()
cp = backend.xp_for("cuda")
R, r = comm.size, comm.rank
a = cp.full(1000, r + 1.0, dtype=cp.float32)
comm.allreduce_(a)
assert float(a[0]) == R * (R + 1) / 2, float(a[0])
flat = cp.arange(4 * R, dtype=cp.float64)
out = cp.empty(4, dtype=cp.float64)
comm.reduce_scatter(flat, out)
np.testing.assert_allclose(cp.asnumpy(out), R * np.arange(4 * R)[4 * r:4 * r + 4])
gathered = cp.empty(4 * R, dtype=cp.float64)
comm.allgather(out, gathered)
np.testing.assert_allclose(cp.asnumpy(gathered), R * np.arange(4 * R))

# ZeRO-1 on the GPU equals AdamW + clipping on the host (every rank computes the same full batch,
# so the summed gradient is R times it: scale dloss by 1/R)
cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, d_model=16, dropout=0.0)
rng = np.random.default_rng(0)
x, y = rng.integers(0, 11, (4, 8)), rng.integers(0, 11, (4, 8))
gpu, cpu = GPT(cfg, seed=1).to("cuda", "float64"), GPT(cfg, seed=1).to("cpu", "float64")
zero = ZeroAdamW(AdamW(decay_groups(gpu.named_parameters(), 0.1), lr=1e-2), comm, max_norm=0.5)
plain = AdamW(decay_groups(cpu.named_parameters(), 0.1), lr=1e-2)
for _ in range(2):
    gpu.forward(cp.asarray(x), cp.asarray(y))
    gpu.backward(dloss=1.0 / R)
    zero.step()
    zero.zero_grad()
    cpu.forward(x, y)
    cpu.backward()
    clip_grad_norm(cpu.parameters(), 0.5)
    plain.step()
    plain.zero_grad()
worst = max(float(np.abs(cp.asnumpy(p.data) - q.data).max()) for p, q in zip(gpu.parameters(), cpu.parameters()))
assert worst < 1e-10, worst
if r == 0:
    print(f"nccl all-reduce ok ({R} rank(s)); ZeRO-1 on the GPU matches the host to {worst:.1e}")
