"""The evaluation harness: exact metrics, seeded CIs, oracle row, subgroups, bad input."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from experiments.evaluate.harness import (
    ORACLE,
    age_band,
    bootstrap_auroc_auprc,
    compare_methods,
    default_subgroups,
    evaluate_scores,
)
from experiments.evaluate.plots import plot_comparison
from signals.errors import SpirolmInputError


def _signal(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels drawn from a known logistic risk over two features; returns (y, true risk, noisy score)."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    risk = 1 / (1 + np.exp(-(-1.5 + 1.2 * x1 - 0.8 * x2)))
    y = (rng.random(n) < risk).astype(float)
    noisy = 1 / (1 + np.exp(-(-1.5 + 1.2 * x1 - 0.8 * x2 + rng.normal(0, 1.5, n))))
    return y, risk, noisy


def test_vectorised_bootstrap_matches_sklearn_with_ties():
    rng = np.random.default_rng(3)
    n = 400
    y = (rng.random(n) < 0.2).astype(float)
    score = np.round(rng.random(n) * 0.6 + 0.3 * y, 2)  # rounding creates many ties
    idx = rng.integers(0, n, size=(25, n))  # resampling duplicates rows: more ties
    auroc, auprc, valid = bootstrap_auroc_auprc(y, score, idx)
    assert valid.all()
    for b in range(25):
        assert auroc[b] == pytest.approx(roc_auc_score(y[idx[b]], score[idx[b]]), abs=1e-12)
        assert auprc[b] == pytest.approx(average_precision_score(y[idx[b]], score[idx[b]]), abs=1e-12)


def test_single_class_resamples_are_skipped_and_counted():
    y = np.zeros(40)
    y[0] = 1.0
    score = np.linspace(0.01, 0.99, 40)
    auroc, _, valid = bootstrap_auroc_auprc(y, score, np.random.default_rng(0).integers(0, 40, size=(200, 40)))
    assert (~valid).sum() > 0 and np.isnan(auroc[~valid]).all()
    m = evaluate_scores(y, score, n_bootstrap=200, seed=0)
    assert 0 < m.n_bootstrap_skipped < 200
    assert np.isfinite(m.auroc_ci.low) and m.summary()["n_bootstrap_skipped"] == m.n_bootstrap_skipped


def test_metrics_match_sklearn_and_cis_contain_estimate():
    y, risk, noisy = _signal()
    m = evaluate_scores(y, noisy, n_bootstrap=300, seed=1)
    assert m.auroc == pytest.approx(roc_auc_score(y, noisy))
    assert m.auprc == pytest.approx(average_precision_score(y, noisy))
    assert m.brier == pytest.approx(brier_score_loss(y, noisy))
    assert m.n == len(y) and m.n_pos == int(y.sum()) and m.prevalence == pytest.approx(y.mean())
    assert m.auroc_ci.contains(m.auroc) and m.auprc_ci.contains(m.auprc)
    assert 0.02 < m.auroc_ci.high - m.auroc_ci.low < 0.15
    oracle = evaluate_scores(y, risk, n_bootstrap=0)
    assert oracle.auroc > m.auroc > 0.6  # the noisy score is worse than the true risk, better than chance
    assert np.isnan(oracle.auroc_ci.low)  # n_bootstrap=0 disables CIs explicitly


def test_same_seed_identical_other_seed_different():
    y, _, noisy = _signal()
    a = evaluate_scores(y, noisy, n_bootstrap=200, seed=7)
    b = evaluate_scores(y, noisy, n_bootstrap=200, seed=7)
    c = evaluate_scores(y, noisy, n_bootstrap=200, seed=8)
    assert a.summary() == b.summary()
    assert a.auroc_ci != c.auroc_ci


def test_missing_labels_are_counted_not_hidden():
    y, _, noisy = _signal(500)
    y_obj = pd.array(y.astype(int), dtype="Int8")
    y_obj[[3, 10, 11]] = pd.NA
    m = evaluate_scores(y_obj, noisy, n_bootstrap=50)
    assert m.n_missing_label == 3 and m.n == 497
    keep = np.ones(500, bool)
    keep[[3, 10, 11]] = False
    assert m.auroc == pytest.approx(roc_auc_score(y[keep], noisy[keep]))


def test_calibration_bins_and_ece():
    y, risk, _ = _signal(5000)
    good = evaluate_scores(y, risk, n_bootstrap=0, n_bins=10)
    assert good.calibration["count"].sum() == 5000
    assert list(good.calibration.columns) == ["bin", "mean_predicted", "fraction_positive", "count"]
    bad = evaluate_scores(y, np.clip(risk * 0.3, 0, 1), n_bootstrap=0)
    assert good.ece < 0.03 < bad.ece


def test_calibration_slope_and_intercept():
    """True risks are calibrated (slope 1, intercept 0); a +1 logit shift moves only the intercept; doubling
    the logit spread halves the slope."""
    rng = np.random.default_rng(3)
    lp = rng.normal(-1.5, 1.0, 40_000)
    y = (rng.random(lp.size) < 1 / (1 + np.exp(-lp))).astype(float)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    true = evaluate_scores(y, sig(lp), n_bootstrap=0)
    assert true.calibration_slope == pytest.approx(1.0, abs=0.05)
    assert true.calibration_intercept == pytest.approx(0.0, abs=0.05)
    shifted = evaluate_scores(y, sig(lp + 1.0), n_bootstrap=0)
    assert shifted.calibration_slope == pytest.approx(1.0, abs=0.05)
    assert shifted.calibration_intercept == pytest.approx(-1.0, abs=0.06)
    spread = evaluate_scores(y, sig(2 * lp + 1.5), n_bootstrap=0)
    assert spread.calibration_slope == pytest.approx(0.5, abs=0.03)
    assert {"calibration_slope", "calibration_intercept"} <= set(true.summary())


def test_subgroups_by_sex_age_band_smoking():
    y, _, noisy = _signal(1200)
    rng = np.random.default_rng(0)
    people = pd.DataFrame({
        "sex": rng.choice(["female", "male"], 1200),
        "age": rng.uniform(38, 72, 1200),
        "smoking_status": pd.Series(rng.choice(["never", "previous", "current", None], 1200), dtype=object),
    })
    groups = default_subgroups(people)
    m = evaluate_scores(y, noisy, groups=groups, n_bootstrap=50, seed=0)
    sub = m.subgroups
    assert set(sub["variable"]) == {"sex", "age_band", "smoking_status"}
    assert set(sub.loc[sub["variable"] == "age_band", "level"]) == {"<40", "40-49", "50-59", "60-69", ">=70"}
    assert "missing" in set(sub.loc[sub["variable"] == "smoking_status", "level"])
    male = (people["sex"] == "male").to_numpy()
    row = sub[(sub["variable"] == "sex") & (sub["level"] == "male")].iloc[0]
    assert row["n"] == male.sum()
    assert row["auroc"] == pytest.approx(roc_auc_score(y[male], noisy[male]))
    for variable, part in sub.groupby("variable"):
        assert part["n"].sum() == 1200, variable


def test_single_class_subgroup_is_noted():
    y = np.array([0, 1] * 50, dtype=float)
    score = np.linspace(0.1, 0.9, 100)
    groups = pd.DataFrame({"sex": ["male"] * 98 + ["female"] * 2})
    groups.loc[98:, "sex"] = "female"
    y[98:] = 0
    sub = evaluate_scores(y, score, groups=groups, n_bootstrap=20).subgroups
    female = sub[sub["level"] == "female"].iloc[0]
    assert np.isnan(female["auroc"]) and "single class" in female["note"]


def test_age_bands():
    bands = age_band(pd.Series([39.9, 40.0, 49.99, 50, 65, 70, np.nan]))
    assert list(bands) == ["<40", "40-49", "40-49", "50-59", "60-69", ">=70", "missing"]


@pytest.mark.parametrize(
    ("y", "score", "match"),
    [
        ([0, 1, 0], [0.1, 0.2], "mismatched lengths"),
        ([0, 1, 0, 1], [0.1, np.nan, 0.3, 0.4], "non-finite"),
        ([0, 1, 0, 1], [0.1, np.inf, 0.3, 0.4], "non-finite"),
        ([0, 2, 0, 1], [0.1, 0.2, 0.3, 0.4], "not 0/1"),
        ([0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4], "only one class"),
        ([0, 1, 0, 1], [0.1, 1.2, 0.3, 0.4], r"\[0, 1\]"),
        ([0, 1, 0, 1], ["a", 0.2, 0.3, 0.4], "not numeric"),
    ],
)
def test_bad_input_raises(y, score, match):
    with pytest.raises(SpirolmInputError, match=match):
        evaluate_scores(y, score, n_bootstrap=10)


def test_bad_input_names_the_participant():
    with pytest.raises(SpirolmInputError, match="participant 1003"):
        evaluate_scores([0, 1, 0, 1], [0.1, 0.2, np.nan, 0.4], ids=[1001, 1002, 1003, 1004])


def test_groups_length_mismatch():
    with pytest.raises(SpirolmInputError, match="subgroup rows"):
        evaluate_scores([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], groups=pd.DataFrame({"sex": ["male"] * 3}))


def test_bootstrap_speed_10k_rows():
    rng = np.random.default_rng(0)
    y = (rng.random(10_000) < 0.1).astype(float)
    score = 1 / (1 + np.exp(-(rng.normal(size=10_000) + y - 2)))
    start = time.perf_counter()
    evaluate_scores(y, score, n_bootstrap=1000, seed=0)
    assert time.perf_counter() - start < 3.0


# ----------------------------------------------------------------------------- compare_methods


def _test_split(n: int = 800, seed: int = 0) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    rng = np.random.default_rng(seed)
    y_a, risk_a, noisy_a = _signal(n, seed)
    y_c, risk_c, noisy_c = _signal(n, seed + 1)
    eids = np.arange(5_000_000, 5_000_000 + n)
    participants = pd.DataFrame({
        "eid": eids, "sex": rng.choice(["female", "male"], n), "age": rng.uniform(40, 70, n),
        "smoking_status": rng.choice(["never", "previous", "current"], n),
        "asthma": pd.array(y_a.astype(int), dtype="Int8"), "copd": pd.array(y_c.astype(int), dtype="Int8"),
        "true_risk_asthma": risk_a, "true_risk_copd": risk_c,
    })
    order = rng.permutation(n)  # methods may list participants in any order
    scores = {
        "noisy": pd.DataFrame({"eid": eids[order], "risk_asthma": noisy_a[order], "risk_copd": noisy_c[order]}),
        "constant-ish": pd.DataFrame({"eid": eids, "risk_asthma": np.full(n, 0.3) + rng.normal(0, 1e-3, n)}),
    }
    return participants, scores


def test_compare_methods_adds_oracle_and_ratio(tmp_path):
    participants, scores = _test_split()
    result = compare_methods(participants, scores, ["asthma", "copd"], n_bootstrap=100, seed=0)
    assert result.methods == [ORACLE, "noisy", "constant-ish"]
    table = result.to_frame()
    noisy_a = table[(table["method"] == "noisy") & (table["trait"] == "asthma")].iloc[0]
    oracle_a = table[(table["method"] == ORACLE) & (table["trait"] == "asthma")].iloc[0]
    assert noisy_a["auroc_vs_oracle"] == pytest.approx(noisy_a["auroc"] / oracle_a["auroc"])
    assert oracle_a["auroc"] == pytest.approx(
        roc_auc_score(participants["asthma"].astype(int), participants["true_risk_asthma"]))
    # scores were permuted: alignment by eid must reproduce the unpermuted metric
    y, _, noisy = _signal(800, 0)
    assert noisy_a["auroc"] == pytest.approx(roc_auc_score(y, noisy))
    assert ("constant-ish", "copd") not in result.metrics
    md = result.to_markdown()
    assert md.count("\n") == 2 + 3 and "| oracle |" in md and "% of oracle" in md
    assert " - |" in md  # constant-ish has no copd cell
    cal = result.calibration_markdown()
    assert cal.count("\n") == 2 + 3 and "Brier / slope / intercept / ECE" in cal
    m = result.metrics[("noisy", "asthma")]
    assert f"| noisy | {m.brier:.3f} / {m.calibration_slope:.3f} / {m.calibration_intercept:.3f} / {m.ece:.3f}" in cal
    files = result.save_tables(tmp_path)
    assert pd.read_csv(files[1]).shape[0] == len(result.metrics)
    sub = pd.read_csv(files[2])
    assert {"method", "trait", "variable", "level"} <= set(sub.columns) and "eid" not in sub.columns
    pngs = plot_comparison(result, tmp_path / "plots")
    assert len(pngs) == 6 and all(p.stat().st_size > 5000 for p in pngs)


def test_compare_methods_paired_bootstrap_is_reproducible():
    participants, scores = _test_split()
    a = compare_methods(participants, scores, ["asthma"], n_bootstrap=100, seed=3).to_frame()
    b = compare_methods(participants, scores, ["asthma"], n_bootstrap=100, seed=3).to_frame()
    pd.testing.assert_frame_equal(a, b)


def test_no_oracle_without_true_risk():
    participants, scores = _test_split()
    result = compare_methods(participants.drop(columns=["true_risk_asthma", "true_risk_copd"]), scores,
                             ["asthma"], n_bootstrap=20)
    assert ORACLE not in result.methods
    assert np.isnan(result.to_frame()["auroc_vs_oracle"]).all()


def test_compare_methods_bad_input():
    participants, scores = _test_split()
    short = {"noisy": scores["noisy"].iloc[1:]}
    with pytest.raises(SpirolmInputError, match="no risk for 1 of 800"):
        compare_methods(participants, short, ["asthma"], n_bootstrap=10)
    extra = {"noisy": pd.concat([scores["noisy"], pd.DataFrame({"eid": [1], "risk_asthma": [0.5], "risk_copd": [0.5]})])}
    with pytest.raises(SpirolmInputError, match="not in the evaluated set"):
        compare_methods(participants, extra, ["asthma"], n_bootstrap=10)
    dup = {"noisy": pd.concat([scores["noisy"], scores["noisy"].iloc[:1]])}
    with pytest.raises(SpirolmInputError, match="twice"):
        compare_methods(participants, dup, ["asthma"], n_bootstrap=10)
    with pytest.raises(SpirolmInputError, match="reserved"):
        compare_methods(participants, {ORACLE: scores["noisy"]}, ["asthma"], n_bootstrap=10)
    with pytest.raises(SpirolmInputError, match="field wheeze"):
        compare_methods(participants, scores, ["wheeze"], n_bootstrap=10)
    bad = {"noisy": scores["noisy"].assign(risk_asthma=lambda d: d["risk_asthma"].where(d.index != 5, np.nan))}
    with pytest.raises(SpirolmInputError, match="non-finite.*participant"):
        compare_methods(participants, bad, ["asthma"], n_bootstrap=10)
