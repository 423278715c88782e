"""The package's layout holds: no import cycle between modules of `ropd/`, and no module over 500 lines unless its
first docstring says why ("Longer than 500 lines on purpose: ...").

Imports are read with `ast`, every one of them: at the top of a module, inside functions, and under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ropd"
MAX_LINES = 500
REASON = "Longer than 500 lines on purpose"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (a name imported from a package counts as its submodule
    when there is one, else as the package)."""
    paths = {module_name(path, root): path for path in sorted(root.rglob("*.py"))}

    def known(name: str) -> str | None:
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        found: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(known(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        package = package.rpartition(".")[0]
                    base = f"{package}.{base}" if base else package
                for alias in node.names:
                    found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else known(base))
        targets = {target for target in found if target}
        # importing a.b.c runs the __init__ of the subpackage a.b first (the root `ropd` imports its exports lazily)
        targets |= {parent for target in targets for parent in _subpackages_above(target) if parent in paths}
        graph[name] = {target for target in targets if target != name and not name.startswith(f"{target}.")}
    return graph


def _subpackages_above(module: str) -> list[str]:
    """The subpackages whose __init__ runs when `module` is imported, the root package left out."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_check_finds_a_cycle_through_a_function_level_import(tmp_path):
    package = tmp_path / "ropd"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "a.py").write_text("from ropd.sub.b import thing\n")
    (package / "sub" / "b.py").write_text("def thing():\n    from ropd.sub import a\n")
    (package / "c.py").write_text("from . import d\n")
    (package / "d.py").write_text("import os\n")
    graph = import_graph(package)
    assert graph["ropd.c"] == {"ropd.d"}
    assert cycles(graph) == [["ropd.sub.a", "ropd.sub.b"]]


def test_no_import_cycle_in_the_package():
    assert cycles(import_graph(PACKAGE)) == []


def test_no_module_is_over_500_lines_without_a_stated_reason():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").count("\n")
        if lines > MAX_LINES and REASON not in (ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""):
            long.append(f"{path.relative_to(PACKAGE.parent)}: {lines} lines")
    assert long == []


def test_every_subpackage_says_what_it_holds():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        tree = ast.parse(init.read_text(encoding="utf-8"))
        assert ast.get_docstring(tree), f"{init} has no docstring"
        exported = [
            node for node in tree.body if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets)
        ]
        assert exported, f"{init} has no __all__"
        for name in ast.literal_eval(exported[0].value):
            assert (init.parent / f"{name}.py").is_file() or (init.parent / name).is_dir() or name in init.read_text(), (init, name)


def test_the_readme_and_docs_name_only_modules_that_exist_and_every_subpackage():
    repo = PACKAGE.parent
    texts = {
        path: path.read_text(encoding="utf-8") for path in [repo / "README.md", *sorted((repo / "docs").glob("*.md"))] if path.is_file()
    }
    stale = sorted(
        {
            f"{path.name}: {name}"
            for path, text in texts.items()
            for name in re.findall(r"\bropd/[\w/]+\.py\b", text)
            if not (repo / name).is_file()
        }
    )
    assert stale == []
    readme = texts[repo / "README.md"]
    unnamed = [init.parent.name for init in sorted(PACKAGE.glob("*/__init__.py")) if f"ropd/{init.parent.name}/" not in readme]
    assert unnamed == []
