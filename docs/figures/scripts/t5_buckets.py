"""Chapter 34 figure and table: T5's relative position buckets.

Figure: the bucket of each relative position n = key - query (32 buckets, max distance 128), for the
encoder's bidirectional table and the decoder's causal one; and the (T, S) bucket map of a sequence of
48 tokens in the encoder, the array `RelativePositionBias` gathers its bias from.
Table: the buckets of a list of distances, from `relative_position_bucket` itself.

Writes docs/figures/t5_buckets.png and docs/figures/tables/t5_buckets.md.
"""
from __future__ import annotations

import numpy as np

from _common import pyplot, save, write_table

from minitransformer.attention.relative_bias import bucket_table, relative_position_bucket

DISTANCES = [-1000, -129, -128, -127, -64, -48, -32, -31, -16, -9, -8, -7, -1, 0, 1, 7, 8, 16, 31, 32, 64, 128, 1000]


def figure():
    n = np.arange(-160, 161)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for bidirectional, label in ((True, "encoder (bidirectional)"), (False, "decoder (causal)")):
        axes[0].step(n, relative_position_bucket(n, bidirectional), where="mid", label=label)
    for x in (-128, 128):
        axes[0].axvline(x, color="grey", lw=0.8, ls="--")
    axes[0].set_xlabel("relative position n = key - query")
    axes[0].set_ylabel("bucket")
    axes[0].set_title("32 buckets, max distance 128 (dashed)")
    axes[0].legend(fontsize=8)
    im = axes[1].imshow(bucket_table(48, 48, 0, True, 32, 128), cmap="viridis")
    axes[1].set_title("encoder bucket map, T = S = 48")
    axes[1].set_xlabel("key j")
    axes[1].set_ylabel("query i")
    axes[1].grid(False)
    fig.colorbar(im, ax=axes[1], shrink=0.8, label="bucket")
    save(fig, "t5_buckets")


def table():
    rows = [[d, int(relative_position_bucket(np.array(d), True)), int(relative_position_bucket(np.array(d), False))]
            for d in DISTANCES]
    write_table("t5_buckets", ["n = key - query", "encoder bucket", "decoder bucket"], rows,
                note="From `relative_position_bucket` (32 buckets, max distance 128), made by "
                     "`docs/figures/scripts/t5_buckets.py`.")


if __name__ == "__main__":
    figure()
    table()
