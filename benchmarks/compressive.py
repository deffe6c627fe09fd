"""The Compressive Transformer against Transformer-XL on recall beyond XL's memory.

The memory-recall task (``tasks/segments.py``, `MemoryRecallTask`) with one value per segment of
T tokens, asked `lag` segments later: a distance of lag * T tokens. Transformer-XL with a memory
of M per layer reaches at most 2 segments back with 2 layers (each layer's memory holds the
previous segment only), so for lag >= 3 it is at chance, 1 / n_values (computed here). The
Compressive Transformer has the same M plus N_cm compressed slots of c memories each, which reach
c * N_cm tokens further: the value is inside that range. Trained for the same steps, batch and
learning rate and seeds, with mean pooling and with the strided convolution; a
Transformer-XL whose uncompressed memory is long enough (M + c * N_cm) is the reference for what
a lossless memory of that reach does. Also measured: the attention-reconstruction loss of the
compressed memory at the end of training (mean pooling has nothing to train; the convolution
learns from that loss alone; a run with that loss switched off keeps the convolution at its
mean-pooling start), and the training step time relative to XL (CPU time of the process).

Usage: python benchmarks/compressive.py [--quick] [--steps 500]
Writes docs/benchmarks/compressive.{json,md} (--out DIR: elsewhere). BLAS is pinned to one thread
unless OPENBLAS_NUM_THREADS is set (tiny matrices on a shared machine).
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from minitransformer.models.compressive import CompressiveConfig, CompressiveTransformer  # noqa: E402
from minitransformer.models.transformer_xl import TransformerXL, TransformerXLConfig  # noqa: E402
from minitransformer.tasks.segments import MemoryRecallTask  # noqa: E402
from minitransformer.train import TrainConfig, fit  # noqa: E402

OUT = ROOT / "docs" / "benchmarks"


def reconstruction_loss(model, task, batches=4):
    """Mean attention-reconstruction loss over validation windows (the model in training mode,
    without caches, so the loss is computed and nothing is kept)."""
    rng = np.random.default_rng(7)
    values = []
    with model.no_grad():
        for _ in range(batches):
            x, _ = task.windows("val", 16, rng)
            memory = None
            for start in range(0, x.shape[1], task.segment_len):
                _, _, memory = model.forward_segment(x[:, start:start + task.segment_len], memory)
                if model.reconstruction_loss is not None:
                    values.append(model.reconstruction_loss)
    return float(np.mean(values))


# --8<-- [start:compressive_benchmark]
def run(args):
    T, M, c, n_cm = args.segment, args.memory, args.rate, args.cmem
    task = MemoryRecallTask(segment_len=T, lag=args.lag, n_values=args.values, n_filler=4, stride=T,
                            eval_segments=args.lag + 2)
    size = dict(segment_len=T, n_layer=2, n_head=4, d_model=args.d_model)
    # (label, class, config, keys each query attends over)
    specs = [(f"Transformer-XL, memory {M}", TransformerXL, TransformerXLConfig(mem_len=M, **size), M + T),
             (f"Compressive, memory {M} + {n_cm} slots x {c} (mean pooling)", CompressiveTransformer,
              CompressiveConfig(mem_len=M, cmem_len=n_cm, compression_rate=c, compression="mean", **size),
              M + n_cm + T),
             (f"Compressive, memory {M} + {n_cm} slots x {c} (strided convolution)", CompressiveTransformer,
              CompressiveConfig(mem_len=M, cmem_len=n_cm, compression_rate=c, compression="conv", **size),
              M + n_cm + T),
             (f"Compressive, memory {M} + {n_cm} slots x {c} (strided convolution, reconstruction loss off)",
              CompressiveTransformer, CompressiveConfig(mem_len=M, cmem_len=n_cm, compression_rate=c,
                                                        compression="conv", recon_weight=0.0, **size),
              M + n_cm + T),
             (f"Transformer-XL, memory {M + c * n_cm} (lossless reference)", TransformerXL,
              TransformerXLConfig(mem_len=M + c * n_cm, **size), M + c * n_cm + T)]
    rows = []
    for label, cls, config, keys in specs:
        accuracies, times, recon = [], [], []
        for seed in range(args.seeds):                                # weights and batches both follow the seed
            cfg = TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, min_lr=args.lr / 10,
                              warmup=max(args.steps // 20, 1), eval_interval=args.steps, eval_iters=1,
                              num_samples=0, weight_decay=0.0, threads=1, seed=seed)
            model = cls(task.adapt(config), seed=seed)
            t = time.process_time()
            fit(model, task, cfg, progress=False, log=lambda *_: None)
            times.append((time.process_time() - t) / args.steps)
            accuracies.append(task.accuracy(model, batches=8))
            if cls is CompressiveTransformer:
                recon.append(reconstruction_loss(model, task))
        row = {"model": label, "accuracy": float(np.mean(accuracies)), "accuracy_per_seed": accuracies,
               "chance": task.chance_accuracy(), "keys_per_query": keys, "step_s": float(np.mean(times)),
               "reconstruction_loss": float(np.mean(recon)) if recon else None}
        rows.append(row)
        print(f"{label:62s} accuracy {', '.join(f'{a:.3f}' for a in accuracies)}  {row['step_s'] * 1e3:.1f} ms/step")
    for r in rows:
        r["step_time_vs_xl"] = r["step_s"] / rows[0]["step_s"]
    return task, rows
# --8<-- [end:compressive_benchmark]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--segment", type=int, default=16, help="T")
    ap.add_argument("--memory", type=int, default=16, help="M: memory per layer")
    ap.add_argument("--cmem", type=int, default=32, help="N_cm: compressed slots per layer")
    ap.add_argument("--rate", type=int, default=2, help="c: compression rate")
    ap.add_argument("--lag", type=int, default=4, help="segments between a value and its question")
    ap.add_argument("--values", type=int, default=8, help="n_values (chance = 1 / n_values)")
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=2, help="seeds per model (weights and batches)")
    ap.add_argument("--quick", action="store_true", help="a few steps (a smoke test)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.seeds = 10, 1
    distance = args.lag * args.segment
    reach_xl = 2 * args.segment + args.segment - 1
    if not reach_xl < distance <= args.memory + args.rate * args.cmem + args.segment:
        raise SystemExit(f"distance {distance} must lie beyond XL's reach ({reach_xl}) and within the compressed "
                         f"range ({args.memory + args.rate * args.cmem + args.segment})")
    task, rows = run(args)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    meta = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "cores": os.cpu_count(),
            "load_average_1min": load, "steps": args.steps, "batch": args.batch, "lr": args.lr,
            "segment": args.segment, "memory": args.memory, "cmem": args.cmem, "rate": args.rate,
            "lag": args.lag, "distance": distance, "n_values": args.values, "d_model": args.d_model,
            "seeds": args.seeds}
    md = [f"Recall of a value {distance} tokens back (one value per segment of {args.segment}, asked {args.lag} "
          f"segments later; {args.values} values, chance {task.chance_accuracy():.3f}). 2 layers, width "
          f"{args.d_model}, {args.steps} steps x batch {args.batch}, lr {args.lr}, seeds 0 to {args.seeds - 1} "
          "(the mean, and each seed in brackets; the reconstruction loss and step time are means). Step "
          f"times: CPU time of the process on a shared {meta['cores']}-core {meta['machine']} machine (load average {load:.1f}), "
          "BLAS on one thread.", "",
          "| model | keys per query | recall accuracy | chance | reconstruction loss | step time vs XL |",
          "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        rec = "-" if r["reconstruction_loss"] is None else f"{r['reconstruction_loss']:.4f}"
        seeds = ", ".join(f"{a:.3f}" for a in r["accuracy_per_seed"])
        md.append(f"| {r['model']} | {r['keys_per_query']} | {r['accuracy']:.3f} ({seeds}) | {r['chance']:.3f} | {rec} "
                  f"| {r['step_time_vs_xl']:.2f} |")
    text = "\n".join(md) + "\n"
    print(text)
    if not args.no_write:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "compressive.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
        (args.out / "compressive.md").write_text(text)
        print(f"wrote {args.out / 'compressive.json'} and {args.out / 'compressive.md'}")


if __name__ == "__main__":
    main()
