"""Induction heads (after Olsson et al. 2022): a two-layer attention-only GPT copies a repeated random
sequence, a one-layer one cannot; the attention maps show why.

Trains the presets `induction` (2 layers, 8,000 steps) and `induction-1layer` (1 layer, 3,000 steps),
otherwise identical (attention only, no feed-forward, pre-LN), on the `induction` task, then
measures on 1000 new
sequences the accuracy of the next letter over the second copy (from its second letter on), and
for every head two attention scores: weight on the previous position (previous-token head) and,
over the second copy, weight on the position after the current letter's first occurrence
(induction head). Writes docs/benchmarks/context_induction_heads.{json,md} and the figures
docs/figures/context_induction_heads_maps.png (attention maps of one sequence) and
docs/figures/context_induction_heads_training.png (accuracy during training).
Usage: python benchmarks/context_induction_heads.py [--steps N]
"""
from __future__ import annotations

import argparse

from _prompt_common import (MACHINE_NOTE, add_output_options, figure_path, pyplot, run_summary, train_task,
                            write_results)

import numpy as np  # noqa: E402  (after _blas_threads)

from minitransformer.tasks.prompting import induction  # noqa: E402
from minitransformer.tasks.prompting.text import greedy_completions  # noqa: E402


def evaluate(run: dict, n: int) -> dict:
    model, family = run["model"], run["task"].family
    ids, reps, scored = family.batch(np.random.default_rng(77), n)
    accuracy = induction.induction_accuracy(induction.model_next_tokens(model), ids, scored)
    maps = induction.attention_maps(model, ids[:, :-1])
    predict = induction.model_next_tokens(model)
    by_length = {int(k): induction.induction_accuracy(predict, ids[reps == k], scored[reps == k])
                 for k in np.unique(reps) if scored[reps == k].any()}
    return {"accuracy": accuracy, "accuracy_by_repeat_length": by_length,
            "head_scores": [induction.head_scores(w, reps, scored) for w in maps]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the presets')")
    p.add_argument("--sequences", type=int, default=1000, help="evaluation sequences")
    add_output_options(p)
    args = p.parse_args(argv)
    changes = {"steps": args.steps} if args.steps else {}
    runs = {L: train_task("induction", preset, progress=not args.no_progress, **changes)
            for L, preset in ((2, "induction"), (1, "induction-1layer"))}
    results = {L: evaluate(run, args.sequences) for L, run in runs.items()}

    family = runs[2]["task"].family
    text, n, m = family.sequence(np.random.default_rng(5))
    prompt = text[:m + n + 3]                                          # the second copy's first 3 letters
    completion = greedy_completions(runs[2]["model"], runs[2]["task"].tokenizer, [prompt], n - 3, stop=None)[0]
    expected = text[m + n + 3:m + 2 * n]

    data = {"task": family.describe(), "results": {str(L): r for L, r in results.items()},
            "runs": {str(L): run_summary(run) for L, run in runs.items()},
            "example": {"prompt": prompt, "completion": completion, "expected": expected},
            "note": MACHINE_NOTE}
    rows = ["| model | parameters | second-copy accuracy | best previous-token score (layer.head) | "
            "best induction score (layer.head) | train s |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for L, r in results.items():
        prev = max(((s, f"{li}.{h}") for li, sc in enumerate(r["head_scores"])
                    for h, s in enumerate(sc["previous_token"])))
        ind = max(((s, f"{li}.{h}") for li, sc in enumerate(r["head_scores"]) for h, s in enumerate(sc["induction"])))
        rows.append(f"| {L}-layer attention-only | {runs[L]['parameters']:,} | {r['accuracy']:.3f} | "
                    f"{prev[0]:.2f} ({prev[1]}) | {ind[0]:.2f} ({ind[1]}) | {runs[L]['seconds']:.0f} |")
    heads = ["| model | layer.head | previous-token score | induction score |", "| --- | --- | ---: | ---: |"]
    for L, r in results.items():
        for li, sc in enumerate(r["head_scores"]):
            for h in range(len(sc["induction"])):
                heads.append(f"| {L}-layer | {li}.{h} | {sc['previous_token'][h]:.2f} | {sc['induction'][h]:.2f} |")
    md = (f"Sequences of {family.seq_len} letters holding a random block of {family.min_repeat}..{family.max_repeat} "
          f"letters repeated at a random place; accuracy of the greedy next letter over the second copy (from its "
          f"second letter), {args.sequences} sequences.\n\n" + "\n".join(rows) +
          "\n\nAttention scores of every head (mean weight on the previous position; over the second copy, mean "
          "weight on the position after the current letter's first occurrence):\n\n" + "\n".join(heads) +
          "\n\nAccuracy by repeat length n:\n\n" + by_length_table(results) +
          f"\n\nGreedy completion by the 2-layer model: prompt `{prompt}` → `{completion}` "
          f"(expected `{expected}`).\n\n{MACHINE_NOTE}\n")
    write_results(args.out, "context_induction_heads", data, md)
    plot_maps(runs[2], text, n, m, args.figures)
    plot_training(runs, args.figures)
    return 0


def by_length_table(results: dict) -> str:
    lengths = sorted(results[2]["accuracy_by_repeat_length"])
    rows = ["| model | " + " | ".join(f"n={k}" for k in lengths) + " |", "| --- |" + " ---: |" * len(lengths)]
    for L, r in results.items():
        acc = r["accuracy_by_repeat_length"]
        rows.append(f"| {L}-layer | " + " | ".join(f"{acc.get(k, float('nan')):.2f}" for k in lengths) + " |")
    return "\n".join(rows)


def plot_maps(run, text, n, m, figures) -> None:
    """The 2-layer model's attention on one sequence: every head of both layers, titled with the
    head's scores on this sequence."""
    plt = pyplot()
    model, tok = run["model"], run["task"].tokenizer
    ids = tok.encode(text)[None, :-1].astype(np.int64)
    maps = induction.attention_maps(model, ids)
    scored = run["task"].family.scored_targets(np.asarray(tok.encode(text)), n, m)[None]
    scores = [induction.head_scores(w, np.array([n]), scored) for w in maps]
    H = maps[0].shape[1]
    fig, axes = plt.subplots(len(maps), H, figsize=(2.6 * H, 2.8 * len(maps)), squeeze=False)
    letters = list(text[:-1])
    for li, w in enumerate(maps):
        for h in range(H):
            ax = axes[li][h]
            ax.imshow(w[0, h], cmap="viridis", vmin=0, vmax=1)
            sc = scores[li]
            ax.set_title(f"layer {li} head {h}\nprev {sc['previous_token'][h]:.2f}  ind {sc['induction'][h]:.2f}",
                         fontsize=8)
            ax.set_xticks(range(len(letters)))
            ax.set_xticklabels(letters, fontsize=4)
            ax.set_yticks(range(len(letters)))
            ax.set_yticklabels(letters, fontsize=4)
    fig.supxlabel("key position (letter)", fontsize=9)
    fig.supylabel("query position", fontsize=9)
    fig.tight_layout()
    path = figure_path(figures, "context_induction_heads_maps.png")
    fig.savefig(path, dpi=130)
    print(f"wrote {path}")


def plot_training(runs, figures) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for L, run in runs.items():
        steps = [h["step"] for h in run["history"]]
        ax.plot(steps, [h["second_half_accuracy"] for h in run["history"]], "o-", label=f"{L} layer(s)")
    ax.axhline(0.95, color="grey", linewidth=0.5, linestyle="--")
    ax.set_xlabel("training step")
    ax.set_ylabel("second-copy accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend()
    fig.tight_layout()
    path = figure_path(figures, "context_induction_heads_training.png")
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
