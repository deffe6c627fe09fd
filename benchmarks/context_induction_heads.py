"""Induction heads (after Olsson et al. 2022): a two-layer attention-only GPT copies a repeated random
sequence, a one-layer one cannot; the attention maps show why.

Trains the presets `induction` (2 layers, 8,000 steps) and `induction-1layer` (1 layer, 3,000 steps),
otherwise identical (attention only, no feed-forward, pre-LN, learned positions), on the `induction`
task, then measures on 1000 new sequences the accuracy of the next letter over the second copy
(from its second letter on), and for every head two attention scores: weight on the previous
position (previous-token head) and, over the second copy, weight on the position after the current
letter's first occurrence (induction head); for the 1-layer model also the weight of its heads on
the keys max_repeat - 2 and max_repeat - 1 back, by repeat length. Writes
docs/benchmarks/context_induction_heads.{json,md} and the figures
docs/figures/context_induction_heads_maps.png (attention maps of one sequence) and
docs/figures/context_induction_heads_training.png (accuracy during training). With
--positional rope (or another scheme) both models use it and every file name ends in _rope.
Usage: python benchmarks/context_induction_heads.py [--steps N] [--positional rope]
"""
from __future__ import annotations

import argparse

from _prompt_common import (MACHINE_NOTE, add_output_options, figure_path, pyplot, run_summary, train_task,
                            write_results)

import numpy as np  # noqa: E402  (after _blas_threads)

from minitransformer.presets import PRESETS  # noqa: E402
from minitransformer.tasks.prompting import induction  # noqa: E402
from minitransformer.tasks.prompting.text import greedy_completions  # noqa: E402


# the keys whose weight `head_weights` reports: d back from the query, and around the answer t - n + 1
FIXED_BACK = (0, 1, 2, 3)
AROUND_ANSWER = (-1, 0, 1, 2)          # t - n + 1 + s: the current letter's first occurrence, the answer, ...


def head_weights(weights: np.ndarray, reps: np.ndarray, scored: np.ndarray) -> dict:
    """Per head, the mean weight from the scored queries t of the second copy on the keys
    t - d (d in FIXED_BACK) and t - n + 1 + s (s in AROUND_ANSWER)."""
    out = {f"{d} back": induction.weight_back(weights, scored, d).tolist() for d in FIXED_BACK}
    out.update({answer_key(s): induction.weight_back(weights, scored, reps - 1 - s).tolist() for s in AROUND_ANSWER})
    return out


def answer_key(s: int) -> str:
    return "t-n" if s == -1 else f"t-n+{1 + s}"


def evaluate(run: dict, n: int) -> dict:
    model, family = run["model"], run["task"].family
    ids, reps, scored = family.batch(np.random.default_rng(77), n)
    predict = induction.model_next_tokens(model)
    accuracy = induction.induction_accuracy(predict, ids, scored)
    maps = induction.attention_maps(model, ids[:, :-1])
    lengths = [int(k) for k in np.unique(reps) if scored[reps == k].any()]
    by_length = {k: induction.induction_accuracy(predict, ids[reps == k], scored[reps == k]) for k in lengths}
    far = (family.max_repeat - 2, family.max_repeat - 1)               # the answer's offset for the two longest n
    far_weights = {k: {str(d): induction.weight_back(maps[0][reps == k], scored[reps == k], d).tolist() for d in far}
                   for k in lengths if k >= family.max_repeat - 2}
    return {"accuracy": accuracy, "accuracy_by_repeat_length": by_length,
            "head_scores": [induction.head_scores(w, reps, scored) for w in maps],
            "head_weights": [head_weights(w, reps, scored) for w in maps],
            "first_layer_weight_far_back": far_weights}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the presets')")
    p.add_argument("--sequences", type=int, default=1000, help="evaluation sequences")
    p.add_argument("--positional", default=None,
                   help="positions of both models (default: the presets', learned); another adds _NAME to the files")
    add_output_options(p)
    args = p.parse_args(argv)
    changes = {"steps": args.steps} if args.steps else {}
    suffix = ""
    if args.positional and args.positional != PRESETS["gpt"]["induction"][0].positional:
        changes["model"], suffix = {"positional": args.positional}, f"_{args.positional}"
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
    columns = [f"{d} back" for d in FIXED_BACK] + [answer_key(s) for s in AROUND_ANSWER]
    heads = ["| model | layer.head | previous-token score | " + " | ".join(columns) + " |",
             "| --- | --- | ---: |" + " ---: |" * len(columns)]
    for L, r in results.items():
        for li, (sc, hw) in enumerate(zip(r["head_scores"], r["head_weights"])):
            for h in range(len(sc["induction"])):
                heads.append(f"| {L}-layer | {li}.{h} | {sc['previous_token'][h]:.2f} | "
                             + " | ".join(f"{hw[c][h]:.2f}" for c in columns) + " |")
    md = (f"Sequences of {family.seq_len} letters holding a random block of {family.min_repeat}..{family.max_repeat} "
          f"letters repeated at a random place; accuracy of the greedy next letter over the second copy (from its "
          f"second letter), {args.sequences} sequences.\n\n" + "\n".join(rows) +
          "\n\nAttention of every head: the previous-token score (mean weight on the position before, over all "
          "positions), then, from the scored queries t of the second copy, the mean weight on the keys d back and "
          "around the answer: t-n holds the current letter's first occurrence, t-n+1 the answer (the induction "
          "score), t-n+2 the letter after it:\n\n" + "\n".join(heads) +
          "\n\nAccuracy by repeat length n:\n\n" + by_length_table(results) +
          "\n\nThe 1-layer model's heads: mean weight from the scored queries on the keys d back, for the "
          "longest repeats (the answer is n - 1 back):\n\n" + far_back_table(results[1]) +
          f"\n\nGreedy completion by the 2-layer model: prompt `{prompt}` → `{completion}` "
          f"(expected `{expected}`).\n\n{MACHINE_NOTE}\n")
    write_results(args.out, "context_induction_heads" + suffix, data, md)
    plot_maps(runs[2], text, n, m, args.figures, suffix)
    plot_training(runs, args.figures, suffix)
    return 0


def by_length_table(results: dict) -> str:
    lengths = sorted(results[2]["accuracy_by_repeat_length"])
    rows = ["| model | " + " | ".join(f"n={k}" for k in lengths) + " |", "| --- |" + " ---: |" * len(lengths)]
    for L, r in results.items():
        acc = r["accuracy_by_repeat_length"]
        rows.append(f"| {L}-layer | " + " | ".join(f"{acc.get(k, float('nan')):.2f}" for k in lengths) + " |")
    return "\n".join(rows)


def far_back_table(result: dict) -> str:
    weights, H = result["first_layer_weight_far_back"], len(result["head_scores"][0]["induction"])
    rows = ["| n | accuracy | d | " + " | ".join(f"head {h}" for h in range(H)) + " |",
            "| ---: | ---: | ---: |" + " ---: |" * H]
    for k, by_d in weights.items():
        for d, w in by_d.items():
            rows.append(f"| {k} | {result['accuracy_by_repeat_length'][k]:.2f} | {d} | "
                        + " | ".join(f"{x:.2f}" for x in w) + " |")
    return "\n".join(rows)


def plot_maps(run, text, n, m, figures, suffix="") -> None:
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
    path = figure_path(figures, f"context_induction_heads_maps{suffix}.png")
    fig.savefig(path, dpi=130)
    print(f"wrote {path}")


def plot_training(runs, figures, suffix="") -> None:
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
    path = figure_path(figures, f"context_induction_heads_training{suffix}.png")
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
