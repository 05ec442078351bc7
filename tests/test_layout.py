"""The shape of ``src/voxrelay``: imports flow one way (no cycle, counting imports
inside functions and under ``TYPE_CHECKING``), no transport imports another, and no
module grows past 500 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "voxrelay"
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path) -> set[str]:
    """Every voxrelay module ``name`` imports, wherever in the file the import stands."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # ``from voxrelay.x import y`` may name the module voxrelay.x.y.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(GRAPH[node]):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(GRAPH):
        if node not in state and (found := visit(node)):
            return found
    return None


def _package_of(module: str) -> str:
    return module.rpartition(".")[0]


def test_no_import_cycles() -> None:
    # A package's __init__ re-exporting its modules is not a cycle of ideas: leave
    # out the edge from a module to its own package's face.
    for name in GRAPH:
        GRAPH[name] = {t for t in GRAPH[name] if not name.startswith(t + ".")}
    assert _cycle() is None, " -> ".join(_cycle() or [])


def test_no_transport_imports_another() -> None:
    transports = "voxrelay.transports."
    for name, targets in GRAPH.items():
        if not name.startswith(transports):
            continue
        own = name.removeprefix(transports).split(".")[0]
        for target in targets:
            if target.startswith(transports):
                other = target.removeprefix(transports).split(".")[0]
                assert other in (own, "_sse"), f"{name} imports {target}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_over_500_lines(name: str) -> None:
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines"


def test_the_graph_sees_the_imports_it_should() -> None:
    # The checks above mean something only if imports are found at all.
    assert "voxrelay.sessions.session" in GRAPH["voxrelay.sessions.registry"]
    assert "voxrelay.sessions.directory" in GRAPH["voxrelay.sessions"]


def test_modules_stay_small() -> None:
    # One idea per module: the median module reads in a sitting.
    sizes = sorted(len(path.read_text().splitlines()) for path in MODULES.values())
    assert sizes[len(sizes) // 2] <= 150, sizes


def test_no_tracked_file_holds_an_unresolved_merge() -> None:
    import subprocess

    root = SRC.parent
    listed = subprocess.run(
        ["git", "ls-files"], cwd=root, capture_output=True, text=True, check=False
    )
    if listed.returncode != 0:
        pytest.skip("not a git checkout: no tracked files to read")
    markers = ("<<<<<<< ", ">>>>>>> ")
    found = []
    for name in listed.stdout.splitlines():
        path = root / name
        if path.suffix not in (".py", ".md", ".toml", ".cfg", ".conf", ".sh", ".yml", ".yaml", ""):
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        found += [
            f"{name}:{n}" for n, line in enumerate(text.splitlines(), 1) if line.startswith(markers)
        ]
    assert not found, f"unresolved merge markers at {found}"
