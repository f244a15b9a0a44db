"""Checkpoints: written atomically, read with ``weights_only=True`` only, checked for their keys.

Owns the checkpoint file format: a ``torch.save`` of a dict holding only tensors, dicts,
lists, tuples, str, int, float, bool and None, with :data:`REQUIRED_KEYS`. A file that holds
anything else (a pickled object, a function, code) is refused, never executed. Never decides
what goes into a checkpoint or when one is written; that is the training loop's job.
"""

from __future__ import annotations

import io
import pickle
import platform
from collections import OrderedDict
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from usdcm import digest
from usdcm.atomic import atomic_write_bytes
from usdcm.errors import CheckpointError

REQUIRED_KEYS = (
    "model_state",
    "config",
    "label_map",
    "normalization",
    "input_size",
    "manifest_sha256",
    "versions",
    "epoch",
)
"""Keys every usdcm checkpoint holds; a resume checkpoint may add optimizer state and more."""

VERSIONED_PACKAGES = ("usdcm", "torch", "monai", "pydicom", "numpy", "nibabel")
"""Distributions whose versions :func:`package_versions` records."""

_SCALARS = (str, int, float, bool, type(None))
_CONTAINERS = (dict, OrderedDict, list, tuple)


def _check_safe(value: Any, where: str) -> None:
    """Raise unless ``value`` is made only of types ``torch.load(weights_only=True)`` takes.

    Types are compared exactly: ``numpy.float64`` is a ``float`` subclass but pickles as a
    NumPy object, and ``torch.__version__`` is a ``str`` subclass.
    """
    kind = type(value)
    if kind in _SCALARS or isinstance(value, torch.Tensor):
        return
    if kind not in _CONTAINERS:
        message = (
            f"The checkpoint payload holds {kind.__module__}.{kind.__qualname__} at {where}; "
            "checkpoints hold only tensors, dicts, lists, tuples, str, int, float, bool and "
            "None. Convert it first (e.g. float(x), int(x), str(path), x.tolist())."
        )
        raise CheckpointError(message)
    if isinstance(value, dict):
        for key, item in value.items():
            if type(key) not in (str, int):
                message = (
                    f"The checkpoint payload has a key of type {type(key).__name__} at "
                    f"{where}; use str or int keys."
                )
                raise CheckpointError(message)
            _check_safe(item, f"{where}[{key!r}]")
    else:
        for index, item in enumerate(value):
            _check_safe(item, f"{where}[{index}]")


def _missing_keys(payload: dict[str, Any]) -> list[str]:
    return [key for key in REQUIRED_KEYS if key not in payload]


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically: a kill never leaves half a checkpoint.

    The payload is checked first: it must hold every key in :data:`REQUIRED_KEYS` and only
    values that :func:`load_checkpoint` can read back with ``weights_only=True`` (model,
    optimizer, scheduler and GradScaler state dicts all qualify). It is serialised in
    memory and then written with :func:`usdcm.atomic.atomic_write_bytes`.

    Parameters
    ----------
    path
        Destination, e.g. ``RUN/best.pt``; its folder is created if needed.
    payload
        The checkpoint; ``model_state`` should come from :func:`unwrap_model`.

    Raises
    ------
    CheckpointError
        A required key is missing, a value is of a type a safe load would refuse, or the
        file cannot be written.
    """
    missing = _missing_keys(payload)
    if missing:
        message = (
            f"The checkpoint for {path} lacks the key(s) {', '.join(missing)}; "
            f"a usdcm checkpoint holds {', '.join(REQUIRED_KEYS)}."
        )
        raise CheckpointError(message)
    _check_safe(payload, "payload")
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as err:
        message = f"Could not write the checkpoint {path} ({err}); check the folder and free space."
        raise CheckpointError(message) from err


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, safely.

    Only ``torch.load(..., weights_only=True)`` is used: its unpickler accepts tensors and
    plain containers and refuses everything else, so a crafted file cannot run code here.

    Parameters
    ----------
    path
        The checkpoint file.
    map_location
        Where tensors are loaded (``"cpu"`` by default; move the model afterwards).

    Returns
    -------
    dict
        The payload, with at least :data:`REQUIRED_KEYS`.

    Raises
    ------
    CheckpointError
        The file is missing or unreadable, is not a torch checkpoint (corrupt, truncated),
        holds code or objects a safe load refuses, or lacks required keys.
    """
    if not path.is_file():
        message = (
            f"No checkpoint at {path}; pass the best.pt or last.pt of a run folder written "
            "by `usdcm train`."
        )
        raise CheckpointError(message)
    try:
        loaded = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # The safe unpickler refused something: a global (a function, a class), an opcode it
        # does not allow, or bytes that are not a pickle at all. None of it was run.
        message = (
            f"The checkpoint {path} holds code or objects of unsupported types, or is corrupt, "
            "so it was not loaded and nothing in it was executed. Use a best.pt or last.pt "
            "written by `usdcm train`: copy it again, or retrain."
        )
        raise CheckpointError(message) from err
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        message = (
            f"The checkpoint {path} is corrupt, truncated or not a torch checkpoint "
            f"({type(err).__name__}); copy it again, or retrain."
        )
        raise CheckpointError(message) from err
    if not isinstance(loaded, dict):
        message = (
            f"The checkpoint {path} holds a {type(loaded).__name__}, not the dict "
            "`usdcm train` writes; pass a usdcm checkpoint."
        )
        raise CheckpointError(message)
    missing = _missing_keys(loaded)
    if missing:
        message = (
            f"The checkpoint {path} lacks the key(s) {', '.join(missing)}; it was not written "
            "by this version of `usdcm train`. Retrain to get a complete checkpoint."
        )
        raise CheckpointError(message)
    return loaded


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model under DDP and ``torch.compile`` wrappers, whose state dict to save.

    Its ``state_dict()`` keys have no ``module.`` or ``_orig_mod.`` prefix, so the saved
    weights load into a freshly built model.
    """
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
            continue
        inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def package_versions() -> dict[str, str]:
    """Versions of usdcm, torch, MONAI, pydicom, NumPy, nibabel and Python, as plain str.

    A package that is not installed is recorded as ``"not installed"``.

    Examples
    --------
    >>> sorted(package_versions())
    ['monai', 'nibabel', 'numpy', 'pydicom', 'python', 'torch', 'usdcm']
    """
    versions: dict[str, str] = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = str(metadata.version(name))
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["python"] = platform.python_version()
    return versions


def sha256_file(path: Path, *, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks of ``chunk_bytes``.

    :func:`usdcm.digest.sha256_file`, with a read error raised as :class:`CheckpointError`.

    Raises
    ------
    CheckpointError
        The file cannot be read.
    """
    try:
        return digest.sha256_file(path, chunk_bytes=chunk_bytes)
    except OSError as err:
        message = f"Could not read {path} to fingerprint it ({err}); check the path."
        raise CheckpointError(message) from err
