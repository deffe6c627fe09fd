"""Role prompts: one model, three roles ([terse], [verbose], [list]); how often the answer's form
follows the role named in the prompt, and how often it is also right.

Trains the `roles` preset, then asks 600 questions (each role in turn, and a fourth of them with no
role at all, a prompt never seen in training) and classifies every greedy answer by its form alone.
Always giving one role's form would follow the role a third of the time (the roles come in turn).
Writes docs/benchmarks/prompt_roles.{json,md}.
Usage: python benchmarks/prompt_roles.py [--steps N] [--n 800]
"""
from __future__ import annotations

import argparse

from _prompt_common import MACHINE_NOTE, add_output_options, run_summary, train_task, write_results

from minitransformer.tasks.prompting import roles  # noqa: E402
from minitransformer.tasks.prompting.text import model_predictor  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    p.add_argument("--n", type=int, default=800, help="evaluation questions (a quarter without a role)")
    add_output_options(p)
    args = p.parse_args(argv)
    changes = {"steps": args.steps} if args.steps else {}
    run = train_task("roles", progress=not args.no_progress, **changes)
    family = run["task"].family
    pairs = family.eval_set(args.n, seed=0)
    predict = model_predictor(run["model"], run["task"].tokenizer, family.max_new_tokens())
    result = roles.evaluate_roles(predict, pairs)
    with_role = [r for r, _ in pairs if r is not None]
    chance = max(with_role.count(r) for r in roles.ROLES) / len(with_role)
    examples = {p: a for p, a in zip(["[terse]badge?", "[verbose]badge?", "[list]badge?", "badge?"],
                                     predict(["[terse]badge?", "[verbose]badge?", "[list]badge?", "badge?"]))}
    data = {**result, "one_form_rate": chance, "n": args.n, "examples": examples, "run": run_summary(run),
            "note": MACHINE_NOTE}
    lines = ["| role | questions | form follows the role | answer exactly right |", "| --- | ---: | ---: | ---: |"]
    for role, row in result["per_role"].items():
        lines.append(f"| [{role}] | {row['n']} | {row['follow_rate']:.3f} | {row['correct_rate']:.3f} |")
    lines.append(f"| all | {len(with_role)} | {result['follow_rate']:.3f} | {result['correct_rate']:.3f} |")
    fallback = ", ".join(f"{form}: {count}" for form, count in sorted(result["no_role_forms"].items()))
    ex = "; ".join(f"`{p}` → `{a}`" for p, a in examples.items())
    md = (f"{len(with_role)} questions with a role, greedy answers classified by form. Always answering in one "
          f"role's form would follow the role {chance:.3f} of the time. Model: {run['parameters']:,} parameters, "
          f"{run['train_config']['steps']} steps, {run['seconds']:.0f} s.\n\n" + "\n".join(lines) +
          f"\n\nWith no role in the prompt (never seen in training), the forms of the "
          f"{sum(result['no_role_forms'].values())} answers: {fallback} (None: no role's form).\n\n"
          f"Greedy answers: {ex}.\n\n{MACHINE_NOTE}\n")
    write_results(args.out, "prompt_roles", data, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
