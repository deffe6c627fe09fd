"""Chapter 3 figure and table: why gradient checks run in float64.

Runs minitransformer.gradcheck.check_functional on the real functional pairs in float32 and float64,
and sweeps the finite-difference step eps for one of them (LayerNorm) to show the two error sources:
truncation (grows like eps^2) and rounding (grows like machine-epsilon / eps).

Writes docs/figures/gradcheck_eps.png and docs/figures/tables/gradcheck_precision.md.
"""
from __future__ import annotations

import numpy as np

from _common import pyplot, save, write_table

from minitransformer import backend
from minitransformer.gradcheck import check_functional, run_registered
from minitransformer.nn.functional.activations import gelu_backward, gelu_forward
from minitransformer.nn.functional.cross_entropy import cross_entropy_backward, cross_entropy_forward
from minitransformer.nn.functional.layernorm import layernorm_backward, layernorm_forward
from minitransformer.nn.functional.linear import linear_backward, linear_forward
from minitransformer.nn.functional.softmax import softmax_backward, softmax_forward


def cases(dtype):
    """(name, forward, backward, inputs) for a few pairs, with inputs of the given dtype."""
    rng = np.random.default_rng(0)
    f = lambda *shape: rng.standard_normal(shape).astype(dtype)   # noqa: E731
    targets = rng.integers(0, 7, size=(4, 5))
    return [
        ("linear  y = xW + b", linear_forward, linear_backward, [f(4, 5, 6), f(6, 3), f(3)]),
        ("layernorm", layernorm_forward, layernorm_backward, [f(4, 5, 6), 1 + f(6) * 0.1, f(6) * 0.1]),
        ("softmax", softmax_forward, softmax_backward, [f(4, 5, 7)]),
        ("GELU (erf)", gelu_forward, gelu_backward, [f(4, 5, 6)]),
        ("cross-entropy", cross_entropy_forward, lambda d, c: cross_entropy_backward(d, c),
         [f(4, 5, 7), targets]),
    ]


def main():
    rows = []
    for (name, fwd, bwd, x64), (_, _, _, x32) in zip(cases(np.float64), cases(np.float32)):
        e64 = check_functional(name, fwd, bwd, x64, eps=1e-6).max_error
        e32 = check_functional(name, fwd, bwd, x32, eps=1e-6).max_error
        e32b = check_functional(name, fwd, bwd, x32, eps=1e-2).max_error
        rows.append([name, f"{e64:.1e}", f"{e32:.1e}", f"{e32b:.1e}"])
        print(rows[-1])
    write_table("gradcheck_precision",
                ["functional pair", "float64, ε = 1e-6", "float32, ε = 1e-6", "float32, ε = 1e-2"], rows,
                note="Largest relative error over the inputs, from `minitransformer.gradcheck.check_functional` "
                     "on small random inputs (seed 0). The package's tolerance is 1e-6. "
                     "Produced by `docs/figures/scripts/gradcheck_precision.py`.")

    results = run_registered("cpu")
    flat = [r for res in results for r in (res if isinstance(res, list) else [res])]
    write_table("gradcheck_registry", ["registered case", "max relative error (float64)", "result"],
                [[f"`{r.name}`", f"{r.max_error:.1e}", "pass" if r.passed else "**FAIL**"] for r in flat],
                note=f"{sum(r.passed for r in flat)} of {len(flat)} registered cases pass "
                     "(tolerance 1e-6), as run by `minitransformer gradcheck` on the CPU.")

    eps_grid = np.logspace(-10, -0.5, 29)
    curves = {}
    for dtype in (np.float32, np.float64):
        _, fwd, bwd, inputs = cases(dtype)[1]
        curves[np.dtype(dtype).name] = [check_functional("ln", fwd, bwd, inputs, eps=float(e)).max_error
                                        for e in eps_grid]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for name, errs in curves.items():
        ax.loglog(eps_grid, errs, "o-", ms=3, label=name)
    ax.axhline(1e-6, color="gray", ls="--", lw=1)
    ax.text(eps_grid[0], 1.5e-6, "tolerance 1e-6", fontsize=8, color="gray")
    for name, u in (("float32", np.finfo(np.float32).eps), ("float64", np.finfo(np.float64).eps)):
        ax.axvline(u ** (1 / 3), color="C0" if name == "float32" else "C1", ls=":", lw=1)
    ax.set_xlabel("finite-difference step ε")
    ax.set_ylabel("relative error of the LayerNorm gradient")
    ax.set_title("Central differences: rounding error (left) vs truncation error (right)")
    ax.legend(title="dtype")
    save(fig, "gradcheck_eps")
    best32 = eps_grid[int(np.argmin(curves["float32"]))]
    best64 = eps_grid[int(np.argmin(curves["float64"]))]
    print(f"best eps: float32 {best32:.1e} ({min(curves['float32']):.1e}), "
          f"float64 {best64:.1e} ({min(curves['float64']):.1e})")


if __name__ == "__main__":
    main()
