"""MLflow logging of the baselines: local default store, MLFLOW_TRACKING_URI, and a real tracking server.

Checks that runs, params, metrics, plots and the models are there, that a model loads back by
``runs:/<id>/model`` and scores identically, that every baseline's ``mlflow.pyfunc`` predicts
probabilities (not the xgboost flavor's 0/1 labels), that covariates dropped for being all-missing are
recorded, and that no participant id leaks into params, tags, metric names or logged tables.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from experiments.baselines.mlflow_model import load_risk_model
from experiments.common.tracking import metric_key
from experiments.pipeline.baselines_job import train_baselines
from tests.baseline_fixtures import FAST, make_participants, write_cohort


def _train(tmp_path: Path, uri: str | None, **kwargs):
    p = make_participants(600, seed=2)
    cohort = write_cohort(tmp_path / "cohort_a", p)
    kw = {"traits": ("copd",), "feature_sets": ("tabular+spirometry",), "n_bootstrap": 50, "configs": FAST} | kwargs
    return p, train_baselines(cohort, out_dir=tmp_path / "out", tracking_uri=uri, **kw)


def _all_strings_of_run(client: MlflowClient, run_id: str) -> list[str]:
    run = client.get_run(run_id)
    return [*run.data.params, *run.data.params.values(), *run.data.tags, *run.data.tags.values(),
            *run.data.metrics]


def _artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for item in client.list_artifacts(run_id, path):
        out.extend(_artifact_paths(client, run_id, item.path) if item.is_dir else [item.path])
    return out


def _check_runs(p: pd.DataFrame, result, *, expect_predictions_logged: bool = False, explained: bool = True) -> None:
    client = MlflowClient(result.tracking_uri)
    exp = client.get_experiment_by_name(result.experiment_name)
    assert exp is not None and result.experiment_name.startswith("spirolm/cohort_a-")
    children = client.search_runs([exp.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    assert {r.info.run_id for r in children} == set(result.run_ids.values())
    assert len(children) == len(result.fitted)  # one run per (model, feature set, trait)

    eids = {str(e) for e in p["eid"]}
    for run_id in [result.parent_run_id, *result.run_ids.values()]:
        leaked = [s for s in _all_strings_of_run(client, run_id) if any(e in s for e in eids)]
        assert leaked == [], leaked

    for (model, fs, trait), run_id in result.run_ids.items():
        run = client.get_run(run_id)
        assert run.data.params["feature_set"] == fs and run.data.params["model"] == model
        metrics = result.comparison.metrics[(f"{model}:{fs}", trait)]
        assert run.data.metrics["test/auroc"] == pytest.approx(metrics.auroc)
        assert "test/auroc_vs_oracle" in run.data.metrics
        assert any(k.startswith("test_subgroup/sex_male/") for k in run.data.metrics)
        arts = _artifact_paths(client, run_id)
        assert "test_calibration.json" in arts
        shap_plots = {"shap/shap_summary.png", "shap/shap_waterfall_highest_risk.png"}
        assert (shap_plots <= set(arts)) == explained
        table = pd.read_json(client.download_artifacts(run_id, "test_subgroups.json"), orient="split")
        assert "eid" not in table.columns

        # the model loads back by URI and scores exactly like the in-memory one
        fitted = result.fitted[(model, fs, trait)]
        X = fitted.features.X.loc[fitted.test_mask]
        score = load_risk_model(f"runs:/{run_id}/model")
        np.testing.assert_allclose(score(fitted.model.model_input(X)), fitted.model.predict_risk(X), rtol=1e-6)
        info = mlflow.models.get_model_info(f"runs:/{run_id}/model")
        assert info.signature is not None
        assert "eid" not in info.signature.inputs.input_names()
        assert "python_function" in info.flavors
        assert ("sklearn" in info.flavors) == (model == "logreg")
        # every baseline's pyfunc gives probabilities, as a user loading it would see (not 0/1 labels)
        proba = np.asarray(mlflow.pyfunc.load_model(f"runs:/{run_id}/model").predict(fitted.model.model_input(X)))
        assert proba.shape == (len(X), 2)
        assert ((proba > 0) & (proba < 1)).all() and len(np.unique(proba[:, 1])) > 2
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(proba[:, 1], fitted.model.predict_risk(X), rtol=1e-6)

    parent_arts = _artifact_paths(client, result.parent_run_id)
    assert {"comparison/results.md", "comparison/results.csv", "comparison/plots/copd_roc.png"} <= set(parent_arts)
    assert ("comparison/predictions_test.parquet" in parent_arts) == expect_predictions_logged


def test_default_local_store_in_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    p, result = _train(tmp_path, None)
    assert result.tracking_uri == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    _check_runs(p, result)


def test_env_tracking_uri_respected_and_predictions_opt_in(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'team.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    p, result = _train(tmp_path, None, models=("logreg",), log_predictions=True, explain=False)
    assert result.tracking_uri == uri and not (tmp_path / "mlflow.db").exists()
    _check_runs(p, result, expect_predictions_logged=True, explained=False)


def test_metric_key_is_mlflow_safe():
    assert metric_key("copd", "xgboost:tabular+spirometry", "auroc") == "copd/xgboost_tabular_spirometry/auroc"
    assert metric_key("test_subgroup", "age_band_>=70", "n") == "test_subgroup/age_band_ge70/n"
    assert metric_key("test_subgroup", "age_band_<40", "n") == "test_subgroup/age_band_lt40/n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"mlflow server at {url} did not answer within {timeout_s} s")


def test_real_tracking_server(tmp_path, monkeypatch):
    """`mlflow server` with a sqlite backend on 127.0.0.1; always terminated."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'db.sqlite'}",
           "--default-artifact-root", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until_up(url, proc)
        p, result = _train(tmp_path, url, models=("xgboost",), explain=False)
        assert result.tracking_uri == url
        _check_runs(p, result, explained=False)
        assert any((tmp_path / "artifacts").rglob("MLmodel"))  # artifacts stored where the server said
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group (uvicorn workers included)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()
