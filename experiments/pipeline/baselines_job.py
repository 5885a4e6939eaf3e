"""The baselines stage: fit, evaluate on the test split, explain, and log one MLflow run per fit.

Layout in MLflow: one experiment per cohort (``spirolm/<cohort dir name>-<content hash>``) or the main
job's; one parent run per call holding the comparison table and the overlaid plots; one nested run per
(model, feature set, trait) with its params, test metrics (overall and per subgroup), calibration
table, SHAP plots and the fitted model (its pyfunc returns the risk, see
:mod:`experiments.baselines.mlflow_model`).

Covariates dropped because the cohort lacks them for everyone (an export without an optional field) are
recorded where a reader looks: the ``dropped_features`` param and ``spirolm.dropped_features`` tag of the
parent run, the ``dropped_features`` param of each model run, ``data_notes.json`` in the output
directory (read by the run report) and ``notes.txt`` in MLflow.

Privacy: participant ids never go into params, tags, metric names or logged tables. The only file with
ids is ``predictions_test.parquet``, logged only when asked (``log_predictions=True``).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from experiments.baselines import features as F
from experiments.baselines.fit import DATA_NOTES_FILE, FittedRun, check_labels, fit_baselines
from experiments.baselines.mlflow_model import log_native_model
from experiments.baselines.models import get_model
from experiments.common.tracking import artifact_location_for, configure_mlflow, experiment_name_for, metric_key
from experiments.data.embeddings import load_embeddings
from experiments.data.participants import read_participants
from experiments.data.predictions import write_predictions
from experiments.evaluate.harness import ORACLE, ComparisonResult, TraitMetrics, compare_methods
from experiments.evaluate.plots import plot_comparison
from experiments.explain.tabular_shap import shap_folder_name, write_shap_plots
from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions_test.parquet"


@dataclass(frozen=True)
class TrackingInfo:
    """Where the runs of one baselines call are."""

    tracking_uri: str
    experiment_name: str
    experiment_id: str
    parent_run_id: str
    run_ids: dict[tuple[str, str, str], str]


@dataclass
class BaselineResult:
    """Everything :func:`train_baselines` produced.

    Attributes:
        comparison: the harness output on the test split (oracle row included when available).
        out_dir: where files were written; ``files`` lists them.
        predictions_path: ``predictions_test.parquet`` (the prediction-table schema; local only).
        experiment_name, tracking_uri, parent_run_id: where the MLflow runs are.
        run_ids: ``{(model, feature_set, trait): run_id}``.
        skipped: feature sets skipped, with the reason (e.g. no embeddings yet).
        notes: data notes (skipped or dropped covariates, QC-failed spirometry counts).
        missing_labels: ``{trait: {split: n}}`` participants without a label (excluded from fit/metrics).
        dropped: covariates dropped as missing for every participant (of the cohort or of one split).
        fitted: the fitted models, keyed like ``run_ids``.
    """

    comparison: ComparisonResult
    out_dir: Path
    predictions_path: Path
    files: list[Path]
    experiment_name: str
    tracking_uri: str
    parent_run_id: str
    run_ids: dict[tuple[str, str, str], str]
    skipped: list[str]
    notes: list[str]
    missing_labels: dict[str, dict[str, int]]
    dropped: tuple[str, ...]
    fitted: dict[tuple[str, str, str], FittedRun] = field(repr=False)


def train_baselines(
    cohort_dir: str | Path,
    *,
    traits: Sequence[str] | None = None,
    feature_sets: Sequence[str] = F.FEATURE_SETS,
    models: Sequence[str] = ("logreg", "xgboost"),
    embeddings: str | Path | None = None,
    out_dir: str | Path,
    seed: int = 0,
    tracking_uri: str | None = None,
    n_bootstrap: int = 1000,
    configs: Mapping[str, Any] | None = None,
    log_predictions: bool = False,
    explain: bool = True,
    shap_dir: str | Path | None = None,
) -> BaselineResult:
    """Train, evaluate and log the tabular baselines of one cohort (``spirolm train baselines``).

    Args:
        cohort_dir: cohort directory (``participants.parquet`` with ``split`` and trait columns).
        traits: traits to model; default every trait of the cohort.
        feature_sets: any of ``tabular``, ``tabular+spirometry``, ``tabular+embedding``; the last is
            skipped with a logged message when ``embeddings`` is None.
        models: registered model names.
        embeddings: the encoder's ``eid + emb_*`` Parquet file.
        out_dir: output directory (predictions, results tables, plots).
        seed: seed for every model and the bootstrap; same seed -> identical numbers.
        tracking_uri: MLflow tracking URI (default: ``MLFLOW_TRACKING_URI`` or ``./mlflow.db``).
        n_bootstrap: bootstrap resamples for the CIs.
        configs: optional ``{model name: config}``; their ``seed`` is replaced by ``seed``.
        log_predictions: also log ``predictions_test.parquet`` (contains eids) to MLflow; off by default.
        explain: log SHAP summary and waterfall plots in each model run.
        shap_dir: also keep those SHAP files locally, one folder per fit (:func:`shap_folder_name`).

    Raises:
        SpirolmInputError: bad cohort (missing columns, unknown split, a trait with one class in a
            split, all-missing features), unknown model / feature set, bad embeddings.
    """
    cohort_dir = Path(cohort_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    participants, cohort_traits = read_participants(cohort_dir, tuple(traits) if traits else None)
    traits = list(cohort_traits)
    if not traits:
        raise SpirolmInputError("no trait columns found in the cohort", file=cohort_dir)
    missing_labels = check_labels(participants, traits)
    emb = load_embeddings(embeddings) if embeddings is not None else None
    for name in models:
        get_model(name)  # fail fast on an unknown name or feature set, before any training
    for fs in feature_sets:
        F.check_feature_set(fs)

    fit = fit_baselines(participants, traits, feature_sets=feature_sets, models=models, embeddings=emb, seed=seed,
                        configs=configs)
    if not fit.fitted:
        raise SpirolmInputError("nothing to train: every requested feature set was skipped", field="features")
    test_participants = participants.loc[participants["split"] == "test"].reset_index(drop=True)
    comparison = compare_methods(test_participants, fit.scores, traits, n_bootstrap=n_bootstrap, seed=seed)

    predictions_path = write_predictions(out / PREDICTIONS_FILE, fit.scores, split="test")
    notes_path = out / DATA_NOTES_FILE
    notes_path.write_text(json.dumps({"dropped_features": list(fit.dropped), "skipped": fit.skipped,
                                      "notes": fit.notes}, indent=1) + "\n")
    files = [predictions_path, notes_path, *comparison.save_tables(out), *plot_comparison(comparison, out / "plots")]

    tracking = log_baseline_runs(
        cohort_dir=cohort_dir, comparison=comparison, fitted=fit.fitted, files=files, predictions_path=predictions_path,
        seed=seed, traits=traits, missing_labels=missing_labels, notes=[*fit.skipped, *fit.notes],
        tracking_uri=tracking_uri, out_dir=out, log_predictions=log_predictions, explain=explain,
        shap_dir=Path(shap_dir) if shap_dir is not None else None, dropped=fit.dropped,
    )
    return BaselineResult(
        comparison=comparison, out_dir=out, predictions_path=predictions_path, files=files,
        experiment_name=tracking.experiment_name, tracking_uri=tracking.tracking_uri,
        parent_run_id=tracking.parent_run_id, run_ids=tracking.run_ids, skipped=fit.skipped, notes=fit.notes,
        missing_labels=missing_labels, dropped=fit.dropped, fitted=fit.fitted,
    )


def log_trait_metrics(metrics: TraitMetrics, prefix: str = "test") -> None:
    """Log a :class:`TraitMetrics` as scalar metrics plus subgroup metrics, and its tables as CSV artifacts."""
    mlflow.log_metrics({metric_key(prefix, k): float(v) for k, v in metrics.summary().items() if np.isfinite(v)})
    sub = {}
    for row in metrics.subgroups.itertuples(index=False):
        for name in ("n", "n_pos", "auroc", "auprc", "brier"):
            value = float(getattr(row, name))
            if np.isfinite(value):
                sub[metric_key(f"{prefix}_subgroup", f"{row.variable}_{row.level}", name)] = value
    if sub:
        mlflow.log_metrics(sub)
    mlflow.log_table(metrics.calibration, artifact_file=f"{prefix}_calibration.json")
    if not metrics.subgroups.empty:
        mlflow.log_table(metrics.subgroups, artifact_file=f"{prefix}_subgroups.json")


def _joined(names: Sequence[str]) -> str:
    """A list as one MLflow param value (``none`` when empty, so the param is always there to filter on)."""
    return ",".join(names) or "none"


def _log_model_run(run: FittedRun, comparison: ComparisonResult, seed: int, explain: bool,
                   shap_dir: Path | None = None) -> str:
    params = {**run.model.params(), "feature_set": run.feature_set, "trait": run.trait,
              "n_train": run.n_train, "n_val": run.n_val, "n_features": run.features.X.shape[1],
              "n_missing_spirometry": run.features.n_missing_spirometry,
              "dropped_features": _joined(run.features.dropped)}
    with mlflow.start_run(run_name=f"{run.model.name}-{run.feature_set}-{run.trait}", nested=True) as active:
        mlflow.set_tags({"model": run.model.name, "feature_set": run.feature_set, "trait": run.trait,
                         "method": run.method})
        mlflow.log_params(params)
        metrics = comparison.metrics[(run.method, run.trait)]
        log_trait_metrics(metrics)
        oracle = comparison.oracle_auroc(run.trait)
        if np.isfinite(oracle):
            mlflow.log_metric("test/auroc_vs_oracle", metrics.auroc / oracle)
        log_native_model(run.model, run.features.X.loc[run.train_mask])
        if explain and shap_dir is not None:  # keep the plots locally too (the main job's report shows them)
            keep = shap_dir / shap_folder_name(run.method, run.trait)
            keep.mkdir(parents=True, exist_ok=True)
            write_shap_plots(run, seed, keep)
        elif explain:
            with tempfile.TemporaryDirectory() as tmp:
                write_shap_plots(run, seed, Path(tmp))
        return active.info.run_id


def log_baseline_runs(
    *,
    cohort_dir: str | Path,
    comparison: ComparisonResult,
    fitted: Mapping[tuple[str, str, str], FittedRun],
    files: Sequence[Path],
    predictions_path: Path,
    seed: int,
    traits: Sequence[str],
    missing_labels: Mapping[str, Mapping[str, int]],
    notes: Sequence[str],
    tracking_uri: str | None,
    out_dir: Path,
    log_predictions: bool = False,
    explain: bool = True,
    shap_dir: Path | None = None,
    dropped: Sequence[str] = (),
) -> TrackingInfo:
    """Log one ``train baselines`` call: a parent run with the comparison, one nested run per fit.

    ``dropped``: covariates dropped as missing for every participant (param and tag of the parent run).

    Returns:
        :class:`TrackingInfo` with the experiment and run ids.
    """
    uri = configure_mlflow(tracking_uri)
    active = mlflow.active_run()  # e.g. the main job's parent run: nest under it, in its experiment
    in_job = active is not None
    if in_job:
        experiment = mlflow.get_experiment(active.info.experiment_id)
        name = experiment.name
    else:
        name = experiment_name_for(cohort_dir)
        if mlflow.get_experiment_by_name(name) is None:  # artifacts next to a local store, not in ./mlruns
            mlflow.create_experiment(name, artifact_location=artifact_location_for(uri))
        experiment = mlflow.set_experiment(name)
    run_ids: dict[tuple[str, str, str], str] = {}
    with mlflow.start_run(run_name=f"baselines-seed{seed}", nested=in_job) as parent:
        mlflow.set_tags({"spirolm.kind": "baselines", "cohort": Path(cohort_dir).resolve().name,
                         "spirolm.dropped_features": _joined(dropped)})
        mlflow.log_params({"seed": seed, "traits": ",".join(traits), "dropped_features": _joined(dropped),
                           "methods": ",".join(m for m in comparison.methods if m != ORACLE),
                           "n_bootstrap": next(iter(comparison.metrics.values())).n_bootstrap})
        for trait, by_split in missing_labels.items():
            mlflow.log_metrics({metric_key(trait, f"n_missing_label_{s}"): float(n) for s, n in by_split.items()})
        for (method, trait), m in comparison.metrics.items():
            mlflow.log_metrics({metric_key(trait, method, k): v for k, v in
                                (("auroc", m.auroc), ("auprc", m.auprc), ("brier", m.brier)) if np.isfinite(v)})
        if notes:
            mlflow.log_text("\n".join(notes) + "\n", "notes.txt")
        for path in files:
            if path == predictions_path and not log_predictions:
                continue  # participant-level file: local only unless explicitly requested
            rel = path.parent.relative_to(out_dir) if path.parent != out_dir else None
            mlflow.log_artifact(str(path), artifact_path="comparison" + (f"/{rel}" if rel else ""))
        for key, run in fitted.items():
            run_ids[key] = _log_model_run(run, comparison, seed, explain, shap_dir)
        parent_id = parent.info.run_id
    log.info("MLflow: experiment %r (%s), parent run %s", name, uri, parent_id)
    return TrackingInfo(tracking_uri=uri, experiment_name=name, experiment_id=experiment.experiment_id,
                        parent_run_id=parent_id, run_ids=run_ids)
