"""The package's import graph: no cycle between modules, layers import only downward, modules stay small.

Every import counts, at module level or inside a function (a function-level import is not a way around a
cycle); only imports under `if TYPE_CHECKING:` are exempt, since they never run. Names a package exports lazily
(`_EXPORTS` in its `__init__`) count as imports of the module that defines them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "nbtoolkit"

# Lowest first; a module may import its own layer and the layers before it (see docs/architecture.md).
LAYERS = ("core", "data", "models", "training", "runtime", "cloud", "ui", "orchestration")

# Module or package prefix -> layer; the longest matching prefix wins.
LAYER_OF = {
    "nbtoolkit": "core",                      # the package facade: lazy names only
    "nbtoolkit._lazy": "core",
    "nbtoolkit.errors": "core",
    "nbtoolkit.labels": "core",
    # The run-directory file protocol (metrics.jsonl, log.txt, status.json): trainers write it, runtimes and
    # views read it, so it sits below everything that produces or consumes a run.
    "nbtoolkit.runtime.events": "core",
    "nbtoolkit.data": "data",
    "nbtoolkit.models": "models",
    "nbtoolkit.generation": "training",
    "nbtoolkit.training": "training",
    "nbtoolkit.mixing": "training",
    "nbtoolkit.rewards": "training",
    "nbtoolkit.advisor": "training",
    "nbtoolkit.evaluation": "training",
    "nbtoolkit.metrics": "training",
    "nbtoolkit.forgetting": "training",
    "nbtoolkit.plots": "training",            # figures of training and evaluation results, no widgets
    "nbtoolkit.tracking": "training",         # the worker's MLflow tracker
    "nbtoolkit.runtime": "runtime",
    # The stage list, profiles and stages.json: written by the pipeline and the workspace, read by the ui.
    "nbtoolkit.stages": "runtime",
    # Local time estimates: a launch records one (runtime), from token counts and this machine's rates.
    "nbtoolkit.estimate": "runtime",
    "nbtoolkit.estimate.cloud": "cloud",      # SageMaker / Nova instance counts and prices
    "nbtoolkit.examples": "runtime",          # a finished run packed with the package, read like a run directory
    "nbtoolkit.aws": "cloud",
    "nbtoolkit.serve": "cloud",
    "nbtoolkit.ui": "ui",
    "nbtoolkit.pipeline": "orchestration",
    "nbtoolkit.workspace": "orchestration",
    "nbtoolkit.sweeps": "orchestration",
    "nbtoolkit.report": "orchestration",
    "nbtoolkit.cli": "orchestration",
}

# Upward imports that are allowed, each with its reason: (importer, imported) -> why.
LAYER_EXCEPTIONS: dict[tuple[str, str], str] = {
    # Credentials are scrubbed from tracked parameters with the same patterns the AWS session uses; the import
    # is optional (ImportError when the aws extra is absent) and aws.session imports nothing above core.
    ("nbtoolkit.tracking", "nbtoolkit.aws.session"): "one credential scrubber, owned by aws.session",
}

MAX_LINES = 600
# Modules allowed over MAX_LINES, each with its reason.
LONG_MODULES = {
    "nbtoolkit/training/sft.py": "the local SFT trainer: one training loop with its batching, LoRA and checkpoints",
    "nbtoolkit/training/rft.py": "the local GRPO trainer: sampling, rewards, the policy loss and its health checks",
    "nbtoolkit/models/registry.py": "the model table with the embedded model's GGUF conversion beside it",
    "nbtoolkit/aws/deploy.py": "SageMaker endpoints and Bedrock custom-model import share one deployment lifecycle",
    "nbtoolkit/data/loaders.py": "one reader per input format (CSV, JSON, JSONL, Parquet, S3) with its errors",
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _lazy_exports(name: str) -> dict[str, str]:
    """A package's lazily exported names -> the module defining each (its `_EXPORTS` literal)."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
            exports = ast.literal_eval(node.value)
            return {exported: module for module, names in exports.items() for exported in names}
    return {}


def _owner(dotted: str) -> str | None:
    """The nbtoolkit module an import of `dotted` loads (the longest existing prefix)."""
    while dotted and dotted not in MODULES:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skipped.update(id(n) for n in ast.walk(child))
    return skipped


def imports_of(name: str) -> dict[str, int]:
    """nbtoolkit modules `name` imports -> the line of the first such import."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    skipped = _type_checking_nodes(tree)
    package = name if _is_package(name) else name.rpartition(".")[0]
    found: dict[str, int] = {}

    def add(target: str | None, line: int) -> None:
        if target is not None and target != name:
            found.setdefault(target, line)

    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "nbtoolkit":
                    add(_owner(alias.name), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "nbtoolkit":
                continue
            for alias in node.names:
                full = f"{module}.{alias.name}"
                if full in MODULES:
                    add(full, node.lineno)
                elif module in MODULES and _is_package(module) and alias.name in _lazy_exports(module):
                    add(_lazy_exports(module)[alias.name], node.lineno)
                else:
                    add(_owner(module), node.lineno)
    return found


def import_graph() -> dict[str, dict[str, int]]:
    return {name: imports_of(name) for name in MODULES}


def layer_of(name: str) -> str:
    prefix = _owner_prefix(name)
    return LAYER_OF[prefix]


def _owner_prefix(name: str) -> str:
    candidates = [p for p in LAYER_OF if name == p or name.startswith(p + ".")]
    return max(candidates, key=len)


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle path through each group of modules that import each other."""
    return [_cycle_path(graph, component) for component in tangled_modules(graph)]


def tangled_modules(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _cycle_path(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """One cycle through the component's first module, for the failure message."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph.get(node, {})):
            if target == start:
                return paths[node] + [start]
            if target in members and target not in paths:
                paths[target] = paths[node] + [target]
                queue.append(target)
    return component


def test_every_module_has_a_layer():
    unplaced = [name for name in MODULES if not any(name == p or name.startswith(p + ".") for p in LAYER_OF)]
    assert not unplaced, f"give these modules a layer in LAYER_OF: {unplaced}"


def test_no_import_cycle_between_modules():
    graph = import_graph()
    lines = [f"  {' -> '.join(_cycle_path(graph, members))}  (all modules involved: {', '.join(members)})"
             for members in tangled_modules(graph)]
    assert not lines, "import cycles:\n" + "\n".join(lines)


def test_layers_only_import_downward():
    rank = {layer: n for n, layer in enumerate(LAYERS)}
    upward = []
    for importer, targets in import_graph().items():
        for target, line in targets.items():
            if rank[layer_of(target)] > rank[layer_of(importer)] and (importer, target) not in LAYER_EXCEPTIONS:
                path = MODULES[importer].relative_to(PACKAGE_DIR.parent)
                upward.append(f"  {path}:{line} {importer} ({layer_of(importer)}) imports {target} "
                              f"({layer_of(target)})")
    assert not upward, f"imports against the layering {' -> '.join(LAYERS)}:\n" + "\n".join(upward)


def test_layer_exceptions_are_still_needed():
    graph = import_graph()
    stale = [pair for pair in LAYER_EXCEPTIONS if pair[1] not in graph.get(pair[0], {})]
    assert not stale, f"remove these from LAYER_EXCEPTIONS, the import is gone: {stale}"


def test_modules_stay_small():
    too_long = {}
    for path in MODULES.values():
        relative = path.relative_to(PACKAGE_DIR.parent).as_posix()
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES and relative not in LONG_MODULES:
            too_long[relative] = lines
    assert not too_long, f"modules over {MAX_LINES} lines (split them, or list them with a reason): {too_long}"
    missing = [p for p in LONG_MODULES if not (PACKAGE_DIR.parent / p).exists()]
    assert not missing, f"LONG_MODULES names files that no longer exist: {missing}"


def test_only_ui_imports_ipywidgets():
    offenders = []
    for name, path in MODULES.items():
        if layer_of(name) == "ui":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] == "ipywidgets" for n in names):
                offenders.append(f"{name}:{node.lineno}")
    assert not offenders, f"only nbtoolkit.ui imports ipywidgets: {offenders}"


# -- the checker itself --------------------------------------------------------------------------------------


def test_a_cycle_is_found_and_printed_as_a_path():
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b": 1}, "b": {}}) == []


@pytest.mark.parametrize("name,layer", [("nbtoolkit.runtime.events", "core"), ("nbtoolkit.runtime.local", "runtime"),
                                        ("nbtoolkit.data.splits", "data"), ("nbtoolkit.ui.monitor", "ui")])
def test_the_longest_prefix_decides_the_layer(name, layer):
    assert layer_of(name) == layer


def test_function_level_relative_and_lazy_imports_all_count():
    graph = import_graph()
    # scrub_value imports aws.session inside the function; a form's spec imports JobSpec from the runtime package,
    # which exports it lazily: the edge goes to the module that defines it.
    assert "nbtoolkit.aws.session" in graph["nbtoolkit.tracking"]
    assert _lazy_exports("nbtoolkit.runtime")["JobSpec"] in graph["nbtoolkit.ui.hyperparameters"]
    assert "nbtoolkit.runtime" not in graph["nbtoolkit.ui.hyperparameters"]


def test_the_architecture_page_draws_every_layer():
    page = (PACKAGE_DIR.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    missing = [layer for layer in LAYERS if f'{layer}["' not in page]
    assert not missing, f"docs/architecture.md's diagram lacks the layers {missing}"
