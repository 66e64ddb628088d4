"""The package's layers: a module imports only from its own layer or the ones below, lazy
imports inside functions included (docs/design.md §5). Read from the source with ``ast``, so the
test needs no import of the package and fails on the first upward import it finds."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ddscope"

# Bottom to top; a module is placed by its first dotted name under ddscope.
LAYERS = (
    ("version", "catalogue", "errors", "paths", "tomlio", "imports", "samplers", "validate", "config"),
    ("estimators", "data", "models"),
    ("metrics",),
    ("train", "checkpoint"),
    ("measure", "extend"),
    ("runs",),
    ("report",),
    ("api",),
    ("cli", "__main__", "__init__"),
)
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts)


def _imports(path: Path, name: str | None = None) -> list[tuple[int, str]]:
    """(line, the imported ddscope module's dotted name under ddscope) for every import of the
    file ``path``, the module ``name`` (default: its name under ``src/ddscope``)."""
    own = (name or _module_name(path)).split(".")
    package = own[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name[len("ddscope."):]) for a in node.names if a.name.startswith("ddscope.")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
                if not node.module:  # from . import x, y: each a submodule (or a name of the package)
                    out += [(node.lineno, ".".join(p for p in (target, a.name) if p)) for a in node.names]
                    continue
                out.append((node.lineno, target))
            elif node.module and (node.module == "ddscope" or node.module.startswith("ddscope.")):
                target = node.module[len("ddscope."):] if node.module != "ddscope" else ""
                if not target:
                    out += [(node.lineno, a.name) for a in node.names]
                else:
                    out.append((node.lineno, target))
    return out


def _layer(dotted: str) -> int | None:
    return LEVEL.get(dotted.split(".")[0] if dotted else "__init__")


MODULES = sorted(SRC.rglob("*.py"))


def test_every_module_has_a_layer():
    unplaced = sorted({_module_name(p).split(".")[0] for p in MODULES} - set(LEVEL))
    assert not unplaced, f"modules without a layer in tests/test_layers.py: {unplaced}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_no_module_imports_from_a_layer_above_its_own(path):
    mine = _layer(_module_name(path))
    up = [(line, target) for line, target in _imports(path)
          if (theirs := _layer(target)) is not None and theirs > mine]
    assert not up, f"{_module_name(path)} (layer {mine}) imports upward: " + ", ".join(
        f"line {line}: ddscope.{t} (layer {_layer(t)})" for line, t in up)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The test above can fail: a lazy import of the report inside a metric module is caught."""
    probe = tmp_path / "distance.py"
    probe.write_text((SRC / "metrics" / "distance.py").read_text(encoding="utf-8")
                     + "\n\ndef _late():\n    from ..report import build_report\n", encoding="utf-8")
    found = [t for _, t in _imports(probe, "metrics.distance")]
    assert "report" in found and _layer("report") > _layer("metrics.distance")
