"""SHAP for the baselines: additivity in log-odds, readable names, plots, bad input."""

from __future__ import annotations

import matplotlib.figure
import numpy as np
import pytest

from experiments.baselines.fit import fit_baselines
from experiments.explain.tabular_shap import (
    ShapResult,
    explain_tabular,
    plot_shap_summary,
    plot_shap_waterfall,
    readable_name,
)
from signals.errors import SpirolmInputError
from tests.baseline_fixtures import FAST, make_participants


@pytest.fixture(scope="module")
def fitted():
    p = make_participants(700, seed=4)
    runs = fit_baselines(p, ["copd"], feature_sets=("tabular+spirometry",), models=("logreg", "xgboost"),
                         embeddings=None, seed=0, configs=FAST).fitted
    return p, runs


def _rows(run):
    X = run.features.X
    return X.loc[run.train_mask], X.loc[run.test_mask].iloc[:40]


def test_logreg_linear_explainer_adds_up_to_log_odds(fitted):
    _, runs = fitted
    run = runs[("logreg", "tabular+spirometry", "copd")]
    background, explain = _rows(run)
    result = explain_tabular(run.model, background, explain, max_background=100, seed=0)
    assert result.explainer == "linear" and result.values.shape[0] == 40
    log_odds = run.model.native.decision_function(explain)
    np.testing.assert_allclose(result.values.sum(axis=1) + result.base_values, log_odds, atol=1e-6)
    names = set(result.feature_names)
    assert {"age", "pack_years", "sex=male", "smoking_status=missing", "fev1_l missing"} <= names
    assert not any("__" in n for n in names)
    # pack-years and FEV1/FVC drive COPD in the fixture: they must rank among the top features
    top = list(result.mean_abs().index[:5])
    assert "pack_years" in top and any(n.startswith("fev1_fvc") for n in top)


def test_xgboost_tree_explainer_adds_up_to_margin(fitted):
    _, runs = fitted
    run = runs[("xgboost", "tabular+spirometry", "copd")]
    background, explain = _rows(run)
    result = explain_tabular(run.model, background, explain, max_background=100, seed=0)
    assert result.explainer == "tree"
    margin = run.model.native.predict(run.model.model_input(explain), output_margin=True)
    np.testing.assert_allclose(result.values.sum(axis=1) + result.base_values, margin, atol=1e-4)
    assert "sex=male" in result.feature_names
    again = explain_tabular(run.model, background, explain, max_background=100, seed=0)
    np.testing.assert_array_equal(result.values, again.values)  # seeded background subsample


def test_native_models_and_numpy_inputs(fitted):
    _, runs = fitted
    run = runs[("xgboost", "tabular+spirometry", "copd")]
    background, explain = _rows(run)
    Xb, Xe = run.model.model_input(background), run.model.model_input(explain)
    from_native = explain_tabular(run.model.native, Xb.to_numpy(), Xe.to_numpy(), list(Xb.columns),
                                  max_background=100, seed=0)
    from_wrapper = explain_tabular(run.model, background, explain, max_background=100, seed=0)
    np.testing.assert_allclose(from_native.values, from_wrapper.values, atol=1e-9)
    with pytest.raises(SpirolmInputError, match="feature_names"):
        explain_tabular(run.model.native, Xb.to_numpy(), Xe.to_numpy(), None)


def test_bad_inputs(fitted):
    _, runs = fitted
    run = runs[("logreg", "tabular+spirometry", "copd")]
    background, explain = _rows(run)
    with pytest.raises(SpirolmInputError, match="no SHAP explainer"):
        explain_tabular(object(), background, explain)
    with pytest.raises(SpirolmInputError, match="at least one"):
        explain_tabular(run.model, background, explain.iloc[:0])
    result = explain_tabular(run.model, background, explain, max_background=50)
    with pytest.raises(SpirolmInputError, match="outside"):
        plot_shap_waterfall(result, 40, "unused.png")


def test_plots_written_and_waterfall_title_has_no_eid(fitted, tmp_path, monkeypatch):
    p, runs = fitted
    run = runs[("xgboost", "tabular+spirometry", "copd")]
    background, explain = _rows(run)
    result = explain_tabular(run.model, background, explain, max_background=100)
    titles: list[str] = []
    original = matplotlib.figure.Figure.savefig

    def spy(fig, *args, **kwargs):
        titles.append(fig._suptitle.get_text() if fig._suptitle is not None else "")
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    summary = plot_shap_summary(result, tmp_path / "summary.png")
    waterfall = plot_shap_waterfall(result, 3, tmp_path / "waterfall.png")
    assert summary.stat().st_size > 5000 and waterfall.stat().st_size > 5000
    eid = str(p.loc[run.test_mask, "eid"].iloc[3])
    assert eid not in titles[1] and "row 3" in titles[1]
    plot_shap_waterfall(result, 3, tmp_path / "named.png", title=f"participant {eid}")
    assert eid in titles[2]  # only when the caller explicitly asks


def test_readable_names():
    assert readable_name("num__age") == "age"
    assert readable_name("num__missingindicator_fev1_l") == "fev1_l missing"
    assert readable_name("cat__smoking_status_previous") == "smoking_status=previous"
    assert readable_name("cat__ethnicity_south_asian") == "ethnicity=south_asian"
    assert isinstance(ShapResult(np.zeros((1, 1)), np.zeros(1), np.zeros((1, 1)), ("a",), "tree").mean_abs()["a"],
                      float)
