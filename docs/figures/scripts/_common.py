"""Shared bits of the figure scripts: where to write, a quiet matplotlib, and Markdown tables."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
FIGURES = ROOT / "docs" / "figures"
TABLES = FIGURES / "tables"
if str(ROOT) not in sys.path:          # so `import minitransformer` works when run directly
    sys.path.insert(0, str(ROOT))


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend with the book's plot style."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 110, "axes.grid": True, "grid.alpha": 0.3,
                         "axes.spines.top": False, "axes.spines.right": False, "font.size": 10})
    return plt


def save(fig, name: str) -> Path:
    """Write docs/figures/<name>.png and close the figure."""
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / f"{name}.png"
    fig.savefig(path, bbox_inches="tight")
    fig.clf()
    print(f"wrote {path.relative_to(ROOT)}")
    return path


def write_table(name: str, header: list[str], rows: list[list], note: str = "") -> Path:
    """Write a Markdown table to docs/figures/tables/<name>.md (included in pages with snippets)."""
    TABLES.mkdir(parents=True, exist_ok=True)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" ---: " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    text = "\n".join(lines) + "\n" + (f"\n{note}\n" if note else "")
    path = TABLES / f"{name}.md"
    path.write_text(text)
    print(f"wrote {path.relative_to(ROOT)}")
    return path
