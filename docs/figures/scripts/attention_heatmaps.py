"""Chapter 8 figures: attention weights of trained GPTs, per layer and head.

Trains two tiny GPTs with the package's own code (GPT forward/backward, AdamW, gradient clipping) and
draws `DenseAttention.last_weights` (exposed as `MultiHeadAttention.last_weights`) for one input:

1. the *reverse* task (`[digits] SEP [digits reversed]`): the heads that solve it must look at the
   mirrored source position, an anti-diagonal;
2. a character-level language model on the built-in corpus (docstrings of the standard library), where
   heads specialise into "previous character", "start of the word" and similar patterns.

Writes docs/figures/attention_reverse.png, docs/figures/attention_text.png and
docs/figures/tables/attention_reverse.md and attention_text.md. About 20 to 40 s on two CPU cores.
"""
from __future__ import annotations

import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # small matrices: one thread is fastest here

import numpy as np  # noqa: E402

from _common import pyplot, save, write_table  # noqa: E402

from minitransformer.data.batching import get_batch  # noqa: E402
from minitransformer.data.corpus import default_corpus  # noqa: E402
from minitransformer.data.synthetic import IGNORE, copy_or_reverse_batch  # noqa: E402
from minitransformer.data.tokenizer import CharTokenizer  # noqa: E402
from minitransformer.models.gpt import GPT, GPTConfig  # noqa: E402
from minitransformer.optim import AdamW, clip_grad_norm  # noqa: E402


def train(model, batches, steps, lr):
    """The plain training loop: forward with targets, backward, clip, AdamW step."""
    opt = AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    for step in range(steps):
        x, y = batches(step)
        opt.zero_grad()
        _, loss = model.forward(x, y)
        model.backward()
        clip_grad_norm(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss))
    return losses


def weights_of(model, x):
    """Run one forward pass (caches on) and collect every block's (B, H, T, T) attention weights."""
    model.eval()
    model.forward(x)
    return [np.asarray(block.attn.last_weights) for block in model.blocks]


def grid(weights, labels, title, name, size=3.1, rows_label="query", cols_label="key"):
    L, H = len(weights), weights[0].shape[1]
    plt = pyplot()
    fig, axes = plt.subplots(L, H, figsize=(size * H, size * L), squeeze=False)
    for l in range(L):
        for h in range(H):
            ax = axes[l][h]
            ax.imshow(weights[l][0, h], cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"layer {l}, head {h}", fontsize=9)
            ax.set_xticks(range(len(labels)), labels, fontsize=6)
            ax.set_yticks(range(len(labels)), labels, fontsize=6)
            ax.grid(False)
            if h == 0:
                ax.set_ylabel(rows_label, fontsize=8)
            if l == L - 1:
                ax.set_xlabel(cols_label, fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    save(fig, name)


def reverse_task(rows):
    n_sym, length = 10, 8
    cfg = GPTConfig(vocab_size=n_sym + 1, block_size=2 * length, n_layer=2, n_head=2, d_model=64)
    model = GPT(cfg, seed=0)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    losses = train(model, lambda s: copy_or_reverse_batch(32, length, n_sym, rng, reverse=True), 600, 3e-3)
    dt = time.perf_counter() - t0
    x, y = copy_or_reverse_batch(256, length, n_sym, np.random.default_rng(123), reverse=True)
    model.eval()
    logits, _ = model.forward(x)
    keep = y != IGNORE
    acc = float((logits.argmax(-1)[keep] == y[keep]).mean())
    w = weights_of(model, x[:1])
    labels = [str(t) if t < n_sym else "|" for t in x[0]]
    grid(w, labels, "Reverse task: 8 digits, separator '|', the digits reversed", "attention_reverse")
    # how much of each head's attention (on answer positions) falls on the mirrored source digit
    T = 2 * length
    # query i >= length predicts y_i = source digit 2L - 1 - i: the key that holds the answer
    mirror = np.zeros((T, T), bool)
    answer_rows = np.arange(length, T)
    mirror[answer_rows, T - 1 - answer_rows] = True
    for l, wl in enumerate(w):
        for h in range(wl.shape[1]):
            rows.append([f"layer {l}, head {h}", f"{wl[0, h][mirror].mean():.2f}"])
    rows.append(["**whole model** (600 steps)", f"accuracy {acc:.1%} on 256 new sequences, final loss "
                 f"{np.mean(losses[-20:]):.3f}, trained in {dt:.0f} s"])
    print(rows[-1])
    write_table("attention_reverse", ["head", "mean weight on the mirrored source digit (answer rows)"], rows,
                note="Measured on the sequence drawn in the figure; produced by "
                     "`docs/figures/scripts/attention_heatmaps.py`, which trains the model from scratch.")


def text_task(rows):
    text = default_corpus(200_000)
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    T = 48
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=T, n_layer=2, n_head=4, d_model=64)
    model = GPT(cfg, seed=0)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    losses = train(model, lambda s: get_batch(ids, 16, T, rng), 500, 3e-3)
    dt = time.perf_counter() - t0
    sample = "Return the number of items in the list.\nIf the "
    x = tok.encode(sample[:T])[None, :]
    w = weights_of(model, x)
    labels = ["⏎" if c == "\n" else ("␣" if c == " " else c) for c in sample[:T]]
    grid(w, labels, "Character-level GPT (2 layers x 4 heads) on standard-library docstrings", "attention_text",
         size=4.2)
    n = x.shape[1]
    prev = np.eye(n, k=-1, dtype=bool)
    local = np.tril(np.ones((n, n), bool)) & ~np.tril(np.ones((n, n), bool), k=-4)   # keys i-3..i
    space = np.array([c == " " for c in sample[:n]])
    causal_share = np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]           # uniform attention
    for l, wl in enumerate(w):
        for h in range(wl.shape[1]):
            p = wl[0, h]
            rows.append([f"layer {l}, head {h}", f"{p[prev].mean():.2f}", f"{p[local].sum() / n:.2f}",
                         f"{p[:, space].sum() / n:.2f}"])
    rows.append(["uniform causal attention (reference)", f"{causal_share[prev].mean():.2f}",
                 f"{causal_share[local].sum() / n:.2f}", f"{causal_share[:, space].sum() / n:.2f}"])
    rows.append(["**whole model** (500 steps)", f"loss {np.mean(losses[:10]):.2f} → {np.mean(losses[-20:]):.2f} "
                 f"(ln V = {np.log(tok.vocab_size):.2f})", f"trained in {dt:.0f} s", ""])
    print(rows[-1])
    write_table("attention_text", ["head", "weight on the previous character", "weight on keys i−3..i",
                                   "weight on spaces"], rows,
                note="Averages over the query rows of the sentence drawn in the figure; produced by "
                     "`docs/figures/scripts/attention_heatmaps.py`, which trains the model from scratch.")


if __name__ == "__main__":
    reverse_task([])
    text_task([])
