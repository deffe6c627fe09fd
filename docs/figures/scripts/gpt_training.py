"""Chapter 13: the loss curve of a real training run, and samples with four decoding strategies.

A full run takes several minutes, more than a figure script should, so this script has two modes:

    python docs/figures/scripts/gpt_training.py            # plot from the recorded run (seconds)
    python docs/figures/scripts/gpt_training.py --train    # redo the run(s), record them, plot

`--train` calls `minitransformer.train.train` with the `default` preset on two corpora, the built-in
default corpus and tiny Shakespeare (read from ../shared/data when present), validating every 50
steps instead of 250 for a finer curve (validation uses its own random batches, so the training run
itself is unchanged). The metrics are the JSON lines the trainer writes to metrics.jsonl, copied
verbatim into docs/figures/data/gpt_run_<corpus>.json together with the configuration, the timing and
samples generated from the trained model with greedy, temperature, top-k and top-p decoding.

Writes docs/figures/gpt_loss_curve.png, docs/figures/tables/gpt_run.md and
docs/figures/tables/gpt_samples.md.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")   # a shared 2-core machine: one BLAS thread is much faster

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from _common import FIGURES, ROOT, pyplot, save  # noqa: E402
from minitransformer import backend  # noqa: E402
from minitransformer.data.corpus import default_corpus, load_text  # noqa: E402
from minitransformer.generate import generate  # noqa: E402
from minitransformer.models.gpt import GPT  # noqa: E402
from minitransformer.presets import PRESETS  # noqa: E402
from minitransformer.tasks import CausalLMTask  # noqa: E402
from minitransformer.train import fit  # noqa: E402

DATA = FIGURES / "data"
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
CORPORA = {"default": "default corpus (standard-library docstrings)", "shakespeare": "tiny Shakespeare"}
PROMPTS = {"default": "Return the ", "shakespeare": "ROMEO:\n"}
STRATEGIES = [
    ("greedy", dict(greedy=True)),
    ("temperature 0.5", dict(temperature=0.5)),
    ("temperature 1.0", dict(temperature=1.0)),
    ("temperature 1.5", dict(temperature=1.5)),
    ("top-k 10", dict(temperature=1.0, top_k=10)),
    ("top-p 0.9", dict(temperature=1.0, top_p=0.9)),
]
SAMPLE_CHARS = 160


def corpus_text(name: str) -> str | None:
    if name == "default":
        return default_corpus()
    return load_text(SHAKESPEARE) if SHAKESPEARE.is_file() else None


def run(name: str) -> None:
    text = corpus_text(name)
    if text is None:
        print(f"skipping {name}: {SHAKESPEARE} not found")
        return
    model_cfg, train_cfg = PRESETS["gpt"]["default"]
    train_cfg = dataclasses.replace(train_cfg, eval_interval=50, num_samples=0)
    task = CausalLMTask.from_text(text, model_cfg.block_size, train_cfg.val_fraction)
    model = GPT(task.adapt(model_cfg), seed=train_cfg.seed)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        result = fit(model, task, train_cfg, out, progress=False, log=print)
        seconds = time.perf_counter() - t0
        metrics = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    tok = task.tokenizer
    prompt = backend.to_device(tok.encode(PROMPTS[name])[None, :], "cpu")
    samples = {}
    for label, options in STRATEGIES:
        out_ids = generate(model, prompt, SAMPLE_CHARS, seed=0, **options)
        samples[label] = tok.decode(backend.to_numpy(out_ids[0]))
    record = {
        "corpus": CORPORA[name], "characters": len(text), "vocab_size": tok.vocab_size,
        "parameters": model.num_parameters(), "model_config": dataclasses.asdict(model_cfg),
        "train_config": dataclasses.asdict(train_cfg), "unigram_baseline": result["baseline"],
        "wall_seconds": seconds, "metrics": metrics, "prompt": PROMPTS[name], "samples": samples,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, one BLAS thread, "
                   f"Python {platform.python_version()}, NumPy {np.__version__}",
    }
    DATA.mkdir(parents=True, exist_ok=True)
    (DATA / f"gpt_run_{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"{name}: final val {metrics[-1]['val_loss']:.3f} in {seconds:.0f} s")


def first_clip(records) -> float:
    return next(iter(records.values()))["train_config"]["grad_clip"]


def plot() -> None:
    records = {n: json.loads((DATA / f"gpt_run_{n}.json").read_text())
               for n in CORPORA if (DATA / f"gpt_run_{n}.json").is_file()}
    if not records:
        raise SystemExit("no recorded run in docs/figures/data/: run this script with --train first")
    plt = pyplot()
    fig, axes = plt.subplots(1, len(records), figsize=(5.6 * len(records), 3.8), squeeze=False)
    rows = []
    for ax, (name, rec) in zip(axes[0], records.items()):
        steps = [m["step"] for m in rec["metrics"]]
        ax.plot(steps, [m["train_loss"] for m in rec["metrics"]], label="training split")
        ax.plot(steps, [m["val_loss"] for m in rec["metrics"]], label="validation split")
        ax.axhline(np.log(rec["vocab_size"]), color="0.7", ls="--", label="uniform guess, ln V")
        ax.axhline(rec["unigram_baseline"], color="0.5", ls=":", label="unigram baseline")
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy (nats per character)")
        ax.set_title(f"default preset on {rec['corpus']}", fontsize=9)
        ax.set_ylim(0.8, 4.6)
        ax.legend()
        at = {m["step"]: m for m in rec["metrics"]}
        last = rec["metrics"][-1]
        rows.append([rec["corpus"], f"{rec['characters']:,}", rec["vocab_size"], f"{rec['parameters']:,}",
                     f"{rec['unigram_baseline']:.3f}",
                     *(f"{at[s]['val_loss']:.3f}" if s in at else "–" for s in (250, 500, 1000)),
                     f"{last['val_loss']:.3f}", f"{last['train_loss']:.3f}",
                     f"{rec['wall_seconds'] / 60:.1f} min"])
    save(fig, "gpt_loss_curve")

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for name, rec in records.items():
        steps = [m["step"] for m in rec["metrics"]]
        axes[0].plot(steps, [m["lr"] for m in rec["metrics"]], label=rec["corpus"])
        axes[1].plot(steps, [m["grad_norm"] for m in rec["metrics"]], "o-", ms=3, label=rec["corpus"])
    axes[0].set_title("learning rate at the recorded steps", fontsize=9)
    axes[0].set_xlabel("step")
    axes[1].axhline(first_clip(records), color="0.5", ls=":", label="clipping threshold")
    axes[1].set_title("global gradient norm before clipping (one batch)", fontsize=9)
    axes[1].set_xlabel("step")
    axes[1].legend(fontsize=8)
    save(fig, "gpt_run_diagnostics")

    header = ["corpus", "characters", "V", "parameters", "unigram", "val @250", "val @500", "val @1000",
              "val @2000", "train @2000", "wall time"]
    first = next(iter(records.values()))
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    lines.append("")
    lines.append(f"*Default preset (L=4, H=4, C=128, T=64, B=12, 2000 AdamW steps, warm-up 100, cosine "
                 f"1e-3 → 1e-4, clip 1.0), validation on the last 10% of the text, {first['train_config']['eval_iters']} "
                 f"random batches per estimate. Measured on {first['machine']}, with other jobs sharing the "
                 f"machine (wall times include validation every 50 steps). Recorded by "
                 f"`docs/figures/scripts/gpt_training.py --train`.*")
    (FIGURES / "tables").mkdir(exist_ok=True)
    (FIGURES / "tables" / "gpt_run.md").write_text("\n".join(lines) + "\n")

    out = []
    for name, rec in records.items():
        out.append(f"=== \"{rec['corpus']}\"\n")
        out.append(f"    Prompt `{rec['prompt']!r}`, {SAMPLE_CHARS} new characters, seed 0, from the model "
                   "trained above.\n")
        for label, text in rec["samples"].items():
            out.append(f"    **{label}**\n")
            out.append("    ```text")
            out += ["    " + line for line in text.splitlines()]
            out.append("    ```\n")
    (FIGURES / "tables" / "gpt_samples.md").write_text("\n".join(out) + "\n")
    print("wrote docs/figures/gpt_loss_curve.png, tables/gpt_run.md, tables/gpt_samples.md")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", nargs="*", choices=sorted(CORPORA), default=None,
                        help="redo the run(s) (all corpora when no name is given), then plot")
    args = parser.parse_args()
    if args.train is not None:
        for corpus in args.train or list(CORPORA):
            run(corpus)
    plot()
