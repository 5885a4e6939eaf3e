"""Participant row -> text: the tabular half of a HeLM prompt.

HeLM serializes simple modalities (demographics, lifestyle, spirometry scalars) into text rather
than encoding them (Belyaeva et al. 2023). This module owns that text so that training, evaluation
and ``spirolm chat`` say exactly the same thing about a participant:

* one ``Label: value unit`` line per field, e.g. ``Age: 57 years``, ``BMI: 27.3 kg/m2``,
  ``Smoking: previous, 20 pack-years``, ``FEV1: 2.81 L (z = -1.2)``;
* units and rounding are fixed per field (a number printed with varying precision would give the
  LLM a spurious signal and change the tokenization between runs);
* a missing value prints as ``unknown`` - never dropped, never imputed;
* which fields appear, in which order, is a :class:`SerializerConfig`; the formatting rules carry a
  version (:data:`TEMPLATE_VERSION`) that checkpoints record, so a model is never scored on text
  formatted differently from its training text.

Serialization is vectorised per field with pandas string operations (no per-participant loop).
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from biobank.schema import CATEGORIES, NUMERIC_COVARIATES, SPIROMETRY_SCALARS
from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)

#: Version of the formatting rules below; bump on any change to labels, units or rounding.
TEMPLATE_VERSION = "v1"
UNKNOWN = "unknown"

_Formatter = Callable[[pd.DataFrame], pd.Series]


def _num(df: pd.DataFrame, col: str) -> pd.Series:
    """Column as float (absent column = all missing)."""
    if col not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype=float)
    return pd.to_numeric(df[col], errors="coerce").astype(float)


def _txt(df: pd.DataFrame, col: str) -> pd.Series:
    """Column as object strings with missing as None (absent column = all missing)."""
    if col not in df.columns:
        return pd.Series(None, index=df.index, dtype=object)
    s = df[col].astype(object)
    return s.where(s.notna() & (s.astype(str).str.strip() != ""), None)


def _fmt(values: pd.Series, digits: int, unit: str = "") -> pd.Series:
    """Fixed-precision numbers with a unit; NaN -> ``unknown`` (no unit)."""
    suffix = f" {unit}" if unit else ""
    text = values.map(lambda v: f"{v:.{digits}f}{suffix}" if np.isfinite(v) else UNKNOWN)
    return text.replace({"-0" + suffix: "0" + suffix})  # no negative zero after rounding


def _yes_no(values: pd.Series) -> pd.Series:
    return values.map(lambda v: UNKNOWN if not np.isfinite(v) else ("yes" if v >= 0.5 else "no"))


def _with_z(value: pd.Series, z: pd.Series, digits: int, unit: str) -> pd.Series:
    base = _fmt(value, digits, unit)
    zt = _fmt(z, 1)
    return base.where(value.isna(), base + " (z = " + zt + ")")


def _smoking(df: pd.DataFrame) -> pd.Series:
    status = _txt(df, "smoking_status")
    packs = _num(df, "pack_years")
    pack_text = _fmt(packs, 0).where(packs.isna(), _fmt(packs, 0) + " pack-years")
    pack_text = pack_text.where(packs.notna(), "unknown pack-years")
    out = status.fillna(UNKNOWN).astype(str)
    smoker = status.isin(["previous", "current"])
    return out.where(~smoker, out + ", " + pack_text)


def _ethnicity(df: pd.DataFrame) -> pd.Series:
    return _txt(df, "ethnicity").map(lambda v: UNKNOWN if v is None else str(v).replace("_", " "))


#: field name -> (label, formatter, source columns). Labels/units/rounding are the v1 template.
FIELDS: dict[str, tuple[str, _Formatter, tuple[str, ...]]] = {
    "age": ("Age", lambda d: _fmt(_num(d, "age"), 0, "years"), ("age",)),
    "sex": ("Sex", lambda d: _txt(d, "sex").fillna(UNKNOWN), ("sex",)),
    "height": ("Height", lambda d: _fmt(_num(d, "height_cm"), 0, "cm"), ("height_cm",)),
    "bmi": ("BMI", lambda d: _fmt(_num(d, "bmi"), 1, "kg/m2"), ("bmi",)),
    "smoking": ("Smoking", _smoking, ("smoking_status", "pack_years")),
    "ethnicity": ("Ethnicity", _ethnicity, ("ethnicity",)),
    "hay_fever_eczema": ("Hay fever or eczema", lambda d: _yes_no(_num(d, "hay_fever_eczema")), ("hay_fever_eczema",)),
    "parental_copd": ("Parent with COPD", lambda d: _yes_no(_num(d, "parental_copd")), ("parental_copd",)),
    "townsend": ("Townsend deprivation index", lambda d: _fmt(_num(d, "townsend"), 1), ("townsend",)),
    "pm25": ("PM2.5 exposure", lambda d: _fmt(_num(d, "pm25"), 1, "ug/m3"), ("pm25",)),
    "fev1": ("FEV1", lambda d: _with_z(_num(d, "fev1_l"), _num(d, "fev1_z"), 2, "L"), ("fev1_l", "fev1_z")),
    "fvc": ("FVC", lambda d: _with_z(_num(d, "fvc_l"), _num(d, "fvc_z"), 2, "L"), ("fvc_l", "fvc_z")),
    "fev1_fvc": ("FEV1/FVC", lambda d: _with_z(_num(d, "fev1_fvc"), _num(d, "fev1_fvc_z"), 2, ""),
                 ("fev1_fvc", "fev1_fvc_z")),
    "pef": ("PEF", lambda d: _fmt(_num(d, "pef_l_s"), 1, "L/s"), ("pef_l_s",)),
    "fef25_75": ("FEF25-75", lambda d: _fmt(_num(d, "fef25_75_l_s"), 2, "L/s"), ("fef25_75_l_s",)),
}

#: Covariates of the HeLM comparison (the ``tabular`` feature set of the baselines).
DEMOGRAPHIC_FIELDS = ("age", "sex", "height", "bmi", "smoking", "ethnicity", "hay_fever_eczema",
                      "parental_copd", "townsend", "pm25")
#: Best-blow spirometry scalars (the ``+spirometry`` part).
SPIROMETRY_FIELDS = ("fev1", "fvc", "fev1_fvc", "pef", "fef25_75")


@dataclass(frozen=True)
class SerializerConfig:
    """Which fields the record text holds and how lines are joined.

    Attributes:
        fields: field names from :data:`FIELDS`, in output order. The default is the covariates
            plus spirometry scalars, as in the issue's example (``FEV1: 2.81 L (z = -1.2)``).
        separator: joins the ``Label: value`` lines.
        version: template version; must equal :data:`TEMPLATE_VERSION` (older text is not reproducible).
    """

    __pydantic_config__ = {"extra": "forbid"}  # read strictly when nested in a YAML config

    fields: tuple[str, ...] = DEMOGRAPHIC_FIELDS + SPIROMETRY_FIELDS
    separator: str = "\n"
    version: str = TEMPLATE_VERSION

    def __post_init__(self) -> None:
        unknown = [f for f in self.fields if f not in FIELDS]
        if unknown:
            raise SpirolmInputError(f"unknown serializer field {unknown[0]!r}; known: {', '.join(FIELDS)}",
                                    field="serializer.fields")
        if not self.fields:
            raise SpirolmInputError("serializer needs at least one field", field="serializer.fields")
        if self.version != TEMPLATE_VERSION:
            raise SpirolmInputError(f"serializer template {self.version!r} is not supported by this spirolm "
                                    f"(current: {TEMPLATE_VERSION})", field="serializer.version")

    def fingerprint(self) -> str:
        """Short hash of the config (stored in checkpoints next to the version)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def _check_not_empty(df: pd.DataFrame, cfg: SerializerConfig) -> None:
    """A record whose every serialized field is missing would be scored on the prompt alone: refuse."""
    cols = sorted({c for f in cfg.fields for c in FIELDS[f][2]})
    present = [c for c in cols if c in df.columns]
    if not present:
        raise SpirolmInputError(f"none of the serialized columns ({', '.join(cols)}) are in the table",
                                field="participants")
    values = df[present].astype(object)
    empty = values.isna().all(axis=1) | values.map(lambda v: isinstance(v, str) and not v.strip()).all(axis=1)
    if empty.any():
        eid = df.loc[empty, "eid"].iloc[0] if "eid" in df.columns else None
        raise SpirolmInputError(
            f"{int(empty.sum())} record(s) have every serialized field missing ({', '.join(present)}); "
            "the LLM would score them on the question alone - drop them or supply data",
            eid=eid, field="participants",
        )


def serialize_records(df: pd.DataFrame, cfg: SerializerConfig = SerializerConfig()) -> pd.Series:
    """Text of every participant row, index-aligned with ``df``.

    Args:
        df: participant rows (the ``participants.parquet`` columns; absent optional columns print
            ``unknown``).
        cfg: fields and template version.

    Returns:
        Series of strings, one per row.

    Raises:
        SpirolmInputError: a row has every serialized field missing (named by ``eid``).
    """
    _check_not_empty(df, cfg)
    lines = [(FIELDS[f][0] + ": ") + FIELDS[f][1](df).astype(str) for f in cfg.fields]
    text = lines[0]
    for line in lines[1:]:
        text = text + cfg.separator + line
    return text


def serialize_record(row: pd.Series | dict, cfg: SerializerConfig = SerializerConfig()) -> str:
    """Text of one participant (convenience wrapper over :func:`serialize_records`)."""
    df = pd.DataFrame([dict(row)])
    return str(serialize_records(df, cfg).iloc[0])


# ----------------------------------------------------------------------------- numeric view (tabmlp)

TAB_NUMERIC = NUMERIC_COVARIATES + SPIROMETRY_SCALARS


@dataclass(frozen=True)
class TabularScaler:
    """Standardisation of the numeric record for the tabular-MLP variant, fitted on the train split.

    The MLP sees ``[standardised numerics (NaN -> 0), missing indicators, one-hot categoricals]``;
    missing values become an explicit indicator instead of silently imputed numbers.
    """

    columns: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, df: pd.DataFrame, columns: Sequence[str] = TAB_NUMERIC) -> TabularScaler:
        """Fit means/stds on ``df`` (the train split); all-missing columns get mean 0, std 1."""
        x = np.stack([_num(df, c).to_numpy() for c in columns], axis=1)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-missing columns are handled below
            mean = np.nan_to_num(np.nanmean(x, axis=0)) if len(x) else np.zeros(len(columns))
            std = np.nan_to_num(np.nanstd(x, axis=0), nan=1.0) if len(x) else np.ones(len(columns))
        std = np.where(std > 1e-8, std, 1.0)
        return cls(tuple(columns), tuple(float(v) for v in mean), tuple(float(v) for v in std))

    @property
    def width(self) -> int:
        """Number of features :meth:`transform` produces."""
        return 2 * len(self.columns) + sum(len(v) for v in CATEGORIES.values())

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """Feature matrix ``(n, width)`` float32, finite."""
        x = np.stack([_num(df, c).to_numpy() for c in self.columns], axis=1)
        missing = np.isnan(x)
        z = (x - np.asarray(self.mean)) / np.asarray(self.std)
        z[missing] = 0.0
        onehots = [(_txt(df, col).to_numpy()[:, None] == np.asarray(levels, dtype=object)[None, :])
                   for col, levels in CATEGORIES.items()]
        return np.concatenate([z, missing, *onehots], axis=1).astype(np.float32)

    def to_dict(self) -> dict[str, list]:
        """Plain dict for checkpoints."""
        return {"columns": list(self.columns), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, list]) -> TabularScaler:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(d["columns"]), tuple(d["mean"]), tuple(d["std"]))
