"""Run the command line as ``python -m usdcm`` (also what ``torchrun -m usdcm`` starts)."""

from usdcm.cli.app import main

main()
