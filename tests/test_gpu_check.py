"""The prepared GPU check's pieces run here too: its shell script parses, and the CPU-vs-GPU loss
comparison works end to end when both of its devices are the CPU (where the curves must agree exactly)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_script_parses():
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")], check=True)


def test_the_training_comparison_runs_with_two_cpus(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_train_compare.py"), "--preset", "tiny",
                          "--steps", "6", "--eval-interval", "3", "--devices", "cpu", "cpu", "--out", str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    summary = json.loads((tmp_path / "gpu_train_compare.json").read_text())
    assert summary["passed"] and summary["relative_val_gap"] == [0.0, 0.0]   # same device: same curve
    assert "| 6 |" in (tmp_path / "gpu_train_compare.md").read_text()
