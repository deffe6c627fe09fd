"""The command line turns bad input and a hostile environment into one clear line, and lets the
package's own bugs show as tracebacks."""
import os

import numpy as np
import pytest

from minitransformer.cli import main
from minitransformer.models.gpt import GPT, GPTConfig


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("hola mundo, adiós mundo. " * 80, encoding="utf-8")
    return str(path)


def _train(*extra):
    return main(["train", "--preset", "tiny", "--steps", "4", "--no-progress", *extra])


def test_families_are_listed_and_each_trains(tmp_path, capsys, text):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    assert "gpt " in help_text and "seq2seq " in help_text and "presets:" in help_text
    assert main(["train", "--model", "seq2seq", "--preset", "tiny", "--steps", "4", "--no-progress",
                 "--out", str(tmp_path / "s2s")]) == 0
    assert "final validation loss" in capsys.readouterr().out
    assert main(["generate", "--checkpoint", str(tmp_path / "s2s")]) == 2
    assert "cannot generate text" in capsys.readouterr().err
    assert main(["train", "--model", "seq2seq", "--data", text, "--no-progress"]) == 2
    assert "--data is for the text models" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("minitransformer ")


def test_an_occupied_output_needs_resume_or_overwrite(tmp_path, capsys, text):
    out = str(tmp_path / "run")
    assert _train("--data", text, "--out", out) == 0
    capsys.readouterr()
    assert _train("--data", text, "--out", out) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert _train("--data", text, "--out", out, "--overwrite") == 0
    capsys.readouterr()
    assert _train("--data", text, "--out", out, "--overwrite", "--resume") == 2
    assert "choose one" in capsys.readouterr().err
    assert _train("--data", text, "--out", str(tmp_path / "empty"), "--resume") == 2
    assert "nothing to resume" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True,
                    reason="root reads and writes every file regardless of permissions")
def test_permission_errors_are_one_line(tmp_path, capsys, text):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert _train("--data", text, "--out", str(locked / "run")) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cannot create the output directory" in err
    finally:
        locked.chmod(0o700)


def test_an_output_path_that_cannot_be_created_is_one_line(tmp_path, capsys, text):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert _train("--data", text, "--out", str(blocker / "run")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot create the output directory" in err


def test_unreadable_and_empty_inputs_are_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert _train("--data", str(empty)) == 2
    assert "is empty" in capsys.readouterr().err
    assert _train("--data", str(tmp_path)) == 2                       # a directory, not a file
    assert "does not exist or is not a file" in capsys.readouterr().err


def test_sampling_settings_are_checked_before_training(tmp_path, capsys, text):
    cfg = tmp_path / "run.toml"
    cfg.write_text('preset = "tiny"\n[train]\ntemperature = -1.0\n')
    assert main(["train", "--config", str(cfg), "--data", text, "--no-progress",
                 "--out", str(tmp_path / "never")]) == 2
    assert "temperature must be a finite number > 0" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()                          # no work started


def test_generate_refuses_an_empty_prompt_and_bad_sampling(tmp_path, capsys, text):
    out = str(tmp_path / "run")
    assert _train("--data", text, "--out", out) == 0
    capsys.readouterr()
    for extra, message in ((["--prompt", ""], "--prompt is empty"), (["--temperature", "0"], "temperature"),
                           (["--top-k", "0"], "top_k must be an integer >= 1"),
                           (["--top-p", "1.5"], r"top_p must lie in \(0, 1\]"),
                           (["--num-samples", "0"], "number of samples")):
        assert main(["generate", "--checkpoint", out, *extra]) == 2
        assert message.replace("\\", "") in capsys.readouterr().err.replace("\\", "")


def test_zero_length_input_is_named():
    model = GPT(GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=1, d_model=4))
    with pytest.raises(ValueError, match=r"at least one token, got shape \(2, 0\)"):
        model.forward(np.zeros((2, 0), np.int64))


def test_a_bug_in_the_package_is_not_turned_into_a_one_line_error(monkeypatch, text):
    """A ValueError raised inside NumPy (a broadcasting bug, say) is not a message for the user."""
    from minitransformer import presets

    def broken(*args, **kwargs):
        np.ones(3) + np.ones(4)                                      # raises inside NumPy
    monkeypatch.setattr(presets, "start_run", broken)
    with pytest.raises(ValueError, match="could not be broadcast"):
        _train("--data", text)


@pytest.mark.parametrize("which, extra, message", [
    ("train-step", ["--steps", "0"], "argument --steps: expected an integer >= 1, got 0"),
    ("attention", ["--lengths", "0"], "argument --lengths: expected an integer >= 1, got 0"),
    ("attention", ["--repeat-seconds", "-1"], "argument --repeat-seconds: expected a finite number >= 0"),
    ("attention", ["--memory-budget-gb", "nan"], "argument --memory-budget-gb: expected a finite number > 0"),
])
def test_benchmark_settings_are_checked_before_any_work(which, extra, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", which, "--", *extra])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())                              # nothing written


def test_a_permission_error_reading_the_data_is_one_line(monkeypatch, capsys):
    """As root (CI) a file cannot be made unreadable, so the error the OS would raise is injected."""
    from minitransformer.data import corpus

    def denied(path):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(corpus, "load_text", denied)
    assert _train("--data", "secret.txt") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'secret.txt' Permission denied" in err
