"""Logging baseline runs to MLflow, and loading logged models back for scoring.

Layout: one experiment per cohort (``spirolm/<cohort dir name>-<content hash>``, so two different
cohorts with the same directory name never mix), one parent run per ``train baselines`` call holding
the comparison table and the overlaid plots, and one nested run per (model, feature set, trait) with
its params, test metrics (overall and per subgroup), calibration table, SHAP plots and the fitted model
in its native flavor (sklearn / xgboost) with a signature and an input example.

Privacy: participant ids never go into params, tags, metric names or logged tables. The only logged
file with ids is ``predictions_test.parquet``, and only when the user asks (``log_predictions=True``).
Input examples are feature rows without ids. The tracking URI comes from
:func:`experiments.tracking.configure_mlflow` (explicit > ``MLFLOW_TRACKING_URI`` > ``./mlflow.db``).
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature

from experiments.evaluation import ORACLE, ComparisonResult, TraitMetrics
from experiments.tracking import configure_mlflow

if TYPE_CHECKING:
    from experiments.baselines import FittedRun

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"
_N_INPUT_EXAMPLE = 5
_MAX_SHAP_ROWS = 200
# MLflow 3 saves sklearn models with skops (no pickle); OneHotEncoder's dtype parameter is a numpy
# dtype, which skops refuses unless trusted. Nothing else outside sklearn is referenced.
SKOPS_TRUSTED_TYPES = ["numpy.dtype"]


def _pip_requirements(flavor: str) -> list[str]:
    """Pinned requirements of a logged model.

    Why explicit: MLflow's automatic inference imports the model in a subprocess (seconds per
    model) and picks up the whole venv, torch included, which the baselines never use.
    """
    import sklearn
    import xgboost

    reqs = [f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}", f"pandas=={pd.__version__}",
            f"scikit-learn=={sklearn.__version__}"]
    return reqs + ([f"xgboost=={xgboost.__version__}"] if flavor == "xgboost" else [])


@dataclass(frozen=True)
class TrackingInfo:
    """Where the runs of one ``train baselines`` call are."""

    tracking_uri: str
    experiment_name: str
    experiment_id: str
    parent_run_id: str
    run_ids: dict[tuple[str, str, str], str]


def metric_key(*parts: str) -> str:
    """An MLflow-safe metric key from parts (``xgboost:tabular+spirometry`` -> ``xgboost_tabular_spirometry``,
    ``age_band_>=70`` -> ``age_band_ge70``)."""
    readable = (p.replace(">=", "ge").replace("<=", "le").replace("<", "lt").replace(">", "gt") for p in parts)
    return "/".join(re.sub(r"[^A-Za-z0-9_.\- ]+", "_", p).strip("_") for p in readable)


def experiment_name_for(cohort_dir: str | Path) -> str:
    """``spirolm/<cohort dir name>-<8-char content hash>``."""
    from experiments.baselines import cohort_fingerprint

    cohort_dir = Path(cohort_dir).resolve()
    return f"spirolm/{cohort_dir.name}-{cohort_fingerprint(cohort_dir)}"


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


def log_native_model(model: Any, input_frame: pd.DataFrame) -> str:
    """Log a fitted baseline in its native flavor with a signature and an id-free input example.

    Args:
        model: a fitted :class:`experiments.baselines.BaselineModel`.
        input_frame: feature rows (:attr:`FeatureMatrix.X`, no eid); the first rows become the example.

    Returns:
        The ``runs:/<run_id>/model`` URI, loadable with :func:`load_risk_model`.
    """
    example = model.model_input(input_frame.head(_N_INPUT_EXAMPLE).reset_index(drop=True))
    if "eid" in example.columns:
        raise ValueError("input example must not contain participant ids")
    if model.flavor == "sklearn":
        signature = infer_signature(example, model.native.predict_proba(example))
        mlflow.sklearn.log_model(model.native, name=MODEL_ARTIFACT, signature=signature, input_example=example,
                                 pyfunc_predict_fn="predict_proba", skops_trusted_types=SKOPS_TRUSTED_TYPES,
                                 pip_requirements=_pip_requirements("sklearn"))
    elif model.flavor == "xgboost":
        signature = infer_signature(example, model.native.predict(example))
        mlflow.xgboost.log_model(model.native, name=MODEL_ARTIFACT, signature=signature, input_example=example,
                                 model_format="json", pip_requirements=_pip_requirements("xgboost"))
    else:
        raise ValueError(f"no MLflow flavor {model.flavor!r}")
    return f"runs:/{mlflow.active_run().info.run_id}/{MODEL_ARTIFACT}"


def load_risk_model(model_uri: str) -> Callable[[pd.DataFrame], np.ndarray]:
    """Load a logged baseline by URI and return ``score(X) -> risk`` (probability of the trait).

    ``X`` is what the native model takes: raw feature rows for ``logreg`` (the whole Pipeline is
    logged), :func:`experiments.features.encode_categoricals` output for ``xgboost``.
    """
    flavors = mlflow.models.get_model_info(model_uri).flavors
    if "xgboost" in flavors:
        native = mlflow.xgboost.load_model(model_uri)
    elif "sklearn" in flavors:
        native = mlflow.sklearn.load_model(model_uri)
    else:
        raise ValueError(f"{model_uri} is neither an sklearn nor an xgboost model (flavors: {sorted(flavors)})")
    return lambda X: np.asarray(native.predict_proba(X))[:, 1]


def _log_shap(run: FittedRun, seed: int, tmp: Path) -> None:
    """SHAP summary + the waterfall of the highest-risk explained test row (titled by position, not eid)."""
    from experiments.explain_tabular import explain_tabular, plot_shap_summary, plot_shap_waterfall

    X = run.features.X
    explain_rows = X.loc[run.test_mask]
    if len(explain_rows) > _MAX_SHAP_ROWS:
        keep = np.sort(np.random.default_rng(seed).choice(len(explain_rows), _MAX_SHAP_ROWS, replace=False))
        explain_rows = explain_rows.iloc[keep]
    result = explain_tabular(run.model, X.loc[run.train_mask], explain_rows, seed=seed)
    top = int(np.argmax(run.model.predict_risk(explain_rows)))
    paths = [
        plot_shap_summary(result, tmp / "shap_summary.png", title=f"SHAP {run.method} - {run.trait}"),
        plot_shap_waterfall(result, top, tmp / "shap_waterfall_highest_risk.png",
                            title=f"{run.method} - {run.trait}: highest-risk explained test participant"),
    ]
    importance = result.mean_abs().rename("mean_abs_shap").rename_axis("feature").reset_index()
    importance.to_csv(tmp / "shap_importance.csv", index=False)
    for p in [*paths, tmp / "shap_importance.csv"]:
        mlflow.log_artifact(str(p), artifact_path="shap")


def shap_folder_name(method: str, trait: str) -> str:
    """Folder of one fit's SHAP files under ``shap_dir`` (``xgboost_tabular_embedding__copd``)."""
    return f"{metric_key(method).replace('/', '_')}__{trait}"


def _log_model_run(run: FittedRun, comparison: ComparisonResult, seed: int, explain: bool,
                   shap_dir: Path | None = None) -> str:
    params = {**run.model.params(), "feature_set": run.feature_set, "trait": run.trait,
              "n_train": run.n_train, "n_val": run.n_val, "n_features": run.features.X.shape[1],
              "n_missing_spirometry": run.features.n_missing_spirometry}
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
            _log_shap(run, seed, keep)
        elif explain:
            with tempfile.TemporaryDirectory() as tmp:
                _log_shap(run, seed, Path(tmp))
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
) -> TrackingInfo:
    """Log one ``train baselines`` call: a parent run with the comparison, one nested run per fit.

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
        experiment = mlflow.set_experiment(name)
    run_ids: dict[tuple[str, str, str], str] = {}
    with mlflow.start_run(run_name=f"baselines-seed{seed}", nested=in_job) as parent:
        mlflow.set_tags({"spirolm.kind": "baselines", "cohort": Path(cohort_dir).resolve().name})
        mlflow.log_params({"seed": seed, "traits": ",".join(traits),
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
