"""A user's own export through the main job (issue 16): `spirolm run` with `cohort.source` set to the file.

The export carries no optional field at all (no BMI, smoking, pack-years, ethnicity, Townsend, PM2.5, hay
fever / eczema, parental COPD), no true risks, and three blows whose peak flow is physically impossible.
The job must go through without hand edits: every participant kept, the impossible blows rejected with a
reason and listed, the absent fields reported, the all-missing covariates dropped by the baselines and
recorded (MLflow and the report) rather than stopping the run, and the report opening in a real browser.
The encoder and HeLM stages are off: they do not read covariates, and the record text prints a missing
one as ``unknown`` (tests/llm_bridge).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from biobank.synth import generate_export
from experiments.pipeline.config import load_run_config
from experiments.pipeline.run import run_main
from signals.ukb3066 import format_3066, parse_3066
from tests.browser_fixtures import assert_report_opens, browser_missing

N = 1000
OPTIONAL_FIELDS = ("21001", "20116", "20161", "21000", "189", "24006", "6152", "20107", "20110")
OPTIONAL_COVARIATES = {"bmi", "smoking_status", "pack_years", "ethnicity", "townsend", "pm25", "hay_fever_eczema",
                       "parental_copd"}
DEMO = parse_3066((Path(__file__).parents[2] / "fixtures" / "ukb_3066_demo_blow.txt").read_text().strip()).volume_ml


def _impossible_blow() -> str:
    """The demo blow with its first 3 s played 3.6x too fast: PEF ~29 L/s, an artefact real exports carry."""
    k, until = 3.6, 300
    head = np.interp(np.arange(0, until / k) * k, np.arange(DEMO.size), DEMO)
    return format_3066(1, np.concatenate((np.rint(head).astype(np.int32), DEMO[until:])))


def _user_export(tmp_path: Path) -> tuple[Path, list[int]]:
    generate_export(n=N, seed=5, out_dir=tmp_path / "synth", progress=False)
    df = pd.read_csv(tmp_path / "synth" / "ukb_export.csv", dtype=str, keep_default_na=False)
    df = df[[c for c in df.columns if c.split("-")[0] not in OPTIONAL_FIELDS and not c.startswith("true_risk_")]]
    odd = [3, 400, 777]
    df.loc[odd, "3066-0.0"] = _impossible_blow()
    path = tmp_path / "my_export.csv"
    df.to_csv(path, index=False)
    return path, [int(e) for e in df.loc[odd, "eid"]]


def test_export_without_optional_fields_goes_through_the_main_job(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    export, odd_eids = _user_export(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = tmp_path / "my.yaml"
    config.write_text(f"""
cohort: {{source: {export}}}
encoder: {{enabled: false}}
helm: {{enabled: false}}
baselines: {{feature_sets: [tabular, tabular+spirometry], n_bootstrap: 50}}
evaluation: {{n_bootstrap: 50}}
explanations: {{enabled: false}}
tracking: {{tracking_uri: "{uri}", register_model: null}}
""")
    run = tmp_path / "run"
    result = run_main(load_run_config("default", config), run)

    # import: nobody lost, the impossible blows rejected with a reason and listed, the absent fields reported
    cohort = run / "cohort"
    p = pd.read_parquet(cohort / "participants.parquet")
    assert len(p) == N and p["eid"].is_unique
    for col in OPTIONAL_COVARIATES:
        assert p[col].isna().all(), col
    exclusions = pd.read_csv(cohort / "qc_exclusions.csv")
    blows = exclusions[(exclusions["level"] == "blow") & (exclusions["blow_index"] == 0)]
    assert set(blows.loc[blows["reason"] == "implausible_flow", "eid"]) == set(odd_eids)
    info = json.loads((cohort / "cohort.json").read_text())
    for field in OPTIONAL_FIELDS:
        assert any(field in w for w in info["summary"]["warnings"]), field
    assert set(info["reference_equations"].values()) == {"gli_global2022"}

    # baselines: the all-missing covariates dropped and recorded, not a failure minutes in
    notes = json.loads((run / "baselines" / "data_notes.json").read_text())
    assert set(notes["dropped_features"]) == OPTIONAL_COVARIATES
    assert all(any(f"covariate {c} dropped" in n for n in notes["notes"]) for c in OPTIONAL_COVARIATES)
    results = pd.read_csv(run / "evaluation" / "results.csv")
    for method in ("logreg:tabular", "xgboost:tabular", "logreg:tabular+spirometry", "xgboost:tabular+spirometry"):
        assert results.loc[results["method"] == method, "auroc"].notna().all(), method
    copd = results[(results["method"] == "logreg:tabular+spirometry") & (results["trait"] == "copd")]
    assert float(copd["auroc"].iloc[0]) > 0.8  # spirometry still carries the COPD signal

    client = MlflowClient(uri)
    job = client.get_run(result.parent_run_id)
    baselines = client.search_runs([job.info.experiment_id], filter_string="tags.`spirolm.kind` = 'baselines'")
    assert len(baselines) == 1
    parent = baselines[0]
    assert set(parent.data.params["dropped_features"].split(",")) == OPTIONAL_COVARIATES
    assert set(parent.data.tags["spirolm.dropped_features"].split(",")) == OPTIONAL_COVARIATES
    children = client.search_runs([job.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 2 * 2 * 2  # models x feature sets x traits
    assert all(set(c.data.params["dropped_features"].split(",")) == OPTIONAL_COVARIATES for c in children)
    notes_txt = client.download_artifacts(parent.info.run_id, "notes.txt", str(tmp_path))
    assert "covariate townsend dropped" in Path(notes_txt).read_text()
    xgb = next(c for c in children if c.data.tags["model"] == "xgboost")
    model_uri = f"runs:/{xgb.info.run_id}/model"
    example = mlflow.models.Model.load(model_uri).load_input_example(model_uri)
    assert not set(example.columns) & OPTIONAL_COVARIATES and "age" in example.columns
    proba = np.asarray(mlflow.pyfunc.load_model(model_uri).predict(example))
    assert ((proba > 0) & (proba < 1)).all()

    # the report says all of it, and opens in a real browser
    html = result.report_html.read_text()
    assert "optional field 189 (townsend) absent" in html
    assert "Baselines fitted without" in html and "townsend" in html
    if browser_missing() is None:
        assert_report_opens(result.report_html)
