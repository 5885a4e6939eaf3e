"""The two "no LLM" reference rows every HeLM claim is measured against.

* **stacking** (``stacking:record+encoder``) - a logistic regression on the tabular record plus the
  spirogram encoder's logit. It is the control a reviewer asks for first: everything HeLM text+spiro
  sees, fused without a language model. Fitted on the **validation** split, because the encoder's
  risks on its own training split are in-sample and would be over-trusted.
* **probe** (``probe:embedding``) - the per-trait logistic regression of the encoder's 128-d embedding
  on the **train** split that HeLM's projector starts from and distils (the same function and class
  weighting), so "does HeLM do more than copy its teacher?" has a row to answer it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy.special import expit

from biobank.cohort_io import usable
from experiments.baselines.features import TABULAR, build_features
from experiments.baselines.models import LogRegConfig, get_model
from experiments.data.embeddings import EMBEDDING_COLUMNS
from experiments.data.participants import labels_as_float
from experiments.data.predictions import risk_column, scores_frame
from llm_bridge.calibration import clipped_logit
from llm_bridge.projector import fit_embedding_probe
from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)

STACKING = "stacking:record+encoder"
PROBE = "probe:embedding"
ENCODER_LOGIT = "encoder_logit"


@dataclass(frozen=True)
class ControlScores:
    """Test-split risks of one control and how many participants fitted it (per trait)."""

    scores: pd.DataFrame
    fitted_on: dict[str, int]


def stacking_scores(participants: pd.DataFrame, encoder: pd.DataFrame, traits: Sequence[str],
                    seed: int = 0) -> ControlScores:
    """Record + encoder logit, logistic regression fitted on validation, scored on test.

    Args:
        participants: cohort participants (``split``, traits, record columns).
        encoder: the encoder's ``eid + risk_<trait>`` on the validation and test splits.
        traits: traits to fit.
        seed: the regression's seed.

    Raises:
        SpirolmInputError: a validation or test participant with a usable spirogram lacks an encoder risk.
    """
    rows = participants[participants["split"].isin(["val", "test"]) & usable(participants)].reset_index(drop=True)
    joined = rows.merge(encoder, on="eid", how="left", validate="one_to_one")
    fm = build_features(joined, TABULAR)
    val = (joined["split"] == "val").to_numpy()
    test = ~val
    out, fitted_on = {}, {}
    for trait in traits:
        risk = joined[risk_column(trait)].to_numpy(dtype=float)
        if np.isnan(risk).any():
            raise SpirolmInputError("no encoder risk for a participant with a usable spirogram",
                                    eid=joined.loc[np.isnan(risk), "eid"].iloc[0], field=risk_column(trait))
        y = labels_as_float(joined[trait])
        fit_rows = val & ~np.isnan(y)
        X = fm.X.assign(**{ENCODER_LOGIT: clipped_logit(risk)})
        fm_t = replace(fm, X=X, numeric=(*fm.numeric, ENCODER_LOGIT), feature_set="record+encoder")
        model = get_model("logreg", LogRegConfig(seed=seed)).fit(fm_t, fit_rows, y[fit_rows], val, y[val])
        out[trait] = model.predict_risk(X.loc[test])
        fitted_on[trait] = int(fit_rows.sum())
    return ControlScores(scores_frame(joined.loc[test, "eid"].to_numpy(), out), fitted_on)


def probe_scores(participants: pd.DataFrame, embeddings: pd.DataFrame, traits: Sequence[str], *,
                 balanced: bool, split: str = "test") -> ControlScores:
    """HeLM's teacher probe (embedding logistic regression on the whole train split), scored on ``split``.

    ``balanced``: class weighting as HeLM's training uses it (``helm.train.class_weight``).
    """
    rows = participants[participants["split"].isin(["train", split]) & usable(participants)]
    joined = rows.merge(embeddings, on="eid", how="inner", validate="one_to_one").reset_index(drop=True)
    emb = joined[list(EMBEDDING_COLUMNS)].to_numpy(dtype=np.float32)
    train = (joined["split"] == "train").to_numpy()
    labels = np.stack([labels_as_float(joined[t]) for t in traits], axis=1)
    weight, bias = fit_embedding_probe(emb[train], labels[train], balanced=balanced, names=list(traits))
    risk = expit(emb[~train] @ weight.numpy().T + bias.numpy())
    fitted_on = {t: int((~np.isnan(labels[train, j])).sum()) for j, t in enumerate(traits)}
    return ControlScores(scores_frame(joined.loc[~train, "eid"].to_numpy(), dict(zip(traits, risk.T, strict=True))),
                         fitted_on)
