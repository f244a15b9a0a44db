"""The self-configuring plan: a fingerprint of the manifest and the machine, then rules.

Reads the manifest (through :mod:`usdcm.artifacts`) and the device (through
:mod:`usdcm.runtime`), and returns a training config with every choice and the rule that
made it. Never trains and never imports :mod:`usdcm.training`.
"""

from usdcm.artifacts.plan import PLAN_JSON, Choice, PlanRecord
from usdcm.plan.fingerprint import DataFingerprint, DeviceFingerprint, Fingerprint
from usdcm.plan.planner import Plan, make_plan, override_config, plan_from_record
from usdcm.plan.rules import DEFAULT_TIME_BUDGET_S, format_duration, parse_time_budget

__all__ = [
    "DEFAULT_TIME_BUDGET_S",
    "PLAN_JSON",
    "Choice",
    "DataFingerprint",
    "DeviceFingerprint",
    "Fingerprint",
    "Plan",
    "PlanRecord",
    "format_duration",
    "make_plan",
    "override_config",
    "parse_time_budget",
    "plan_from_record",
]
