"""The package picture of docs/architecture.md, checked against the imports in the source.

Each layer may import only the layers listed for it (and itself); gin may be imported only by the
command-line layer, the T5X compatibility layer and the entry points. A new import that crosses a layer
fails here, naming the module and the import.
"""

import ast
import os

import pytest

from tests.helpers import REPO_ROOT

PACKAGE = os.path.join(REPO_ROOT, "simvlm_jax")
# Top-level folders that an install maps into the package (setup.py): folder -> its layer.
MAPPED = {"tasks": "tasks", "launch": "launch"}
# layer -> the layers it may import (besides itself). Entry points are the modules directly in simvlm_jax/.
ALLOWED = {
    "network": set(),
    "data": set(),
    "metrics": set(),
    "model": {"network", "data"},
    "tasks": {"data", "metrics"},
    "training": {"network", "data", "model", "metrics", "report"},
    "cli": {"network", "data", "model", "metrics", "training"},
    "t5x_compat": {"data", "training", "cli"},
    "gin": set(),
    "launch": set(),  # launchers build command lines only
    "report": {"data", "metrics", "model"},
}
ENTRY = "entry points"
GIN_ALLOWED = {"cli", "t5x_compat", ENTRY}


def _layer(path: str) -> str:
    parts = os.path.relpath(path, REPO_ROOT).split(os.sep)
    if parts[0] in MAPPED:
        return MAPPED[parts[0]]
    return parts[1] if len(parts) > 2 else ENTRY


def _module(path: str) -> str:
    """`simvlm_jax.tasks.vqa_v2` for tasks/vqa_v2.py (its installed name), `simvlm_jax.data` for an __init__."""
    parts = os.path.relpath(path, REPO_ROOT)[: -len(".py")].split(os.sep)
    if parts[0] in MAPPED:
        parts = ["simvlm_jax", *parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: str) -> list[str]:
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


SOURCES = sorted(
    os.path.join(d, f)
    for root in (PACKAGE, *(os.path.join(REPO_ROOT, folder) for folder in MAPPED))
    for d, _, files in os.walk(root)
    for f in files
    if f.endswith(".py")
)
MODULES = {_module(p): p for p in SOURCES}


def test_every_package_has_a_layer():
    layers = {_layer(p) for p in SOURCES} - {ENTRY}
    assert layers == set(ALLOWED) - {"gin"} | ({"gin"} & layers)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: os.path.relpath(p, PACKAGE))
def test_imports_point_down_the_layers(path):
    layer = _layer(path)
    wrong = []
    for name in _imports(path):
        if name == "gin" or name.startswith("gin."):
            if layer not in GIN_ALLOWED:
                wrong.append(f"{name} (gin belongs to the entry points and cli/)")
            continue
        if not name.startswith("simvlm_jax."):
            continue
        target = name.split(".")[1]
        if target in MAPPED:
            target_layer = MAPPED[target]
        elif target == "__version__" or not os.path.isdir(os.path.join(PACKAGE, target)):
            target_layer = ENTRY
        else:
            target_layer = target
        if layer == ENTRY or target_layer == layer:
            continue
        if target_layer == ENTRY or target_layer not in ALLOWED[layer]:
            wrong.append(name)
    assert not wrong, f"{os.path.relpath(path, REPO_ROOT)} ({layer}) imports {sorted(set(wrong))}"


def _import_graph() -> dict[str, set[str]]:
    """{module: the package modules it imports, at the top or inside a function}."""

    def known(name: str) -> str:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for module, path in MODULES.items():
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets |= {known(alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import mod` imports pkg.mod (and pkg's __init__ only on the way)
                targets |= {known(f"{node.module}.{alias.name}") for alias in node.names}
        graph[module] = targets - {"", module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles (each as the modules around it), by depth-first search."""
    found, state = [], {}

    def visit(module, stack):
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                found.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    return found


def test_the_package_has_no_import_cycle():
    """No module imports, even lazily inside a function, a module that imports it back (directly or not)."""
    assert not _cycles(_import_graph()), "\n".join(" -> ".join(cycle) for cycle in _cycles(_import_graph()))


def test_the_cycle_checker_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_the_checker_sees_a_forbidden_import(tmp_path):
    """The checker itself: an upward import is found."""
    bad = tmp_path / "x.py"
    bad.write_text("from simvlm_jax.training import trainer\nimport gin\n")
    assert "simvlm_jax.training" in _imports(str(bad)) and "gin" in _imports(str(bad))


def _private_gin_uses(path: str) -> list[str]:
    """Attribute chains that start at gin and touch a private name (`gin.config._CONFIG`)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain, inner = [node.attr], node.value
        while isinstance(inner, ast.Attribute):
            chain.append(inner.attr)
            inner = inner.value
        if isinstance(inner, ast.Name) and inner.id == "gin" and any(a.startswith("_") for a in chain):
            found.append(".".join(["gin"] + chain[::-1]))
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: os.path.relpath(p, PACKAGE))
def test_gin_is_used_through_its_public_api(path):
    assert not _private_gin_uses(path), f"{os.path.relpath(path, REPO_ROOT)}: {_private_gin_uses(path)}"


def test_the_checker_sees_a_private_gin_name(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("import gin\nx = gin.config._CONFIG.items()\n")
    assert "gin.config._CONFIG" in _private_gin_uses(str(bad))
