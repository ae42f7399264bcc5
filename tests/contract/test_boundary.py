"""The two sides of the house: torch-free modules never import torch, onnx or the torch side.

Every module of textae is torch-free except the torch-side packages (TORCH_SIDE) and the entry
points (cli, demo, __main__), which may import the torch side only inside functions. Packages are
discovered from the folder, so a new one (serve/, ...) is held to the rule the day it lands.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.blocked_imports import TRAINING_MODULES, run_python
from helpers.paths import ROOT

PACKAGE = ROOT / "textae"
TORCH_SIDE = ("training", "export")  # packages that import torch and onnx
ENTRY_POINTS = ("cli", "demo", "__main__")  # import the torch side lazily, inside command bodies
FORBIDDEN = (*TRAINING_MODULES, *(f"textae.{package}" for package in TORCH_SIDE))
IMPORTERS = ("import_module", "import_optional")  # calls whose first argument names a module


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def side_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[0] in TORCH_SIDE:
        return "torch"
    if len(parts) == 1 and parts[0] in ENTRY_POINTS:
        return "entry"
    return "free"


TORCH_FREE = [path for path in all_modules() if side_of(path) == "free"]
ENTRY = [path for path in all_modules() if side_of(path) == "entry"]


def imported_names(node: ast.AST, package: str) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in node: import x, from x import y (x.y too), relative
    imports resolved against package, and import_module("x") / import_optional("x") calls."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield node.lineno, alias.name
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        yield node.lineno, base
        for alias in node.names:
            yield node.lineno, f"{base}.{alias.name}"
    elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name in IMPORTERS:
            yield node.lineno, node.args[0].value


def is_forbidden(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in FORBIDDEN)


def package_of(path: Path) -> str:
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def module_level_nodes(tree: ast.Module) -> Iterator[ast.AST]:
    """Every node that runs at import time: all but function bodies (class bodies do run)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(node))


def test_the_sides_are_discovered_from_the_folder() -> None:
    free = {module_name(path) for path in TORCH_FREE}
    assert {"textae", "textae.config", "textae.manifest", "textae.batching", "textae.extras", "textae.runtime.model"} <= free
    assert {"textae.evaluation.evaluate", "textae.evaluation.metrics"} <= free
    assert not free & {"textae.cli", "textae.demo", "textae.training.loop", "textae.export.folder"}
    assert {module_name(path) for path in ENTRY} == {"textae.cli", "textae.demo", "textae.__main__"}


@pytest.mark.parametrize("path", TORCH_FREE, ids=module_name)
def test_a_torch_free_module_imports_nothing_of_the_torch_side(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = [
        f"{path.name}:{line}: {name}" for node in ast.walk(tree) for line, name in imported_names(node, package_of(path)) if is_forbidden(name)
    ]
    assert not found, "torch-free module imports the torch side (lazy imports count too): " + "; ".join(found)


@pytest.mark.parametrize("path", ENTRY, ids=module_name)
def test_an_entry_point_imports_the_torch_side_only_inside_functions(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = [
        f"{path.name}:{line}: {name}"
        for node in module_level_nodes(tree)
        for line, name in imported_names(node, package_of(path))
        if is_forbidden(name)
    ]
    assert not found, "import at module level (move it into the command's body): " + "; ".join(found)


def test_every_torch_free_module_and_entry_point_imports_with_torch_blocked() -> None:
    names = [module_name(path) for path in TORCH_FREE + ENTRY if path.name != "__main__.py"]  # __main__ runs the CLI
    done = run_python("import importlib\nfor name in json.loads(sys.argv[1]):\n    importlib.import_module(name)\nprint(json.dumps(loaded()))\n", json.dumps(names))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_the_checker_catches_what_it_must() -> None:
    source = "import torch.nn\nfrom textae.training import loop\nfrom ..export import folder\nimport_optional('onnx', 'x')\nfrom textae import config\n"
    # relative to textae.runtime, ..export is textae.export
    found = [name for node in ast.walk(ast.parse(source)) for _, name in imported_names(node, "textae.runtime") if is_forbidden(name)]
    assert sorted(found) == ["onnx", "textae.export", "textae.export.folder", "textae.training", "textae.training.loop", "torch.nn"]
    lazy = "def command():\n    import torch\n"
    assert not [n for node in module_level_nodes(ast.parse(lazy)) for _, n in imported_names(node, "textae") if is_forbidden(n)]
