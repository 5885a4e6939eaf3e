"""Counterfactual record edits: only eligible participants, the model's own forward, calibrated and raw deltas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from experiments.data.embeddings import attach_embeddings
from experiments.data.participants import read_participants
from experiments.explain.counterfactuals import RECORD_EDITS, counterfactual_effects
from experiments.helm.datamodule import build_table
from experiments.helm.score import score_table
from llm_bridge.calibration import RiskCalibrator
from llm_bridge.model import HeLM, HeLMConfig
from tests.helm_fixtures import helm_setup

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cohort, emb, llm = helm_setup(tmp_path_factory.mktemp("cf"))
    participants, _ = read_participants(cohort)
    rows, _ = attach_embeddings(participants[participants["split"] == "test"], emb, needed=True)
    torch.manual_seed(0)
    helm = HeLM(llm, HeLMConfig(variant="text+spiro", num_soft_tokens=2, seed=0))
    helm.calibration = {"copd": RiskCalibrator("platt", {"slope": 0.8, "intercept": -1.5}, 100)}
    return helm, rows.reset_index(drop=True)


def test_edits_apply_to_the_eligible_and_move_the_risk(setup):
    helm, rows = setup
    per, summary = counterfactual_effects(helm, rows, batch_size=8, n_bootstrap=200, seed=0)
    smoking = per[per["edit"] == RECORD_EDITS[0].name]
    never = set(rows.loc[rows["smoking_status"] == "never", "eid"])
    assert set(smoking["eid"]) == never and set(smoking["trait"]) == {"copd"}
    assert set(summary["edit"]) == {e.name for e in RECORD_EDITS}
    age = summary[summary["edit"] == "age + 10 years"]
    assert set(age["trait"]) == {"asthma", "copd"} and (age["n"] == rows["age"].notna().sum()).all()
    assert (per["raw_after"] != per["raw_before"]).any()  # the record text changed, so the prompt did
    # "before" is the ordinary score; the calibrated columns go through the model's calibrators
    plain = score_table(helm, build_table(helm, rows), 8, calibrated=False).set_index("eid")
    np.testing.assert_allclose(smoking["raw_before"], plain.loc[smoking["eid"], "risk_copd"], atol=1e-6)
    np.testing.assert_allclose(smoking["risk_before"], helm.calibration["copd"].apply(smoking["raw_before"].to_numpy()))
    asthma = per[per["trait"] == "asthma"]
    np.testing.assert_array_equal(asthma["risk_before"], asthma["raw_before"])  # no asthma calibrator
    for r in summary.itertuples():
        d = per[(per["edit"] == r.edit) & (per["trait"] == r.trait)]
        assert r.mean_delta == pytest.approx((d["risk_after"] - d["risk_before"]).mean())
        assert r.ci_lo <= r.mean_delta <= r.ci_hi


def test_no_eligible_participant_gives_no_row(setup):
    helm, rows = setup
    _, summary = counterfactual_effects(helm, rows.assign(hay_fever_eczema=1), edits=RECORD_EDITS[1:2],
                                        n_bootstrap=50)
    assert summary.empty and list(summary.columns)[:3] == ["edit", "trait", "n"]
    assert isinstance(summary, pd.DataFrame)
