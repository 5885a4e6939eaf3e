"""Read and write cohort directories (``participants.parquet``, ``blows.parquet``, ``qc_exclusions.csv``,
``cohort.json``), validating on load.

Why validate on every load: cohort directories outlive the code that wrote them and users build their own.
A file truncated by a full disk, or a hand-edited table with FEV1 in mL, must stop here with a message
naming the file, the participant and the column, not three modules later as a NaN AUROC.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow
import pyarrow.parquet as pq

from biobank import schema
from biobank.cohort_qc import zscore_equations
from signals.errors import SpirolmInputError

PARTICIPANTS_FILE = "participants.parquet"
BLOWS_FILE = "blows.parquet"
EXCLUSIONS_FILE = "qc_exclusions.csv"
COHORT_JSON = "cohort.json"
EXCLUSION_COLUMNS = ("eid", "instance", "blow_index", "level", "reason")


@dataclass
class Cohort:
    """A loaded cohort.

    Attributes:
        participants: one row per participant (docs/design.md).
        blows: one row per blow; ``None`` when loaded without blows.
        path: the cohort directory.
        traits: trait label columns (from ``cohort.json``; inferred from Int8 columns if absent).
        info: the parsed ``cohort.json`` (empty dict if absent).
    """

    participants: pd.DataFrame
    blows: pd.DataFrame | None
    path: Path
    traits: tuple[str, ...]
    info: dict


def read_cohort(directory: str | Path, *, validate: bool = True, blows: bool = True) -> Cohort:
    """Load a cohort directory.

    Args:
        directory: the cohort directory.
        validate: run the pandera schemas (leave on unless the caller validated already).
        blows: also load ``blows.parquet`` (the large table; several GB for full UKB).

    Raises:
        SpirolmInputError: missing/unreadable/truncated files or schema failures, naming file, eid, column.
    """
    directory = Path(directory)
    info = read_info(directory)
    participants = read_participants_file(directory, validate=validate, traits=info.get("traits"))
    blow_df = read_blows(directory, validate=validate) if blows else None
    return Cohort(participants, blow_df, directory, _traits(participants, info), info)


def usable(participants: pd.DataFrame) -> pd.Series:
    """Which participants have a usable spirogram: QC status not ``fail`` (a missing status counts as usable).

    Why one definition: every model is compared on the same people, so "usable" must mean the same thing
    to the encoder, the evaluation and the report.
    """
    if "qc_status" not in participants.columns:
        return pd.Series(True, index=participants.index)
    return participants["qc_status"].astype("string").fillna("") != "fail"


def read_info(directory: str | Path) -> dict:
    """``cohort.json`` as a dict (``{}`` if the directory has none, e.g. a hand-built cohort)."""
    path = Path(directory) / COHORT_JSON
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpirolmInputError(f"cohort.json is not valid JSON ({exc})", file=path) from None


def read_participants_file(
    directory: str | Path, *, validate: bool = True, traits: Sequence[str] | None = None
) -> pd.DataFrame:
    """Load only ``participants.parquet`` as stored (no blows); models read participants through
    :func:`experiments.data.participants.read_participants`.

    Args:
        directory: cohort directory.
        validate: run the participants schema.
        traits: trait columns to check; default: ``cohort.json`` ``traits``, else inferred.
    """
    directory = Path(directory)
    path = directory / PARTICIPANTS_FILE
    df = _read_parquet(path)
    if validate:
        if traits is None:
            traits = read_info(directory).get("traits")
        schema.validate_participants(df, path, traits)
    return df


def read_blows(
    directory: str | Path,
    *,
    eids: Sequence[int] | None = None,
    columns: Sequence[str] | None = None,
    validate: bool = True,
) -> pd.DataFrame:
    """Load ``blows.parquet``, optionally only some participants / columns (predicate pushdown).

    Args:
        directory: cohort directory.
        eids: keep only these participants.
        columns: keep only these columns (validation then checks the type of ``volume_ml`` only if kept).
        validate: run the blows schema (only when all columns are loaded).
    """
    path = Path(directory) / BLOWS_FILE
    filters = None if eids is None else [("eid", "in", [int(e) for e in eids])]
    df = _read_parquet(path, columns=columns, filters=filters)
    if validate and columns is None:
        schema.validate_blows(df, path)
    return df


def write_cohort(
    directory: str | Path,
    participants: pd.DataFrame,
    blows: pd.DataFrame,
    *,
    traits: Sequence[str],
    exclusions: pd.DataFrame | None = None,
    info: dict | None = None,
) -> Path:
    """Validate and write a cohort directory in one go (small cohorts, tests, QC re-runs).

    The importer streams large cohorts itself with the same arrow schemas (:mod:`biobank.schema`).
    ``info["reference_equations"]`` (which GLI equation produced each z column), when given, is checked
    and written in full form (``biobank.cohort_qc.zscore_equations``).

    Returns:
        The directory.
    """
    directory = Path(directory)
    meta = dict(info or {})
    if meta.get("reference_equations") is not None:  # checked before anything is written
        meta["reference_equations"] = zscore_equations(meta["reference_equations"])
    directory.mkdir(parents=True, exist_ok=True)
    schema.validate_participants(participants, directory / PARTICIPANTS_FILE, traits)
    schema.validate_blows(blows, directory / BLOWS_FILE)
    extra = [c for c in participants.columns if c not in schema.PARTICIPANT_COLUMNS and c not in traits]
    p_schema = schema.participants_arrow_schema(traits, extra)
    pq.write_table(pyarrow.Table.from_pandas(participants, schema=p_schema, preserve_index=False),
                   directory / PARTICIPANTS_FILE)
    b_extra = [(c, pyarrow.float64()) for c in blows.columns if c not in schema.BLOW_COLUMNS]
    b_schema = pyarrow.schema(list(schema.BLOW_ARROW_FIELDS) + b_extra)
    pq.write_table(pyarrow.Table.from_pandas(blows, schema=b_schema, preserve_index=False), directory / BLOWS_FILE)
    excl = exclusions if exclusions is not None else pd.DataFrame(columns=list(EXCLUSION_COLUMNS))
    excl.to_csv(directory / EXCLUSIONS_FILE, index=False)
    meta["traits"] = list(traits)
    write_info(directory, meta)
    return directory


def write_info(directory: str | Path, info: dict) -> None:
    """Write ``cohort.json`` (sorted keys, no timestamps: the same content gives the same bytes)."""
    (Path(directory) / COHORT_JSON).write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")


def _read_parquet(path: Path, columns: Sequence[str] | None = None, filters: list | None = None) -> pd.DataFrame:
    if not path.exists():
        raise SpirolmInputError("cohort file not found (run `spirolm cohort import-ukb` or `cohort synth`)",
                                file=path)
    try:
        table = pq.read_table(path, columns=None if columns is None else list(columns), filters=filters)
    except (pyarrow.ArrowException, OSError) as exc:
        raise SpirolmInputError(f"unreadable Parquet file (truncated or corrupt?): {exc}", file=path) from None
    return table.to_pandas(types_mapper=schema.arrow_to_pandas_types)


def _traits(participants: pd.DataFrame, info: dict) -> tuple[str, ...]:
    if "traits" in info:
        return tuple(info["traits"])
    return tuple(c for c in participants.columns
                 if c not in schema.PARTICIPANT_COLUMNS and str(participants[c].dtype) == "Int8")
