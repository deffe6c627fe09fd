"""Time, peak memory and error of every attention kernel against the sequence length N: see
minitransformer/benchmarking/attention_scaling.py. Regenerates the documentation's tables and figure
(docs/benchmarks/attention_scaling*.{json,md}, docs/figures/attention_scaling.png); a later --out or
--figure wins. Usage: python benchmarks/attention_scaling.py [--quick] [--help]"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from minitransformer.benchmarking.attention_scaling import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--out", str(ROOT / "docs" / "benchmarks"),
                   "--figure", str(ROOT / "docs" / "figures" / "attention_scaling.png"), *sys.argv[1:]]))
