"""Time, peak memory and error of every attention kernel against the sequence length N: see
minitransformer/benchmarking/attention_scaling.py. Usage: python benchmarks/attention_scaling.py [--quick] [--help]"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minitransformer.benchmarking.attention_scaling import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
