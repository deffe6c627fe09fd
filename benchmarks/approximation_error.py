"""How far each approximate attention kernel is from exact softmax attention, and how the error moves
with its budget (random features, hash rounds, projected length, landmarks).

Inputs: q, k ~ N(0, s^2), v ~ N(0, 1) of shape (1, H=4, N=256, D=32), in three regimes: s = 0.5
(logits q.k/sqrt(D) with standard deviation s^2 = 0.25: a flat softmax, close to the uniform
average), s = 1 (logit std 1) and s = 2 (logit std 4: peaked, nearly sparse attention). Errors are averaged over seeds (independent inputs and random features/rotations).
Metrics: the mean squared error of the output and the relative error ||O - O_exact|| / ||O_exact||.

* Performer: M in {16, ..., 512}, orthogonal vs i.i.d. features; log-log slope of the MSE against M.
* Reformer LSH with shared QK (against exact shared-QK attention with the same self-score rule) and
  with separate q, k (against dense attention): n_hashes in {1, 2, 4, 8}.
* Linformer at its random initialisation: K in {16, ..., 256}.
* Nyströmformer: landmarks in {8, ..., 128}.
* Linear (elu+1) attention: a different kernel, not an approximation; its distance from softmax for scale.
* The uniform average of V (every query attends equally to every key): the trivial baseline, measured
  on the same inputs; the Performer's MSE is also reported as a multiple of the baseline's.

Usage: python benchmarks/approximation_error.py [--quick] [--no-write]
Writes docs/benchmarks/approximation_error.{json,md} and docs/figures/performer_error.png
(--out, --figures: elsewhere).
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from minitransformer.attention.linear_attention import linear_attention_forward  # noqa: E402
from minitransformer.attention.linformer import linformer_forward  # noqa: E402
from minitransformer.attention.nystromformer import nystrom_forward  # noqa: E402
from minitransformer.attention.performer import draw_features, performer_forward  # noqa: E402
from minitransformer.attention.reformer_lsh import (SELF_SCORE, draw_rotations,  # noqa: E402
                                                    lsh_attention_forward)

BENCH = ROOT / "docs" / "benchmarks"
FIGURES = ROOT / "docs" / "figures"


def softmax_attention(q, k, v, self_score=None):
    s = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])
    if self_score is not None:
        idx = np.arange(q.shape[2])
        s[..., idx, idx] = self_score
    s = s - s.max(-1, keepdims=True)
    p = np.exp(s)
    return (p / p.sum(-1, keepdims=True)) @ v


def errors(out, ref):
    return float(((out - ref) ** 2).mean()), float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def inputs(seed, H, N, D, scale):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((1, H, N, D)) for _ in range(3))
    return q * scale, k * scale, v


def sweep(values, seeds, fn):
    """fn(value, seed) -> (mse, rel); mean over seeds for each value."""
    out = []
    for x in values:
        pairs = np.array([fn(x, s) for s in range(seeds)])
        out.append({"value": x, "mse": float(pairs[:, 0].mean()), "rel": float(pairs[:, 1].mean()),
                    "mse_sem": float(pairs[:, 0].std(ddof=1) / np.sqrt(seeds)) if seeds > 1 else 0.0})
    return out


def slope(rows):
    x = np.log([r["value"] for r in rows])
    return float(np.polyfit(x, np.log([r["mse"] for r in rows]), 1)[0])


SCALES = [0.5, 1.0, 2.0]
MS = [16, 32, 64, 128, 256, 512]


def measure(H, N, D, seeds, scale):
    """Every sweep at one input scale."""
    res = {}

    def performer(orth):
        def fn(m, s):
            q, k, v = inputs(s, H, N, D, scale)
            om = draw_features(np.random.default_rng(5000 + s), m, D, orth)
            return errors(performer_forward(q, k, v, om)[0], softmax_attention(q, k, v))
        return fn
    res["performer_orthogonal"] = sweep(MS, seeds, performer(True))
    res["performer_iid"] = sweep(MS, seeds, performer(False))
    res["performer_slope"] = {"orthogonal": slope(res["performer_orthogonal"]), "iid": slope(res["performer_iid"])}
    print(f"s={scale}: performer slopes", res["performer_slope"], flush=True)

    def lsh(shared):
        def fn(nh, s):
            q, k, v = inputs(s, H, N, D, scale)
            rot = draw_rotations(np.random.default_rng(6000 + s), D, nh, 16)
            out = lsh_attention_forward(q, k, v, rot, 16, 32, False, None, shared)[0]
            if shared:
                kn = q / np.sqrt((q * q).sum(-1, keepdims=True) + 1e-12)
                return errors(out, softmax_attention(q, kn, v, SELF_SCORE))
            return errors(out, softmax_attention(q, k, v))
        return fn
    res["reformer_shared_qk"] = sweep([1, 2, 4, 8], seeds, lsh(True))
    res["reformer_separate_qk"] = sweep([1, 2, 4, 8], seeds, lsh(False))

    def linformer(kk, s):
        q, k, v = inputs(s, H, N, D, scale)
        rng = np.random.default_rng(7000 + s)
        e, f = (rng.standard_normal((kk, N)) * N ** -0.5 for _ in range(2))
        return errors(linformer_forward(q, k, v, e, f)[0], softmax_attention(q, k, v))
    res["linformer_random_init"] = sweep([16, 32, 64, 128, 256], seeds, linformer)

    def nystrom(m, s):
        q, k, v = inputs(s, H, N, D, scale)
        return errors(nystrom_forward(q, k, v, m)[0], softmax_attention(q, k, v))
    res["nystrom"] = sweep([8, 16, 32, 64, 128], seeds, nystrom)

    def linear(_, s):
        q, k, v = inputs(s, H, N, D, scale)
        return errors(linear_attention_forward(q, k, v)[0], softmax_attention(q, k, v))
    res["linear"] = sweep([0], seeds, linear)

    def uniform(_, s):   # the trivial baseline: average all values
        q, k, v = inputs(s, H, N, D, scale)
        return errors(np.broadcast_to(v.mean(2, keepdims=True), v.shape), softmax_attention(q, k, v))
    res["uniform_baseline"] = sweep([0], seeds, uniform)
    base = res["uniform_baseline"][0]["mse"]
    res["performer_vs_uniform"] = {kind: [r["mse"] / base for r in res[f"performer_{kind}"]]
                                   for kind in ("orthogonal", "iid")}      # MSE ratio for each M
    print(f"s={scale}: done", flush=True)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--out", type=Path, default=BENCH, help="directory for the tables (default: docs/benchmarks)")
    ap.add_argument("--figures", type=Path, default=FIGURES, help="directory for the figure (default: docs/figures)")
    args = ap.parse_args(argv)
    H, N, D = 4, 256, 32
    seeds = 3 if args.quick else args.seeds
    res = {"meta": {"H": H, "N": N, "D": D, "seeds": seeds, "scales": SCALES,
                    "inputs": "q, k ~ N(0, s^2), v ~ N(0, 1)"}}
    for scale in SCALES:
        res[f"s={scale}"] = measure(H, N, D, seeds, scale)
    md = [f"Error of each approximate kernel against exact softmax attention: H = {H}, N = {N}, D = {D}, "
          f"q, k ~ N(0, s^2), v ~ N(0, 1), mean over {seeds} seeds. MSE = mean squared error of the output; "
          "rel = ||O - O_exact|| / ||O_exact||. The uniform average of V is the trivial baseline.", "",
          "| kernel | budget | " + " | ".join(f"MSE, s = {x:g} | rel, s = {x:g}" for x in SCALES) + " |",
          "| --- | --- |" + " ---: | ---: |" * len(SCALES)]
    for key, label, unit in (("performer_orthogonal", "performer, orthogonal", "M"),
                             ("performer_iid", "performer, i.i.d.", "M"),
                             ("reformer_shared_qk", "reformer, shared QK (16 buckets, chunk 32)", "rounds"),
                             ("reformer_separate_qk", "reformer, separate q, k (16 buckets, chunk 32)", "rounds"),
                             ("linformer_random_init", "linformer, random E, F", "K"),
                             ("nystrom", "nystrom (6 pinv iterations)", "landmarks"),
                             ("linear", "linear (elu+1)", "-"),
                             ("uniform_baseline", "uniform average of V (baseline)", "-")):
        for i, first in enumerate(res[f"s={SCALES[0]}"][key]):
            budget = "-" if unit == "-" else f"{unit} = {first['value']}"
            cells = " | ".join(f"{res[f's={x}'][key][i]['mse']:.2e} | {res[f's={x}'][key][i]['rel']:.3f}"
                               for x in SCALES)
            md.append(f"| {label} | {budget} | {cells} |")
    md += ["", "Log-log slope of the Performer output MSE against M: "
           + "; ".join(f"s = {x}: orthogonal {res[f's={x}']['performer_slope']['orthogonal']:.2f}, "
                       f"i.i.d. {res[f's={x}']['performer_slope']['iid']:.2f}" for x in SCALES)
           + " (theory: -1 while the estimator's variance is moderate).", "",
           "Performer output MSE as a multiple of the uniform-average baseline's (below 1: better than "
           f"averaging V), M = {MS[0]} / {MS[-1]}: "
           + "; ".join(f"s = {x}: orthogonal {res[f's={x}']['performer_vs_uniform']['orthogonal'][0]:.2f} / "
                       f"{res[f's={x}']['performer_vs_uniform']['orthogonal'][-1]:.2f}, "
                       f"i.i.d. {res[f's={x}']['performer_vs_uniform']['iid'][0]:.2f} / "
                       f"{res[f's={x}']['performer_vs_uniform']['iid'][-1]:.2f}" for x in SCALES) + "."]
    text = "\n".join(md) + "\n"
    print(text)
    if args.no_write:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "approximation_error.json").write_text(json.dumps(res, indent=1))
    (args.out / "approximation_error.md").write_text(text)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(SCALES), figsize=(5 * len(SCALES), 3.8))
    for ax, x in zip(axes, SCALES):
        r = res[f"s={x}"]
        for key, label, style in (("performer_orthogonal", "orthogonal", "o-"), ("performer_iid", "i.i.d.", "s--")):
            rows = r[key]
            kind = "orthogonal" if "orth" in key else "iid"
            ax.errorbar([q["value"] for q in rows], [q["mse"] for q in rows], yerr=[q["mse_sem"] for q in rows],
                        fmt=style, capsize=3, label=f"{label} (slope {r['performer_slope'][kind]:.2f})")
        m = np.array(MS, float)
        ax.plot(m, r["performer_iid"][0]["mse"] * MS[0] / m, ":", color="gray", label="1/M")
        ax.axhline(r["uniform_baseline"][0]["mse"], color="red", lw=0.8, label="uniform-average baseline")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("random features M")
        if ax is axes[0]:
            ax.set_ylabel("output MSE vs exact softmax")
        ax.set_title(f"Performer, N={N}, D={D}, logit std {x * x:g}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    args.figures.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figures / "performer_error.png", dpi=110, bbox_inches="tight")
    print(f"wrote {args.out / 'approximation_error.json'} and .md, {args.figures / 'performer_error.png'}")


if __name__ == "__main__":
    main()
