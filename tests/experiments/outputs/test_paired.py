"""Paired bootstrap AUROC differences: exact point estimates, shared resamples, narrower than unpaired."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from experiments.evaluate.harness import ORACLE, compare_methods, resample_blocks, trait_seed
from experiments.evaluate.paired import differences_markdown, paired_auroc_difference, paired_differences
from signals.errors import SpirolmInputError


def _scores(n: int = 1500, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels, true risk, and two correlated models (b = a plus a little extra noise)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    risk = 1 / (1 + np.exp(-(-1.5 + 1.3 * x)))
    y = (rng.random(n) < risk).astype(float)
    a = 1 / (1 + np.exp(-(1.3 * x + rng.normal(0, 0.6, n))))
    b = 1 / (1 + np.exp(-(1.3 * x + rng.normal(0, 0.6, n) + rng.normal(0, 0.8, n))))
    return y, risk, a, b


def test_point_difference_is_exact_and_ci_is_seeded():
    y, _, a, b = _scores()
    d = paired_auroc_difference(y, a, b, 400, seed=7)
    assert d.diff == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b))
    assert d.ci.low <= d.diff <= d.ci.high
    again = paired_auroc_difference(y, a, b, 400, seed=7)
    assert (again.ci.low, again.ci.high) == (d.ci.low, d.ci.high)
    assert paired_auroc_difference(y, a, b, 400, seed=8).ci != d.ci


def test_identical_models_differ_by_exactly_zero():
    y, _, a, _ = _scores()
    d = paired_auroc_difference(y, a, a.copy(), 200, seed=0)
    assert d.diff == 0.0 and d.ci.low == 0.0 and d.ci.high == 0.0


def test_paired_ci_is_narrower_than_an_unpaired_one():
    """The reason for pairing: shared sampling noise cancels. An unpaired CI (independent resamples per
    model) of the same difference must come out wider."""
    y, _, a, b = _scores()
    paired = paired_auroc_difference(y, a, b, 400, seed=1)
    rng = np.random.default_rng(2)
    n = len(y)
    unpaired = []
    for _ in range(400):
        i, j = rng.integers(0, n, n), rng.integers(0, n, n)
        unpaired.append(roc_auc_score(y[i], a[i]) - roc_auc_score(y[j], b[j]))
    lo, hi = np.percentile(unpaired, [2.5, 97.5])
    assert paired.ci.high - paired.ci.low < 0.6 * (hi - lo)


def test_differences_use_the_comparisons_own_resamples():
    """Each row's CI and each difference come from the same draws: recomputing the difference on the
    resamples of ``resample_blocks`` with the comparison's trait seed gives the table's CI."""
    y, risk, a, b = _scores(800)
    p = pd.DataFrame({"eid": np.arange(len(y)), "copd": y.astype(int), "true_risk_copd": risk})
    scores = {"a": pd.DataFrame({"eid": p["eid"], "risk_copd": a}), "b": pd.DataFrame({"eid": p["eid"], "risk_copd": b})}
    result = compare_methods(p, scores, ["copd"], n_bootstrap=300, seed=5, subgroups=False)
    diffs = paired_differences(result, focal=["a"])
    assert list(diffs["other"]) == ["b"]  # the oracle is a ceiling, not a control
    manual = [roc_auc_score(y[i], a[i]) - roc_auc_score(y[i], b[i])
              for idx in resample_blocks(len(y), 300, trait_seed(5, 0)) for i in idx]
    lo, hi = np.percentile(manual, [2.5, 97.5])
    assert diffs.loc[0, "ci_lo"] == pytest.approx(lo) and diffs.loc[0, "ci_hi"] == pytest.approx(hi)
    with_oracle = paired_differences(result, focal=["a"], against=[ORACLE, "b"])
    assert list(with_oracle["other"]) == [ORACLE, "b"]
    assert paired_differences(result, focal=["not-a-row"]).empty
    md = differences_markdown(diffs)
    assert "**a minus each other row**" in md and "| b |" in md


def test_mismatched_lengths_are_refused():
    y, _, a, b = _scores(100)
    with pytest.raises(SpirolmInputError, match="mismatched lengths"):
        paired_auroc_difference(y, a, b[:-1], 10, seed=0)
