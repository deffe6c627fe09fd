"""Transformer-XL against a GPT of the same size: bits per character, a task only memory solves,
and evaluation speed against recomputing a sliding window.

1. **Bits per character** on the built-in corpus (character level). Trained for the same steps,
   batch and learning rate: Transformer-XL (segments of T, memory M, read in consecutive order),
   a GPT of the same size and context T (it reads each segment alone), and a GPT of context T + M
   (the same attention span as one XL layer). All read the same validation windows of
   `--eval-segments` segments; XL is evaluated without memory (what its relative positions alone
   give), with its training memory and with longer ones.
2. **Memory recall** (``tasks/segments.py``, `MemoryRecallTask`): at fixed slots, output the value
   shown at the same slot one segment earlier (T tokens back). Chance, 1 / n_values, is computed
   here; a GPT of context T cannot see that far, Transformer-XL sees it through its memory.
3. **Evaluation speed**: predicting every token of a validation stream with a context of L = T + M
   tokens, tokens per second of (a) a GPT of context L that recomputes the last L tokens for each
   new one (a sliding window, stride 1), (b) Transformer-XL reading segments of T with a memory of
   M (each token sees between M and L tokens directly, more through the layers), and (c) XL
   decoding one token at a time with its sliding key/value cache of L - 1 positions (exactly L
   tokens per query). Ratios are against (a) in the same run; the bits per character of each on
   these tokens are given beside.

Usage: python benchmarks/transformer_xl.py [--quick] [--steps 600]
Writes docs/benchmarks/xl_bpc.{json,md}, xl_recall.{json,md}, xl_eval_speed.{json,md} (--out DIR:
elsewhere). BLAS is pinned to one thread unless OPENBLAS_NUM_THREADS is set (tiny matrices on a
shared machine).
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from minitransformer import backend  # noqa: E402
from minitransformer.data.corpus import default_corpus  # noqa: E402
from minitransformer.models.gpt import GPT, GPTConfig  # noqa: E402
from minitransformer.nn.functional.softmax import log_softmax_forward  # noqa: E402
from minitransformer.models.transformer_xl import TransformerXL, TransformerXLConfig  # noqa: E402
from minitransformer.tasks.segments import MemoryRecallTask, SegmentLMTask, read_segments  # noqa: E402
from minitransformer.train import TrainConfig, fit  # noqa: E402

OUT = ROOT / "docs" / "benchmarks"
LN2 = math.log(2)


def train(model, task, steps, batch, lr, seed=0):
    cfg = TrainConfig(steps=steps, batch_size=batch, lr=lr, min_lr=lr / 10, warmup=max(steps // 20, 1),
                      eval_interval=steps, eval_iters=1, num_samples=0, weight_decay=0.0, threads=1, seed=seed)
    t = time.process_time()
    fit(model, task, cfg, progress=False, log=lambda *_: None)
    return (time.process_time() - t) / steps


def windows_loss(model, task, windows, mem_len=None):
    """Mean loss over fixed windows (x, y), read segment by segment (memory carried for XL)."""
    model.eval()
    with model.no_grad():
        losses = [read_segments(model, backend.to_device(x, "cpu"), backend.to_device(y, "cpu"),
                                task.segment_len, mem_len=mem_len)[0] for x, y in windows]
    model.train()
    return float(np.mean(losses))


# --8<-- [start:bpc]
def bits_per_character(args):
    T, M = args.segment, args.memory
    text = default_corpus()
    xl_task = SegmentLMTask.from_text(text, T, 0.1, eval_segments=args.eval_segments)
    gpt_task = SegmentLMTask(xl_task.train_ids, xl_task.val_ids, T, xl_task.tokenizer, args.eval_segments)
    span = T + M
    wide_task = SegmentLMTask(xl_task.train_ids, xl_task.val_ids, span, xl_task.tokenizer,
                              args.eval_segments * T // span)
    rng = np.random.default_rng(123)
    windows = [xl_task.windows("val", args.batch, rng) for _ in range(args.eval_batches)]  # the same tokens for all
    size = dict(n_layer=2, n_head=4, d_model=args.d_model)
    xl = TransformerXL(xl_task.adapt(TransformerXLConfig(segment_len=T, mem_len=M, **size)))
    gpt = GPT(gpt_task.adapt(GPTConfig(block_size=T, **size)))
    wide = GPT(wide_task.adapt(GPTConfig(block_size=span, **size)))
    rows = []
    for label, model, task in ((f"GPT, context {T}", gpt, gpt_task), (f"GPT, context {span}", wide, wide_task),
                               (f"Transformer-XL, segment {T}, memory {M}", xl, xl_task)):
        step_s = train(model, task, args.steps, args.batch, args.lr)
        mems = [None] if model is not xl else [0, M, 2 * M, 4 * M]
        for mem in mems:
            loss = windows_loss(model, task, windows, mem_len=mem)
            rows.append({"model": label, "eval_memory": mem, "parameters": model.num_parameters(),
                         "bpc": loss / LN2, "step_s": step_s})
            print(f"{label:40s} eval memory {str(mem):>4s}: {loss / LN2:.3f} bpc, {step_s * 1e3:.1f} ms/step")
    base = rows[0]["step_s"]
    for r in rows:
        r["step_time_vs_gpt"] = r["step_s"] / base
    return rows, {"xl": xl, "wide": wide, "task": xl_task}
# --8<-- [end:bpc]


# --8<-- [start:recall]
def recall(args):
    T = args.recall_segment
    task = MemoryRecallTask(segment_len=T, lag=1, n_values=8, n_filler=4, stride=4)
    size = dict(n_layer=2, n_head=4, d_model=args.d_model)
    models = [(f"GPT, context {T}", GPT(task.adapt(GPTConfig(block_size=T, **size)))),
              (f"Transformer-XL, segment {T}, memory {T}",
               TransformerXL(task.adapt(TransformerXLConfig(segment_len=T, mem_len=T, **size))))]
    rows = []
    for label, model in models:
        train(model, task, args.recall_steps, args.batch, args.lr)
        acc = task.accuracy(model, batches=8)
        rows.append({"model": label, "accuracy": acc, "chance": task.chance_accuracy(),
                     "distance": task.lag * T})
        print(f"{label:40s} recall accuracy {acc:.3f} (chance {task.chance_accuracy():.3f})")
    return rows
# --8<-- [end:recall]


# --8<-- [start:eval_speed]
def sliding_window_gpt(model, ids, L):
    """Every token predicted from the L tokens before it by a fresh forward of that window."""
    nll, n = 0.0, 0
    with model.no_grad():
        for t in range(L, ids.shape[1]):
            logits, _ = model.forward(ids[:, t - L:t])                   # (B, L, V): only the last is used
            logp, _ = log_softmax_forward(logits[:, -1])
            nll -= logp[np.arange(ids.shape[0]), ids[:, t]].sum()
            n += ids.shape[0]
    return float(nll) / n


def xl_segments(model, ids, L, T, M):
    """The same tokens read in segments of T with a memory of M (segments aligned to end at L)."""
    x, y = ids[:, :-1], ids[:, 1:]
    with model.no_grad():
        memory = None
        nll, n = 0.0, 0
        for start in range(0, x.shape[1], T):
            xs, ys = x[:, start:start + T], y[:, start:start + T]
            logits, _, memory = model.forward_segment(xs, memory, mem_len=M)
            if start + T > L - 1:                                        # score positions >= L only
                keep = np.arange(start, start + xs.shape[1]) >= L - 1
                logp, _ = log_softmax_forward(logits[:, keep])
                yy = ys[:, keep]
                nll -= np.take_along_axis(logp, yy[..., None], -1).sum()
                n += yy.size
    return float(nll) / n


def xl_cached(model, ids, L):
    """One token at a time through the sliding key/value cache of L - 1 positions."""
    caches = [type(c)(L - 1) for c in model.make_kv_caches(ids.shape[0])]
    nll, n = 0.0, 0
    with model.no_grad():
        for t in range(ids.shape[1] - 1):
            logits, _ = model.forward(ids[:, t:t + 1], kv_caches=caches)
            if t + 1 >= L:
                logp, _ = log_softmax_forward(logits[:, -1])
                nll -= logp[np.arange(ids.shape[0]), ids[:, t + 1]].sum()
                n += ids.shape[0]
    return float(nll) / n


def eval_speed(args, trained):
    xl, gpt, task = trained["xl"], trained["wide"], trained["task"]
    T, M = args.segment, args.memory
    L = T + M
    n_tokens = args.speed_tokens
    ids = task.val_ids[: 4 * (L + n_tokens)].reshape(4, L + n_tokens).astype(np.int64)   # 4 streams
    scored = ids.shape[0] * n_tokens
    rows = []
    for label, run in ((f"GPT, context {L}: sliding window, recompute {L} tokens per token",
                        lambda: sliding_window_gpt(gpt, ids, L)),
                       (f"Transformer-XL: segments of {T}, memory {M}", lambda: xl_segments(xl, ids, L, T, M)),
                       (f"Transformer-XL: one token at a time, sliding KV cache of {L - 1}",
                        lambda: xl_cached(xl, ids, L))):
        best, nll = float("inf"), None
        for _ in range(args.repeats):
            t = time.process_time()
            nll = run()
            best = min(best, time.process_time() - t)
        rows.append({"method": label, "seconds": best, "tokens_per_s": scored / best, "bpc": float(nll) / LN2})
        print(f"{label:70s} {scored / best:9.0f} tok/s  {nll / LN2:.3f} bpc")
    for r in rows:
        r["speedup_vs_sliding_window"] = r["tokens_per_s"] / rows[0]["tokens_per_s"]
    return rows, scored


def eval_speed_sweep(args):
    """The same three ways at longer contexts L, untrained models (speed only: their predictions
    are not compared), 2 streams of `sweep_tokens` scored tokens each."""
    T = args.segment
    size = dict(n_layer=2, n_head=4, d_model=args.d_model, vocab_size=96)
    rows = []
    for L in args.sweep:
        ids = np.random.default_rng(L).integers(0, 96, (2, L + args.sweep_tokens))
        gpt = GPT(GPTConfig(block_size=L, **size))
        xl = TransformerXL(TransformerXLConfig(segment_len=T, mem_len=L - T, **size))
        times = {}
        for name, run in (("sliding", lambda: sliding_window_gpt(gpt, ids, L)),
                          ("segments", lambda: xl_segments(xl, ids, L, T, L - T)),
                          ("cached", lambda: xl_cached(xl, ids, L))):
            t = time.process_time()
            run()
            times[name] = time.process_time() - t
        scored = ids.shape[0] * args.sweep_tokens
        row = {"context": L, **{f"{k}_tokens_per_s": scored / v for k, v in times.items()},
               "segments_speedup": times["sliding"] / times["segments"],
               "cached_speedup": times["sliding"] / times["cached"]}
        rows.append(row)
        print(f"L = {L:4d}: XL segments {row['segments_speedup']:.1f}x, XL cached {row['cached_speedup']:.1f}x "
              "the sliding-window GPT")
    return rows
# --8<-- [end:eval_speed]


def write(args, bpc_rows, recall_rows, speed_rows, scored, sweep_rows):
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    meta = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "cores": os.cpu_count(),
            "load_average_1min": load, "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
            "steps": args.steps, "recall_steps": args.recall_steps, "batch": args.batch, "lr": args.lr,
            "segment": args.segment, "memory": args.memory, "d_model": args.d_model, "n_layer": 2,
            "eval_segments": args.eval_segments, "eval_batches": args.eval_batches}
    shared = (f"Times are CPU seconds of the process (BLAS on one thread) on a shared {meta['cores']}-core "
              f"{meta['machine']} machine (load average {load:.1f}): less disturbed by other jobs than "
              "wall-clock time, still noisy; compare the ratios.") if load is not None else ""
    md = [f"Bits per character on the built-in corpus (validation, {args.eval_batches} x {args.batch} windows "
          f"of {args.eval_segments * args.segment} characters, the same for every model). 2 layers, width "
          f"{args.d_model}, {args.steps} steps x batch {args.batch}, lr {args.lr}. {shared}", "",
          "| model | memory at evaluation | parameters | bits per character | training step (ms) | step time vs GPT |",
          "| --- | --- | --- | --- | --- | --- |"]
    for r in bpc_rows:
        mem = "-" if r["eval_memory"] is None else str(r["eval_memory"])
        md.append(f"| {r['model']} | {mem} | {r['parameters']:,} | {r['bpc']:.3f} | {r['step_s'] * 1e3:.1f} "
                  f"| {r['step_time_vs_gpt']:.2f} |")
    rec = [f"Memory recall: the value shown at a slot one segment earlier ({recall_rows[0]['distance']} tokens "
           f"back); 8 values, so chance is {recall_rows[0]['chance']:.3f}. 2 layers, width {args.d_model}, "
           f"{args.recall_steps} steps x batch {args.batch}.", "",
           "| model | recall accuracy | chance |", "| --- | --- | --- |"]
    rec += [f"| {r['model']} | {r['accuracy']:.3f} | {r['chance']:.3f} |" for r in recall_rows]
    spd = [f"Evaluation speed: {scored} validation characters (4 streams), each predicted with a context of "
           f"{args.segment + args.memory} characters; best of {args.repeats} runs. {shared}", "",
           "| method | tokens / s | speed-up vs sliding window | bits per character |", "| --- | --- | --- | --- |"]
    spd += [f"| {r['method']} | {r['tokens_per_s']:,.0f} | {r['speedup_vs_sliding_window']:.1f}x | {r['bpc']:.3f} |"
            for r in speed_rows]
    spd += ["", f"The same at longer contexts L (untrained models, speed only; 2 streams, {2 * args.sweep_tokens} "
            f"scored tokens, one short run each, so a rougher estimate than the table above). XL reads "
            f"segments of {args.segment} with a memory of L - {args.segment}, or decodes with a cache of L - 1.", "",
            "| context L | sliding-window GPT (tokens / s) | XL segments (tokens / s) | XL cached (tokens / s) "
            "| XL segments vs sliding | XL cached vs sliding |", "| --- | --- | --- | --- | --- | --- |"]
    spd += [f"| {r['context']} | {r['sliding_tokens_per_s']:,.0f} | {r['segments_tokens_per_s']:,.0f} | "
            f"{r['cached_tokens_per_s']:,.0f} | {r['segments_speedup']:.1f}x | {r['cached_speedup']:.1f}x |"
            for r in sweep_rows]
    print("\n".join(md + [""] + rec + [""] + spd))
    if args.no_write:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows, lines in (("xl_bpc", bpc_rows, md), ("xl_recall", recall_rows, rec),
                              ("xl_eval_speed", speed_rows, spd)):
        extra = {"sweep": sweep_rows} if name == "xl_eval_speed" else {}
        (args.out / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows, **extra}, indent=1))
        (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out / name}.json and .md")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=600, help="training steps per language model")
    ap.add_argument("--recall-steps", type=int, default=300, help="training steps per recall model")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--segment", type=int, default=32, help="T: segment length (the GPT's context)")
    ap.add_argument("--memory", type=int, default=32, help="M: XL's memory in training")
    ap.add_argument("--recall-segment", type=int, default=16)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--eval-segments", type=int, default=8)
    ap.add_argument("--eval-batches", type=int, default=4)
    ap.add_argument("--speed-tokens", type=int, default=256, help="scored tokens per stream in the speed test")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sweep", type=int, nargs="*", default=[64, 256, 512], help="contexts of the speed sweep")
    ap.add_argument("--sweep-tokens", type=int, default=48, help="scored tokens per stream in the sweep")
    ap.add_argument("--quick", action="store_true", help="a few steps of everything (a smoke test)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.recall_steps, args.eval_batches, args.speed_tokens, args.repeats = 10, 10, 1, 32, 1
        args.sweep, args.sweep_tokens = [64, 128], 8
    bpc_rows, trained = bits_per_character(args)
    recall_rows = recall(args)
    speed_rows, scored = eval_speed(args, trained)
    sweep_rows = eval_speed_sweep(args)
    write(args, bpc_rows, recall_rows, speed_rows, scored, sweep_rows)


if __name__ == "__main__":
    main()
