"""Risk calibrators: fitted maps undo a known miscalibration, are chosen by CV Brier, and round-trip."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, logit
from sklearn.metrics import brier_score_loss

from llm_bridge.calibration import RiskCalibrator, choose_calibrator, fit_calibrator
from signals.errors import SpirolmInputError


def _overconfident(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, true risks, and risks shifted up by +2 on the logit scale (as class weighting does)."""
    rng = np.random.default_rng(seed)
    true = expit(rng.normal(-2.5, 1.2, n))
    y = (rng.random(n) < true).astype(float)
    return y, true, expit(logit(true) + 2.0)


def test_platt_recovers_a_logit_shift():
    y, _, raw = _overconfident(20000)
    cal = fit_calibrator("platt", y, raw)
    assert cal.params["slope"] == pytest.approx(1.0, abs=0.08)
    assert cal.params["intercept"] == pytest.approx(-2.0, abs=0.15)
    assert cal.fitted_on == 20000


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibrated_risks_beat_raw_on_new_people(method):
    y, _, raw = _overconfident(3000, seed=1)
    cal = fit_calibrator(method, y, raw)
    y2, _, raw2 = _overconfident(3000, seed=2)
    out = cal.apply(raw2)
    assert out.shape == raw2.shape and np.all((out >= 0) & (out <= 1))
    assert brier_score_loss(y2, out) < brier_score_loss(y2, raw2) - 0.05
    assert abs(out.mean() - y2.mean()) < 0.02  # calibration in the large
    order = np.argsort(raw2)
    assert np.all(np.diff(out[order]) >= -1e-12)  # monotone: the ranking is kept


def test_choose_picks_the_lower_cv_brier_and_roundtrips():
    y, _, raw = _overconfident(2000, seed=3)
    cal = choose_calibrator(y, raw, seed=0)
    assert set(cal.cv_brier) == {"platt", "isotonic"}
    assert cal.method == min(cal.cv_brier, key=cal.cv_brier.get)
    again = RiskCalibrator.from_dict(cal.to_dict())
    assert again == cal
    np.testing.assert_array_equal(again.apply(raw), cal.apply(raw))
    assert choose_calibrator(y, raw, seed=0) == cal  # seeded folds: the same choice every time


def test_unknown_labels_are_left_out_and_small_sets_refused():
    y, _, raw = _overconfident(2000, seed=4)
    y_nan = y.copy()
    y_nan[:100] = np.nan
    assert choose_calibrator(y_nan, raw, seed=0).fitted_on == 1900
    few = np.zeros(50)
    few[:3] = 1
    with pytest.raises(SpirolmInputError, match="at least 5 cases") as err:
        choose_calibrator(few, np.linspace(0.1, 0.9, 50), trait="copd")
    assert err.value.field == "copd"
    with pytest.raises(SpirolmInputError, match="unknown calibration method"):
        fit_calibrator("beta", y, raw)
    with pytest.raises(SpirolmInputError, match="unknown calibration method"):
        RiskCalibrator.from_dict({"method": "beta", "params": {}, "fitted_on": 1})
