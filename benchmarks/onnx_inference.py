"""Inference speed and size: minitransformer on NumPy against the same GPT exported to ONNX and run by
onnxruntime, in float32 and with int8 QDQ weights, on the CPU.

For each model size (random weights: speed does not depend on their values) it measures
* the file size of the float and the int8 ONNX export (and of our float checkpoint's weights),
* a forward pass over a full batch ("prefill": B sequences of the whole context),
* greedy decoding of new tokens for one sequence, two ways: with a KV cache (ours, and the graph
  exported with `kv_cache=True`) and recomputing the whole context at every step (ours with
  use_cache=False, and the plain graph),
* the largest logit difference of each runtime from NumPy float32.
Runtimes: NumPy float32 (the baseline of every ratio), NumPy int8 (our QuantizedLinear, dequantised
matmul), onnxruntime float32, onnxruntime int8 at accuracy level 1 (dequantised weights, float32
math: the same numbers as our int8 model) and at level 4 (onnxruntime's default for these kernels:
activations quantized to int8 on the fly too). All run alternately, best of --repeats, on --threads
threads each (NumPy's BLAS and onnxruntime's intra-op pool alike).

Writes docs/benchmarks/onnx_inference.{json,md} (--out: elsewhere).
Usage: python benchmarks/onnx_inference.py [--threads 1] [--repeats 7] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from _blas_threads import THREADS  # noqa: E402  pins BLAS threads before numpy loads

import numpy as np  # noqa: E402  benchmark harness: host data and timing

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from minitransformer.compress.quantize import quantize_model  # noqa: E402
from minitransformer.generate import generate  # noqa: E402
from minitransformer.interop.onnx_graph import OPSET, gpt_to_onnx  # noqa: E402
from minitransformer.interop.onnx_run import greedy_generate, onnx_logits, onnx_session  # noqa: E402
from minitransformer.models.gpt import GPT, GPTConfig  # noqa: E402

SIZES = {  # name -> GPTConfig fields; "small" is the default preset's shape
    "small": dict(vocab_size=96, block_size=64, n_layer=4, n_head=4, d_model=128),
    "medium": dict(vocab_size=2048, block_size=128, n_layer=6, n_head=6, d_model=384),
}
RUNTIMES = ["numpy float32", "numpy int8", "onnx float32", "onnx int8 (level 1)", "onnx int8 (level 4)"]


def best_times(fns: dict, repeats: int) -> dict:
    """Best seconds of each fn, run alternately (one warm-up each) so load hits all alike."""
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: min(v) for k, v in times.items()}


def measure(size: str, batch: int, prompt_len: int, new_tokens: int, repeats: int, threads: int) -> dict:
    cfg = GPTConfig(**SIZES[size])
    model = GPT(cfg, seed=0).eval()
    int8_model = GPT(cfg, seed=0).eval()
    quantize_model(int8_model, "int8")
    sizes, sessions, cached = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, m in (("float", model), ("int8", int8_model)):
            for kv in (False, True):
                path = Path(tmp) / f"{kind}-{kv}.onnx"
                path.write_bytes(gpt_to_onnx(m, kv_cache=kv).SerializeToString())
                sizes.setdefault(kind, path.stat().st_size)
                target = cached if kv else sessions
                if kind == "float":
                    target["onnx float32"] = onnx_session(path, threads)
                else:
                    target["onnx int8 (level 1)"] = onnx_session(path, threads)
                    target["onnx int8 (level 4)"] = onnx_session(path, threads, int8_activations=True)
    weights_bytes = sum(a.nbytes for a in model.state_dict().values())

    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.vocab_size, (batch, cfg.block_size))
    prompt = ids[:1, :prompt_len]

    def numpy_forward(m):
        with m.no_grad():
            return m.forward(ids)[0]
    forward = {"numpy float32": lambda: numpy_forward(model), "numpy int8": lambda: numpy_forward(int8_model)}
    forward.update({k: (lambda s=s: onnx_logits(s, ids)) for k, s in sessions.items()})
    decode = {"numpy float32": lambda: generate(model, prompt, new_tokens, greedy=True),
              "numpy int8": lambda: generate(int8_model, prompt, new_tokens, greedy=True)}
    decode.update({k: (lambda s=s: greedy_generate(s, prompt, new_tokens, cfg.block_size))
                   for k, s in cached.items()})
    recompute = {"numpy float32": lambda: generate(model, prompt, new_tokens, greedy=True, use_cache=False),
                 "numpy int8": lambda: generate(int8_model, prompt, new_tokens, greedy=True, use_cache=False)}
    recompute.update({k: (lambda s=s: greedy_generate(s, prompt, new_tokens, cfg.block_size))
                      for k, s in sessions.items()})

    reference = numpy_forward(model)
    errors = {k: float(np.abs(f() - reference).max()) for k, f in forward.items()}
    reference_tokens = decode["numpy float32"]()
    tokens_equal = {k: bool(np.array_equal(decode[k](), reference_tokens)
                            and np.array_equal(recompute[k](), reference_tokens)) for k in decode}
    t_fwd = best_times(forward, repeats)
    t_dec = best_times(decode, repeats)
    t_rec = best_times(recompute, repeats)
    return {"size": size, "config": SIZES[size], "parameters": model.num_parameters(),
            "batch": batch, "prompt": prompt_len, "new_tokens": new_tokens,
            "onnx_bytes": sizes, "checkpoint_weight_bytes": weights_bytes,
            "rows": [{"runtime": k, "forward_ms": 1e3 * t_fwd[k], "forward_speedup": t_fwd["numpy float32"] / t_fwd[k],
                      "decode_ms_per_token": 1e3 * t_dec[k] / new_tokens,
                      "decode_speedup": t_dec["numpy float32"] / t_dec[k],
                      "recompute_ms_per_token": 1e3 * t_rec[k] / new_tokens,
                      "recompute_speedup": t_rec["numpy float32"] / t_rec[k],
                      "max_logit_error": errors[k], "same_tokens": tokens_equal[k]} for k in RUNTIMES]}


def markdown(results: list[dict], machine: str, repeats: int) -> str:
    lines = [f"Measured by `benchmarks/onnx_inference.py` on the CPU ({machine}), float32, best of {repeats} "
             "(all runtimes alternate), on a machine shared with other jobs: read the ratios, not the "
             "milliseconds. Speed-up = NumPy float32 time / runtime time, in the same run and the same mode. "
             "Forward: a batch of B sequences of the whole context. Decoding: greedy new tokens for one "
             "sequence, with a KV cache (ours; the graph exported with `--kv-cache`) or recomputing the "
             "context at every step (ours with `use_cache=False`; the plain graph). Logit error: "
             f"max |logits - NumPy float32 logits| on the forward batch. ONNX opset {OPSET}.", ""]
    for r in results:
        c = r["config"]
        lines += [f"**{r['size']}**: {r['parameters']:,} parameters (L={c['n_layer']}, C={c['d_model']}, "
                  f"H={c['n_head']}, V={c['vocab_size']}, T={c['block_size']}); forward B={r['batch']}, "
                  f"decoding {r['new_tokens']} tokens after a prompt of {r['prompt']}. File size: float32 ONNX "
                  f"{r['onnx_bytes']['float'] / 1e6:.2f} MB, int8 ONNX {r['onnx_bytes']['int8'] / 1e6:.2f} MB "
                  f"({r['onnx_bytes']['int8'] / r['onnx_bytes']['float']:.2f}x); our float32 weights "
                  f"{r['checkpoint_weight_bytes'] / 1e6:.2f} MB.", "",
                  "| runtime | forward (ms) | speed-up | decoding, KV cache (ms/token) | speed-up | "
                  "decoding, recomputed (ms/token) | speed-up | max logit error | same greedy tokens |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for row in r["rows"]:
            lines.append(f"| {row['runtime']} | {row['forward_ms']:.2f} | {row['forward_speedup']:.2f} | "
                         f"{row['decode_ms_per_token']:.2f} | {row['decode_speedup']:.2f} | "
                         f"{row['recompute_ms_per_token']:.2f} | {row['recompute_speedup']:.2f} | "
                         f"{row['max_logit_error']:.1e} | {'yes' if row['same_tokens'] else 'no'} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", default="1", help="threads of NumPy's BLAS and of onnxruntime (default 1)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--batch", type=int, default=8, help="sequences in the forward batch")
    p.add_argument("--prompt", type=int, default=8, help="prompt length for decoding")
    p.add_argument("--new-tokens", type=int, default=32, help="greedy tokens to decode")
    p.add_argument("--quick", action="store_true", help="the small size only, 2 repeats")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"), help="directory for the tables")
    args = p.parse_args(argv)
    sizes = ["small"] if args.quick else list(SIZES)
    repeats = 2 if args.quick else args.repeats
    load_before = os.getloadavg()[0]
    results = []
    for size in sizes:
        r = measure(size, args.batch, args.prompt, args.new_tokens, repeats, int(args.threads))
        results.append(r)
        for row in r["rows"]:
            print(f"{size:7s} {row['runtime']:20s} forward {row['forward_ms']:8.2f} ms ({row['forward_speedup']:5.2f}x)  "
                  f"decode {row['decode_ms_per_token']:7.2f} ms/token ({row['decode_speedup']:5.2f}x)  "
                  f"recomputed {row['recompute_ms_per_token']:7.2f} ms/token ({row['recompute_speedup']:5.2f}x)  "
                  f"error {row['max_logit_error']:.1e}  same tokens {row['same_tokens']}")
    import onnxruntime
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {THREADS} thread(s), "
               f"NumPy {np.__version__}, onnxruntime {onnxruntime.__version__}; load average "
               f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "onnx_inference.json").write_text(json.dumps({"machine": machine, "repeats": repeats,
                                                         "results": results}, indent=1) + "\n")
    (out / "onnx_inference.md").write_text(markdown(results, machine, repeats))
    print(f"wrote {out}/onnx_inference.{{json,md}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
