"""A fitted baseline as an MLflow model, and loading it back as a risk function.

Every baseline's pyfunc returns probabilities: ``mlflow.pyfunc.load_model(uri).predict(X)`` is
``predict_proba``, an ``(n, 2)`` array whose column 1 is the risk of the trait. Logistic regression is
logged in the sklearn flavor with ``pyfunc_predict_fn="predict_proba"``; XGBoost as models from code
(``xgboost_pyfunc.py`` with the booster as a JSON artifact), because the xgboost flavor's pyfunc returns
0/1 class labels and has no way to ask for probabilities. Neither loads pickled code.

Why explicit pip requirements: MLflow's automatic inference imports the model in a subprocess
(seconds per model) and picks up the whole venv, torch included, which the baselines never use.
Input examples are feature rows without participant ids.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import sklearn
import xgboost
from mlflow.models import infer_signature

MODEL_ARTIFACT = "model"
_N_INPUT_EXAMPLE = 5
# MLflow 3 saves sklearn models with skops (no pickle); OneHotEncoder's dtype parameter is a numpy
# dtype, which skops refuses unless trusted. Nothing else outside sklearn is referenced.
SKOPS_TRUSTED_TYPES = ["numpy.dtype"]
#: The XGBoost baseline's model code, copied into each logged model (models from code).
XGBOOST_MODEL_CODE = Path(__file__).with_name("xgboost_pyfunc.py")
#: Artifact key of the booster JSON; ``xgboost_pyfunc.BOOSTER_ARTIFACT`` reads the same key.
BOOSTER_ARTIFACT = "xgboost_model"


def _pip_requirements(flavor: str) -> list[str]:
    """Pinned requirements of a logged model."""
    reqs = [f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}", f"pandas=={pd.__version__}",
            f"scikit-learn=={sklearn.__version__}"]
    return reqs + ([f"xgboost=={xgboost.__version__}"] if flavor == "xgboost" else [])


def log_native_model(model: Any, input_frame: pd.DataFrame) -> str:
    """Log a fitted baseline, with a signature and an id-free input example, as a pyfunc returning risks.

    Args:
        model: a fitted :class:`experiments.baselines.models.BaselineModel`.
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
        signature = infer_signature(example, model.native.predict_proba(example))
        with tempfile.TemporaryDirectory(prefix="spirolm-xgb-") as tmp:
            booster = Path(tmp) / "xgboost_model.json"
            model.native.save_model(booster)
            mlflow.pyfunc.log_model(name=MODEL_ARTIFACT, python_model=str(XGBOOST_MODEL_CODE),
                                    artifacts={BOOSTER_ARTIFACT: str(booster)}, signature=signature,
                                    input_example=example, pip_requirements=_pip_requirements("xgboost"))
    else:
        raise ValueError(f"no MLflow flavor {model.flavor!r}")
    return f"runs:/{mlflow.active_run().info.run_id}/{MODEL_ARTIFACT}"


def load_risk_model(model_uri: str) -> Callable[[pd.DataFrame], np.ndarray]:
    """Load a logged baseline by URI and return ``score(X) -> risk`` (probability of the trait).

    ``X`` is what the logged model takes: raw feature rows for ``logreg`` (the whole Pipeline is
    logged), :func:`experiments.baselines.features.encode_categoricals` output for ``xgboost``.
    Loaded through pyfunc, as a user would; column 1 of its ``predict_proba`` output.
    """
    model = mlflow.pyfunc.load_model(model_uri)
    return lambda X: np.asarray(model.predict(X))[:, 1]
