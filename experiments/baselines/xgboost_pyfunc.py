"""The logged XGBoost baseline as MLflow code (models from code): ``predict`` returns probabilities.

Why not the xgboost flavor: its pyfunc ``predict`` calls ``XGBClassifier.predict`` and returns 0/1 class
labels, while the logistic-regression baseline's pyfunc returns ``predict_proba``. Every baseline logged by
:func:`experiments.baselines.mlflow_model.log_native_model` answers ``mlflow.pyfunc.load_model(uri)
.predict(X)`` with ``predict_proba``: an ``(n, 2)`` array whose column 1 is the risk of the trait.

Why models from code: MLflow copies this file into the model and runs it at load time; the booster is a
JSON artifact, so loading executes no pickled object. The file imports nothing from spirolm, so the model
loads wherever its logged requirements (mlflow, numpy, pandas, xgboost) are installed.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
import xgboost
from mlflow.pyfunc import PythonModel

#: Key of the booster's JSON file among the logged model's artifacts.
BOOSTER_ARTIFACT = "xgboost_model"


class XGBoostRisk(PythonModel):
    """A fitted ``XGBClassifier`` (loaded from its JSON artifact) whose ``predict`` is ``predict_proba``."""

    def load_context(self, context: Any) -> None:
        """Load the booster; its best iteration (early stopping) is stored in the JSON and restored."""
        self._clf = xgboost.XGBClassifier()
        self._clf.load_model(context.artifacts[BOOSTER_ARTIFACT])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        """``(n, 2)`` class probabilities; column 1 is the risk of the trait.

        ``model_input``: the one-hot encoded feature rows the model was fitted on
        (:func:`experiments.baselines.features.encode_categoricals`; the model's signature lists them).
        """
        return np.asarray(self._clf.predict_proba(model_input))


mlflow.models.set_model(XGBoostRisk())
