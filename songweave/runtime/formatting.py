"""Values as reports show them: numbers in console tables and model cards, and plain JSON (no
NaN or Infinity, which strict JSON readers refuse); and JSON read back as strictly."""

from __future__ import annotations

import json
import math
from typing import Any


def fmt(value: Any, digits: int = 3) -> str:
    """A figure for a table: floats with `digits` decimals, "n/a" for None and non-finite
    values, "yes"/"no" for booleans, anything else as str."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"
    return str(value)


def json_safe(value: Any) -> Any:
    """`value` as plain JSON types: non-finite floats become None (null), tuples lists, keys
    strings, and anything else not JSON its str."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def _refuse_constant(constant: str) -> Any:
    raise ValueError(f"non-finite number {constant} (JSON has no NaN or Infinity)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} overflows to infinity")
    return value


def loads_finite(text: str) -> Any:
    """JSON text -> value; NaN, Infinity, -Infinity and numbers too large for a float are a
    ValueError (one line), as strict JSON readers see them."""
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
