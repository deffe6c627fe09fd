"""One training run described by a JSON argument; run by tests/test_distributed.py, either under
`mpiexec -n R` (R ranks) or in the test's own process (a world of one).

Rank 0 writes the final weights (an .npz) and a summary (.json: losses, ranks, what the
communicator moved) next to them, so the test can compare runs with different numbers of ranks.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))          # this checkout's package

from minitransformer import backend                                   # noqa: E402
from minitransformer.distributed import world                        # noqa: E402
from minitransformer.models.gpt import GPTConfig                      # noqa: E402
from minitransformer.presets import start_run                        # noqa: E402
from minitransformer.train import TrainConfig                        # noqa: E402

MODEL = dict(block_size=16, n_layer=2, n_head=2, d_model=16, dropout=0.0)
TRAIN = dict(batch_size=6, eval_interval=2, eval_iters=1, num_samples=0, warmup=2, lr=3e-3,
             grad_clip=0.05, threads=1)                               # a small clip: clipping is active


def text_file(path: Path) -> Path:
    """A small deterministic text (letters in a varying order)."""
    rng = np.random.default_rng(5)
    words = ["".join(rng.choice(list("abcdefghij"), rng.integers(2, 7))) for _ in range(400)]
    path.write_text(" ".join(words) + "\n")
    return path


def run(spec: dict) -> dict:
    comm = world(spec.get("device", "cpu"))
    out = Path(spec["out"])
    data = text_file(Path(spec["data"])) if comm.is_root else Path(spec["data"])
    comm.barrier()                                                    # the text exists before anyone reads it
    train = TrainConfig(**{**TRAIN, "batch_size": spec.get("batch_size", TRAIN["batch_size"])},
                        steps=spec["steps"], dtype=spec["dtype"], zero_stage=spec.get("zero", 0),
                        grad_accum=spec.get("grad_accum", 1), checkpoint_activations=spec.get("recompute", False))
    comm.traffic.reset()
    result = start_run("gpt", GPTConfig(**MODEL), train, data, out_dir=out, device=spec.get("device", "cpu"),
                       resume=spec.get("resume", False), overwrite=not spec.get("resume", False),
                       progress=False, log=lambda *a: None, stop_after=spec.get("stop_after"))
    if comm.is_root:
        weights = {k: backend.to_numpy(v) for k, v in result["model"].state_dict().items()}
        np.savez(spec["weights"], **weights)
        summary = {"ranks": comm.size, "communicator": comm.name, "batch_losses": result["batch_losses"],
                   "steps": result["steps"], "traffic": comm.traffic.summary(),
                   "parameters": result["model"].num_parameters()}
        Path(spec["weights"]).with_suffix(".json").write_text(json.dumps(summary))
    return result


if __name__ == "__main__":
    run(json.loads(sys.argv[1]))
