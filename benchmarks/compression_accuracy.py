"""Accuracy vs compression for a small character-level GPT.

Trains one GPT (tiny Shakespeare from ../shared/data when present, else the built-in corpus), then
measures validation loss against
* rank: truncated SVD of every block Linear, without and with fine-tuning, and low-rank from scratch;
* sparsity: magnitude pruning per layer and global, without and with fine-tuning (mask kept);
* bit width: symmetric per-channel weight quantization at 8..2 bits, float16, int8 with int8 activations;
* attention heads pruned by gradient importance,
with parameters, bytes and FLOPs per token from `compress.accounting`. Writes
docs/benchmarks/compression_accuracy.{json,md}, compression_summary.md (one row per method),
compression_svd_errors.md (Eckart–Young vs measured on trained weights) and figures
docs/figures/compression_{rank,sparsity,bits,tradeoff,spectra}.png (names get a suffix _<corpus> for
any corpus other than tiny Shakespeare, e.g. --data default). The trained model is saved in
runs/compression/<corpus>/base for the other compression benchmarks (a checkpoint that
`minitransformer compress` and `generate` load). Every model trains through `train.fit`.

Usage: python benchmarks/compression_accuracy.py [--steps 600] [--finetune-steps 100] [--quick]
       [--out DIR] [--figures DIR] [--runs DIR]   (defaults: docs/benchmarks, docs/figures, runs/compression)
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

from _blas_threads import THREADS  # noqa: E402  pins BLAS threads before numpy loads

import numpy as np  # noqa: E402  host-side harness

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from minitransformer.checkpoint import CheckpointError, load_model, save_checkpoint  # noqa: E402
from minitransformer.compress.accounting import model_costs, totals  # noqa: E402
from minitransformer.compress.finetune import evaluate, finetune, forward_speed  # noqa: E402
from minitransformer.compress.prune import GradualPruning, PruningMask, head_importance, head_mask  # noqa: E402
from minitransformer.compress.quantize import quantize_model  # noqa: E402
from minitransformer.compress.svd import svd_compress, svd_table  # noqa: E402
from minitransformer.config import to_dict  # noqa: E402
from minitransformer.data.batching import get_batch, train_val_split  # noqa: E402
from minitransformer.data.corpus import default_corpus, load_text, shared_data_file  # noqa: E402
from minitransformer.data.tokenizer import CharTokenizer  # noqa: E402
from minitransformer.models.gpt import GPT, GPTConfig  # noqa: E402
from minitransformer.tasks import CausalLMTask  # noqa: E402
from minitransformer.train import TrainConfig, fit  # noqa: E402

TARGETS = ("attn.qkv", "attn.proj", "ffn.fc1", "ffn.fc2")
BENCH = ROOT / "docs" / "benchmarks"
FIGS = ROOT / "docs" / "figures"
RUNS = ROOT / "runs" / "compression"


def add_output_options(p) -> None:
    """--out, --figures and --runs, shared by the compression benchmarks (a smoke run points them
    at a temporary directory, so the committed tables and figures stay as they are)."""
    p.add_argument("--out", type=Path, default=BENCH, help="directory for the tables (default: docs/benchmarks)")
    p.add_argument("--figures", type=Path, default=FIGS, help="directory for the figures (default: docs/figures)")
    p.add_argument("--runs", type=Path, default=RUNS,
                   help="where the trained base models are kept (default: runs/compression)")


def load_corpus(name: str):
    """(corpus name, text): 'shakespeare' from ../shared/data when present, else the built-in one."""
    if name == "shakespeare":
        path = shared_data_file("tinyshakespeare.txt")
        if path is not None:
            return "shakespeare", load_text(path)
        print("tiny Shakespeare not found beside the checkout; using the built-in corpus")
        name = "default"
    if name == "default":
        return "default", default_corpus()
    return Path(name).stem, load_text(name)


def model_config(vocab_size: int, **kw) -> GPTConfig:
    base = dict(vocab_size=vocab_size, block_size=64, n_layer=2, n_head=4, d_model=128)
    return GPTConfig(**{**base, **kw})


def train_config(steps: int, seed: int = 0, lr: float = 2e-3, warmup: int | None = None) -> TrainConfig:
    """The benchmarks' schedule: AdamW (0.9, 0.99), weight decay 0.1 on the matrices, batch 16,
    warm-up then cosine to lr/10, one Python thread (BLAS threads: --threads)."""
    return TrainConfig(steps=steps, batch_size=16, lr=lr, min_lr=lr / 10,
                       warmup=min(50, steps // 10) if warmup is None else warmup, weight_decay=0.1,
                       beta1=0.9, beta2=0.99, grad_clip=1.0, seed=seed, threads=1, num_samples=0)


def train_base(cfg, train_ids, steps, seed=0, lr=2e-3, warmup=None, callback=None):
    """A GPT of `cfg` trained from scratch on `train_ids` by `train.fit`: (model, batch losses,
    seconds, the TrainConfig). callback(step, model) runs after every step."""
    model = GPT(cfg, seed=seed)
    tcfg = train_config(steps, seed, lr, warmup)
    t = time.perf_counter()
    result = fit(model, CausalLMTask(train_ids, None, cfg.block_size), tcfg, progress=False,
                 log=lambda *a: None, callback=callback)
    return model, result["batch_losses"], time.perf_counter() - t, tcfg


def load_or_train_base(cfg, tok, train_ids, steps, base_dir: Path, what="the base model"):
    """(model, train seconds): the checkpoint in base_dir when it holds this model (same kind and
    config, same tokenizer, same steps), else a model trained by train_base and saved there."""
    wanted = GPT(cfg).describe()
    try:
        model, meta = load_model(base_dir, which="last")
    except CheckpointError:
        meta = {}
    if meta.get("model") == wanted and meta.get("tokenizer") == tok.to_dict() and meta.get("step") == steps:
        print(f"loaded {what} from {base_dir}")
        return model, meta.get("train_seconds", float("nan"))
    model, _, seconds, tcfg = train_base(cfg, train_ids, steps)
    save_checkpoint(base_dir, model.state_dict(),
                    {"model": model.describe(), "tokenizer": tok.to_dict(), "step": steps,
                     "train_seconds": seconds, "train_config": to_dict(tcfg)})
    print(f"trained {what} in {seconds:.0f} s; saved to {base_dir}")
    return model, seconds


class Recorder:
    """Evaluates a model and keeps one row per (method, setting)."""

    def __init__(self, train_ids, val_ids, eval_iters, reference):
        self.train_ids, self.val_ids, self.eval_iters = train_ids, val_ids, eval_iters
        self.reference = reference                 # the dense model: speeds are measured against it
        self.rows = []

    def __call__(self, method, setting, model, **extra):
        val = evaluate(model, self.val_ids, 16, self.eval_iters, seed=0)
        cost = totals(model_costs(model))
        tok_s, rel = forward_speed(model, self.val_ids, 16, repeats=10, reference=self.reference)
        row = {"method": method, "setting": setting, "val_loss": val, "tokens_per_s": tok_s,
               "speed_vs_dense": rel, **cost, **extra}
        self.rows.append(row)
        print(f"{method:22s} {str(setting):>8s}  val {val:.4f}  params {cost['params']:>8,}  "
              f"nonzero {cost['nonzero']:>8,}  bytes {cost['bytes']:>9,}")
        return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="shakespeare", help="shakespeare, default, or a text file")
    p.add_argument("--steps", type=int, default=600, help="training steps of the base model")
    p.add_argument("--finetune-steps", type=int, default=100)
    p.add_argument("--eval-iters", type=int, default=20)
    p.add_argument("--quick", action="store_true", help="fewer settings (a smoke run)")
    p.add_argument("--threads", default="1", help="BLAS threads (default 1)")
    add_output_options(p)
    args = p.parse_args(argv)
    t_start = time.perf_counter()

    corpus, text = load_corpus(args.data)
    sfx = "" if corpus == "shakespeare" else f"_{corpus}"    # output names: one set per corpus
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    train_ids, val_ids = train_val_split(ids, 0.1)
    cfg = model_config(tok.vocab_size)
    print(f"corpus {corpus}: {len(text):,} characters, vocab {tok.vocab_size}; model {cfg}")

    base, train_seconds = load_or_train_base(cfg, tok, train_ids, args.steps, args.runs / corpus / "base")

    rec = Recorder(train_ids, val_ids, args.eval_iters, copy.deepcopy(base))
    dense = rec("dense (float32)", "-", base)
    ft = args.finetune_steps
    quick = args.quick

    # -- rank ---------------------------------------------------------------------------------
    ranks = [4, 16, 64] if quick else [2, 4, 8, 16, 32, 48, 64, 96]
    svd_rows = None
    for k in ranks:
        m = copy.deepcopy(base)
        rows = svd_compress(m, TARGETS, rank=k)
        if k == 16:
            svd_rows = rows
        rec("svd", k, m, rank=k)
        if k in ((16,) if quick else (4, 8, 16, 32)):
            finetune(m, train_ids, ft, batch_size=16, lr=1e-3, seed=1)
            rec("svd + fine-tune", k, m, rank=k, finetune_steps=ft)
    for e in ([0.9] if quick else [0.5, 0.75, 0.9, 0.99]):
        m = copy.deepcopy(base)
        svd_compress(m, TARGETS, energy=e)
        rec("svd (energy)", e, m)
    for b in ([0.5] if quick else [0.25, 0.5]):
        m = copy.deepcopy(base)
        svd_compress(m, TARGETS, budget=b)
        rec("svd (budget)", b, m)
    for k in ((16,) if quick else (8, 32)):
        m, _, secs, _ = train_base(model_config(tok.vocab_size, low_rank=k), train_ids, args.steps)
        rec("low-rank from scratch", k, m, rank=k, train_seconds=secs)

    # -- sparsity -----------------------------------------------------------------------------
    for scope in ("layer", "global"):
        for s in ([0.5, 0.9] if quick else [0.25, 0.5, 0.7, 0.8, 0.9, 0.95]):
            m = copy.deepcopy(base)
            mask = PruningMask.magnitude(m, s, TARGETS, scope)
            mask.apply(m)
            rec(f"prune ({scope})", s, m, sparsity=s)
            if scope == "global" and s in ((0.9,) if quick else (0.5, 0.8, 0.9)):
                finetune(m, train_ids, ft, batch_size=16, lr=1e-3, hooks=[mask.apply], seed=1)
                rec("prune (global) + fine-tune", s, m, sparsity=s, finetune_steps=ft)

    for s in ([0.9] if quick else [0.5, 0.8, 0.9]):          # gradual: cubic schedule during fine-tuning
        m = copy.deepcopy(base)
        hook = GradualPruning(s, begin=0, end=int(0.7 * ft), targets=TARGETS, scope="global", every=5)
        finetune(m, train_ids, ft, batch_size=16, lr=1e-3, hooks=[hook], seed=1)
        rec("prune (gradual) + fine-tune", s, m, sparsity=s, finetune_steps=ft)

    # -- bits -----------------------------------------------------------------------------------
    for bits in ([8, 4] if quick else [8, 6, 5, 4, 3, 2]):
        m = copy.deepcopy(base)
        quantize_model(m, "int8", TARGETS, bits=bits)
        rec("int8 weights" if bits == 8 else "quantized weights", bits, m, bits=bits)
    for mode in ("fp16", "int8-dynamic"):
        m = copy.deepcopy(base)
        quantize_model(m, mode, TARGETS)
        rec(mode, 16 if mode == "fp16" else 8, m)

    # -- heads ----------------------------------------------------------------------------------
    m = copy.deepcopy(base)
    rng = np.random.default_rng(0)
    for _ in range(8):
        x, y = get_batch(train_ids, 16, cfg.block_size, rng)
        m.forward(x, y)
        m.backward()
    scores = head_importance(m, cfg.n_head, "gradient")
    m.zero_grad()
    for frac in (0.25, 0.5):
        mh = copy.deepcopy(m)
        mask = head_mask(mh, cfg.n_head, scores, frac)
        mask.apply(mh)
        rec("prune heads", frac, mh, heads=mask.pruned_heads)
        finetune(mh, train_ids, ft, batch_size=16, lr=1e-3, hooks=[mask.apply], seed=1)
        rec("prune heads + fine-tune", frac, mh, finetune_steps=ft)

    # -- write ----------------------------------------------------------------------------------
    bench = args.out
    bench.mkdir(parents=True, exist_ok=True)
    info = {"corpus": corpus, "chars": len(text), "config": to_dict(cfg), "base_steps": args.steps,
            "finetune_steps": ft, "eval_iters": args.eval_iters, "blas_threads": THREADS,
            "base_train_seconds": train_seconds, "seconds": time.perf_counter() - t_start}
    (bench / f"compression_accuracy{sfx}.json").write_text(json.dumps({"info": info, "rows": rec.rows},
                                                                indent=1, default=str) + "\n")
    head = (f"Character-level GPT ({cfg.n_layer} layers, {cfg.n_head} heads, width {cfg.d_model}, context "
            f"{cfg.block_size}) trained {args.steps} steps on {corpus} ({len(text):,} characters); "
            f"validation loss over {args.eval_iters} batches of 16, the same batches for every row. "
            f"Compressed: the Linear layers of the blocks (qkv, proj, fc1, fc2); embeddings and norms stay "
            f"float32. Fine-tuning: {ft} AdamW steps. Bytes count 4 per float32, 2 per float16, "
            f"bits/8 per quantized weight plus float32 scales; pruned weights are still stored densely "
            f"(*non-zero* shows what a sparse format could save).\n")
    lines = [head, "| method | setting | validation loss | Δ vs dense | parameters | non-zero | bytes | FLOPs/token |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rec.rows:
        lines.append(f"| {r['method']} | {r['setting']} | {r['val_loss']:.4f} | {r['val_loss'] - dense['val_loss']:+.4f} "
                     f"| {r['params']:,} | {r['nonzero']:,} | {r['bytes']:,} | {r['flops']:,} |")
    (bench / f"compression_accuracy{sfx}.md").write_text("\n".join(lines) + "\n")
    if svd_rows:
        (bench / f"compression_svd_errors{sfx}.md").write_text(
            f"Rank-16 truncated SVD of the trained model's block matrices ({corpus}); the Eckart–Young "
            "errors come from the singular values alone, the measured ones from W − AB.\n\n" + svd_table(svd_rows) + "\n")
    write_summary(rec.rows, dense, corpus, bench, sfx)
    plots(rec.rows, dense, base, corpus, args.figures, sfx)
    print(f"wrote the tables in {bench}")
    print(f"done in {time.perf_counter() - t_start:.0f} s")
    return 0


def write_summary(rows, dense, corpus, bench: Path, sfx=""):
    """The closing comparison: one chosen setting per method."""
    picks = [("dense (float32)", "-"), ("svd", 32), ("svd + fine-tune", 32), ("svd (energy)", 0.9),
             ("low-rank from scratch", 32), ("prune (global)", 0.5), ("prune (global) + fine-tune", 0.8), ("prune (gradual) + fine-tune", 0.8),
             ("prune heads + fine-tune", 0.25), ("fp16", 16), ("int8 weights", 8), ("int8-dynamic", 8),
             ("quantized weights", 4)]
    by = {(r["method"], r["setting"]): r for r in rows}
    lines = [f"One model ({corpus}), one chosen setting per method; full sweeps in the tables below. "
             "Size = bytes of the block weights and everything else (embeddings, norms). Speed = inference "
             "forward of one batch of 16×64 tokens, best of 10, run alternately with the dense model on the "
             "same batch (one BLAS thread, a shared 2-core CPU).\n",
             "| method | setting | validation loss | Δ loss | parameters | non-zero | size | size vs dense | FLOPs/token "
             "| speed vs dense |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key in picks:
        r = by.get(key)
        if r is None:
            continue
        lines.append(f"| {r['method']} | {r['setting']} | {r['val_loss']:.4f} | {r['val_loss'] - dense['val_loss']:+.4f} | "
                     f"{r['params']:,} | {r['nonzero']:,} | {r['bytes'] / 1024:,.0f} KiB | {r['bytes'] / dense['bytes']:.2f}× | "
                     f"{r['flops']:,} | {r['speed_vs_dense']:.2f}× |")
    (bench / f"compression_summary{sfx}.md").write_text("\n".join(lines) + "\n")


def plots(rows, dense, base, corpus, figs: Path, sfx=""):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figs.mkdir(parents=True, exist_ok=True)

    def series(method):
        sel = [r for r in rows if r["method"] == method]
        return [r["setting"] for r in sel], [r["val_loss"] for r in sel], sel

    def save(fig, name):
        fig.savefig(figs / f"{name}{sfx}.png", bbox_inches="tight", dpi=110)
        plt.close(fig)
        print(f"wrote {figs / f'{name}{sfx}.png'}")

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method, style in (("svd", "o-"), ("svd + fine-tune", "s-"), ("low-rank from scratch", "^-")):
        x, y, _ = series(method)
        if x:
            ax.plot(x, y, style, label=method)
    ax.axhline(dense["val_loss"], color="k", ls="--", lw=1, label="dense")
    ax.axvline(128 * 384 / 512, color="grey", ls=":", lw=1)
    ax.text(128 * 384 / 512, ax.get_ylim()[1], " break-even k*\n (qkv)", va="top", fontsize=8, color="grey")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("rank k of every block matrix")
    ax.set_ylabel("validation loss")
    ax.set_title(f"Validation loss vs rank ({corpus})")
    ax.legend()
    save(fig, "compression_rank")

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method, style in (("prune (layer)", "o-"), ("prune (global)", "s-"), ("prune (global) + fine-tune", "^-"),
                          ("prune (gradual) + fine-tune", "D-")):
        x, y, _ = series(method)
        if x:
            ax.plot(x, y, style, label=method)
    ax.axhline(dense["val_loss"], color="k", ls="--", lw=1, label="dense")
    ax.set_xlabel("sparsity of the block matrices")
    ax.set_ylabel("validation loss")
    ax.set_title(f"Validation loss vs sparsity ({corpus})")
    ax.legend()
    save(fig, "compression_sparsity")

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sel = [r for r in rows if r["method"] in ("int8 weights", "quantized weights", "fp16")]
    sel.sort(key=lambda r: r["setting"])
    ax.plot([r["setting"] for r in sel], [r["val_loss"] for r in sel], "o-", label="per-channel symmetric")
    ax.axhline(dense["val_loss"], color="k", ls="--", lw=1, label="float32")
    ax.set_xlabel("bits per weight")
    ax.set_ylabel("validation loss")
    ax.set_title(f"Validation loss vs bit width ({corpus})")
    ax.legend()
    save(fig, "compression_bits")

    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    for method, marker in (("svd", "o"), ("svd + fine-tune", "s"), ("low-rank from scratch", "^"),
                           ("prune (global)", "v"), ("prune (global) + fine-tune", "D"),
                           ("int8 weights", "P"), ("quantized weights", "X"), ("fp16", "*")):
        sel = [r for r in rows if r["method"] == method]
        if not sel:
            continue
        size = [(r["nonzero"] * 4 if method.startswith("prune") else r["bytes"]) / dense["bytes"] for r in sel]
        ax.plot(size, [r["val_loss"] for r in sel], marker, ls="-", alpha=0.8, label=method)
    ax.axhline(dense["val_loss"], color="k", ls="--", lw=1, label="dense float32")
    ax.set_xscale("log")
    ax.set_xlabel("size relative to dense float32 (pruning: non-zero weights × 4 bytes)")
    ax.set_ylabel("validation loss")
    ax.set_title(f"Accuracy vs size, every method ({corpus})")
    ax.legend(fontsize=7)
    save(fig, "compression_tradeoff")

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    from minitransformer.compress.surgery import slots
    from minitransformer.nn.linear import Linear
    for name, _, _, lin in slots(base):
        if isinstance(lin, Linear) and name.startswith("blocks.0"):
            s = np.linalg.svd(lin.weight.data, compute_uv=False)
            ax.plot(np.arange(1, len(s) + 1), s / s[0], label=f"{name} {lin.weight.shape[0]}×{lin.weight.shape[1]}")
    rnd = GPT(base.config, seed=123)
    s = np.linalg.svd(rnd.blocks[0].ffn.fc1.weight.data, compute_uv=False)
    ax.plot(np.arange(1, len(s) + 1), s / s[0], "k:", label="fc1 at initialisation")
    ax.set_yscale("log")
    ax.set_xlabel("index i")
    ax.set_ylabel("σ_i / σ_1")
    ax.set_title(f"Singular values of trained weights, block 0 ({corpus})")
    ax.legend(fontsize=8)
    save(fig, "compression_spectra")


if __name__ == "__main__":
    sys.exit(main())
