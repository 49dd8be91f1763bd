"""The layout rules of docs/design.md, read from the code itself."""

import re
import tomllib
from pathlib import Path

from components.infra.stages import STAGES
from tests.imports import imported

ROOT = Path(__file__).resolve().parents[1]
# the ground floor: what every stage shares, in two rooms
SHARED = ("infra", "vision")
STAGE_PACKAGES = sorted(
    p.name
    for p in (ROOT / "components").iterdir()
    if p.is_dir() and p.name not in (*SHARED, "__pycache__")
)


def imported_modules(path: Path) -> set[str]:
    """Imports anywhere in the file, importlib calls by literal or f-string name included
    (an f-string's fields read as `*`)."""
    return imported(path)


def test_every_stage_is_a_package_and_nothing_else_is():
    assert set(STAGES) <= set(STAGE_PACKAGES)
    # commands, not pipeline stages: predict, explain (Grad-CAM) and serve. The tuner
    # calls stages, so it lives above them (pipelines/tune/).
    assert set(STAGE_PACKAGES) - set(STAGES) == {"predict", "explain", "serve"}


def test_a_stage_package_imports_only_the_shared_packages_and_itself():
    """Stages meet at their contracts (artifact folders), not at each other's code."""
    offences = []
    for package in STAGE_PACKAGES:
        for path in sorted((ROOT / "components" / package).rglob("*.py")):
            for module in imported_modules(path):
                match = re.match(r"components\.(\w+|\*)", module)
                if match and match[1] not in (*SHARED, package):
                    offences.append(f"{path.relative_to(ROOT)} imports {module}")
    assert offences == []


def test_the_shared_packages_import_no_stage_not_even_by_name():
    """infra and vision import each other's modules at most (infra never vision), never a
    stage, a command or pipelines/, neither by `import` nor by importlib."""
    offences = [
        f"{path.relative_to(ROOT)} imports {module}"
        for shared in SHARED
        for path in sorted((ROOT / "components" / shared).rglob("*.py"))
        for module in imported_modules(path)
        if re.match(r"components\.(?!(infra|vision)\b)(\w+|\*)|pipelines\b", module)
    ]
    assert offences == []


def test_infra_is_the_lower_room():
    """Plumbing (config, storage, registry, tracking, reports) needs no image code."""
    offences = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sorted((ROOT / "components" / "infra").rglob("*.py"))
        for module in imported_modules(path)
        if re.match(r"components\.vision\b", module)
    ]
    assert offences == []


def test_the_import_reader_follows_importlib(tmp_path):
    """The checks above can fail: an import by f-string name is seen as a wildcard."""
    import textwrap

    source = textwrap.dedent(
        """
        import importlib
        def f(stage):
            return importlib.import_module(f"components.{stage}.config")
        __import__("components.train.core")
        """
    )
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    found = imported_modules(probe)
    assert "components.*.config" in found and "components.train.core" in found
    known = {"components.train.config", "components.push.config", "components.train.core"}
    assert imported(probe, "x", known) == known


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
