"""The architecture page's tables, read from the code: the package's layers (from the import graph
that tests/test_architecture.py checks) and the registered model families with their presets and
default tasks.
"""
import sys
from collections import defaultdict

from _common import ROOT, write_table

sys.path.insert(0, str(ROOT / "tests"))
from test_architecture import LAYERS, graph, layer_of, modules  # noqa: E402

from minitransformer.attention import kernel_names  # noqa: E402
from minitransformer.models.registry import model_families  # noqa: E402
from minitransformer.presets import PRESETS, make_task  # noqa: E402


def layers_table() -> None:
    mods, edges = modules(), graph()
    per_layer = defaultdict(list)
    for name in mods:
        per_layer[layer_of(name)].append(name)
    rows = []
    for i, (title, _) in enumerate(LAYERS):
        names = per_layer.get(i, [])
        lines = sum(len(mods[n].read_text(encoding="utf-8").splitlines()) for n in names)
        below = sorted({LAYERS[layer_of(t)][0] for n in names for t in edges[n] if layer_of(t) < i})
        tops = sorted({n.split(".")[1] if "." in n else "(package)" for n in names})
        rows.append([i, title, ", ".join(f"`{t}`" for t in tops), len(names), lines,
                     ", ".join(below) or "nothing"])
    upward = sum(layer_of(t) > layer_of(a) for a, ts in edges.items() for t in ts)
    write_table("package_layers", ["layer", "what", "modules", "files", "lines", "imports from"], rows,
                note=f"Bottom (0) to top. {len(mods)} modules, "
                     f"{sum(len(t) for t in edges.values())} import arrows, {upward} reaching up. "
                     "Produced by `docs/figures/scripts/architecture.py` from the import graph that "
                     "`tests/test_architecture.py` checks.")


def families_table() -> None:
    rows = []
    for name, fam in model_families().items():
        presets = PRESETS.get(name, {})
        if presets:
            model_cfg, train_cfg = next(iter(presets.values()))
            try:
                task = make_task(name, model_cfg, train_cfg).describe() if name != "gpt" else \
                    "causal LM on text (`--data FILE` or the built-in corpus)"
            except ValueError as err:
                task = str(err)
        else:
            task = "built by its own code (see its page); no preset yet"
        rows.append([f"`{name}`", f"`{fam.config_cls.__name__}`", fam.summary,
                     ", ".join(f"`{p}`" for p in presets) or "none", task])
    write_table("model_families", ["`--model`", "config", "what", "presets", "default task"], rows,
                note=f"Attention kernels any family with an `attention` field can use: "
                     f"{', '.join(f'`{k}`' for k in kernel_names())}. Produced by "
                     "`docs/figures/scripts/architecture.py` from the registry.")


if __name__ == "__main__":
    layers_table()
    families_table()
