"""GLI-2012 against the published check values (shared/reference/spirometry.md §2)."""

from __future__ import annotations

import numpy as np
import pytest

from signals import gli
from signals.errors import SpirolmInputError

# (sex, height, age) -> {param: (predicted, LLN)}
CHECK = [
    ("male", 176, 40, {"fev1": (4.13, 3.27), "fvc": (5.13, 4.08), "fev1_fvc": (0.809, 0.704)}),
    ("male", 176, 55, {"fev1": (3.68, 2.83), "fvc": (4.71, 3.64), "fev1_fvc": (0.784, 0.670)}),
    ("male", 176, 70, {"fev1": (3.14, 2.27), "fvc": (4.15, 3.08), "fev1_fvc": (0.761, 0.627)}),
    ("female", 163, 55, {"fev1": (2.65, 2.04), "fvc": (3.34, 2.57), "fev1_fvc": (0.799, 0.684)}),
]


@pytest.mark.parametrize("sex,height,age,expected", CHECK)
def test_published_check_values(sex, height, age, expected):
    for param, (pred, lower) in expected.items():
        tol = 0.005 if param == "fev1_fvc" else 0.02
        assert gli.predicted(param, sex, age, height) == pytest.approx(pred, abs=tol), param
        assert gli.lln(param, sex, age, height) == pytest.approx(lower, abs=tol), param


def test_zscore_check_value_and_lln_is_minus_1645():
    assert gli.zscore("fev1", 3.0, "male", 55, 176) == pytest.approx(-1.33, abs=0.05)
    for param in gli.PARAMS:
        low = gli.lln(param, "female", 61.5, 158.0, "other")
        assert gli.zscore(param, low, "female", 61.5, 158.0, "other") == pytest.approx(gli.LLN_Z, abs=1e-9)


def test_value_at_z_inverts_zscore_and_percent_predicted():
    z = np.array([-3.0, -1.0, 0.0, 1.5])
    v = gli.value_at_z("fvc", z, "male", 60, 180)
    np.testing.assert_allclose(gli.zscore("fvc", v, "male", 60, 180), z, atol=1e-9)
    assert gli.percent_predicted("fvc", v[2], "male", 60, 180) == pytest.approx(100.0)


def test_vectorised_matches_scalar_and_broadcasts():
    sex = np.array(["male", "female", "Male", "female"])
    age = np.array([45.0, 52.5, 66.0, 41.0])
    height = np.array([181.0, 160.0, 170.0, 165.0])
    eth = np.array(["caucasian", "african_american", "ne_asian", "se_asian"])
    L, M, S = gli.gli_lms("fev1", sex, age, height, eth)
    for i in range(4):
        li, mi, si = gli.gli_lms("fev1", sex[i], age[i], height[i], eth[i])
        assert (L[i], M[i], S[i]) == pytest.approx((float(li), float(mi), float(si)))
    # a scalar sex broadcasts over arrays of age
    assert gli.predicted("fvc", "male", age, 175.0).shape == (4,)


def test_ethnicity_lowers_volumes_not_ratio():
    cau = gli.predicted("fvc", "male", 50, 175, "caucasian")
    assert gli.predicted("fvc", "male", 50, 175, "african_american") < cau
    assert gli.predicted("fev1_fvc", "male", 50, 175, "ne_asian") == pytest.approx(
        gli.predicted("fev1_fvc", "male", 50, 175, "caucasian"))


def test_monotone_in_age_and_height_over_ukb_range():
    ages = np.arange(40, 70.1, 0.5)
    fev1 = gli.predicted("fev1", "female", ages, 165.0)
    assert np.all(np.diff(fev1) < 0)  # adults lose FEV1 with age
    assert gli.predicted("fev1", "male", 50, 185) > gli.predicted("fev1", "male", 50, 165)


def test_missing_value_gives_nan_z():
    z = gli.zscore("fev1", [np.nan, 3.0], "male", 55, 176)
    assert np.isnan(z[0]) and np.isfinite(z[1])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(sex="man"), "unknown sex"),
        (dict(ethnicity="white"), "unknown ethnicity"),
        (dict(age=2.0), "outside the GLI-2012 range"),
        (dict(age=97.0), "outside the GLI-2012 range"),
        (dict(age=float("nan")), "outside the GLI-2012 range"),
        (dict(age=20.0), "spline"),
        (dict(height_cm=-5.0), "height_cm"),
        (dict(param="pef"), "unknown GLI-2012 parameter"),
    ],
)
def test_bad_input_raises_named_error(kwargs, match):
    args = dict(param="fev1", sex="male", age=50.0, height_cm=175.0, ethnicity="caucasian") | kwargs
    with pytest.raises(SpirolmInputError, match=match):
        gli.gli_lms(args["param"], args["sex"], args["age"], args["height_cm"], args["ethnicity"])


def test_outside_nodes_nan_policy_and_nonpositive_value():
    m = gli.predicted("fev1", "male", np.array([20.0, 50.0, 85.0]), 175.0, outside_nodes="nan")
    assert np.isnan(m[0]) and np.isfinite(m[1]) and np.isnan(m[2])
    with pytest.raises(SpirolmInputError, match="fev1 must be positive"):
        gli.zscore("fev1", 0.0, "male", 55, 176)
