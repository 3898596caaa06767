"""The layout rules of docs/design.md, checked from the source: no import circle in `engine/`, `ui/`
or `api/` (an import inside a function counts as much as one at the top), and an engine whose
top level holds only a few modules, the rest living in subpackages named by meaning."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "ui", "api")
MAX_ENGINE_TOP_LEVEL = 8


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    """module → the modules of `packages` it imports, anywhere in its source. `from a import b`
    counts as an import of module `a.b` when that is a module, else of `a`. Importing a submodule
    is not counted as importing its parent package's `__init__` (Python runs it, but a package
    that re-exports its children would otherwise always look circular)."""
    files = {module_name(p, root): p for pkg in packages for p in (root / pkg).rglob("*.py")}

    def known(name: str | None) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(filter(None, (known(alias.name) for alias in node.names)))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:
                    child = f"{source}.{alias.name}"
                    target = child if child in files else known(source)
                    if target:
                        deps.add(target)
        deps.discard(name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    graph = import_graph(ROOT)
    assert "engine.pipeline.stages" in graph and "ui.app" in graph and "api.routes" in graph
    assert cycles(graph) == []


def test_the_circle_finder_sees_function_local_imports(tmp_path):
    pkg = tmp_path / "engine"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from engine import b\n")
    (pkg / "b.py").write_text("def f():\n    from engine.c import thing\n")
    (pkg / "c.py").write_text("from .a import x\n")
    (pkg / "d.py").write_text("import engine.a\n")
    graph = import_graph(tmp_path, packages=("engine",))
    assert graph["engine.b"] == {"engine.c"} and graph["engine.c"] == {"engine.a"}
    assert cycles(graph) == [["engine.a", "engine.b", "engine.c"]]


def test_engine_top_level_is_a_few_modules_and_subpackages():
    modules = sorted(p.name for p in (ROOT / "engine").glob("*.py"))
    assert len(modules) <= MAX_ENGINE_TOP_LEVEL, modules
    for folder in (ROOT / "engine").iterdir():
        if folder.is_dir() and folder.name != "__pycache__":
            assert (folder / "__init__.py").is_file(), f"{folder.name} is not a package"


def test_engine_package_imports_nothing_so_launch_can_read_its_flags_first():
    """launch.py imports engine.cmd_args with the system Python of a fresh machine, before any
    dependency is installed: the package itself and that module may use the standard library only."""
    graph = import_graph(ROOT)
    assert graph["engine"] == set() and graph["engine.cmd_args"] == set()
    for name in ("engine/__init__.py", "engine/cmd_args.py"):
        tree = ast.parse((ROOT / name).read_text(encoding="utf-8"))
        imported = {
            (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        assert imported <= set(sys.stdlib_module_names), (name, imported - set(sys.stdlib_module_names))


def test_builtin_extensions_import_only_the_public_surface():
    """An extension may import the engine modules engine.plugins.PUBLIC lists, nothing deeper."""
    from engine.plugins import PUBLIC

    for path in sorted((ROOT / "extensions").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and not node.level and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                if module == "engine" or module.startswith("engine."):
                    assert module in PUBLIC, f"{path.relative_to(ROOT)} imports {module}"
