"""Chapter 9: the sinusoidal encoding, and why order must be injected at all.

1. The (T, C) sinusoidal table from minitransformer.positional.sinusoidal_encoding and the matrix of
   dot products PE_s . PE_t, which depends on |s - t| only.
2. Permutation equivariance of the real MultiHeadAttention, measured in float64: permute the tokens of
   the input and the output is the same rows, permuted; adding positions (sinusoidal or learned) or a
   causal mask breaks it. And RoPE: the score q_s . k_t depends on s - t only.

Writes docs/figures/positional_sinusoidal.png and docs/figures/tables/positional_permutation.md.
A few seconds.
"""
from __future__ import annotations

import numpy as np

from _common import pyplot, save, write_table
from minitransformer import backend
from minitransformer.attention.multi_head import MultiHeadAttention
from minitransformer.positional import (LearnedPositionalEmbedding, SinusoidalPositionalEncoding,
                                        rope_forward, sinusoidal_encoding)



def _align(path, aligns: str) -> None:
    """Rewrite the separator row of a Markdown table: 'l' left-aligns a column, 'r' right-aligns it."""
    lines = path.read_text().split("\n")
    lines[1] = "|" + "|".join(" :--- " if a == "l" else " ---: " for a in aligns) + "|"
    path.write_text("\n".join(lines))

def figure() -> None:
    T, C = 128, 128
    pe = backend.to_numpy(sinusoidal_encoding(T, C, dtype=np.float64))
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.9), gridspec_kw={"width_ratios": [1.15, 1.0, 1.1]})
    im = axes[0].imshow(pe, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    axes[0].set_xlabel("feature c (even: sin, odd: cos)")
    axes[0].set_ylabel("position t")
    axes[0].set_title(f"sinusoidal_encoding({T}, {C})")
    axes[0].grid(False)
    fig.colorbar(im, ax=axes[0], fraction=0.05)
    for c in (0, 16, 32, 48):
        wavelength = 2 * np.pi * 10000 ** (c / C)
        axes[1].plot(pe[:, c], lw=1.2, label=f"feature {c}: wavelength {wavelength:.0f}")
    axes[1].set_xlabel("position t")
    axes[1].set_title("a few columns: wavelength grows with c")
    axes[1].legend(fontsize=7, loc="lower left")
    gram = pe @ pe.T
    im = axes[2].imshow(gram, cmap="viridis", interpolation="nearest")
    axes[2].set_xlabel("position t")
    axes[2].set_ylabel("position s")
    axes[2].set_title("PE_s · PE_t depends on |s − t| only")
    axes[2].grid(False)
    fig.colorbar(im, ax=axes[2], fraction=0.05)
    fig.tight_layout()
    save(fig, "positional_sinusoidal")


def permutation_table() -> None:
    B, T, C, H = 2, 10, 16, 4
    rng = np.random.default_rng(0)
    mha = MultiHeadAttention(C, H, rng=backend.host_rng(0)).to("cpu", "float64")
    sinus = SinusoidalPositionalEncoding(T, C).to("cpu", "float64")
    learned = LearnedPositionalEmbedding(T, C, rng=backend.host_rng(1), std=1.0).to("cpu", "float64")
    x = rng.standard_normal((B, T, C))
    perm = rng.permutation(T)

    def gap(f) -> float:
        """max |f(P x) - P f(x)| over all entries: 0 when f is permutation-equivariant."""
        return float(np.abs(f(x[:, perm]) - f(x)[:, perm]).max())

    def pooled_gap(f) -> float:
        """max |mean_t f(P x) - mean_t f(x)|: 0 when the pooled output ignores the order."""
        return float(np.abs(f(x[:, perm]).mean(1) - f(x).mean(1)).max())

    with mha.no_grad(), sinus.no_grad(), learned.no_grad():
        cases = [
            ("self-attention, no positions: MHA(Px) vs P·MHA(x)", gap(lambda a: mha(a)),
             "equivariant: order is invisible"),
            ("the same, averaged over positions", pooled_gap(lambda a: mha(a)),
             "invariant: a bag of tokens"),
            ("sinusoidal positions added first", gap(lambda a: mha(sinus(a))), "order visible"),
            ("learned positions added first", gap(lambda a: mha(learned(a))), "order visible"),
            ("causal mask, no positions", gap(lambda a: mha(a, causal=True)),
             "order visible (through the mask)"),
        ]
        rows = [[label, f"{value:.1e}", verdict] for label, value, verdict in cases]

    # RoPE: scores q_s . k_t after rotation depend on s - t only
    D, T2 = 8, 12
    q = rng.standard_normal((1, 1, 1, D)).repeat(T2, axis=2)          # the same query at every position
    k = rng.standard_normal((1, 1, 1, D)).repeat(T2, axis=2)          # the same key at every position
    qr, _ = rope_forward(q)
    kr, _ = rope_forward(k)
    scores = (qr[0, 0] @ kr[0, 0].T)                                  # (T2, T2)
    diag_spread = max(float(np.ptp(np.diagonal(scores, offset=o))) for o in range(-T2 + 1, T2))
    rows.append(["RoPE: spread of q_s·k_t along each diagonal s − t = const", f"{diag_spread:.1e}",
                 "the score depends on s − t only"])
    _align(write_table("positional_permutation", ["what is compared", "max abs difference", "verdict"], rows,
                note=f"*Real MultiHeadAttention (C={C}, H={H}), B={B}, T={T}, a random permutation P of "
                     "the positions, float64. Equivariant means MHA(P x) = P MHA(x). Written by "
                     "docs/figures/scripts/positional_encoding.py.*"), "lrl")


if __name__ == "__main__":
    figure()
    permutation_table()
