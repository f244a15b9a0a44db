"""Reading the JSON object of an artifact file, with one set of errors for every JSON artifact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from usdcm.errors import ArtifactError


def read_json_object(
    path: Path, *, name: str, error: type[ArtifactError], fix: str, missing: str | None = None
) -> dict[str, Any]:
    """The JSON object in ``path``, or ``error`` saying what is wrong and ``fix``.

    ``name`` is what the file is called in messages (``"plan file"``); ``missing``, when
    given, is the whole message for a file that does not exist (otherwise it counts as
    unreadable). The schema version is the caller's to check.

    >>> from usdcm.errors import PlanFileError
    >>> read_json_object(Path("/no.json"), name="plan file", error=PlanFileError,
    ...                  fix="re-plan")
    Traceback (most recent call last):
    ...
    usdcm.errors.PlanFileError: The plan file /no.json is unreadable (FileNotFoundError); ...
    """
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        message = missing or f"The {name} {path} is unreadable ({type(err).__name__}); {fix}."
        raise error(message) from err
    except (OSError, UnicodeDecodeError, ValueError) as err:
        message = f"The {name} {path} is unreadable ({type(err).__name__}); {fix}."
        raise error(message) from err
    if not isinstance(loaded, dict):
        message = f"The {name} {path} is not a JSON object; {fix}."
        raise error(message)
    return loaded
