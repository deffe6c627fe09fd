r"""Chain of thought on a small scale: multi-digit addition with and without a scratchpad.

Both operands are written with n digits (leading zeros allowed), the sum with n + 1:

    direct:      357+486=0843;
    scratchpad:  357+486=7+6+0=13,5+8+1=14,3+4+1=08>0843;

The scratchpad works from the last digit to the first, one column per step, each step
"x+y+carry=cd" giving the carry c and the digit d; after ">" comes the sum. Each step needs only the
two digits of its column and the previous step's carry, where the direct answer must carry through
all columns inside the network. Only the final answer (after ">") is scored in the evaluation; the
model is trained on everything after "=".
"""
from __future__ import annotations

import numpy as np  # host side: the generator of numbers

from .text import PAD, STOP, Segment, exact_match_rate

DIGITS = "0123456789"
ANSWER = ">"


# --8<-- [start:scratchpad_steps]
def scratchpad(a: str, b: str) -> str:
    """The column-by-column steps of a + b (equal-length digit strings), last column first."""
    steps, carry = [], 0
    for x, y in zip(reversed(a), reversed(b)):
        total = int(x) + int(y) + carry
        steps.append(f"{x}+{y}+{carry}={total // 10}{total % 10}")
        carry = total // 10
    return ",".join(steps)
# --8<-- [end:scratchpad_steps]


def total(a: str, b: str) -> str:
    """The sum with len(a) + 1 digits."""
    return str(int(a) + int(b)).zfill(len(a) + 1)


class AdditionFamily:
    summary = "n-digit addition"
    chars = DIGITS + "+=," + ANSWER + STOP + PAD

    def __init__(self, scratch: bool, min_digits: int = 1, max_digits: int = 3, max_eval_digits: int = 5):
        if not 1 <= min_digits <= max_digits <= max_eval_digits:
            raise ValueError(f"AdditionFamily: need 1 <= min_digits <= max_digits <= max_eval_digits, got "
                             f"{min_digits}, {max_digits}, {max_eval_digits}")
        self.scratch = scratch
        self.name = "addition-scratchpad" if scratch else "addition"
        self.summary = f"n-digit addition ({'with' if scratch else 'without'} a scratchpad), n in " \
                       f"{min_digits}..{max_digits}"
        self.min_digits, self.max_digits, self.max_eval_digits = min_digits, max_digits, max_eval_digits
        self.max_len = len(self.completion("9" * max_eval_digits, "9" * max_eval_digits)) + 2 * max_eval_digits + 2

    def completion(self, a: str, b: str) -> str:
        """What follows "a+b=": the steps and the answer, or the answer alone; with the stop."""
        if self.scratch:
            return f"{scratchpad(a, b)}{ANSWER}{total(a, b)}{STOP}"
        return f"{total(a, b)}{STOP}"

    def operands(self, rng, n: int) -> tuple[str, str]:
        return tuple("".join(DIGITS[d] for d in rng.integers(0, 10, n)) for _ in range(2))

    def sample(self, rng, split: str):
        n = int(rng.integers(self.min_digits, self.max_digits + 1))
        a, b = self.operands(rng, n)
        return [Segment(f"{a}+{b}=", False), Segment(self.completion(a, b), True)]

    def metrics(self, model, task) -> dict:
        from .text import model_predictor
        predict = model_predictor(model, task.tokenizer, self.max_new_tokens(self.max_digits))
        return {"accuracy": evaluate_addition(predict, self, [self.max_digits], n=64, seed=task.seed + 99)[self.max_digits]}

    def max_new_tokens(self, n: int) -> int:
        return len(self.completion("9" * n, "9" * n))

    def describe(self) -> dict:
        return {"scratch": self.scratch, "min_digits": self.min_digits, "max_digits": self.max_digits}


def final_answer(completion: str) -> str:
    """The answer of a completion: what follows the last ">" (all of it without a scratchpad)."""
    return completion.rsplit(ANSWER, 1)[-1]


# --8<-- [start:evaluate_addition]
def evaluate_addition(predict, family: AdditionFamily, digits, n: int = 200, seed: int = 0) -> dict:
    """{digits: exact-match accuracy of the final answer} of `predict` (prompts -> completions)."""
    table = {}
    for d in digits:
        rng = np.random.default_rng(seed + d)
        pairs = [family.operands(rng, d) for _ in range(n)]
        prompts = [f"{a}+{b}=" for a, b in pairs]
        answers = [total(a, b) for a, b in pairs]
        table[d] = exact_match_rate([final_answer(c) for c in predict(prompts)], answers)
    return table
# --8<-- [end:evaluate_addition]
