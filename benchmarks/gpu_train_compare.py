"""Train the same model on the CPU and on the GPU and compare the loss curves (part of gpu_check.sh).

Same preset, seed and batches on both devices: the curves differ only by floating-point rounding
(float32, another summation order on the GPU), so the validation losses should agree closely early
and stay within a few percent. Writes gpu_train_compare.{json,md} into --out.

    python benchmarks/gpu_train_compare.py --out gpu_check --steps 500
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from minitransformer import backend  # noqa: E402
from minitransformer.presets import load_run_config, start_run  # noqa: E402


def run(device: str, family: str, preset: str, steps: int, eval_interval: int, data) -> dict:
    family, model_cfg, train_cfg = load_run_config(family, preset)
    train_cfg = dataclasses.replace(train_cfg, steps=steps, eval_interval=eval_interval, num_samples=0)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        result = start_run(family, model_cfg, train_cfg, data, out_dir=out, device=device, progress=False,
                           log=lambda *a: None)
        backend.synchronize(device)
        seconds = time.perf_counter() - t0
    rows = [{k: r[k] for k in ("step", "train_loss", "val_loss", "tokens_per_s")} for r in result["history"]]
    return {"device": device, "seconds": seconds, "rows": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gpt", help="model family (default: %(default)s)")
    p.add_argument("--preset", default="default", help="its preset (default: %(default)s)")
    p.add_argument("--steps", type=int, default=500, help="optimizer steps on each device")
    p.add_argument("--eval-interval", type=int, default=50)
    p.add_argument("--data", metavar="FILE", help="text to train on (default: the built-in corpus)")
    p.add_argument("--tolerance", type=float, default=0.03, help="largest relative gap of the final "
                   "validation loss that passes (default: %(default)s)")
    p.add_argument("--out", default=".", metavar="DIR", help="where the tables go (default: here)")
    p.add_argument("--devices", nargs=2, default=["cuda", "cpu"], metavar=("GPU", "CPU"),
                   help="the two devices (default: cuda cpu; `cpu cpu` checks the script without a GPU)")
    args = p.parse_args(argv)
    for name in ("steps", "eval_interval"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    gpu, cpu = args.devices
    backend.check_device(gpu)
    runs = {"cuda": run(gpu, args.model, args.preset, args.steps, args.eval_interval, args.data),
            "cpu": run(cpu, args.model, args.preset, args.steps, args.eval_interval, args.data)}
    pairs = list(zip(runs["cpu"]["rows"], runs["cuda"]["rows"]))
    gaps = [abs(g["val_loss"] - c["val_loss"]) / c["val_loss"] for c, g in pairs]
    passed = bool(gaps) and gaps[-1] <= args.tolerance
    summary = {"model": args.model, "preset": args.preset, "steps": args.steps, "runs": runs,
               "relative_val_gap": gaps, "final_relative_gap": gaps[-1] if gaps else None,
               "tolerance": args.tolerance, "passed": passed,
               "speedup_gpu_over_cpu": runs["cpu"]["seconds"] / runs["cuda"]["seconds"]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_train_compare.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [f"{args.model} preset `{args.preset}`, {args.steps} steps on each device, same seed and batches. "
             f"Wall time: CPU {runs['cpu']['seconds']:.1f} s, GPU {runs['cuda']['seconds']:.1f} s "
             f"({summary['speedup_gpu_over_cpu']:.2f}x).", "",
             "| step | CPU val | GPU val | relative gap | CPU tokens/s | GPU tokens/s |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for (c, g), gap in zip(pairs, gaps):
        lines.append(f"| {c['step']} | {c['val_loss']:.4f} | {g['val_loss']:.4f} | {gap:.2e} | "
                     f"{c['tokens_per_s']:,.0f} | {g['tokens_per_s']:,.0f} |")
    lines += ["", f"Final gap {summary['final_relative_gap']:.2e} against a tolerance of {args.tolerance}: "
                  f"{'pass' if passed else 'FAIL'}. Produced by `benchmarks/gpu_train_compare.py`."]
    (out / "gpu_train_compare.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
