"""The one prediction-table schema every model writes and every consumer reads.

In memory a model's scores are a frame of ``eid`` + ``risk_<trait>`` (float, NaN where a trait was not
scored); a set of models is ``{method: frame}``. On disk (``predictions*.parquet``) the frames are
stacked in long form with a ``method`` column (and optionally ``split``). Why ``risk_<trait>`` and not
the bare trait name: prediction tables are joined with participant tables, whose ``<trait>`` columns
are the labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import pandera.pandas as pa

from signals.errors import SpirolmInputError

RISK_PREFIX = "risk_"
METHOD = "method"

_SCHEMA = pa.DataFrameSchema(
    {
        "eid": pa.Column("int64"),
        METHOD: pa.Column(str),
        "split": pa.Column(str, required=False),
        rf"^{RISK_PREFIX}.+$": pa.Column(float, pa.Check.in_range(0.0, 1.0), nullable=True, regex=True),
    },
    strict=True,
    unique=["eid", METHOD],
    coerce=True,
)


def risk_column(trait: str) -> str:
    """Column of one trait's risk: ``risk_<trait>``."""
    return f"{RISK_PREFIX}{trait}"


def risk_columns(traits: Sequence[str]) -> list[str]:
    """``risk_<trait>`` for every trait, in order."""
    return [risk_column(t) for t in traits]


def scored_traits(frame: pd.DataFrame) -> tuple[str, ...]:
    """Traits a score frame holds (its ``risk_<trait>`` columns), in column order."""
    return tuple(c.removeprefix(RISK_PREFIX) for c in frame.columns if c.startswith(RISK_PREFIX))


def scores_frame(eids: Sequence[int], risks: Mapping[str, Sequence[float]]) -> pd.DataFrame:
    """A score frame from ``{trait: risks}`` aligned with ``eids``."""
    return pd.DataFrame({"eid": pd.Series(eids, dtype="int64").to_numpy(),
                         **{risk_column(t): pd.Series(v, dtype=float).to_numpy() for t, v in risks.items()}})


def stack_predictions(scores: Mapping[str, pd.DataFrame], split: str | None = None) -> pd.DataFrame:
    """``{method: frame}`` stacked into the long on-disk table (validated)."""
    frames = []
    for method, frame in scores.items():
        part = frame.copy()
        part.insert(1, METHOD, method)
        if split is not None:
            part.insert(2, "split", split)
        frames.append(part)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["eid", METHOD])
    return validate_predictions(table)


def validate_predictions(table: pd.DataFrame, file: str | Path | None = None) -> pd.DataFrame:
    """Check a long prediction table: ids, method names, risks in [0, 1] or missing, no duplicate rows.

    Raises:
        SpirolmInputError: naming the file, column and the first offending participant.
    """
    try:
        return _SCHEMA.validate(table, lazy=False)
    except (pa.errors.SchemaError, pa.errors.SchemaErrors) as exc:
        cases = getattr(exc, "failure_cases", None)
        first = None if cases is None or len(cases) == 0 else cases.iloc[0].get("failure_case")
        column = getattr(getattr(exc, "schema", None), "name", None)
        raise SpirolmInputError(f"not a prediction table: {str(exc).splitlines()[0]}", file=file,
                                field=column if isinstance(column, str) else None,
                                eid=first if column == "eid" else None) from None


def write_predictions(path: str | Path, scores: Mapping[str, pd.DataFrame], split: str | None = None) -> Path:
    """Write ``{method: frame}`` as one long Parquet table."""
    path = Path(path)
    stack_predictions(scores, split).to_parquet(path, index=False)
    return path


def read_predictions(path: str | Path, split: str | None = None) -> dict[str, pd.DataFrame]:
    """``{method: frame[eid, risk_<trait>...]}`` from a long prediction table, methods in file order.

    Args:
        path: the Parquet file.
        split: keep only rows of this split (the table must have a ``split`` column).

    Raises:
        SpirolmInputError: missing or invalid file.
    """
    path = Path(path)
    if not path.exists():
        raise SpirolmInputError("prediction table not found", file=path)
    table = validate_predictions(pd.read_parquet(path), file=path)
    if split is not None:
        if "split" not in table.columns:
            raise SpirolmInputError("prediction table has no split column", file=path, field="split")
        table = table[table["split"] == split]
    out: dict[str, pd.DataFrame] = {}
    for method in pd.unique(table[METHOD]):
        part = table[table[METHOD] == method].drop(columns=[c for c in (METHOD, "split") if c in table.columns])
        out[str(method)] = part.dropna(axis=1, how="all").reset_index(drop=True)
    return out
