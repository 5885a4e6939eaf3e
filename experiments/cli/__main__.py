"""``python -m experiments.cli``: the same as the ``spirolm`` console script."""

from experiments.cli.main import main

if __name__ == "__main__":  # scoring's worker processes import this module again; they must not run the CLI
    main()
