"""The code's shape, checked so the next drift is seen: no function over 80 lines, every
stage's `run` a screenful (60), and no import cycle among the project's modules,
imports inside functions and importlib calls included (tests/imports.py, which
tests/test_layout.py's stage isolation reads too)."""

from __future__ import annotations

import ast
from pathlib import Path

from components.infra.stages import STAGES
from tests.imports import imported

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("components", "pipelines")
GENERATED = {"components/export/schema/metadata_schema_generated.py"}
MAX_FUNCTION, MAX_RUN = 80, 60


def sources() -> dict[str, Path]:
    """module name -> file, for every project module outside generated code."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative in GENERATED:
                continue
            parts = relative.removesuffix(".py").split("/")
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def function_lengths() -> list[tuple[int, str]]:
    """(lines from `def` to the last line, module:qualified name), longest first."""
    out = []
    for module, path in sources().items():
        tree = ast.parse(path.read_text())
        stack = [(node, "") for node in tree.body]
        while stack:
            node, prefix = stack.pop()
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{node.name}"
                if not isinstance(node, ast.ClassDef):
                    out.append((node.end_lineno - node.lineno + 1, f"{module}:{name}"))
                stack.extend((child, f"{name}.") for child in node.body)
    return sorted(out, reverse=True)


def imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `module` imports anywhere in its file, importlib calls with a
    literal or f-string name included (tests/imports.py)."""
    return imported(path, module, known)


def cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    files = sources()
    graph = {m: imports(m, p, set(files)) for m, p in files.items()}
    index, low, on_stack, stack, out = {}, {}, set(), [], []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def test_no_function_is_longer_than_80_lines():
    lengths = function_lengths()
    print("the longest functions:", *(f"{n} {name}" for n, name in lengths[:10]), sep="\n  ")
    assert [item for item in lengths if item[0] > MAX_FUNCTION] == []


def test_every_stage_run_is_a_screenful():
    lengths = {name: n for n, name in function_lengths()}
    runs = {stage: lengths[f"components.{stage}.core:run"] for stage in STAGES}
    assert {stage: n for stage, n in runs.items() if n > MAX_RUN} == {}, runs


def test_no_import_cycles_among_the_project_modules():
    assert cycles() == []
