r"""Text-to-text fine-tuning: several tasks, told apart only by a prefix, learnt by one model.

Every example is a pair of strings. The input starts with the task's prefix, the target is the
answer; both are character ids ending with EOS:

    reverse: stream   ->  maerts
    sort: stream      ->  aemrst
    upper: stream     ->  STREAM
    add: 417+86       ->  503

The words are the lower-case words of the built-in corpus; a fixed fifth of them (chosen by seed) is
held out for validation, so the per-task accuracy measures words the model never saw in training.
The additions draw two numbers of 1..``max_digits`` digits. The metric is the exact-match accuracy
of greedy decoding, per task.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np  # host-side data

from ..data.text_vocabulary import EOS, PAD, TextVocabulary
from ..models.model import IGNORE_INDEX
from .base import Task

# --8<-- [start:text_tasks]
TASKS = {
    "reverse": lambda word: word[::-1],
    "sort": lambda word: "".join(sorted(word)),
    "upper": lambda word: word.upper(),
    "add": lambda sum_text: str(sum(int(n) for n in sum_text.split("+"))),
}
# --8<-- [end:text_tasks]


def corpus_words(text: str, min_len: int, max_len: int) -> list[str]:
    """The distinct lower-case words of `text` with min_len..max_len letters, sorted."""
    words = set(re.findall(r"[a-z]+", text.lower()))
    return sorted(w for w in words if min_len <= len(w) <= max_len)


# --8<-- [start:encode_pairs]
def encode_pairs(vocab: TextVocabulary, pairs, max_src_len: int, max_tgt_len: int):
    """(src (B, S), tgt_in (B, T), tgt_out (B, T)) for (input text, target text) pairs: ids + EOS,
    padded with PAD; the decoder input is the target shifted right behind PAD; padded targets are
    IGNORE_INDEX."""
    src = np.full((len(pairs), max_src_len), PAD, np.int64)
    tgt_out = np.full((len(pairs), max_tgt_len), IGNORE_INDEX, np.int64)
    for row, (source, target) in enumerate(pairs):
        s, t = vocab.encode(source, eos=True), vocab.encode(target, eos=True)
        if len(s) > max_src_len or len(t) > max_tgt_len:
            raise ValueError(f"encode_pairs: {source!r} -> {target!r} needs lengths {len(s)} and {len(t)} "
                             f"(EOS included), more than max_src_len={max_src_len}, max_tgt_len={max_tgt_len}")
        src[row, :len(s)], tgt_out[row, :len(t)] = s, t
    shifted = np.where(tgt_out == IGNORE_INDEX, PAD, tgt_out)[:, :-1]
    tgt_in = np.concatenate([np.full((len(pairs), 1), PAD), shifted], axis=1)   # (B, T)
    return src, tgt_in, tgt_out
# --8<-- [end:encode_pairs]


def exact_match(model, vocab: TextVocabulary, pairs, max_src_len: int, batch_size: int = 128) -> float:
    """The fraction of pairs whose greedy decoding equals the target exactly."""
    from .. import backend
    hits = 0
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        src, _, _ = encode_pairs(vocab, chunk, max_src_len, max(len(t) for _, t in chunk) + 1)
        out = backend.to_numpy(model.greedy_decode(backend.to_device(src, model.device),
                                                   max(len(t) for _, t in chunk) + 1))
        hits += sum(vocab.decode(row) == target for row, (_, target) in zip(out, chunk))
    return hits / len(pairs)


class TextToTextTask(Task):
    """A mixture of prefixed tasks (default: reverse, sort, upper, add) on corpus words."""

    name = "text-to-text"

    def __init__(self, text: str, tasks=tuple(TASKS), min_word_len: int = 3, max_word_len: int = 8,
                 max_digits: int = 3, val_per_task: int = 64, seed: int = 0, vocab: TextVocabulary | None = None):
        unknown = sorted(set(tasks) - set(TASKS))
        if unknown or not tasks:
            raise ValueError(f"TextToTextTask: unknown task(s) {unknown or tasks!r}; known: {sorted(TASKS)}")
        if not 1 <= min_word_len <= max_word_len or not 1 <= max_digits <= 9:
            raise ValueError(f"TextToTextTask: expected 1 <= min_word_len <= max_word_len and 1 <= max_digits <= 9, "
                             f"got {min_word_len}, {max_word_len}, {max_digits}")
        self.vocab = vocab if vocab is not None else TextVocabulary()
        self.tasks, self.max_digits = tuple(tasks), max_digits
        self.min_word_len, self.max_word_len = min_word_len, max_word_len
        words = corpus_words(text, min_word_len, max_word_len)
        if len(words) < 10:
            raise ValueError(f"TextToTextTask: the text has {len(words)} distinct words of {min_word_len}-"
                             f"{max_word_len} letters; expected at least 10")
        order = np.random.default_rng(seed).permutation(len(words))
        n_val = len(words) // 5
        self.words = {"val": [words[i] for i in order[:n_val]], "train": [words[i] for i in order[n_val:]]}
        longest = max(len(t) for t in self.tasks) + 2 + max(max_word_len, 2 * max_digits + 1)
        self.max_src_len, self.max_tgt_len = longest + 1, max(max_word_len, max_digits + 1) + 1
        rng = np.random.default_rng(seed + 1)
        self.val_pairs = {t: [self.example(t, "val", rng) for _ in range(val_per_task)] for t in self.tasks}

    # --8<-- [start:text_example]
    def example(self, task: str, split: str, rng) -> tuple[str, str]:
        """One (input, target) pair of `task`: the prefix and a word (or a sum), and the answer."""
        if task == "add":
            a, b = (int(rng.integers(0, 10 ** int(rng.integers(1, self.max_digits + 1)))) for _ in range(2))
            payload = f"{a}+{b}"
        else:
            words = self.words[split]
            payload = words[int(rng.integers(len(words)))]
        return f"{task}: {payload}", TASKS[task](payload)
    # --8<-- [end:text_example]

    def adapt(self, config):
        return dataclasses.replace(config, vocab_size=self.vocab.vocab_size,
                                   max_src_len=max(config.max_src_len, self.max_src_len),
                                   max_tgt_len=max(config.max_tgt_len, self.max_tgt_len), pad_id=PAD, eos_id=EOS)

    def batch(self, split: str, batch_size: int, rng):
        self.check_split(split)
        tasks = rng.integers(len(self.tasks), size=batch_size)          # a uniform mixture
        pairs = [self.example(self.tasks[t], split, rng) for t in tasks]
        return encode_pairs(self.vocab, pairs, self.max_src_len, self.max_tgt_len)

    def metrics(self, model) -> dict:
        """Exact-match accuracy of greedy decoding per task on the held-out pairs, and their mean."""
        acc = {f"acc_{t}": exact_match(model, self.vocab, pairs, self.max_src_len)
               for t, pairs in self.val_pairs.items()}
        return {**acc, "acc_mean": float(np.mean(list(acc.values())))}

    def baseline(self) -> float:
        return float(np.log(self.vocab.vocab_size))

    def state(self) -> dict:
        return {"name": self.name, "tasks": list(self.tasks), "min_word_len": self.min_word_len,
                "max_word_len": self.max_word_len, "max_digits": self.max_digits, "vocab": self.vocab.to_dict()}

    def describe(self) -> str:
        return (f"text-to-text: {', '.join(self.tasks)} on {len(self.words['train'])} training words "
                f"({len(self.words['val'])} held out), characters (vocabulary {self.vocab.vocab_size})")
