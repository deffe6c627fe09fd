"""Chapter 11 figure: ReLU, GELU and tanh-GELU and their derivatives, from the real functional pairs.

The derivative curves are the *backward* functions fed with dy = 1, so the figure shows exactly what
minitransformer/nn/functional/activations.py computes. Also writes a small table of the largest gap
between the exact GELU and its tanh approximation.

Writes docs/figures/ffn_activations.png and docs/figures/tables/ffn_activations.md.
"""
from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "figures"

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from minitransformer.nn.functional.activations import (  # noqa: E402
    gelu_backward, gelu_forward, gelu_tanh_backward, gelu_tanh_forward, relu_backward, relu_forward)

PAIRS = {
    "ReLU": (relu_forward, relu_backward),
    "GELU (exact, erf)": (gelu_forward, gelu_backward),
    "GELU (tanh approx.)": (gelu_tanh_forward, gelu_tanh_backward),
}


def main() -> None:
    x = np.linspace(-4, 4, 1601)
    curves = {}
    for name, (fwd, bwd) in PAIRS.items():
        y, cache = fwd(x.copy())
        dx = bwd(np.ones_like(x), cache)
        dx = dx[0] if isinstance(dx, tuple) else dx
        curves[name] = (y, dx)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    styles = {"ReLU": "-", "GELU (exact, erf)": "-", "GELU (tanh approx.)": "--"}
    for name, (y, dx) in curves.items():
        axes[0].plot(x, y, styles[name], label=name)
        axes[1].plot(x, dx, styles[name], label=name)
    axes[0].set_title("forward: y = f(x)")
    axes[1].set_title("backward with dy = 1: f'(x)")
    for ax in axes:
        ax.axhline(0, color="0.7", lw=0.8)
        ax.axvline(0, color="0.7", lw=0.8)
        ax.set_xlabel("x")
        ax.legend()
    axes[0].set_ylim(-0.5, 4)
    fig.tight_layout()
    OUT.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT / "ffn_activations.png", dpi=120)
    plt.close(fig)

    gelu_y, gelu_d = curves["GELU (exact, erf)"]
    tanh_y, tanh_d = curves["GELU (tanh approx.)"]
    i_min = int(np.argmin(gelu_y))
    rows = [
        "| quantity | value |",
        "| --- | ---: |",
        f"| max \\|GELU − tanh-GELU\\| on [−4, 4] | {np.abs(gelu_y - tanh_y).max():.2e} |",
        f"| max \\|GELU′ − tanh-GELU′\\| on [−4, 4] | {np.abs(gelu_d - tanh_d).max():.2e} |",
        f"| minimum of GELU | {gelu_y[i_min]:.4f} at x = {x[i_min]:.3f} |",
        f"| largest GELU′ (overshoot above 1) | {gelu_d.max():.4f} at x = {x[int(np.argmax(gelu_d))]:.3f} |",
        f"| GELU′(0) | {gelu_d[len(x) // 2]:.4f} |",
    ]
    (OUT / "tables").mkdir(exist_ok=True)
    (OUT / "tables" / "ffn_activations.md").write_text(
        "\n".join(rows) + "\n\n*Written by docs/figures/scripts/ffn_activations.py (float64, 1601 points).*\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
