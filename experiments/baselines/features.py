"""Feature sets for the tabular baselines, as in the HeLM / PhE-T comparisons.

Three sets, named as on the command line:

* ``tabular`` - the EHR covariates (age, sex, height, BMI, smoking, pack-years, ethnicity, hay fever /
  eczema, parental COPD, Townsend, PM2.5);
* ``tabular+spirometry`` - plus the best-blow spirometry scalars and GLI-2012 z-scores from ``signals/``;
* ``tabular+embedding`` - plus the spirogram encoder's 128-d embedding (``emb_000..emb_127``), read
  from the Parquet file the encoder writes (``eid`` + ``emb_*``; QC-failed participants have none and
  get NaN, like their spirometry).

Why the checks: a column that is entirely missing would be dropped silently by scikit-learn's imputer
and the model would quietly become a different model. Users' exports differ in which optional fields
they carry (the importer writes an absent field as an all-missing column), so a *covariate* that is
missing for every participant of the cohort or of one split is dropped, loudly: a note and
:attr:`FeatureMatrix.dropped`, which :func:`experiments.baselines.fit.fit_baselines` logs as a warning
and the baselines stage records in MLflow and the run report.
An all-missing spirometry or embedding column means a broken upstream stage and stays an error naming
the column. Columns absent from the table are skipped with a note. Participants whose spirometry failed
QC have NaN spirometry; the models' imputers handle it with a missing indicator and the count is reported.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from biobank.schema import CATEGORICAL_COVARIATES, CATEGORIES, NUMERIC_COVARIATES, SPIROMETRY_SCALARS
from experiments.data.embeddings import EMBEDDING_COLUMNS
from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)

MISSING_CATEGORY = "missing"

TABULAR = "tabular"
TABULAR_SPIROMETRY = "tabular+spirometry"
TABULAR_EMBEDDING = "tabular+embedding"
FEATURE_SETS = (TABULAR, TABULAR_SPIROMETRY, TABULAR_EMBEDDING)


@dataclass(frozen=True)
class FeatureMatrix:
    """Model inputs of one feature set (no participant ids: safe to use as an MLflow input example).

    Attributes:
        X: features, one row per participant in the order of the participants table; numeric
            columns are float (NaN = missing), categorical columns are strings with missing values
            replaced by ``"missing"``.
        numeric: numeric column names.
        categorical: categorical column names.
        feature_set: the set's name.
        notes: human-readable notes (skipped or dropped covariates, QC-failed spirometry counts).
        n_missing_spirometry: participants with at least one missing spirometry value (QC fail).
        dropped: covariates dropped because they are missing for every participant of the cohort or
            of one split (e.g. a field the export does not carry).
    """

    X: pd.DataFrame
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    feature_set: str
    notes: tuple[str, ...]
    n_missing_spirometry: int = 0
    dropped: tuple[str, ...] = ()


def check_feature_set(name: str) -> str:
    """Return ``name`` if it is a known feature set, else raise naming the known ones."""
    if name not in FEATURE_SETS:
        raise SpirolmInputError(f"unknown feature set {name!r}; choose from {', '.join(FEATURE_SETS)}",
                                field="features")
    return name


def _present(participants: pd.DataFrame, columns: Sequence[str], notes: list[str]) -> list[str]:
    present = [c for c in columns if c in participants.columns]
    absent = [c for c in columns if c not in participants.columns]
    if absent:
        note = f"optional columns not in the cohort, skipped: {', '.join(absent)}"
        log.info(note)
        notes.append(note)
    return present


def _all_missing(series: pd.Series, col: str) -> bool:
    return bool(series.isna().all() if col not in CATEGORIES else (series == MISSING_CATEGORY).all())


def _check_not_all_missing(X: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    for col in columns:
        if _all_missing(X[col], col):
            raise SpirolmInputError(f"feature column is missing for every participant in {where}", field=col)


def _empty_covariates(participants: pd.DataFrame, cols: dict[str, pd.Series],
                      covariates: Sequence[str]) -> dict[str, str]:
    """``{covariate: where}`` for covariates missing for every participant of the cohort or of one split."""
    empty: dict[str, str] = {}
    split = participants["split"].to_numpy() if "split" in participants else None
    for col in covariates:
        values = cols[col]
        if _all_missing(values, col):
            empty[col] = "the cohort"
        elif split is not None:
            for name in pd.unique(split):
                if _all_missing(values[split == name], col):
                    empty[col] = f"split {name!r}"
                    break
    return empty


def _categorical(participants: pd.DataFrame, col: str) -> pd.Series:
    """Strings from the fixed vocabulary; missing -> ``"missing"``; anything else is an error."""
    s = participants[col].astype(object).where(participants[col].notna(), MISSING_CATEGORY)
    allowed = {*CATEGORIES[col], MISSING_CATEGORY}
    bad = ~s.isin(allowed)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise SpirolmInputError(
            f"value {s.iloc[i]!r} not in {sorted(CATEGORIES[col])}",
            eid=participants["eid"].iloc[i] if "eid" in participants else None, field=col,
        )
    return s.astype(str)


def _numeric(participants: pd.DataFrame, col: str) -> pd.Series:
    try:
        return pd.to_numeric(participants[col], errors="raise").astype(float)
    except (ValueError, TypeError) as exc:
        raise SpirolmInputError(f"non-numeric values ({exc})", field=col) from exc


def _join_embeddings(participants: pd.DataFrame, embeddings: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Embedding rows in the participants' order, and how many QC-failed participants have none.

    The encoder embeds every participant whose spirometry did not fail QC, so a QC-failed participant
    without an embedding gets NaN (imputed with a missing indicator, like their spirometry) and is
    counted; any other participant without an embedding is an error, because dropping or imputing them
    would hide a broken encoder export.
    """
    indexed = embeddings.set_index("eid")
    missing = ~participants["eid"].isin(indexed.index)
    failed = participants["qc_status"].eq("fail") if "qc_status" in participants else pd.Series(False, index=missing.index)
    unexplained = missing & ~failed
    if unexplained.any():
        raise SpirolmInputError(
            f"{int(unexplained.sum())} participants with usable spirometry have no spirogram embedding; "
            "re-run the encoder on this cohort",
            eid=participants.loc[unexplained, "eid"].iloc[0], field="emb_*",
        )
    joined = indexed.reindex(participants["eid"].to_numpy())[list(EMBEDDING_COLUMNS)].astype(float)
    return joined.reset_index(drop=True), int(missing.sum())


def build_features(
    participants: pd.DataFrame,
    feature_set: str,
    *,
    embeddings: pd.DataFrame | None = None,
) -> FeatureMatrix:
    """Build the model inputs of one feature set for the given participants.

    Args:
        participants: cohort participants table (docs/design.md); must hold ``eid``.
        feature_set: ``tabular``, ``tabular+spirometry`` or ``tabular+embedding``.
        embeddings: the validated embedding table (:func:`experiments.data.embeddings.load_embeddings`), required for
            ``tabular+embedding``.

    Returns:
        :class:`FeatureMatrix` with rows in the order of ``participants``.

    Covariates missing for every participant of the cohort or of one ``split`` are dropped
    (:attr:`FeatureMatrix.dropped`, and a note).

    Raises:
        SpirolmInputError: unknown feature set, embeddings needed but absent, a participant whose
            spirometry passed QC without an embedding, an all-missing spirometry or embedding column, no
            feature column left, a non-numeric value in a numeric column, or a category outside the
            design vocabulary.
    """
    check_feature_set(feature_set)
    notes: list[str] = []
    numeric = _present(participants, NUMERIC_COVARIATES, notes)
    categorical = _present(participants, CATEGORICAL_COVARIATES, notes)
    cols: dict[str, pd.Series] = {c: _numeric(participants, c).reset_index(drop=True) for c in numeric}
    cols |= {c: _categorical(participants, c).reset_index(drop=True) for c in categorical}
    empty = _empty_covariates(participants, cols, [*numeric, *categorical])
    for col, where in empty.items():
        note = (f"covariate {col} dropped: missing for every participant in {where} "
                "(e.g. a field the export does not carry); the models are fitted without it")
        log.info(note)  # fit_baselines warns once for all feature sets
        notes.append(note)
        del cols[col]
    numeric = [c for c in numeric if c not in empty]
    categorical = [c for c in categorical if c not in empty]
    n_missing_spiro = 0
    if feature_set == TABULAR_SPIROMETRY:
        spiro = _present(participants, SPIROMETRY_SCALARS, notes)
        if not spiro:
            raise SpirolmInputError("the cohort has no spirometry columns", field="fev1_l")
        cols |= {c: _numeric(participants, c) for c in spiro}
        numeric = [*numeric, *spiro]
        n_missing_spiro = int(pd.DataFrame({c: cols[c] for c in spiro}).isna().any(axis=1).sum())
        if n_missing_spiro:
            note = (f"{n_missing_spiro} of {len(participants)} participants have missing spirometry "
                    "(QC fail or absent); imputed by the model pipeline with a missing indicator")
            log.info(note)
            notes.append(note)
    X = pd.DataFrame({c: s.to_numpy() for c, s in cols.items()})
    if feature_set == TABULAR_EMBEDDING:
        if embeddings is None:
            raise SpirolmInputError("feature set 'tabular+embedding' needs --embeddings FILE (the encoder's "
                                    "eid + emb_000..emb_127 Parquet)", field="embeddings")
        emb, n_without = _join_embeddings(participants, embeddings)
        X = pd.concat([X, emb], axis=1)
        numeric = [*numeric, *EMBEDDING_COLUMNS]
        if n_without:
            note = (f"{n_without} of {len(participants)} QC-failed participants have no spirogram embedding; "
                    "imputed by the model pipeline with a missing indicator")
            log.info(note)
            notes.append(note)
    if not numeric and not categorical:
        raise SpirolmInputError("no feature columns found in the cohort", field=feature_set)
    _check_not_all_missing(X, [*numeric, *categorical], "the cohort")
    return FeatureMatrix(X=X, numeric=tuple(numeric), categorical=tuple(categorical), feature_set=feature_set,
                         notes=tuple(notes), n_missing_spirometry=n_missing_spiro, dropped=tuple(empty))


def check_split_features(features: FeatureMatrix, mask: np.ndarray, split: str) -> None:
    """Raise if a feature column is entirely missing in one split (the imputer would drop it silently).

    Covariates were already dropped by :func:`build_features` when ``split`` is in the table; this
    guards the spirometry and embedding columns.
    """
    _check_not_all_missing(features.X.loc[mask], [*features.numeric, *features.categorical], f"split {split!r}")


def encode_categoricals(X: pd.DataFrame, categorical: Sequence[str]) -> pd.DataFrame:
    """One-hot encode the categorical columns with the fixed vocabularies (for tree models).

    Why here and not in a Pipeline: the XGBoost baseline is logged as its booster (JSON, no pickle),
    which takes a purely numeric frame; this function is the documented, deterministic bridge from a
    :class:`FeatureMatrix` to that frame. Numeric NaN is kept (XGBoost learns a default direction).
    Columns are named ``<column>=<level>``; ``"missing"`` is all zeros.
    """
    out = X.drop(columns=list(categorical)).astype(float)
    for col in categorical:
        for level in CATEGORIES[col]:
            out[f"{col}={level}"] = (X[col] == level).astype(float)
    return out
