"""Train and evaluate HeLM variants: library functions behind ``spirolm train helm``.

* :func:`train_helm` - one trained variant (``text`` prompt-tuned, ``text+spiro``, ``tabmlp+spiro``):
  Lightning training through the prefix KV cache, best-validation trainable weights saved with the
  LLM identity, test risks per participant, MLflow logging.
* :func:`untrained_text_scores` - the text-only zero-shot and few-shot rows (no training).
* :func:`helm_comparison` - every requested row on the same test participants, evaluated by the
  shared harness (:func:`experiments.evaluation.compare_methods`) with the oracle row - the HeLM
  paper's comparison, reproduced in kind. Baseline rows are added by passing their scores in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from experiments.evaluation import ComparisonResult, compare_methods
from experiments.features import EMBEDDING_COLUMNS
from experiments.helm_data import (
    HeLMDataModule, HeLMDataset, HeLMTable, build_table, join_embeddings, load_embedding_frame, read_helm_participants,
)
from experiments.helm_module import HeLMModule
from llm_bridge.llm import LoadedLLM, configure_threads, load_llm
from llm_bridge.model import HeLM, HeLMConfig
from llm_bridge.projector import fit_embedding_probe
from llm_bridge.prompt import few_shot_block, select_few_shot
from llm_bridge.readout import risk
from llm_bridge.serialize import TabularScaler, serialize_records
from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)

#: Comparison rows, named as in the results table.
ROW_ZERO_SHOT = "helm:text-zero-shot"
ROW_FEW_SHOT = "helm:text-few-shot"
ROW_PROMPT_TUNED = "helm:text-prompt-tuned"
ROW_TEXT_SPIRO = "helm:text+spiro"
ROW_TABMLP_SPIRO = "helm:tabmlp+spiro"
ALL_ROWS = (ROW_ZERO_SHOT, ROW_FEW_SHOT, ROW_PROMPT_TUNED, ROW_TEXT_SPIRO, ROW_TABMLP_SPIRO)
TRAINED_ROWS = {ROW_PROMPT_TUNED: "text", ROW_TEXT_SPIRO: "text+spiro", ROW_TABMLP_SPIRO: "tabmlp+spiro"}


@dataclass(frozen=True)
class HeLMTrainConfig:
    """Training settings (the architecture is :class:`llm_bridge.model.HeLMConfig`).

    Attributes:
        max_epochs, batch_size, lr, weight_decay: optimisation. Small batches by default: the
            projector has few weights and the cost is per participant, not per step, so on a CPU
            budget of a few hundred participants more (noisier) steps win (batch 16 -> 8 on the main
            job: HeLM text+spiro 0.905 / 0.820 -> 0.915 / 0.866 at the same wall time).
        distill_weight: weight of distilling a logistic-regression probe of the train split's
            embeddings into the LLM's yes/no logit (spirogram variants; see
            :class:`experiments.helm_module.HeLMModule`); 0 = labels only.
        class_weight: ``balanced`` (cases weighted n_neg/n_pos per trait) or ``none``.
        max_train: cap on training participants (seeded subsample) - the CPU budget knob.
        max_eval: cap on validation and test participants (seeded subsample; None = all).
        use_prefix_cache: train through the no-grad text-prefix KV cache (the CPU speed-up).
        kv_store_bytes: memory for per-participant prefix KV across epochs (0 = recompute).
        gradient_checkpointing: for full-sequence (LoRA) training.
        precision: Lightning precision; ``auto`` = bf16-mixed on GPU, fp32 on CPU.
        prompt_tuning_tokens: soft-prompt length of the prompt-tuned text-only row.
        few_shot_k: in-context examples of the few-shot row (balanced).
        score_batch_size: participants per inference batch.
        seed: every draw (subsamples, shuffling, init, few-shot picks, bootstrap).
        num_threads: torch CPU threads (None: cores available to this process).
        log_mlflow: log params, metrics and the checkpoint to MLflow.
    """

    max_epochs: int = 3
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 0.0
    distill_weight: float = 1.0
    class_weight: str = "balanced"
    max_train: int | None = None
    max_eval: int | None = None
    use_prefix_cache: bool = True
    kv_store_bytes: int = 3 << 30
    gradient_checkpointing: bool = False
    precision: str = "auto"
    prompt_tuning_tokens: int = 8
    few_shot_k: int = 4
    score_batch_size: int = 32
    seed: int = 0
    num_threads: int | None = None
    log_mlflow: bool = True

    def __post_init__(self) -> None:
        if self.class_weight not in ("balanced", "none"):
            raise SpirolmInputError("class_weight must be 'balanced' or 'none'", field="class_weight")
        if self.max_epochs < 1 or self.batch_size < 1:
            raise SpirolmInputError("max_epochs and batch_size must be >= 1", field="max_epochs")


@dataclass
class HeLMRun:
    """One trained variant.

    Attributes:
        method: row name in the comparison table.
        scores: ``eid`` + one risk column per trait, for the evaluated test participants.
        checkpoint: trainable weights + LLM identity (``helm.pt``).
        best_val_auroc: mean validation AUROC of the kept epoch; ``best_epoch`` that epoch.
        seconds: wall time of training; ``seconds_per_step`` mean training step time.
        run_id: MLflow run id (None when not logged).
        kv_store: prefix store statistics ``{participants, hits, misses}``.
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


@dataclass
class HeLMComparison:
    """Everything :func:`helm_comparison` produced."""

    comparison: ComparisonResult
    scores: dict[str, pd.DataFrame]
    runs: dict[str, HeLMRun]
    n_excluded_no_embedding: int
    files: list[Path]


# ----------------------------------------------------------------------------- helpers


def _subsample(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    if n is None or len(df) <= n:
        return df
    keep = np.sort(np.random.default_rng(seed).choice(len(df), n, replace=False))
    return df.iloc[keep].reset_index(drop=True)


def prepare_participants(cohort_dir: str | Path, embeddings: str | Path | pd.DataFrame | None,
                         encoder_ref: str | Path | None, out_dir: Path, *, need_embeddings: bool,
                         traits: Sequence[str] | None = None) -> tuple[pd.DataFrame, tuple[str, ...], int]:
    """Participants joined with embeddings (computed from ``encoder_ref`` when given)."""
    participants, cohort_traits = read_helm_participants(cohort_dir, tuple(traits) if traits else None)
    if embeddings is None and encoder_ref is not None:
        from experiments.train_encoder import embed_cohort

        embeddings = embed_cohort(encoder_ref, cohort_dir, out_dir / "embeddings.parquet", progress=None)
    emb = load_embedding_frame(embeddings)
    rows, excluded = join_embeddings(participants, emb, needed=need_embeddings)
    return rows, cohort_traits, excluded


def score_table(helm: HeLM, table: HeLMTable, batch_size: int = 32, desc: str = "score") -> pd.DataFrame:
    """Risks of every participant of ``table``: one shared text prefix per participant for all traits."""
    ds = HeLMDataset(table)
    out = []
    helm.eval()
    with torch.no_grad():
        for start in tqdm(range(0, len(ds), batch_size), desc=desc, unit="batch", disable=None):
            batch = ds.collate(list(range(start, min(start + batch_size, len(ds)))))
            if helm.uses_lora:
                pairs = helm.score_full(batch["prefix_ids"], batch["embedding"], batch["tab"], eids=batch["eid"])
            else:
                state = helm.encode_prefix(batch["prefix_ids"])
                pairs = helm.score_prefix(state, batch["embedding"], batch["tab"], eids=batch["eid"])
            out.append(risk(pairs).cpu().numpy())
    values = np.concatenate(out, axis=0) if out else np.zeros((0, len(helm.cfg.traits)))
    return pd.DataFrame({"eid": table.eids, **{t: values[:, j] for j, t in enumerate(helm.cfg.traits)}})


def _trainer(cfg: HeLMTrainConfig, out_dir: Path, logger: object) -> L.Trainer:
    cuda = torch.cuda.is_available()
    precision = cfg.precision if cfg.precision != "auto" else ("bf16-mixed" if cuda else "32-true")
    return L.Trainer(max_epochs=cfg.max_epochs, accelerator="gpu" if cuda else "cpu", devices=1,
                     precision=precision, logger=logger or False, enable_checkpointing=False,
                     enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=out_dir,
                     log_every_n_steps=5, enable_progress_bar=None)  # type: ignore[arg-type]


def _mlflow_logger(cohort_dir: Path, run_name: str, tracking_uri: str | None) -> object:
    from experiments.mlflow_utils import experiment_name_for
    from experiments.tracking import lightning_mlflow_logger

    return lightning_mlflow_logger(experiment_name_for(cohort_dir), run_name, tracking_uri)


def _flat(d: Mapping, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# ----------------------------------------------------------------------------- training


def row_slug(row: str) -> str:
    """File-name form of a row name: ``helm:text+spiro`` -> ``helm_text_spiro``."""
    return row.replace(":", "_").replace("+", "_")


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
) -> HeLMRun:
    """Train one HeLM variant on ``participants`` (train/val splits), score the test split.

    Args:
        llm: the frozen LLM.
        participants: rows with ``split``, traits, serializer columns and (spirogram variants) ``emb_*``.
        helm_cfg: architecture.
        method: row name (run name, file names).
        out_dir: writes ``<method>/helm.pt`` and ``<method>/scores_test.parquet``.
        cfg: training settings.
        cohort_dir: for the MLflow experiment name.
        tracking_uri: MLflow store.
    """
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    train_rows = participants[participants["split"] == "train"]
    scaler = TabularScaler.fit(train_rows) if helm_cfg.uses_tabmlp else None
    helm = HeLM(llm, replace(helm_cfg, seed=cfg.seed), scaler)
    probe = None
    if helm.projector is not None and (helm_cfg.projector_init == "probe" or cfg.distill_weight > 0):
        emb = train_rows[list(EMBEDDING_COLUMNS)].to_numpy(dtype=np.float32)
        probe = fit_embedding_probe(emb, train_rows[list(helm.cfg.traits)].to_numpy(dtype=float),
                                    balanced=cfg.class_weight == "balanced", names=helm.cfg.traits)
        if helm_cfg.projector_init == "probe":
            helm.projector.init_from_probe(*probe, per_set=helm.token_sets > 1)
    dm = HeLMDataModule(helm, participants, batch_size=cfg.batch_size, seed=cfg.seed, max_train=cfg.max_train)
    pos_weight = dm.pos_weight() if cfg.class_weight == "balanced" else None
    module = HeLMModule(helm, lr=cfg.lr, weight_decay=cfg.weight_decay, pos_weight=pos_weight,
                        use_prefix_cache=cfg.use_prefix_cache, kv_store_bytes=cfg.kv_store_bytes,
                        gradient_checkpointing=cfg.gradient_checkpointing, teacher=probe,
                        distill_weight=cfg.distill_weight if probe is not None else 0.0)
    logger = _mlflow_logger(cohort_dir, method, tracking_uri) if cfg.log_mlflow and cohort_dir is not None else None
    trainer = _trainer(cfg, out_dir, logger)
    t0 = time.perf_counter()
    if helm_cfg.projector_init == "probe":  # the initialisation is already a model: it may be the best one
        trainer.validate(module, datamodule=dm, verbose=False)
    trainer.fit(module, datamodule=dm)
    seconds = time.perf_counter() - t0
    steps = max(1, int(trainer.global_step))
    if module.best_state is not None:
        helm.load_state_dict(module.best_state, strict=False)
    run_dir = out_dir / row_slug(method)
    ckpt = helm.save_checkpoint(run_dir / "helm.pt", extra={"best_epoch": module.best_epoch,
                                                            "best_val_auroc": module.best_score,
                                                            "train": asdict(cfg)})
    helm.to(llm.model.device)
    scores = score_table(helm, dm.tables["test"], cfg.score_batch_size, desc=method) if "test" in dm.tables else \
        pd.DataFrame(columns=["eid", *helm.cfg.traits])
    scores.to_parquet(run_dir / "scores_test.parquet", index=False)
    store = module.store
    stats = {"participants": len(store), "hits": store.hits, "misses": store.misses} if store else {}
    run_id = None
    if logger is not None:
        run_id = logger.run_id
        logger.log_hyperparams({**_flat(helm.cfg.to_dict(), "helm."), **_flat(asdict(cfg), "train."),
                                **_flat(llm.identity.to_dict(), "llm.")})
        logger.experiment.log_artifact(run_id, str(ckpt), "helm")
        logger.log_metrics({"best_val_auroc_mean": module.best_score, "train_seconds": seconds,
                            "seconds_per_step": seconds / steps})
    log.info("%s trained in %.0f s (%d steps, best val AUROC %.3f at epoch %d)", method, seconds, steps,
             module.best_score, module.best_epoch)
    return HeLMRun(method, scores, ckpt, module.best_score, module.best_epoch, seconds, seconds / steps, run_id, stats)


def untrained_text_scores(llm: LoadedLLM, participants: pd.DataFrame, helm_cfg: HeLMConfig, *, few_shot_k: int = 0,
                          seed: int = 0, batch_size: int = 32) -> pd.DataFrame:
    """Zero-shot (``few_shot_k=0``) or few-shot text-only risks of the test split, one trait at a time.

    Zero-shot scores every trait from one shared text prefix per participant (one pass). Few-shot
    prompts differ per trait (their examples carry that trait's answers), so each trait is a
    separate pass; the balanced examples come from the train split and never from the test split.
    """
    test = participants[participants["split"] == "test"].reset_index(drop=True)
    out = pd.DataFrame({"eid": test["eid"].to_numpy()})
    if not few_shot_k:
        helm = HeLM(llm, replace(helm_cfg, variant="text", soft_prompt_tokens=0))
        scored = score_table(helm, build_table(helm, test), batch_size, desc="zero-shot")
        for trait in helm_cfg.traits:
            out[trait] = scored[trait].to_numpy()
        return out
    for trait in helm_cfg.traits:
        helm = HeLM(llm, replace(helm_cfg, variant="text", soft_prompt_tokens=0, traits=(trait,)))
        examples = ""
        if few_shot_k:
            ex = select_few_shot(participants, trait, few_shot_k, seed)
            examples = few_shot_block(serialize_records(ex, helm_cfg.serializer).tolist(),
                                      ex[trait].astype(int).tolist(), trait, helm_cfg.prompt)
        table = build_table(helm, test, examples=examples)
        out[trait] = score_table(helm, table, batch_size, desc=f"{trait} {'few' if few_shot_k else 'zero'}-shot")[trait]
    return out


def train_helm(
    cohort_dir: str | Path,
    *,
    encoder_ref: str | Path | None = None,
    embeddings: str | Path | pd.DataFrame | None = None,
    llm: str | Path | LoadedLLM | None = None,
    variant: str = "text+spiro",
    out_dir: str | Path = "runs/helm",
    cfg: HeLMTrainConfig = HeLMTrainConfig(),
    helm_cfg: HeLMConfig | None = None,
    traits: Sequence[str] | None = None,
    tracking_uri: str | None = None,
) -> HeLMRun:
    """Train one HeLM variant on a cohort (``spirolm train helm``).

    Args:
        cohort_dir: cohort directory.
        encoder_ref: trained spirogram encoder (embeddings are computed with it), or
        embeddings: a precomputed ``eid + emb_*`` Parquet (or frame).
        llm: ``--llm`` value (default SmolLM2-135M-Instruct) or an already loaded LLM.
        variant: ``text`` (prompt-tuned), ``text+spiro`` or ``tabmlp+spiro``.
        out_dir: output directory.
        cfg: training settings; helm_cfg: architecture (variant and traits are overridden).
        traits: traits (default: the cohort's).
        tracking_uri: MLflow store (default :func:`experiments.tracking.resolve_tracking_uri`).

    Returns:
        :class:`HeLMRun` with the test risks and the checkpoint path.
    """
    configure_threads(cfg.num_threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = helm_cfg or HeLMConfig()
    need = HeLMConfig(variant=variant).uses_spiro
    rows, cohort_traits, _ = prepare_participants(cohort_dir, embeddings, encoder_ref, out, need_embeddings=need,
                                                  traits=traits)
    rows = _eval_subsample(rows, cfg)
    loaded = llm if isinstance(llm, LoadedLLM) else load_llm(llm)
    changes: dict[str, object] = {"variant": variant, "traits": tuple(traits or cohort_traits)}
    if variant == "text" and not base.soft_prompt_tokens:
        changes["soft_prompt_tokens"] = cfg.prompt_tuning_tokens
    method = ROW_PROMPT_TUNED if variant == "text" else f"helm:{variant}"
    return train_variant(loaded, rows, replace(base, **changes), method=method, out_dir=out, cfg=cfg,
                         cohort_dir=Path(cohort_dir), tracking_uri=tracking_uri)


def _eval_subsample(rows: pd.DataFrame, cfg: HeLMTrainConfig) -> pd.DataFrame:
    """Cap val/test participants (seeded) so CPU scoring fits the budget; train is capped by the datamodule."""
    if cfg.max_eval is None:
        return rows
    parts = [rows[rows["split"] == "train"]]
    parts += [_subsample(rows[rows["split"] == s].reset_index(drop=True), cfg.max_eval, cfg.seed + i)
              for i, s in enumerate(("val", "test"), start=1)]
    return pd.concat(parts, ignore_index=True)


def helm_comparison(
    cohort_dir: str | Path,
    *,
    encoder_ref: str | Path | None = None,
    embeddings: str | Path | pd.DataFrame | None = None,
    llm: str | Path | LoadedLLM | None = None,
    rows: Sequence[str] = ALL_ROWS,
    out_dir: str | Path = "runs/helm",
    cfg: HeLMTrainConfig = HeLMTrainConfig(),
    helm_cfg: HeLMConfig | None = None,
    traits: Sequence[str] | None = None,
    extra_scores: Mapping[str, pd.DataFrame] | None = None,
    n_bootstrap: int = 1000,
    tracking_uri: str | None = None,
) -> HeLMComparison:
    """Every requested HeLM row (and ``extra_scores``, e.g. baselines) on the same test participants.

    Participants without a spirogram embedding are excluded from every row (counted), so all rows
    are scored on exactly the same people; ``extra_scores`` are restricted to them.

    Returns:
        :class:`HeLMComparison` (tables written to ``out_dir``: ``helm_results.md/.csv``).
    """
    unknown = [r for r in rows if r not in ALL_ROWS]
    if unknown:
        raise SpirolmInputError(f"unknown HeLM row {unknown[0]!r}; choose from {', '.join(ALL_ROWS)}", field="rows")
    configure_threads(cfg.num_threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    need = any(r in (ROW_TEXT_SPIRO, ROW_TABMLP_SPIRO) for r in rows)
    participants, cohort_traits, excluded = prepare_participants(cohort_dir, embeddings, encoder_ref, out,
                                                                 need_embeddings=need, traits=traits)
    participants = _eval_subsample(participants, cfg)
    loaded = llm if isinstance(llm, LoadedLLM) else load_llm(llm)
    base = replace(helm_cfg or HeLMConfig(), traits=tuple(traits or cohort_traits))
    scores: dict[str, pd.DataFrame] = {}
    runs: dict[str, HeLMRun] = {}
    if ROW_ZERO_SHOT in rows:
        scores[ROW_ZERO_SHOT] = untrained_text_scores(loaded, participants, base, seed=cfg.seed,
                                                      batch_size=cfg.score_batch_size)
    if ROW_FEW_SHOT in rows:
        scores[ROW_FEW_SHOT] = untrained_text_scores(loaded, participants, base, few_shot_k=cfg.few_shot_k,
                                                     seed=cfg.seed, batch_size=max(1, cfg.score_batch_size // 4))
    for row, variant in TRAINED_ROWS.items():
        if row in rows:
            vcfg = replace(base, variant=variant,
                           soft_prompt_tokens=cfg.prompt_tuning_tokens if variant == "text" else base.soft_prompt_tokens)
            runs[row] = train_variant(loaded, participants, vcfg, method=row, out_dir=out, cfg=cfg,
                                      cohort_dir=Path(cohort_dir), tracking_uri=tracking_uri)
            scores[row] = runs[row].scores
    test = participants[participants["split"] == "test"].reset_index(drop=True)
    for name, df in (extra_scores or {}).items():
        scores[name] = df[df["eid"].isin(test["eid"])].reset_index(drop=True)
    comparison = compare_methods(test, scores, list(base.traits), n_bootstrap=n_bootstrap, seed=cfg.seed)
    files = comparison.save_tables(out, stem="helm_results")
    return HeLMComparison(comparison, scores, runs, excluded, files)
