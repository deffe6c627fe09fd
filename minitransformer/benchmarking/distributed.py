"""Distributed training measured: speed-up against ranks, where a step's time goes, ZeRO-1's
optimizer memory against its formula, activation checkpointing's memory, tensor parallelism's
traffic.

* **Speed.** The same global batch (strong scaling) on 1 and 2 MPI ranks (``mpiexec -n R``, each
  rank with cores/R BLAS threads), beside one process with one and with all BLAS threads and the
  batch split over two threads (`ThreadParallel`). Each rank times the parts of its step: its
  shard's forward and backward, the wait at a barrier for the slower rank, the bucketed all-reduce
  (as the communicator times it), and the optimizer. The launches alternate (1, 2, 1, 2, ...)
  so that a change in the shared machine's speed hits both; medians over the steps and rounds.
* **ZeRO-1 memory.** Each rank's AdamW moments, measured by tracemalloc around building the
  optimizer, against 2 b Psi (plain) and 2 b ceil(Psi / R) (ZeRO-1).
* **Activation checkpointing.** Peak memory (tracemalloc) and time of a forward and backward with
  and without recomputation, float32, in one process.
* **Tensor parallelism.** Elements all-reduced per step on 2 ranks against 4 L B T C, and the step
  time against the serial model's.

Writes distributed.json and distributed_{speed,zero,recompute,tensor}.md into --out.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np  # benchmark harness: host timing and batches

from .. import backend
from ..distributed import DistributedDataParallel, ZeroAdamW, world
from ..distributed.recompute import checkpoint_blocks
from ..distributed.tensor_parallel import communication_per_step, tensor_parallel
from ..models.gpt import GPT, GPTConfig
from ..optim import AdamW, clip_grad_norm, decay_groups
from ..thread_parallel import ThreadParallel, available_cores
from .output import output_dir, positive_int

MODEL = dict(vocab_size=65, block_size=64, n_layer=4, n_head=4, d_model=128, dropout=0.0)
BATCH = 16


def _batch(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, MODEL["vocab_size"], (BATCH, MODEL["block_size"]))
    return x, np.roll(x, -1, axis=1)


# bytes one rank sends per byte of payload, for the ring algorithms of the chapter
RING_FACTOR = {"allreduce": lambda R: 2 * (R - 1) / R, "reduce_scatter": lambda R: (R - 1) / R,
               "allgather": lambda R: (R - 1) / R, "broadcast": lambda R: (R - 1) / R}


def ring_bytes(payload: dict, ranks: int) -> float:
    """Bytes one rank sends for the collectives whose payloads (bytes handed to each op) are given."""
    return sum(RING_FACTOR[op](ranks) * n for op, n in payload.items())


def _median(values) -> float:
    return float(np.median(values)) if values else 0.0


# -- run on every rank under mpiexec -------------------------------------------------------------
def rank_worker(spec: dict) -> dict | None:
    """Time `spec["steps"]` data-parallel steps on this rank; rank 0 returns the medians (ms)."""
    comm = world("cpu")
    threads = max(1, available_cores() // comm.local_size)
    model = GPT(GPTConfig(**MODEL), seed=0).to("cpu", "float32")
    ddp = DistributedDataParallel(model, comm)
    optimizer = AdamW(decay_groups(model.named_parameters(), 0.1), lr=1e-3)
    if spec.get("zero"):
        optimizer = ZeroAdamW(optimizer, comm, max_norm=1.0)
    batch = _batch()
    parts = {"compute": [], "wait": [], "communication": [], "optimizer": [], "step": []}
    with backend.host_blas_threads_limited(threads):
        for i in range(spec["warmup"] + spec["steps"]):
            comm.barrier()
            comm.traffic.reset()
            t0 = time.perf_counter()
            ddp.forward_backward(batch, 1.0)
            t1 = time.perf_counter()
            comm.barrier()                                   # waiting for the slower rank
            t2 = time.perf_counter()
            if spec.get("zero"):
                optimizer.step()
            else:
                ddp.reduce_gradients()
                clip_grad_norm(model.parameters(), 1.0)
                optimizer.step()
            optimizer.zero_grad()
            t3 = time.perf_counter()
            if i >= spec["warmup"]:
                moved = sum(comm.traffic.seconds.values())
                parts["compute"].append(t1 - t0)
                parts["wait"].append(t2 - t1)
                parts["communication"].append(moved)
                parts["optimizer"].append(t3 - t2 - moved)
                parts["step"].append(t3 - t0)
    summary = {k: 1e3 * _median(v) for k, v in parts.items()}
    summary.update(ranks=comm.size, blas_threads=threads, zero=bool(spec.get("zero")),
                   bytes_per_step=ring_bytes(comm.traffic.bytes, comm.size),
                   state_bytes=optimizer.state_bytes() if spec.get("zero") else None)
    return summary if comm.is_root else None


def tensor_worker(spec: dict) -> dict | None:
    """Serial and tensor-parallel forward+backward of the same GPT; rank 0 returns ms and traffic."""
    comm = world("cpu")
    threads = max(1, available_cores() // comm.local_size)
    serial = GPT(GPTConfig(**MODEL), seed=0).to("cpu", "float32")
    parallel = tensor_parallel(copy.deepcopy(serial), comm)
    batch = _batch()
    times = {"serial": [], "tensor parallel": []}
    with backend.host_blas_threads_limited(threads):
        for i in range(spec["warmup"] + spec["steps"]):
            for name, model in (("serial", serial), ("tensor parallel", parallel)):
                comm.barrier()
                comm.traffic.reset()
                t0 = time.perf_counter()
                model.forward(*batch)
                model.backward()
                model.zero_grad()
                if i >= spec["warmup"]:
                    times[name].append(time.perf_counter() - t0)
    return {"ranks": comm.size, "serial_ms": 1e3 * _median(times["serial"]),
            "parallel_ms": 1e3 * _median(times["tensor parallel"]),
            "allreduce_seconds": comm.traffic.seconds["allreduce"],
            "allreduced_elements": comm.traffic.elements["allreduce"],
            "formula": communication_per_step(MODEL["n_layer"], BATCH * MODEL["block_size"], MODEL["d_model"]),
            "split_parameters_per_rank": sum(p.data.size for p in parallel.parameters()),
            "parameters_serial": serial.num_parameters()} if comm.is_root else None


# -- run in the launching process ------------------------------------------------------------------
def _launch(ranks: int, kind: str, spec: dict) -> dict:
    """Run a worker on `ranks` MPI ranks and return rank 0's result."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "OMPI_"))}
    out = subprocess.run(["mpiexec", "-n", str(ranks), sys.executable, "-m", "minitransformer.benchmarking.distributed",
                          "--worker", kind, json.dumps(spec)], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).resolve().parents[2], timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"mpiexec -n {ranks} failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _one_process(threads: int, split: int, steps: int, warmup: int) -> float:
    """Median ms of a step in this process: BLAS on `threads`, the batch over `split` threads."""
    model = GPT(GPTConfig(**MODEL), seed=0).to("cpu", "float32")
    optimizer = AdamW(decay_groups(model.named_parameters(), 0.1), lr=1e-3)
    parallel = ThreadParallel(model, split) if split > 1 else None
    batch, times = _batch(), []
    with backend.host_blas_threads_limited(threads):
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            if parallel is not None:
                parallel.forward_backward(batch)
            else:
                model.forward(*batch)
                model.backward()
            clip_grad_norm(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return 1e3 * _median(times)


def zero_memory(ranks_list=(1, 2, 4, 8)) -> list[dict]:
    """Bytes of AdamW moments per rank, measured (tracemalloc around building the optimizer) and
    by formula, for plain AdamW and ZeRO-1 with R ranks (the shard of rank 0; built in a world of
    one with the rank's shard size, which is all the memory depends on)."""
    from ..distributed.communicator import LocalWorld
    rows = []
    for R in ranks_list:
        model = GPT(GPTConfig(**MODEL), seed=0).to("cpu", "float32")
        psi, b = model.num_parameters(), 4
        fake = LocalWorld()
        fake.size = R                                       # rank 0 of R: only the shard's size matters
        inner = AdamW(decay_groups(model.named_parameters(), 0.1), lr=1e-3)
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        plain = AdamW(decay_groups(model.named_parameters(), 0.1), lr=1e-3)
        plain_bytes = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        zero = ZeroAdamW(inner, fake)
        rows.append({"ranks": R, "parameters": psi, "plain_measured": plain_bytes, "plain_formula": 2 * b * psi,
                     "zero_measured": zero.state_bytes(), "zero_formula": 2 * b * -(-psi // R)})
        del plain
    return rows


def _peak(model, batch) -> tuple[int, float]:
    """(peak bytes above the start, seconds) of one forward and backward, traced."""
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    model.forward(*batch)
    model.backward()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] - start
    tracemalloc.stop()
    model.zero_grad()
    return peak, seconds


def recompute_memory(repeats: int = 3) -> list[dict]:
    """Peak memory and time of forward+backward with and without activation checkpointing."""
    rows = []
    for n_layer in (2, 4, 8):
        cfg = GPTConfig(**{**MODEL, "n_layer": n_layer})
        plain = GPT(cfg, seed=0).to("cpu", "float32")
        recomputed = copy.deepcopy(plain)
        checkpoint_blocks(recomputed)
        batch = _batch()
        _peak(plain, batch), _peak(recomputed, batch)       # warm-up
        results = {"plain": [], "recomputed": []}
        for _ in range(repeats):                            # alternating
            results["plain"].append(_peak(plain, batch))
            results["recomputed"].append(_peak(recomputed, batch))
        p_mem = min(m for m, _ in results["plain"])
        r_mem = min(m for m, _ in results["recomputed"])
        rows.append({"n_layer": n_layer, "plain_peak": p_mem, "recomputed_peak": r_mem,
                     "plain_s": _median([s for _, s in results["plain"]]),
                     "recomputed_s": _median([s for _, s in results["recomputed"]])})
    return rows


def _mib(n) -> str:
    return f"{n / 2 ** 20:.2f}"


def write_tables(result: dict, out: Path) -> None:
    speed = result["speed"]
    base = speed["1 process, 1 BLAS thread"]["step"]
    lines = ["| run | BLAS threads per process | step (ms) | speed-up vs 1 thread | compute | wait | "
             "communication | optimizer | sent per rank per step, ring formula (MiB) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in speed.items():
        parts = " | ".join(f"{row[k]:.1f}" if k in row else "-" for k in ("compute", "wait", "communication",
                                                                          "optimizer"))
        sent = _mib(row["bytes_per_step"]) if "bytes_per_step" in row else "-"
        lines.append(f"| {name} | {row['blas_threads']} | {row['step']:.1f} | {base / row['step']:.2f} | {parts} | "
                     f"{sent} |")
    lines += ["", f"GPT {MODEL['n_layer']} layers, width {MODEL['d_model']}, global batch {BATCH} x "
              f"{MODEL['block_size']} tokens, float32, AdamW; medians over {result['steps']} steps x "
              f"{result['rounds']} alternating rounds, parts in ms. {result['cores']} cores, shared with other "
              f"jobs (load average {result['load']}). Produced by `benchmarks/distributed.py`."]
    (out / "distributed_speed.md").write_text("\n".join(lines) + "\n")

    lines = ["| ranks R | parameters | AdamW state, plain: measured | formula 2bΨ | ZeRO-1 per rank: measured | "
             "formula 2b⌈Ψ/R⌉ |", "| --- | --- | --- | --- | --- | --- |"]
    for r in result["zero"]:
        lines.append(f"| {r['ranks']} | {r['parameters']:,} | {r['plain_measured']:,} | {r['plain_formula']:,} | "
                     f"{r['zero_measured']:,} | {r['zero_formula']:,} |")
    lines += ["", "Bytes, float32 (b = 4). Plain: tracemalloc around building AdamW; ZeRO-1: the moment shards "
              "one rank holds. Produced by `benchmarks/distributed.py`."]
    (out / "distributed_zero.md").write_text("\n".join(lines) + "\n")

    lines = ["| blocks L | peak memory, plain (MiB) | with recomputation (MiB) | saved | time ratio (recomputed / plain) |",
             "| --- | --- | --- | --- | --- |"]
    for r in result["recompute"]:
        lines.append(f"| {r['n_layer']} | {_mib(r['plain_peak'])} | {_mib(r['recomputed_peak'])} | "
                     f"{1 - r['recomputed_peak'] / r['plain_peak']:.0%} | {r['recomputed_s'] / r['plain_s']:.2f} |")
    lines += ["", f"One forward and backward, float32, batch {BATCH} x {MODEL['block_size']}, width "
              f"{MODEL['d_model']}; peak host memory above the start (tracemalloc, the smallest of the "
              "alternating repeats), times their median. Produced by `benchmarks/distributed.py`."]
    (out / "distributed_recompute.md").write_text("\n".join(lines) + "\n")

    t = result["tensor"]
    lines = ["| quantity | value |", "| --- | --- |",
             f"| ranks | {t['ranks']} |",
             f"| elements all-reduced per forward+backward (counted) | {t['allreduced_elements']:,} |",
             f"| formula 4 L B T C | {t['formula']:,} |",
             f"| parameters per rank / serial | {t['split_parameters_per_rank']:,} / {t['parameters_serial']:,} |",
             f"| forward+backward, serial (ms) | {t['serial_ms']:.1f} |",
             f"| forward+backward, tensor parallel (ms) | {t['parallel_ms']:.1f} |",
             f"| of which all-reduce (ms, last step) | {1e3 * t['allreduce_seconds']:.1f} |"]
    lines += ["", f"Same GPT and batch as the speed table; each rank with {result['cores'] // t['ranks']} BLAS "
              "thread(s); medians. Produced by `benchmarks/distributed.py`."]
    (out / "distributed_tensor.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=positive_int, default=10, help="timed steps per run")
    parser.add_argument("--rounds", type=positive_int, default=3, help="alternating rounds of launches")
    parser.add_argument("--out", help="output directory (default: the current directory)")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:                                          # inside mpiexec
        kind, spec = args.worker
        res = (rank_worker if kind == "data" else tensor_worker)(json.loads(spec))
        if res is not None:
            print(json.dumps(res))
        return 0
    if shutil.which("mpiexec") is None:
        raise SystemExit("needs mpiexec: pip install 'minitransformer[distributed]'")
    out = output_dir(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = {"steps": args.steps, "warmup": 2}
    cores = available_cores()
    names = {"1 process, 1 BLAS thread": [], f"1 process, {cores} BLAS threads": [],
             "1 process, batch over 2 threads": [], "1 MPI rank": [], "2 MPI ranks": [], "2 MPI ranks, ZeRO-1": []}
    runs = {name: [] for name in names}
    for _ in range(args.rounds):
        runs["1 process, 1 BLAS thread"].append({"step": _one_process(1, 1, args.steps, 2), "blas_threads": 1})
        runs[f"1 process, {cores} BLAS threads"].append({"step": _one_process(cores, 1, args.steps, 2),
                                                         "blas_threads": cores})
        runs["1 process, batch over 2 threads"].append({"step": _one_process(1, 2, args.steps, 2), "blas_threads": 1})
        runs["1 MPI rank"].append(_launch(1, "data", spec))
        runs["2 MPI ranks"].append(_launch(2, "data", spec))
        runs["2 MPI ranks, ZeRO-1"].append(_launch(2, "data", {**spec, "zero": 1}))
        print(f"round done: {[round(r[-1]['step'], 1) for r in runs.values()]} ms", flush=True)
    speed = {}
    for name, rows in runs.items():
        merged = {k: _median([r[k] for r in rows]) for k in rows[0] if isinstance(rows[0][k], (int, float))
                  and not isinstance(rows[0][k], bool) and rows[0][k] is not None}
        merged["blas_threads"] = rows[0]["blas_threads"]
        speed[name] = merged
    result = {"speed": speed, "steps": args.steps, "rounds": args.rounds, "cores": cores,
              "load": " ".join(f"{x:.1f}" for x in os.getloadavg()), "machine": platform.machine(),
              "zero": zero_memory(), "recompute": recompute_memory(),
              "tensor": _launch(2, "tensor", spec), "model": MODEL, "batch": BATCH}
    (out / "distributed.json").write_text(json.dumps(result, indent=1))
    write_tables(result, out)
    for name in ("speed", "zero", "recompute", "tensor"):
        print((out / f"distributed_{name}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
