"""Training throughput of our GPT vs the matmul rate and PyTorch eager: see
minitransformer/benchmarking/train_step.py. Regenerates docs/benchmarks/train_step.{json,md} (a later
--out wins). Usage: python benchmarks/train_step.py [--help]"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from minitransformer.benchmarking.train_step import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--out", str(ROOT / "docs" / "benchmarks"), *sys.argv[1:]]))
