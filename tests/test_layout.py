"""The shape of the house: imports point down only, and no import hides inside a function."""
from __future__ import annotations

import ast
import doctest
import importlib
from pathlib import Path

import pytest

LM = Path(__file__).resolve().parents[1] / "lm"

# A package may import its own layer and the layers below (../shared/DESIGN.md).
LAYERS = {
    "lm.errors": 0, "lm.utils": 0, "lm.cli": 0, "lm.data": 0, "lm.basics": 0,
    "lm.tokenizers": 1,
    "lm.ngram": 2, "lm.models": 2, "lm.checkpoints": 2,
    "lm.training": 3, "lm.inference": 3,
    "lm.finetune": 4, "lm.rl": 4, "lm.labeling": 4, "lm.pretraining": 4,
    "lm.stages": 5, "lm.report": 6, "lm.plots": 6, "lm.chat": 6, "lm.serve": 6,
}
# Imports allowed inside functions: optional dependencies only.
OPTIONAL = {"matplotlib"}


def module_name(path: Path) -> str:
    rel = path.relative_to(LM.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer(name: str) -> int | None:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if name == prefix or name.startswith(prefix + "."):
            return LAYERS[prefix]
    return None


def imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node, a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node, node.module


FILES = sorted(LM.rglob("*.py"))


def test_every_module_has_a_layer():
    assert [module_name(f) for f in FILES if layer(module_name(f)) is None and module_name(f) != "lm"] == []


@pytest.mark.parametrize("path", FILES, ids=lambda p: module_name(p))
def test_imports_point_down_only(path):
    me = module_name(path)
    if me == "lm":
        return
    tree = ast.parse(path.read_text(encoding="utf-8"))
    up = [(target, node.lineno) for node, target in imports(tree)
          if target.startswith("lm.") and layer(target) is not None and layer(target) > layer(me)]
    assert up == [], f"{me} (layer {layer(me)}) imports from a layer above it"


@pytest.mark.parametrize("path", FILES, ids=lambda p: module_name(p))
def test_no_imports_inside_functions(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    hidden = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node, target in imports(fn):
                if target.split(".")[0] not in OPTIONAL:
                    hidden.append((fn.name, target, node.lineno))
    assert hidden == [], "imports inside functions (only optional dependencies may hide there)"


MODULES = sorted({module_name(f) for f in FILES})


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    """The tiny examples in docstrings are true (those marked `# doctest: +SKIP` need files or time)."""
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0
