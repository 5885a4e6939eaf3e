"""The tabular baselines (logistic regression, XGBoost) and their registry.

Why these two: they are the reference rows of HeLM's comparison (Belyaeva et al. 2023) and of the
ML-based COPD work; a spirogram model or LLM earns its place only by beating them on the same
participants with the same harness (:mod:`experiments.evaluate.harness`).

Models are built through a small registry keyed by name, as in ML-based COPD's ``models.py``:
``@register_model("logreg")`` on a class and ``get_model("logreg", cfg)`` to build it; unknown and
duplicate names raise. Each model has a frozen dataclass config holding every hyper-parameter and its
seed, so the same config gives identical predictions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from xgboost import XGBClassifier

from experiments.baselines import features as F
from signals.errors import SpirolmInputError

# ----------------------------------------------------------------------------- registry


class BaselineModel:
    """Interface of a registered baseline: fit on train (+val), predict risks, expose the native model."""

    name: ClassVar[str]
    config_cls: ClassVar[type]
    flavor: ClassVar[str]  # how experiments.baselines.mlflow_model logs the native model

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

    Categoricals are one-hot encoded by :func:`experiments.baselines.features.encode_categoricals`; missing
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
                "input_encoding": "experiments.baselines.features.encode_categoricals"}
