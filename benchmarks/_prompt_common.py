"""Shared by the prompting benchmarks (prompt_*.py, context_*.py): train a task's preset through the
one training loop, and write JSON + Markdown results and figures where the docs read them."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from _blas_threads import THREADS  # noqa: F401  pins BLAS threads before numpy loads

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from minitransformer.config import to_dict  # noqa: E402
from minitransformer.models.registry import build_model  # noqa: E402
from minitransformer.presets import PRESETS, make_task  # noqa: E402
from minitransformer.train import fit  # noqa: E402


def add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"), help="where the JSON and Markdown go")
    p.add_argument("--figures", default=str(ROOT / "docs" / "figures"), help="where the figures go")
    p.add_argument("--threads", default="1", help="BLAS threads (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def train_task(task_name: str, preset: str | None = None, family: str = "gpt", progress: bool = True,
               **changes) -> dict:
    """Train the preset of `task_name` (changes: TrainConfig fields such as steps, or model fields
    under model={...}); returns the model, the task, the configs, the history and the seconds."""
    model_cfg, train_cfg = PRESETS[family][preset or task_name]
    model_cfg = dataclasses.replace(model_cfg, **changes.pop("model", {}))
    train_cfg = dataclasses.replace(train_cfg, **changes)
    task = make_task(family, model_cfg, train_cfg, task=task_name)
    model_cfg = task.adapt(model_cfg)
    model = build_model(family, model_cfg, seed=train_cfg.seed)
    t0 = time.perf_counter()
    result = fit(model, task, train_cfg, progress=progress, log=print)
    return {"model": model, "task": task, "model_config": to_dict(model_cfg), "train_config": to_dict(train_cfg),
            "history": result["history"], "seconds": time.perf_counter() - t0,
            "parameters": model.num_parameters()}


def run_summary(run: dict) -> dict:
    """The JSON-able part of a `train_task` result."""
    return {k: run[k] for k in ("model_config", "train_config", "history", "seconds", "parameters")}


def write_results(out_dir, stem: str, data: dict, markdown: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown.rstrip() + "\n")
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.md')}")


def figure_path(figures_dir, name: str) -> Path:
    path = Path(figures_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path / name


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


MACHINE_NOTE = ("Measured on a 2-core CPU shared with other jobs: the seconds are wall-clock and noisy; "
                "the accuracies are not.")
