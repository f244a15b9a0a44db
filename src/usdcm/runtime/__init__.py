"""What training, evaluation and inference all need to run a model: the device and AMP
policy (:mod:`~usdcm.runtime.device`), checkpoint files (:mod:`~usdcm.runtime.checkpoint`)
and batched prediction (:mod:`~usdcm.runtime.predict`).

Sits above ``usdcm.data`` and ``usdcm.models`` and below ``usdcm.training`` and
``usdcm.inference``; never imports either of them, the config or the CLI.
"""
