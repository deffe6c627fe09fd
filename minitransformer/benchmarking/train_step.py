"""Training throughput: forward + backward + AdamW step, tokens/s, for named GPT sizes.

Reports, measured in the same run:
* our tokens/s and the achieved FLOP rate as a fraction of this machine's float32 matmul rate, with
  the step run on one Python thread (BLAS on every core) and, on the CPU, with the batch split over
  threads (`ThreadParallel`, one BLAS thread each) the way `minitransformer train` splits it;
* the split of the step between matrix multiplies and everything else (the step's own GEMMs are
  replayed alone with the same shapes and timed);
* where PyTorch is installed, the identical model in PyTorch eager on the CPU with the same number
  of threads, and our throughput as a ratio to it. The two frameworks run in alternating blocks of
  steps so that a change in the shared machine's speed during the run hits all of them.

Writes train_step.json and train_step.md into --out (default: the current directory);
``python benchmarks/train_step.py`` passes ``--out docs/benchmarks`` to regenerate the documentation's.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np  # benchmark harness: host timing and the matmul-rate probe

from .. import backend
from ..thread_parallel import auto_threads, available_cores
from .output import output_dir, positive_int

CONFIGS = {
    "small": dict(n_layer=4, n_head=4, d_model=128, block_size=64, batch_size=12, vocab_size=65),
    "medium": dict(n_layer=6, n_head=6, d_model=384, block_size=256, batch_size=4, vocab_size=65),
}


def matmul_rate(device: str, n: int = 1024, repeats: int = 10) -> float:
    """float32 GFLOP/s of an (n, n) @ (n, n) product, best of `repeats`."""
    xp = backend.xp_for(device)
    a = xp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype=np.float32)
    b = xp.asarray(np.random.default_rng(1).standard_normal((n, n)), dtype=np.float32)
    best = float("inf")
    for _ in range(repeats):
        backend.synchronize(device)
        t = time.perf_counter()
        a @ b
        backend.synchronize(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def step_flops(cfg: dict) -> float:
    """Matmul FLOPs of one forward+backward: 3x the forward's (each GEMM has two in backward)."""
    L, C, T, B, V = cfg["n_layer"], cfg["d_model"], cfg["block_size"], cfg["batch_size"], cfg["vocab_size"]
    N = B * T
    per_layer = 2 * N * C * (3 * C) + 2 * N * C * C + 2 * 2 * N * C * 4 * C   # qkv, proj, ffn
    attention = 2 * 2 * B * T * T * C                                       # QK^T and PV
    head = 2 * N * C * V
    return 3.0 * (L * (per_layer + attention) + head)


def gemm_shapes(cfg: dict):
    """(batch, m, k, n) of every matrix multiply in one forward+backward of the GPT."""
    L, C, T, B, V, H = (cfg["n_layer"], cfg["d_model"], cfg["block_size"], cfg["batch_size"],
                        cfg["vocab_size"], cfg["n_head"])
    N, D = B * T, C // H
    shapes = []
    for (k, n) in [(C, 3 * C), (C, C), (C, 4 * C), (4 * C, C)]:
        shapes += [(1, N, k, n), (1, N, n, k), (1, k, N, n)] * L     # y=xW, dx=dyW^T, dW=x^T dy
    for _ in range(L):
        shapes += [(B * H, T, D, T), (B * H, T, T, D)]                # S=QK^T, O=PV
        shapes += [(B * H, T, D, T), (B * H, T, T, D),                # dP=dO V^T, dV=P^T dO
                   (B * H, T, T, D), (B * H, T, T, D)]                # dQ=dS K, dK=dS^T Q
    shapes += [(1, N, C, V), (1, N, V, C), (1, V, N, C)]
    return shapes


def time_gemms(cfg: dict, device: str, repeats: int = 5) -> float:
    """Seconds to run the step's GEMMs alone (median of repeats)."""
    xp = backend.xp_for(device)
    rng = np.random.default_rng(0)
    operands = [(xp.asarray(rng.standard_normal((b, m, k)), dtype=np.float32),
                 xp.asarray(rng.standard_normal((b, k, n)), dtype=np.float32)) for b, m, k, n in gemm_shapes(cfg)]
    times = []
    for _ in range(repeats):
        backend.synchronize(device)
        t = time.perf_counter()
        for a, b in operands:
            a @ b
        backend.synchronize(device)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def ours_step(cfg: dict, device: str, threads: int = 1):
    """A closure running one training step of our GPT as `train.fit` runs it (forward, backward,
    clip, AdamW with decay on the matrices only); with threads > 1 the batch is split over that many
    threads (ThreadParallel, CPU only)."""
    from ..models.gpt import GPT, GPTConfig
    from ..optim import clip_grad_norm
    from ..tasks import Task
    from ..thread_parallel import ThreadParallel
    from ..train import TrainConfig, make_optimizer
    mc = GPTConfig(**{k: cfg[k] for k in ("n_layer", "n_head", "d_model", "block_size", "vocab_size")})
    model = GPT(mc, seed=0).to(device)
    opt = make_optimizer(model, TrainConfig(lr=1e-3, beta1=0.9, beta2=0.99, weight_decay=0.1))
    task = Task()                                   # a batch (inputs, targets) of the model's contract
    parallel = ThreadParallel(model, threads, task) if threads > 1 else None
    rng = np.random.default_rng(0)
    B, T, V = cfg["batch_size"], cfg["block_size"], cfg["vocab_size"]

    def step():
        batch = (rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T)))     # host arrays, as fit's
        if parallel is not None:
            parallel.forward_backward(batch)
        else:
            task.forward_backward(model, batch)
        clip_grad_norm(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        backend.synchronize(device)
    return step


def torch_step(cfg: dict, threads: int):
    """A closure running one step of the same GPT in PyTorch eager (CPU), or None without torch."""
    try:
        import torch
        import torch.nn as tnn
        import torch.nn.functional as F
    except ImportError:
        return None
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    L, H, C, T, V, B = (cfg["n_layer"], cfg["n_head"], cfg["d_model"], cfg["block_size"],
                        cfg["vocab_size"], cfg["batch_size"])

    class Block(tnn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = tnn.LayerNorm(C), tnn.LayerNorm(C)
            self.qkv, self.proj = tnn.Linear(C, 3 * C), tnn.Linear(C, C)
            self.fc1, self.fc2 = tnn.Linear(C, 4 * C), tnn.Linear(4 * C, C)

        def forward(self, x):
            q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
            q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
            # explicit softmax attention (not the fused SDPA kernel) to compare like with like
            s = (q @ k.transpose(-2, -1)) * (C // H) ** -0.5
            s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
            y = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
            x = x + self.proj(y)
            return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))

    class TorchGPT(tnn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = tnn.Embedding(V, C), tnn.Embedding(T, C)
            self.blocks = tnn.ModuleList(Block() for _ in range(L))
            self.ln_f = tnn.LayerNorm(C)

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(T))
            for b in self.blocks:
                x = b(x)
            logits = self.ln_f(x) @ self.wte.weight.T
            return F.cross_entropy(logits.view(-1, V), targets.view(-1))

    model = TorchGPT()
    decay = [p for p in model.parameters() if p.dim() >= 2]   # as ours: matrices decay, vectors do not
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))

    def step():
        x = torch.randint(0, V, (B, T))
        y = torch.randint(0, V, (B, T))
        loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    step.version = torch.__version__
    return step


def time_alternating(steps: dict, n: int, rounds: int = 4, warmup: int = 2) -> dict:
    """Median seconds per call of each closure, timed in `rounds` alternating blocks of about n/rounds
    calls (ours, PyTorch, ours, PyTorch, ...) so that a drift of the shared machine's speed affects
    both. Blocks rather than single calls: each framework's idle worker threads keep spinning for a
    while after it stops, which would slow the other one down; the first `warmup` calls of every
    block are not counted."""
    times = {name: [] for name in steps}
    per_block = max(1, -(-n // rounds))
    for _ in range(rounds):
        for name, step in steps.items():
            for i in range(warmup + per_block):
                t = time.perf_counter()
                step()
                if i >= warmup:
                    times[name].append(time.perf_counter() - t)
    return {name: float(np.median(ts)) for name, ts in times.items()}


def write_markdown(meta: dict, path: Path, device: str) -> None:
    """The Markdown table of a run (kept narrow enough to read without scrolling)."""
    lines = [f"Measured by `benchmarks/train_step.py` on {device} ({meta['threads']} threads); float32 "
             f"matmul rate {meta['matmul_gflops']:.0f} GFLOP/s.", "",
             "| config | run as | ms/step | tokens/s | % of matmul rate | PyTorch ms/step | ours / PyTorch |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in meta["rows"]:
        name = (f"{r['config']}: L={r['n_layer']}, H={r['n_head']}, C={r['d_model']}, T={r['block_size']}, "
                f"B={r['batch_size']}")
        runs = [(f"1 thread, BLAS on {meta['threads']} (GEMMs {r['gemm_share']:.0%} of the step)", "")]
        if "threaded_ms_per_step" in r:
            runs.append((f"batch split over {r['split_threads']} threads", "threaded_"))
        for label, key in runs:
            torch_cols = (f"{r['torch_ms_per_step']:.1f} | {r[key + 'ratio_vs_torch']:.2f}x"
                          if "torch_ms_per_step" in r else "- | -")
            lines.append(f"| {name} | {label} | {r[key + 'ms_per_step']:.1f} | {r[key + 'tokens_per_s']:,.0f} | "
                         f"{r[key + 'fraction_of_matmul_rate']:.0%} | {torch_cols} |")
            name = ""
    lines += ["", "ours / PyTorch is the throughput ratio (above 1: we are faster). PyTorch runs eager on "
              "the same threads; the batch split is how `minitransformer train` runs on the CPU."]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="minitransformer bench train-step", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--steps", type=positive_int, default=20, help="timed steps per configuration")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--out", metavar="DIR", help="directory for train_step.json and .md "
                   "(default: the current directory)")
    args = p.parse_args(argv)
    out = output_dir(args.out)                     # checked before the measurement
    backend.check_device(args.device)
    backend.tune_host_allocator()          # both frameworks run in this process with the same allocator
    threads = available_cores()
    peak = matmul_rate(args.device)
    print(f"float32 matmul rate (1024^3): {peak:.1f} GFLOP/s on {args.device}, {threads} threads")
    rows = []
    for name in args.configs:
        cfg = CONFIGS[name]
        tokens = cfg["batch_size"] * cfg["block_size"]
        contenders = {"ours": ours_step(cfg, args.device)}
        split = (auto_threads(cfg["batch_size"], cfg["block_size"], cfg["d_model"])   # as the trainer splits
                 if args.device == "cpu" else 1)
        if split > 1:
            contenders["threaded"] = ours_step(cfg, args.device, threads=split)
        torch_fn = None if (args.no_torch or args.device != "cpu") else torch_step(cfg, threads)
        if torch_fn is not None:
            contenders["torch"] = torch_fn
        timed = time_alternating(contenders, args.steps)
        gemm = time_gemms(cfg, args.device)
        row = {"config": name, **cfg, "device": args.device, "gemm_ms": gemm * 1e3,
               "gemm_share": gemm / timed["ours"]}
        for label, key in (("ours", ""), ("threaded", "threaded_")):
            if label in timed:
                t = timed[label]
                row.update({key + "ms_per_step": t * 1e3, key + "tokens_per_s": tokens / t,
                            key + "gflops": step_flops(cfg) / t / 1e9,
                            key + "fraction_of_matmul_rate": step_flops(cfg) / t / 1e9 / peak})
                if torch_fn is not None:
                    row[key + "ratio_vs_torch"] = timed["torch"] / t
        if split > 1:
            row["split_threads"] = split
        if torch_fn is not None:
            row.update(torch_version=torch_fn.version, torch_ms_per_step=timed["torch"] * 1e3,
                       torch_tokens_per_s=tokens / timed["torch"])
        rows.append(row)
        msg = (f"{name}: {row['ms_per_step']:.1f} ms/step, {row['tokens_per_s']:,.0f} tok/s, "
               f"{row['fraction_of_matmul_rate']:.0%} of matmul rate, GEMMs {row['gemm_share']:.0%} of the step")
        if split > 1:
            msg += f" | split over {split} threads: {row['threaded_ms_per_step']:.1f} ms/step"
        if torch_fn is not None:
            msg += f" | PyTorch {row['torch_ms_per_step']:.1f} ms/step -> ours x{row['ratio_vs_torch']:.2f}"
            if split > 1:
                msg += f", split x{row['threaded_ratio_vs_torch']:.2f}"
        print(msg)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.processor() or platform.machine(), "threads": threads,
            "matmul_gflops": peak, "numpy": np.__version__, "rows": rows}
    (out / "train_step.json").write_text(json.dumps(meta, indent=2) + "\n")
    write_markdown(meta, out / "train_step.md", args.device)
    print(f"wrote train_step.json and train_step.md in {out.resolve()}")
    return 0
