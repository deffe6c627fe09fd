"""Where `minitransformer bench` writes, and the plot that needs matplotlib.

A benchmark writes into ``--out``, by default the current directory, and never into the installed
package or over the documentation's committed tables unless asked: the scripts in ``benchmarks/``
pass ``--out docs/benchmarks`` explicitly, which is how the documented tables are regenerated.
Without matplotlib the JSON and Markdown results are still written, and the run says how to get the
plot.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

VIZ_HINT = "pip install 'minitransformer[viz]'"


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse names the flag in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def positive_float(text: str, minimum_allowed: bool = False) -> float:
    """argparse type: a finite number > 0 (>= 0 with minimum_allowed, see non_negative_float)."""
    wanted = ">= 0" if minimum_allowed else "> 0"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number {wanted}, got {text!r}") from None
    if not (math.isfinite(value) and (value >= 0 if minimum_allowed else value > 0)):
        raise argparse.ArgumentTypeError(f"expected a finite number {wanted}, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return positive_float(text, minimum_allowed=True)


def output_dir(given: str | None) -> Path:
    """The directory to write into: `given`, else the current directory, which must then not be a
    checkout's docs/benchmarks (its committed tables are overwritten only on an explicit --out)."""
    if given is not None:
        return Path(given)
    here = Path.cwd()
    if here.name == "benchmarks" and here.parent.name == "docs" and (here / "index.md").is_file():
        raise ValueError(f"the current directory {str(here)!r} holds the documentation's committed "
                         "benchmark tables; pass --out explicitly to overwrite them (--out .), or run "
                         "from another directory")
    return here


def tables_and_figures(given: str | None, docs: Path) -> tuple[Path, Path]:
    """(tables, figures) directories, created: `given` and `given`/figures, else the book's
    docs/benchmarks and docs/figures (the scripts that regenerate the committed results)."""
    tables = Path(given) if given else docs / "benchmarks"
    figures = tables / "figures" if given else docs / "figures"
    tables.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    return tables, figures


def save_plot(plot, path: Path) -> Path | None:
    """Call plot(path) and return `path`; without matplotlib, print how to get it and return None."""
    try:
        import matplotlib  # noqa: F401  (the plot functions import pyplot themselves)
    except ImportError:
        print(f"no plot written: matplotlib is not installed; `{VIZ_HINT}` to get {path.name}")
        return None
    plot(path)
    return path
