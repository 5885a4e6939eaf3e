"""Train the spirogram encoder: Lightning fit, selection on validation, test metrics, export.

:func:`train_encoder` trains on a cohort's train split with early stopping and the best checkpoint on
``val/loss``, logs to MLflow (params, per-epoch metrics, best checkpoint, exported encoder, validation
ROC plot), and writes val/test predictions keyed by ``eid`` in the shared prediction-table schema.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import yaml
from sklearn.metrics import roc_auc_score, roc_curve

from experiments.common.config_io import to_plain
from experiments.common.lightning import DistributedConfig, stop_unless_global_zero
from experiments.common.tracking import flat_params, lightning_mlflow_logger
from experiments.data.predictions import risk_column, write_predictions
from experiments.encoder.config import EncoderTrainConfig, EncoderTrainerConfig
from experiments.encoder.datamodule import EncoderDataModule
from experiments.encoder.export import ARTIFACT_DIR, save_encoder
from experiments.encoder.module import EncoderModule

log = logging.getLogger(__name__)

METHOD = "encoder (spirogram only)"
"""The encoder's row name in comparison tables and prediction files."""
PREDICTIONS_FILE = "predictions.parquet"


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_encoder` produced.

    Attributes:
        model_path: the exported ``encoder.pt``.
        model_ref: ``runs:/<run_id>/encoder`` when tracked in MLflow, else ``model_path`` as a string.
        checkpoint: best Lightning checkpoint (for resuming), ``None`` in ``fast_dev_run``.
        run_id: MLflow run id or ``None``.
        traits: trait heads trained.
        metrics: final logged metrics (``val/...`` of the best epoch, ``test/...``).
        predictions: Parquet with ``eid``, ``split`` and ``risk_<trait>`` for val and test.
        epochs: epochs run; seconds: wall time of ``fit``.
    """

    model_path: Path
    model_ref: str
    checkpoint: Path | None
    run_id: str | None
    traits: tuple[str, ...]
    metrics: dict[str, float]
    predictions: Path
    epochs: int
    seconds: float


def _trainer_kwargs(cfg: EncoderTrainerConfig, placement: DistributedConfig) -> dict[str, Any]:
    cuda = placement.cuda
    precision = cfg.precision if cfg.precision != "auto" else ("bf16-mixed" if cuda else "32-true")
    return {
        **placement.trainer_kwargs(),
        # Batch statistics over the global batch; torch syncs batch norm on CUDA only, so on CPU each process
        # normalises with its own share of the batch (close to, not equal to, one process: docs/encoder.md).
        "sync_batchnorm": cuda and placement.devices * placement.num_nodes > 1,
        "precision": precision,
        # Bit-identical reruns on CPU; on GPU some cuDNN kernels have no deterministic variant.
        "deterministic": True if not cuda else "warn",
        "max_epochs": cfg.max_epochs,
        "fast_dev_run": cfg.fast_dev_run,
        "limit_train_batches": cfg.limit_train_batches,
    }


def _predict(module: EncoderModule, dm: EncoderDataModule, split: str, device: torch.device) -> pd.DataFrame:
    """Per-participant probabilities for one split (plain loop: no Trainer state to reset)."""
    ds = dm.dataset(split)
    module = module.to(device).eval()
    probs, eids = [], []
    with torch.no_grad():
        for start in range(0, len(ds), dm.eval_batch_size):
            curves, _, eid = ds[start:start + dm.eval_batch_size]
            probs.append(module(curves.to(device)).float().cpu().numpy())
            eids.append(eid.numpy())
    p = np.concatenate(probs) if probs else np.empty((0, len(dm.traits)), np.float32)
    df = pd.DataFrame({"eid": np.concatenate(eids) if eids else np.empty(0, np.int64), "split": split})
    for k, t in enumerate(dm.traits):
        df[risk_column(t)] = p[:, k].astype(float)
    return df


def plot_val_roc(pred: pd.DataFrame, dm: EncoderDataModule, path: Path) -> Path:
    """Validation ROC curves, one line per trait, AUROC in the legend."""
    val = dm.table.subset("val")  # type: ignore[union-attr]
    fig, ax = plt.subplots(figsize=(5, 5))
    for k, t in enumerate(dm.traits):
        y = val.labels[:, k]
        seen = ~np.isnan(y)
        score = pred[risk_column(t)].to_numpy()[seen]
        fpr, tpr, _ = roc_curve(y[seen], score)
        ax.plot(fpr, tpr, label=f"{t} (AUROC {roc_auc_score(y[seen], score):.3f}, n={int(seen.sum())})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="Spirogram encoder, validation split")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def train_encoder(
    cohort_dir: str | Path, out_dir: str | Path, cfg: EncoderTrainConfig = EncoderTrainConfig(), *,
    traits: tuple[str, ...] | None = None, seed: int = 0, experiment: str = "spirolm-encoder",
    tracking_uri: str | None = None, progress: bool | None = None, resume: bool = False,
) -> TrainResult:
    """Train the encoder on a cohort's train split, select on val, report test, export the best model.

    Args:
        cohort_dir: cohort directory (docs/design.md tables).
        out_dir: receives ``checkpoints/``, ``encoder/encoder.pt``, ``predictions.parquet``, ``val_roc.png``.
        cfg: training settings (the ``encoder`` section of the run config).
        traits: trait heads (``None``: the cohort's traits).
        seed: seed of initialisation and shuffling.
        experiment: MLflow experiment outside a main job (inside one, the job's).
        tracking_uri: MLflow store (see :func:`experiments.common.tracking.resolve_tracking_uri`).
        progress: Lightning progress bar (``None``: on for a terminal only).
        resume: continue from ``out_dir/checkpoints/last.ckpt`` when it exists (an interrupted run
            into the same directory with the same config; the caller guarantees that).

    Raises:
        SpirolmInputError: bad cohort (missing best blows, NaN curves, a trait without positives in
            train or val, ...), naming participant/trait/file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    L.seed_everything(seed, workers=True, verbose=False)

    dm = EncoderDataModule(cohort_dir, cfg.model.channels, traits, cfg.data.batch_size,
                           cfg.data.eval_batch_size, cfg.data.num_workers, seed=seed)
    dm.setup("fit")
    net_cfg = dataclasses.replace(cfg.model, traits=dm.traits)
    mean, std = dm.scaling
    module = EncoderModule(
        net_cfg.to_dict(), input_mean=mean.tolist(), input_std=std.tolist(), lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay, pos_weight=dm.pos_weight.tolist() if cfg.optim.pos_weight else None,
        lr_patience=cfg.optim.lr_patience, compile=cfg.trainer.compile,
    )
    logger = (lightning_mlflow_logger(experiment, "encoder", tracking_uri)
              if cfg.log_mlflow and not cfg.trainer.fast_dev_run else None)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="best-{epoch:02d}",
                                               monitor="val/loss", mode="min", save_top_k=1, save_last=True)
    stop = L.pytorch.callbacks.EarlyStopping(monitor="val/loss", mode="min", patience=cfg.trainer.patience)
    show = progress if progress is not None else bool(os.isatty(2))
    trainer = L.Trainer(**_trainer_kwargs(cfg.trainer, cfg.distributed), logger=logger or False, callbacks=[ckpt, stop],
                        default_root_dir=out_dir, enable_progress_bar=show, enable_model_summary=show,
                        log_every_n_steps=1, num_sanity_val_steps=0)
    config_dict = {"seed": seed, **to_plain(cfg), "model": net_cfg.to_dict()}
    if logger is not None:
        logger.log_hyperparams(flat_params({"config": config_dict}) | {"traits": ",".join(dm.traits),
                                                                        "n_params": module.net.num_params()})
    last = out_dir / "checkpoints" / "last.ckpt"
    resume_from = str(last) if resume and last.exists() else None
    if resume_from:  # an interrupted build of the same stage: continue its optimizer, epoch and callbacks
        log.info("encoder: resuming training from %s", last)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=resume_from)
    seconds = time.perf_counter() - t0

    best = Path(ckpt.best_model_path) if ckpt.best_model_path else None
    if best is not None:  # reload the best epoch's weights (safe load: plain types only)
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    # Metrics of the selected (best) weights, not of the last epoch early stopping ran.
    metrics = {k: float(v) for k, v in trainer.validate(module, datamodule=dm, verbose=False)[0].items()}
    if (dm.table.split == "test").any():  # type: ignore[union-attr]
        metrics.update({k: float(v) for k, v in trainer.test(module, datamodule=dm, verbose=False)[0].items()})
    stop_unless_global_zero(trainer)  # other ranks took part in fit/validate/test; rank 0 writes

    model_path = save_encoder(module.net, out_dir / ARTIFACT_DIR)
    device = next(module.parameters()).device
    pred = pd.concat([_predict(module, dm, s, device) for s in ("val", "test")], ignore_index=True)
    pred_path = out_dir / PREDICTIONS_FILE
    write_predictions(pred_path, {METHOD: pred})
    roc_path = plot_val_roc(pred[pred["split"] == "val"], dm, out_dir / "val_roc.png")
    (out_dir / "encoder_config.yaml").write_text(yaml.safe_dump(config_dict, sort_keys=False))

    run_id = None
    model_ref = str(model_path)
    if logger is not None:
        run_id = logger.run_id
        client = logger.experiment
        client.log_artifacts(run_id, str(out_dir / ARTIFACT_DIR), ARTIFACT_DIR)
        # predictions.parquet stays local: participant ids are not logged to MLflow.
        for path in (roc_path, out_dir / "encoder_config.yaml"):
            client.log_artifact(run_id, str(path))
        if best is not None:
            client.log_artifact(run_id, str(best), "checkpoints")
        logger.finalize("success")
        model_ref = f"runs:/{run_id}/{ARTIFACT_DIR}"
    log.info("encoder trained in %.1f s (%d epochs); %s", seconds, trainer.current_epoch, model_ref)
    return TrainResult(model_path, model_ref, best, run_id, dm.traits, metrics, pred_path,
                       int(trainer.current_epoch), seconds)
