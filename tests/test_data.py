"""Tokenizer, corpora, batching and their bad input."""
import numpy as np
import pytest

from minitransformer.data import CharTokenizer, default_corpus, get_batch, load_text, train_val_split
from minitransformer.data.synthetic import IGNORE, copy_or_reverse_batch


def test_tokenizer_round_trip():
    tok = CharTokenizer.from_text("hello world")
    assert tok.vocab_size == len(set("hello world"))
    assert tok.decode(tok.encode("low")) == "low"
    assert CharTokenizer.from_dict(tok.to_dict()).chars == tok.chars


def test_tokenizer_unknown_char():
    with pytest.raises(ValueError, match="'z' is not in the tokenizer"):
        CharTokenizer.from_text("abc").encode("abz")


def test_default_corpus_is_deterministic_text():
    a, b = default_corpus(20_000), default_corpus(20_000)
    assert a == b and len(a) == 20_000
    assert set(a) <= set(chr(c) for c in range(32, 127)) | {"\n"}


def test_load_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_text(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        load_text(empty)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="not valid UTF-8"):
        load_text(latin)
    good = tmp_path / "good.txt"
    good.write_text("año ñandú", encoding="utf-8")
    assert load_text(good) == "año ñandú"


def test_batches_are_shifted_windows():
    ids = np.arange(100)
    x, y = get_batch(ids, 4, 8, np.random.default_rng(0))
    assert x.shape == y.shape == (4, 8)
    np.testing.assert_array_equal(y, x + 1)
    with pytest.raises(ValueError, match="fewer than context length"):
        get_batch(np.arange(5), 2, 8, np.random.default_rng(0))


def test_split():
    tr, va = train_val_split(np.arange(10), 0.2)
    assert len(tr) == 8 and len(va) == 2
    with pytest.raises(ValueError):
        train_val_split(np.arange(10), 1.5)


def test_synthetic_copy_and_reverse():
    rng = np.random.default_rng(0)
    x, y = copy_or_reverse_batch(3, 5, 7, rng, reverse=True)
    assert x.shape == y.shape == (3, 10)
    assert (y[:, :5] == IGNORE).all()
    np.testing.assert_array_equal(y[:, 5:], x[:, :5][:, ::-1])
