"""A small scaling-law experiment (loss against parameters and tokens): see
minitransformer/benchmarking/scaling_law.py. Regenerates docs/benchmarks/scaling_law.{json,md} and
docs/figures/scaling_law.png. Usage: python benchmarks/scaling_law.py [--help]"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from minitransformer.benchmarking.scaling_law import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--out", str(ROOT / "docs" / "benchmarks"), "--figures", str(ROOT / "docs" / "figures"),
                   *sys.argv[1:]]))
