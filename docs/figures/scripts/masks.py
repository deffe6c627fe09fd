"""Chapter 6 figure and table: the masks, and what goes wrong with a finite -1e4 mask.

Figure: the causal mask (T = S), the bottom-right causal mask of a KV cache (T < S), a causal + key
padding mask, and the attention weights the real `attention_forward` produces under the last one.
Table: probability that leaks onto masked (future) keys with an additive -1e4 mask versus the
package's boolean (-inf) mask, as the scores grow; and what a fully masked row gives in each case.

Writes docs/figures/masks.png and docs/figures/tables/mask_leak.md.
"""
from __future__ import annotations

import numpy as np

from _common import pyplot, save, write_table

from minitransformer.attention.masks import attention_mask, causal_mask, padding_mask
from minitransformer.attention.scaled_dot_product import attention_forward, attention_weights


def figure():
    T = 8
    causal = causal_mask(T)                                         # (T, T)
    cached = causal_mask(3, T)                                      # (3, T): 3 new queries, T keys
    lengths = np.array([5, 8])
    pad = padding_mask(lengths, T)                                  # (2, T)
    full = attention_mask(T, T, causal=True, key_padding_mask=pad)  # (2, 1, T, T)
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 1, T, 4)) for _ in range(3))
    _, cache = attention_forward(q, k, v, mask=full)
    p = attention_weights(cache)[0, 0]                              # first sequence, length 5

    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
    panels = [(causal, "causal, T = S = 8"), (cached, "causal, T = 3, S = 8\n(KV cache: bottom right)"),
              (full[0, 0], "causal + padding\n(sequence of length 5)"), (p, "weights P from attention_forward\n(rows sum to 1 or are 0)")]
    for ax, (m, title) in zip(axes, panels):
        m = np.asarray(m, dtype=float)
        ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if m.max() <= 1 else m.max())
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("key j")
        ax.set_ylabel("query i")
        ax.set_xticks(range(m.shape[1]))
        ax.set_yticks(range(m.shape[0]))
        ax.grid(False)
        if ax is axes[3]:
            for i in range(m.shape[0]):
                for j in range(m.shape[1]):
                    if m[i, j] > 0:
                        ax.text(j, i, f"{m[i, j]:.2f}".removeprefix("0"), ha="center", va="center", fontsize=6,
                                color="white" if m[i, j] > 0.5 else "black")
    save(fig, "masks")


def leak_table():
    rng = np.random.default_rng(1)
    B, H, T, D = 4, 2, 16, 16
    allowed = causal_mask(T)                                        # (T, T) boolean
    finite = np.where(allowed, 0.0, -1e4).astype(np.float32)        # the minGPT-style additive mask
    rows = []
    for scale in (1, 300, 1000, 3000, 10000):                      # the scores' standard deviation
        q = (rng.standard_normal((B, H, T, D)) * np.sqrt(scale)).astype(np.float32)
        k = (rng.standard_normal((B, H, T, D)) * np.sqrt(scale)).astype(np.float32)
        v = rng.standard_normal((B, H, T, D)).astype(np.float32)
        s = np.abs(q @ k.swapaxes(-1, -2) / np.sqrt(D)).max()
        leaks = []
        for mask in (finite, allowed):
            _, cache = attention_forward(q, k, v, mask=mask)
            leak = (np.asarray(attention_weights(cache)) * ~allowed).sum(-1)     # (B,H,T) future mass
            leaks.append((leak.max(), (leak > 0.01).mean()))
        rows.append([scale, f"{s:.0f}", f"{leaks[0][0]:.2g}", f"{leaks[0][1]:.0%}", f"{leaks[1][0]:.2g}"])
        print(rows[-1])
    # a fully masked row: query 0 of a batch element whose only key is padding
    q, k, v = (rng.standard_normal((1, 1, 2, 4)).astype(np.float32) for _ in range(3))
    none = np.zeros((2, 2), bool)
    none[1, 1] = True                                              # query 0 sees nothing, query 1 sees key 1
    out_f, _ = attention_forward(q, k, v, mask=np.where(none, 0.0, -1e4).astype(np.float32))
    out_b, _ = attention_forward(q, k, v, mask=none)
    with np.errstate(all="ignore"):
        sc = np.where(none, q[0, 0] @ k[0, 0].T, -np.inf)
        e = np.exp(sc - sc.max(-1, keepdims=True))
        naive = e / e.sum(-1, keepdims=True)
    write_table("mask_leak", ["std of scores", "largest \\|score\\|", "−1e4 mask: largest leaked weight",
                              "−1e4 mask: rows leaking > 1%", "−∞ mask: largest leaked weight"], rows,
                note="float32 causal self-attention, T = 16, D = 16; queries and keys scaled so that the scores have "
                     "the standard deviation in the first column. Leaked weight = total probability a query puts on future "
                     "keys (largest over all rows). Produced by `docs/figures/scripts/masks.py` with the real "
                     "`attention_forward`.")
    write_table("mask_empty_row", ["mask of a query with no allowed key", "output of that row"],
                [["additive −1e4 (a finite bias)", f"max \\|o\\| = {np.abs(out_f[0, 0, 0]).max():.2f}: "
                  "uniform weights over the masked keys, the mean of their values"],
                 ["naive softmax with −∞", "NaN" if np.isnan(naive[0]).all() else str(naive[0])],
                 ["package (boolean mask → −∞, guarded)", f"max \\|o\\| = {np.abs(out_b[0, 0, 0]).max():.0f}: zeros"]],
                note="float32, one query row whose only candidate key is masked; real `attention_forward`.")


if __name__ == "__main__":
    figure()
    leak_table()
