"""``python -m experiments.cli``: the same as the ``spirolm`` console script."""

from experiments.cli.main import main

main()
