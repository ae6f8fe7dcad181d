"""The architecture's guarantees, checked on the source: layering without upward imports, no import cycles, a cheap
``import workbench`` / ``import widgets``, and modules of a readable size.

Layers, low to high (a module may import its own layer and the layers below, never a higher one)::

    0 workbench.core      home, config, persist, hardware, resources
    1 workbench.data      assets, models, chat, corpus, hooks, store, harvest
    2 workbench.sae       model, kernels, io, train, cli, evaluate
    3 workbench.analysis  features, logits, search, explain, neurons, neighborhoods, splitting, ...
    4 workbench.intervene generation, steering, attribution
    5 workbench.persona   traits, judges, persona vectors, monitoring, fine-tuning checkpoints
    6 workbench.diffing   paired activations, crosscoders, model diffing
    7 workbench.report    html, card, page
    8 workbench.studies   profile, demo
    9 workbench           the top level: __init__ (the lazy public API), cli, __main__, _legacy
   10 widgets             the notebook views, above all of workbench

Imports are read with :mod:`ast` from every ``.py`` file of ``workbench/`` and ``widgets/``: module-level and
function-level ones, absolute (``workbench...``, ``widgets...``) and relative. Imports by computed name
(``importlib.import_module(f".{name}")``, as the lazy ``__init__`` files do) are not seen; they never run at import
time, so they cannot form an import-time cycle.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("workbench", "widgets")

LAYERS = {
    "workbench.core": 0,
    "workbench.data": 1,
    "workbench.sae": 2,
    "workbench.analysis": 3,
    "workbench.sdm": 3,
    "workbench.intervene": 4,
    "workbench.persona": 5,
    "workbench.diffing": 6,
    "workbench.audit": 6,
    "workbench.report": 7,
    "workbench.studies": 8,
}
TOP_LEVEL = {"workbench", "workbench.cli", "workbench.__main__", "workbench._legacy"}
TOP_LAYER = 9
WIDGETS_LAYER = 10
LAYER_NAMES = {**{rank: name for name, rank in LAYERS.items()}, TOP_LAYER: "workbench top level",
               WIDGETS_LAYER: "widgets"}

# Imported by neither ``import workbench`` nor ``import widgets``: each costs seconds (or numba compilation).
HEAVY = ("umap", "numba", "plotly", "sklearn", "transformer_lens", "sae_lens", "transformers", "ipywidgets")

MAX_LINES = 600
# Modules over MAX_LINES, each with why it stays one module. An entry whose file is gone or back under the limit
# fails the test, so the list stays current.
LONG_MODULES: dict[str, str] = {
    # (workbench/sae/model.py left this list when its architectures moved to workbench/sae/architectures/)
}


# ----------------------------------------------------------------------------------------------------------------
# The import graph
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (the longest known module the import names)
    path: str  # file, relative to the repository
    line: int
    text: str  # the import statement, on one line

    def where(self) -> str:
        return f"{self.path}:{self.line}: `{self.text}`"


def _module_files() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = path.relative_to(REPO).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _module_files()


def _known(name: str) -> str | None:
    """The longest prefix of the dotted ``name`` that is one of our modules."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in MODULES:
            return ".".join(parts[:n])
    return None


def _imports_of(module: str, path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    rel = path.relative_to(REPO).as_posix()
    out: list[Import] = []

    def add(node: ast.AST, target: str | None) -> None:
        if target is not None and target != module:
            out.append(Import(module, target, rel, node.lineno, ast.unparse(node)))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    add(node, _known(alias.name) or alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                keep = len(package) - (node.level - 1)
                assert keep > 0, f"{rel}:{node.lineno}: relative import beyond the top-level package"
                base = ".".join(package[:keep] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(node, sub if alias.name != "*" and sub in MODULES else _known(base) or base)
    return out


IMPORTS = sorted({imp for module, path in MODULES.items() for imp in _imports_of(module, path)},  # one per name
                 key=lambda i: (i.path, i.line, i.target))


def layer(module: str) -> int | None:
    if module == "widgets" or module.startswith("widgets."):
        return WIDGETS_LAYER
    if module in TOP_LEVEL:
        return TOP_LAYER
    for prefix, rank in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return None


def _describe(module: str) -> str:
    rank = layer(module)
    return f"{module} (layer {rank}, {LAYER_NAMES[rank]})"


def test_the_layout_is_seen():
    """The walk finds the packages and their imports (a broken walk would pass every test below)."""
    assert {"workbench", "workbench.cli", "widgets", "workbench.data.store", "workbench.sae.model"} <= set(MODULES)
    assert any(i.source == "workbench.data.harvest" and i.target == "workbench.data.store" for i in IMPORTS)
    assert any(i.source.startswith("widgets.") and i.target.startswith("workbench.") for i in IMPORTS)


def test_every_module_has_a_layer():
    unknown = sorted({m for m in MODULES if layer(m) is None} | {i.target for i in IMPORTS if layer(i.target) is None})
    assert not unknown, ("modules outside every layer (add their sub-package to LAYERS or TOP_LEVEL in "
                         f"tests/test_layout.py, or fix the import): {unknown}")


def test_no_module_imports_a_higher_layer():
    upward = [i for i in IMPORTS if layer(i.source) is not None and layer(i.target) is not None
              and layer(i.target) > layer(i.source)]
    assert not upward, "imports of a higher layer:\n" + "\n".join(
        f"  {i.where()}: {_describe(i.source)} imports {_describe(i.target)}" for i in upward)


def _cycles(edges: dict[str, dict[str, Import]]) -> list[list[Import]]:
    """The cycles closed by the back edges of a depth-first search over the module graph, each as its list of
    imports (every cyclic module lies on at least one of them)."""
    state: dict[str, int] = {}  # 1: on the DFS path, 2: done
    path: list[str] = []  # the modules from the DFS root to the current one
    taken: list[Import] = []  # taken[k] is the import from path[k] to path[k + 1]
    found: dict[tuple[str, ...], list[Import]] = {}

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target, imp in sorted(edges.get(module, {}).items()):
            if state.get(target) == 1:  # back edge: path[target:] + this import is a cycle
                cycle = taken[path.index(target):] + [imp]
                names = [e.source for e in cycle]
                k = names.index(min(names))
                found.setdefault(tuple(names[k:] + names[:k]), cycle)
            elif target not in state:
                taken.append(imp)
                visit(target)
                taken.pop()
        path.pop()
        state[module] = 2

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(MODULES) + 100))
    for module in sorted(edges):
        if module not in state:
            visit(module)
    return list(found.values())


def test_no_import_cycles():
    edges: dict[str, dict[str, Import]] = {}
    for imp in IMPORTS:
        if imp.target in MODULES:
            edges.setdefault(imp.source, {}).setdefault(imp.target, imp)  # the first import of a target names it
    cycles = _cycles(edges)
    assert not cycles, "import cycles:\n" + "\n".join(
        "  " + " -> ".join([c[0].source] + [e.target for e in c]) + "\n" + "\n".join(f"      {e.where()}" for e in c)
        for c in cycles)


# ----------------------------------------------------------------------------------------------------------------
# Cheap imports
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("package", ["workbench", "widgets"])
def test_importing_the_package_pulls_in_no_heavy_dependency(package):
    code = (f"import json, sys\nimport {package}\n"
            f"heavy = {HEAVY!r}\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    roots = sorted({m.split(".")[0] for m in loaded})
    assert not roots, f"`import {package}` imports {roots} ({len(loaded)} modules, e.g. {loaded[:5]})"


# ----------------------------------------------------------------------------------------------------------------
# Module size
# ----------------------------------------------------------------------------------------------------------------


def _line_counts() -> dict[str, int]:
    return {path.relative_to(REPO).as_posix(): path.read_bytes().count(b"\n") for path in MODULES.values()}


def test_modules_stay_under_the_line_limit_or_are_allow_listed():
    over = {p: n for p, n in sorted(_line_counts().items()) if n > MAX_LINES and p not in LONG_MODULES}
    assert not over, (f"modules over {MAX_LINES} lines: split them, or add them to LONG_MODULES in "
                      f"tests/test_layout.py with the reason: {over}")


def test_the_allow_list_is_current():
    counts = _line_counts()
    stale = {p: counts.get(p, "gone") for p in sorted(LONG_MODULES) if counts.get(p, 0) <= MAX_LINES}
    assert not stale, f"drop these from LONG_MODULES in tests/test_layout.py (no longer over {MAX_LINES} lines): {stale}"
