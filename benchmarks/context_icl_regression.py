"""In-context learning of linear functions (after Garg et al. 2022): a small vector GPT against
least squares and averaging, all computed on the same prompts.

Trains the `gpt-vector` preset on the `icl-linear` task (x in R^d, d = 4; prompts of k <= 12
examples of a fresh random w each), then measures the normalised squared error of the prediction
at every k on 2000 new prompts, for: the model, minimum-norm least squares, the averaging estimator
w = (1/k) sum y_i x_i, and predicting 0. The two estimators' Monte-Carlo errors are checked against
their closed forms (d-k)/d (then 0) and (d+1)/k: the check passes when every k lies within 4
standard errors. Writes docs/benchmarks/context_icl_regression.{json,md} and
docs/figures/context_icl_regression.png.
Usage: python benchmarks/context_icl_regression.py [--steps N] [--prompts 2000]
"""
from __future__ import annotations

import argparse

from _prompt_common import (MACHINE_NOTE, add_output_options, figure_path, pyplot, run_summary, train_task,
                            write_results)

import numpy as np  # noqa: E402  (after _blas_threads)

from minitransformer.tasks.prompting import icl_regression as icl  # noqa: E402


def closed_form_check(curve: dict, expected: list) -> dict:
    """Every k within 4 standard errors of its closed form (where the estimate is exact, to 1e-12)."""
    z = []
    for mean, want, se in zip(curve["mean"], expected, curve["stderr"]):
        gap = abs(mean - want)
        z.append(0.0 if gap < 1e-12 else gap / se if se > 0 else float("inf"))
    return {"max_z": max(z), "passed": max(z) < 4}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    p.add_argument("--prompts", type=int, default=2000, help="evaluation prompts")
    add_output_options(p)
    args = p.parse_args(argv)
    changes = {"steps": args.steps} if args.steps else {}
    run = train_task("icl-linear", family="gpt-vector", progress=not args.no_progress, **changes)
    family = run["task"].family
    d, K = family.dim, family.n_points
    predictors = {"model": icl.model_icl_predictor(run["model"]), "least squares": icl.least_squares_predictor,
                  "averaging": icl.averaging_predictor, "zero": lambda xs, ys, f: np.zeros_like(ys)}
    curves = {}
    for name, predict in predictors.items():
        mean, se = icl.errors_by_k(predict, family, n_prompts=args.prompts, seed=2024)
        curves[name] = {"mean": mean.tolist(), "stderr": se.tolist()}
    closed = {"least squares": [icl.least_squares_expected(k, d) for k in range(K)],
              "averaging": [icl.averaging_expected(k, d) for k in range(K)]}
    check = {name: closed_form_check(curves[name], expected) for name, expected in closed.items()}
    data = {"dim": d, "n_points": K, "prompts": args.prompts, "curves": curves, "closed_form": closed,
            "closed_form_check": check, "run": run_summary(run), "note": MACHINE_NOTE}

    lines = ["| k | model | least squares | closed form | averaging | closed form | zero |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for k in range(K):
        c = {n: curves[n]["mean"][k] for n in curves}
        lines.append(f"| {k} | {c['model']:.3f} | {c['least squares']:.3f} | {closed['least squares'][k]:.3f} | "
                     f"{c['averaging']:.3f} | {closed['averaging'][k]:.3f} | {c['zero']:.3f} |")
    checks = "; ".join(f"{n}: largest deviation {v['max_z']:.1f} standard errors "
                       f"({'pass' if v['passed'] else 'FAIL'})" for n, v in check.items())
    md = (f"Normalised squared error $\\mathbb{{E}}(\\hat y - y)^2/d$ at the query after $k$ examples, "
          f"$d = {d}$, {args.prompts} prompts (standard errors in the JSON). Model: {run['parameters']:,} "
          f"parameters, {run['train_config']['steps']} steps of batch {run['train_config']['batch_size']}, "
          f"{run['seconds']:.0f} s.\n\n" + "\n".join(lines) +
          f"\n\nClosed forms against Monte Carlo: {checks}.\n\n{MACHINE_NOTE}\n")
    write_results(args.out, "context_icl_regression", data, md)

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ks = np.arange(K)
    for name, style in (("model", "o-"), ("least squares", "s-"), ("averaging", "^-"), ("zero", "-")):
        ax.plot(ks, curves[name]["mean"], style, label=name, markersize=4)
    for name in closed:
        ax.plot(ks, closed[name], "k--", linewidth=0.8)
    ax.plot([], [], "k--", linewidth=0.8, label="closed forms")
    ax.axvline(d, color="grey", linewidth=0.5)
    ax.set_ylim(0, 1.6)
    ax.set_xlabel("in-context examples k")
    ax.set_ylabel("squared error / d")
    ax.set_title(f"In-context linear regression, d = {d}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = figure_path(args.figures, "context_icl_regression.png")
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")
    return 0 if all(v["passed"] for v in check.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
