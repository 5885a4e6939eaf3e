"""Fit every (baseline, feature set, trait) on the train split and score the test split.

Why labels are checked first: a trait with one class in a split would give an undefined AUROC or an
early-stopping set without signal; the problem is named here, before any model is fitted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from biobank.splits import SPLITS
from experiments.baselines import features as F
from experiments.baselines.models import BaselineModel, get_model
from experiments.data.predictions import scores_frame
from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)

#: What a baselines run writes next to its tables: ``{"dropped_features", "skipped", "notes"}`` of
#: :class:`FittedBaselines` (the run report shows the dropped covariates from it).
DATA_NOTES_FILE = "data_notes.json"


def check_labels(participants: pd.DataFrame, traits: Sequence[str]) -> dict[str, dict[str, int]]:
    """Validate splits and labels; return missing-label counts per trait and split (reported, not hidden)."""
    for col in ("eid", "split", *traits):
        if col not in participants.columns:
            raise SpirolmInputError("column missing from the participants table", field=col)
    bad = ~participants["split"].isin(SPLITS)
    if bad.any():
        raise SpirolmInputError(f"split {participants.loc[bad, 'split'].iloc[0]!r} is not train/val/test",
                                eid=participants.loc[bad, "eid"].iloc[0], field="split")
    missing_counts: dict[str, dict[str, int]] = {}
    for trait in traits:
        missing_counts[trait] = {}
        for split in SPLITS:
            y = participants.loc[participants["split"] == split, trait]
            labelled = pd.to_numeric(y).dropna()
            if labelled.nunique() < 2:
                raise SpirolmInputError(
                    f"trait {trait!r} has {'no labelled participants' if labelled.empty else 'a single class'} "
                    f"in split {split!r} ({len(labelled)} labelled, {int(labelled.sum())} cases)", field=trait)
            missing_counts[trait][split] = int(y.isna().sum())
    return missing_counts


@dataclass
class FittedRun:
    """One fitted (model, feature set, trait) with what is needed to log and explain it."""

    model: BaselineModel
    feature_set: str
    trait: str
    method: str
    features: F.FeatureMatrix
    train_mask: np.ndarray
    test_mask: np.ndarray
    n_train: int
    n_val: int


@dataclass
class FittedBaselines:
    """What :func:`fit_baselines` produced.

    Attributes:
        fitted: ``{(model, feature_set, trait): FittedRun}``.
        scores: ``{method: eid + risk_<trait>}`` for every test participant (the prediction-table schema).
        skipped: feature sets skipped, with the reason (e.g. no embeddings yet).
        notes: data notes (skipped or dropped covariates, QC-failed spirometry counts).
        dropped: covariates dropped as missing for every participant (of the cohort or of one split).
    """

    fitted: dict[tuple[str, str, str], FittedRun]
    scores: dict[str, pd.DataFrame]
    skipped: list[str]
    notes: list[str]
    dropped: tuple[str, ...] = ()


def method_name(model: str, feature_set: str) -> str:
    """Row label of a baseline in the comparison table, e.g. ``xgboost:tabular+spirometry``."""
    return f"{model}:{feature_set}"


def _configs(models: Sequence[str], seed: int, configs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Per-model configs with the pipeline seed applied (explicit configs keep their other fields)."""
    return {name: replace(get_model(name, (configs or {}).get(name)).cfg, seed=seed) for name in models}


def fit_baselines(
    participants: pd.DataFrame,
    traits: Sequence[str],
    *,
    feature_sets: Sequence[str],
    models: Sequence[str],
    embeddings: pd.DataFrame | None,
    seed: int,
    configs: Mapping[str, Any] | None = None,
) -> FittedBaselines:
    """Fit every (model, feature set, trait) on train (early stopping on val) and score test."""
    cfgs = _configs(models, seed, configs)
    split = participants["split"].to_numpy()
    test = split == "test"
    test_eids = participants.loc[test, "eid"].to_numpy()
    risks: dict[str, dict[str, np.ndarray]] = {}
    fitted: dict[tuple[str, str, str], FittedRun] = {}
    skipped: list[str] = []
    notes: list[str] = []
    dropped: dict[str, None] = {}
    for fs in feature_sets:
        F.check_feature_set(fs)
        if fs == F.TABULAR_EMBEDDING and embeddings is None:
            msg = ("feature set 'tabular+embedding' skipped: no spirogram embeddings given (--embeddings FILE, "
                   "written by the encoder); not faked")
            log.warning(msg)
            skipped.append(msg)
            continue
        fm = F.build_features(participants, fs, embeddings=embeddings)
        notes.extend(f"{fs}: {n}" for n in fm.notes)
        dropped |= dict.fromkeys(fm.dropped)
        for s in SPLITS:
            F.check_split_features(fm, split == s, s)
        for trait in traits:
            y = pd.to_numeric(participants[trait]).to_numpy(dtype=float)
            train = (split == "train") & ~np.isnan(y)
            val = (split == "val") & ~np.isnan(y)
            for name in models:
                model = get_model(name, cfgs[name]).fit(fm, train, y[train].astype(int), val, y[val].astype(int))
                method = method_name(name, fs)
                risks.setdefault(method, {})[trait] = model.predict_risk(fm.X.loc[test])
                fitted[(name, fs, trait)] = FittedRun(model, fs, trait, method, fm, train, test,
                                                      int(train.sum()), int(val.sum()))
                log.debug("fitted %s for %s on %d participants", method, trait, int(train.sum()))
    log.info("fitted %d baselines (%s x %s x %s)", len(fitted), "/".join(models), "/".join(
        fs for fs in feature_sets if fs in {k[1] for k in fitted}), "/".join(traits))
    if dropped:
        log.warning("covariates dropped, missing for every participant of the cohort or of one split (e.g. "
                    "fields the export does not carry): %s; the baselines are fitted without them", ", ".join(dropped))
    scores = {m: scores_frame(test_eids, by_trait) for m, by_trait in risks.items()}
    return FittedBaselines(fitted, scores, skipped, notes, tuple(dropped))
