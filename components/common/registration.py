"""Named builders registered by decorator: augmentation presets, from-scratch models."""

from __future__ import annotations

from collections.abc import Callable


def registrar(table: dict[str, Callable], kind: str) -> Callable[[str], Callable]:
    """`@register("name")` puts the decorated builder in `table` under that name, once."""

    def register(name: str):
        def add(builder):
            if name in table:
                raise ValueError(f"{kind} {name!r} is registered twice")
            table[name] = builder
            return builder

        return add

    return register
