r"""T5's unsupervised objective: span corruption on the built-in corpus.

A window of ``tokens_length`` characters is split into alternating kept and dropped ("noise") spans:

* ``noise_density`` (15 %) of the tokens are noise: $n = \mathrm{round}(0.15\,\ell)$ (at least 1,
  at most $\ell - 1$), in $s = \max(1, \mathrm{round}(n / \mu))$ spans of mean length $\mu = 3$;
* the noise tokens are split into $s$ non-empty spans at random, the kept tokens likewise, and the
  two are interleaved, kept first;
* the input keeps the kept tokens and puts one sentinel in place of each dropped span; the target
  lists each sentinel followed by the span it replaced; both end with EOS:

      tokens   t h e   c a t   s a t          inputs   t h <0> c a <1> a t EOS
      noise        ^ ^ ^     ^ ^               targets  <0> e _ c <1> t _ s EOS

The lengths are fixed by the counts: inputs have $\ell - n + s + 1$ tokens and targets $n + s + 1$.
``span_lengths`` inverts this as T5 does: the longest window $\ell$ whose input still fits a given
input length.
"""
from __future__ import annotations

import numpy as np  # host-side data

from ..data.text_vocabulary import EOS, PAD, TextVocabulary
from .base import Task


# --8<-- [start:span_lengths]
def corrupted_lengths(tokens_length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0):
    """(inputs length, targets length), EOS included, of a window of tokens_length tokens."""
    noise = int(round(tokens_length * noise_density))
    spans = max(1, int(round(noise / mean_noise_span_length)))
    return tokens_length - noise + spans + 1, noise + spans + 1


def span_lengths(inputs_length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0):
    """(tokens_length, targets_length): the longest window whose corrupted input fits inputs_length."""
    if not isinstance(inputs_length, int) or inputs_length < 3:
        raise ValueError(f"span_lengths: inputs_length must be an int >= 3, got {inputs_length!r}")
    tokens_length = inputs_length - 1
    while corrupted_lengths(tokens_length + 1, noise_density, mean_noise_span_length)[0] <= inputs_length:
        tokens_length += 1
    return tokens_length, corrupted_lengths(tokens_length, noise_density, mean_noise_span_length)[1]
# --8<-- [end:span_lengths]


def _random_segmentation(n_items: int, n_segments: int, rng) -> np.ndarray:
    """n_segments positive lengths summing to n_items, uniform over all such compositions."""
    cuts = np.sort(rng.choice(n_items - 1, n_segments - 1, replace=False)) + 1 if n_segments > 1 else []
    return np.diff(np.concatenate([[0], cuts, [n_items]])).astype(np.int64)


# --8<-- [start:noise_mask]
def random_spans_noise_mask(length: int, noise_density: float, mean_noise_span_length: float, rng) -> np.ndarray:
    """Boolean (length,), True on the noise tokens: alternating kept and noise spans, kept first."""
    noise = min(max(int(round(length * noise_density)), 1), length - 1)
    spans = max(1, int(round(noise / mean_noise_span_length)))
    spans = min(spans, noise, length - noise)                     # each span needs at least one token
    noise_lengths = _random_segmentation(noise, spans, rng)
    kept_lengths = _random_segmentation(length - noise, spans, rng)
    interleaved = np.stack([kept_lengths, noise_lengths], axis=1).reshape(-1)   # (s,2) -> (2s,): kept, noise, ...
    is_noise = np.tile([False, True], spans)                      # (2s,)
    return np.repeat(is_noise, interleaved)                       # (length,)


def noise_span_to_unique_sentinel(tokens: np.ndarray, noise_mask: np.ndarray, vocab: TextVocabulary) -> np.ndarray:
    """Replace each run of masked tokens by the next sentinel (0, 1, ...) and drop the run's other tokens."""
    first = noise_mask & ~np.concatenate([[False], noise_mask[:-1]])   # the first token of each run
    sentinel_index = np.cumsum(first) - 1                               # run number of each token
    out = np.where(first, vocab.vocab_size - 1 - sentinel_index, tokens)   # sentinel k = V - 1 - k
    return out[first | ~noise_mask]                                     # later tokens of a run are dropped
# --8<-- [end:noise_mask]


def span_corrupt(tokens: np.ndarray, vocab: TextVocabulary, rng, noise_density: float = 0.15,
                 mean_noise_span_length: float = 3.0):
    """(inputs, targets) with EOS: kept tokens + sentinels, and sentinels + the dropped spans."""
    mask = random_spans_noise_mask(len(tokens), noise_density, mean_noise_span_length, rng)
    n_spans = int(np.sum(mask & ~np.concatenate([[False], mask[:-1]])))    # runs of noise
    if n_spans > vocab.n_sentinels:                                         # one sentinel per span
        raise ValueError(f"span_corrupt: {len(tokens)} tokens in {n_spans} noise spans need {n_spans} "
                         f"sentinels; the vocabulary has {vocab.n_sentinels}")
    inputs = noise_span_to_unique_sentinel(tokens, mask, vocab)
    targets = noise_span_to_unique_sentinel(tokens, ~mask, vocab)   # the kept spans become the sentinels
    return np.append(inputs, EOS), np.append(targets, EOS)


class SpanCorruptionTask(Task):
    """Span-corruption pretraining on a text (the built-in corpus by default), character level.

    Batches are (src (B, inputs_length), decoder input (B, targets_length), targets); the validation
    windows come from the last ``val_fraction`` of the text.
    """

    name = "span-corruption"

    def __init__(self, text: str, inputs_length: int = 64, noise_density: float = 0.15,
                 mean_noise_span_length: float = 3.0, val_fraction: float = 0.1,
                 vocab: TextVocabulary | None = None):
        if not 0 < noise_density < 1 or mean_noise_span_length < 1:
            raise ValueError(f"SpanCorruptionTask: expected 0 < noise_density < 1 and mean_noise_span_length >= 1, "
                             f"got {noise_density} and {mean_noise_span_length}")
        self.vocab = vocab if vocab is not None else TextVocabulary()
        self.noise_density, self.mean_span = noise_density, mean_noise_span_length
        self.inputs_length = inputs_length
        self.tokens_length, self.targets_length = span_lengths(inputs_length, noise_density, mean_noise_span_length)
        ids = self.vocab.encode(text)
        cut = int(len(ids) * (1 - val_fraction))
        self.data = {"train": ids[:cut], "val": ids[cut:]}
        for split, part in self.data.items():
            if len(part) <= self.tokens_length:
                raise ValueError(f"SpanCorruptionTask: the {split} text has {len(part)} characters, fewer than "
                                 f"one window of {self.tokens_length + 1}; give a longer text")

    def adapt(self, config):
        import dataclasses
        return dataclasses.replace(config, vocab_size=self.vocab.vocab_size,
                                   max_src_len=max(config.max_src_len, self.inputs_length),
                                   max_tgt_len=max(config.max_tgt_len, self.targets_length), pad_id=PAD, eos_id=EOS)

    # --8<-- [start:span_batch]
    def batch(self, split: str, batch_size: int, rng):
        self.check_split(split)
        ids = self.data[split]
        starts = rng.integers(0, len(ids) - self.tokens_length, size=batch_size)
        pairs = [span_corrupt(ids[s:s + self.tokens_length], self.vocab, rng, self.noise_density, self.mean_span)
                 for s in starts]
        src = np.stack([p[0] for p in pairs])                              # (B, inputs_length)
        tgt_out = np.stack([p[1] for p in pairs])                          # (B, targets_length)
        tgt_in = np.concatenate([np.full((batch_size, 1), PAD), tgt_out[:, :-1]], axis=1)   # shifted right
        return src, tgt_in, tgt_out
    # --8<-- [end:span_batch]

    def baseline(self) -> float:
        """Cross-entropy of a uniform guess over the characters and sentinels."""
        return float(np.log(self.vocab.vocab_size))

    def state(self) -> dict:
        return {"name": self.name, "inputs_length": self.inputs_length, "noise_density": self.noise_density,
                "mean_noise_span_length": self.mean_span, "vocab": self.vocab.to_dict()}

    def describe(self) -> str:
        return (f"span corruption ({self.noise_density:.0%} noise, mean span {self.mean_span:g}): windows of "
                f"{self.tokens_length} characters -> inputs {self.inputs_length}, targets {self.targets_length}")


__all__ = ["SpanCorruptionTask", "corrupted_lengths", "noise_span_to_unique_sentinel",
           "random_spans_noise_mask", "span_corrupt", "span_lengths"]
