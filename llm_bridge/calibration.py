"""Risk recalibration: a monotone map fitted on validation risks and stored with the model.

Why: HeLM is trained with class-weighted answers, so its P(yes) over-states every risk (balanced
weights move the intercept by log(n_neg / n_pos)). A batch-scoring user reads a risk as a probability,
so the model artifact carries a calibrator fitted on held-out validation risks and every consumer
(scoring, the pyfunc, the report) applies it. Two standard maps, chosen per trait by cross-validated
Brier score on the same validation risks: Platt scaling (a logistic regression on the logit, Platt
1999) and isotonic regression (Zadrozny & Elkan 2002). Both come from scikit-learn; only their
fitted numbers are stored, so a checkpoint never holds pickled code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit, logit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss
from sklearn.model_selection import StratifiedKFold

from signals.errors import SpirolmInputError

CALIBRATION_METHODS = ("platt", "isotonic")
_EPS = 1e-6  # risks are clipped before the logit so 0 and 1 stay finite


def clipped_logit(risk: np.ndarray) -> np.ndarray:
    """``logit(risk)`` with risks clipped to ``[1e-6, 1 - 1e-6]``, so saturated risks stay finite."""
    return logit(np.clip(np.asarray(risk, dtype=float), _EPS, 1 - _EPS))


@dataclass(frozen=True)
class RiskCalibrator:
    """A fitted monotone map from raw to calibrated risk.

    Attributes:
        method: ``platt`` (``expit(slope * logit(r) + intercept)``) or ``isotonic`` (piecewise-linear
            through ``x`` -> ``y``, clipped outside).
        params: ``{"slope", "intercept"}`` or ``{"x": [...], "y": [...]}``.
        fitted_on: validation participants (with a label) it was fitted on.
        cv_brier: cross-validated Brier score of each candidate method on those participants.
    """

    method: str
    params: dict[str, float | list[float]]
    fitted_on: int
    cv_brier: dict[str, float] = field(default_factory=dict)

    def apply(self, risk: np.ndarray) -> np.ndarray:
        """Calibrated risks, same shape as ``risk``."""
        r = np.asarray(risk, dtype=float)
        if self.method == "platt":
            return expit(float(self.params["slope"]) * clipped_logit(r) + float(self.params["intercept"]))
        x, y = np.asarray(self.params["x"], float), np.asarray(self.params["y"], float)
        return np.interp(r, x, y)  # == IsotonicRegression.predict with out_of_bounds="clip"

    def to_dict(self) -> dict:
        """Plain numbers only (checkpoints load with ``weights_only=True``)."""
        return {"method": self.method, "params": self.params, "fitted_on": self.fitted_on, "cv_brier": self.cv_brier}

    @classmethod
    def from_dict(cls, d: dict) -> RiskCalibrator:
        """Inverse of :meth:`to_dict`."""
        if d.get("method") not in CALIBRATION_METHODS:
            raise SpirolmInputError(f"unknown calibration method {d.get('method')!r}", field="calibration")
        return cls(str(d["method"]), dict(d["params"]), int(d["fitted_on"]), dict(d.get("cv_brier", {})))


def fit_calibrator(method: str, y: np.ndarray, risk: np.ndarray) -> RiskCalibrator:
    """Fit one ``method`` on labels ``y`` (0/1) and raw risks ``risk``."""
    y = np.asarray(y, dtype=float)
    if method == "platt":
        # C large: an unpenalised two-parameter fit, as Platt scaling is defined
        lr = LogisticRegression(C=1e6, max_iter=1000).fit(clipped_logit(risk).reshape(-1, 1), y)
        params: dict[str, float | list[float]] = {"slope": float(lr.coef_[0, 0]), "intercept": float(lr.intercept_[0])}
    elif method == "isotonic":
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(np.asarray(risk, float), y)
        params = {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
    else:
        raise SpirolmInputError(f"unknown calibration method {method!r}; use one of {', '.join(CALIBRATION_METHODS)}",
                                field="calibration")
    return RiskCalibrator(method, params, int(len(y)))


def choose_calibrator(y: np.ndarray, risk: np.ndarray, *, folds: int = 5, seed: int = 0,
                      methods: tuple[str, ...] = CALIBRATION_METHODS, trait: str | None = None) -> RiskCalibrator:
    """The method with the lower ``folds``-fold cross-validated Brier score, refitted on all of ``y``.

    Args:
        y: 0/1 labels (NaN = unknown, left out); risk: the model's raw risks for the same people.
        folds, seed: stratified folds of the choice.
        methods: candidates.
        trait: named in errors.

    Raises:
        SpirolmInputError: fewer than ``folds`` cases or controls (too few to choose or fit a map).
    """
    y, risk = np.asarray(y, dtype=float), np.asarray(risk, dtype=float)
    known = ~np.isnan(y)
    y, risk = y[known], risk[known]
    n_pos = int(y.sum())
    if min(n_pos, len(y) - n_pos) < folds:
        raise SpirolmInputError(f"calibration needs at least {folds} cases and {folds} controls among the "
                                f"validation participants, got {n_pos} of {len(y)}", field=trait or "calibration")
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    scores: dict[str, float] = {}
    for method in methods:
        held_out = np.empty_like(risk)
        for fit_idx, eval_idx in cv.split(risk, y):
            held_out[eval_idx] = fit_calibrator(method, y[fit_idx], risk[fit_idx]).apply(risk[eval_idx])
        scores[method] = float(brier_score_loss(y, held_out))
    best = min(scores, key=lambda m: scores[m])
    chosen = fit_calibrator(best, y, risk)
    return RiskCalibrator(chosen.method, chosen.params, chosen.fitted_on, scores)
