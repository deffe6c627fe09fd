"""WordPiece: the merge rule by hand, round trips, [UNK], whitespace, specials, checkpoints."""
import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from minitransformer.checkpoint import load_checkpoint, save_checkpoint, tokenizer_of
from minitransformer.data.corpus import default_corpus
from minitransformer.data.tokenizer import CharTokenizer, tokenizer_from_dict
from minitransformer.data.wordpiece import (SPECIAL_TOKENS, UNK_ID, WordPieceTokenizer, pre_tokenize,
                                            train_wordpiece, train_wordpiece_plain)

# the Hugging Face course's example: hug x10, pug x5, pun x12, bun x4, hugs x5
HUGS = "hug " * 10 + "pug " * 5 + "pun " * 12 + "bun " * 4 + "hugs " * 5


@pytest.fixture(scope="module")
def corpus():
    return default_corpus(20_000)


@pytest.fixture(scope="module")
def tok(corpus):
    return WordPieceTokenizer.train(corpus, 400)


def test_first_merges_by_hand():
    # counts: h 15, p 17, b 4, ##u 36, ##g 20, ##n 16, ##s 5.
    # merge 1: every pair scores 1/36 (e.g. (##u,##g): 20 / (36*20)) except (##g,##s): 5 / (20*5) = 1/20.
    #          BPE would merge the most frequent pair (##u,##g) instead.
    # merge 2: now ##g 15, ##s 0, ##gs 5, and all six pairs score exactly 1/36; the tie goes to the
    #          most frequent pair, (p,##u) with 17.
    # merge 3: p 0, pu 17, ##u 19: (h,##u) 15/(15*19), (b,##u) 4/(4*19), (##u,##gs) 5/(19*5) tie at
    #          1/19, above (pu,##n) 12/(17*16) and (##u,##g) 10/(19*15); the most frequent, (h,##u), wins.
    tok = WordPieceTokenizer.train(HUGS, 15)
    assert tok.itos[:5] == list(SPECIAL_TOKENS)
    assert tok.itos[5:12] == ["##g", "##n", "##s", "##u", "b", "h", "p"]
    assert tok.itos[12:] == ["##gs", "pu", "hu"]
    assert tok.decode(tok.encode("hugs pun")) == "hugs pun"
    assert [tok.itos[i] for i in tok.encode("hugs pun")] == ["hu", "##gs", "pu", "##n"]


def test_fast_training_equals_plain(corpus):
    counts = Counter(pre_tokenize(corpus[:8000]))
    assert train_wordpiece(counts, 300) == train_wordpiece_plain(counts, 300)
    counts = Counter(pre_tokenize(HUGS + "aaaaaa aaa abab"))       # repeated pairs inside one word
    assert train_wordpiece(counts, 100) == train_wordpiece_plain(counts, 100)


def test_vocab_size_respected(corpus):
    for v in (146, 400):                                           # 146: 5 specials + 141 pieces
        tok = WordPieceTokenizer.train(corpus, v)
        assert tok.vocab_size == v == len(tok.itos) == len(tok.stoi)
        assert len(set(tok.itos)) == v
        assert tok.encode(corpus).max() < v
    small = WordPieceTokenizer.train(HUGS, 1000)                   # pairs run out before 1000
    assert small.vocab_size < 1000
    assert all(len(small.encode(w)) == 1 for w in ["hugs", "pun", "bun", "hug", "pug"])


def test_too_small_vocab_empty_text_and_types():
    with pytest.raises(ValueError, match=r"vocab_size=10 .* 5 special tokens \+ the text's 7"):
        WordPieceTokenizer.train(HUGS, 10)
    for empty in ("", "   \n\t", "[MASK] [SEP]"):
        with pytest.raises(ValueError, match="empty"):
            WordPieceTokenizer.train(empty, 100)
    with pytest.raises(TypeError, match="str"):
        WordPieceTokenizer.train(b"bytes", 100)
    tok = WordPieceTokenizer.train(HUGS, 15)
    with pytest.raises(TypeError, match="str"):
        tok.encode(["hug"])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([0, 15])


def test_encode_decode_round_trip(corpus, tok):
    ids = tok.encode(corpus)
    assert ids.dtype == np.int32 and ids.ndim == 1
    assert UNK_ID not in ids
    assert len(ids) < len(corpus)                                  # subwords: fewer ids than chars
    # up to whitespace: runs of whitespace become one space and punctuation comes back spaced
    assert "".join(tok.decode(ids).split()) == "".join(corpus.split())
    assert tok.decode(tok.encode("Return the value, please.")) == "Return the value , please ."


def test_lowercase(corpus):
    tok = WordPieceTokenizer.train(corpus, 300, lowercase=True)
    assert not any(c.isupper() for t in tok.itos[5:] for c in t)
    assert tok.decode(tok.encode("The RETURN Value")) == "the return value"
    np.testing.assert_array_equal(tok.encode("ABC"), tok.encode("abc"))


def test_unknown_characters_become_unk(tok):
    ids = tok.encode("the \u00e9t\u00e9 value")
    assert ids.tolist() == tok.encode("the").tolist() + [UNK_ID] + tok.encode("value").tolist()
    assert tok.decode(ids) == "the [UNK] value"
    assert list(tok.encode("\u4e2d")) == [UNK_ID]


def test_whitespace(tok):
    base = tok.encode("return the value")
    for text in ("return\tthe\nvalue", "  return   the \r\n\n value  ", "return \t\n the\t\tvalue\n"):
        np.testing.assert_array_equal(tok.encode(text), base)
    for empty in ("", "   ", "\n\t \r\n"):
        ids = tok.encode(empty)
        assert ids.shape == (0,) and ids.dtype == np.int32
        assert tok.decode(ids) == ""


def test_special_tokens_in_text(tok):
    ids = tok.encode("[CLS] the [MASK] value[SEP][PAD]")
    assert ids[0] == 2 and ids[-2:].tolist() == [3, 0]
    assert 4 in ids.tolist()
    assert tok.decode(ids) == "[CLS] the [MASK] value [SEP] [PAD]"
    assert [tok.stoi[t] for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    lower = WordPieceTokenizer.train("Mask the [MASK] here [x]", 40, lowercase=True)
    assert lower.encode("[MASK]").tolist() == [4]                 # not lowercased into "[mask]"
    assert lower.decode(lower.encode("[mask]")) == "[ mask ]"     # written in lowercase: just text


def test_deterministic_across_hash_seeds(corpus):
    a = WordPieceTokenizer.train(corpus, 300).to_dict()
    assert WordPieceTokenizer.train(corpus, 300).to_dict() == a
    code = ("import json; from minitransformer.data.corpus import default_corpus; "
            "from minitransformer.data.wordpiece import WordPieceTokenizer; "
            "print(json.dumps(WordPieceTokenizer.train(default_corpus(20000), 300).to_dict()))")
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed})
        assert json.loads(out.stdout) == a


def test_to_dict_from_dict(corpus, tok):
    d = tok.to_dict()
    assert d["type"] == "wordpiece"
    again = WordPieceTokenizer.from_dict(json.loads(json.dumps(d)))
    assert again.to_dict() == d and again.itos == tok.itos and again.stoi == tok.stoi
    np.testing.assert_array_equal(again.encode(corpus), tok.encode(corpus))
    with pytest.raises(ValueError, match="wordpiece"):
        WordPieceTokenizer.from_dict({"type": "char", "chars": "ab"})
    with pytest.raises(ValueError, match="must start with"):
        WordPieceTokenizer(["a", "b"])


def test_dispatcher():
    char = CharTokenizer.from_text("hello")
    assert isinstance(tokenizer_from_dict(char.to_dict()), CharTokenizer)
    wp = WordPieceTokenizer.train(HUGS, 15)
    assert isinstance(tokenizer_from_dict(wp.to_dict()), WordPieceTokenizer)
    with pytest.raises(ValueError, match=r"'unigram'.*\['bpe', 'char', 'wordpiece'\]"):
        tokenizer_from_dict({"type": "unigram"})


def test_checkpoint_round_trip(tmp_path, corpus, tok):
    state = {"w": np.zeros((2, 3), np.float32)}
    save_checkpoint(tmp_path, state, {"step": 1, "tokenizer": tok.to_dict()})
    _, _, meta = load_checkpoint(tmp_path)
    loaded = tokenizer_of(meta, tmp_path)
    assert isinstance(loaded, WordPieceTokenizer)
    assert loaded.to_dict() == tok.to_dict()
    np.testing.assert_array_equal(loaded.encode(corpus), tok.encode(corpus))
    char = CharTokenizer.from_text(corpus)                          # character checkpoints still load
    save_checkpoint(tmp_path / "c", state, {"step": 1, "tokenizer": char.to_dict()})
    assert tokenizer_of(load_checkpoint(tmp_path / "c")[2]).chars == char.chars


def test_min_frequency(corpus):
    """The threshold: fast == plain for every min_frequency, no merged pair rarer than it, and
    bad values refused."""
    counts = Counter(pre_tokenize(corpus[:8000], lowercase=True))
    for m in (2, 7, 30):
        fast, plain = train_wordpiece(counts, 300, m), train_wordpiece_plain(counts, 300, m)
        assert fast == plain
    # with a threshold above every pair count nothing merges: the vocabulary is the alphabet
    top = max(counts.values()) * 50
    assert train_wordpiece(counts, 300, top) == train_wordpiece(counts, 5, 1)
    few = WordPieceTokenizer.train(HUGS, 20, min_frequency=15)          # h+##u is seen exactly 15 times
    assert "hug" not in WordPieceTokenizer.train(HUGS, 20, min_frequency=16).itos
    assert "hu" in few.itos or "hug" in few.itos
    with pytest.raises(ValueError, match="min_frequency"):
        WordPieceTokenizer.train(HUGS, 20, min_frequency=0)
