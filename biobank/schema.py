"""Pandera schemas for the cohort tables (``participants.parquet``, ``blows.parquet``).

Why validate on load: every model downstream trusts these columns. A participants table with
``fev1_l = 2800`` (mL written where litres are expected) or ``height_cm = 1.76`` (metres) would silently
wreck GLI z-scores and model inputs, so the plausible ranges double as unit checks, and failures are
reported with the participant ids, the column and the check, never as a pandera traceback.

Columns and units follow ``docs/design.md`` ("biobank/"). Trait columns (``asthma``, ``copd``, ...) are
nullable ``Int8`` 0/1; ``true_risk_<trait>`` columns (synthetic cohorts) are probabilities in [0, 1]
(the generator rounds to 7 decimals, so 0 and 1 occur).
The arrow schemas here are what the importer writes, so chunk-by-chunk writes agree on types.

Spirometry ranges are ``signals.plausibility.LIMITS``, the limits QC rejects blows by. Participant
columns come only from accepted blows, and only accepted blows are range-checked in the blows table
(a rejected blow keeps its measured values, however odd, next to its reason), so on an importer's
output these checks can fail only through a bug, not through input data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pandera.pandas as pa
import pyarrow

from biobank.splits import SPLITS
from signals.errors import SpirolmInputError
from signals.plausibility import LIMITS

SEXES = ("female", "male")
SMOKING = ("never", "previous", "current")
ETHNICITIES = ("white", "mixed", "south_asian", "black", "chinese", "other")
GLI_ETHNICITIES = ("caucasian", "african_american", "ne_asian", "se_asian", "other")
QC_STATUSES = ("pass", "warn", "fail")
BLOW_STATUSES = ("accept", "reject")
TRUE_RISK_PREFIX = "true_risk_"

# The covariate vocabulary: every model input built from the record (tabular features, the
# serialized text, the tabular-MLP view, the scoring input) takes its columns and levels from here.
CATEGORIES: dict[str, tuple[str, ...]] = {"sex": SEXES, "smoking_status": SMOKING, "ethnicity": ETHNICITIES}
"""Categorical covariates and their fixed levels (fixed, not learnt, so a logged model scores new data with
exactly the columns it was trained on)."""
NUMERIC_COVARIATES = ("age", "height_cm", "bmi", "pack_years", "hay_fever_eczema", "parental_copd", "townsend", "pm25")
CATEGORICAL_COVARIATES = tuple(CATEGORIES)
SPIROMETRY_SCALARS = ("fev1_l", "fvc_l", "fev1_fvc", "pef_l_s", "fef25_75_l_s", "fev1_z", "fvc_z", "fev1_fvc_z")
"""Best-blow spirometry scalars and their GLI z-scores (participant-level)."""
RECORD_COLUMNS = ("age", "sex", "height_cm", "bmi", "smoking_status", "pack_years", "ethnicity", "gli_ethnicity",
                  "hay_fever_eczema", "parental_copd", "townsend", "pm25")
"""The covariates of one participant's record, in table order (``gli_ethnicity`` feeds the GLI z-scores)."""

RANGES: dict[str, tuple[float, float]] = {
    "age": (18.0, 100.0),
    "height_cm": (100.0, 230.0),
    "bmi": (10.0, 80.0),
    **{name: (LIMITS[name].low, LIMITS[name].high)
       for name in ("fev1_l", "fvc_l", "fev1_fvc", "pef_l_s", "fef25_75_l_s")},
}
"""Plausible adult ranges; values outside are almost always unit errors (brief, cohort_io). The
spirometry ranges are the QC plausibility limits (``signals.plausibility``)."""
BLOW_RANGE_COLUMNS = ("fev1_l", "fvc_l", "fev1_fvc", "pef_l_s")
"""Blow measures range-checked on accepted blows."""

UNIT_HINTS: dict[str, str] = {
    "fev1_l": "values look like mL where litres are expected (e.g. 2.8, not 2800)",
    "fvc_l": "values look like mL where litres are expected (e.g. 3.6, not 3600)",
    "height_cm": "values look like metres or inches where centimetres are expected (e.g. 176, not 1.76)",
    "fev1_fvc": "values look like a percentage where a ratio is expected (e.g. 0.78, not 78)",
    "pef_l_s": "PEF is in L/s (e.g. 8.5, not 510 L/min)",
    "bmi": "BMI is kg/m^2 (e.g. 26.5)",
    "age": "age is in years",
}

_HISTORY = ("hay_fever_eczema", "parental_copd")

PARTICIPANT_ARROW_FIELDS: tuple[tuple[str, pyarrow.DataType], ...] = (
    ("eid", pyarrow.int64()),
    ("age", pyarrow.float64()),
    ("sex", pyarrow.string()),
    ("height_cm", pyarrow.float64()),
    ("bmi", pyarrow.float64()),
    ("smoking_status", pyarrow.string()),
    ("pack_years", pyarrow.float64()),
    ("ethnicity", pyarrow.string()),
    ("gli_ethnicity", pyarrow.string()),
    ("hay_fever_eczema", pyarrow.int8()),
    ("parental_copd", pyarrow.int8()),
    ("townsend", pyarrow.float64()),
    ("pm25", pyarrow.float64()),
    ("fev1_l", pyarrow.float64()),
    ("fvc_l", pyarrow.float64()),
    ("fev1_fvc", pyarrow.float64()),
    ("pef_l_s", pyarrow.float64()),
    ("fef25_75_l_s", pyarrow.float64()),
    ("fev1_z", pyarrow.float64()),
    ("fvc_z", pyarrow.float64()),
    ("fev1_fvc_z", pyarrow.float64()),
    ("qc_status", pyarrow.string()),
    ("qc_reason", pyarrow.string()),
    ("n_blows", pyarrow.int64()),
    ("split", pyarrow.string()),
)
PARTICIPANT_COLUMNS: tuple[str, ...] = tuple(name for name, _ in PARTICIPANT_ARROW_FIELDS)

BLOW_ARROW_FIELDS: tuple[tuple[str, pyarrow.DataType], ...] = (
    ("eid", pyarrow.int64()),
    ("instance", pyarrow.int64()),
    ("blow_index", pyarrow.int64()),
    ("blow_order", pyarrow.int32()),
    ("volume_ml", pyarrow.list_(pyarrow.int32())),
    ("qc_status", pyarrow.string()),
    ("qc_reason", pyarrow.string()),
    ("is_best", pyarrow.bool_()),
    ("fev1_l", pyarrow.float64()),
    ("fvc_l", pyarrow.float64()),
    ("fev1_fvc", pyarrow.float64()),
    ("pef_l_s", pyarrow.float64()),
    ("bev_ml", pyarrow.float64()),
    ("fet_s", pyarrow.float64()),
)
BLOW_COLUMNS: tuple[str, ...] = tuple(name for name, _ in BLOW_ARROW_FIELDS)


def participants_arrow_schema(traits: Sequence[str], extra_float: Sequence[str] = ()) -> pyarrow.Schema:
    """Arrow schema of ``participants.parquet``: base columns, then traits (int8), then extra floats
    (``true_risk_*``, UKB best-measure pass-throughs)."""
    fields = list(PARTICIPANT_ARROW_FIELDS)
    fields += [(t, pyarrow.int8()) for t in traits]
    fields += [(c, pyarrow.float64()) for c in extra_float]
    return pyarrow.schema(fields)


def blows_arrow_schema() -> pyarrow.Schema:
    """Arrow schema of ``blows.parquet`` (``volume_ml`` is ``list<int32>``, null for unparseable blows)."""
    return pyarrow.schema(list(BLOW_ARROW_FIELDS))


def arrow_to_pandas_types(dtype: pyarrow.DataType) -> object | None:
    """``types_mapper`` for ``Table.to_pandas`` keeping nullable small ints (traits, blow_order) as
    pandas nullable ints instead of float64."""
    if dtype == pyarrow.int8():
        return pd.Int8Dtype()
    if dtype == pyarrow.int32():
        return pd.Int32Dtype()
    return None


# --------------------------------------------------------------------------------------------------
# Pandera schemas.

def _float(col: str, nullable: bool = True, checks: list | None = None) -> pa.Column:
    checks = list(checks or [])
    if col in RANGES:
        lo, hi = RANGES[col]
        checks.append(pa.Check.in_range(lo, hi))
    return pa.Column("float64", checks, nullable=nullable)


def _category(values: Sequence[str], nullable: bool) -> pa.Column:
    return pa.Column(None, pa.Check.isin(list(values)), nullable=nullable)


def participants_schema(traits: Sequence[str] = ()) -> pa.DataFrameSchema:
    """Pandera schema for participants (extra columns allowed; ``true_risk_*`` checked by regex)."""
    flag = pa.Column("Int8", pa.Check.isin([0, 1]), nullable=True)
    columns: dict[str, pa.Column] = {
        "eid": pa.Column("int64", unique=True, nullable=False),
        "age": _float("age"),
        "sex": _category(SEXES, nullable=True),
        "height_cm": _float("height_cm"),
        "bmi": _float("bmi"),
        "smoking_status": _category(SMOKING, nullable=True),
        "pack_years": _float("pack_years", checks=[pa.Check.ge(0)]),
        "ethnicity": _category(ETHNICITIES, nullable=True),
        "gli_ethnicity": _category(GLI_ETHNICITIES, nullable=False),
        "hay_fever_eczema": flag,
        "parental_copd": flag,
        "townsend": _float("townsend"),
        "pm25": _float("pm25", checks=[pa.Check.ge(0)]),
        "fev1_l": _float("fev1_l"),
        "fvc_l": _float("fvc_l"),
        "fev1_fvc": _float("fev1_fvc"),
        "pef_l_s": _float("pef_l_s"),
        "fef25_75_l_s": _float("fef25_75_l_s"),
        "fev1_z": _float("fev1_z"),
        "fvc_z": _float("fvc_z"),
        "fev1_fvc_z": _float("fev1_fvc_z"),
        "qc_status": _category(QC_STATUSES, nullable=False),
        "qc_reason": pa.Column(None, nullable=False),
        "n_blows": pa.Column("int64", pa.Check.ge(0), nullable=False),
        "split": _category(SPLITS, nullable=False),
        TRUE_RISK_PREFIX + ".*": pa.Column(
            "float64", pa.Check.in_range(0.0, 1.0),
            nullable=True, regex=True, required=False),
    }
    for t in traits:
        columns[t] = pa.Column("Int8", pa.Check.isin([0, 1]), nullable=True)
    return pa.DataFrameSchema(columns, strict=False, coerce=False)


def blows_schema() -> pa.DataFrameSchema:
    """Pandera schema for blows: types and codes. Measures are range-checked only on accepted blows
    (:func:`accepted_blows_schema`): a rejected blow can be odd, that is why it was rejected."""
    measure = pa.Column("float64", nullable=True)
    return pa.DataFrameSchema(
        {
            "eid": pa.Column("int64", nullable=False),
            "instance": pa.Column("int64", pa.Check.ge(0), nullable=False),
            "blow_index": pa.Column("int64", pa.Check.ge(0), nullable=False),
            "blow_order": pa.Column("Int32", pa.Check.ge(0), nullable=True),
            "volume_ml": pa.Column(None, nullable=True),
            "qc_status": _category(BLOW_STATUSES, nullable=False),
            "qc_reason": pa.Column(None, nullable=False),
            "is_best": pa.Column("bool", nullable=False),
            "fev1_l": measure,
            "fvc_l": measure,
            "fev1_fvc": measure,
            "pef_l_s": measure,
            "bev_ml": measure,
            "fet_s": pa.Column("float64", pa.Check.ge(0), nullable=True),
        },
        unique=["eid", "instance", "blow_index"],
        strict=False,
        coerce=False,
    )


def accepted_blows_schema() -> pa.DataFrameSchema:
    """Range checks of accepted blows' measures (the QC plausibility limits)."""
    return pa.DataFrameSchema({c: _float(c) for c in BLOW_RANGE_COLUMNS}, strict=False, coerce=False)


# --------------------------------------------------------------------------------------------------
# Validation entry points.

class SchemaFailures:
    """Failed checks collected over several validations, reported as one error.

    Why: the importer validates its output chunk by chunk; stopping at the first failing chunk would
    name only that chunk's participants. Passing one collector to every chunk's validation gives an
    error that counts every offending participant of the file and names the first few.
    """

    def __init__(self, preview: int = 5) -> None:
        self._preview = preview
        self._checks: dict[tuple[str, str, str], dict] = {}

    def __bool__(self) -> bool:
        return bool(self._checks)

    def add(self, table: str, column: str, check: str, eids: Sequence, values: Sequence = ()) -> None:
        """Record that ``check`` failed on ``table``'s ``column`` for ``eids`` (distinct within this call)."""
        entry = self._checks.setdefault((table, str(column), str(check)), {"count": 0, "eids": [], "values": []})
        eids = list(dict.fromkeys(eids))
        entry["count"] += len(eids)
        entry["eids"] += eids[: max(0, self._preview - len(entry["eids"]))]
        entry["values"] += list(values)[: max(0, 3 - len(entry["values"]))]

    def add_pandera(self, table: str, cases: pd.DataFrame, df: pd.DataFrame) -> None:
        """Record pandera's failure cases of ``df`` (its ``index`` column points into ``df``)."""
        for (column, check), group in cases.groupby(["column", "check"], sort=False, dropna=False):
            idx = [i for i in group["index"].tolist() if i is not None and not pd.isna(i)]
            eids = df.loc[idx, "eid"].tolist() if idx and "eid" in df.columns else []
            values = group["failure_case"].tolist()[:3]
            if not eids:  # a column-level failure (missing column, wrong dtype): no row to name
                self._checks.setdefault((table, str(column), str(check)), {"count": 0, "eids": [], "values": values})
                continue
            self.add(table, column, check, eids, values)

    def error(self, source: str | Path | None = None) -> SpirolmInputError:
        """One readable error: every failing (column, check) with its participant count and first ids."""
        if not self._checks:
            raise ValueError("no failed check recorded")
        problems = []
        for (table, column, check), e in self._checks.items():
            text = f"{table} column {column} fails {check}"
            if e["count"]:
                text += f" for {e['count']} participant{'s' if e['count'] != 1 else ''}"
            details = [f"values {e['values']}"] if e["values"] else []
            if e["eids"]:
                more = e["count"] - len(e["eids"])
                details.append("participants " + ", ".join(str(i) for i in e["eids"])
                               + (f" and {more} more" if more > 0 else ""))
            text += f" ({', '.join(details)})" if details else ""
            hint = UNIT_HINTS.get(column) if check.startswith("in_range") else None
            if hint:
                text += f": {hint}"
            problems.append(text)
        (_, first_column, _), first = next(iter(self._checks.items()))
        first_eid = first["eids"][0] if first["eids"] else None
        return SpirolmInputError("; ".join(problems), file=source, field=first_column, eid=first_eid)


def validate_participants(
    df: pd.DataFrame,
    source: str | Path | None = None,
    traits: Sequence[str] | None = None,
    *,
    failures: SchemaFailures | None = None,
) -> pd.DataFrame:
    """Validate a participants table.

    Args:
        df: the table.
        source: file it came from (named in errors).
        traits: trait columns to check as 0/1; ``None`` = every extra ``Int8`` column.
        failures: collect failed checks here instead of raising (missing columns still raise).

    Returns:
        ``df`` unchanged.

    Raises:
        SpirolmInputError: missing columns, or failed checks, naming eids, column, check and a unit hint.
    """
    _require(df, PARTICIPANT_COLUMNS, source)
    if traits is None:
        traits = [c for c in df.columns if c not in PARTICIPANT_COLUMNS and str(df[c].dtype) == "Int8"]
    else:
        _require(df, tuple(traits), source)
    _check(df, source, failures, lambda f: _run("participants", participants_schema(traits), df, f))
    return df


def validate_blows(
    df: pd.DataFrame, source: str | Path | None = None, *, failures: SchemaFailures | None = None
) -> pd.DataFrame:
    """Validate a blows table (types, codes, unique ``(eid, instance, blow_index)``, one best per eid,
    accepted blows' measures within the plausibility limits).

    Args:
        df: the table.
        source: file it came from (named in errors).
        failures: collect failed checks here instead of raising (missing columns still raise).

    Raises:
        SpirolmInputError: naming eids, column and check.
    """
    _require(df, BLOW_COLUMNS, source)

    def checks(f: SchemaFailures) -> None:
        _run("blows", blows_schema(), df, f)
        _run("accepted blows", accepted_blows_schema(), df[df["qc_status"] == "accept"], f, rows_of=df)
        best = df.loc[df["is_best"].astype(bool), "eid"]
        dup = best[best.duplicated()]
        if len(dup):
            f.add("blows", "is_best", "more than one is_best blow", dup.unique().tolist())

    _check(df, source, failures, checks)
    return df


def _check(df: pd.DataFrame, source: str | Path | None, failures: SchemaFailures | None, run) -> None:
    own = SchemaFailures() if failures is None else failures
    run(own)
    if failures is None and own:
        raise own.error(source)


def _require(df: pd.DataFrame, columns: Sequence[str], source: str | Path | None) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SpirolmInputError(f"missing required column(s) {missing}", file=source, field=missing[0])


def _run(table: str, schema: pa.DataFrameSchema, df: pd.DataFrame, failures: SchemaFailures,
         rows_of: pd.DataFrame | None = None) -> None:
    try:
        schema.validate(df, lazy=True)
    except pa.errors.SchemaErrors as exc:
        failures.add_pandera(table, exc.failure_cases, df if rows_of is None else rows_of)
