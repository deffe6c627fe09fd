"""Training throughput of our GPT vs the matmul rate and PyTorch eager: see
minitransformer/benchmarking/train_step.py. Usage: python benchmarks/train_step.py [--help]"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minitransformer.benchmarking.train_step import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
