"""The layout rules of docs/design.md, read from the code itself."""

import ast
import re
import tomllib
from pathlib import Path

from components.common.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]
STAGE_PACKAGES = sorted(
    p.name
    for p in (ROOT / "components").iterdir()
    if p.is_dir() and p.name not in ("common", "__pycache__")
)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_every_stage_is_a_package_and_nothing_else_is():
    assert set(STAGES) <= set(STAGE_PACKAGES)
    # commands, not pipeline stages: predict, explain (Grad-CAM) and tune (a search over
    # the train stage)
    assert set(STAGE_PACKAGES) - set(STAGES) == {"predict", "explain", "tune"}


# a search composes stages: it may call their entry points (config and run), nothing else;
# explain reads a model's labels and metadata input as predict does, through predict.core
COMPOSES = {"tune": ("prepare", "train"), "explain": ("predict",)}
ENTRY_POINTS = re.compile(r"components\.(\w+)\.(config|core|preflight)(\.\w+)?$")


def test_a_stage_package_imports_only_common_and_itself():
    """Stages meet at their contracts (artifact folders), not at each other's code; tune
    composes prepare and train through their configs and runs (and train's preflight
    verdict, which a trial scores)."""
    offences = []
    for package in STAGE_PACKAGES:
        for path in sorted((ROOT / "components" / package).rglob("*.py")):
            for module in imported_modules(path):
                match = re.match(r"components\.(\w+)", module)
                if not match or match[1] in ("common", package):
                    continue
                entry = ENTRY_POINTS.match(module)
                if match[1] in COMPOSES.get(package, ()) and (entry or module == match[0]):
                    continue
                offences.append(f"{path.relative_to(ROOT)} imports {module}")
    assert offences == []


def test_common_imports_no_stage():
    offences = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sorted((ROOT / "components" / "common").rglob("*.py"))
        for module in imported_modules(path)
        if re.match(r"components\.(?!common\b)\w+", module)
    ]
    assert offences == []


def test_the_python_requirement_is_what_the_code_needs():
    """datetime.UTC, tomllib and numpy 2.4 need Python 3.11."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["requires-python"].startswith(">=3.11")
    assert project["tool"]["ruff"]["target-version"] == "py311"
    readme = (ROOT / "README.md").read_text()
    assert "3.10" not in readme and "Python 3.11" in readme


def test_the_version_is_pyproject_s_everywhere_it_must_be_written():
    """Python reads it from the package metadata; the files that cannot import it are
    checked against it."""
    import components

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert components.__version__ == version
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r"^ARG VERSION=(\S+)$", dockerfile, re.M)[1] == version
    kustomization = (ROOT / "k8s" / "base" / "kustomization.yaml").read_text()
    assert set(re.findall(r"newTag: (\S+)", kustomization)) == {version}
    written = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "components").rglob("*.py")
        if f'"{version}"' in p.read_text()
    ]
    assert written == []
