"""The modules a Python file imports, read from its syntax tree: `import`, `from ... import`
(relative ones resolved), imports inside functions, and `importlib.import_module(...)` /
`__import__(...)` calls whose name is a literal or an f-string. An f-string's fields are
read as wildcards (`f"components.{stage}.config"` names every stage's config module), so
an import by name is followed as far as the code itself says where it goes."""

from __future__ import annotations

import ast
import re
from pathlib import Path

IMPORT_FUNCTIONS = {"import_module", "__import__"}


def _called_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _pattern(arg: ast.expr) -> str | None:
    """A regex for the module names a literal or f-string argument can take."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return re.escape(arg.value)
    if isinstance(arg, ast.JoinedStr):
        parts = []
        for value in arg.values:
            if isinstance(value, ast.Constant):
                parts.append(re.escape(str(value.value)))
            else:
                parts.append(r"[\w.]+")
        return "".join(parts)
    return None


def imported(path: Path, module: str = "", known: set[str] | None = None) -> set[str]:
    """Every module name `path` imports. With `known`, only those (and f-string imports
    are expanded to the known modules they can name); `module` resolves relative imports."""
    found: set[str] = set()
    patterns: list[str] = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and _called_name(node) in IMPORT_FUNCTIONS and node.args:
            pattern = _pattern(node.args[0])
            if pattern is not None:
                patterns.append(pattern)
                if known is None:
                    found.add(pattern.replace(r"[\w.]+", "*").replace("\\", ""))
    if known is None:
        return found
    for pattern in patterns:
        found.update(name for name in known if re.fullmatch(pattern, name))
    return {name for name in found if name in known and name != module}
