"""Train one HeLM variant: select participants, fit through the prefix KV cache, keep the best epoch,
calibrate its risks on validation.

:func:`train_helm` is ``spirolm train helm``; :func:`train_variant` is what both it and the main job's
HeLM stage call, on participants chosen by the same :func:`select_participants`, so the same settings
give the same model from either entry point.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd

from experiments.common.config_io import to_plain
from experiments.common.lightning import stop_unless_global_zero
from experiments.common.tracking import experiment_name_for, flat_params, lightning_mlflow_logger
from experiments.data.embeddings import EMBEDDING_COLUMNS, as_embedding_frame, attach_embeddings
from experiments.data.participants import read_participants, subsample
from experiments.data.predictions import risk_columns, scores_frame
from experiments.encoder.embed import embed_cohort
from experiments.helm.calibrate import calibrate_frame, calibrate_on_validation
from experiments.helm.config import HeLMTrainConfig, row_for_variant, row_slug
from experiments.helm.datamodule import HeLMDataModule
from experiments.helm.module import HeLMModule
from experiments.helm.score import score_table
from llm_bridge.kv_cache import PrefixKVStore
from llm_bridge.llm import LoadedLLM, ensure_llm
from llm_bridge.model import HeLM, HeLMConfig
from llm_bridge.projector import fit_embedding_probe
from llm_bridge.serialize import TabularScaler
from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)

_SPLIT_SALT = {"train": 0, "val": 1, "test": 2}


@dataclass
class HeLMRun:
    """One trained variant.

    Attributes:
        method: row name in the comparison table.
        scores: ``eid`` + ``risk_<trait>`` for the evaluated test participants.
        checkpoint: trainable weights + LLM identity (``helm.pt``).
        best_val_auroc: mean validation AUROC of the kept epoch; ``best_epoch`` that epoch (-1: the
            initial, probe-initialised weights).
        seconds: wall time of training; ``seconds_per_step`` mean training step time.
        run_id: MLflow run id (None when not logged).
        kv_store: prefix store statistics ``{participants, hits, misses}``.
        raw_scores: the test risks before calibration (``scores`` are calibrated where a calibrator
            was fitted).
        calibration: per trait, the calibrator fitted on validation or why none was
            (:func:`experiments.helm.calibrate.calibrate_on_validation`).
        val_scores: raw validation risks of the kept epoch (what the epoch and the calibrators were
            chosen on; a selection sweep compares candidates on them).
    """

    method: str
    scores: pd.DataFrame
    checkpoint: Path
    best_val_auroc: float
    best_epoch: int
    seconds: float
    seconds_per_step: float
    run_id: str | None
    kv_store: dict[str, int] = field(default_factory=dict)
    raw_scores: pd.DataFrame | None = None
    calibration: dict[str, dict] = field(default_factory=dict)
    val_scores: pd.DataFrame | None = None


def prepare_participants(cohort_dir: str | Path, embeddings: str | Path | pd.DataFrame | None,
                         encoder_ref: str | Path | None, out_dir: Path, *, need_embeddings: bool,
                         traits: tuple[str, ...] | None = None) -> tuple[pd.DataFrame, tuple[str, ...], int]:
    """Participants joined with embeddings (computed from ``encoder_ref`` when given); see
    :func:`experiments.data.embeddings.attach_embeddings` for who is left out."""
    participants, cohort_traits = read_participants(cohort_dir, traits)
    if embeddings is None and encoder_ref is not None:
        embeddings = embed_cohort(encoder_ref, cohort_dir, out_dir / "embeddings.parquet", progress=None)
    rows, excluded = attach_embeddings(participants, as_embedding_frame(embeddings), needed=need_embeddings)
    return rows, cohort_traits, excluded


def select_participants(rows: pd.DataFrame, cfg: HeLMTrainConfig, seed: int) -> pd.DataFrame:
    """The train split (capped later by the datamodule), and seeded validation and test subsamples.

    Why seeded by ``(seed, split)``: the same settings must pick the same people on every run, and the
    test subsample must not move when ``max_train`` or ``max_val`` change.

    Raises:
        SpirolmInputError: a split without participants that can be scored.
    """
    parts = []
    for split, n in (("train", None), ("val", cfg.max_val), ("test", cfg.max_eval)):
        part = rows[rows["split"] == split].reset_index(drop=True)
        if part.empty:
            raise SpirolmInputError(f"no participant with a spirogram embedding in the {split} split", field="split")
        parts.append(subsample(part, n, [seed, _SPLIT_SALT[split]]))
    return pd.concat(parts, ignore_index=True)


def _trainer(cfg: HeLMTrainConfig, out_dir: Path, logger: object) -> L.Trainer:
    # 32-true: the HeLM itself runs the LLM under its compute precision (autocast), in training and scoring.
    return L.Trainer(max_epochs=cfg.max_epochs, **cfg.distributed.trainer_kwargs(),
                     precision="32-true", logger=logger or False, enable_checkpointing=False,
                     enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=out_dir,
                     log_every_n_steps=5, enable_progress_bar=None)  # type: ignore[arg-type]


def train_variant(
    llm: LoadedLLM,
    participants: pd.DataFrame,
    helm_cfg: HeLMConfig,
    *,
    method: str,
    out_dir: Path,
    cfg: HeLMTrainConfig = HeLMTrainConfig(),
    cohort_dir: Path | None = None,
    tracking_uri: str | None = None,
    kv_store: PrefixKVStore | None = None,
) -> HeLMRun:
    """Train one HeLM variant on ``participants`` (train/val splits), score the test split (if any).

    Args:
        llm: the frozen LLM.
        participants: rows with ``split``, traits, serializer columns and (spirogram variants) ``emb_*``.
        helm_cfg: architecture, with the traits and the seed of every draw.
        method: row name (run name, file names).
        out_dir: writes ``<method>/helm.pt`` and ``<method>/scores_test.parquet``.
        cfg: training settings.
        cohort_dir: for the MLflow experiment name.
        tracking_uri: MLflow store.
        kv_store: a prefix store shared across runs (see :class:`~experiments.helm.module.HeLMModule`).
    """
    seed = helm_cfg.seed
    L.seed_everything(seed, workers=True, verbose=False)
    train_rows = participants[participants["split"] == "train"]
    scaler = TabularScaler.fit(train_rows) if helm_cfg.uses_tabmlp else None
    helm = HeLM(llm, helm_cfg, scaler).set_precision(cfg.precision)
    probe = None
    from_probe = helm_cfg.projector_init.startswith("probe")
    if helm.projector is not None and (from_probe or cfg.distill_weight > 0):
        emb = train_rows[list(EMBEDDING_COLUMNS)].to_numpy(dtype=np.float32)
        probe = fit_embedding_probe(emb, train_rows[list(helm.cfg.traits)].to_numpy(dtype=float),
                                    balanced=cfg.class_weight == "balanced", names=helm.cfg.traits)
        if from_probe:
            helm.projector.init_from_probe(*probe, per_set=helm.token_sets > 1,
                                           free_units=helm_cfg.projector_init == "probe+features")
    dm = HeLMDataModule(helm, participants, batch_size=cfg.batch_size, seed=seed, max_train=cfg.max_train)
    pos_weight = dm.pos_weight() if cfg.class_weight == "balanced" else None
    module = HeLMModule(helm, lr=cfg.lr, weight_decay=cfg.weight_decay, pos_weight=pos_weight,
                        use_prefix_cache=cfg.use_prefix_cache, kv_store_bytes=cfg.kv_store_bytes,
                        gradient_checkpointing=cfg.gradient_checkpointing, teacher=probe,
                        distill_weight=cfg.distill_weight if probe is not None else 0.0, store=kv_store)
    logger = (lightning_mlflow_logger(experiment_name_for(cohort_dir), method, tracking_uri)
              if cfg.log_mlflow and cohort_dir is not None else None)
    trainer = _trainer(cfg, out_dir, logger)
    t0 = time.perf_counter()
    if from_probe:  # the initialisation is already a model: it may be the best one
        trainer.validate(module, datamodule=dm, verbose=False)
    trainer.fit(module, datamodule=dm)
    seconds = time.perf_counter() - t0
    stop_unless_global_zero(trainer)  # other ranks took part in training and validation; rank 0 writes
    steps = max(1, int(trainer.global_step))
    if module.best_state is not None:
        helm.load_state_dict(module.best_state, strict=False)
    val = dm.tables["val"]
    calibration = calibrate_on_validation(helm, val.labels, module.best_val_risks, seed)
    val_scores = (scores_frame(val.eids, {t: module.best_val_risks[:, j] for j, t in enumerate(helm.cfg.traits)})
                  if module.best_val_risks is not None else None)
    run_dir = out_dir / row_slug(method)
    ckpt = helm.save_checkpoint(run_dir / "helm.pt", extra={"best_epoch": module.best_epoch,
                                                            "best_val_auroc": module.best_score,
                                                            "precision": helm.precision, "train": to_plain(cfg),
                                                            "calibration": calibration})
    helm.to(llm.model.device)
    raw = (score_table(helm, dm.tables["test"], cfg.score_batch_size, desc=method, calibrated=False)
           if "test" in dm.tables else pd.DataFrame(columns=["eid", *risk_columns(helm.cfg.traits)]))
    scores = calibrate_frame(helm, raw)
    scores.to_parquet(run_dir / "scores_test.parquet", index=False)
    raw.to_parquet(run_dir / "scores_test_uncalibrated.parquet", index=False)
    store = module.store
    stats = {"participants": len(store), "hits": store.hits, "misses": store.misses} if store else {}
    run_id = None
    if logger is not None:
        run_id = logger.run_id
        logger.log_hyperparams({**flat_params(helm.cfg.to_dict(), "helm."), **flat_params(to_plain(cfg), "train."),
                                **flat_params(llm.identity.to_dict(), "llm.")})
        logger.experiment.log_artifact(run_id, str(ckpt), "helm")
        logger.log_metrics({"best_val_auroc_mean": module.best_score, "train_seconds": seconds,
                            "seconds_per_step": seconds / steps})
    log.info("%s trained in %.0f s (%d steps, best val AUROC %.3f at epoch %d)", method, seconds, steps,
             module.best_score, module.best_epoch)
    return HeLMRun(method, scores, ckpt, module.best_score, module.best_epoch, seconds, seconds / steps, run_id, stats,
                   raw, calibration, val_scores)


def train_helm(
    cohort_dir: str | Path,
    *,
    encoder_ref: str | Path | None = None,
    embeddings: str | Path | pd.DataFrame | None = None,
    llm: str | Path | LoadedLLM | None = None,
    out_dir: str | Path = "runs/helm",
    cfg: HeLMTrainConfig = HeLMTrainConfig(),
    helm_cfg: HeLMConfig = HeLMConfig(),
    traits: tuple[str, ...] | None = None,
    seed: int = 0,
    tracking_uri: str | None = None,
) -> HeLMRun:
    """Train the variant ``helm_cfg.variant`` on a cohort (``spirolm train helm``).

    Args:
        cohort_dir: cohort directory.
        encoder_ref: trained spirogram encoder (embeddings are computed with it), or
        embeddings: a precomputed ``eid + emb_*`` Parquet (or frame).
        llm: ``--llm`` value (default SmolLM2-135M-Instruct) or an already loaded LLM.
        out_dir: output directory.
        cfg: training settings; helm_cfg: architecture (its traits and seed are set from ``traits``
            and ``seed``; the prompt-tuned ``text`` variant gets ``cfg.prompt_tuning_tokens``).
        traits: traits (default: the cohort's).
        seed: seed of every draw.
        tracking_uri: MLflow store (default :func:`experiments.common.tracking.resolve_tracking_uri`).

    Returns:
        :class:`HeLMRun` with the test risks and the checkpoint path.
    """
    loaded = ensure_llm(llm, cfg.num_threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, cohort_traits, _ = prepare_participants(cohort_dir, embeddings, encoder_ref, out,
                                                  need_embeddings=helm_cfg.uses_spiro, traits=traits)
    participants = select_participants(rows, cfg, seed)
    return train_variant(loaded, participants, variant_config(helm_cfg, helm_cfg.variant, cfg, cohort_traits, seed),
                         method=row_for_variant(helm_cfg.variant), out_dir=out, cfg=cfg, cohort_dir=Path(cohort_dir),
                         tracking_uri=tracking_uri)


def variant_config(base: HeLMConfig, variant: str, cfg: HeLMTrainConfig, traits: tuple[str, ...],
                   seed: int) -> HeLMConfig:
    """The architecture one comparison row trains: ``base`` for ``variant``, the run's traits and seed."""
    soft_prompt = cfg.prompt_tuning_tokens if variant == "text" else 0
    return replace(base, variant=variant, traits=tuple(traits), seed=seed, soft_prompt_tokens=soft_prompt)
