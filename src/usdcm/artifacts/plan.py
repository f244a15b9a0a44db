"""``plan.json``: what ``usdcm train`` decided before training, and why.

Owns the file's shape (:class:`PlanRecord` and its rows, :class:`Choice`), its schema version
(a top-level ``schema_version``), and reading and writing it (atomically). Written into the
run folder by ``usdcm train`` and ``usdcm demo``, printed by ``usdcm plan``. Holds counts,
sizes and class names of the data and a description of the machine, never a patient
identifier, a key or a path of an image. Never makes a plan: :mod:`usdcm.plan` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from usdcm.artifacts._json import read_json_object
from usdcm.artifacts._schema import SCHEMA_KEY, check_schema_version
from usdcm.atomic import atomic_write_text
from usdcm.errors import PlanFileError

PLAN_JSON = "plan.json"
"""The name the plan takes in a run folder."""

SCHEMA_VERSION = 1
"""The version of ``plan.json`` this usdcm writes and reads."""

_FIX = "make the plan again with this usdcm (`usdcm plan MANIFEST --json`)"


@dataclass(frozen=True)
class Choice:
    """One decision of a plan: a dotted config key, its value, and the rule that chose it.

    ``overridden`` is True when a config file or a command-line flag set the value; the
    ``rule`` then names that source and what the plan would have chosen.

    >>> Choice("optim.epochs", 12, "fits the 20 min budget").to_dict()["overridden"]
    False
    >>> Choice("", 1, "no key")
    Traceback (most recent call last):
    ...
    usdcm.errors.PlanFileError: a plan choice needs a dotted config key, found ''.
    """

    key: str
    value: Any
    rule: str
    overridden: bool = False

    def __post_init__(self) -> None:
        if not self.key or " " in self.key:
            message = f"a plan choice needs a dotted config key, found {self.key!r}."
            raise PlanFileError(message)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of one entry of ``choices``."""
        return {
            "key": self.key,
            "value": self.value,
            "rule": self.rule,
            "overridden": self.overridden,
        }

    @classmethod
    def from_dict(cls, value: Any) -> Choice:
        """Rebuild from :meth:`to_dict`'s object."""
        if not isinstance(value, dict) or "key" not in value or "value" not in value:
            message = f"a plan choice is {value!r}; expected an object with key and value."
            raise PlanFileError(message)
        overridden = value.get("overridden", False)
        if not isinstance(overridden, bool):
            message = f"a plan choice's overridden is {overridden!r}; expected true or false."
            raise PlanFileError(message)
        return cls(
            key=str(value["key"]),
            value=value["value"],
            rule=str(value.get("rule", "")),
            overridden=overridden,
        )


@dataclass(frozen=True)
class PlanRecord:
    """A plan as written to ``RUN/plan.json``.

    ``choices`` are the decisions in the order they were made; ``config`` is the complete
    resolved training config (every key, as ``RUN/config.yaml`` holds it), so a plan can be
    trained again exactly; ``fingerprint`` describes the data and the machine (counts,
    sizes, class names, device); ``estimated_seconds`` is the plan's estimate of the
    training time within ``time_budget_s``; ``notes`` are sentences the user should read
    (a fallback taken, a budget too small).
    """

    choices: tuple[Choice, ...]
    config: dict[str, Any]
    fingerprint: dict[str, Any] = field(default_factory=dict)
    time_budget_s: float = 0.0
    estimated_seconds: float = 0.0
    notes: tuple[str, ...] = ()
    manifest: str = ""
    usdcm_version: str = ""

    def __post_init__(self) -> None:
        keys = [choice.key for choice in self.choices]
        twice = sorted({key for key in keys if keys.count(key) > 1})
        if twice:
            message = f"a plan chooses {twice[0]} twice; each key is chosen once."
            raise PlanFileError(message)

    def choice(self, key: str) -> Choice:
        """The choice of ``key``.

        Raises
        ------
        KeyError
            The plan made no choice for ``key``.
        """
        for item in self.choices:
            if item.key == key:
                return item
        raise KeyError(key)

    @property
    def overridden(self) -> tuple[Choice, ...]:
        """The choices a config file or a flag set."""
        return tuple(choice for choice in self.choices if choice.overridden)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``plan.json``, with its ``schema_version``."""
        return {
            SCHEMA_KEY: SCHEMA_VERSION,
            "usdcm_version": self.usdcm_version,
            "manifest": self.manifest,
            "time_budget_s": self.time_budget_s,
            "estimated_seconds": self.estimated_seconds,
            "fingerprint": self.fingerprint,
            "notes": list(self.notes),
            "choices": [choice.to_dict() for choice in self.choices],
            "config": self.config,
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any], *, source: Path | str = PLAN_JSON) -> PlanRecord:
        """Rebuild from :meth:`to_dict`'s object, checking its schema version."""
        check_schema_version(
            value.get(SCHEMA_KEY), SCHEMA_VERSION, artifact="plan", source=source, fix=_FIX
        )
        try:
            config = value["config"]
            fingerprint = value.get("fingerprint") or {}
            if not isinstance(config, dict) or not isinstance(fingerprint, dict):
                message = "config and fingerprint must be objects"
                raise TypeError(message)
            return cls(
                choices=tuple(Choice.from_dict(item) for item in value["choices"]),
                config=config,
                fingerprint=fingerprint,
                time_budget_s=float(value.get("time_budget_s", 0.0)),
                estimated_seconds=float(value.get("estimated_seconds", 0.0)),
                notes=tuple(str(note) for note in value.get("notes", [])),
                manifest=str(value.get("manifest", "")),
                usdcm_version=str(value.get("usdcm_version", "")),
            )
        except (KeyError, TypeError, ValueError, PlanFileError) as err:
            message = f"The plan file {source} is malformed ({err}); {_FIX}."
            raise PlanFileError(message) from err

    def to_json(self) -> str:
        """The text of ``plan.json``: indented, keys in a fixed order."""
        return json.dumps(self.to_dict(), indent=1) + "\n"

    def write(self, path: Path) -> None:
        """Write ``path`` atomically."""
        atomic_write_text(path, self.to_json())

    @classmethod
    def read(cls, path: Path) -> PlanRecord:
        """Read ``path``, checking its schema version and its shape.

        Raises
        ------
        PlanFileError
            The file is missing, unreadable or malformed.
        SchemaVersionError
            The file was written by a usdcm with another plan schema.
        """
        loaded = read_json_object(
            path,
            name="plan file",
            error=PlanFileError,
            fix=_FIX,
            missing=f"No plan at {path}; {_FIX}.",
        )
        return cls.from_dict(loaded, source=path)
