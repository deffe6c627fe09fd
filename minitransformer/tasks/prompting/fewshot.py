r"""Few-shot task following: which string function is meant must be read off the demonstrations.

A prompt is k demonstrations of one function followed by a query, with no instruction:

    bca>abc;dhe>deh;gf>

Training mixes the functions of `TRAINING_FUNCTIONS` with k drawn from 0..max_demos and scores
every answer of the prompt (the answer after j demonstrations is a j-shot prediction). Evaluation
holds out two things: the query strings of `is_held_out` (never a training query or
demonstration), and one whole function, `HELD_OUT_FUNCTION`, never seen in training.
"""
from __future__ import annotations

import numpy as np  # host side: the generator of random strings

from .text import PAD, STOP, Segment

LETTERS = "abcdefghij"
ARROW = ">"


def _shift(s: str) -> str:
    return "".join(LETTERS[(LETTERS.index(c) + 1) % len(LETTERS)] for c in s)


# --8<-- [start:fewshot_functions]
TRAINING_FUNCTIONS = {
    "copy": lambda s: s,
    "reverse": lambda s: s[::-1],
    "sort": lambda s: "".join(sorted(s)),
    "shift": _shift,                          # every letter to the next one, j -> a
    "count": lambda s: str(len(s)),
}
HELD_OUT_FUNCTION = ("drop-first", lambda s: s[1:])   # never trained on; differs from all of the above
# --8<-- [end:fewshot_functions]


def is_held_out(s: str) -> bool:
    """A fixed quarter of all strings, by a hash of their letters: the evaluation's queries."""
    return sum((i + 3) * (LETTERS.index(c) + 1) for i, c in enumerate(s)) % 4 == 0


class FewShotFamily:
    name = "fewshot"
    summary = "k demonstrations of a string function (copy, reverse, sort, shift, count), then a query"
    chars = LETTERS + "0123456789" + ARROW + STOP + PAD

    def __init__(self, min_len: int = 2, max_len_string: int = 4, max_demos: int = 8):
        if not 2 <= min_len <= max_len_string <= 9:
            raise ValueError(f"FewShotFamily: need 2 <= min_len <= max string length <= 9, got "
                             f"{min_len}, {max_len_string}")
        self.min_len, self.max_len_string, self.max_demos = min_len, max_len_string, max_demos
        item = 2 * max_len_string + 2                         # "abcd>dcba;"
        self.max_len = (max_demos + 1) * item                 # every prompt and its answers fit

    def random_string(self, rng, held_out: bool | None) -> str:
        """A string of distinct letters; held_out True / False: from / outside the held-out quarter."""
        while True:
            n = int(rng.integers(self.min_len, self.max_len_string + 1))
            s = "".join(rng.choice(list(LETTERS), n, replace=False))
            if held_out is None or is_held_out(s) == held_out:
                return s

    # --8<-- [start:fewshot_prompt]
    def prompt(self, function, k: int, rng, held_out_query: bool):
        """(segments of k demonstrations and the query, the query's answer)."""
        segments = []
        for _ in range(k):
            s = self.random_string(rng, held_out=False)
            segments += [Segment(s + ARROW, False), Segment(function(s) + STOP, True)]
        query = self.random_string(rng, held_out=held_out_query)
        answer = function(query)
        return segments + [Segment(query + ARROW, False), Segment(answer + STOP, True)], answer
    # --8<-- [end:fewshot_prompt]

    def sample(self, rng, split: str):
        name = list(TRAINING_FUNCTIONS)[int(rng.integers(len(TRAINING_FUNCTIONS)))]
        k = int(rng.integers(0, self.max_demos + 1))
        return self.prompt(TRAINING_FUNCTIONS[name], k, rng, held_out_query=split != "train")[0]

    def eval_set(self, function, k: int, n: int, seed: int):
        """n (prompt, answer) pairs with k demonstrations and held-out queries."""
        rng = np.random.default_rng(seed)
        pairs = []
        for _ in range(n):
            segments, answer = self.prompt(function, k, rng, held_out_query=True)
            pairs.append(("".join(s.text for s in segments[:-1]), answer))
        return pairs

    def describe(self) -> dict:
        return {"min_len": self.min_len, "max_len_string": self.max_len_string, "max_demos": self.max_demos}


# --8<-- [start:fewshot_evaluate]
def evaluate_fewshot(predict, family: FewShotFamily, ks=(0, 1, 2, 4, 8), n: int = 200, seed: int = 0) -> dict:
    """Exact-match accuracy of `predict` (prompts -> answers) for every function and number of
    demonstrations k, on held-out queries: {function: {k: accuracy}}."""
    from .text import exact_match_rate
    functions = dict(TRAINING_FUNCTIONS)
    functions[HELD_OUT_FUNCTION[0]] = HELD_OUT_FUNCTION[1]
    table = {}
    for f_index, (name, function) in enumerate(functions.items()):
        table[name] = {}
        for k in ks:
            pairs = family.eval_set(function, k, n, seed=seed + 1000 * f_index + k)
            prompts, answers = [p for p, _ in pairs], [a for _, a in pairs]
            table[name][k] = exact_match_rate(predict(prompts), answers)
    return table
# --8<-- [end:fewshot_evaluate]
