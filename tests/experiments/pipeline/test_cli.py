"""The `spirolm` command line as a user runs it: real subprocesses, real files."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from PIL import Image

SPIROLM = [sys.executable, "-m", "experiments.cli"]


def spirolm(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    env.pop("MLFLOW_TRACKING_URI", None)  # each test's MLflow store is ./mlflow.db in its own cwd
    return subprocess.run([*SPIROLM, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli") / "cohort"
    r = spirolm("cohort", "synth", "--n", "400", "--seed", "3", "--out", str(d), cwd=d.parent)
    assert r.returncode == 0, r.stderr
    assert "prevalence" in r.stdout and "oracle AUROC" in r.stdout
    return d


def test_synth_writes_export_and_tables(synth_dir: Path) -> None:
    for name in ("ukb_export.csv", "participants.parquet", "blows.parquet", "qc_exclusions.csv", "cohort.json"):
        assert (synth_dir / name).exists(), name
    p = pd.read_parquet(synth_dir / "participants.parquet")
    assert len(p) == 400 and p["eid"].is_unique
    assert {"asthma", "copd", "true_risk_asthma", "true_risk_copd", "split", "qc_status"} <= set(p.columns)


def test_describe_and_qc_rerun(synth_dir: Path, tmp_path: Path) -> None:
    r = spirolm("cohort", "describe", str(synth_dir), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "copd" in r.stdout and "asthma" in r.stdout
    copy = tmp_path / "c"
    shutil.copytree(synth_dir, copy)
    before = pd.read_parquet(copy / "blows.parquet")
    r = spirolm("cohort", "qc", str(copy), "--qc-standard", "ats2019", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    after = pd.read_parquet(copy / "blows.parquet")
    # The stricter 2019 BEV floor (100 mL) can only reject more blows, never fewer.
    assert (after["qc_status"] == "reject").sum() >= (before["qc_status"] == "reject").sum()
    assert len(after) == len(before)
    # the z-scores' GLI equation is selectable and recorded; GLI-2012 differs from GLI Global 2022
    z_global = pd.read_parquet(copy / "participants.parquet")["fev1_z"]
    r = spirolm("cohort", "qc", str(copy), "--reference-equations", "gli2012", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    info = json.loads((copy / "cohort.json").read_text())
    assert set(info["reference_equations"].values()) == {"gli2012"}
    assert not pd.read_parquet(copy / "participants.parquet")["fev1_z"].equals(z_global)


def test_import_of_the_synthetic_export_matches_synth(synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "imported"
    r = spirolm("cohort", "import-ukb", str(synth_dir / "ukb_export.csv"), "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    a = pd.read_parquet(synth_dir / "participants.parquet")
    b = pd.read_parquet(out / "participants.parquet")
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize(
    "args, needle",
    [
        (("cohort", "import-ukb", "nope.csv", "--out", "x"), "nope.csv"),
        (("cohort", "describe", "no_such_dir"), "no_such_dir"),
        (("cohort", "synth", "--n", "0", "--out", "x"), "--n"),
        (("cohort", "synth", "--variant", "nope", "--out", "x"), "nope"),
        (("cohort", "qc", "no_such_dir", "--qc-standard", "ats1999"), "ats1999"),
        (("cohort", "synth", "--n", "5", "--out", "x", "--reference-equations", "gli2099"), "gli2099"),
        (("run", "--profile", "huge"), "unknown profile"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    r = spirolm(*args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The README's main job on the smoke profile: every stage, the real default LLM, a fresh MLflow store."""
    work = tmp_path_factory.mktemp("smoke")
    r = spirolm("run", "--profile", "smoke", "--out", str(work / "run"), cwd=work)
    assert r.returncode == 0, r.stderr[-4000:]
    return work, r


def test_run_smoke_profile_every_stage(smoke_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    work, r = smoke_run
    out = work / "run"
    assert (out / "report" / "cohort.md").read_text().startswith("## Cohort")
    assert (out / "report" / "example_curves.png").stat().st_size > 10_000
    assert "oracle" in (out / "report" / "comparison.md").read_text()
    helm_table = (out / "report" / "comparison_helm.md").read_text()
    assert "helm:text-zero-shot" in helm_table and "helm:text+spiro" in helm_table and "oracle" in helm_table
    html = (out / "report" / "report.html").read_text()
    assert "helm:text+spiro" in html and 'src="http' not in html and "data:image/png;base64" in html
    for part in ("tabular", "helm"):
        items = json.loads((out / "explanations" / part / "index.json").read_text())
        assert items and all((out / "explanations" / part / it["file"]).exists() for it in items)
    stages = json.loads((out / "stages.json").read_text())
    expected = {"cohort", "encoder", "baselines", "helm", "evaluation", "evaluation_helm", "explanations/tabular",
                "explanations/helm"}
    assert expected <= set(stages) and not any(stages[s]["cached"] for s in expected)
    assert "report:" in r.stdout

    # One MLflow parent run; every stage's runs are its children; the HeLM pyfunc is registered.
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True)
    parent = runs[runs["tags.spirolm.kind"] == "main-job"]
    assert len(parent) == 1 and parent["status"].iloc[0] == "FINISHED"
    pid = parent["run_id"].iloc[0]
    children = set(runs.loc[runs["tags.mlflow.parentRunId"] == pid, "tags.mlflow.runName"])
    assert {"encoder", "baselines-seed0", "helm:text+spiro"} <= children, children
    assert parent["tags.spirolm.helm_model_uri"].iloc[0] == "models:/spirolm-helm/1"
    assert (out / "helm_model_uri.txt").read_text().strip() == "models:/spirolm-helm/1"


def test_run_is_cached_and_redoes_only_what_changed(smoke_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    work, _ = smoke_run
    out = work / "run"
    r2 = spirolm("run", "--profile", "smoke", "--out", str(out), cwd=work)
    assert r2.returncode == 0, r2.stderr
    assert "stage cohort: cached" in r2.stderr and "stage baselines: cached" in r2.stderr
    assert "stage helm: cached" in r2.stderr and "stage explanations/helm: cached" in r2.stderr
    # A config change downstream of the cohort rebuilds the baselines and what reads them, not the LLM stages.
    override = work / "fewer.yaml"
    override.write_text("baselines:\n  models: [logreg]\n")
    r3 = spirolm("run", "--profile", "smoke", "--config", str(override), "--out", str(out), cwd=work)
    assert r3.returncode == 0, r3.stderr
    assert "stage cohort: cached" in r3.stderr and "stage baselines: building" in r3.stderr
    assert "stage helm: cached" in r3.stderr and "stage explanations/helm: cached" in r3.stderr
    assert "xgboost" not in (out / "report" / "comparison.md").read_text()


def test_notebooks_run_top_to_bottom_on_the_finished_run(
        smoke_run: tuple[Path, subprocess.CompletedProcess[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every notebook under notebooks/ executes without error against the smoke run (so they cannot rot)."""
    import nbformat
    from nbclient import NotebookClient

    work, _ = smoke_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    notebooks = sorted((Path(__file__).parents[3] / "notebooks").glob("*.ipynb"))
    assert notebooks
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        assert not [o for o in outputs if o.output_type == "error"]
        pngs = [base64.b64decode(o["data"]["image/png"]) for o in outputs if "image/png" in o.get("data", {})]
        assert len(pngs) >= 9, (path.name, len(pngs))  # every figure of the notebook came out as a real image
        for png in pngs:
            with Image.open(io.BytesIO(png)) as image:
                assert image.format == "PNG" and image.width > 100 and image.height > 100
