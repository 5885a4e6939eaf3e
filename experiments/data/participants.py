"""The one participants reader of the model code, and seeded subsamples of it.

Why one reader: every model must see the same people with the same labels. Labels come back as
float32 with NaN for a missing label (every trainer masks NaN), the table is validated by the cohort
schema (:func:`biobank.cohort_io.read_cohort`), and "usable" means :func:`biobank.cohort_io.usable`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from biobank.cohort_io import PARTICIPANTS_FILE, read_cohort, usable
from signals.errors import SpirolmInputError


def read_participants(cohort_dir: str | Path, traits: Sequence[str] | None = None, *,
                      usable_only: bool = False) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Every participant column, with float labels, and the traits.

    Args:
        cohort_dir: cohort directory.
        traits: trait columns to use; ``None`` = the cohort's (``cohort.json``, else its 0/1 ``Int8`` columns).
        usable_only: keep only participants with a usable spirogram (:func:`biobank.cohort_io.usable`).

    Returns:
        ``(participants, traits)``: ``eid`` int64, ``split`` str, trait columns float32 (NaN = missing).

    Raises:
        SpirolmInputError: unreadable or invalid cohort, or a missing ``eid`` / ``split`` / trait column.
    """
    cohort = read_cohort(cohort_dir, blows=False)
    traits = tuple(cohort.traits) if traits is None else tuple(traits)
    df = cohort.participants.reset_index(drop=True).copy()
    for col in ("eid", "split", *traits):
        if col not in df.columns:
            raise SpirolmInputError("column missing from the participants table", file=Path(cohort_dir) / PARTICIPANTS_FILE,
                                    field=col)
    if usable_only:
        df = df.loc[usable(df)].reset_index(drop=True)
    df["eid"] = df["eid"].astype("int64")
    df["split"] = df["split"].astype(str)
    for t in traits:
        df[t] = labels_as_float(df[t])
    return df, traits


def labels_as_float(values: pd.Series) -> np.ndarray:
    """0/1 labels (nullable ints, floats or objects) as float32 with NaN for missing."""
    return pd.to_numeric(values).astype("Float64").to_numpy(dtype=np.float32, na_value=np.nan)


def seeded_rows(n_total: int, n: int | None, seed: int | Sequence[int]) -> np.ndarray | None:
    """Sorted row positions of a seeded subsample of ``n`` out of ``n_total`` (None: keep every row).

    ``seed`` may be a sequence (e.g. ``[seed, salt]``) so that independent draws do not move together.
    """
    if n is None or n_total <= n:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_total, n, replace=False))


def subsample(df: pd.DataFrame, n: int | None, seed: int | Sequence[int]) -> pd.DataFrame:
    """A seeded subsample of ``n`` rows in their original order (all rows when ``n`` is None or larger)."""
    rows = seeded_rows(len(df), n, seed)
    return df.reset_index(drop=True) if rows is None else df.iloc[rows].reset_index(drop=True)
