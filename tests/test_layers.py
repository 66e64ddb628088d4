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


def _graph() -> dict[str, set[str]]:
    """Module -> the ddscope modules it imports (lazy imports included); a name imported from a
    package is its submodule when there is one, else the package's ``__init__``."""
    names = {_module_name(p) for p in MODULES}

    def resolve(target: str) -> str | None:
        for cand in (target, f"{target}.__init__"):
            if cand in names:
                return cand
        head = target.rpartition(".")[0]  # from .x import name: the module x
        return resolve(head) if head else ("__init__" if "__init__" in names else None)

    return {_module_name(p): {m for _, t in _imports(p) if (m := resolve(t)) and m != _module_name(p)}
            for p in MODULES}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (the modules in order), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_import_cycle_in_the_package():
    """No module reaches itself through imports, lazy ones included (a package's ``__init__``
    re-exporting its submodules is not a cycle: edges into a package's own ``__init__`` from
    inside it are left out)."""
    graph = {n: {m for m in deps if not (m.endswith("__init__") and n.startswith(m[: -len("__init__")]))}
             for n, deps in _graph().items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
