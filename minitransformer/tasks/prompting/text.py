r"""Prompts as text: segments, batches for a causal LM trained only on the answers, and greedy answers.

An example is a list of segments ``(text, scored)``: the prompt's segments are not scored, the
answers (with their terminator ``;``) are. Training minimises the cross-entropy of the scored
characters only, each predicted from everything before it:

$$\mathcal{L} = -\frac{1}{|\mathcal{A}|}\sum_{t \in \mathcal{A}} \log p_\theta(s_t \mid s_{<t}),$$

with $\mathcal{A}$ the positions of answer characters. Unscored positions get the target
``IGNORE_INDEX``; rows are padded on the right (a causal model never looks right, so the padding
changes nothing before it).

Evaluation decodes greedily: `greedy_completions` extends every prompt of a batch by its most likely
character until the stop character. (The training loop's `generate` module sits above the tasks in
the package's layers, so this small argmax loop lives here; a test checks that it gives what
``generate(..., greedy=True)`` gives.) `teacher_forced_exact_match` scores a whole answer with one
forward pass: greedy decoding reproduces an answer exactly if and only if every answer character
is the argmax given the correct characters before it.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np  # host side: token ids, padding, argmax of host logits

from ... import backend
from ...data.tokenizer import CharTokenizer
from ...models.model import IGNORE_INDEX
from ..base import Task

STOP = ";"          # ends every answer
PAD = "\n"          # fills rows on the right; never a target


class Segment(NamedTuple):
    text: str
    scored: bool    # True: its characters are training targets (an answer)


def example_text(segments) -> str:
    return "".join(s.text for s in segments)


# --8<-- [start:encode_examples]
def encode_examples(examples, tokenizer: CharTokenizer, max_len: int):
    """(inputs, targets), each (B, T) int64, T = the longest example - 1 (at most max_len):
    inputs[b, t] = s_t, targets[b, t] = s_{t+1} where s_{t+1} is scored, else IGNORE_INDEX."""
    texts = [example_text(e) for e in examples]
    T = max(len(t) for t in texts) - 1
    if T > max_len:
        raise ValueError(f"an example of {T + 1} characters does not fit the context of {max_len} positions")
    pad = int(tokenizer.encode(PAD)[0])
    inputs = np.full((len(examples), T), pad, np.int64)
    targets = np.full((len(examples), T), IGNORE_INDEX, np.int64)
    for b, (segments, text) in enumerate(zip(examples, texts)):
        ids = tokenizer.encode(text)
        scored = np.concatenate([np.full(len(s.text), s.scored) for s in segments])
        n = len(ids) - 1
        inputs[b, :n] = ids[:-1]
        targets[b, :n] = np.where(scored[1:], ids[1:], IGNORE_INDEX)   # predict s_{t+1} from s_<=t
    return inputs, targets
# --8<-- [end:encode_examples]


def _logits_on_host(model, ids: np.ndarray) -> np.ndarray:
    with model.no_grad():
        logits, _ = model.forward(backend.to_device(ids, model.device))
    return backend.to_numpy(logits)                                   # (B, T, V)


# --8<-- [start:greedy_completions]
def greedy_completions(model, tokenizer: CharTokenizer, prompts: list[str], max_new_tokens: int,
                       stop: str | None = STOP, batch_size: int = 256) -> list[str]:
    """The greedy continuation of every prompt, cut after the first `stop` (kept out of the result)
    or after max_new_tokens characters (stop=None: always max_new_tokens)."""
    out = []
    for start in range(0, len(prompts), batch_size):
        out += _greedy_batch(model, tokenizer, prompts[start:start + batch_size], max_new_tokens, stop)
    return out


def _greedy_batch(model, tokenizer, prompts, max_new_tokens, stop):
    block = model.config.block_size
    lengths = np.array([len(p) for p in prompts])
    if lengths.min() < 1:
        raise ValueError("greedy_completions: every prompt needs at least one character")
    if lengths.max() + max_new_tokens > block:
        raise ValueError(f"a prompt of {lengths.max()} characters plus {max_new_tokens} new ones exceeds "
                         f"the context of block_size={block}")
    pad = int(tokenizer.encode(PAD)[0])
    stop_id = -1 if stop is None else int(tokenizer.encode(stop)[0])
    buf = np.full((len(prompts), lengths.max() + max_new_tokens), pad, np.int64)   # (B, T_max)
    for b, p in enumerate(prompts):
        buf[b, :len(p)] = tokenizer.encode(p)
    done = np.zeros(len(prompts), bool)
    rows = np.arange(len(prompts))
    was_training = model.training
    model.eval()
    try:
        for step in range(max_new_tokens):
            pos = lengths + step                                      # where each row writes next
            logits = _logits_on_host(model, buf[:, :pos.max()])       # (B, T, V)
            nxt = logits[rows, pos - 1].argmax(-1)                     # (B,) the next character
            buf[rows, pos] = np.where(done, pad, nxt)
            done |= nxt == stop_id
            if done.all():
                break
    finally:
        model.train(was_training)
    outs = []
    for b, p in enumerate(prompts):
        text = tokenizer.decode(buf[b, len(p):len(p) + max_new_tokens])
        outs.append(text.split(stop)[0] if stop is not None and stop in text else text)
    return outs
# --8<-- [end:greedy_completions]


def model_predictor(model, tokenizer: CharTokenizer, max_new_tokens: int, stop: str = STOP) -> Callable:
    """prompts -> greedy answers: the `predict` that the families' evaluations take."""
    return lambda prompts: greedy_completions(model, tokenizer, prompts, max_new_tokens, stop)


def exact_match_rate(predicted: list[str], expected: list[str]) -> float:
    if len(predicted) != len(expected):
        raise ValueError(f"exact_match_rate: {len(predicted)} predictions for {len(expected)} answers")
    if not expected:
        raise ValueError("exact_match_rate: no answers to score")
    return float(np.mean([p == e for p, e in zip(predicted, expected)]))


# --8<-- [start:teacher_forced]
def teacher_forced_exact_match(model, inputs: np.ndarray, targets: np.ndarray) -> float:
    """Fraction of answers (maximal runs of scored targets in a row) whose every character is the
    model's argmax: the answers greedy decoding would reproduce exactly."""
    predicted = _logits_on_host(model, inputs).argmax(-1)            # (B, T)
    scored = targets != IGNORE_INDEX
    wrong = scored & (predicted != targets)
    starts = scored & ~np.pad(scored, ((0, 0), (1, 0)))[:, :-1]       # first position of each answer
    answer_id = np.cumsum(starts, axis=1)                             # which answer a position is in
    right = total = 0
    for b in range(len(inputs)):
        ids = answer_id[b][scored[b]]
        n = int(ids.max()) if ids.size else 0
        bad = np.zeros(n + 1, bool)
        bad[answer_id[b][wrong[b]]] = True
        right += n - int(bad[1:].sum())
        total += n
    return right / max(total, 1)
# --8<-- [end:teacher_forced]


class TextPromptTask(Task):
    """A causal LM task over a prompt family: `family.sample(rng, split)` gives one example (a list
    of Segments); batches are padded on the right; the metric is the teacher-forced exact match of
    the answers on a fixed validation set."""

    splits = ("train", "val")

    def __init__(self, family, seed: int = 0, val_examples: int = 128):
        self.family, self.seed, self.val_examples = family, seed, val_examples
        self.name = f"prompt:{family.name}"
        self.tokenizer = CharTokenizer(list(family.chars))

    def adapt(self, config):
        import dataclasses
        need = self.family.max_len
        if getattr(config, "block_size", need) < need:
            raise ValueError(f"task {self.family.name!r} needs block_size >= {need} (its longest prompt and "
                             f"answer), got block_size={config.block_size}; use the task's preset "
                             f"(--preset {self.family.name}) or a larger block_size")
        if not hasattr(config, "vocab_size"):
            raise ValueError(f"task {self.family.name!r} trains a token model (--model gpt), got "
                             f"{type(config).__name__}")
        return dataclasses.replace(config, vocab_size=self.tokenizer.vocab_size)

    def batch(self, split: str, batch_size: int, rng):
        self.check_split(split)
        examples = [self.family.sample(rng, split) for _ in range(batch_size)]
        return encode_examples(examples, self.tokenizer, self.family.max_len)

    def metrics(self, model) -> dict:
        """The family's own metric if it has one, else the teacher-forced exact match of the answers."""
        was_training = model.training
        model.eval()
        try:
            if hasattr(self.family, "metrics"):
                return self.family.metrics(model, self)
            inputs, targets = self.batch("val", self.val_examples, np.random.default_rng(self.seed + 99))
            return {"answer_exact_match": teacher_forced_exact_match(model, inputs, targets)}
        finally:
            model.train(was_training)

    def state(self) -> dict:
        return {"name": self.name, **self.family.describe()}

    def describe(self) -> str:
        return f"prompt task {self.family.name}: {self.family.summary}"
