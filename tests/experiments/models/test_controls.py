"""The stacking and probe control rows: who fits them, what they see, and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from biobank.cohort_io import usable
from experiments.baselines.controls import probe_scores, stacking_scores
from experiments.data.embeddings import EMBEDDING_COLUMNS
from llm_bridge.projector import fit_embedding_probe
from signals.errors import SpirolmInputError
from tests.baseline_fixtures import make_participants

TRAITS = ("copd", "asthma")


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    return make_participants(2000, seed=1)


def _encoder(p: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """An 'encoder' that sees only the spirogram (FEV1/FVC), for validation and test participants."""
    rng = np.random.default_rng(seed)
    rows = p[p["split"].isin(["val", "test"]) & usable(p)]
    z = rows["fev1_fvc_z"].to_numpy()
    return pd.DataFrame({"eid": rows["eid"].to_numpy(), "risk_copd": expit(-2.5 - 1.2 * z + rng.normal(0, 0.3, len(z))),
                         "risk_asthma": expit(-1.8 - 0.8 * z + rng.normal(0, 0.3, len(z)))})


def _embeddings(p: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = p[usable(p)]
    emb = rng.normal(0, 1, (len(rows), len(EMBEDDING_COLUMNS)))
    emb[:, 0] += 2 * rows["copd"].fillna(0).to_numpy(float)
    emb[:, 1] += 2 * rows["asthma"].fillna(0).to_numpy(float)
    frame = pd.DataFrame(emb.astype(np.float32), columns=list(EMBEDDING_COLUMNS))
    frame.insert(0, "eid", rows["eid"].to_numpy())
    return frame


def test_stacking_is_fitted_on_validation_and_scores_usable_test_people(cohort):
    enc = _encoder(cohort)
    out = stacking_scores(cohort, enc, TRAITS, seed=0)
    test = cohort[(cohort["split"] == "test") & usable(cohort)]
    assert sorted(out.scores["eid"]) == sorted(test["eid"])
    val = cohort[(cohort["split"] == "val") & usable(cohort)]
    assert out.fitted_on == {t: int(val[t].notna().sum()) for t in TRAITS}
    flipped = cohort.copy()
    train = flipped["split"] == "train"
    flipped.loc[train, "copd"] = 1 - flipped.loc[train, "copd"]  # train labels must not matter
    again = stacking_scores(flipped, enc, TRAITS, seed=0)
    pd.testing.assert_frame_equal(again.scores, out.scores)
    vmask = flipped["split"] == "val"
    flipped.loc[vmask, "copd"] = 1 - flipped.loc[vmask, "copd"]  # validation labels must
    assert not np.allclose(stacking_scores(flipped, enc, TRAITS, seed=0).scores["risk_copd"], out.scores["risk_copd"])


def test_stacking_adds_the_record_the_encoder_cannot_see():
    """Labels carry hay fever (asthma) and pack-years (COPD), the encoder only FEV1/FVC: the stacking row must
    beat it."""
    cohort = make_participants(4000, seed=1)  # ~800 validation participants to fit on
    enc = _encoder(cohort)
    out = stacking_scores(cohort, enc, TRAITS, seed=0).scores.merge(cohort, on="eid").merge(enc, on="eid",
                                                                                          suffixes=("", "_enc"))
    for trait in TRAITS:
        known = out[trait].notna()
        y = out.loc[known, trait].astype(int)
        assert roc_auc_score(y, out.loc[known, f"risk_{trait}"]) > roc_auc_score(y, out.loc[known, f"risk_{trait}_enc"]) + 0.015


def test_stacking_refuses_a_usable_participant_without_an_encoder_risk(cohort):
    enc = _encoder(cohort)
    gone = int(enc["eid"].iloc[3])
    with pytest.raises(SpirolmInputError, match="no encoder risk") as err:
        stacking_scores(cohort, enc[enc["eid"] != gone], TRAITS)
    assert str(gone) in str(err.value)


def test_probe_is_helms_teacher_fitted_on_train(cohort):
    emb = _embeddings(cohort)
    out = probe_scores(cohort, emb, TRAITS, balanced=True)
    joined = cohort[usable(cohort)].merge(emb, on="eid")
    train = joined[joined["split"] == "train"]
    labels = np.stack([train[t].astype("Float64").to_numpy(float, na_value=np.nan) for t in TRAITS], axis=1)
    w, b = fit_embedding_probe(train[list(EMBEDDING_COLUMNS)].to_numpy(np.float32), labels, balanced=True)
    test = joined[joined["split"] == "test"]
    expected = expit(test[list(EMBEDDING_COLUMNS)].to_numpy(np.float32) @ w.numpy().T + b.numpy())
    got = out.scores.set_index("eid").loc[test["eid"], ["risk_copd", "risk_asthma"]].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert out.fitted_on == {t: int(train[t].notna().sum()) for t in TRAITS}
