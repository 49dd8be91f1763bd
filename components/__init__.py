"""Stage logic of visionpipe: plain Python, no Kubeflow import."""


def _version() -> str:
    """The one version: pyproject.toml's, read from the installed package's metadata (or
    from pyproject.toml itself when running from a checkout that is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("visionpipe")
    except PackageNotFoundError:
        import tomllib
        from pathlib import Path

        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        return tomllib.loads(pyproject.read_text())["project"]["version"]


__version__ = _version()
