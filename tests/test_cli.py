"""The `spirolm` command line as a user runs it: real subprocesses, real files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

SPIROLM = [sys.executable, "-m", "experiments.cli"]


def spirolm(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
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
        (("cohort", "qc", "no_such_dir", "--qc-standard", "ats1999"), "ats1999"),
        (("run", "--profile", "huge"), "unknown profile"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    r = spirolm(*args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_run_smoke_profile_and_cache(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = spirolm("run", "--profile", "smoke", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (out / "report" / "cohort.md").read_text().startswith("## Cohort")
    assert (out / "report" / "example_curves.png").stat().st_size > 10_000
    assert (out / "cohort" / "participants.parquet").exists()
    assert "oracle" in (out / "report" / "comparison.md").read_text()
    assert (tmp_path / "mlflow.db").exists()
    r2 = spirolm("run", "--profile", "smoke", "--out", str(out), cwd=tmp_path)
    assert r2.returncode == 0, r2.stderr
    assert "stage cohort: cached" in r2.stderr and "stage baselines: cached" in r2.stderr
    # A config change downstream of the cohort rebuilds only the baselines.
    override = tmp_path / "fewer.yaml"
    override.write_text("baselines:\n  models: [logreg]\n")
    r3 = spirolm("run", "--profile", "smoke", "--config", str(override), "--out", str(out), cwd=tmp_path)
    assert r3.returncode == 0, r3.stderr
    assert "stage cohort: cached" in r3.stderr and "stage baselines: building" in r3.stderr
    assert "xgboost" not in (out / "report" / "comparison.md").read_text()
