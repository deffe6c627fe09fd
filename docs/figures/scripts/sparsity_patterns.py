"""The T x T masks of every exact sparse kernel, computed from the kernels' own index logic
(`pattern_mask`, which runs the same offsets, columns, rows and block tables as the forward pass).

    python docs/figures/scripts/sparsity_patterns.py   ->  docs/figures/sparsity_patterns.png
"""
from __future__ import annotations

import numpy as np
from _common import pyplot, save

from minitransformer.attention import make_kernel

T = 48
PANELS = [
    ("sliding_window", {"window": 4}, False, "sliding window, W=4"),
    ("sliding_window", {"window": 4}, True, "sliding window, W=4, causal"),
    ("dilated", {"window": 3, "dilation": [1, 3]}, False, "dilated, W=3, δ=1 | δ=3 (two heads)"),
    ("longformer", {"window": 3, "global_tokens": [0, 24]}, False, "Longformer, W=3, global {0, 24}"),
    ("sparse_strided", {"stride": 7}, True, "Sparse Transformer strided, l=7"),
    ("sparse_fixed", {"stride": 8, "summary": 2}, True, "Sparse Transformer fixed, l=8, c=2"),
    ("bigbird", {"block": 4, "random_blocks": 2, "seed": 0}, False, "BigBird, block 4, r=2"),
]


def main():
    plt = pyplot()
    fig, axes = plt.subplots(2, 4, figsize=(15, 7.8))
    axes = axes.ravel()
    for ax, (name, opts, causal, title) in zip(axes, PANELS):
        n_head = len(opts["dilation"]) if isinstance(opts.get("dilation"), list) else 1
        kern = make_kernel(name, n_head, 8, **opts)
        mask = kern.pattern_mask(T, T, causal)                       # (H,T,T) bool
        if mask.shape[0] == 2:                                       # two heads side by side
            img = np.concatenate([mask[0], np.zeros((T, 2), bool), mask[1]], axis=1).astype(float)
            img[:, T:T + 2] = 0.5
        else:
            img = mask[0].astype(float)
        ax.imshow(img, cmap="Blues", vmin=0, vmax=1.2, interpolation="nearest")
        density = mask.mean()
        ax.set_title(f"{title}\n{density:.0%} of the T×T scores", fontsize=9)
        ax.set_xlabel("key j")
        ax.set_ylabel("query i")
        ax.grid(False)
    axes[-1].axis("off")
    axes[-1].text(0.0, 0.5, f"T = {T}\nblue: query i attends key j\n\n"
                  "each mask is drawn from the kernel's\nown index logic (pattern_mask),\n"
                  "and tests check it against the\npaper's definition", fontsize=10, va="center")
    fig.tight_layout()
    save(fig, "sparsity_patterns")


if __name__ == "__main__":
    main()
