"""``python -m upgrader``: the same entry point as the ``upgrader`` script."""

from upgrader import cli

cli.main()
