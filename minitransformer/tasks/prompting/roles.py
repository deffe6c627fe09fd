r"""Role prompts: a prefix names a style, and the same model answers the same question in that style.

The question is always "how many letters has this word"; the role decides the form of the answer:

    [terse]dbag?4;
    [verbose]dbag?dbag has 4 letters;
    [list]dbag?d,b,a,g;

`answer_format` classifies any output by its form alone (which role's pattern it matches, if any);
the evaluation reports how often the form follows the prompted role, and separately how often the
answer is also right. A prompt without a role (never seen in training) shows which form the model
falls back to.
"""
from __future__ import annotations

import re

import numpy as np  # host side: the generator of words

from .text import PAD, STOP, Segment

LETTERS = "abcdefghij"

# --8<-- [start:roles]
ROLES = {
    "terse": lambda w: str(len(w)),
    "verbose": lambda w: f"{w} has {len(w)} letters",
    "list": lambda w: ",".join(w),
}
FORMATS = {                                       # the form of each role's answers, whatever the word
    "terse": re.compile(r"[0-9]"),
    "verbose": re.compile(r"[a-j]+ has [0-9] letters"),
    "list": re.compile(r"[a-j](,[a-j])*"),
}
# --8<-- [end:roles]


def answer_format(text: str) -> str | None:
    """The role whose answer form `text` has (None: no role's)."""
    for role, pattern in FORMATS.items():
        if pattern.fullmatch(text):
            return role
    return None


def role_prompt(role: str | None, word: str) -> str:
    return (f"[{role}]" if role else "") + word + "?"


class RolesFamily:
    name = "roles"
    summary = "a role prefix ([terse], [verbose], [list]) selects the form of the answer"
    chars = "".join(sorted(set("abcdefghijklmnopqrstuvwxyz0123456789[] ,?" + STOP))) + PAD

    def __init__(self, min_len: int = 2, max_len_word: int = 6):
        if not 1 <= min_len <= max_len_word <= 9:
            raise ValueError(f"RolesFamily: need 1 <= min_len <= max word length <= 9, got {min_len}, {max_len_word}")
        self.min_len, self.max_len_word = min_len, max_len_word
        longest = max(len(role_prompt(r, "a" * max_len_word) + f("a" * max_len_word)) for r, f in ROLES.items())
        self.max_len = longest + 1

    def word(self, rng) -> str:
        n = int(rng.integers(self.min_len, self.max_len_word + 1))
        return "".join(rng.choice(list(LETTERS), n))

    def sample(self, rng, split: str):
        role = list(ROLES)[int(rng.integers(len(ROLES)))]
        w = self.word(rng)
        return [Segment(role_prompt(role, w), False), Segment(ROLES[role](w) + STOP, True)]

    def eval_set(self, n: int, seed: int):
        """n (role, word) pairs, roles in turn, plus None (no role) in turn."""
        rng = np.random.default_rng(seed)
        roles = list(ROLES) + [None]
        return [(roles[i % len(roles)], self.word(rng)) for i in range(n)]

    def max_new_tokens(self) -> int:
        return max(len(f("a" * self.max_len_word)) for f in ROLES.values()) + 1

    def metrics(self, model, task) -> dict:
        from .text import model_predictor
        predict = model_predictor(model, task.tokenizer, self.max_new_tokens())
        result = evaluate_roles(predict, self.eval_set(60, task.seed + 99))
        return {"role_following": result["follow_rate"]}

    def describe(self) -> dict:
        return {"min_len": self.min_len, "max_len_word": self.max_len_word}


# --8<-- [start:evaluate_roles]
def evaluate_roles(predict, pairs) -> dict:
    """For (role, word) pairs: the rate at which the answer's form follows the role, the rate at
    which it is also exactly right, per role; and for role None, how often each form comes out."""
    prompts = [role_prompt(r, w) for r, w in pairs]
    outputs = predict(prompts)
    per_role, fallback = {}, {}
    for (role, word), out in zip(pairs, outputs):
        form = answer_format(out)
        if role is None:
            fallback[str(form)] = fallback.get(str(form), 0) + 1
            continue
        row = per_role.setdefault(role, {"n": 0, "follows": 0, "correct": 0})
        row["n"] += 1
        row["follows"] += form == role
        row["correct"] += out == ROLES[role](word)
    total = sum(r["n"] for r in per_role.values())
    if not total:
        raise ValueError("evaluate_roles: no pair has a role to follow")
    return {"follow_rate": sum(r["follows"] for r in per_role.values()) / total,
            "correct_rate": sum(r["correct"] for r in per_role.values()) / total,
            "per_role": {k: {"follow_rate": v["follows"] / v["n"], "correct_rate": v["correct"] / v["n"],
                             "n": v["n"]} for k, v in per_role.items()},
            "no_role_forms": fallback}
# --8<-- [end:evaluate_roles]
