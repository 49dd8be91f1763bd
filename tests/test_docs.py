"""Documentation that can drift from the code is checked against it."""

import dataclasses
from pathlib import Path

from components.train.models import known_models
from components.vision.augment import PRESETS
from pipelines.stages import STAGES, config_class

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_config_key_is_documented():
    text = (DOCS / "configuration.md").read_text()
    for cls in (config_class(stage) for stage in STAGES):
        section = text.split(f"## {cls.section}\n", 1)[1].split("\n## ", 1)[0]
        for field in dataclasses.fields(cls):
            assert f"| `{field.name}` |" in section, (cls.section, field.name)


def test_every_model_and_preset_is_documented():
    text = (DOCS / "configuration.md").read_text()
    for name in PRESETS:
        assert f"`{name}`" in text, name
    for name in known_models():
        family = name.rstrip("0123456789SMB")
        assert name in text or family in text, name


def test_ci_calls_the_makefile_targets_the_readme_documents():
    import re

    import yaml

    root = DOCS.parent
    targets = set(re.findall(r"^([a-zA-Z0-9_-]+):", (root / "Makefile").read_text(), re.M))
    readme = (root / "README.md").read_text()
    workflow = yaml.safe_load((root / ".github" / "workflows" / "ci.yml").read_text())
    runs = [
        step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step
    ]
    called = set(re.findall(r"\bmake ([a-z0-9-]+)", "\n".join(runs)))
    called_by_ci_run = set(re.findall(r"\bmake ([a-z0-9-]+)", (root / ".ci" / "run").read_text()))
    assert "test" in called and "test" in called_by_ci_run
    for target in called | called_by_ci_run:
        assert target in targets, target
        assert f"make {target}" in readme, f"README does not document make {target}"
