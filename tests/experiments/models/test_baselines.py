"""Feature sets, model registry, fitting and the ``train baselines`` pipeline (without a tracking server)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from biobank.schema import CATEGORICAL_COVARIATES, NUMERIC_COVARIATES
from experiments.baselines import features as F
from experiments.baselines import models as B
from experiments.baselines.fit import fit_baselines
from experiments.data import embeddings as E
from experiments.data.predictions import read_predictions
from experiments.evaluate.harness import ORACLE, compare_methods
from experiments.pipeline.baselines_job import train_baselines
from signals.errors import SpirolmInputError
from tests.baseline_fixtures import FAST, SPIRO, make_participants, write_cohort


def write_embeddings(path: Path, participants: pd.DataFrame, seed: int = 0) -> Path:
    """An encoder-format embedding file whose first dimensions carry FEV1/FVC (a stand-in encoder)."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(0, 1, (len(participants), E.EMBEDDING_DIM))
    emb[:, 0] += participants["fev1_fvc"].fillna(0.7).to_numpy() * 10
    df = pd.DataFrame(emb, columns=list(E.EMBEDDING_COLUMNS))
    df.insert(0, "eid", participants["eid"].to_numpy())
    df.to_parquet(path, index=False)
    return path


# ----------------------------------------------------------------------------- features


def test_feature_sets_columns_and_notes():
    p = make_participants(300)
    tab = F.build_features(p, "tabular")
    assert set(tab.numeric) == set(NUMERIC_COVARIATES) and set(tab.categorical) == set(CATEGORICAL_COVARIATES)
    assert "eid" not in tab.X.columns and len(tab.X) == 300
    spi = F.build_features(p, "tabular+spirometry")
    assert set(SPIRO) <= set(spi.X.columns)
    assert spi.n_missing_spirometry == int(p["fev1_l"].isna().sum()) > 0
    assert any("missing spirometry" in n for n in spi.notes)
    assert (spi.X["smoking_status"] == F.MISSING_CATEGORY).sum() == p["smoking_status"].isna().sum()
    short = F.build_features(p.drop(columns=["pm25", "townsend"]), "tabular")
    assert "pm25" not in short.X.columns and any("pm25" in n for n in short.notes)


def test_all_missing_covariate_is_dropped_with_a_warning(caplog):
    # Issue 16: an export without an optional field gives an all-missing column; the baselines drop it,
    # loudly, instead of failing after the encoder has trained for minutes.
    p = make_participants(200)
    p["bmi"] = np.nan
    p["smoking_status"] = None
    with caplog.at_level(logging.INFO):
        fm = F.build_features(p, "tabular")
    assert fm.dropped == ("bmi", "smoking_status")
    assert "bmi" not in fm.X.columns and "bmi" not in fm.numeric and "smoking_status" not in fm.categorical
    assert any("covariate bmi dropped: missing for every participant in the cohort" in n for n in fm.notes)
    assert "covariate smoking_status dropped" in caplog.text
    assert F.build_features(make_participants(200), "tabular").dropped == ()
    # missing for every participant of one split: dropped too, naming the split
    p = make_participants(200)
    p.loc[p["split"] == "val", "townsend"] = np.nan
    fm = F.build_features(p, "tabular+spirometry")
    assert fm.dropped == ("townsend",)
    assert any("covariate townsend dropped: missing for every participant in split 'val'" in n for n in fm.notes)


def test_all_missing_spirometry_is_an_error():
    # spirometry missing for everyone means a broken QC stage, not a field the export lacks
    p = make_participants(200)
    p[SPIRO] = np.nan
    with pytest.raises(SpirolmInputError, match="field fev1_l: feature column is missing for every participant"):
        F.build_features(p, "tabular+spirometry")
    p = make_participants(200)
    fm = F.build_features(p, "tabular+spirometry")
    fm.X.loc[(p["split"] == "val").to_numpy(), "fev1_l"] = np.nan
    with pytest.raises(SpirolmInputError, match="fev1_l.*split 'val'"):
        F.check_split_features(fm, (p["split"] == "val").to_numpy(), "val")


def test_bad_feature_inputs():
    p = make_participants(100)
    with pytest.raises(SpirolmInputError, match="unknown feature set"):
        F.build_features(p, "tabular+genome")
    with pytest.raises(SpirolmInputError, match="needs --embeddings"):
        F.build_features(p, "tabular+embedding")
    p.loc[7, "sex"] = "M"
    with pytest.raises(SpirolmInputError, match=f"participant {p.loc[7, 'eid']}: field sex"):
        F.build_features(p, "tabular")


def test_embeddings_join_and_validation(tmp_path):
    p = make_participants(150)
    path = write_embeddings(tmp_path / "emb.parquet", p)
    emb = E.load_embeddings(path)
    fm = F.build_features(p, "tabular+embedding", embeddings=emb)
    assert fm.X.shape[1] == len(NUMERIC_COVARIATES) + len(CATEGORICAL_COVARIATES) + 128
    shuffled = emb.sample(frac=1.0, random_state=0)
    fm2 = F.build_features(p, "tabular+embedding", embeddings=shuffled)
    pd.testing.assert_frame_equal(fm.X, fm2.X)  # joined by eid, not by position
    ok = p["qc_status"] != "fail"
    first_ok = p.loc[ok, "eid"].iloc[0]
    with pytest.raises(SpirolmInputError, match=f"participant {first_ok}.*no spirogram embedding"):
        F.build_features(p, "tabular+embedding", embeddings=emb[emb["eid"] != first_ok])
    # the encoder writes no embedding for QC-failed participants: NaN + a note, not an error
    fm3 = F.build_features(p, "tabular+embedding", embeddings=emb[emb["eid"].isin(p.loc[ok, "eid"])])
    assert fm3.X.loc[~ok.to_numpy(), "emb_000"].isna().all() and fm3.X.loc[ok.to_numpy(), "emb_000"].notna().all()
    assert any(f"{(~ok).sum()} of 150 QC-failed participants have no spirogram embedding" in n for n in fm3.notes)
    pd.read_parquet(path).drop(columns=["emb_127"]).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(SpirolmInputError, match="emb_127"):
        E.load_embeddings(tmp_path / "bad.parquet")


def test_encode_categoricals_fixed_vocabulary():
    p = make_participants(50)
    fm = F.build_features(p, "tabular")
    enc = F.encode_categoricals(fm.X, fm.categorical)
    assert "sex=male" in enc.columns and "ethnicity=chinese" in enc.columns  # level absent from data still there
    assert enc.dtypes.map(lambda d: d.kind == "f").all()
    missing = (fm.X["smoking_status"] == F.MISSING_CATEGORY).to_numpy()
    assert (enc.loc[missing, [c for c in enc.columns if c.startswith("smoking_status=")]].sum(axis=1) == 0).all()


# ----------------------------------------------------------------------------- registry


def test_registry():
    assert set(B.registered_models()) >= {"logreg", "xgboost"}
    assert isinstance(B.get_model("xgboost").cfg, B.XGBoostConfig)
    with pytest.raises(SpirolmInputError, match="unknown baseline model 'svm'"):
        B.get_model("svm")
    with pytest.raises(SpirolmInputError, match="needs a LogRegConfig"):
        B.get_model("logreg", B.XGBoostConfig())
    with pytest.raises(ValueError, match="already registered"):
        B.register_model("logreg")(B.LogRegBaseline)
    with pytest.raises(AttributeError):
        B.LogRegConfig().C = 2.0  # frozen


# ----------------------------------------------------------------------------- fitting


def _fit(p: pd.DataFrame, seed: int, feature_sets=("tabular", "tabular+spirometry"), models=("logreg", "xgboost")):
    return fit_baselines(p, ["asthma", "copd"], feature_sets=feature_sets, models=models, embeddings=None,
                         seed=seed, configs=FAST)


def test_fit_learns_the_signal_and_is_reproducible():
    p = make_participants()
    fit = _fit(p, seed=0)
    assert fit.skipped == [] and len(fit.fitted) == 8
    for scores in fit.scores.values():
        assert list(scores["eid"]) == list(p.loc[p["split"] == "test", "eid"])
    test = p[p["split"] == "test"].reset_index(drop=True)
    result = compare_methods(test, fit.scores, ["asthma", "copd"], n_bootstrap=100)
    table = result.to_frame().set_index(["method", "trait"])
    for (method, trait), row in table.iterrows():
        assert 0.6 < row["auroc"] <= table.loc[(ORACLE, trait), "auroc"] + 0.05, (method, trait)
    # spirometry carries the signal for both traits, so adding it must help the linear model
    for trait in ("asthma", "copd"):
        assert table.loc[("logreg:tabular+spirometry", trait), "auroc"] > table.loc[("logreg:tabular", trait), "auroc"]
    again = _fit(p, seed=0, feature_sets=("tabular+spirometry",)).scores
    for method, scores in again.items():  # same config -> identical predictions
        pd.testing.assert_frame_equal(fit.scores[method], scores)
    other = _fit(p, seed=1, feature_sets=("tabular",), models=("xgboost",)).scores
    assert not np.allclose(other["xgboost:tabular"]["risk_copd"], fit.scores["xgboost:tabular"]["risk_copd"])


def test_xgboost_early_stops_on_validation():
    p = make_participants(800)
    fit = fit_baselines(p, ["copd"], feature_sets=("tabular",), models=("xgboost",), embeddings=None,
                        seed=0, configs={"xgboost": B.XGBoostConfig(n_estimators=2000, learning_rate=0.3,
                                                                    early_stopping_rounds=10, nthread=1)})
    model = fit.fitted[("xgboost", "tabular", "copd")].model
    assert model.params()["best_iteration"] < 200


def test_single_class_in_a_split_names_trait_and_split(tmp_path):
    p = make_participants(400)
    p.loc[p["split"] == "val", "copd"] = 0
    with pytest.raises(SpirolmInputError, match="field copd: trait 'copd' has a single class in split 'val'"):
        train_baselines(write_cohort(tmp_path / "c", p), out_dir=tmp_path / "out", tracking_uri="unused://")


def test_unknown_split_and_model(tmp_path):
    p = make_participants(300)
    with pytest.raises(SpirolmInputError, match="unknown baseline model"):
        train_baselines(write_cohort(tmp_path / "c", p), models=("svm",), out_dir=tmp_path / "o")
    with pytest.raises(SpirolmInputError, match="unknown feature set"):
        train_baselines(tmp_path / "c", feature_sets=("raw",), out_dir=tmp_path / "o")
    with pytest.raises(SpirolmInputError, match="participants.parquet"):
        train_baselines(tmp_path / "nowhere", out_dir=tmp_path / "o")


def test_embedding_feature_set_runs_with_embeddings():
    p = make_participants(600)
    emb = write_embeddings_frame(p)
    fit = fit_baselines(p, ["copd"], feature_sets=("tabular+embedding",), models=("logreg",), embeddings=emb,
                        seed=0, configs=FAST)
    assert fit.skipped == [] and "risk_copd" in fit.scores["logreg:tabular+embedding"].columns
    skipped = fit_baselines(p, ["copd"], feature_sets=("tabular", "tabular+embedding"), models=("logreg",),
                            embeddings=None, seed=0).skipped
    assert len(skipped) == 1 and "no spirogram embeddings" in skipped[0]


def write_embeddings_frame(p: pd.DataFrame) -> pd.DataFrame:
    """Like the encoder export: one row per participant whose spirometry did not fail QC."""
    emb = pd.DataFrame(np.random.default_rng(0).normal(size=(len(p), 128)), columns=list(E.EMBEDDING_COLUMNS))
    emb.insert(0, "eid", p["eid"].to_numpy())
    return emb[(p["qc_status"] != "fail").to_numpy()].reset_index(drop=True)


def test_cli_end_to_end_local_store(tmp_path, monkeypatch):
    """The command prints the table and where the runs are, and writes predictions, tables and plots."""
    from experiments.cli.baselines import train_baselines_cmd

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    p = make_participants(600)
    p.loc[p.index[p["split"] == "test"][:3], "copd"] = pd.NA
    cohort = write_cohort(tmp_path / "demo_cohort", p)
    app = typer.Typer()
    app.command()(train_baselines_cmd)
    res = CliRunner().invoke(app, ["--cohort", str(cohort), "--features", "tabular", "--traits", "copd",
                                   "--out", "out", "--seed", "3"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "oracle" in res.output and "logreg:tabular" in res.output and "xgboost:tabular" in res.output
    assert "skipped" not in res.output  # tabular+embedding was not requested
    assert "mlflow ui --backend-store-uri sqlite:///" in res.output.replace("\n", "")
    assert "participants without a label" in res.output
    assert (tmp_path / "mlflow.db").exists()
    preds = read_predictions(tmp_path / "out" / "predictions_test.parquet")
    assert list(preds) == ["logreg:tabular", "xgboost:tabular"]
    for scores in preds.values():
        assert list(scores.columns) == ["eid", "risk_copd"]
        assert len(scores) == (p["split"] == "test").sum()  # participants without a label are still scored
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert set(table["method"]) == {ORACLE, "logreg:tabular", "xgboost:tabular"}
    assert (table["n_missing_label"] == 3).all()
    assert (table["auroc_ci_lo"] <= table["auroc"]).all() and (table["auroc"] <= table["auroc_ci_hi"]).all()
    assert len(list((tmp_path / "out" / "plots").glob("copd_*.png"))) == 3
    assert "| oracle |" in (tmp_path / "out" / "results.md").read_text()


def test_pipeline_numbers_reproduce_exactly(tmp_path, monkeypatch):
    """Re-running train_baselines with the same seed reproduces every number of the table."""
    monkeypatch.chdir(tmp_path)
    cohort = write_cohort(tmp_path / "c", n=500)
    kw = {"feature_sets": ("tabular+spirometry",), "n_bootstrap": 200, "configs": FAST, "explain": False,
          "tracking_uri": f"sqlite:///{tmp_path / 'm.db'}"}
    a = train_baselines(cohort, out_dir=tmp_path / "a", seed=5, **kw)
    b = train_baselines(cohort, out_dir=tmp_path / "b", seed=5, **kw)
    assert (tmp_path / "a" / "results.csv").read_bytes() == (tmp_path / "b" / "results.csv").read_bytes()
    assert a.comparison.to_markdown() == b.comparison.to_markdown()
    assert a.experiment_name == b.experiment_name and a.parent_run_id != b.parent_run_id
