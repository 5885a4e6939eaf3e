"""The HeLM stage of the main job: every requested HeLM row scored on the same test participants.

Why a stage that only *produces* scores: the main job has one evaluation stage that puts every model
in one table. This stage writes the HeLM rows' test risks (the prediction-table schema, like the
baselines' and the encoder's) next to its timings; the evaluation stage compares them. **Every HeLM row
scores exactly the same test participants** (:attr:`HeLMStageResult.eval_eids`), and the evaluation
cuts the other methods to that same subsample (:func:`restrict_to_eids`): AUROCs on different people
are not comparable.

Outputs in ``out_dir``: ``predictions_test.parquet``, ``helm_stage.json`` (settings, participant counts,
seconds per row, the calibrators each trained row fitted on validation) and each trained row's
``helm.pt`` / ``scores_test.parquet``. A trained row's risks are calibrated on validation; its raw risks
are a row of their own (:func:`~experiments.helm.config.uncalibrated_row`), so the report shows Brier
score and calibration before and after.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.common.config_io import to_plain
from experiments.data.predictions import read_predictions, write_predictions
from experiments.evaluate.harness import ComparisonResult, compare_methods
from experiments.helm.config import ROW_FEW_SHOT, TRAINED_ROWS, UNTRAINED_ROWS, row_slug, uncalibrated_row
from experiments.helm.score import untrained_text_scores
from experiments.helm.train import prepare_participants, select_participants, train_variant, variant_config
from experiments.pipeline.config import HeLMStageConfig
from llm_bridge import precision as P
from llm_bridge.llm import LoadedLLM, ensure_llm
from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions_test.parquet"
SUMMARY_FILE = "helm_stage.json"


@dataclass
class HeLMStageResult:
    """What the stage produced.

    Attributes:
        scores: ``{method: eid + risk_<trait>}`` for exactly :attr:`eval_eids`.
        eval_eids: the test participants every HeLM row scored (sorted as in the cohort).
        traits: traits scored.
        seconds: wall seconds per row, plus ``load_llm`` and ``total``.
        counts: participants used: ``train``, ``val``, ``test``, ``test_available`` (before the cap),
            ``excluded_no_embedding``, ``teacher_probe_train`` (what the spirogram rows' probe was fitted on).
        files: files written.
    """

    scores: dict[str, pd.DataFrame]
    eval_eids: np.ndarray
    traits: tuple[str, ...]
    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def helm_stage_scores(
    settings: HeLMStageConfig,
    cohort_dir: str | Path,
    embeddings_path: str | Path | None,
    out_dir: str | Path,
    seed: int = 0,
    *,
    traits: tuple[str, ...] | None = None,
    llm: LoadedLLM | None = None,
    tracking_uri: str | None = None,
    resume: bool = False,
) -> HeLMStageResult:
    """Produce the HeLM rows' test risks for the main job's comparison.

    Args:
        settings: the ``helm`` config section.
        cohort_dir: the run's cohort directory.
        embeddings_path: the encoder stage's ``embeddings.parquet`` (``eid`` + ``emb_*``); None only
            when every requested row is text-only.
        out_dir: where to write (normally the stage's temporary build directory).
        seed: the run's seed (subsamples, initialisation, shuffling, few-shot picks).
        traits: traits (None: the cohort's).
        llm: an already loaded LLM (tests); default: load ``settings.llm``.
        tracking_uri: MLflow store (default :func:`experiments.common.tracking.resolve_tracking_uri`).
        resume: reuse rows an interrupted call finished into ``out_dir`` (``rows/<row>.parquet``; the
            caller guarantees the same settings, as the main job's stage key does).

    Raises:
        SpirolmInputError: a missing embeddings file, a split without embedded participants,
            non-finite embeddings (naming the eid), an LLM that cannot be loaded.
    """
    t_start = time.perf_counter()
    train_cfg = settings.train
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    needs_spiro = any(TRAINED_ROWS.get(r, "text").endswith("+spiro") for r in settings.rows)
    if embeddings_path is not None and not Path(embeddings_path).exists():
        raise SpirolmInputError("embeddings file not found (run the encoder stage first)", file=embeddings_path)
    rows, cohort_traits, excluded = prepare_participants(cohort_dir, embeddings_path, None, out,
                                                         need_embeddings=needs_spiro, traits=traits)
    participants = select_participants(rows, train_cfg, seed)
    eval_eids = participants.loc[participants["split"] == "test", "eid"].to_numpy(dtype=np.int64)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    loaded = ensure_llm(llm if llm is not None else settings.llm, train_cfg.num_threads)
    seconds["load_llm"] = time.perf_counter() - t0
    scores: dict[str, pd.DataFrame] = {}
    calibration: dict[str, dict] = {}
    rows_dir = out / "rows"
    rows_dir.mkdir(exist_ok=True)
    for row in settings.rows:
        t0 = time.perf_counter()
        done = rows_dir / f"{row_slug(row)}.parquet"
        if resume and done.exists():  # finished before an interruption
            scores[row] = pd.read_parquet(done)
            log.info("HeLM stage: %s reused from the interrupted run", row)
            if row in TRAINED_ROWS:
                raw_done = rows_dir / f"{row_slug(uncalibrated_row(row))}.parquet"
                scores[uncalibrated_row(row)] = pd.read_parquet(raw_done)
                calibration[row] = json.loads(raw_done.with_suffix(".json").read_text())
        elif row in UNTRAINED_ROWS:
            base = variant_config(settings.model, "text", train_cfg, cohort_traits, seed)
            scores[row] = untrained_text_scores(loaded, participants, base,
                                                few_shot_k=train_cfg.few_shot_k if row == ROW_FEW_SHOT else 0,
                                                batch_size=train_cfg.score_batch_size,
                                                precision=train_cfg.untrained_precision)
        else:
            vcfg = variant_config(settings.model, TRAINED_ROWS[row], train_cfg, cohort_traits, seed)
            trained = train_variant(loaded, participants, vcfg, method=row, out_dir=out, cfg=train_cfg,
                                    cohort_dir=Path(cohort_dir), tracking_uri=tracking_uri)
            scores[row], calibration[row] = trained.scores, trained.calibration
            raw_done = rows_dir / f"{row_slug(uncalibrated_row(row))}.parquet"
            scores[uncalibrated_row(row)] = trained.raw_scores
            _atomic_parquet(trained.raw_scores, raw_done)
            raw_done.with_suffix(".json").write_text(json.dumps(trained.calibration))
        seconds[row] = time.perf_counter() - t0
        _check_scored(scores[row], row, eval_eids)
        _atomic_parquet(scores[row], done)  # written last: its presence means the row is finished
        log.info("HeLM stage: %s on %d test participants in %.0f s", row, len(eval_eids), seconds[row])
    seconds["total"] = time.perf_counter() - t_start
    n_train = int((participants["split"] == "train").sum())
    counts = {"train": min(n_train, train_cfg.max_train) if train_cfg.max_train is not None else n_train,
              "val": int((participants["split"] == "val").sum()), "test": len(eval_eids),
              "test_available": int((rows["split"] == "test").sum()), "excluded_no_embedding": int(excluded),
              # the spirogram rows' teacher probe (initialisation / distillation) sees the whole train split
              "teacher_probe_train": n_train if needs_spiro else 0}
    ordered = {m: df.set_index("eid").reindex(eval_eids).reset_index() for m, df in scores.items()}
    pred_path = write_predictions(out / PREDICTIONS_FILE, ordered, split="test")
    summary_path = out / SUMMARY_FILE
    summary_path.write_text(json.dumps({"settings": to_plain(settings), "seed": seed, "llm": loaded.identity.to_dict(),
                                        "precision": P.resolve(train_cfg.precision, loaded.model.device),
                                        "untrained_precision": P.resolve(train_cfg.untrained_precision,
                                                                         loaded.model.device),
                                        "traits": list(cohort_traits), "counts": counts, "seconds": seconds,
                                        "calibration": calibration}, indent=1))
    return HeLMStageResult(scores, eval_eids, tuple(cohort_traits), seconds, counts, [pred_path, summary_path])


def _atomic_parquet(df: pd.DataFrame, path: Path) -> None:
    """A kill never leaves a half-written row file to be "resumed"."""
    tmp = path.with_suffix(".tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(path)


def _check_scored(df: pd.DataFrame, row: str, eids: np.ndarray) -> None:
    """Every HeLM row must score exactly the evaluated participants (a mismatch is a bug upstream)."""
    got = np.sort(df["eid"].to_numpy(dtype=np.int64))
    if got.shape != eids.shape or not np.array_equal(got, np.sort(eids)):
        raise RuntimeError(f"HeLM row {row} scored {len(got)} participants, expected the {len(eids)} evaluated ones")


def load_stage_scores(stage_dir: str | Path) -> dict[str, pd.DataFrame]:
    """``{method: eid + risk_<trait>}`` from a finished stage's ``predictions_test.parquet``."""
    return read_predictions(Path(stage_dir) / PREDICTIONS_FILE)


def restrict_to_eids(participants: pd.DataFrame, methods: Mapping[str, pd.DataFrame],
                     eids: Sequence[int] | np.ndarray) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The evaluated participants and every method's scores cut to ``eids`` (the HeLM subsample).

    Why: :func:`experiments.evaluate.harness.compare_methods` needs every row to score exactly the same
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


def helm_comparison(settings: HeLMStageConfig, cohort_dir: str | Path, embeddings_path: str | Path | None,
                    out_dir: str | Path, seed: int = 0, *, llm: LoadedLLM | None = None,
                    extra_scores: Mapping[str, pd.DataFrame] | None = None, n_bootstrap: int = 1000,
                    tracking_uri: str | None = None) -> tuple[ComparisonResult, HeLMStageResult]:
    """Every requested HeLM row (and ``extra_scores``, e.g. baselines) compared on the same test participants.

    Tables are written to ``out_dir`` as ``helm_results.md/.csv``.
    """
    stage = helm_stage_scores(settings, cohort_dir, embeddings_path, out_dir, seed, llm=llm,
                              tracking_uri=tracking_uri)
    rows, _, _ = prepare_participants(cohort_dir, None, None, Path(out_dir), need_embeddings=False)
    test = rows[rows["eid"].isin(stage.eval_eids)].reset_index(drop=True)
    scores = dict(stage.scores)
    for name, df in (extra_scores or {}).items():
        scores[name] = df[df["eid"].isin(stage.eval_eids)].reset_index(drop=True)
    comparison = compare_methods(test, scores, list(stage.traits), n_bootstrap=n_bootstrap, seed=seed)
    comparison.save_tables(out_dir, stem="helm_results")
    return comparison, stage
