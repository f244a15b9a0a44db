"""Plain-text formatting of metric values: numbers, CIs, counts, free-form values.

Owns how a value reads in the report, ``"n/a"`` for anything missing or not finite; never
escapes for HTML or Markdown (the renderers do that) and never computes a metric.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

NA = "n/a"
"""What the report shows for a value that is missing, ``None`` or not finite."""


def as_float(value: object) -> float | None:
    """``value`` as a finite float, or ``None`` (for ``None``, NaN, inf, bools and non-numbers).

    >>> as_float(0.5), as_float(3), as_float(None), as_float(float("nan")), as_float("0.5")
    (0.5, 3.0, None, None, None)
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def as_int(value: object) -> int | None:
    """``value`` as an int when it is a whole finite number, else ``None``.

    >>> as_int(12), as_int(12.0), as_int(12.5), as_int(None)
    (12, 12, None, None)
    """
    number = as_float(value)
    if number is None or not number.is_integer():
        return None
    return int(number)


def get(mapping: object, *keys: str) -> Any:
    """The value at ``mapping[k1][k2]...``, or ``None`` where a level is missing or not a mapping.

    >>> get({"auc": {"value": 0.9}}, "auc", "value"), get({"auc": None}, "auc", "value")
    (0.9, None)
    """
    value: Any = mapping
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def fmt_num(value: object, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or ``"n/a"``.

    >>> fmt_num(0.91234), fmt_num(None), fmt_num(float("nan"), 2)
    ('0.912', 'n/a', 'n/a')
    """
    number = as_float(value)
    return NA if number is None else f"{number:.{digits}f}"


def fmt_int(value: object) -> str:
    """A count with thousands separators, or ``"n/a"``.

    >>> fmt_int(12345), fmt_int(None)
    ('12,345', 'n/a')
    """
    number = as_int(value)
    return NA if number is None else f"{number:,}"


def fmt_percent(value: object, digits: int = 1) -> str:
    """A proportion as a percentage, or ``"n/a"``.

    >>> fmt_percent(0.3), fmt_percent(None)
    ('30.0%', 'n/a')
    """
    number = as_float(value)
    return NA if number is None else f"{100 * number:.{digits}f}%"


def ci_bounds(ci: object) -> tuple[float, float] | None:
    """The two finite bounds of a CI ``[low, high]``, or ``None``.

    >>> ci_bounds([0.1, 0.3]), ci_bounds([None, 0.3]), ci_bounds(None)
    ((0.1, 0.3), None, None)
    """
    if not isinstance(ci, Sequence) or isinstance(ci, str) or len(ci) != 2:
        return None
    low, high = as_float(ci[0]), as_float(ci[1])
    if low is None or high is None:
        return None
    return low, high


def fmt_ci(ci: object, digits: int = 3) -> str:
    """A CI as ``"low–high"``, or ``"n/a"``.

    >>> fmt_ci([0.81, 0.9]), fmt_ci([None, None])
    ('0.810–0.900', 'n/a')
    """
    bounds = ci_bounds(ci)
    if bounds is None:
        return NA
    return f"{bounds[0]:.{digits}f}–{bounds[1]:.{digits}f}"


def fmt_estimate(entry: object, digits: int = 3) -> str:
    """An estimate ``{"value", "ci95"}`` as ``"value (95% CI low–high)"``, or ``"n/a"``.

    >>> fmt_estimate({"value": 0.9, "ci95": [0.85, 0.94]})
    '0.900 (95% CI 0.850–0.940)'
    >>> fmt_estimate({"value": 0.9, "ci95": None}), fmt_estimate({"value": None})
    ('0.900 (95% CI n/a)', 'n/a')
    """
    value = as_float(get(entry, "value"))
    if value is None:
        return NA
    return f"{value:.{digits}f} (95% CI {fmt_ci(get(entry, 'ci95'), digits)})"


def fmt_fraction(entry: object) -> str:
    """The ``k/n`` of a proportion estimate, or ``"n/a"``.

    >>> fmt_fraction({"k": 45, "n": 50}), fmt_fraction({"value": 0.9})
    ('45/50', 'n/a')
    """
    k, n = as_int(get(entry, "k")), as_int(get(entry, "n"))
    return NA if k is None or n is None else f"{k}/{n}"


def fmt_value(value: object) -> str:
    """Any free-form value (from a config or provenance dict) as one line of text.

    >>> fmt_value(None), fmt_value(True), fmt_value(1e-4), fmt_value([1, "a"]), fmt_value({"a": 1})
    ('n/a', 'true', '0.0001', '1, a', '{"a": 1}')
    """
    if value is None:
        return NA
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return NA if not math.isfinite(value) else f"{value:g}"
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return ", ".join(fmt_value(item) for item in value)
    return str(value)


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """The leaves of a nested mapping as ``(dotted.key, value)`` pairs, keys in their order.

    >>> flatten({"optim": {"lr": 0.001, "name": "adamw"}, "epochs": 20})
    [('optim.lr', 0.001), ('optim.name', 'adamw'), ('epochs', 20)]
    """
    pairs: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            pairs.extend(flatten(value, prefix=f"{name}."))
        else:
            pairs.append((name, value))
    return pairs


def count_items(value: object) -> list[tuple[str, str]]:
    """``(name, count)`` pairs of a ``{name: count}`` mapping or a list of names.

    >>> count_items({"GE": 120, "Philips": 80}), count_items(["site A"]), count_items(None)
    ([('GE', '120'), ('Philips', '80')], [('site A', 'n/a')], [])
    """
    if isinstance(value, Mapping):
        return [(str(name), fmt_int(count)) for name, count in value.items()]
    if isinstance(value, str):
        return [(value, NA)]
    if isinstance(value, Sequence):
        return [(fmt_value(item), NA) for item in value]
    return []
