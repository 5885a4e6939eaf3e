"""Batch scoring: HeLM pyfunc, QC rows, reproducibility, resume, MLflow registry, Ray engine.

Tiny parts (60 synthetic participants, a 2-layer 32-wide Llama, an untrained small encoder and
projector) so the whole file runs in seconds; the fault cases are in ``test_scoring_faults.py``.
"""

from __future__ import annotations

import filecmp
import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from experiments.serve.pyfunc import output_columns
from experiments.serve.scoring import MANIFEST, SHARD_DIR, read_scores, score_cohort
from signals.errors import SpirolmInputError
from signals.ukb3066 import format_3066
from tests.scoring_fixtures import build_parts

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return build_parts(tmp_path_factory.mktemp("scoring"))


@pytest.fixture(scope="module")
def reference(parts, tmp_path_factory):
    """One uninterrupted local run (chunk 16, batch 8, 1 thread) every other run is compared with."""
    out = tmp_path_factory.mktemp("ref") / "out"
    result = score_cohort(parts.cohort, parts.model, out, chunk_size=16, batch_size=8, num_threads=1, progress=False)
    return result, read_scores(out)


def _cohort_blows(parts) -> pd.DataFrame:
    return pd.read_parquet(parts.cohort / "blows.parquet", columns=["eid", "instance", "blow_index", "volume_ml"])


def test_pyfunc_takes_participants_and_raw_blows(parts):
    model = mlflow.pyfunc.load_model(str(parts.model), model_config={"batch_size": 4, "num_threads": 1})
    p = pd.read_parquet(parts.cohort / "participants.parquet")
    ok = p[p["qc_status"] == "pass"].iloc[0]
    blows = _cohort_blows(parts)
    vols = [np.asarray(v) for v in blows[(blows["eid"] == ok["eid"]) & (blows["instance"] == 0)]
            .sort_values("blow_index")["volume_ml"]]
    raw = [format_3066(j + 1, v) for j, v in enumerate(vols)]
    covariates = {"age": ok["age"], "sex": ok["sex"], "height_cm": ok["height_cm"], "gli_ethnicity": ok["gli_ethnicity"]}
    frame = pd.DataFrame([
        {"eid": 1, **covariates, "blows": vols},
        {"eid": 2, **covariates, "blows": raw},                     # the same blows as UKB field-3066 strings
        {"eid": 3, **covariates, "blows": []},                      # no spirometry at all
        {"eid": 4, **covariates, "blows": ["blow1,not a curve"]},   # unparseable
    ])
    out = model.predict(frame)
    assert list(out.columns) == output_columns(("asthma", "copd"))
    assert out["eid"].tolist() == [1, 2, 3, 4]
    np.testing.assert_array_equal(out.loc[0, ["risk_asthma", "risk_copd"]].to_numpy(float),
                                  out.loc[1, ["risk_asthma", "risk_copd"]].to_numpy(float))
    assert out.loc[0, "qc_status"] == "pass" and out.loc[0, "risk_copd"] > 0
    assert out.loc[2, "qc_status"] == "fail" and out.loc[2, "qc_reason"] == "no_blows"
    assert out.loc[3, "qc_status"] == "fail" and out.loc[3, "qc_reason"].startswith("no_usable_blow: parse_error")
    assert out.loc[[2, 3], ["risk_asthma", "risk_copd"]].isna().all().all()
    only_failures = model.predict(frame.iloc[2:4])  # nobody to embed: rows still come back, with reasons
    assert only_failures["qc_status"].tolist() == ["fail", "fail"]
    assert only_failures[["risk_asthma", "risk_copd"]].isna().all().all()
    with pytest.raises(SpirolmInputError, match="more than once"):
        model.predict(pd.concat([frame, frame.iloc[:1]]))


def test_every_participant_gets_one_row_with_qc_status(parts, reference):
    result, scores = reference
    p = pd.read_parquet(parts.cohort / "participants.parquet").set_index("eid")
    assert scores["eid"].tolist() == sorted(p.index)  # nobody lost, nobody twice
    assert result.n_participants == len(p) and result.n_chunks == 4
    # the model's own QC agrees with the cohort import's (same code path)
    assert scores.set_index("eid")["qc_status"].to_dict() == p["qc_status"].astype(str).to_dict()
    fail = scores[scores["qc_status"] == "fail"]
    assert len(fail) == result.n_qc_fail >= 1
    assert fail[["risk_asthma", "risk_copd"]].isna().all().all()
    assert fail["qc_reason"].str.startswith(("no_acceptable_blow", "no_blows", "no_usable_blow")).all()
    ok = scores[scores["qc_status"] != "fail"]
    assert ok[["risk_asthma", "risk_copd"]].apply(lambda s: s.between(0, 1).all()).all()
    assert ok["risk_asthma"].nunique() > 1
    assert (scores["model_uri"] == str(parts.model.resolve())).all() and scores["model_version"].str.len().gt(0).all()


def test_rerun_is_byte_identical_and_reuses_shards(parts, reference, tmp_path):
    first, _ = reference
    again = score_cohort(parts.cohort, parts.model, tmp_path / "out", chunk_size=16, batch_size=8, num_threads=1,
                         progress=False)
    for a, b in zip(first.shards, again.shards):
        assert filecmp.cmp(a, b, shallow=False)
    resumed = score_cohort(parts.cohort, parts.model, tmp_path / "out", chunk_size=16, batch_size=8, num_threads=1,
                           progress=False)
    assert resumed.n_reused == 4 and resumed.n_computed == 0


def test_other_settings_in_the_same_directory_are_refused(parts, reference, tmp_path):
    out = tmp_path / "out"
    score_cohort(parts.cohort, parts.model, out, chunk_size=16, batch_size=8, num_threads=1, progress=False)
    with pytest.raises(SpirolmInputError, match="chunk_size"):
        score_cohort(parts.cohort, parts.model, out, chunk_size=20, batch_size=8, progress=False)
    redone = score_cohort(parts.cohort, parts.model, out, chunk_size=20, batch_size=8, num_threads=1, overwrite=True,
                          progress=False)
    assert redone.n_chunks == 3 and len(list((out / SHARD_DIR).glob("*.parquet"))) == 3
    pd.testing.assert_frame_equal(read_scores(out), reference[1], check_exact=False, rtol=1e-5)


def test_export_file_source_is_imported_once(parts, reference, tmp_path):
    out = tmp_path / "out"
    score_cohort(parts.cohort / "ukb_export.csv", parts.model, out, chunk_size=16, batch_size=8, num_threads=1,
                 progress=False)
    stamp = (out / "_cohort" / "import_source.json").stat().st_mtime_ns
    again = score_cohort(parts.cohort / "ukb_export.csv", parts.model, out, chunk_size=16, batch_size=8,
                         num_threads=1, progress=False)
    assert again.n_reused == 4 and (out / "_cohort" / "import_source.json").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(read_scores(out), reference[1])


def test_registered_model_uri_scores_like_the_local_directory(parts, reference, tmp_path, monkeypatch):
    from experiments.serve.pyfunc import log_helm_pyfunc

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("scoring-test")  # not the experiment id an earlier test of this worker left active
    with mlflow.start_run() as run:
        model_uri = log_helm_pyfunc(encoder_checkpoint=parts.encoder, helm_checkpoint=parts.helm, llm=str(parts.llm_dir),
                                    registered_model_name="helm_test")
    assert model_uri == "models:/helm_test/1"
    params = mlflow.get_run(run.info.run_id).data.params
    eids = set(pd.read_parquet(parts.cohort / "participants.parquet")["eid"].astype(str))
    assert params and not any(e in v for v in params.values() for e in eids)  # no participant ids in params
    result = score_cohort(parts.cohort, model_uri, tmp_path / "out", chunk_size=16, batch_size=8, num_threads=1,
                          progress=False)
    scores = read_scores(tmp_path / "out")
    assert result.model_version == "1" and (scores["model_uri"] == model_uri).all()
    assert (scores["model_version"] == "1").all()
    cols = ["eid", "risk_asthma", "risk_copd", "qc_status", "qc_reason"]
    pd.testing.assert_frame_equal(scores[cols], reference[1][cols])
    settings = json.loads((tmp_path / "out" / MANIFEST).read_text())["settings"]
    assert settings["model_uri"] == model_uri and settings["model_version"] == "1"


@pytest.mark.slow
def test_ray_engine_gives_the_local_risks(parts, reference, tmp_path):
    """Local Ray instance, one 1-CPU actor (the reference also ran on one thread): identical bytes."""
    result = score_cohort(parts.cohort, parts.model, tmp_path / "out", chunk_size=16, batch_size=8, engine="ray",
                          ray_workers=1, progress=False)
    assert result.engine == "ray" and result.n_computed == 4
    pd.testing.assert_frame_equal(read_scores(tmp_path / "out"), reference[1])
    for a, b in zip(reference[0].shards, result.shards):
        assert filecmp.cmp(a, b, shallow=False)


def test_precision_agrees_with_fp32_and_is_reproducible_per_precision(parts, reference, tmp_path):
    """bf16 ranks participants as fp32 does; each precision is recorded and byte-reproducible on its own."""
    from scipy.stats import spearmanr

    from llm_bridge.precision import bf16_supported

    runs = {}
    for prec in ("fp32", "bf16"):
        for copy in ("a", "b"):
            out = tmp_path / f"{prec}_{copy}"
            score_cohort(parts.cohort, parts.model, out, chunk_size=16, batch_size=8, num_threads=1, precision=prec,
                         progress=False)
            runs[(prec, copy)] = out
        assert json.loads((runs[(prec, "a")] / MANIFEST).read_text())["settings"]["precision"] == prec
        a, b = (sorted((runs[(prec, c)] / SHARD_DIR).glob("*.parquet")) for c in ("a", "b"))
        assert a and all(filecmp.cmp(x, y, shallow=False) for x, y in zip(a, b, strict=True))
    auto = json.loads((reference[0].out_dir / MANIFEST).read_text())["settings"]["precision"]
    assert auto == ("bf16" if bf16_supported() else "fp32")
    fp32, bf16 = (read_scores(runs[(p, "a")]).dropna(subset=["risk_copd"]) for p in ("fp32", "bf16"))
    for trait in ("asthma", "copd"):
        assert spearmanr(fp32[f"risk_{trait}"], bf16[f"risk_{trait}"]).statistic >= 0.99
