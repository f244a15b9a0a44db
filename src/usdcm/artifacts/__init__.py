"""The typed artifacts that cross a stage boundary, one module each.

Every stage reads its input and writes its output through these modules, never through
another stage: ``ingest`` writes the manifest that ``train`` reads, ``train`` writes the
splits and checkpoint that ``evaluate`` reads, and so on. Each artifact is a frozen
dataclass, checked when built, with ``read()``/``write()`` and a schema version that its
reader checks. This package imports nothing of usdcm above :mod:`usdcm.atomic` and
:mod:`usdcm.errors`.
"""
