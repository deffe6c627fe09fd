"""Length generalisation: T5's relative position buckets against sinusoidal positions.

One task (upper-case a string of random lower-case letters: "upper: abc" -> "ABC"), three models that
differ only in how position enters: T5's relative bias (32 buckets per table, max distance 128 as in
T5, or 32, the longest training string), or sinusoids added to the embeddings (no relative bias). All train on strings of 1 to 32 letters with
the same seed and batches, and are tested on 64 strings each of 16, 32, 48 and 64 letters (greedy
decoding): exact match and the fraction of letters right at their position.

It also records which relative-position buckets the training lengths can reach and how far each
row of the learned tables moved from its initial value: buckets reached only by the longer test
strings never receive a gradient, so their rows keep their random initial values.

Writes docs/benchmarks/t5_length_generalisation.{json,md} and docs/figures/t5_length_generalisation.png
(--out, --figures: elsewhere).
Usage: python benchmarks/t5_length_generalisation.py [--steps 3000] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _blas_threads import THREADS  # noqa: E402  pins BLAS threads before numpy loads

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from minitransformer import backend  # noqa: E402
from minitransformer.attention.relative_bias import bucket_table  # noqa: E402
from minitransformer.benchmarking.output import save_plot  # noqa: E402
from minitransformer.config import to_dict  # noqa: E402
from minitransformer.data.text_vocabulary import TextVocabulary  # noqa: E402
from minitransformer.models.t5 import T5Config, T5Model  # noqa: E402
from minitransformer.tasks.base import Task  # noqa: E402
from minitransformer.tasks.text_to_text import encode_pairs  # noqa: E402
from minitransformer.train import TrainConfig, fit  # noqa: E402

PREFIX = "upper: "
LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))
TRAIN_MAX, TEST_LENGTHS, LONGEST = 32, (16, 32, 48, 64), 64


def pairs_of(lengths, rng):
    words = ["".join(rng.choice(LETTERS, n)) for n in lengths]
    return [(PREFIX + w, w.upper()) for w in words]


class UpperTask(Task):
    """Upper-case random letter strings of 1..TRAIN_MAX letters."""

    name = "t5-length-upper"

    def __init__(self, vocab):
        self.vocab = vocab

    def batch(self, split, batch_size, rng):
        pairs = pairs_of(rng.integers(1, TRAIN_MAX + 1, size=batch_size), rng)
        return encode_pairs(self.vocab, pairs, len(PREFIX) + TRAIN_MAX + 1, TRAIN_MAX + 1)


ARMS = [("relative, max distance 128", {"position": "relative"}),
        ("relative, max distance 32", {"position": "relative", "max_distance": 32}),
        ("sinusoidal", {"position": "sinusoidal"})]


def evaluate(model, vocab, length: int, n: int = 64) -> dict:
    pairs = pairs_of([length] * n, np.random.default_rng(1000 + length))
    src, _, _ = encode_pairs(vocab, pairs, len(PREFIX) + length + 1, length + 1)
    out = backend.to_numpy(model.greedy_decode(src, length + 1))
    texts = [vocab.decode(row) for row in out]
    exact = np.mean([t == target for t, (_, target) in zip(texts, pairs)])
    letters = np.mean([np.mean([a == b for a, b in zip(t.ljust(length), target)])
                       for t, (_, target) in zip(texts, pairs)])
    return {"exact_match": float(exact), "letter_accuracy": float(letters)}


def buckets_reached(stack, longest_query: int, longest_key: int) -> list[int]:
    """The buckets of every (query, key) pair of sequences up to the given lengths."""
    table = stack.relative_bias
    T = longest_query
    return sorted(set(bucket_table(T, longest_key, 0, table.bidirectional, table.num_buckets,
                                   table.max_distance).reshape(-1).tolist()))


def table_movement(model, initial: dict) -> dict:
    """Per stack: the largest change of each bucket's row (over the heads) since initialisation."""
    moved = {}
    for name, stack in (("encoder", model.encoder), ("decoder", model.decoder)):
        w = backend.to_numpy(stack.relative_bias.weight.data)
        moved[name] = np.abs(w - initial[name]).max(axis=1).tolist()        # (N_b, H) -> (N_b,)
    return moved


def bucket_report(model, initial: dict) -> dict:
    src_train, tgt_train = len(PREFIX) + TRAIN_MAX + 1, TRAIN_MAX + 1
    src_test, tgt_test = len(PREFIX) + LONGEST + 1, LONGEST + 1
    moved = table_movement(model, initial)
    report = {}
    for name, stack, lengths in (("encoder", model.encoder, (src_train, src_test)),
                                 ("decoder", model.decoder, (tgt_train, tgt_test))):
        seen = buckets_reached(stack, lengths[0], lengths[0])
        used = buckets_reached(stack, lengths[1], lengths[1])
        only_test = [b for b in used if b not in seen]
        report[name] = {"buckets_reached_in_training": seen, "buckets_reached_only_at_test": only_test,
                        "max_row_change_reached_in_training": max(moved[name][b] for b in seen),
                        "min_row_change_reached_in_training": min(moved[name][b] for b in seen),
                        "max_row_change_only_at_test": max([moved[name][b] for b in only_test], default=0.0),
                        "row_change": moved[name]}
    return report


def plot(rows, report, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for (position, row), color in zip(rows.items(), ("C0", "C2", "C1")):
        axes[0].plot(TEST_LENGTHS, [row["by_length"][str(n)]["letter_accuracy"] for n in TEST_LENGTHS], "o-",
                     color=color, label=f"{position}: letters right")
        axes[0].plot(TEST_LENGTHS, [row["by_length"][str(n)]["exact_match"] for n in TEST_LENGTHS], "x--",
                     color=color, label=f"{position}: exact match")
    axes[0].axvline(TRAIN_MAX, color="grey", lw=0.8, ls=":")
    axes[0].set_xlabel("string length (training: 1 to 32, dotted)")
    axes[0].set_ylabel("accuracy")
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=7)
    for name, marker in (("encoder", "o"), ("decoder", "s")):
        change = report[name]["row_change"]
        axes[1].plot(range(len(change)), change, marker, label=name)
        only = report[name]["buckets_reached_only_at_test"]
        axes[1].plot(only, [change[b] for b in only], marker, mfc="none", mec="red", ms=11)
    axes[1].set_xlabel("bucket (red rings: reached only by test lengths)")
    axes[1].set_ylabel("max |row change| since init")
    axes[1].set_title(f"{ARMS[0][0]}: learned bias tables")
    axes[1].legend(fontsize=8)
    fig.savefig(path, bbox_inches="tight", dpi=110)
    plt.close(fig)


def _ranges(values) -> str:
    """[0, 1, 2, 5, 6] -> '0-2, 5-6'."""
    out, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(f"{start}" if start == v else f"{start}-{v}")
            start = None
    return ", ".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", default="1", help="BLAS threads (default 1)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    p.add_argument("--figures", type=Path, default=ROOT / "docs" / "figures")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    vocab = TextVocabulary()
    task = UpperTask(vocab)
    train_cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=3e-3, min_lr=3e-4, warmup=50,
                            weight_decay=0.0, eval_interval=args.steps, eval_iters=2, num_samples=0, seed=0,
                            threads=1)
    rows, reports = {}, {}
    for label, options in ARMS:
        cfg = T5Config(vocab_size=vocab.vocab_size, max_src_len=len(PREFIX) + LONGEST + 1, max_tgt_len=LONGEST + 1,
                       n_layer=2, n_dec_layer=2, n_head=4, d_model=64, **options)
        model = T5Model(cfg, seed=0)
        initial = None if cfg.position != "relative" else {
            name: backend.to_numpy(stack.relative_bias.weight.data).copy()
            for name, stack in (("encoder", model.encoder), ("decoder", model.decoder))}
        t0 = time.perf_counter()
        run = fit(model, task, train_cfg, progress=False, log=lambda *_: None)
        if initial is not None:
            reports[label] = bucket_report(model, initial)
        rows[label] = {"options": options, "train_seconds": time.perf_counter() - t0, "final_loss": run["history"][-1]["val_loss"],
                          "by_length": {str(n): evaluate(model, vocab, n) for n in TEST_LENGTHS}}
        print(label, json.dumps(rows[label]), flush=True)
    result = {"task": "upper-case random letters", "train_lengths": [1, TRAIN_MAX], "test_lengths": TEST_LENGTHS,
              "steps": args.steps, "batch_size": args.batch_size, "config": to_dict(cfg) | {"position": "see rows"},
              "threads": THREADS, "seconds": time.perf_counter() - t_start, "rows": rows,
              "relative_buckets": reports}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "t5_length_generalisation.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"Upper-casing random letter strings, trained on 1-{TRAIN_MAX} letters for {args.steps} steps of "
             f"batch {args.batch_size} (same seed and batches for all), tested on 64 strings per length with "
             f"greedy decoding. Width 64, 2+2 layers. Shared 2-core CPU, {THREADS} BLAS thread; made by "
             "`benchmarks/t5_length_generalisation.py`.", "",
             "| positions | " + " | ".join(f"length {n}" for n in TEST_LENGTHS) + " |",
             "| --- | " + " | ".join("---:" for _ in TEST_LENGTHS) + " |"]
    for label, row in rows.items():
        cells = [f"{row['by_length'][str(n)]['exact_match']:.2f} / {row['by_length'][str(n)]['letter_accuracy']:.2f}"
                 for n in TEST_LENGTHS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Each cell: exact match / letters right at their position. Lengths 48 and 64 were never seen in "
              "training.", "", "| relative model, stack | buckets reached in training | reached only at length 64 | "
              "row change, trained buckets (min to max) | row change, test-only buckets (max) |",
              "| --- | --- | --- | ---: | ---: |"]
    for label, report in reports.items():
        for name, r in report.items():
            lines.append(f"| {label}: {name} | {_ranges(r['buckets_reached_in_training'])} | "
                         f"{_ranges(r['buckets_reached_only_at_test']) or '-'} | "
                         f"{r['min_row_change_reached_in_training']:.3g} to "
                         f"{r['max_row_change_reached_in_training']:.3g} | {r['max_row_change_only_at_test']:.3g} |")
    lines += ["", "Row change: the largest |change| over the heads of a bucket's row of the learned table since "
              "initialisation."]
    args.figures.mkdir(parents=True, exist_ok=True)
    save_plot(lambda path: plot(rows, reports[ARMS[0][0]], path), args.figures / "t5_length_generalisation.png")
    (args.out / "t5_length_generalisation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
