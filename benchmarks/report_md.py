"""Shared bits of the quality benchmarks' reports (run as scripts: ``python benchmarks/<name>.py``).

Why here: ``curve_readouts.py`` prints a method-by-trait AUROC table, and every quality benchmark
turns a :class:`~signals.errors.SpirolmInputError` into one ``error:`` line instead of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence

from signals.errors import SpirolmInputError


def trait_table(first: str, rows: Mapping[str, Mapping[str, float]], traits: Sequence[str], digits: int = 3) -> list[str]:
    """Markdown lines of a ``row x trait`` table of numbers (``first`` heads the row-name column)."""
    lines = [f"| {first} | " + " | ".join(traits) + " |", "|---|" + "---|" * len(traits)]
    return lines + [f"| {name} | " + " | ".join(f"{values[t]:.{digits}f}" for t in traits) + " |"
                    for name, values in rows.items()]


def run_cli(main: Callable[[], int]) -> None:
    """Exit with ``main()``'s status; bad input (a named participant, field or file) exits 2 with one line."""
    try:
        sys.exit(main())
    except SpirolmInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
