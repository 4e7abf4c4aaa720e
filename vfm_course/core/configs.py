"""Frozen config dataclasses to and from the JSON a checkpoint's metadata holds.

Every model, recipe and augmentation is configured by a frozen dataclass; a checkpoint stores
it as a plain dict with a ``__type__`` key, and :func:`config_from_dict` rebuilds it with the
same validation a hand-written config gets.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any


def config_to_jsonable(config: Any) -> Any:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {"__type__": type(config).__name__, **dataclasses.asdict(config)}
    return config


def config_from_dict(cls: type, d: Any, what: str | None = None) -> Any:
    """Rebuild frozen config dataclass ``cls`` from its stored form, the inverse of how
    :func:`save_checkpoint` stores configs (``dataclasses.asdict`` plus a ``"__type__"`` key,
    through JSON, which turns tuples into lists). Nested config fields (a ``ViTConfig`` inside
    an ``MAEConfig``) are rebuilt recursively from the field's type annotation."""
    what = what or f"the {cls.__name__}"
    if isinstance(d, cls):
        return d
    if not isinstance(d, Mapping):
        raise TypeError(f"{what} must be a dict or a {cls.__name__}, got {type(d).__name__}")
    kind = d.get("__type__", cls.__name__)
    if kind != cls.__name__:
        raise ValueError(f"{what} describes a {kind}, not a {cls.__name__}")
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k != "__type__"}
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in fields if k not in names]
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and f.name not in fields
    ]
    if unknown or missing:
        raise ValueError(
            f"{what} does not fit {cls.__name__}: unknown field(s) {unknown}, missing {missing}; "
            f"its fields are: {', '.join(names)}"
        )
    hints = typing.get_type_hints(cls)
    for name, value in fields.items():
        sub = hints.get(name)
        if dataclasses.is_dataclass(sub) and isinstance(value, Mapping):
            fields[name] = config_from_dict(sub, value, f"the {name} config")
    return cls(**fields)
