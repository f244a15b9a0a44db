"""The ``usdcm`` command line (typer): one module per command, heavy imports inside commands."""
