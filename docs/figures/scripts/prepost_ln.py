"""Chapter 10: post-LN against pre-LN, measured.

1. Gradient norm per block at initialisation of an 8-block GPT, post-LN and pre-LN (one backward pass
   on a batch of the default corpus): the picture of Xiong et al. (2020).
2. Short training runs (AdamW, no warm-up, no gradient clipping, constant learning rate) of small GPTs
   with post-LN and pre-LN blocks at several depths and learning rates; loss curves and a table of the
   final loss (mean of the last 20 steps) or the step at which the run diverged.

Writes docs/figures/prepost_ln_grads.png, docs/figures/prepost_ln_curves.png and
docs/figures/tables/prepost_ln.md. About 40 s on two cores.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")   # small matrices: one BLAS thread is faster than two

import math  # noqa: E402

import numpy as np  # noqa: E402

from _common import pyplot, save, write_table
from minitransformer.data.batching import get_batch
from minitransformer.data.corpus import default_corpus
from minitransformer.data.tokenizer import CharTokenizer
from minitransformer.models.gpt import GPT, GPTConfig
from minitransformer.optim import AdamW

WIDTH, HEADS, CONTEXT, BATCH, STEPS = 64, 4, 32, 8, 250
DEPTHS = (2, 6)
LRS = (3e-4, 1e-3, 3e-3)
SMOOTH = 10   # moving average of the plotted batch losses


def data():
    text = default_corpus()
    tok = CharTokenizer.from_text(text)
    return tok, tok.encode(text)


def block_grad_norms(norm: str, ids, vocab: int, depth: int = 8) -> list[float]:
    model = GPT(GPTConfig(vocab_size=vocab, block_size=CONTEXT, n_layer=depth, n_head=HEADS,
                          d_model=WIDTH, norm=norm), seed=0)
    x, y = get_batch(ids, BATCH, CONTEXT, np.random.default_rng(0))
    model.forward(x, y)
    model.backward()
    norms = []
    for block in model.blocks:
        norms.append(math.sqrt(sum(float((p.grad.astype(np.float64) ** 2).sum()) for p in block.parameters())))
    return norms


def train_run(norm: str, depth: int, lr: float, ids, vocab: int):
    """Losses per step; stops early (and says so) when the loss is NaN or has blown past 2x its start."""
    model = GPT(GPTConfig(vocab_size=vocab, block_size=CONTEXT, n_layer=depth, n_head=HEADS,
                          d_model=WIDTH, norm=norm), seed=0)
    opt = AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    rng = np.random.default_rng(1)
    losses, diverged_at = [], None
    for step in range(STEPS):
        x, y = get_batch(ids, BATCH, CONTEXT, rng)
        _, loss = model.forward(x, y)
        loss = float(loss)
        losses.append(loss)
        if not math.isfinite(loss) or loss > 2 * losses[0]:
            diverged_at = step
            break
        model.backward()
        opt.step()
        opt.zero_grad()
    return losses, diverged_at


def main() -> None:
    tok, ids = data()
    vocab = tok.vocab_size
    plt = pyplot()

    # 1. gradient norms at initialisation
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    grads = {}
    for norm in ("post", "pre"):
        grads[norm] = block_grad_norms(norm, ids, vocab)
        ax.semilogy(range(1, len(grads[norm]) + 1), grads[norm], "o-", label=f"{norm}-LN")
    ax.set_xlabel("block (1 = next to the embeddings)")
    ax.set_ylabel("gradient norm of the block's parameters")
    ax.set_title(f"At initialisation, 8 blocks, C={WIDTH}")
    ax.legend()
    save(fig, "prepost_ln_grads")

    # 2. short training runs
    results = {}
    fig, axes = plt.subplots(1, len(DEPTHS), figsize=(11, 3.8), sharey=True)
    colors = {lr: c for lr, c in zip(LRS, ("tab:blue", "tab:orange", "tab:red"))}
    for ax, depth in zip(axes, DEPTHS):
        for norm, style in (("post", "--"), ("pre", "-")):
            for lr in LRS:
                losses, div = train_run(norm, depth, lr, ids, vocab)
                results[(norm, depth, lr)] = (losses, div)
                smooth = np.convolve(losses, np.ones(SMOOTH) / SMOOTH, mode="valid")
                ax.plot(np.arange(SMOOTH - 1, len(losses)), smooth, style, color=colors[lr], lw=1.3,
                        label=f"{norm}-LN lr={lr:g}")
                print(f"{norm}-LN L={depth} lr={lr:g}: "
                      + (f"diverged at step {div}" if div is not None else f"final {np.mean(losses[-20:]):.3f}"))
        ax.set_title(f"{depth} blocks (dashed: post-LN, solid: pre-LN)")
        ax.set_xlabel("step")
        ax.set_ylim(2.0, 4.8)
    axes[0].set_ylabel(f"training loss (moving average of {SMOOTH})")
    axes[-1].legend(fontsize=7, ncol=2)
    save(fig, "prepost_ln_curves")

    rows = []
    for depth in DEPTHS:
        for lr in LRS:
            cells = []
            for norm in ("post", "pre"):
                losses, div = results[(norm, depth, lr)]
                cells.append(f"diverged (step {div})" if div is not None else f"{np.mean(losses[-20:]):.3f}")
            rows.append([depth, f"{lr:g}", *cells])
    g_post, g_pre = grads["post"], grads["pre"]
    write_table("prepost_ln", ["blocks L", "learning rate", "post-LN final loss", "pre-LN final loss"], rows,
                note=(f"*Small GPTs (C={WIDTH}, H={HEADS}, T={CONTEXT}, B={BATCH}) on the default corpus, "
                      f"{STEPS} AdamW steps at a constant learning rate, no warm-up, no clipping, same seed "
                      f"and batches for every run; final loss = mean batch loss of the last 20 steps. "
                      f"Gradient norm at initialisation, 8 blocks, last/first block: post-LN "
                      f"{g_post[-1] / g_post[0]:.2f}, pre-LN {g_pre[-1] / g_pre[0]:.2f}. Written by "
                      f"docs/figures/scripts/prepost_ln.py.*"))


if __name__ == "__main__":
    main()
