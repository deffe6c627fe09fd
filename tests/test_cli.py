"""The `minitransformer` command: --help everywhere, train/generate end to end, clear errors."""
import subprocess
import sys

import pytest

from minitransformer.cli import main


@pytest.mark.parametrize("sub", ["train", "generate", "gradcheck", "bench", "compress"])
def test_every_subcommand_has_help(sub, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([sub, "--help"])
    assert exit_info.value.code == 0
    assert "usage: minitransformer " + sub in capsys.readouterr().out


def test_train_then_generate(tmp_path, capsys):
    data = tmp_path / "text.txt"
    data.write_text("hola mundo, adiós mundo. " * 80, encoding="utf-8")
    out = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--data", str(data), "--steps", "20", "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "final validation loss" in printed and "--- sample 1 ---" in printed
    assert main(["generate", "--checkpoint", str(out), "--prompt", "hola", "--max-new-tokens", "12",
                 "--top-p", "0.9"]) == 0
    assert capsys.readouterr().out.count("hola") >= 1
    compressed = tmp_path / "int8"
    assert main(["compress", str(out), "--method", "int8", "--data", str(data), "--eval-iters", "2",
                 "--out", str(compressed)]) == 0
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(compressed), "--prompt", "hola", "--max-new-tokens", "5"]) == 0
    assert "--- sample 1 ---" in capsys.readouterr().out


def test_config_file_and_errors(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text('preset = "tiny"\n[train]\nsteps = 2\nbogus = 1\n')
    assert main(["train", "--config", str(cfg), "--no-progress"]) == 2
    assert "unknown key(s) ['bogus']" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00")
    assert main(["train", "--preset", "tiny", "--data", str(bad), "--no-progress"]) == 2
    assert "not valid UTF-8" in capsys.readouterr().err
    assert main(["generate", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_gradcheck_command_runs_a_case(capsys):
    assert main(["gradcheck", "nn.Linear"]) == 0
    assert "pass" in capsys.readouterr().out
    assert main(["gradcheck", "no.such.case"]) == 2


def test_cuda_unavailable_is_explained(capsys):
    from minitransformer import backend
    if backend.cuda_available():
        pytest.skip("a GPU is present")
    assert main(["train", "--preset", "tiny", "--device", "cuda", "--no-progress"]) == 2
    assert "cuda" in capsys.readouterr().err.lower()


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "minitransformer", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout
