"""Shim: device choice and the AMP policy moved to :mod:`usdcm.runtime.device`."""

# shim: removed at integration
from usdcm.runtime.device import (  # noqa: F401
    AMP_OFF,
    DEVICE_CHOICES,
    AmpPolicy,
    DeviceError,
    amp_policy,
    autocast,
    configure_backends,
    describe_device,
    make_grad_scaler,
    maybe_compile,
    select_device,
    to_channels_last,
)

__all__ = [
    "AMP_OFF",
    "AmpPolicy",
    "DEVICE_CHOICES",
    "DeviceError",
    "amp_policy",
    "autocast",
    "configure_backends",
    "describe_device",
    "make_grad_scaler",
    "maybe_compile",
    "select_device",
    "to_channels_last",
]
