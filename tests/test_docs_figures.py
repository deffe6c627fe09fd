"""The book's figure runner: docs/figures/scripts/make_all.py discovers every script and runs them.

Running all figure scripts takes minutes (they train small models), so the suite runs the runner on
two fast scripts inside a temporary copy of the docs and package (the real figures are not touched);
`python docs/figures/scripts/make_all.py` regenerates everything.
"""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "docs" / "figures" / "scripts"


def test_make_all_lists_every_script():
    out = subprocess.run([sys.executable, str(SCRIPTS / "make_all.py"), "--list"], capture_output=True,
                         text=True, check=True).stdout.split()
    expected = sorted(p.name for p in SCRIPTS.glob("*.py") if p.name != "make_all.py" and not p.name.startswith("_"))
    assert out == expected and "attention_heatmaps.py" in out


def test_make_all_runs_scripts_in_a_copy(tmp_path):
    shutil.copytree(ROOT / "minitransformer", tmp_path / "minitransformer",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(SCRIPTS, tmp_path / "docs" / "figures" / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, str(tmp_path / "docs/figures/scripts/make_all.py"), "masks", "sqrt_dk"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 of 2 figure scripts ran" in proc.stdout
    for name in ("masks.png", "sqrt_dk.png", "tables/mask_leak.md", "tables/sqrt_dk.md"):
        assert (tmp_path / "docs" / "figures" / name).stat().st_size > 0
