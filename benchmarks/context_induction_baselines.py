"""What the induction task allows without an induction head: the expected accuracy of guessing
strategies that a one-layer attention model can carry out, on the benchmark's sequences.

* uniform: any of the 26 letters;
* seen once: uniformly among the letters seen exactly once so far (a head that attends everywhere
  sees the repeated letters twice and can subtract them);
* offset window + seen once: among the letters that sit n - 1 positions back for every repeat
  length n the task allows (a purely positional head) and were seen exactly once;
* best position-only: for every absolute position, the one offset back whose letter is right most
  often there, chosen in hindsight on these sequences (what learned absolute positions alone allow).

No model is trained: each number but the last is the mean, over the scored targets, of
1/|candidates| when the answer is a candidate — the accuracy of picking one candidate at random. Writes
docs/benchmarks/context_induction_baselines.{json,md}.
Usage: python benchmarks/context_induction_baselines.py [--sequences 2000]
"""
from __future__ import annotations

import argparse

from _prompt_common import add_output_options, write_results

import numpy as np  # noqa: E402  (after _blas_threads)

from minitransformer.tasks.prompting.induction import (  # noqa: E402
    LETTERS, InductionFamily, best_position_only_accuracy)


def expected_accuracies(family: InductionFamily, ids, scored) -> dict:
    totals = {"uniform": [], "seen_once": [], "offset_window_and_seen_once": []}
    lengths = range(family.min_repeat, family.max_repeat + 1)
    for row, mask in zip(ids, scored):
        for t in np.nonzero(mask)[0]:                       # predict row[t + 1] from row[:t + 1]
            seen, answer = row[:t + 1], row[t + 1]
            once = {c for c in set(seen.tolist()) if (seen == c).sum() == 1}
            window = {int(row[t - n + 1]) for n in lengths if t - n + 1 >= 0} & once
            totals["uniform"].append(1 / len(LETTERS))
            totals["seen_once"].append((answer in once) / max(len(once), 1))
            totals["offset_window_and_seen_once"].append((answer in window) / max(len(window), 1))
    return {k: float(np.mean(v)) for k, v in totals.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sequences", type=int, default=2000)
    add_output_options(p)
    args = p.parse_args(argv)
    family = InductionFamily()
    ids, _, scored = family.batch(np.random.default_rng(77), args.sequences)
    result = expected_accuracies(family, ids, scored)
    result["best_position_only"] = best_position_only_accuracy(ids, scored)
    md = ("Expected second-copy accuracy of guessing strategies that need no induction head, on "
          f"{args.sequences} sequences of the `induction` task ({family.seq_len} letters, repeats of "
          f"{family.min_repeat} to {family.max_repeat}):\n\n| strategy | accuracy |\n| --- | ---: |\n"
          f"| uniform over the 26 letters | {result['uniform']:.3f} |\n"
          f"| uniform over the letters seen once so far | {result['seen_once']:.3f} |\n"
          f"| letters at a possible offset ({family.min_repeat - 1} to {family.max_repeat - 1} back) and seen once | "
          f"{result['offset_window_and_seen_once']:.3f} |\n"
          f"| best offset for each absolute position (chosen in hindsight) | {result['best_position_only']:.3f} |\n")
    write_results(args.out, "context_induction_baselines", {"task": family.describe(), **result,
                                                            "sequences": args.sequences}, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
