"""Chain of thought on a small scale: addition with and without a scratchpad, against the number of
digits, including more digits than trained on.

Trains the presets `addition` (targets: the sum alone) and `addition-scratchpad` (targets: one
written step per column, then the sum) — the same model size, steps and data (1 to 3 digits) —
and scores the final answer of greedy completions, exactly, for 1 to 5 digits. Writes
docs/benchmarks/prompt_scratchpad.{json,md} and docs/figures/prompt_scratchpad.png.
Usage: python benchmarks/prompt_scratchpad.py [--steps N] [--n 200]
"""
from __future__ import annotations

import argparse

from _prompt_common import (MACHINE_NOTE, add_output_options, figure_path, pyplot, run_summary, train_task,
                            write_results)

from minitransformer.tasks.prompting import scratchpad  # noqa: E402
from minitransformer.tasks.prompting.text import model_predictor  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the presets')")
    p.add_argument("--n", type=int, default=200, help="evaluation problems per number of digits")
    add_output_options(p)
    args = p.parse_args(argv)
    changes = {"steps": args.steps} if args.steps else {}
    runs = {name: train_task(name, progress=not args.no_progress, **changes)
            for name in ("addition", "addition-scratchpad")}
    family = runs["addition"]["task"].family
    digits = list(range(1, family.max_eval_digits + 1))
    table, examples = {}, {}
    for name, run in runs.items():
        fam = run["task"].family
        table[name] = {}
        for d in digits:
            predict = model_predictor(run["model"], run["task"].tokenizer, fam.max_new_tokens(d))
            table[name][d] = scratchpad.evaluate_addition(predict, fam, [d], n=args.n, seed=0)[d]
        predict = model_predictor(run["model"], run["task"].tokenizer, fam.max_new_tokens(4))
        examples[name] = {p: c for p, c in zip(["357+486=", "4071+5939="], predict(["357+486=", "4071+5939="]))}
    data = {"accuracy": table, "trained_digits": [family.min_digits, family.max_digits], "n": args.n,
            "examples": examples, "runs": {k: run_summary(r) for k, r in runs.items()}, "note": MACHINE_NOTE}
    lines = ["| digits | " + " | ".join(f"{d}{' (longer than trained)' if d > family.max_digits else ''}"
                                         for d in digits) + " |", "| --- |" + " ---: |" * len(digits)]
    for name in runs:
        label = "with scratchpad" if name.endswith("scratchpad") else "answer only"
        lines.append(f"| {label} | " + " | ".join(f"{table[name][d]:.2f}" for d in digits) + " |")
    ex = "\n".join(f"* {('with scratchpad' if k.endswith('scratchpad') else 'answer only')}: "
                   + "; ".join(f"`{p}` → `{c}`" for p, c in v.items()) for k, v in examples.items())
    md = (f"Exact-match accuracy of the final answer, {args.n} random problems per column (operands padded "
          f"to the same number of digits), trained on {family.min_digits} to {family.max_digits} digits. Each "
          f"model: {runs['addition']['parameters']:,} parameters, {runs['addition']['train_config']['steps']} "
          f"steps; training took {runs['addition']['seconds']:.0f} s (answer only) and "
          f"{runs['addition-scratchpad']['seconds']:.0f} s (scratchpad).\n\n" + "\n".join(lines) +
          f"\n\nGreedy completions:\n\n{ex}\n\n{MACHINE_NOTE}\n")
    write_results(args.out, "prompt_scratchpad", data, md)

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for name, style in (("addition", "s-"), ("addition-scratchpad", "o-")):
        ax.plot(digits, [table[name][d] for d in digits], style,
                label="with scratchpad" if name.endswith("scratchpad") else "answer only")
    ax.axvspan(family.max_digits + 0.5, digits[-1] + 0.5, color="grey", alpha=0.15, label="longer than trained")
    ax.set_xticks(digits)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("digits per operand")
    ax.set_ylabel("exact-match accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = figure_path(args.figures, "prompt_scratchpad.png")
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
