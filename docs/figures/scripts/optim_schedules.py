"""Chapter 14 figures: the learning-rate schedules and the optimisers on an ill-conditioned bowl.

Writes docs/figures/optim_schedules.png and docs/figures/optim_trajectories.png from the real code in
minitransformer/optim.py. Run from anywhere: python docs/figures/scripts/optim_schedules.py
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

from minitransformer.nn.module import Parameter  # noqa: E402
from minitransformer.optim import SGD, Adam, AdamW, clip_grad_norm, noam, warmup_cosine  # noqa: E402


def schedules() -> None:
    steps = np.arange(5000)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ax = axes[0]
    for warmup in (100, 500):
        lr = [warmup_cosine(s, max_lr=1e-3, min_lr=1e-4, warmup=warmup, total=5000) for s in steps]
        ax.plot(steps, lr, label=f"warm-up {warmup}, cosine to 1e-4")
    ax.set_title("warmup_cosine(max_lr=1e-3, total=5000)")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.legend()
    ax = axes[1]
    for d_model, warmup in ((512, 4000), (512, 8000), (128, 4000)):
        steps2 = np.arange(30000)
        lr = [noam(s, d_model=d_model, warmup=warmup) for s in steps2]
        ax.plot(steps2, lr, label=f"d_model={d_model}, warm-up={warmup}")
    ax.set_title("noam: d_model^-1/2 min(t^-1/2, t warmup^-3/2)")
    ax.set_xlabel("step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "optim_schedules.png", dpi=120)
    plt.close(fig)


STEPS = 60


def bowl_grad(theta: np.ndarray) -> np.ndarray:
    """Gradient of f(x, y) = 0.5 (x^2 + 25 y^2), an elongated bowl (condition number 25)."""
    return np.array([theta[0], 25.0 * theta[1]])


def trajectory(make_opt, steps: int = STEPS, clip: float | None = None) -> np.ndarray:
    p = Parameter(np.array([[-4.0, 1.5]]))  # a (1, 2) matrix, so AdamW decays it
    opt = make_opt([p])
    path = [p.data[0].copy()]
    for _ in range(steps):
        opt.zero_grad()
        p.grad += bowl_grad(p.data[0])[None, :]
        if clip is not None:
            clip_grad_norm([p], clip)
        opt.step()
        path.append(p.data[0].copy())
    return np.array(path)


def trajectories() -> dict:
    runs = {
        "SGD lr=0.02": lambda ps: SGD(ps, lr=0.02),
        "SGD lr=0.075 (near the edge 2/25)": lambda ps: SGD(ps, lr=0.075),
        "SGD+momentum 0.45, lr=0.11": lambda ps: SGD(ps, lr=0.11, momentum=0.45),
        "Adam lr=0.3": lambda ps: Adam(ps, lr=0.3),
        "AdamW lr=0.3, wd=0.1": lambda ps: AdamW(ps, lr=0.3, weight_decay=0.1),
    }
    xs, ys = np.meshgrid(np.linspace(-4.5, 1.5, 200), np.linspace(-2, 2, 200))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    ax.contour(xs, ys, 0.5 * (xs ** 2 + 25 * ys ** 2), levels=np.geomspace(0.05, 60, 14), colors="0.8")
    finals = {}
    for name, make in runs.items():
        path = trajectory(make)
        ax.plot(path[:, 0], path[:, 1], ".-", ms=3, lw=1, label=name)
        finals[name] = path
    ax.set_title(f"{STEPS} steps on f = (x² + 25 y²)/2 from (-4, 1.5)")
    ax.legend(fontsize=8, loc="lower right")
    ax = axes[1]
    for name, path in finals.items():
        f = 0.5 * (path[:, 0] ** 2 + 25 * path[:, 1] ** 2)
        ax.semilogy(f, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("f(θ)")
    ax.set_title("loss (log scale)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "optim_trajectories.png", dpi=120)
    plt.close(fig)
    table = ["| optimiser | f after 10 steps | f after 30 steps | f after 60 steps |", "| --- | ---: | ---: | ---: |"]
    for name, path in finals.items():
        f = 0.5 * (path[:, 0] ** 2 + 25 * path[:, 1] ** 2)
        table.append(f"| {name} | {f[10]:.2e} | {f[30]:.2e} | {f[STEPS]:.2e} |")
    (OUT / "tables").mkdir(exist_ok=True)
    (OUT / "tables" / "optim_trajectories.md").write_text(
        "\n".join(table) + "\n\n*Written by docs/figures/scripts/optim_schedules.py; f(θ₀) = 36.1.*\n")
    return {n: float(0.5 * (p[-1, 0] ** 2 + 25 * p[-1, 1] ** 2)) for n, p in finals.items()}


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    schedules()
    for name, value in trajectories().items():
        print(f"{name:28s} f after 60 steps = {value:.3e}")
    print("wrote optim_schedules.png, optim_trajectories.png, tables/optim_trajectories.md")
