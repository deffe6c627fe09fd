"""The BERT commands end to end: `train --model bert` saves the WordPiece tokenizer, `fill-mask`
prints probabilities, `finetune` prints held-out accuracy; bad input is a one-line error."""
import pytest

from minitransformer.checkpoint import load_checkpoint, tokenizer_of
from minitransformer.cli import main
from minitransformer.data.wordpiece import WordPieceTokenizer

TEXT = "\n\n".join(
    f"The {w} module reads a file and returns its {v}. Each {w} keeps the {v} in a list. "
    f"A {v} of the {w} is printed when the test ends."
    for w in ("socket", "email", "parser", "shelve", "lexer", "codec", "queue", "timer", "widget", "logger",
              "frame", "token")
    for v in ("value", "header", "name", "size"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bert")
    data = tmp / "text.txt"
    data.write_text(TEXT)
    out = tmp / "run"
    assert main(["train", "--model", "bert", "--preset", "tiny", "--data", str(data), "--steps", "4",
                 "--batch-size", "4", "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.mark.parametrize("sub", ["fill-mask", "finetune"])
def test_help(sub, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([sub, "--help"])
    assert exit_.value.code == 0 and "--checkpoint" in capsys.readouterr().out


def test_train_saves_the_wordpiece_tokenizer(run):
    _, _, meta = load_checkpoint(run)
    assert meta["model"]["kind"] == "bert" and meta["task"]["name"] == "bert-pretraining"
    tok = tokenizer_of(meta, run)
    assert isinstance(tok, WordPieceTokenizer) and tok.itos[4] == "[MASK]"
    assert meta["model"]["config"]["vocab_size"] == tok.vocab_size


def test_fill_mask_prints_probabilities(run, capsys):
    assert main(["fill-mask", "--checkpoint", str(run), "--text", "the [MASK] module reads a [MASK] .",
                 "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("[MASK] at token") == 2
    probs = [float(line.split()[-1]) for line in out.splitlines() if line.startswith("  ")]
    assert len(probs) == 6 and all(0 <= p <= 1 for p in probs) and probs[0] >= probs[1] >= probs[2]


def test_fill_mask_errors(run, tmp_path, capsys):
    assert main(["fill-mask", "--checkpoint", str(run), "--text", "no mask here"]) == 2
    assert "has no [MASK]" in capsys.readouterr().err
    assert main(["fill-mask", "--checkpoint", str(run), "--text", "[MASK] " * 70]) == 2
    assert "max_len=64" in capsys.readouterr().err
    gpt = tmp_path / "gpt"
    (tmp_path / "t.txt").write_text("hello there, general kenobi. " * 40)
    assert main(["train", "--preset", "tiny", "--data", str(tmp_path / "t.txt"), "--steps", "2",
                 "--out", str(gpt), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["fill-mask", "--checkpoint", str(gpt), "--text", "a [MASK]"]) == 2
    assert "holds a 'gpt' model; expected a pretrained 'bert'" in capsys.readouterr().err


def test_finetune_pair_task_on_a_file(run, tmp_path, capsys):
    data = run.parent / "text.txt"
    assert main(["finetune", "--checkpoint", str(run), "--task", "adjacent", "--data", str(data), "--steps", "2",
                 "--out", str(tmp_path / "ft"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "fine-tuning task 'adjacent'" in out and "held-out accuracy" in out
    assert main(["finetune", "--checkpoint", str(run), "--data", str(data)]) == 2
    assert "needs the built-in corpus" in capsys.readouterr().err


def test_finetune_default_task_prints_accuracy(run, tmp_path, capsys, monkeypatch):
    """No option but the checkpoint (and a short run): the module task on the built-in corpus
    (its first 300,000 characters here: parsing the whole standard library takes a while)."""
    from minitransformer.data.sentence_pairs import corpus_documents
    from minitransformer.tasks import bert_pretraining
    monkeypatch.setattr(bert_pretraining, "corpus_documents", lambda max_chars=None: corpus_documents(300_000))
    assert main(["finetune", "--checkpoint", str(run), "--steps", "1", "--out", str(tmp_path / "ft"),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "fine-tuning task 'module'" in out and "held-out accuracy" in out and "masked-LM validation loss" in out
    _, _, meta = load_checkpoint(tmp_path / "ft")
    assert meta["model"]["kind"] == "bert-classifier" and meta["model"]["config"]["n_classes"] == 4


def test_finetune_errors(run, tmp_path, capsys):
    assert main(["finetune", "--checkpoint", str(run), "--task", "sentiment"]) == 2
    assert "unknown fine-tuning task 'sentiment'; known: ['adjacent', 'module']" in capsys.readouterr().err
    assert main(["finetune", "--checkpoint", str(run), "--labels", "1.5"]) == 2
    assert "--labels must lie in (0, 1]" in capsys.readouterr().err
    assert main(["finetune", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
