"""GLI-2012 / GLI Global 2022: published check values, equality with pyspiro's per-row functions, API."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pyspiro
import pytest

from signals import gli
from signals.errors import SpirolmInputError

G12, GLOBAL = gli.ReferenceEquation.GLI_2012, gli.ReferenceEquation.GLI_GLOBAL_2022

# GLI-2012 Caucasian check values, (sex, height, age) -> {param: (predicted, LLN)}
CHECK = [
    ("male", 176, 40, {"fev1": (4.13, 3.27), "fvc": (5.13, 4.08), "fev1_fvc": (0.809, 0.704)}),
    ("male", 176, 55, {"fev1": (3.68, 2.83), "fvc": (4.71, 3.64), "fev1_fvc": (0.784, 0.670)}),
    ("male", 176, 70, {"fev1": (3.14, 2.27), "fvc": (4.15, 3.08), "fev1_fvc": (0.761, 0.627)}),
    ("female", 163, 55, {"fev1": (2.65, 2.04), "fvc": (3.34, 2.57), "fev1_fvc": (0.799, 0.684)}),
]


@pytest.mark.parametrize("sex,height,age,expected", CHECK)
def test_gli2012_published_check_values(sex, height, age, expected):
    for param, (pred, lower) in expected.items():
        tol = 0.0015 if param == "fev1_fvc" else 0.006  # rounding of the published values
        assert gli.predicted(param, sex, age, height, "caucasian", equation=G12) == pytest.approx(pred, abs=tol)
        assert gli.lln(param, sex, age, height, "caucasian", equation=G12) == pytest.approx(lower, abs=tol)
    assert gli.zscore("fev1", 3.0, "male", 55, 176, "caucasian", equation="gli2012") == pytest.approx(-1.33, abs=0.01)


# ---- equality with pyspiro's own per-row (public) functions ------------------------------------------
AGES = [2.9, 3.0, 4.3, 8.0, 12.61, 17.5, 24.9, 25.0, 33.33, 40.0, 47.8, 55.0, 61.13, 69.9, 75.0, 80.0, 84.4,
        89.99, 90.0, 90.1, 94.2, 95.0, 95.1]
HEIGHTS = [95.0, 130.0, 158.5, 176.0, 201.0]
VALUE_FRACTIONS = (0.55, 1.0, 1.2)  # measured value = fraction x predicted
RTOL = 1e-12


def _rows(equation: gli.ReferenceEquation):
    eths = gli.ETHNICITIES if equation is G12 else (None,)
    yield from itertools.product(gli.EQUATION_PARAMS[equation], gli.SEXES, AGES, HEIGHTS, eths)


def _pyspiro_call(ref, method: str, param: str, sex: str, age: float, height: float, eth, value=1.0):
    """One public per-row pyspiro call (sex 1 = male, ethnicity codes 1-5); NA -> NaN."""
    kwargs = dict(sex=1 if sex == "male" else 0, age=age, height=height,
                  parameter=ref.Parameters[gli._PYSPIRO_PARAM[param]], value=value)
    if eth is not None:
        kwargs["ethnicity"] = gli.ETHNICITIES.index(eth) + 1
    out = getattr(ref, method)(**kwargs)
    if method == "lms":
        return tuple(np.nan if v is pd.NA else float(v) for v in out)
    return np.nan if out is pd.NA else float(out)


@pytest.mark.parametrize("equation", [G12, GLOBAL])
def test_vectorised_equals_pyspiro_per_row(equation):
    """Our one vectorised call per parameter equals pyspiro's public per-row lms/zscore/lln/uln/percent."""
    ref = pyspiro.GLI_2012() if equation is G12 else pyspiro.BOWERMAN_2022()
    rows = list(_rows(equation))
    for param in gli.EQUATION_PARAMS[equation]:
        sub = [r for r in rows if r[0] == param]
        _, sex, age, height, eth = (np.array(c, dtype=object) for c in zip(*sub))
        age, height = age.astype(float), height.astype(float)
        eth_arg = eth.astype(str) if equation is G12 else None
        L, M, S = gli.gli_lms(param, sex, age, height, eth_arg, equation=equation)
        lo, hi = gli.age_range(param, equation)
        assert np.array_equal(np.isnan(M), (age < lo) | (age > hi)), param
        assert np.isfinite(M).sum() > 0.7 * len(sub)

        expected = np.array([_pyspiro_call(ref, "lms", *r) for r in sub])
        np.testing.assert_allclose(np.column_stack([L, M, S]), expected, rtol=RTOL, equal_nan=True, err_msg=param)

        low = gli.lln(param, sex, age, height, eth_arg, equation=equation)
        high = gli.value_at_z(param, -gli.LLN_Z, sex, age, height, eth_arg, equation=equation)
        np.testing.assert_allclose(low, [_pyspiro_call(ref, "lln", *r) for r in sub], rtol=RTOL, equal_nan=True)
        np.testing.assert_allclose(high, [_pyspiro_call(ref, "uln", *r) for r in sub], rtol=RTOL, equal_nan=True)

        for frac in VALUE_FRACTIONS:
            value = np.where(np.isfinite(M), frac * np.nan_to_num(M, nan=1.0), 1.0)
            z = gli.zscore(param, value, sex, age, height, eth_arg, equation=equation)
            want = [_pyspiro_call(ref, "zscore", *r, value=v) for r, v in zip(sub, value)]
            np.testing.assert_allclose(z, want, rtol=RTOL, atol=1e-12, equal_nan=True, err_msg=param)
            pct = gli.percent_predicted(param, value, sex, age, height, eth_arg, equation=equation)
            want_pct = [_pyspiro_call(ref, "percent", *r, value=v) for r, v in zip(sub, value)]
            np.testing.assert_allclose(pct, want_pct, atol=0.005 + 1e-9, equal_nan=True)  # pyspiro rounds to 0.01
            # value_at_z inverts zscore, checked with pyspiro's zscore
            back = gli.value_at_z(param, z, sex, age, height, eth_arg, equation=equation)
            np.testing.assert_allclose(back, np.where(np.isfinite(M), value, np.nan), rtol=1e-10, equal_nan=True)


def test_age_ranges_match_pyspiro_tables():
    for equation, ref in ((G12, pyspiro.GLI_2012()), (GLOBAL, pyspiro.BOWERMAN_2022())):
        for param in gli.EQUATION_PARAMS[equation]:
            for sex in ("males", "females"):
                got = ref._spline_age_ranges[f"{gli._PYSPIRO_PARAM[param]}_{sex}"]
                assert gli.age_range(param, equation) == tuple(map(float, got))


# ---- API ----------------------------------------------------------------------------------------
def test_defaults_global_for_volumes_gli2012_for_fef():
    assert all(gli.equation_for(p) is GLOBAL for p in ("fev1", "fvc", "fev1_fvc"))
    assert gli.equation_for("fef25_75") is G12
    glob = gli.predicted("fev1", "male", 55, 176)
    assert glob == pytest.approx(float(gli.predicted("fev1", "male", 55, 176, equation="gli_global2022")))
    assert glob != pytest.approx(float(gli.predicted("fev1", "male", 55, 176, "caucasian", equation=G12)), abs=0.05)
    # GLI Global ignores ethnicity entirely
    assert gli.predicted("fvc", "male", 50, 175, "african_american") == pytest.approx(
        gli.predicted("fvc", "male", 50, 175, "caucasian"))
    with pytest.raises(SpirolmInputError, match="no fef25_75 equation"):
        gli.predicted("fef25_75", "male", 50, 175, equation=GLOBAL)
    with pytest.raises(SpirolmInputError, match="needs an ethnicity"):
        gli.predicted("fef25_75", "male", 50, 175)
    assert np.isfinite(gli.predicted("fef25_75", "male", 50, 175, "other"))


def test_ages_outside_old_nodes_are_real_and_outside_range_nan():
    ages = np.array([3.0, 6.5, 20.0, 24.0, 81.0, 88.0, 95.0])
    for equation, eth in ((G12, "caucasian"), (GLOBAL, None)):
        for param in ("fev1", "fvc", "fev1_fvc"):
            assert np.isfinite(gli.predicted(param, "female", ages, 160.0, eth, equation=equation)).all()
    m = gli.predicted("fev1", "male", np.array([2.5, 50.0, 96.0, np.nan]), 175.0)
    assert np.isnan(m[[0, 2, 3]]).all() and np.isfinite(m[1])
    fef = gli.predicted("fef25_75", "male", np.array([90.0, 92.0]), 175.0, "other")
    assert np.isfinite(fef[0]) and np.isnan(fef[1])  # GLI-2012 FEF25-75 stops at 90
    with pytest.raises(SpirolmInputError, match="outside the gli_global2022 fev1 range 3-95"):
        gli.predicted("fev1", "male", [50.0, 96.0], 175.0, outside_range="raise")


def test_value_at_z_inverts_zscore_and_percent_predicted():
    z = np.array([-3.0, -1.0, 0.0, 1.5])
    for equation in (G12, GLOBAL):
        v = gli.value_at_z("fvc", z, "male", 60, 180, "other", equation=equation)
        np.testing.assert_allclose(gli.zscore("fvc", v, "male", 60, 180, "other", equation=equation), z, atol=1e-9)
        assert gli.percent_predicted("fvc", v[2], "male", 60, 180, "other", equation=equation) == pytest.approx(100.0)
    for param in ("fev1", "fvc", "fev1_fvc"):
        low = gli.lln(param, "female", 61.5, 158.0)
        assert gli.zscore(param, low, "female", 61.5, 158.0) == pytest.approx(gli.LLN_Z, abs=1e-9)


def test_vectorised_matches_scalar_and_broadcasts():
    sex = np.array(["male", "female", "Male", "female"])
    age = np.array([45.0, 52.5, 66.0, 41.0])
    height = np.array([181.0, 160.0, 170.0, 165.0])
    eth = np.array(["caucasian", "african_american", "ne_asian", "se_asian"])
    L, M, S = gli.gli_lms("fev1", sex, age, height, eth, equation=G12)
    for i in range(4):
        li, mi, si = gli.gli_lms("fev1", sex[i], age[i], height[i], eth[i], equation=G12)
        assert (L[i], M[i], S[i]) == pytest.approx((float(li), float(mi), float(si)))
    assert gli.predicted("fvc", "male", age, 175.0).shape == (4,)
    assert gli.predicted("fvc", "male", age.reshape(2, 2), 175.0).shape == (2, 2)
    assert gli.predicted("fvc", "male", np.array([]), 175.0).shape == (0,)


def test_gli2012_ethnicity_lowers_volumes():
    cau = gli.predicted("fvc", "male", 50, 175, "caucasian", equation=G12)
    assert gli.predicted("fvc", "male", 50, 175, "african_american", equation=G12) < cau


def test_monotone_in_age_and_height_over_ukb_range():
    ages = np.arange(40, 70.1, 0.5)
    for equation, eth in ((G12, "caucasian"), (GLOBAL, None)):
        fev1 = gli.predicted("fev1", "female", ages, 165.0, eth, equation=equation)
        assert np.all(np.diff(fev1) < 0)  # adults lose FEV1 with age
    assert gli.predicted("fev1", "male", 50, 185) > gli.predicted("fev1", "male", 50, 165)


def test_missing_value_or_height_gives_nan():
    z = gli.zscore("fev1", [np.nan, 3.0], "male", 55, 176)
    assert np.isnan(z[0]) and np.isfinite(z[1])
    L, M, S = gli.gli_lms("fvc", "male", 55, [np.nan, 176.0])
    assert np.isnan([L[0], M[0], S[0]]).all() and np.isfinite(M[1])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(sex="man"), "unknown sex"),
        (dict(ethnicity="white"), "unknown ethnicity"),
        (dict(ethnicity=None), "needs an ethnicity"),
        (dict(height_cm=-5.0), "height_cm"),
        (dict(height_cm=np.inf), "height_cm"),
        (dict(age="old"), "age must be numeric"),
        (dict(param="pef"), "unknown GLI parameter"),
        (dict(equation="gli2022"), "unknown reference equation"),
    ],
)
def test_bad_input_raises_named_error(kwargs, match):
    args = dict(param="fev1", sex="male", age=50.0, height_cm=175.0, ethnicity="caucasian",
                equation="gli2012") | kwargs
    with pytest.raises(SpirolmInputError, match=match):
        gli.gli_lms(args["param"], args["sex"], args["age"], args["height_cm"], args["ethnicity"],
                    equation=args["equation"])


def test_nonpositive_value_raises():
    with pytest.raises(SpirolmInputError, match="fev1 must be positive"):
        gli.zscore("fev1", 0.0, "male", 55, 176)
