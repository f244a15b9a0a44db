"""Training: config, device and AMP choice, distributed set-up, checkpoints, the loop, the run.

Reads a manifest and NIfTI images through ``usdcm.data``; builds models from ``usdcm.models``.
"""
