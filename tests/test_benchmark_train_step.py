"""The train-step benchmark: its FLOP count, and a tiny run that writes its tables (no timing asserted);
`minitransformer bench`: it lists the benchmarks, writes where it is run (never over the committed
docs unless told), and writes its tables without matplotlib."""
import json
import sys
from pathlib import Path

import pytest

from minitransformer.benchmarking import train_step
from minitransformer.cli import main
from minitransformer.thread_parallel import auto_threads


@pytest.mark.parametrize("name", list(train_step.CONFIGS))
def test_step_flops_equal_the_sum_over_the_step_gemms(name):
    cfg = train_step.CONFIGS[name]
    total = sum(2 * b * m * k * n for b, m, k, n in train_step.gemm_shapes(cfg))
    assert train_step.step_flops(cfg) == pytest.approx(total, rel=1e-12)


def test_a_short_run_writes_json_and_markdown(tmp_path):
    assert train_step.main(["--configs", "small", "--steps", "2", "--no-torch", "--out", str(tmp_path)]) == 0
    meta = json.loads((tmp_path / "train_step.json").read_text())
    (row,) = meta["rows"]
    assert row["config"] == "small" and row["ms_per_step"] > 0 and 0 < row["gemm_share"]
    split = auto_threads(row["batch_size"], row["block_size"], row["d_model"])
    if split > 1:                                          # the batch split the way the trainer splits it
        assert row["split_threads"] == split
        assert row["threaded_ms_per_step"] > 0
    table = (tmp_path / "train_step.md").read_text()
    assert "| small: L=4" in table and "ms/step" in table


# -- `minitransformer bench`: where it writes ------------------------------------------------------
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
ATTENTION = ["bench", "attention", "--", "--lengths", "16", "32", "--kernels", "dense", "linear",
             "--head-dim", "8", "--repeat-seconds", "0"]


def _docs_state():
    """(name, size, mtime) of the committed tables a bench run could overwrite."""
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                  for p in DOCS.glob("*") if p.name.startswith(("train_step", "attention_scaling")))


def test_bench_alone_lists_the_benchmarks(capsys):
    assert main(["bench"]) == 0
    out = capsys.readouterr().out
    assert "attention" in out and "train-step" in out and "-- --help" in out


def test_bench_writes_into_the_current_directory_not_the_docs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = _docs_state()
    assert main(["bench", "train-step", "--", "--configs", "small", "--steps", "1", "--no-torch"]) == 0
    assert main(ATTENTION) == 0
    out = capsys.readouterr().out
    for name in ("train_step.json", "train_step.md", "attention_scaling.json", "attention_scaling.md",
                 "attention_scaling_memory_efficient.md", "attention_scaling_sparse.md"):
        assert (tmp_path / name).is_file(), name
    assert f"in {tmp_path.resolve()}" in out                    # it says where it wrote
    assert _docs_state() == before


def test_bench_without_matplotlib_writes_the_tables_and_says_how_to_plot(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)        # `import matplotlib` now fails
    assert main(ATTENTION) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "attention_scaling.json").is_file() and (tmp_path / "attention_scaling.md").is_file()
    assert not (tmp_path / "attention_scaling.png").exists()
    assert "pip install 'minitransformer[viz]'" in out and "attention_scaling.png" in out


def test_bench_with_matplotlib_writes_the_plot_beside_the_tables(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    assert main(ATTENTION) == 0
    assert (tmp_path / "attention_scaling.png").stat().st_size > 0


def test_bench_in_the_docs_directory_needs_an_explicit_out(tmp_path, monkeypatch, capsys):
    docs = tmp_path / "docs" / "benchmarks"
    docs.mkdir(parents=True)
    (docs / "index.md").write_text("# Benchmarks\n")
    monkeypatch.chdir(docs)
    assert main(["bench", "train-step", "--", "--steps", "1", "--no-torch"]) == 2
    assert "pass --out explicitly" in capsys.readouterr().err
    assert not (docs / "train_step.json").exists()
    assert main(["bench", "train-step", "--", "--configs", "small", "--steps", "1", "--no-torch",
                 "--out", "."]) == 0
    assert (docs / "train_step.json").is_file()
