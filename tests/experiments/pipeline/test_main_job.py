"""The main job's reliability as a user meets it: killed mid-training and resumed, an unreachable
MLflow server, and no participant ids in logs or MLflow params. Real `spirolm run` subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd

SPIROLM = [sys.executable, "-m", "experiments.cli"]

# Small and encoder-heavy: enough epochs that the kill lands mid-training; nothing after the encoder
# but the comparison, so the test stays about a minute.
CONFIG = """
cohort: {n: 600}
encoder:
  trainer: {max_epochs: 12, patience: 12}
baselines: {enabled: false}
helm: {enabled: false}
explanations: {enabled: false}
report: {html: false}
evaluation: {n_bootstrap: 50}
"""


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200", **extra)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra)
    return env


def test_killed_during_training_resumes_from_the_checkpoint(tmp_path: Path) -> None:
    cfg = tmp_path / "job.yaml"
    cfg.write_text(CONFIG)
    out = tmp_path / "run"
    args = [*SPIROLM, "run", "--profile", "smoke", "--config", str(cfg), "--out", str(out)]
    log1 = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(args, cwd=tmp_path, env=_env(), stdout=log1, stderr=subprocess.STDOUT)
    last = out / "encoder.partial" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert last.exists(), (tmp_path / "first.log").read_text()[-3000:]
    time.sleep(1.0)  # let it get into the next epoch, then kill without warning
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "encoder" / ".stage.json").exists()

    r = subprocess.run([*args, "--resume"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "stage cohort: cached" in r.stderr
    assert "stage encoder: resuming the interrupted build" in r.stderr and "resuming training from" in r.stderr
    stages = json.loads((out / "stages.json").read_text())
    assert stages["encoder"]["cached"] is False and (out / "encoder" / "embeddings.parquet").exists()
    assert "encoder (spirogram only)" in (out / "report" / "comparison.md").read_text()

    # One parent run (the interrupted one, reopened and finished) with the encoder runs as children.
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True)
    parents = runs[runs["tags.spirolm.kind"] == "main-job"]
    assert len(parents) == 1 and parents["status"].iloc[0] == "FINISHED"
    children = runs[runs["tags.mlflow.parentRunId"] == parents["run_id"].iloc[0]]
    assert len(children) >= 1 and (children["tags.mlflow.runName"] == "encoder").all()

    # No participant identifier in what was logged (stderr) or in MLflow params.
    eids = set(pd.read_parquet(out / "cohort" / "participants.parquet", columns=["eid"])["eid"].astype(str))
    logged = r.stderr + (tmp_path / "first.log").read_text()
    tokens = set(logged.replace(",", " ").replace("(", " ").replace(")", " ").split())
    assert not (tokens & eids)
    param_values = {str(v) for c in runs.columns if c.startswith("params.") for v in runs[c].dropna()}
    assert not (param_values & eids)


def test_unreachable_tracking_server_is_one_clear_line_and_nothing_is_lost(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = subprocess.run([*SPIROLM, "run", "--profile", "smoke", "--out", str(out)], cwd=tmp_path,
                       env=_env(MLFLOW_TRACKING_URI="http://127.0.0.1:9"), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "127.0.0.1:9" in errors[0] and "unreachable" in errors[0]
    assert "Traceback" not in r.stderr
    assert not (out / "cohort").exists()  # failed before any work, not in the middle of a stage
