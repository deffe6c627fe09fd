"""Few-shot task following: accuracy against the number of demonstrations, on held-out queries and
on a string function never trained on.

Trains the `fewshot` preset (a small GPT on prompts of 0..8 demonstrations of copy, reverse, sort,
shift or count, with no instruction), then scores greedy answers, exactly matched, for k = 0, 1, 2,
4, 8 demonstrations: on query strings held out of training for each trained function, and on the
held-out function drop-first. Beside each: the chance level of always answering the most frequent
answer of that evaluation set, computed from the set. Writes docs/benchmarks/prompt_fewshot.{json,md}
and docs/figures/prompt_fewshot.png.
Usage: python benchmarks/prompt_fewshot.py [--steps N] [--n 200]
"""
from __future__ import annotations

import argparse
from collections import Counter

from _prompt_common import (MACHINE_NOTE, add_output_options, figure_path, pyplot, run_summary, train_task,
                            write_results)

from minitransformer.tasks.prompting import fewshot  # noqa: E402
from minitransformer.tasks.prompting.text import model_predictor  # noqa: E402

KS = (0, 1, 2, 4, 8)


def most_frequent_answer_rate(family, n: int, seed: int) -> dict:
    """{function: {k: share of the most common answer}}: what one fixed answer would score."""
    functions = [*fewshot.TRAINING_FUNCTIONS.items(), fewshot.HELD_OUT_FUNCTION]
    table = {}
    for f_index, (name, function) in enumerate(functions):
        table[name] = {}
        for k in KS:
            answers = [a for _, a in family.eval_set(function, k, n, seed=seed + 1000 * f_index + k)]
            table[name][k] = Counter(answers).most_common(1)[0][1] / n
    return table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    p.add_argument("--n", type=int, default=200, help="evaluation prompts per function and k")
    add_output_options(p)
    args = p.parse_args(argv)
    changes = {"steps": args.steps} if args.steps else {}
    run = train_task("fewshot", progress=not args.no_progress, **changes)
    family = run["task"].family
    predict = model_predictor(run["model"], run["task"].tokenizer, family.max_len_string + 1)
    table = fewshot.evaluate_fewshot(predict, family, KS, n=args.n, seed=0)
    chance = most_frequent_answer_rate(family, args.n, seed=0)
    trained = list(fewshot.TRAINING_FUNCTIONS)
    mean_trained = {k: sum(table[f][k] for f in trained) / len(trained) for k in KS}
    held = fewshot.HELD_OUT_FUNCTION[0]
    data = {"accuracy": table, "most_frequent_answer_rate": chance, "mean_over_trained_functions": mean_trained,
            "held_out_function": held, "n": args.n, "run": run_summary(run), "note": MACHINE_NOTE}
    header = "| function | " + " | ".join(f"k={k}" for k in KS) + " |"
    lines = [header, "| --- |" + " ---: |" * len(KS)]
    for name in [*trained, held]:
        label = f"{name} (held out)" if name == held else name
        lines.append(f"| {label} | " + " | ".join(f"{table[name][k]:.2f} ({chance[name][k]:.2f})" for k in KS) + " |")
    lines.append("| mean of the trained five | " + " | ".join(f"{mean_trained[k]:.2f}" for k in KS) + " |")
    md = (f"Exact-match accuracy of the greedy answer against the number of demonstrations k, {args.n} prompts "
          f"per cell, every query string held out of training; in brackets the share of the most frequent answer "
          f"of the same prompts (what one fixed answer would score). Model: {run['parameters']:,} parameters, "
          f"{run['train_config']['steps']} steps, {run['seconds']:.0f} s.\n\n" + "\n".join(lines) +
          f"\n\n{MACHINE_NOTE}\n")
    write_results(args.out, "prompt_fewshot", data, md)

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name in [*trained, held]:
        style = "k--o" if name == held else "o-"
        ax.plot(KS, [table[name][k] for k in KS], style, label=name + (" (held out)" if name == held else ""),
                markersize=4)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xticks(KS)
    ax.set_xticklabels([str(k) for k in KS])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("demonstrations k")
    ax.set_ylabel("exact-match accuracy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = figure_path(args.figures, "prompt_fewshot.png")
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
