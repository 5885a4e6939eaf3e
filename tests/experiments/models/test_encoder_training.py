"""Encoder data loading, Lightning training, MLflow logging, embedding export and bad cohorts.

All on the ~120-participant fixture cohort of ``tests/encoder_fixtures.py``, CPU only.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from experiments.cli.encoder import app
from experiments.data.curves import build_curves, load_curve_table
from experiments.data.embeddings import embedding_columns
from experiments.encoder.datamodule import EncoderDataModule
from experiments.encoder.embed import embed_cohort
from experiments.encoder.export import load_encoder, save_encoder
from experiments.encoder.train import train_encoder
from experiments.pipeline.config import load_run_config
from signals.encoder import EncoderConfig, SpiroEncoder
from signals.errors import SpirolmInputError
from tests.encoder_fixtures import build_tiny_cohort, qc_passing_eids

TINY = ["model.width_multiplier=0.125", "data.batch_size=32", "trainer.threads=1"]


def _cfg(*extra: str, tracking: bool = False):
    """The default profile's encoder section with tiny sizes (``seed=N`` sets the run's seed)."""
    changes = [*TINY, f"log_mlflow={str(tracking).lower()}", *extra]
    run = load_run_config(overrides=[c if c.startswith("seed=") else f"encoder.{c}" for c in changes])
    return {"cfg": run.encoder, "seed": run.seed}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return build_tiny_cohort(tmp_path_factory.mktemp("cohort") / "c", n=120, seed=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cohort):
    """One 2-epoch tracked training run shared by the tests that only inspect its outputs."""
    root = tmp_path_factory.mktemp("run")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        result = train_encoder(cohort, root / "out", **_cfg("trainer.max_epochs=2", tracking=True), progress=False)
    return result, uri


def test_datamodule_batches_and_train_only_scaling(cohort) -> None:
    dm = EncoderDataModule(cohort, channels=("flow_volume", "volume_time"), batch_size=16)
    dm.setup("fit")
    curves, labels, eid = next(iter(dm.train_dataloader()))
    assert curves.shape == (16, 2, 1000) and curves.dtype == torch.float32
    assert labels.shape == (16, 2) and labels.dtype == torch.float32 and eid.dtype == torch.int64
    assert dm.traits == ("asthma", "copd")
    table = dm.table
    train = table.subset("train")
    mean, std = dm.scaling
    np.testing.assert_allclose(mean, train.curves.mean(axis=(0, 2)), rtol=1e-5)
    np.testing.assert_allclose(std, train.curves.std(axis=(0, 2)), rtol=1e-4)
    assert not np.allclose(mean, table.curves.mean(axis=(0, 2)), rtol=1e-6)  # val/test excluded
    # Failed-QC participants never enter training; missing labels stay NaN (masked later).
    assert set(table.eids) == qc_passing_eids(cohort)
    assert np.isnan(table.labels).any()
    # Curves equal the signals.curves derivation of each participant's best blow.
    blows = pd.read_parquet(cohort / "blows.parquet")
    best = blows[blows.is_best].set_index("eid").loc[table.eids[:5], "volume_ml"].tolist()
    np.testing.assert_array_equal(build_curves(best, table.eids[:5], EncoderConfig(channels=dm.channels)), table.curves[:5])


def test_fast_dev_run_trains_and_exports(cohort, tmp_path) -> None:
    result = train_encoder(cohort, tmp_path, **_cfg("trainer.fast_dev_run=true"), progress=False)
    assert result.checkpoint is None and result.run_id is None  # fast_dev_run: no checkpoints, no logging
    net = load_encoder(result.model_ref)
    assert net.cfg.traits == ("asthma", "copd") and net.cfg.width_multiplier == 0.125


def test_training_logs_to_mlflow_and_exports(trained, cohort) -> None:
    result, uri = trained
    assert result.epochs == 2 and result.checkpoint is not None and result.checkpoint.is_file()
    for key in ("val/loss", "val/auroc_copd", "val/auprc_asthma", "test/auroc_copd", "test/auprc_copd"):
        assert key in result.metrics and np.isfinite(result.metrics[key]), key
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(result.run_id)
    assert run.data.params["config.model.width_multiplier"] == "0.125"
    assert run.data.params["traits"] == "asthma,copd"
    assert len(client.get_metric_history(result.run_id, "val/auroc_copd")) >= 2  # per epoch
    top = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"encoder", "val_roc.png", "encoder_config.yaml", "checkpoints"} <= top
    assert "predictions.parquet" not in top  # participant ids stay out of the tracking store
    # The MLflow URI is a valid --model reference and gives the exported weights back.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        from_run = load_encoder(result.model_ref)
    local = load_encoder(result.model_path)
    for (k, a), b in zip(from_run.state_dict().items(), local.state_dict().values()):
        assert torch.equal(a, b), k
    pred = pd.read_parquet(result.predictions)
    assert set(pred["split"]) == {"val", "test"} and pred["risk_copd"].between(0, 1).all()
    # The encoder learnt the curve-shape COPD signal of the fixture (clearly better than chance).
    assert result.metrics["val/auroc_copd"] > 0.7


def test_training_is_deterministic(cohort, tmp_path) -> None:
    cfg = _cfg("trainer.max_epochs=1", "trainer.limit_train_batches=2")
    a = train_encoder(cohort, tmp_path / "a", **cfg, progress=False)
    b = train_encoder(cohort, tmp_path / "b", **cfg, progress=False)
    assert a.metrics == b.metrics
    wa, wb = load_encoder(a.model_path).state_dict(), load_encoder(b.model_path).state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = train_encoder(cohort, tmp_path / "c", **_cfg("trainer.max_epochs=1", "trainer.limit_train_batches=2", "seed=1"),
                      progress=False)
    assert c.metrics != a.metrics  # the seed matters, so the equality above is not vacuous


def test_embed_writes_one_row_per_qc_passing_participant(trained, cohort, tmp_path) -> None:
    result, _ = trained
    out = embed_cohort(result.model_path, cohort, tmp_path / "emb.parquet", batch_size=25, progress=False)
    emb = pd.read_parquet(out)
    assert list(emb.columns) == ["eid", *embedding_columns(128)]
    assert emb["eid"].is_unique and set(emb["eid"]) == qc_passing_eids(cohort)
    assert (emb.dtypes.iloc[1:] == np.float32).all() and np.isfinite(emb.iloc[:, 1:].to_numpy()).all()
    # Same numbers as encoding the training table directly (batching/streaming does not change them).
    net = load_encoder(result.model_path)
    table = load_curve_table(cohort, net.cfg.channels)
    with torch.no_grad():
        direct = net.encode(torch.from_numpy(table.curves)).numpy()
    got = emb.set_index("eid").loc[table.eids].to_numpy()
    np.testing.assert_allclose(got, direct, rtol=1e-4, atol=1e-5)


def test_trait_without_train_positives_is_an_input_error(tmp_path) -> None:
    bad = build_tiny_cohort(tmp_path / "c", n=60, seed=1, zero_positive_trait="asthma")
    with pytest.raises(SpirolmInputError, match="trait 'asthma' has no positives in the train split"):
        train_encoder(bad, tmp_path / "out", **_cfg("trainer.fast_dev_run=true"), progress=False)
    # Choosing the other trait explicitly is fine.
    dm = EncoderDataModule(bad, traits=("copd",))
    dm.setup()
    assert dm.traits == ("copd",)


def _rewrite_blows(cohort: Path, dest: Path, edit) -> Path:
    dest.mkdir()
    for f in cohort.iterdir():
        if f.is_file() and f.name != "blows.parquet":
            (dest / f.name).write_bytes(f.read_bytes())
    blows = pd.read_parquet(cohort / "blows.parquet")
    edit(blows).to_parquet(dest / "blows.parquet", index=False)
    return dest


def test_nan_volume_names_the_participant(cohort, tmp_path) -> None:
    blows = pd.read_parquet(cohort / "blows.parquet")
    victim = int(blows.loc[blows.is_best, "eid"].iloc[7])

    def poison(df: pd.DataFrame) -> pd.DataFrame:
        df["volume_ml"] = [np.asarray(v, dtype=np.float64) for v in df["volume_ml"]]
        i = df.index[(df.eid == victim) & df.is_best][0]
        v = df.at[i, "volume_ml"].copy()
        v[40] = np.nan
        df.at[i, "volume_ml"] = v
        return df

    bad = _rewrite_blows(cohort, tmp_path / "nan", poison)
    with pytest.raises(SpirolmInputError, match=f"participant {victim}"):
        EncoderDataModule(bad).setup()
    model = save_encoder(SpiroEncoder(EncoderConfig()), tmp_path / "m")
    with pytest.raises(SpirolmInputError, match=f"participant {victim}"):
        embed_cohort(model, bad, tmp_path / "e.parquet", progress=False)
    assert not (tmp_path / "e.parquet").exists()  # no half-written output


def test_missing_best_blow_names_the_participant(cohort, tmp_path) -> None:
    blows = pd.read_parquet(cohort / "blows.parquet")
    victim = int(blows.loc[blows.is_best, "eid"].iloc[3])
    bad = _rewrite_blows(cohort, tmp_path / "nobest", lambda df: df.assign(is_best=df.is_best & (df.eid != victim)))
    model = save_encoder(SpiroEncoder(EncoderConfig()), tmp_path / "m")
    with pytest.raises(SpirolmInputError, match=f"participant {victim}.*no best blow"):
        embed_cohort(model, bad, tmp_path / "e.parquet", progress=False)


def test_embed_refuses_another_architecture(cohort, tmp_path) -> None:
    torch.save({"conv.weight": torch.zeros(4, 1, 3)}, tmp_path / "foreign.pt")
    with pytest.raises(SpirolmInputError, match="not a spirolm encoder export"):
        embed_cohort(tmp_path / "foreign.pt", cohort, tmp_path / "e.parquet", progress=False)


def test_cli_commands(trained, cohort, tmp_path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["train-encoder", "--cohort", str(cohort), "--print-config", "--profile", "full",
                              "trainer.max_epochs=7"])
    assert res.exit_code == 0, res.output
    assert "max_epochs: 7" in res.output and "width_multiplier: 1.0" in res.output
    result, _ = trained
    out = tmp_path / "cli.parquet"
    res = runner.invoke(app, ["embed", "--model", str(result.model_path), "--cohort", str(cohort), "--out", str(out),
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    assert len(pd.read_parquet(out)) == len(qc_passing_eids(cohort))
