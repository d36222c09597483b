"""Checks of one value against a dataclass field's type and bounds, shared by every typed
configuration of the library (the model's, the codecs' options, the training flags).

A field carries its bounds as metadata: ``minimum`` (inclusive), ``above`` and ``below``
(exclusive), ``maximum`` (inclusive), ``choices``. Numbers must be finite; a bool is never an
int, and an int is a float only through ``coerce`` (JSON writes 1.0 as 1).

    check_value("dim", 16.7, int, {"minimum": 2})    # ValueError: dim must be int, got 16.7
    values = checked_fields(MDCTOptions, {"dim": 64}, "codec option")
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from typing import Any


def coerce(value: Any, kind: Any) -> Any:
    """An int where a float is expected becomes that float; nothing else is converted."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def base_type(kind: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed) of a field's annotation."""
    args = typing.get_args(kind)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), kind)
    return base, optional


def type_name(kind: Any) -> str:
    base, optional = base_type(kind)
    return getattr(base, "__name__", str(base)) + (" or none" if optional else "")


def check_value(
    name: str,
    value: Any,
    kind: Any,
    metadata: Mapping[str, Any],
    error: type[ValueError] = ValueError,
) -> None:
    """Raises `error` (one line naming `name`) when `value` does not fit the field's type,
    choices, finiteness or bounds."""
    base, optional = base_type(kind)
    if value is None and optional:
        return
    exact = isinstance(value, base) and not (base in (int, float) and isinstance(value, bool))
    if not exact:
        raise error(f"{name} must be {type_name(kind)}, got {value!r}")
    choices = metadata.get("choices")
    if choices and value not in choices:
        shown = ", ".join("none" if c is None else str(c) for c in choices)
        raise error(f"unknown {name} {value!r}; choose one of {shown}")
    if base not in (int, float):
        return
    if not math.isfinite(value):
        raise error(f"{name} must be finite, got {value!r}")
    minimum, maximum = metadata.get("minimum"), metadata.get("maximum")
    above, below = metadata.get("above"), metadata.get("below")
    if minimum is not None and value < minimum:
        raise error(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise error(f"{name} must be <= {maximum}, got {value}")
    if above is not None and value <= above:
        raise error(f"{name} must be > {above}, got {value}")
    if below is not None and value >= below:
        raise error(f"{name} must be < {below}, got {value}")


def checked_fields(
    cls: type, values: Mapping[str, Any], what: str, error: type[ValueError] = ValueError
) -> dict[str, Any]:
    """`values` checked against dataclass `cls`: every key a field, every value of the field's
    type and range (ints given for floats become floats). Raises `error` naming `what` and the
    key, e.g. "codec option dim must be int, got 16.7"."""
    fields = {item.name: item for item in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    checked = {}
    for key, value in values.items():
        if key not in fields:
            raise error(f"unknown {what} {key!r} (accepted: {', '.join(sorted(fields))})")
        value = coerce(value, base_type(hints[key])[0])
        check_value(f"{what} {key}", value, hints[key], fields[key].metadata, error)
        checked[key] = value
    return checked
