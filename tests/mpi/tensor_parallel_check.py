"""Tensor parallelism against the serial model, run by tests/test_tensor_parallel.py under
`mpiexec -n R` (R divides n_head and d_ff). Every rank builds the same serial GPT and a
tensor-parallel copy; both run the same batches with AdamW. Rank 0 writes a JSON report: the
largest differences (loss, input-side gradients, every parameter, weights after the steps) and
the elements the communicator all-reduced per step, next to the formula."""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from minitransformer.distributed import world                                  # noqa: E402
from minitransformer.distributed.tensor_parallel import (communication_per_step, shard_indices,  # noqa: E402
                                                         tensor_parallel)
from minitransformer.models.gpt import GPT, GPTConfig                          # noqa: E402
from minitransformer.optim import AdamW, decay_groups                          # noqa: E402


def main(report: str, steps: int = 3) -> None:
    comm = world("cpu")
    cfg = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=4, d_model=16, dropout=0.0)
    serial = GPT(cfg, seed=7).to("cpu", "float64")
    parallel = tensor_parallel(copy.deepcopy(serial), comm)
    index = shard_indices(parallel)
    serial_params = dict(serial.named_parameters())
    optimizers = [AdamW(decay_groups(m.named_parameters(), 0.1), lr=1e-2) for m in (serial, parallel)]
    rng = np.random.default_rng(1)
    worst = {"loss": 0.0, "grad": 0.0, "weights": 0.0}
    traffic = []
    for _ in range(steps):
        x, y = rng.integers(0, 13, (3, 8)), rng.integers(0, 13, (3, 8))
        _, loss_s = serial.forward(x, y)
        serial.backward()
        comm.traffic.reset()
        _, loss_p = parallel.forward(x, y)
        parallel.backward()
        traffic.append(comm.traffic.elements["allreduce"])
        worst["loss"] = max(worst["loss"], abs(float(loss_s) - float(loss_p)))
        for name, p in parallel.named_parameters():
            reference = serial_params[name.replace(".linear.", ".")].grad
            part = reference[index[name]] if name in index else reference
            worst["grad"] = max(worst["grad"], float(np.abs(p.grad - part).max()))
        for opt in optimizers:
            opt.step()
            opt.zero_grad()
    for name, p in parallel.named_parameters():
        reference = serial_params[name.replace(".linear.", ".")].data
        part = reference[index[name]] if name in index else reference
        worst["weights"] = max(worst["weights"], float(np.abs(p.data - part).max()))
    local = sum(p.data.size for name, p in parallel.named_parameters() if name in index)
    if comm.is_root:
        Path(report).write_text(json.dumps({
            "ranks": comm.size, "worst": worst, "allreduced_per_step": traffic,
            "formula": communication_per_step(cfg.n_layer, 3 * 8, cfg.d_model),
            "split_parameters_per_rank": local,
            "split_parameters_serial": sum(serial_params[n.replace(".linear.", ".")].data.size for n in index)}))


if __name__ == "__main__":
    main(sys.argv[1])
