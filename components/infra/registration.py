"""Named builders registered by decorator: augmentation presets, from-scratch models."""

from __future__ import annotations

from collections.abc import Callable


def registrar(
    table: dict[str, Callable], kind: str, allowed: tuple[str, ...] | None = None
) -> Callable[[str], Callable]:
    """`@register("name")` puts the decorated builder in `table` under that name, once;
    with `allowed` (components/vision/catalog.py), only a name listed there."""

    def register(name: str):
        def add(builder):
            if name in table:
                raise ValueError(f"{kind} {name!r} is registered twice")
            if allowed is not None and name not in allowed:
                raise ValueError(f"{kind} {name!r} is not in components/vision/catalog.py")
            table[name] = builder
            return builder

        return add

    return register
