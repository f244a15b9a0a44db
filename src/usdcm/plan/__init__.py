"""The self-configuring plan: a fingerprint of the manifest and the machine, then rules.

Reads the manifest (through :mod:`usdcm.artifacts`) and the device (through
:mod:`usdcm.runtime`), and returns a training config with every choice and the rule that
made it. Never trains and never imports :mod:`usdcm.training`.
"""
