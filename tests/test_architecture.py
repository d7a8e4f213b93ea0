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
# layer -> the layers it may import (besides itself). Entry points are the modules directly in simvlm_jax/.
ALLOWED = {
    "network": set(),
    "data": set(),
    "metrics": set(),
    "model": {"network", "data"},
    "tasks": {"data", "metrics"},
    "training": {"network", "data", "model", "metrics"},
    "cli": {"network", "data", "model", "metrics", "training"},
    "t5x_compat": {"training", "cli"},
    "gin": set(),
    "launch": set(),  # launchers build command lines only
}
ENTRY = "entry points"
GIN_ALLOWED = {"cli", "t5x_compat", ENTRY}


def _layer(path: str) -> str:
    parts = os.path.relpath(path, PACKAGE).split(os.sep)
    return parts[0] if len(parts) > 1 else ENTRY


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


SOURCES = sorted(os.path.join(d, f) for d, _, files in os.walk(PACKAGE) for f in files if f.endswith(".py"))


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
        if target == "__version__" or not os.path.isdir(os.path.join(PACKAGE, target)):
            target_layer = ENTRY
        else:
            target_layer = target
        if layer == ENTRY or target_layer == layer:
            continue
        if target_layer == ENTRY or target_layer not in ALLOWED[layer]:
            wrong.append(name)
    assert not wrong, f"{os.path.relpath(path, REPO_ROOT)} ({layer}) imports {sorted(set(wrong))}"


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
