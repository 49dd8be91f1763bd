"""Typed, validated stage configs.

Each stage declares a dataclass that derives from `StageConfig`. Values come
from a YAML/JSON file and from `--set key=value` overrides; both go through
`from_dict`, which refuses unknown keys and values of the wrong type or
outside the allowed choices, naming the key, the value received and what is
allowed (the big_vision rule: unhandled config args fail loudly).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

import yaml

from components.infra.errors import UserError
from components.infra.stages import STAGES

C = TypeVar("C", bound="StageConfig")


@dataclasses.dataclass
class StageConfig:
    """Base of every stage config: construction from untrusted dicts, and back."""

    section: ClassVar[str] = ""

    @classmethod
    def from_dict(cls: type[C], raw: dict[str, Any] | None) -> C:
        raw = dict(raw or {})
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(raw) - set(names))
        if unknown:
            key = unknown[0]
            raise UserError(
                f"unknown {cls.section} config key {key!r} (value {raw[key]!r}); "
                f"{nearest(str(key), names)}allowed keys: {', '.join(names)}"
            )
        values = {name: _coerce(cls.section, name, raw[name], hints[name]) for name in raw}
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Range checks a type cannot express; raise `UserError` naming the key."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self: C, **changes: Any) -> C:
        return type(self).from_dict({**self.to_dict(), **changes})

    def check_locations(self, *keys: str) -> None:
        """Refuse, with one line, a location setting the storage layer cannot serve."""
        from components.infra import storage

        for key in keys:
            value = getattr(self, key)
            if value and value not in ("none", "imagenet"):
                storage.check_location(value, f"{self.section} config {key}")

    def check(self, condition: bool, key: str, allowed: str) -> None:
        if not condition:
            value = getattr(self, key)
            raise UserError(f"{self.section} config {key}={value!r} is invalid; {allowed}")


def nearest(key: str, names: list[str]) -> str:
    """ "did you mean 'epochs'? " for the closest allowed name (difflib), or ""."""
    import difflib

    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


class Typed(str):
    """The literal text of a `--set` value. It becomes what the key's type says: a `str`
    key keeps exactly the text (`1.10` stays `1.10`, `010` stays `010`), a number key
    gets the decimal number (`010` is 10, `1e-3` is 0.001), a bool key true/false/yes/no."""


def parse_overrides(pairs: list[str] | None) -> dict[str, Typed]:
    """Turn `["a=1", "train.epochs=3"]` into `{"a": "1", "train.epochs": "3"}`, each value
    kept as typed until `from_dict` reads it with the key's type."""
    out: dict[str, Typed] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = Typed(value.strip())
    return out


NULLS = ("null", "~", "none", "None")
TRUE, FALSE = ("true", "yes", "on"), ("false", "no", "off")


def _from_text(text: str, hint: Any) -> Any:
    """A `--set` text as the value `hint` takes (raises ValueError when it cannot be)."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [o for o in get_args(hint) if o is not type(None)]
        if text in NULLS and str not in options:
            return None
        for option in options:
            try:
                return _from_text(text, option)
            except ValueError:
                continue
        raise ValueError(text)
    if origin is Literal:
        for choice in get_args(hint):
            try:
                if _from_text(text, type(choice)) == choice:
                    return choice
            except ValueError:
                continue
        raise ValueError(text)
    if origin in (list, tuple) or origin is dict or hint is dict or hint is Any:
        try:
            parsed = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            return text
        return parsed
    if hint is bool:
        if text.lower() in TRUE:
            return True
        if text.lower() in FALSE:
            return False
        raise ValueError(text)
    if hint is int:
        number = float(text) if "." in text or "e" in text.lower() else int(text, 10)
        if isinstance(number, float) and not number.is_integer():
            raise ValueError(text)
        return int(number)
    if hint is float:
        return float(text)
    if hint is str:
        return str(text)
    raise ValueError(text)


def load_config_file(path: str | Path | None) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict (empty when no file is given)."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} does not exist; pass an existing YAML file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UserError(f"config file {str(path)!r} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {str(path)!r} must hold a mapping, got {type(data).__name__}")
    return data


# a whole-run config has one section per stage, `tune` (the search space of
# `visionpipe tune`, which `run` accepts and ignores so a tuned config runs as it is), and
# `tracking` (where MLflow runs go, components/infra/tracking.py)
SECTIONS = (*STAGES, "tune", "tracking")


def split_sections(merged: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Split a whole-run config (`{"train": {...}}` or dotted `{"train.epochs": 3}`) by stage."""
    out: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for key, value in merged.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise UserError(f"config section {key!r} must be a mapping, got {value!r}")
            out[key].update(value)
            continue
        section, dot, rest = key.partition(".")
        if not dot or section not in SECTIONS:
            raise UserError(
                f"unknown config key {key!r}; {nearest(section, list(SECTIONS))}"
                "whole-run keys are <stage>.<key> "
                f"with stage one of {', '.join(SECTIONS)} (e.g. train.epochs=5)"
            )
        out[section][rest] = value
    return out


def stage_config(cls: type[C], config_file: str | None, overrides: list[str] | None) -> C:
    """The config of one stage from a file (whole-run or stage-only) and `--set` overrides."""
    data = load_config_file(config_file)
    if any(key in SECTIONS for key in data):
        data = split_sections(data)[cls.section]
    sets = parse_overrides(overrides)
    prefix = cls.section + "."
    sets = {key.removeprefix(prefix): value for key, value in sets.items()}
    return cls.from_dict({**data, **sets})


def _coerce(section: str, key: str, value: Any, hint: Any) -> Any:
    """Check `value` against the annotation `hint`, converting the lossless cases."""

    def refuse(expected: str) -> UserError:
        shown = str(value) if isinstance(value, Typed) else repr(value)
        return UserError(f"{section} config {key}={shown} is invalid; expected {expected}")

    if isinstance(value, Typed):  # a --set text: read it as this key's type
        try:
            value = _from_text(str(value), hint)
        except ValueError:
            raise refuse(_describe_all(hint)) from None
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(section, key, value, option)
            except UserError:
                continue  # the next option may take it; the message names them all
        raise refuse(_describe_all(hint))
    if origin is Literal:
        choices = get_args(hint)
        if value in choices:
            return value
        raise refuse(f"one of {', '.join(repr(c) for c in choices)}")
    if origin in (list, tuple):
        (item,) = get_args(hint)[:1] or (Any,)
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            raise refuse(f"a list of {_describe(item)}")
        items = [_coerce(section, key, v, item) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise refuse("a mapping")
        return dict(value)
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise refuse("true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise refuse("an integer")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise refuse("a number")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise refuse("a string")
    raise refuse(_describe(hint))


def _describe_all(hint: Any) -> str:
    if get_origin(hint) in (Union, types.UnionType):
        return " or ".join(_describe(o) for o in get_args(hint))
    return _describe(hint)


def _describe(hint: Any) -> str:
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(c) for c in get_args(hint))
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))
