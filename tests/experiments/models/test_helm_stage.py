"""The main job's HeLM stage on a tiny cohort with a tiny Llama (seconds, not the real LLM)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from experiments.evaluate.harness import ORACLE, compare_methods
from experiments.helm.config import ROW_TEXT_SPIRO, ROW_ZERO_SHOT, HeLMTrainConfig, uncalibrated_row
from experiments.helm.score import untrained_text_scores
from experiments.helm.train import select_participants
from experiments.pipeline.config import HeLMStageConfig
from experiments.pipeline.helm_stage import (
    PREDICTIONS_FILE,
    SUMMARY_FILE,
    helm_stage_scores,
    load_stage_scores,
    restrict_to_eids,
)
from llm_bridge.model import HeLM, HeLMConfig
from signals.errors import SpirolmInputError
from tests.helm_fixtures import helm_setup

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("helm_stage")
    cohort, frame, llm = helm_setup(root)
    emb_path = root / "embeddings.parquet"
    frame.to_parquet(emb_path, index=False)
    return cohort, emb_path, llm


SMALL = HeLMStageConfig(rows=(ROW_ZERO_SHOT, ROW_TEXT_SPIRO),
                        train=HeLMTrainConfig(max_train=40, max_val=10, max_eval=12, max_epochs=1, batch_size=8,
                                              score_batch_size=8, log_mlflow=False))
RISKS = ["risk_asthma", "risk_copd"]


def summary_calibration(stage_dir) -> dict:
    """The calibrators (or the reason for none) each trained row recorded in the stage summary."""
    return json.loads((stage_dir / SUMMARY_FILE).read_text())["calibration"]


def test_stage_scores_every_row_on_the_same_test_subsample(setup, tmp_path):
    cohort, emb_path, llm = setup
    result = helm_stage_scores(SMALL, cohort, emb_path, tmp_path, seed=0, llm=llm)
    p = pd.read_parquet(cohort / "participants.parquet").set_index("eid")
    assert len(result.eval_eids) == 12 and result.counts["test"] == 12
    assert (p.loc[result.eval_eids, "split"] == "test").all()
    assert (p.loc[result.eval_eids, "qc_status"] != "fail").all()  # only participants with an embedding
    assert result.counts["test_available"] > 12 and result.counts["excluded_no_embedding"] == 6
    # a trained row's risks before its validation-fitted calibration are a row of their own
    assert set(result.scores) == {ROW_ZERO_SHOT, ROW_TEXT_SPIRO, uncalibrated_row(ROW_TEXT_SPIRO)}
    assert set(summary_calibration(tmp_path)) == {ROW_TEXT_SPIRO}
    for df in result.scores.values():
        assert sorted(df["eid"]) == sorted(result.eval_eids)
        assert df[RISKS].apply(lambda s: s.between(0, 1).all()).all()
    # the zero-shot and trained rows are different models, not copies
    assert not np.allclose(result.scores[ROW_ZERO_SHOT]["risk_asthma"], result.scores[ROW_TEXT_SPIRO]["risk_asthma"])
    # files: predictions round-trip, summary with counts and timings
    loaded = load_stage_scores(tmp_path)
    for m, df in result.scores.items():
        pd.testing.assert_frame_equal(loaded[m].sort_values("eid").reset_index(drop=True),
                                      df.sort_values("eid").reset_index(drop=True)[["eid", *RISKS]],
                                      check_dtype=False)
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert summary["counts"]["val"] == 10 and summary["seconds"][ROW_TEXT_SPIRO] > 0
    assert (tmp_path / PREDICTIONS_FILE).exists() and next(tmp_path.rglob("helm.pt")).exists()


def test_stage_output_feeds_the_shared_comparison(setup, tmp_path):
    cohort, emb_path, llm = setup
    settings = HeLMStageConfig(rows=(ROW_ZERO_SHOT,), train=HeLMTrainConfig(max_eval=15, log_mlflow=False,
                                                                             score_batch_size=8))
    result = helm_stage_scores(settings, cohort, emb_path, tmp_path, seed=1, llm=llm)
    p = pd.read_parquet(cohort / "participants.parquet")
    usable = p[(p["split"] == "test") & (p["qc_status"] != "fail")].reset_index(drop=True)
    baseline = pd.DataFrame({"eid": usable["eid"], "risk_asthma": 0.5, "risk_copd": 0.5})  # the whole test split
    keep, methods = restrict_to_eids(usable, {"baseline": baseline, **result.scores}, result.eval_eids)
    table = compare_methods(keep, methods, ["asthma", "copd"], n_bootstrap=20).to_frame()
    assert {ORACLE, "baseline", ROW_ZERO_SHOT} <= set(table["method"])
    assert table.groupby("trait")["n"].nunique().eq(1).all()
    assert (table["n"] + table["n_missing_label"]).eq(15).all()


def test_zero_shot_shared_prefix_matches_one_prompt_per_trait(setup):
    cohort, emb_path, llm = setup
    p = pd.read_parquet(cohort / "participants.parquet")
    p = p[p["split"] == "test"].head(6).reset_index(drop=True)
    shared = untrained_text_scores(llm, p, HeLMConfig(), batch_size=4, precision="fp32")
    for trait in ("asthma", "copd"):
        helm = HeLM(llm, HeLMConfig(variant="text", traits=(trait,)))
        with torch.no_grad():
            pairs = helm.score_full(helm.prefix_ids(p), traits=(trait,))
        expected = torch.softmax(pairs, dim=-1)[:, 0, 1].numpy()
        np.testing.assert_allclose(shared[f"risk_{trait}"].to_numpy(), expected, atol=1e-5)


def test_subsample_is_seeded_and_independent_of_other_splits(setup):
    cohort, _, _ = setup
    p = pd.read_parquet(cohort / "participants.parquet")

    def test_eids(seed: int, **caps: object) -> list[int]:
        picked = select_participants(p, HeLMTrainConfig(**{"max_eval": 10, **caps}), seed)
        return picked.loc[picked["split"] == "test", "eid"].tolist()

    a = test_eids(3)
    assert a == test_eids(3)
    assert a != test_eids(4)
    assert a == test_eids(3, max_val=5, max_train=20)  # the test subsample does not move with the other caps
    assert len(test_eids(3, max_eval=None)) == (p["split"] == "test").sum()


def test_settings_validate_like_the_run_config():
    adapter = TypeAdapter(HeLMStageConfig)
    s = adapter.validate_python({"train": {"max_eval": 50}, "rows": ["helm:text+spiro"]})
    assert s.train.max_eval == 50 and s.rows == (ROW_TEXT_SPIRO,)
    with pytest.raises(ValidationError, match="max_evl"):
        adapter.validate_python({"train": {"max_evl": 50}})
    with pytest.raises((SpirolmInputError, ValidationError), match="unknown HeLM row"):
        HeLMStageConfig(rows=("helm:bogus",))
    with pytest.raises(SpirolmInputError, match="max_eval"):
        HeLMTrainConfig(max_eval=1)


def test_bad_inputs_name_the_file_or_participant(setup, tmp_path):
    cohort, emb_path, llm = setup
    with pytest.raises(SpirolmInputError, match="embeddings file not found") as err:
        helm_stage_scores(SMALL, cohort, tmp_path / "nope.parquet", tmp_path, llm=llm)
    assert "nope.parquet" in str(err.value)
    p = pd.read_parquet(cohort / "participants.parquet")
    usable = p[(p["split"] == "test") & (p["qc_status"] != "fail")]
    failed = int(p.loc[p["qc_status"] == "fail", "eid"].iloc[0])
    with pytest.raises(SpirolmInputError, match="not in the evaluated set") as err:
        restrict_to_eids(usable, {}, [int(usable["eid"].iloc[0]), failed])
    assert str(failed) in str(err.value)
