"""``usdcm plan``: the plan ``usdcm train`` would follow, printed without training.

Also owns what ``train`` shares with it: turning the flags into dotted overrides (and
naming the flag behind each) and the rich table of a plan.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from usdcm.cli._errors import user_errors
from usdcm.cli.train import TIME_BUDGET_HELP, DeviceChoice

if TYPE_CHECKING:
    from rich.console import Console

    from usdcm.artifacts.plan import PlanRecord
    from usdcm.plan import Plan


def flag_overrides(**flags: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Dotted overrides of the flags that were given, and the flag behind each.

    >>> flag_overrides(epochs=3, seed=None, device=None)
    ({'optim.epochs': 3}, {'optim.epochs': '--epochs'})
    """
    keys = {
        "device": "runtime.device",
        "epochs": "optim.epochs",
        "seed": "runtime.seed",
        "folds": "split.folds",
    }
    overrides: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for flag, value in flags.items():
        if value is None:
            continue
        key = keys[flag]
        overrides[key] = value.value if isinstance(value, DeviceChoice) else value
        sources[key] = f"--{flag}"
    return overrides, sources


def make_cli_plan(
    manifest: Path,
    *,
    time_budget: str | None,
    config: Path | None,
    processes: int = 1,
    **flags: Any,
) -> Plan:
    """The plan for ``usdcm train``/``usdcm plan``: flags > config file > plan."""
    from usdcm.plan import DEFAULT_TIME_BUDGET_S, make_plan, parse_time_budget

    budget = DEFAULT_TIME_BUDGET_S if time_budget is None else parse_time_budget(time_budget)
    overrides, sources = flag_overrides(**flags)
    return make_plan(
        manifest,
        time_budget_s=budget,
        overrides=overrides,
        override_sources=sources,
        config_path=config,
        processes=processes,
    )


def _value(value: Any) -> str:
    if isinstance(value, list) and len(value) == 2:
        return f"{value[0]} x {value[1]}"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _fingerprint_line(fingerprint: dict[str, Any]) -> str:
    data, device = fingerprint.get("data") or {}, fingerprint.get("device") or {}
    if not data:
        return ""
    classes = ", ".join(
        f"{name} {count}"
        for name, count in zip(data["classes"], data["class_counts"], strict=False)
    )
    frames = (
        "still images"
        if data["frames_max"] <= 1
        else f"frames 1-{data['frames_max']} (median {data['frames_median']:g})"
    )
    size = (
        f"median {data['median_height']} x {data['median_width']} px"
        if data["median_height"]
        else "size not recorded"
    )
    spacing = f", {data['median_spacing_mm']:g} mm/px" if data.get("median_spacing_mm") else ""
    channel = "1 channel" if data["channels"] == 1 else f"{data['channels']} channels"
    return (
        f"{data['images']} images of {data['patients']} patients ({classes}); {frames}; "
        f"{size}{spacing}; {channel}. Device: {device.get('name', '?')}, "
        f"{device.get('memory_gib', 0):g} GiB."
    )


def print_plan(record: PlanRecord, console: Console | None = None) -> None:
    """Print a plan: what it read, each choice with its rule, the estimate and any notes."""
    from rich.console import Console
    from rich.table import Table

    from usdcm.plan import format_duration

    console = console or Console()
    line = _fingerprint_line(record.fingerprint)
    if line:
        console.print(line, highlight=False)
    overridden = any(choice.overridden for choice in record.choices)
    caption = "* overridden: set by a flag or the config file" if overridden else None
    table = Table(title="usdcm plan", title_justify="left", caption=caption)
    table.add_column("key", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("rule", ratio=1)
    for choice in record.choices:
        key = f"[bold yellow]* {choice.key}[/]" if choice.overridden else f"  {choice.key}"
        table.add_row(key, _value(choice.value), choice.rule)
    console.print(table)
    if record.time_budget_s:
        console.print(
            f"estimated training time {format_duration(record.estimated_seconds)} "
            f"of a {format_duration(record.time_budget_s)} budget",
            highlight=False,
        )
    for note in record.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)


def plan_command(
    manifest: Annotated[Path, typer.Argument(help="manifest.csv written by `usdcm ingest`.")],
    time_budget: Annotated[str | None, typer.Option("--time-budget", help=TIME_BUDGET_HELP)] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="YAML config whose keys override the plan's choices."),
    ] = None,
    device: Annotated[DeviceChoice | None, typer.Option(help="Overrides runtime.device.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Overrides optim.epochs.")] = None,
    seed: Annotated[int | None, typer.Option(help="Overrides runtime.seed.")] = None,
    folds: Annotated[int | None, typer.Option(min=1, max=20, help="Overrides split.folds.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print plan.json instead of the table.")
    ] = False,
) -> None:
    """Print the plan `usdcm train` would follow for MANIFEST here, and why.

    The plan reads the manifest (images, patients, classes, frames, sizes)
    and the device, times a few training steps here, and chooses the model,
    weights, input size, batch size, epochs and recipe that fit the time
    budget. A flag wins over a --config file, which wins over the plan;
    overridden choices are marked.

    Example: usdcm plan data/manifest.csv --time-budget 30m
    """
    with user_errors():
        plan = make_cli_plan(
            manifest,
            time_budget=time_budget,
            config=config,
            device=device,
            epochs=epochs,
            seed=seed,
            folds=folds,
        )
        record = plan.to_record()
        if as_json:
            typer.echo(json.dumps(record.to_dict(), indent=1))
        else:
            print_plan(record)
