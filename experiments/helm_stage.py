"""The HeLM stage of the main job (``spirolm run``): HeLM rows scored under a CPU budget.

Why a stage of its own and not :func:`experiments.train_helm.helm_comparison`: the main job already
has one evaluation stage that puts every model in one table. This stage only *produces* the HeLM
rows' test risks (``{method: DataFrame[eid, <trait>...]}``, the same shape as the baselines' and
the encoder's) and writes them next to its timings; the evaluation stage compares them.

CPU cost decides the sizes. A 135M-parameter LLM over a ~180-token record runs at about 2-3
participants/s per forward on 2 cores, and a training step (soft tokens + question with
gradients, prefix from the KV store) costs about as much again. So the stage trains on a seeded
subsample of the train split (``max_train``), selects the epoch on a small validation subsample
(``max_val``) and scores a seeded subsample of the QC-passing test split (``max_eval``). **Every
HeLM row scores exactly the same test participants** (:attr:`HeLMStageResult.eval_eids`); the
evaluation stage must compare the other methods on that same subsample for the HeLM table
(:func:`restrict_to_eids` does it), because AUROCs on different people are not comparable.

Outputs in ``out_dir``: ``predictions_test.parquet`` (wide: ``eid`` + ``<trait>__<method>``, as the
baselines write it), ``helm_stage.json`` (settings, participant counts, seconds per row) and each
trained row's ``helm.pt`` / ``scores_test.parquet`` (see :func:`experiments.train_helm.train_variant`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ConfigDict

from experiments.train_helm import (
    ALL_ROWS, ROW_FEW_SHOT, ROW_TEXT_SPIRO, ROW_ZERO_SHOT, TRAINED_ROWS, HeLMTrainConfig, prepare_participants,
    row_slug, train_variant, untrained_text_scores,
)
from llm_bridge.llm import LoadedLLM, configure_threads, load_llm
from llm_bridge.model import HeLMConfig
from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions_test.parquet"
SUMMARY_FILE = "helm_stage.json"


@dataclass(frozen=True)
class HeLMStageSettings:
    """The main job's HeLM section (``RunConfig.helm``). Defaults fit ~8 min on 2 CPU cores.

    Attributes:
        enabled: run the stage.
        llm: ``--llm`` value (None: the embedded SmolLM2-135M-Instruct).
        rows: comparison rows to produce (names from :data:`experiments.train_helm.ALL_ROWS`).
            The default leaves out few-shot (its prompts are ~5x longer: ~2 min per 100 test
            participants and trait on 2 cores) and the prompt-tuned / tabmlp rows.
        max_train: training participants (seeded subsample of the train split).
        max_val: validation participants scored after every epoch (best epoch kept).
        max_eval: test participants scored by every HeLM row (seeded subsample of the test split
            with a spirogram embedding); None = all of them (hours on CPU, minutes on a GPU).
        max_epochs, batch_size, lr, distill_weight, class_weight: optimisation (see
            :class:`experiments.train_helm.HeLMTrainConfig`; batch 8 gives the 160 default training
            participants 40 steps in 2 epochs at the cost of 20 of batch 16).
        num_soft_tokens: spirogram soft tokens ``k``.
        projector_init: ``random`` or ``probe`` (see :class:`llm_bridge.model.HeLMConfig`).
        tokens_per_trait: one set of ``k`` soft tokens per trait (see :class:`llm_bridge.model.HeLMConfig`).
        few_shot_k: in-context examples of the few-shot row.
        prompt_tuning_tokens: soft-prompt length of the prompt-tuned row.
        kv_store_gb: memory for per-participant prefix KV across epochs (~8 MB per participant).
        score_batch_size: participants per inference batch.
        num_threads: torch CPU threads (None: the cores this process may use).
        log_mlflow: log the trained rows to MLflow like the other models.
    """

    __pydantic_config__ = ConfigDict(extra="forbid")
    enabled: bool = True
    llm: str | None = None
    rows: tuple[str, ...] = (ROW_ZERO_SHOT, ROW_TEXT_SPIRO)
    max_train: int | None = 256
    max_val: int | None = 96
    max_eval: int | None = 192
    max_epochs: int = 2
    batch_size: int = 8
    lr: float = 3e-3
    distill_weight: float = 1.0
    class_weight: str = "balanced"
    num_soft_tokens: int = 4
    tokens_per_trait: bool = True
    projector_init: str = "probe"
    few_shot_k: int = 4
    prompt_tuning_tokens: int = 8
    kv_store_gb: float = 3.0
    score_batch_size: int = 16
    num_threads: int | None = None
    log_mlflow: bool = True

    def __post_init__(self) -> None:
        unknown = [r for r in self.rows if r not in ALL_ROWS]
        if unknown:
            raise SpirolmInputError(f"unknown HeLM row {unknown[0]!r}; choose from {', '.join(ALL_ROWS)}",
                                    field="helm.rows")
        for name in ("max_train", "max_val", "max_eval"):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise SpirolmInputError(f"{name} must be >= 2 (or null for no cap), got {value}", field=f"helm.{name}")
        if self.kv_store_gb < 0:
            raise SpirolmInputError("kv_store_gb must be >= 0", field="helm.kv_store_gb")

    def train_config(self, seed: int) -> HeLMTrainConfig:
        """The :class:`HeLMTrainConfig` these settings stand for (val/test are capped here, not there)."""
        return HeLMTrainConfig(max_epochs=self.max_epochs, batch_size=self.batch_size, lr=self.lr,
                               distill_weight=self.distill_weight,
                               class_weight=self.class_weight, max_train=self.max_train, max_eval=None,
                               kv_store_bytes=int(self.kv_store_gb * (1 << 30)),
                               prompt_tuning_tokens=self.prompt_tuning_tokens, few_shot_k=self.few_shot_k,
                               score_batch_size=self.score_batch_size, seed=seed, num_threads=self.num_threads,
                               log_mlflow=self.log_mlflow)


@dataclass
class HeLMStageResult:
    """What the stage produced.

    Attributes:
        scores: ``{method: DataFrame[eid, <trait>...]}`` for exactly :attr:`eval_eids`.
        eval_eids: the test participants every HeLM row scored (sorted as in the cohort).
        traits: traits scored.
        seconds: wall seconds per row, plus ``load_llm`` and ``total``.
        counts: participants used: ``train``, ``val``, ``test``, ``test_available`` (before the cap),
            ``excluded_no_embedding``.
        files: files written.
    """

    scores: dict[str, pd.DataFrame]
    eval_eids: np.ndarray
    traits: tuple[str, ...]
    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def subsample_split(rows: pd.DataFrame, split: str, n: int | None, seed: int) -> pd.DataFrame:
    """A seeded subsample of one split, in cohort order (all of it when ``n`` is None or larger).

    Why seeded by ``(seed, split)``: the same settings must pick the same people on every run, and
    the test subsample must not move when ``max_train`` or ``max_val`` change.
    """
    part = rows[rows["split"] == split].reset_index(drop=True)
    if n is None or len(part) <= n:
        return part
    salt = {"train": 0, "val": 1, "test": 2}.get(split, 3)
    keep = np.sort(np.random.default_rng([seed, salt]).choice(len(part), n, replace=False))
    return part.iloc[keep].reset_index(drop=True)


def select_participants(rows: pd.DataFrame, settings: HeLMStageSettings, seed: int) -> pd.DataFrame:
    """Train (capped later by the datamodule), validation and test participants for the stage."""
    for split in ("train", "val", "test"):
        if not (rows["split"] == split).any():
            raise SpirolmInputError(f"no participant with a spirogram embedding in the {split} split", field="split")
    parts = [rows[rows["split"] == "train"].reset_index(drop=True),
             subsample_split(rows, "val", settings.max_val, seed),
             subsample_split(rows, "test", settings.max_eval, seed)]
    return pd.concat(parts, ignore_index=True)


def _wide(scores: Mapping[str, pd.DataFrame], traits: Sequence[str], eids: np.ndarray) -> pd.DataFrame:
    """``eid`` + ``<trait>__<method>`` columns (the baselines' ``predictions_test.parquet`` layout)."""
    out = pd.DataFrame({"eid": eids})
    for method, df in scores.items():
        indexed = df.set_index("eid").reindex(eids)
        for trait in traits:
            out[f"{trait}__{method}"] = indexed[trait].to_numpy(dtype=float)
    return out


def helm_stage_scores(
    settings: HeLMStageSettings,
    cohort_dir: str | Path,
    embeddings_path: str | Path,
    out_dir: str | Path,
    seed: int = 0,
    *,
    llm: LoadedLLM | None = None,
    tracking_uri: str | None = None,
    resume: bool = False,
) -> HeLMStageResult:
    """Produce the HeLM rows' test risks for the main job's comparison.

    Args:
        settings: the ``helm`` config section.
        cohort_dir: the run's cohort directory.
        embeddings_path: the encoder stage's ``embeddings.parquet`` (``eid`` + ``emb_*``).
        out_dir: where to write (normally the stage's temporary build directory).
        seed: the run's seed (subsamples, initialisation, shuffling, few-shot picks).
        llm: an already loaded LLM (tests); default: load ``settings.llm``.
        tracking_uri: MLflow store (default :func:`experiments.tracking.resolve_tracking_uri`).
        resume: reuse rows an interrupted call finished into ``out_dir`` (``rows/<row>.parquet``; the
            caller guarantees the same settings, as the main job's stage key does).

    Returns:
        :class:`HeLMStageResult`; every row scores the same :attr:`HeLMStageResult.eval_eids`.

    Raises:
        SpirolmInputError: an unknown row, missing embeddings file, a split without embedded
            participants, non-finite embeddings (naming the eid), an LLM that cannot be loaded.
    """
    t_start = time.perf_counter()
    configure_threads(settings.num_threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not Path(embeddings_path).exists():
        raise SpirolmInputError("embeddings file not found (run the encoder stage first)", file=embeddings_path)
    cfg = settings.train_config(seed)
    rows, traits, excluded = prepare_participants(cohort_dir, embeddings_path, None, out, need_embeddings=True)
    participants = select_participants(rows, settings, seed)
    test = participants[participants["split"] == "test"]
    eval_eids = test["eid"].to_numpy(dtype=np.int64)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    loaded = llm if llm is not None else load_llm(settings.llm)
    seconds["load_llm"] = time.perf_counter() - t0
    base = HeLMConfig(traits=tuple(traits), num_soft_tokens=settings.num_soft_tokens,
                      tokens_per_trait=settings.tokens_per_trait, projector_init=settings.projector_init, seed=seed)
    scores: dict[str, pd.DataFrame] = {}
    rows_dir = out / "rows"
    rows_dir.mkdir(exist_ok=True)
    for row in settings.rows:
        t0 = time.perf_counter()
        done = rows_dir / f"{row_slug(row)}.parquet"
        if resume and done.exists():  # finished before an interruption
            scores[row] = pd.read_parquet(done)
            log.info("HeLM stage: %s reused from the interrupted run", row)
        elif row in (ROW_ZERO_SHOT, ROW_FEW_SHOT):
            k = settings.few_shot_k if row == ROW_FEW_SHOT else 0
            scores[row] = untrained_text_scores(loaded, participants, base, few_shot_k=k, seed=seed,
                                                batch_size=settings.score_batch_size)
        else:
            variant = TRAINED_ROWS[row]
            vcfg = replace(base, variant=variant,
                           soft_prompt_tokens=settings.prompt_tuning_tokens if variant == "text" else 0)
            scores[row] = train_variant(loaded, participants, vcfg, method=row, out_dir=out, cfg=cfg,
                                        cohort_dir=Path(cohort_dir), tracking_uri=tracking_uri).scores
        seconds[row] = time.perf_counter() - t0
        _check_scored(scores[row], row, eval_eids)
        tmp = done.with_suffix(".tmp")
        scores[row].to_parquet(tmp, index=False)
        tmp.replace(done)  # atomic: a kill never leaves a half-written row file to be "resumed"
        log.info("HeLM stage: %s on %d test participants in %.0f s", row, len(eval_eids), seconds[row])
    seconds["total"] = time.perf_counter() - t_start
    n_train = int((participants["split"] == "train").sum())
    counts = {"train": min(n_train, settings.max_train) if settings.max_train is not None else n_train,
              "val": int((participants["split"] == "val").sum()), "test": len(eval_eids),
              "test_available": int((rows["split"] == "test").sum()), "excluded_no_embedding": int(excluded)}
    pred_path = out / PREDICTIONS_FILE
    _wide(scores, traits, eval_eids).to_parquet(pred_path, index=False)
    summary_path = out / SUMMARY_FILE
    summary_path.write_text(json.dumps({"settings": asdict(settings), "seed": seed, "llm": loaded.identity.to_dict(),
                                        "traits": list(traits), "counts": counts, "seconds": seconds}, indent=1))
    return HeLMStageResult(scores, eval_eids, tuple(traits), seconds, counts, [pred_path, summary_path])


def _check_scored(df: pd.DataFrame, row: str, eids: np.ndarray) -> None:
    """Every HeLM row must score exactly the evaluated participants (a mismatch is a bug upstream)."""
    got = np.sort(df["eid"].to_numpy(dtype=np.int64))
    if got.shape != eids.shape or not np.array_equal(got, np.sort(eids)):
        raise RuntimeError(f"HeLM row {row} scored {len(got)} participants, expected the {len(eids)} evaluated ones")


def load_stage_scores(stage_dir: str | Path) -> dict[str, pd.DataFrame]:
    """``{method: DataFrame[eid, <trait>...]}`` from a finished stage's ``predictions_test.parquet``."""
    path = Path(stage_dir) / PREDICTIONS_FILE
    if not path.exists():
        raise SpirolmInputError("HeLM stage predictions not found", file=path)
    wide = pd.read_parquet(path)
    methods: dict[str, pd.DataFrame] = {}
    for col in wide.columns.drop("eid"):
        trait, method = col.split("__", 1)
        methods.setdefault(method, wide[["eid"]].copy())[trait] = wide[col].to_numpy()
    return methods


def restrict_to_eids(participants: pd.DataFrame, methods: Mapping[str, pd.DataFrame],
                     eids: Sequence[int] | np.ndarray) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The evaluated participants and every method's scores cut to ``eids`` (the HeLM subsample).

    Why: :func:`experiments.evaluation.compare_methods` needs every row to score exactly the same
    people; baselines and the encoder score the whole test split, the HeLM rows a subsample.

    Raises:
        SpirolmInputError: a HeLM-scored participant is not among ``participants`` (e.g. a QC failure).
    """
    wanted = pd.Index(np.asarray(eids, dtype=np.int64))
    missing = ~wanted.isin(participants["eid"])
    if missing.any():
        raise SpirolmInputError(f"{int(missing.sum())} HeLM-scored participant(s) are not in the evaluated set",
                                eid=int(wanted[missing][0]), field="eid")
    keep = participants[participants["eid"].isin(wanted)].reset_index(drop=True)
    return keep, {m: s[s["eid"].isin(wanted)].reset_index(drop=True) for m, s in methods.items()}
