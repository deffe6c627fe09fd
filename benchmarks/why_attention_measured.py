"""Why attention, measured: an LSTM against attention on the same machine, in one run.

1. Time of one training step (forward + backward, batch 8) against the sequence length T, for a
   one-layer LSTM language model (T dependent steps) and a one-block GPT (a few matrix products over
   all positions); the models alternate inside every round and the best of the rounds is kept.
2. Accuracy on two memory tasks after the same training (same steps, batch, learning rate), with
   the memoryless baseline (the best predictor from the current token alone) computed here too:
   the long-range retrieval task of ``data/long_range.py`` with the question last, at N = 64 and
   N = 128, and the copy task of ``data/copy_task.py`` with delays 0 and 20.
3. The gradient that reaches back k positions, ||d(u . y_T) / d x_{T-k}||, for an LSTM layer (forget
   bias 1 and 0), a tanh RNN layer and a causal self-attention layer, at initialisation.

Usage: python benchmarks/why_attention_measured.py [--quick] [--steps 400] [--out DIR]
Writes docs/benchmarks/why_attention_measured.json, why_attention_steps.md, why_attention_accuracy.md,
why_attention_gradients.md and docs/figures/why_attention_measured.png (with --out DIR: DIR and DIR/figures).
BLAS is pinned to one thread unless OPENBLAS_NUM_THREADS is set (tiny matrices on a shared machine).
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from minitransformer.attention.multi_head import MultiHeadAttention  # noqa: E402
from minitransformer.benchmarking.output import save_plot, tables_and_figures  # noqa: E402
from minitransformer.benchmarking.recurrence import (SparseTargetsTask, gradient_by_distance,  # noqa: E402
                                                     step_seconds, target_hits, train_on)
from minitransformer import backend  # noqa: E402
from minitransformer.data.copy_task import (CopyTask, copy_batch, memoryless_accuracy,  # noqa: E402
                                            retrieval_question_last_batch)
from minitransformer.data.long_range import RetrievalTask  # noqa: E402
from minitransformer.models.gpt import GPT, GPTConfig  # noqa: E402
from minitransformer.models.lstm import LSTMConfig, LSTMLanguageModel  # noqa: E402
from minitransformer.nn.recurrent import LSTM, RNN  # noqa: E402

DOCS = ROOT / "docs"
C = 64                                   # the width of every model here


def models_for_timing(max_len: int, vocab: int):
    lstm = LSTMLanguageModel(LSTMConfig(vocab_size=vocab, block_size=max_len, n_layer=1, d_model=C))
    gpt = GPT(GPTConfig(vocab_size=vocab, block_size=max_len, n_layer=1, n_head=4, d_model=C))
    return {"lstm": lstm, "attention": gpt}


def time_steps(lengths, rounds: int):
    models = models_for_timing(max(lengths), 32)
    params = {name: m.num_parameters() for name, m in models.items()}
    best = step_seconds(models, lengths, batch_size=8, vocab=32, rounds=rounds)
    rows = [{"T": T, "lstm_ms": 1e3 * best["lstm", T], "attention_ms": 1e3 * best["attention", T],
             "lstm_over_attention": best["lstm", T] / best["attention", T]} for T in lengths]
    return {"rows": rows, "parameters": params, "rounds": rounds}


def memory_tasks(quick: bool):
    """(label, make_batch, vocab, N, distance of what must be remembered, bins of distance)."""
    tasks = []
    for N in ((64,) if quick else (64, 128)):
        rt = RetrievalTask(seq_len=N, min_distance=1, max_distance=N - 1)
        tasks.append((f"retrieval, N={N} (d in 1..{N - 1})", partial(retrieval_question_last_batch, rt),
                      rt.vocab_size, rt.seq_len, "retrieval"))
    for G in (0, 20):
        ct = CopyTask(n_symbols=8, length=5, delay=G)
        tasks.append((f"copy, K=5, delay {G} (distance {5 + G})", partial(copy_batch, ct),
                      ct.vocab_size, ct.seq_len, "copy"))
    return tasks


def retrieval_by_distance(hits, tokens, n_classes: int = 8):
    """Accuracy by the value's distance from the question (the last position)."""
    N = tokens.shape[1]
    is_value = (tokens >= 1) & (tokens <= n_classes)
    d = N - 1 - is_value.argmax(axis=1)                                      # steps before [CLS]
    got = hits[:, -1]
    bins = [(1, 16), (17, 32), (33, 64), (65, 127)]
    return {f"{lo}-{hi}": float(got[(d >= lo) & (d <= hi)].mean()) for lo, hi in bins
            if ((d >= lo) & (d <= hi)).any()}


def accuracy(steps: int, quick: bool):
    rows = []
    specs = {"lstm": LSTMConfig(n_layer=1, d_model=C),
             "attention": GPTConfig(n_layer=2, n_head=2, d_model=32)}
    for label, make_batch, vocab, N, kind in memory_tasks(quick):
        row = {"task": label, "memoryless": memoryless_accuracy(make_batch, 4, 4)}
        task = SparseTargetsTask(make_batch, vocab, N, label)
        for name, cfg in specs.items():
            t0 = time.perf_counter()
            model, losses = train_on("lstm" if name == "lstm" else "gpt", cfg, task, steps)
            hits, tokens, targets = target_hits(model, make_batch, batches=4)
            row[name] = float(hits.sum() / (targets != -100).sum())
            row[f"{name}_parameters"] = model.num_parameters()
            row[f"{name}_final_loss"] = float(np.mean(losses[-20:]))
            row[f"{name}_seconds"] = time.perf_counter() - t0
            if kind == "retrieval":
                row[f"{name}_by_distance"] = retrieval_by_distance(hits, tokens)
            print(f"  {label:42s} {name:9s} accuracy {row[name]:.3f} ({row[f'{name}_seconds']:.0f} s)")
        rows.append(row)
    return rows


def gradients(T: int):
    """||dy_T/dx_{T-k}|| by distance for four layers of width C with their usual initialisation."""
    def recurrent(layer):
        def run(x, dy):
            layer.forward(x)
            return layer.backward(dy)[0]
        return run

    def attention(layer):
        def run(x, dy):
            layer.forward(x, causal=True)
            return layer.backward(dy)
        return run

    layers = {
        "LSTM (forget bias 1)": recurrent(LSTM(C, C, forget_bias=1.0, rng=backend.host_rng(1)).to("cpu", "float64")),
        "LSTM (forget bias 0)": recurrent(LSTM(C, C, forget_bias=0.0, rng=backend.host_rng(1)).to("cpu", "float64")),
        "tanh RNN": recurrent(RNN(C, C, rng=backend.host_rng(1)).to("cpu", "float64")),
        "attention (causal, H=4)": attention(MultiHeadAttention(C, 4, rng=backend.host_rng(1)).to("cpu", "float64")),
    }
    return {name: gradient_by_distance(run, T, C).tolist() for name, run in layers.items()}


def write_tables(result, out: Path):
    t = result["time"]
    lines = [f"One training step (forward + backward, no optimizer), batch 8, width C = {C}, float32, "
             f"1 BLAS thread; CPU time of the process (not wall time), best of {t['rounds']} interleaved "
             "rounds, on a 2-core CPU shared with other jobs. "
             f"LSTM: 1 layer ({t['parameters']['lstm']:,} parameters); attention: a 1-block GPT, "
             f"H = 4 ({t['parameters']['attention']:,} parameters).", "",
             "| T | LSTM ms | attention ms | LSTM / attention | LSTM ms per time step | "
             "sequential steps (LSTM / attention) |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in t["rows"]:
        lines.append(f"| {r['T']} | {r['lstm_ms']:.1f} | {r['attention_ms']:.1f} | "
                     f"{r['lstm_over_attention']:.2f}x | {r['lstm_ms'] / r['T']:.3f} | {r['T']} / 1 |")
    (out / "why_attention_steps.md").write_text("\n".join(lines) + "\n")

    acc = result["accuracy"]
    lines = [f"Held-out accuracy on the asked-for positions after {result['steps']} steps x batch 32 "
             "(AdamW 3e-3, constant after 20 warm-up steps), one seed. LSTM: 1 layer, C = 64; attention: "
             "a GPT of 2 blocks, C = 32, H = 2, learned positions. Memoryless: the best prediction from "
             "the current token alone, measured on the same generator.", "",
             "| task | memoryless | LSTM | attention | LSTM params | attention params |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in acc:
        lines.append(f"| {r['task']} | {r['memoryless']:.3f} | {r['lstm']:.3f} | {r['attention']:.3f} | "
                     f"{r['lstm_parameters']:,} | {r['attention_parameters']:,} |")
    by_distance = [r for r in acc if "lstm_by_distance" in r]
    if by_distance:
        lines += ["", "Retrieval accuracy by the distance d between the value and the question:", "",
                  "| task | model | " + " | ".join(f"d {b}" for b in by_distance[-1]["lstm_by_distance"]) + " |",
                  "| --- | --- | " + " | ".join("---:" for _ in by_distance[-1]["lstm_by_distance"]) + " |"]
        for r in by_distance:
            for name in ("lstm", "attention"):
                got = r[f"{name}_by_distance"]
                cells = [f"{got[b]:.2f}" if b in got else "-" for b in by_distance[-1]["lstm_by_distance"]]
                lines.append(f"| {r['task']} | {name} | " + " | ".join(cells) + " |")
    (out / "why_attention_accuracy.md").write_text("\n".join(lines) + "\n")

    g = result["gradients"]
    ks = [k for k in (0, 1, 4, 16, 32, 64, 127) if k < result["gradient_T"]]
    lines = [f"Mean ||d(u . y_T) / d x_(T-k)|| over 16 random sequences of T = {result['gradient_T']}, width "
             f"C = {C}, float64, weights at initialisation (u a random unit vector at the last output).", "",
             "| layer | " + " | ".join(f"k = {k}" for k in ks) + " |",
             "| --- | " + " | ".join("---:" for _ in ks) + " |"]
    for name, norms in g.items():
        lines.append(f"| {name} | " + " | ".join(f"{norms[k]:.1e}" for k in ks) + " |")
    (out / "why_attention_gradients.md").write_text("\n".join(lines) + "\n")


def plot(result, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    rows = result["time"]["rows"]
    T = [r["T"] for r in rows]
    axes[0].loglog(T, [r["lstm_ms"] for r in rows], "o-", label="LSTM (T sequential steps)")
    axes[0].loglog(T, [r["attention_ms"] for r in rows], "s-", label="attention (1 block)")
    axes[0].set(xlabel="sequence length T", ylabel="CPU ms per training step", title="step time (batch 8, 1 thread)")
    axes[0].set_xticks(T, [str(t) for t in T])
    axes[0].minorticks_off()
    axes[0].legend()
    acc = result["accuracy"]
    x = np.arange(len(acc))
    for i, (name, key) in enumerate((("memoryless", "memoryless"), ("LSTM", "lstm"), ("attention", "attention"))):
        axes[1].bar(x + (i - 1) * 0.27, [r[key] for r in acc], 0.27, label=name)
    axes[1].set_xticks(x, [r["task"].split(" (")[0].replace(", ", "\n") for r in acc], fontsize=8)
    axes[1].set(ylabel="held-out accuracy", ylim=(0, 1.25), title=f"memory tasks ({result['steps']} steps)")
    axes[1].legend(fontsize=8, ncol=3, loc="upper center")
    for name, norms in result["gradients"].items():
        axes[2].semilogy(np.arange(len(norms)), norms, label=name)
    axes[2].set(xlabel="distance k", ylabel="||d y_T / d x_(T-k)||", title="gradient against distance (init)")
    axes[2].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=400, help="training steps per model and task")
    p.add_argument("--rounds", type=int, default=9, help="timing rounds (best kept)")
    p.add_argument("--quick", action="store_true", help="fewer lengths and tasks, 60 steps (a smoke test)")
    p.add_argument("--out", default=None, help="directory for the tables (default docs/benchmarks; "
                   "the figure goes to docs/figures, or DIR/figures)")
    args = p.parse_args(argv)
    out, fig_dir = tables_and_figures(args.out, DOCS)
    steps = 60 if args.quick else args.steps
    lengths = (16, 64) if args.quick else (16, 32, 64, 128, 256, 512)
    t0 = time.perf_counter()
    print("timing a training step ...")
    result = {"time": time_steps(lengths, 1 if args.quick else args.rounds)}
    for r in result["time"]["rows"]:
        print(f"  T={r['T']:4d}  LSTM {r['lstm_ms']:7.1f} ms  attention {r['attention_ms']:7.1f} ms  "
              f"ratio {r['lstm_over_attention']:.2f}")
    print("training on the memory tasks ...")
    result["steps"] = steps
    result["accuracy"] = accuracy(steps, args.quick)
    result["gradient_T"] = 32 if args.quick else 128
    result["gradients"] = gradients(result["gradient_T"])
    result["machine"] = {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                         "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
                         "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
    result["seconds"] = time.perf_counter() - t0
    (out / "why_attention_measured.json").write_text(json.dumps(result, indent=1))
    write_tables(result, out)
    written = save_plot(partial(plot, result), fig_dir / "why_attention_measured.png")
    print(f"wrote {out}/why_attention_*.md, why_attention_measured.json" + (f", {written}" if written else "")
          + f" in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
