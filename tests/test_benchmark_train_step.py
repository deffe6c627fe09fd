"""The train-step benchmark: its FLOP count, and a tiny run that writes its tables (no timing asserted)."""
import json

import pytest

from minitransformer.benchmarking import train_step
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
