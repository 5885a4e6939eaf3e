"""HeLM training and the comparison rows on a tiny cohort with a tiny Llama (seconds)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from experiments.evaluate.harness import ORACLE
from experiments.helm.calibrate import calibrate_frame
from experiments.helm.config import ROW_FEW_SHOT, ROW_TEXT_SPIRO, ROW_ZERO_SHOT, HeLMTrainConfig, uncalibrated_row
from experiments.helm.train import train_helm
from experiments.pipeline.config import HeLMStageConfig
from experiments.pipeline.helm_stage import helm_comparison
from llm_bridge.model import HeLM, HeLMConfig
from signals.errors import SpirolmInputError
from tests.helm_fixtures import helm_setup

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("helm")
    return (*helm_setup(root), root)


def test_train_text_spiro_learns_and_checkpoint_reloads(setup, tmp_path):
    cohort, emb, llm, _ = setup
    cfg = HeLMTrainConfig(max_train=None, max_val=None, max_eval=None, max_epochs=3, batch_size=16, lr=5e-3,
                          log_mlflow=True)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = train_helm(cohort, embeddings=emb, llm=llm, helm_cfg=HeLMConfig(variant="text+spiro"), out_dir=tmp_path,
                     cfg=cfg, seed=0, tracking_uri=uri)
    assert run.method == ROW_TEXT_SPIRO and run.run_id is not None
    assert set(run.scores.columns) == {"eid", "risk_asthma", "risk_copd"}
    assert run.scores[["risk_asthma", "risk_copd"]].apply(lambda s: s.between(0, 1).all()).all()
    assert run.best_val_auroc > 0.7  # the embeddings carry the labels; chance is 0.5
    assert run.kv_store["participants"] > 0 and run.kv_store["hits"] > 0  # prefixes reused across epochs
    helm = HeLM.load_checkpoint(run.checkpoint, llm)
    assert helm.cfg.variant == "text+spiro"
    # calibrated on validation where it has enough cases, the reason recorded where it does not
    assert set(run.calibration) == {"asthma", "copd"}
    for trait, info in run.calibration.items():
        assert ("skipped" in info) != (trait in helm.calibration)
        if trait in helm.calibration:
            assert info["method"] in ("platt", "isotonic") and info["fitted_on"] > 0
    assert helm.calibration, "the tiny cohort's validation split has enough cases for at least one trait"
    pd.testing.assert_frame_equal(run.scores, calibrate_frame(helm, run.raw_scores))
    assert not np.allclose(run.scores[["risk_asthma", "risk_copd"]], run.raw_scores[["risk_asthma", "risk_copd"]])
    import mlflow

    client = mlflow.MlflowClient(uri)
    assert client.get_run(run.run_id).data.params["llm.weights_hash"] == llm.identity.weights_hash


def test_comparison_rows_share_participants_and_oracle(setup, tmp_path):
    cohort, emb, llm, _ = setup
    cfg = HeLMTrainConfig(max_train=None, max_val=None, max_eval=None, max_epochs=1, batch_size=16,
                          log_mlflow=False, few_shot_k=2)
    emb_path = tmp_path / "emb.parquet"
    emb.to_parquet(emb_path)
    settings = HeLMStageConfig(rows=(ROW_ZERO_SHOT, ROW_FEW_SHOT, ROW_TEXT_SPIRO), train=cfg)
    comparison, _ = helm_comparison(settings, cohort, emb_path, tmp_path, llm=llm, n_bootstrap=50)
    table = comparison.to_frame()
    assert {ORACLE, ROW_ZERO_SHOT, ROW_FEW_SHOT, ROW_TEXT_SPIRO} <= set(table["method"])
    assert table.groupby("trait")["n"].nunique().eq(1).all()  # same participants in every row
    assert uncalibrated_row(ROW_TEXT_SPIRO) in set(table["method"])  # risks before calibration, side by side
    assert (tmp_path / "helm_results.md").exists()


def test_spiro_variant_without_embeddings_is_refused(setup, tmp_path):
    cohort, _, llm, _ = setup
    with pytest.raises(SpirolmInputError, match="needs spirogram embeddings"):
        train_helm(cohort, llm=llm, helm_cfg=HeLMConfig(variant="text+spiro"), out_dir=tmp_path,
                   cfg=HeLMTrainConfig(log_mlflow=False))


def test_nan_embeddings_file_is_refused(setup, tmp_path):
    cohort, emb, llm, _ = setup
    bad = emb.copy()
    bad.iloc[3, 5] = np.nan
    path = tmp_path / "emb.parquet"
    bad.to_parquet(path)
    with pytest.raises(SpirolmInputError, match="non-finite") as err:
        train_helm(cohort, embeddings=path, llm=llm, out_dir=tmp_path, cfg=HeLMTrainConfig(log_mlflow=False))
    assert str(bad["eid"].iloc[3]) in str(err.value)


def test_cli_train_and_chat(setup, tmp_path):
    from typer.testing import CliRunner

    from experiments.cli.helm import app

    cohort, emb, llm, root = setup
    emb_path = tmp_path / "emb.parquet"
    emb.to_parquet(emb_path)
    runner = CliRunner()
    res = runner.invoke(app, ["train-helm", "--cohort", str(cohort), "--embeddings", str(emb_path), "--llm",
                              str(root / "llm"), "--out", str(tmp_path / "out"), "--epochs", "1", "--max-eval", "10"],
                        env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"})
    assert res.exit_code == 0, res.output
    ckpt = next((tmp_path / "out").rglob("helm.pt"))
    eid = int(emb["eid"].iloc[0])
    res = runner.invoke(app, ["chat", "Is the lung function normal?", "--cohort", str(cohort), "--eid", str(eid),
                              "--llm", str(root / "llm"), "--checkpoint", str(ckpt), "--embeddings", str(emb_path),
                              "--max-new-tokens", "4"])
    assert res.exit_code == 0, res.output


def test_train_helm_command_and_the_main_job_stage_train_the_same_model(setup, tmp_path):
    """One config tree: ``spirolm train helm`` and ``spirolm run``'s HeLM stage, same settings, same weights."""
    from typer.testing import CliRunner

    from experiments.cli.helm import app
    from experiments.pipeline.config import load_run_config
    from experiments.pipeline.helm_stage import helm_stage_scores

    cohort, emb, llm, root = setup
    emb_path = tmp_path / "emb.parquet"
    emb.to_parquet(emb_path)
    changes = ["helm.train.max_train=40", "helm.train.max_val=12", "helm.train.max_eval=12", "helm.train.log_mlflow=false",
               "helm.train.batch_size=8", "helm.rows=[helm:text+spiro]", f"helm.llm={root / 'llm'}", "seed=3"]
    cfg = load_run_config("default", overrides=changes)
    stage = helm_stage_scores(cfg.helm, cohort, emb_path, tmp_path / "stage", seed=cfg.seed, llm=llm)
    res = CliRunner().invoke(app, ["train-helm", "--cohort", str(cohort), "--embeddings", str(emb_path),
                                   "--out", str(tmp_path / "cli"), *(a for c in changes for a in ("--set", c))])
    assert res.exit_code == 0, res.output
    a = torch.load(next((tmp_path / "stage").rglob("helm.pt")), weights_only=True)
    b = torch.load(next((tmp_path / "cli").rglob("helm.pt")), weights_only=True)
    assert a["config"] == b["config"] and a["state"].keys() == b["state"].keys()
    for name, tensor in a["state"].items():
        torch.testing.assert_close(tensor, b["state"][name], rtol=0, atol=0, msg=name)
    cli_scores = pd.read_parquet(next((tmp_path / "cli").rglob("scores_test.parquet")))
    pd.testing.assert_frame_equal(cli_scores, stage.scores[ROW_TEXT_SPIRO])
