"""``usdcm synth``: write a synthetic ultrasound PACS export (placeholder, filled in next)."""

from __future__ import annotations


def synth_command() -> None:
    """Write a synthetic ultrasound PACS export."""
