"""Where a training step's time goes, piece by piece, in our code and in PyTorch eager.

Each piece of a GPT training step is timed alone at the step's shapes, forward and backward, in both
frameworks with the same threads: the linear layers (the matrix products), exact GELU, LayerNorm,
causal attention (its (T, T) products and softmax) and the AdamW update of every parameter. Times per
call, multiplied by the calls one step makes, give milliseconds per step for each piece. They are
measured with the data already in cache, so they add up to less than a real step.

Times are medians over alternating blocks (ours, PyTorch, ours, ...; `time_alternating` of the
train-step benchmark), so that a change of the shared machine's speed hits both. Without PyTorch only our column is filled.
Usage: python benchmarks/step_breakdown.py [--config small|medium] [--repeats N]
Writes docs/benchmarks/step_breakdown_CONFIG.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from minitransformer import backend  # noqa: E402
from minitransformer.attention.scaled_dot_product import DenseAttention  # noqa: E402
from minitransformer.benchmarking.train_step import CONFIGS, time_alternating  # noqa: E402
from minitransformer.models.gpt import GPT, GPTConfig  # noqa: E402
from minitransformer.nn.functional.activations import gelu_backward, gelu_forward  # noqa: E402
from minitransformer.nn.functional.layernorm import layernorm_backward, layernorm_forward  # noqa: E402
from minitransformer.nn.functional.linear import linear_backward, linear_forward  # noqa: E402
from minitransformer.optim import AdamW, decay_groups  # noqa: E402
from minitransformer.thread_parallel import available_cores  # noqa: E402


def step_pieces(L: int, C: int, linear, gelu, layernorm, attention, adamw) -> dict:
    """piece name -> [(calls per step, closure)] of an L-layer GPT of width C, from one framework's
    builders of the closures."""
    return {"linear layers": [(L, linear(C, 3 * C)), (L, linear(C, C)), (L, linear(C, 4 * C)),
                              (L, linear(4 * C, C))],
            "GELU (exact)": [(L, gelu())], "LayerNorm": [(2 * L + 1, layernorm())],
            "attention (causal)": [(L, attention())], "AdamW update": [(1, adamw())]}


def ours_pieces(cfg: dict, rng) -> dict:
    """name -> (calls per step, closure running one forward + backward of our piece)."""
    L, H, C, T, B, V = (cfg[k] for k in ("n_layer", "n_head", "d_model", "block_size", "batch_size", "vocab_size"))
    N = B * T
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)     # noqa: E731

    def linear(c_in, c_out):
        x, w, b, dy = f32(N, c_in), f32(c_in, c_out), f32(c_out), f32(N, c_out)
        return lambda: linear_backward(dy, linear_forward(x, w, b)[1])

    def gelu():
        x, dy = f32(N, 4 * C), f32(N, 4 * C)
        return lambda: gelu_backward(dy, gelu_forward(x)[1])

    def layernorm():
        x, g, b, dy = f32(N, C), f32(C), f32(C), f32(N, C)
        return lambda: layernorm_backward(dy, layernorm_forward(x, g, b)[1])

    def attention():
        kernel = DenseAttention(H, C // H)
        q, k, v, dout = (f32(B, H, T, C // H) for _ in range(4))
        return lambda: (kernel.forward(q, k, v, causal=True), kernel.backward(dout))

    def adamw():                           # decay on the matrices only, as `train.fit` sets it up
        model = GPT(GPTConfig(n_layer=L, n_head=H, d_model=C, block_size=T, vocab_size=V), seed=0)
        for p in model.parameters():
            p.grad[...] = f32(*p.shape)
        return AdamW(decay_groups(model.named_parameters(), 0.1), lr=1e-3, betas=(0.9, 0.99)).step

    return step_pieces(L, C, linear, gelu, layernorm, attention, adamw)


def torch_pieces(cfg: dict, rng, threads: int):
    """The same pieces in PyTorch eager (autograd for the backward), or None without PyTorch."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    torch.set_num_threads(threads)
    L, H, C, T, B, V = (cfg[k] for k in ("n_layer", "n_head", "d_model", "block_size", "batch_size", "vocab_size"))
    N, D = B * T, C // H
    t32 = lambda *shape, grad=False: torch.from_numpy(                     # noqa: E731
        rng.standard_normal(shape).astype(np.float32)).requires_grad_(grad)

    def backward_of(forward, out_shape, *leaves):
        dy = t32(*out_shape)

        def run():
            for leaf in leaves:
                leaf.grad = None
            forward().backward(dy)
        return run

    def linear(c_in, c_out):
        x, w, b = t32(N, c_in, grad=True), t32(c_out, c_in, grad=True), t32(c_out, grad=True)
        return backward_of(lambda: F.linear(x, w, b), (N, c_out), x, w, b)

    def gelu():
        x = t32(N, 4 * C, grad=True)
        return backward_of(lambda: F.gelu(x), (N, 4 * C), x)

    def layernorm():
        x, g, b = t32(N, C, grad=True), t32(C, grad=True), t32(C, grad=True)
        return backward_of(lambda: F.layer_norm(x, (C,), g, b), (N, C), x, g, b)

    def attention():
        q, k, v = (t32(B, H, T, D, grad=True) for _ in range(3))
        causal = torch.ones(T, T, dtype=torch.bool).triu(1)

        def forward():                       # explicit softmax attention, as in the train-step benchmark
            s = (q @ k.transpose(-2, -1)) * D ** -0.5
            return s.masked_fill(causal, float("-inf")).softmax(-1) @ v
        return backward_of(forward, (B, H, T, D), q, k, v)

    def adamw():
        params = [torch.nn.Parameter(torch.from_numpy(p.data.copy()))
                  for p in GPT(GPTConfig(n_layer=L, n_head=H, d_model=C, block_size=T, vocab_size=V), seed=0).parameters()]
        for p in params:
            p.grad = t32(*p.shape)
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99)).step

    return step_pieces(L, C, linear, gelu, layernorm, attention, adamw)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="small", choices=list(CONFIGS))
    p.add_argument("--repeats", type=int, default=20, help="calls timed per piece and block")
    p.add_argument("--rounds", type=int, default=4, help="alternating blocks per framework")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    args = p.parse_args(argv)
    backend.tune_host_allocator()
    threads = available_cores()
    cfg = CONFIGS[args.config]
    rng = np.random.default_rng(0)
    ours, theirs = ours_pieces(cfg, rng), torch_pieces(cfg, rng, threads)
    times = {name: {"ours": 0.0, "torch": 0.0} for name in ours}
    for name in ours:                      # ms per step: the median call times the calls per step
        for i, (calls, run) in enumerate(ours[name]):
            contenders = {"ours": run, "torch": theirs[name][i][1]} if theirs is not None else {"ours": run}
            for framework, t in time_alternating(contenders, args.repeats * args.rounds, args.rounds).items():
                times[name][framework] += calls * t * 1e3
    rows = []
    for name, t in times.items():
        row = {"piece": name, "calls_per_step": sum(c for c, _ in ours[name]), "ours_ms_per_step": t["ours"]}
        if theirs is not None:
            row["torch_ms_per_step"] = t["torch"]
            row["ratio_vs_torch"] = row["torch_ms_per_step"] / row["ours_ms_per_step"]
        rows.append(row)
        print(f"{name:20s} ours {row['ours_ms_per_step']:7.2f} ms/step"
              + (f" | PyTorch {row['torch_ms_per_step']:7.2f} ms/step | x{row['ratio_vs_torch']:.2f}"
                 if "torch_ms_per_step" in row else ""))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"config": args.config, **cfg, "threads": threads, "numpy": np.__version__, "rows": rows}
    (out / f"step_breakdown_{args.config}.json").write_text(json.dumps(meta, indent=2) + "\n")
    lines = [f"Measured by `benchmarks/step_breakdown.py --config {args.config}` on cpu ({threads} threads): "
             f"L={cfg['n_layer']}, H={cfg['n_head']}, C={cfg['d_model']}, T={cfg['block_size']}, "
             f"B={cfg['batch_size']}; each piece alone, forward + backward, data in cache.", "",
             "| piece | calls per step | ours ms/step | PyTorch ms/step | ours / PyTorch |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        torch_cols = (f"{r['torch_ms_per_step']:.2f} | {r['ratio_vs_torch']:.2f}x" if "torch_ms_per_step" in r
                      else "- | -")
        lines.append(f"| {r['piece']} | {r['calls_per_step']} | {r['ours_ms_per_step']:.2f} | {torch_cols} |")
    lines += ["", "ours / PyTorch is the speed ratio (above 1: we are faster)."]
    (out / f"step_breakdown_{args.config}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}/step_breakdown_{args.config}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
