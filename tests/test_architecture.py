"""The package in layers: every module imports only from its own layer or those below, and no
import circle exists (top-level or inside functions). docs/architecture.md shows this table."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "minitransformer"

# bottom to top; a module may import from its own layer and the layers before it
LAYERS = [
    ("foundations", ["backend", "config"]),
    ("gradient checks", ["gradcheck"]),
    ("layers", ["nn"]),
    ("attention", ["attention"]),
    ("positions and blocks", ["positional", "blocks"]),
    ("models", ["models"]),
    ("data", ["data"]),
    ("tasks", ["tasks"]),
    ("optimisers", ["optim"]),
    ("data parallelism", ["thread_parallel", "distributed"]),
    ("checkpoints", ["checkpoint"]),
    ("the training loop", ["train"]),
    ("generation", ["generate", "beam_search"]),
    ("transfer learning", ["transfer"]),
    ("compression", ["compress"]),
    ("interop: Hugging Face and ONNX", ["interop"]),
    ("benchmarks", ["benchmarking"]),
    ("the edge: presets, config files, command line", ["presets", "cli", "bert_cli", "__main__", "__init__"]),
]


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for i, (_, names) in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"module {module} is in no layer of LAYERS")


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known=None) -> set[str]:
    """The package modules `name` imports anywhere in its file (functions included): for
    ``from pkg import x`` the module pkg.x when it is one, else pkg."""
    known = modules() if known is None else known
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("minitransformer"):
                for a in node.names:
                    found.add(f"{target}.{a.name}" if f"{target}.{a.name}" in known else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("minitransformer"))
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    edges = {}
    for name, path in mods.items():
        edges[name] = {t for t in imports_of(name, path, mods) if t in mods and t != name}
    return edges


def test_every_module_is_in_a_layer():
    for name in modules():
        layer_of(name)


def test_no_module_imports_from_a_higher_layer():
    upward = [(a, b) for a, targets in graph().items() for b in targets if layer_of(b) > layer_of(a)]
    assert not upward, f"imports that reach up: {upward}"


def test_no_import_circle():
    edges = graph()
    # a package's __init__ re-exports its modules: the edge package -> its own module is not a circle
    for name in edges:
        edges[name] = {t for t in edges[name] if not t.startswith(name + ".")}
    state, circle = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                circle.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"
    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert not circle, f"import circles: {circle[:3]}"


@pytest.mark.parametrize("low, high", [("nn", "attention"), ("attention", "models"), ("models", "train"),
                                        ("models", "checkpoint"), ("models", "compress"), ("models", "presets")])
def test_the_named_rules_of_the_design(low, high):
    """Layers know no attention, kernels know no models, models know no training, checkpoints,
    compression or configuration files."""
    offenders = [(a, b) for a, targets in graph().items() if a.split(".")[1:2] == [low]
                 for b in targets if b.split(".")[1:2] == [high]]
    assert not offenders
