"""Span corruption (T5's lengths, the noise mask, sentinels, invertibility) and the text-to-text tasks."""
import numpy as np
import pytest

from minitransformer.data.text_vocabulary import EOS, PAD, TextVocabulary
from minitransformer.models.model import IGNORE_INDEX
from minitransformer.tasks.span_corruption import (SpanCorruptionTask, corrupted_lengths,
                                                   noise_span_to_unique_sentinel, random_spans_noise_mask,
                                                   span_corrupt, span_lengths)
from minitransformer.tasks.text_to_text import TASKS, TextToTextTask, corpus_words, encode_pairs

TEXT = ("The quick brown fox jumps over the lazy dog while seven tired zebras watch quietly from "
        "a distant hill; meanwhile curious otters build tiny rafts, juggling shiny pebbles. ") * 8


def test_span_lengths_as_t5_computes_them():
    assert span_lengths(512) == (568, 114)                 # T5's numbers for inputs of 512 tokens
    assert span_lengths(64) == (70, 14)
    for inputs_length in (16, 48, 100, 333):
        tokens, targets = span_lengths(inputs_length)
        assert corrupted_lengths(tokens) == (corrupted_lengths(tokens)[0], targets)
        assert corrupted_lengths(tokens)[0] <= inputs_length < corrupted_lengths(tokens + 1)[0]


@pytest.mark.parametrize("length", [10, 35, 70, 200])
def test_noise_mask_density_spans_and_order(length):
    rng = np.random.default_rng(length)
    for _ in range(20):
        mask = random_spans_noise_mask(length, 0.15, 3.0, rng)
        noise = min(max(round(length * 0.15), 1), length - 1)
        spans = max(1, round(noise / 3))
        starts = mask & ~np.concatenate([[False], mask[:-1]])
        assert mask.shape == (length,) and mask.sum() == noise and starts.sum() == spans
        assert not mask[0]                                  # a kept span comes first


def uncorrupt(inputs, targets, vocab):
    """Put the spans of the targets back in place of the sentinels of the inputs."""
    spans, current = {}, None
    for t in targets[:-1]:
        if vocab.is_sentinel(t):
            current = int(t)
            spans[current] = []
        else:
            spans[current].append(int(t))
    out = []
    for t in inputs[:-1]:
        out.extend(spans[int(t)] if vocab.is_sentinel(t) else [int(t)])
    return out


def test_span_corruption_is_invertible_and_has_t5_lengths():
    vocab = TextVocabulary()
    rng = np.random.default_rng(0)
    tokens_length, targets_length = span_lengths(48)
    ids = vocab.encode(TEXT)
    for start in (0, 17, 230):
        window = ids[start:start + tokens_length]
        inputs, targets = span_corrupt(window, vocab, rng)
        assert len(inputs) == 48 and len(targets) == targets_length
        assert inputs[-1] == EOS and targets[-1] == EOS
        assert uncorrupt(inputs, targets, vocab) == window.tolist()
        sentinels = [int(t) for t in inputs if vocab.is_sentinel(t)]
        assert sentinels == [vocab.vocab_size - 1 - k for k in range(len(sentinels))]   # count down


def test_noise_span_to_unique_sentinel_example():
    vocab = TextVocabulary(n_sentinels=4)
    tokens = vocab.encode("abcdefgh")
    mask = np.array([0, 1, 1, 0, 0, 1, 0, 0], bool)
    out = noise_span_to_unique_sentinel(tokens, mask, vocab)
    assert vocab.decode(out) == "a<extra_id_0>de<extra_id_1>gh"
    targets = noise_span_to_unique_sentinel(tokens, ~mask, vocab)
    assert vocab.decode(targets) == "<extra_id_0>bc<extra_id_1>f<extra_id_2>"


def test_span_corruption_task_batches():
    task = SpanCorruptionTask(TEXT, inputs_length=32)
    src, tgt_in, tgt_out = task.batch("train", 5, np.random.default_rng(1))
    assert src.shape == (5, 32) and tgt_out.shape == tgt_in.shape == (5, task.targets_length)
    assert np.all(tgt_in[:, 0] == PAD) and np.array_equal(tgt_in[:, 1:], tgt_out[:, :-1])
    with pytest.raises(ValueError, match="no 'test' split"):
        task.batch("test", 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="fewer than one window"):
        SpanCorruptionTask("too short a text", inputs_length=32)


def test_too_few_sentinels_raise():
    with pytest.raises(ValueError, match="sentinels"):
        span_corrupt(np.arange(3, 90), TextVocabulary(n_sentinels=2), np.random.default_rng(0))


def test_vocabulary_round_trip_and_sentinels():
    vocab = TextVocabulary(n_sentinels=8)
    assert vocab.decode(vocab.encode("Hello, world!", eos=True)) == "Hello, world!"
    assert vocab.sentinel(0) == vocab.vocab_size - 1 and vocab.sentinel(7) == vocab.vocab_size - 8
    with pytest.raises(ValueError, match="sentinel 8 does not exist"):
        vocab.sentinel(8)
    assert vocab.decode(vocab.encode("\u00e9")) == "?"                       # outside the vocabulary


def test_text_to_text_examples_and_held_out_words():
    task = TextToTextTask(TEXT, min_word_len=3, max_word_len=8, seed=0)
    assert not set(task.words["train"]) & set(task.words["val"])
    rng = np.random.default_rng(2)
    for name in TASKS:
        source, target = task.example(name, "train", rng)
        prefix, payload = source.split(": ", 1)
        assert prefix == name and target == TASKS[name](payload)
    assert TASKS["add"]("417+86") == "503" and TASKS["sort"]("stream") == "aemrst"
    assert TASKS["reverse"]("stream") == "maerts" and TASKS["upper"]("stream") == "STREAM"
    val_words = {p.split(": ", 1)[1] for n, pairs in task.val_pairs.items() if n != "add" for p, _ in pairs}
    assert val_words <= set(task.words["val"])


def test_encode_pairs_shift_and_ignore():
    vocab = TextVocabulary()
    src, tgt_in, tgt_out = encode_pairs(vocab, [("upper: ab", "AB"), ("add: 1+2", "3")], 12, 4)
    assert vocab.decode(src[0]) == "upper: ab" and src[0, 9] == EOS and src[0, 10] == PAD
    assert tgt_out[1].tolist() == [vocab.encode("3")[0], EOS, IGNORE_INDEX, IGNORE_INDEX]
    assert tgt_in[1].tolist() == [PAD, vocab.encode("3")[0], EOS, PAD]
    with pytest.raises(ValueError, match="max_src_len=12"):
        encode_pairs(vocab, [("upper: a much longer word", "X")], 12, 4)


def test_text_to_text_errors():
    with pytest.raises(ValueError, match="unknown task"):
        TextToTextTask(TEXT, tasks=("reverse", "translate"))
    with pytest.raises(ValueError, match="distinct words"):
        TextToTextTask("a b c")
    assert corpus_words("Dog dog CAT a", 2, 5) == ["cat", "dog"]
