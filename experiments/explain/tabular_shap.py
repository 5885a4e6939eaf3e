"""SHAP explanations for the tabular baselines (reused by the notebooks).

Why SHAP on log-odds: both baselines are additive on the log-odds scale (exactly for logistic
regression, per tree for XGBoost), so SHAP values in log-odds add up to the model's margin and can be
compared between the two models. XGBoost uses ``TreeExplainer`` and logistic regression
``LinearExplainer`` (Lundberg & Lee 2017; Lundberg et al. 2020), both *interventional* against the
same background sample, so "contribution" means "relative to a typical training participant" for both.

For the logistic-regression Pipeline the explanation is computed on the Pipeline's transformed
features (standardised numerics, missing indicators, one-hot levels) and their names are mapped back
to readable ones (``age``, ``fev1_l missing``, ``sex=male``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
import shap
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier

from biobank.schema import CATEGORIES
from experiments.baselines.fit import FittedRun
from experiments.baselines.models import BaselineModel
from experiments.common.tracking import metric_key
from experiments.data.participants import seeded_rows
from signals.errors import SpirolmInputError

MAX_SHAP_ROWS = 200  # explained test rows per fit: bounds the cost, plenty for a beeswarm


@dataclass(frozen=True)
class ShapResult:
    """SHAP values of one model on some participants (no participant ids).

    Attributes:
        values: (n_explain, n_features) contributions in log-odds.
        base_values: (n_explain,) the expected log-odds over the background.
        data: (n_explain, n_features) the feature values the model saw (after any transformation).
        feature_names: readable names of the columns of ``values``.
        explainer: ``"tree"`` or ``"linear"``.
        output: the scale of the values (``"log-odds"``).
    """

    values: np.ndarray
    base_values: np.ndarray
    data: np.ndarray
    feature_names: tuple[str, ...]
    explainer: str
    output: str = "log-odds"

    def mean_abs(self) -> pd.Series:
        """Global importance: mean |SHAP| per feature, largest first."""
        return pd.Series(np.abs(self.values).mean(axis=0), index=list(self.feature_names)).sort_values(
            ascending=False)


def readable_name(transformed: str) -> str:
    """Map a ColumnTransformer output name back to the cohort column (``num__age`` -> ``age``)."""
    name = transformed.split("__", 1)[1] if "__" in transformed else transformed
    if name.startswith("missingindicator_"):
        return f"{name.removeprefix('missingindicator_')} missing"
    if transformed.startswith("cat__"):
        for sep_at in range(len(name) - 1, 0, -1):  # last '_' splits column from level: sex_male
            if name[sep_at] == "_" and name[:sep_at] in CATEGORIES:
                return f"{name[:sep_at]}={name[sep_at + 1:]}"
    return name


def _unwrap(model: Any, X_background: Any, X_explain: Any) -> tuple[Any, Any, Any]:
    """Reduce a registered baseline to its native model and the frames that model takes."""
    if isinstance(model, BaselineModel):
        return model.native, model.model_input(X_background), model.model_input(X_explain)
    return model, X_background, X_explain


def _subsample(X: Any, max_rows: int, seed: int) -> Any:
    rows = seeded_rows(len(X), max_rows, seed)
    if rows is None:
        return X
    return X.iloc[rows] if isinstance(X, pd.DataFrame) else np.asarray(X)[rows]


def _names(X: Any, feature_names: Sequence[str] | None) -> tuple[str, ...]:
    if isinstance(X, pd.DataFrame):
        if feature_names is not None and list(feature_names) != list(X.columns):
            raise SpirolmInputError("feature_names do not match the columns of X", field="feature_names")
        return tuple(map(str, X.columns))
    if feature_names is None or len(feature_names) != np.asarray(X).shape[1]:
        raise SpirolmInputError("feature_names must name every column of a numpy X", field="feature_names")
    return tuple(feature_names)


def explain_tabular(
    model: Any,
    X_background: pd.DataFrame | np.ndarray,
    X_explain: pd.DataFrame | np.ndarray,
    feature_names: Sequence[str] | None = None,
    *,
    max_background: int = 200,
    seed: int = 0,
) -> ShapResult:
    """SHAP values (log-odds) of a fitted baseline for the rows of ``X_explain``.

    Args:
        model: a fitted registered baseline (:mod:`experiments.baselines.models`), an ``XGBClassifier``, a
            ``LogisticRegression``, or an sklearn ``Pipeline`` ending in a ``LogisticRegression``.
        X_background: reference rows (normally the training split), in the model's input format.
        X_explain: rows to explain.
        feature_names: column names when the X are numpy arrays (ignored for a Pipeline, whose
            transformed names are used); must equal the columns when the X are DataFrames.
        max_background: background rows kept (seeded subsample), bounding the cost.
        seed: seed of the background subsample.

    Returns:
        :class:`ShapResult`.

    Raises:
        SpirolmInputError: unsupported model type, empty inputs or inconsistent names.
    """
    native, background, explain = _unwrap(model, X_background, X_explain)
    if len(background) == 0 or len(explain) == 0:
        raise SpirolmInputError("explain_tabular needs at least one background and one explained row",
                                field="X_explain")
    background = _subsample(background, max_background, seed)
    if isinstance(native, Pipeline) and isinstance(native[-1], LogisticRegression):
        prep = native[:-1]
        names = tuple(readable_name(n) for n in prep.get_feature_names_out())
        bg, ex, clf = np.asarray(prep.transform(background), float), np.asarray(prep.transform(explain), float), native[-1]
        kind = "linear"
    elif isinstance(native, LogisticRegression):
        names, bg, ex, clf, kind = _names(explain, feature_names), np.asarray(background, float), \
            np.asarray(explain, float), native, "linear"
    elif isinstance(native, XGBClassifier):
        names, bg, ex, clf, kind = _names(explain, feature_names), np.asarray(background, float), \
            np.asarray(explain, float), native, "tree"
    else:
        raise SpirolmInputError(f"no SHAP explainer for model type {type(native).__name__}", field="model")
    if kind == "linear":
        explanation = shap.LinearExplainer(clf, bg)(ex)
    else:
        explainer = shap.TreeExplainer(clf, data=bg, feature_perturbation="interventional", model_output="raw")
        explanation = explainer(ex, check_additivity=False)
    values = np.asarray(explanation.values, dtype=float)
    base = np.broadcast_to(np.asarray(explanation.base_values, dtype=float), (values.shape[0],)).copy()
    return ShapResult(values=values, base_values=base, data=ex, feature_names=names, explainer=kind)


def plot_shap_summary(result: ShapResult, path: str | Path, *, max_display: int = 15,
                      title: str | None = None) -> Path:
    """Beeswarm summary (global importance and direction) saved as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.figure()
    shap.summary_plot(result.values, features=result.data, feature_names=list(result.feature_names),
                      max_display=max_display, show=False, rng=0)  # seeded jitter: same plot every run
    fig = plt.gcf()
    fig.suptitle(title or f"SHAP ({result.explainer}, {result.output})", fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_shap_waterfall(result: ShapResult, index: int, path: str | Path, *, max_display: int = 12,
                        title: str | None = None) -> Path:
    """One participant's waterfall (from the expected log-odds to theirs) saved as PNG.

    The default title names the row position only, never a participant id; pass ``title`` to show
    an eid when the user explicitly wants it.
    """
    if not 0 <= index < result.values.shape[0]:
        raise SpirolmInputError(f"row {index} outside the {result.values.shape[0]} explained rows", field="index")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    explanation = shap.Explanation(values=result.values[index], base_values=result.base_values[index],
                                   data=result.data[index], feature_names=list(result.feature_names))
    plt.figure()
    shap.plots.waterfall(explanation, max_display=max_display, show=False)
    fig = plt.gcf()
    fig.suptitle(title or f"explained row {index} ({result.output})", fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def shap_folder_name(method: str, trait: str) -> str:
    """Folder of one fit's SHAP files (``xgboost_tabular_embedding__copd``)."""
    return f"{metric_key(method).replace('/', '_')}__{trait}"


def write_shap_plots(run: FittedRun, seed: int, out_dir: Path, *, log_to_mlflow: bool = True) -> list[Path]:
    """SHAP summary, the waterfall of the highest-risk explained test row (titled by position, not eid) and
    the importance table of one fitted baseline; logged under ``shap/`` of the active MLflow run."""
    X = run.features.X
    explain_rows = _subsample(X.loc[run.test_mask], MAX_SHAP_ROWS, seed)
    result = explain_tabular(run.model, X.loc[run.train_mask], explain_rows, seed=seed)
    top = int(np.argmax(run.model.predict_risk(explain_rows)))
    paths = [
        plot_shap_summary(result, out_dir / "shap_summary.png", title=f"SHAP {run.method} - {run.trait}"),
        plot_shap_waterfall(result, top, out_dir / "shap_waterfall_highest_risk.png",
                            title=f"{run.method} - {run.trait}: highest-risk explained test participant"),
    ]
    importance = result.mean_abs().rename("mean_abs_shap").rename_axis("feature").reset_index()
    importance.to_csv(out_dir / "shap_importance.csv", index=False)
    paths.append(out_dir / "shap_importance.csv")
    if log_to_mlflow:
        for path in paths:
            mlflow.log_artifact(str(path), artifact_path="shap")
    return paths
