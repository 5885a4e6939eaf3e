"""Tabular baselines (logistic regression, XGBoost) and the pipeline that trains, scores and logs them.

Why these two: they are the reference rows of HeLM's comparison (Belyaeva et al. 2023) and of the
ML-based COPD work; a spirogram model or LLM earns its place only by beating them on the same
participants with the same harness (:mod:`experiments.evaluation`).

Models are built through a small registry keyed by name, as in ML-based COPD's ``models.py``:
``@register_model("logreg")`` on a class and ``get_model("logreg", cfg)`` to build it; unknown and
duplicate names raise. Each model has a frozen dataclass config holding every hyper-parameter and its
seed, so the same config gives identical predictions.

:func:`train_baselines` is the pipeline behind ``spirolm train baselines``: fit on ``train``,
early-stop XGBoost on ``val``, score ``test``, evaluate with :func:`~experiments.evaluation.compare_methods`
(oracle row included when the cohort has ``true_risk_<trait>``), write predictions / tables / plots,
and log everything to MLflow (:mod:`experiments.mlflow_utils`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from xgboost import XGBClassifier

from experiments import features as F
from experiments.evaluation import ComparisonResult, compare_methods
from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


# ----------------------------------------------------------------------------- registry


class BaselineModel:
    """Interface of a registered baseline: fit on train (+val), predict risks, expose the native model."""

    name: ClassVar[str]
    config_cls: ClassVar[type]
    flavor: ClassVar[str]  # MLflow flavor the native model is logged with

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def fit(self, fm: F.FeatureMatrix, train: np.ndarray, y_train: np.ndarray,
            val: np.ndarray, y_val: np.ndarray) -> BaselineModel:
        """Fit on rows ``train`` of ``fm.X`` (boolean mask), using rows ``val`` where the model needs them."""
        raise NotImplementedError

    def model_input(self, X: pd.DataFrame) -> pd.DataFrame:
        """The frame the native (logged) model takes, built from :attr:`FeatureMatrix.X` rows."""
        raise NotImplementedError

    @property
    def native(self) -> Any:
        """The fitted object logged to MLflow (sklearn Pipeline / XGBClassifier)."""
        raise NotImplementedError

    def predict_risk(self, X: pd.DataFrame) -> np.ndarray:
        """Predicted probability of the trait for each row of ``X`` (a :attr:`FeatureMatrix.X` slice)."""
        return self.native.predict_proba(self.model_input(X))[:, 1]

    def params(self) -> dict[str, Any]:
        """Hyper-parameters to log (the config plus anything learnt, e.g. the early-stopping round)."""
        return {"model": self.name, **asdict(self.cfg)}


_MODEL_REGISTRY: dict[str, type[BaselineModel]] = {}


def register_model(name: str) -> Callable[[type[BaselineModel]], type[BaselineModel]]:
    """Class decorator registering a baseline under ``name``.

    Raises:
        ValueError: ``name`` is already registered (two models must never share a name, or the
            table's rows would be ambiguous).
    """

    def decorator(cls: type[BaselineModel]) -> type[BaselineModel]:
        if name in _MODEL_REGISTRY:
            raise ValueError(f"baseline model {name!r} is already registered")
        cls.name = name
        _MODEL_REGISTRY[name] = cls
        return cls

    return decorator


def registered_models() -> tuple[str, ...]:
    """Names of the registered baselines."""
    return tuple(_MODEL_REGISTRY)


def get_model(name: str, cfg: Any | None = None) -> BaselineModel:
    """Build an unfitted baseline by name (default config when ``cfg`` is None).

    Raises:
        SpirolmInputError: unknown name, or a config of the wrong type.
    """
    if name not in _MODEL_REGISTRY:
        raise SpirolmInputError(f"unknown baseline model {name!r}; registered: {', '.join(_MODEL_REGISTRY)}",
                                field="models")
    cls = _MODEL_REGISTRY[name]
    cfg = cls.config_cls() if cfg is None else cfg
    if not isinstance(cfg, cls.config_cls):
        raise SpirolmInputError(f"model {name!r} needs a {cls.config_cls.__name__}, got {type(cfg).__name__}",
                                field="models")
    return cls(cfg)


# ----------------------------------------------------------------------------- models


@dataclass(frozen=True)
class LogRegConfig:
    """Logistic regression hyper-parameters."""

    C: float = 1.0  # inverse L2 strength; features are standardised, so 1.0 is a mild prior
    max_iter: int = 2000  # lbfgs on ~30 standardised features converges well before this
    seed: int = 0


@dataclass(frozen=True)
class XGBoostConfig:
    """XGBoost hyper-parameters; ``n_estimators`` is a ceiling, early stopping on ``val`` picks the size."""

    n_estimators: int = 1000
    learning_rate: float = 0.05
    max_depth: int = 3  # shallow trees: covariate effects are mostly additive, few interactions
    min_child_weight: float = 1.0
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    reg_lambda: float = 1.0
    early_stopping_rounds: int = 50
    nthread: int = 2  # the project's CI and shared machines have 2 cores
    seed: int = 0


@register_model("logreg")
class LogRegBaseline(BaselineModel):
    """Logistic regression in one sklearn Pipeline: median imputation with a missing indicator,
    standardisation, one-hot categoricals (fixed vocabularies), L2 logistic regression.

    The whole Pipeline is the native model, so the logged MLflow model takes raw feature rows.
    """

    config_cls = LogRegConfig
    flavor = "sklearn"

    def __init__(self, cfg: LogRegConfig) -> None:
        super().__init__(cfg)
        self._pipeline: Pipeline | None = None

    def _build(self, fm: F.FeatureMatrix) -> Pipeline:
        numeric = Pipeline([("impute", SimpleImputer(strategy="median", add_indicator=True)),
                            ("scale", StandardScaler())])
        categories = [[*F.CATEGORIES[c], F.MISSING_CATEGORY] for c in fm.categorical]
        categorical = OneHotEncoder(categories=categories, handle_unknown="error", sparse_output=False)
        prep = ColumnTransformer([("num", numeric, list(fm.numeric)), ("cat", categorical, list(fm.categorical))],
                                 verbose_feature_names_out=True)
        clf = LogisticRegression(C=self.cfg.C, max_iter=self.cfg.max_iter, random_state=self.cfg.seed)
        return Pipeline([("prep", prep), ("clf", clf)])

    def fit(self, fm, train, y_train, val, y_val):  # noqa: D102 - see BaselineModel.fit
        self._pipeline = self._build(fm).fit(fm.X.loc[train], y_train)
        return self

    def model_input(self, X: pd.DataFrame) -> pd.DataFrame:  # noqa: D102
        return X

    @property
    def native(self) -> Pipeline:  # noqa: D102
        if self._pipeline is None:
            raise RuntimeError("model not fitted")
        return self._pipeline


@register_model("xgboost")
class XGBoostBaseline(BaselineModel):
    """Gradient-boosted trees (XGBoost, hist) with early stopping on the validation split.

    Categoricals are one-hot encoded by :func:`experiments.features.encode_categoricals`; missing
    numeric values go to XGBoost as NaN (learnt default direction), so no imputation is needed.
    """

    config_cls = XGBoostConfig
    flavor = "xgboost"

    def __init__(self, cfg: XGBoostConfig) -> None:
        super().__init__(cfg)
        self._clf: XGBClassifier | None = None
        self._categorical: tuple[str, ...] = ()

    def fit(self, fm, train, y_train, val, y_val):  # noqa: D102 - see BaselineModel.fit
        self._categorical = fm.categorical
        c = self.cfg
        self._clf = XGBClassifier(
            n_estimators=c.n_estimators, learning_rate=c.learning_rate, max_depth=c.max_depth,
            min_child_weight=c.min_child_weight, subsample=c.subsample, colsample_bytree=c.colsample_bytree,
            reg_lambda=c.reg_lambda, early_stopping_rounds=c.early_stopping_rounds, eval_metric="logloss",
            tree_method="hist", nthread=c.nthread, random_state=c.seed,
        )
        self._clf.fit(self.model_input(fm.X.loc[train]), y_train,
                      eval_set=[(self.model_input(fm.X.loc[val]), y_val)], verbose=False)
        return self

    def model_input(self, X: pd.DataFrame) -> pd.DataFrame:  # noqa: D102
        return F.encode_categoricals(X, self._categorical)

    @property
    def native(self) -> XGBClassifier:  # noqa: D102
        if self._clf is None:
            raise RuntimeError("model not fitted")
        return self._clf

    def params(self) -> dict[str, Any]:  # noqa: D102
        return {**super().params(), "best_iteration": int(self.native.best_iteration),
                "input_encoding": "experiments.features.encode_categoricals"}


# ----------------------------------------------------------------------------- cohort helpers


def read_participants(cohort_dir: str | Path) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Read and validate the cohort's participants table; return it with the cohort's trait names.

    Uses :func:`biobank.cohort_io.read_cohort` without blows (the baselines never need the curves),
    so schema errors name file, participant and column.
    """
    from biobank.cohort_io import read_cohort

    cohort = read_cohort(cohort_dir, blows=False)
    return cohort.participants, cohort.traits


def cohort_fingerprint(cohort_dir: str | Path) -> str:
    """Short content hash of the cohort (participants.parquet + cohort.json), for the experiment name."""
    h = hashlib.sha256()
    for name in ("participants.parquet", "cohort.json"):
        path = Path(cohort_dir) / name
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()[:8]


def _check_cohort(participants: pd.DataFrame, traits: Sequence[str]) -> dict[str, dict[str, int]]:
    """Validate splits and labels; return missing-label counts per trait and split (reported, not hidden)."""
    for col in ("eid", "split", *traits):
        if col not in participants.columns:
            raise SpirolmInputError("column missing from the participants table", field=col)
    bad = ~participants["split"].isin(SPLITS)
    if bad.any():
        raise SpirolmInputError(f"split {participants.loc[bad, 'split'].iloc[0]!r} is not train/val/test",
                                eid=participants.loc[bad, "eid"].iloc[0], field="split")
    missing_counts: dict[str, dict[str, int]] = {}
    for trait in traits:
        missing_counts[trait] = {}
        for split in SPLITS:
            y = participants.loc[participants["split"] == split, trait]
            labelled = pd.to_numeric(y).dropna()
            if labelled.nunique() < 2:
                raise SpirolmInputError(
                    f"trait {trait!r} has {'no labelled participants' if labelled.empty else 'a single class'} "
                    f"in split {split!r} ({len(labelled)} labelled, {int(labelled.sum())} cases)", field=trait)
            missing_counts[trait][split] = int(y.isna().sum())
    return missing_counts


# ----------------------------------------------------------------------------- pipeline


@dataclass
class FittedRun:
    """One fitted (model, feature set, trait) with what is needed to log and explain it."""

    model: BaselineModel
    feature_set: str
    trait: str
    method: str
    features: F.FeatureMatrix
    train_mask: np.ndarray
    test_mask: np.ndarray
    n_train: int
    n_val: int


@dataclass
class BaselineResult:
    """Everything :func:`train_baselines` produced.

    Attributes:
        comparison: the harness output on the test split (oracle row included when available).
        out_dir: where files were written; ``files`` lists them.
        predictions_path: ``predictions_test.parquet`` (eid + ``<trait>__<method>`` risks; local only).
        experiment_name, tracking_uri, parent_run_id: where the MLflow runs are.
        run_ids: ``{(model, feature_set, trait): run_id}``.
        skipped: feature sets / models skipped, with the reason (e.g. no embeddings yet).
        notes: data notes (skipped optional columns, QC-failed spirometry counts).
        missing_labels: ``{trait: {split: n}}`` participants without a label (excluded from fit/metrics).
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
    fitted: dict[tuple[str, str, str], FittedRun] = field(repr=False)


def method_name(model: str, feature_set: str) -> str:
    """Row label of a baseline in the comparison table, e.g. ``xgboost:tabular+spirometry``."""
    return f"{model}:{feature_set}"


def _configs(models: Sequence[str], seed: int, configs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Per-model configs with the pipeline seed applied (explicit configs keep their other fields)."""
    out = {}
    for name in models:
        cfg = (configs or {}).get(name)
        cfg = get_model(name, cfg).cfg
        out[name] = replace(cfg, seed=seed)
    return out


def fit_baselines(
    participants: pd.DataFrame,
    traits: Sequence[str],
    *,
    feature_sets: Sequence[str],
    models: Sequence[str],
    embeddings: pd.DataFrame | None,
    seed: int,
    configs: Mapping[str, Any] | None = None,
) -> tuple[dict[tuple[str, str, str], FittedRun], pd.DataFrame, list[str], list[str]]:
    """Fit every (model, feature set, trait) on train (early stopping on val) and score test.

    Returns:
        ``(fitted, predictions, skipped, notes)``: predictions hold ``eid`` + one
        ``<trait>__<method>`` column per fitted run, for every test participant.
    """
    cfgs = _configs(models, seed, configs)
    split = participants["split"].to_numpy()
    test = split == "test"
    preds = pd.DataFrame({"eid": participants.loc[test, "eid"].to_numpy()})
    fitted: dict[tuple[str, str, str], FittedRun] = {}
    skipped: list[str] = []
    notes: list[str] = []
    for fs in feature_sets:
        F.check_feature_set(fs)
        if fs == F.TABULAR_EMBEDDING and embeddings is None:
            msg = ("feature set 'tabular+embedding' skipped: no spirogram embeddings given (--embeddings FILE, "
                   "written by the encoder); not faked")
            log.warning(msg)
            skipped.append(msg)
            continue
        fm = F.build_features(participants, fs, embeddings=embeddings)
        notes.extend(f"{fs}: {n}" for n in fm.notes)
        for s in SPLITS:
            F.check_split_features(fm, split == s, s)
        for trait in traits:
            y = pd.to_numeric(participants[trait]).to_numpy(dtype=float)
            train = (split == "train") & ~np.isnan(y)
            val = (split == "val") & ~np.isnan(y)
            for name in models:
                model = get_model(name, cfgs[name]).fit(fm, train, y[train].astype(int), val, y[val].astype(int))
                method = method_name(name, fs)
                preds[f"{trait}__{method}"] = model.predict_risk(fm.X.loc[test])
                fitted[(name, fs, trait)] = FittedRun(model, fs, trait, method, fm, train, test,
                                                      int(train.sum()), int(val.sum()))
                log.info("fitted %s for %s on %d participants", method, trait, int(train.sum()))
    return fitted, preds, skipped, notes


def _scores_by_method(preds: pd.DataFrame, fitted: Mapping[tuple[str, str, str], FittedRun]) -> dict[str, pd.DataFrame]:
    methods: dict[str, dict[str, np.ndarray]] = {}
    for run in fitted.values():
        methods.setdefault(run.method, {})[run.trait] = preds[f"{run.trait}__{run.method}"].to_numpy()
    return {m: pd.DataFrame({"eid": preds["eid"], **cols}) for m, cols in methods.items()}


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
    """Train, evaluate and log the tabular baselines of one cohort.

    Args:
        cohort_dir: cohort directory (``participants.parquet`` with ``split`` and trait columns).
        traits: traits to model; default every trait of the cohort (``cohort.json`` / Int8 columns).
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
        shap_dir: also keep those SHAP files locally, one folder per fit
            (:func:`experiments.mlflow_utils.shap_folder_name`).

    Returns:
        :class:`BaselineResult`.

    Raises:
        SpirolmInputError: bad cohort (missing columns, unknown split, a trait with one class in a
            split, all-missing features), unknown model / feature set, bad embeddings.
    """
    from experiments import mlflow_utils

    cohort_dir = Path(cohort_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    participants, cohort_traits = read_participants(cohort_dir)
    participants = participants.reset_index(drop=True)
    traits = list(traits) if traits else list(cohort_traits)
    if not traits:
        raise SpirolmInputError("no trait columns found in the cohort", file=cohort_dir)
    missing_labels = _check_cohort(participants, traits)
    emb = F.load_embeddings(embeddings) if embeddings is not None else None
    for name in models:
        get_model(name)  # fail fast on an unknown name or feature set, before any training
    for fs in feature_sets:
        F.check_feature_set(fs)

    fitted, preds, skipped, notes = fit_baselines(
        participants, traits, feature_sets=feature_sets, models=models, embeddings=emb, seed=seed, configs=configs)
    if not fitted:
        raise SpirolmInputError("nothing to train: every requested feature set was skipped", field="features")
    test_participants = participants.loc[participants["split"] == "test"].reset_index(drop=True)
    comparison = compare_methods(test_participants, _scores_by_method(preds, fitted), traits,
                                 n_bootstrap=n_bootstrap, seed=seed)

    predictions_path = out / "predictions_test.parquet"
    preds.to_parquet(predictions_path, index=False)
    files = [predictions_path, *comparison.save_tables(out), *comparison.plot(out / "plots")]

    tracking = mlflow_utils.log_baseline_runs(
        cohort_dir=cohort_dir, comparison=comparison, fitted=fitted, files=files, predictions_path=predictions_path,
        seed=seed, traits=traits, missing_labels=missing_labels, notes=[*skipped, *notes],
        tracking_uri=tracking_uri, out_dir=out, log_predictions=log_predictions, explain=explain,
        shap_dir=Path(shap_dir) if shap_dir is not None else None,
    )
    return BaselineResult(
        comparison=comparison, out_dir=out, predictions_path=predictions_path, files=files,
        experiment_name=tracking.experiment_name, tracking_uri=tracking.tracking_uri,
        parent_run_id=tracking.parent_run_id, run_ids=tracking.run_ids, skipped=skipped, notes=notes,
        missing_labels=missing_labels, fitted=fitted,
    )
