"""GLI-2012 spirometry reference equations (Quanjer et al., Eur Respir J 2012;40:1324-43).

Why our own implementation: the two PyPI packages either carry a share-alike licence on their lookup
table (spiro-zscore, CC BY-SA 4.0) or ignore the L spline and skewness (spiref), and both work row by
row. Here everything is vectorised numpy so a 500k cohort is scored in one call.

The LMS model (``shared/reference/spirometry.md`` §2)::

    M = exp(a0 + a1*ln(height_cm) + a2*ln(age) + a_eth + Mspline(age))
    S = exp(p0 + p1*ln(age) + Sspline(age))
    L = q0 + q1*ln(age) + Lspline(age)
    z   = ((y/M)**L - 1) / (L*S)
    LLN = M * (1 - 1.645*L*S)**(1/L)          (5th percentile)
    %pred = 100 * y / M

**Approximation.** The published splines are 0.25-year lookup tables over ages 3-95. We embed only
their values at ages 25/40/50/60/70/80 and interpolate linearly in age between those nodes. This
reproduces the published check values to about 0.01 L / 0.003 in FEV1/FVC / 0.03 z over 40-70 y (see
``tests/test_gli.py``), which is enough for cohort z-scores and for the simulator; it is *not* a
replacement for the official tables in a clinical report. Because the nodes stop at 25 and 80 years,
ages in 3-25 or 80-95 (inside GLI-2012 but outside our nodes) raise by default; pass
``outside_nodes="nan"`` to get NaN for those participants instead (never a silently extrapolated
value). Ages outside 3-95 are outside GLI-2012 itself and always raise.

Other simplifications, all documented because they are deliberate:
- Ethnic offsets are applied to M for FEV1 and FVC only (the values in the reference sheet). FEV1/FVC
  has no ethnic offset (GLI: "nearly independent of ethnicity") and S has none.
- Only the male FEV1/FVC L spline is non-zero in the reference sheet; the other L splines are 0.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from signals.errors import SpirolmInputError

Param = Literal["fev1", "fvc", "fev1_fvc"]
PARAMS: tuple[str, ...] = ("fev1", "fvc", "fev1_fvc")
SEXES: tuple[str, ...] = ("male", "female")
ETHNICITIES: tuple[str, ...] = ("caucasian", "african_american", "ne_asian", "se_asian", "other")

GLI_AGE_RANGE: tuple[float, float] = (3.0, 95.0)
"""Ages covered by GLI-2012 itself."""
NODE_AGE_RANGE: tuple[float, float] = (25.0, 80.0)
"""Ages covered by the embedded spline nodes (UK Biobank adults: 40-69 at recruitment, to ~82 later)."""
LLN_Z = -1.645
"""5th percentile of the standard normal: the GLI lower limit of normal."""

_NODE_AGES = np.array([25.0, 40.0, 50.0, 60.0, 70.0, 80.0])

# (param, sex) -> (a0, a1, a2, p0, p1, q0, q1); spirometry.md §2 (spiro-zscore lookup, Caucasian adults).
_COEF: dict[tuple[str, str], tuple[float, ...]] = {
    ("fev1", "male"): (-10.3420, 2.2196, 0.0574, -2.3268, 0.0798, 0.8866, 0.0850),
    ("fev1", "female"): (-9.6987, 2.1211, -0.0270, -2.3765, 0.0972, 1.1540, 0.0),
    ("fvc", "male"): (-11.2281, 2.4135, 0.0865, -2.2963, 0.0718, 0.9481, 0.0),
    ("fvc", "female"): (-10.4030, 2.2633, 0.0234, -2.3549, 0.1017, 0.8236, 0.0),
    ("fev1_fvc", "male"): (0.7403, -0.1595, -0.0366, -2.9595, 0.1156, 4.7101, -0.6774),
    ("fev1_fvc", "female"): (0.5506, -0.1078, -0.0544, -3.2395, 0.1850, 7.0320, -1.1970),
}

# (param, sex) -> (Mspline, Sspline, Lspline) at _NODE_AGES.
_ZERO = (0.0,) * 6
_SPLINES: dict[tuple[str, str], tuple[tuple[float, ...], ...]] = {
    ("fev1", "male"): (
        (0.190, 0.072, -0.013, -0.114, -0.233, -0.351),
        (-0.084, -0.060, -0.024, 0.067, 0.170, 0.254),
        _ZERO,
    ),
    ("fev1", "female"): (
        (0.175, 0.104, 0.023, -0.074, -0.193, -0.323),
        (-0.078, -0.089, -0.035, 0.049, 0.139, 0.223),
        _ZERO,
    ),
    ("fvc", "male"): (
        (0.157, 0.064, -0.007, -0.094, -0.196, -0.296),
        (-0.082, -0.050, 0.003, 0.072, 0.146, 0.214),
        _ZERO,
    ),
    ("fvc", "female"): (
        (0.144, 0.098, 0.028, -0.062, -0.172, -0.289),
        (-0.055, -0.097, -0.045, 0.045, 0.142, 0.235),
        _ZERO,
    ),
    ("fev1_fvc", "male"): (
        (0.031, 0.007, -0.005, -0.019, -0.033, -0.046),
        (-0.007, -0.103, -0.056, 0.046, 0.167, 0.279),
        (0.004, 0.202, 0.133, 0.019, -0.103, -0.218),
    ),
    ("fev1_fvc", "female"): (
        (0.029, 0.005, -0.005, -0.010, -0.017, -0.025),
        (-0.008, -0.061, -0.056, 0.008, 0.099, 0.192),
        _ZERO,
    ),
}

# (param, sex) -> M offset per ethnicity (Caucasian 0). FEV1/FVC: none (see module docstring).
_ETH_OFFSET: dict[tuple[str, str], dict[str, float]] = {
    ("fev1", "male"): {"african_american": -0.1589, "ne_asian": -0.0351, "se_asian": -0.0881, "other": -0.0708},
    ("fvc", "male"): {"african_american": -0.1684, "ne_asian": -0.0405, "se_asian": -0.1177, "other": -0.0825},
    ("fev1", "female"): {"african_american": -0.1484, "ne_asian": -0.0149, "se_asian": -0.1208, "other": -0.0708},
    ("fvc", "female"): {"african_american": -0.1555, "ne_asian": -0.0262, "se_asian": -0.1516, "other": -0.0833},
}


def gli_lms(
    param: Param,
    sex: str | np.ndarray,
    age: float | np.ndarray,
    height_cm: float | np.ndarray,
    ethnicity: str | np.ndarray = "caucasian",
    *,
    outside_nodes: Literal["raise", "nan"] = "raise",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GLI-2012 L, M, S for each person (broadcast over the array arguments).

    Args:
        param: ``"fev1"`` (L), ``"fvc"`` (L) or ``"fev1_fvc"`` (ratio).
        sex: ``"male"``/``"female"`` (case-insensitive), scalar or array.
        age: years; GLI-2012 covers 3-95, our embedded splines 25-80.
        height_cm: standing height in cm.
        ethnicity: one of :data:`ETHNICITIES`, scalar or array.
        outside_nodes: what to do for ages in 3-95 but outside the 25-80 spline nodes: ``"raise"``
            (default) or ``"nan"`` (L, M, S are NaN for those people).

    Returns:
        ``(L, M, S)`` float64 arrays of the broadcast shape.

    Raises:
        SpirolmInputError: unknown param/sex/ethnicity, non-finite or non-positive height, age outside
            3-95, or age outside 25-80 with ``outside_nodes="raise"``. The message names the value.
    """
    if param not in PARAMS:
        raise SpirolmInputError(f"unknown GLI-2012 parameter {param!r}; expected one of {PARAMS}", field="param")
    sex_a, age_a, h_a, eth_a = np.broadcast_arrays(
        _labels(sex, SEXES, "sex"), _floats(age, "age"), _floats(height_cm, "height_cm"),
        _labels(ethnicity, ETHNICITIES, "ethnicity"),
    )
    _check_height(h_a)
    usable = _check_age(age_a, outside_nodes)
    safe_age = np.where(usable, age_a, 50.0)  # placeholder so logs/interp stay finite; masked below
    ln_age = np.log(safe_age)
    L = np.full(age_a.shape, np.nan)
    M = np.full(age_a.shape, np.nan)
    S = np.full(age_a.shape, np.nan)
    for sx in SEXES:
        rows = sex_a == sx
        if not rows.any():
            continue
        a0, a1, a2, p0, p1, q0, q1 = _COEF[(param, sx)]
        msp, ssp, lsp = (np.interp(safe_age[rows], _NODE_AGES, np.asarray(s)) for s in _SPLINES[(param, sx)])
        eth_off = _ethnic_offset(param, sx, eth_a[rows])
        M[rows] = np.exp(a0 + a1 * np.log(h_a[rows]) + a2 * ln_age[rows] + eth_off + msp)
        S[rows] = np.exp(p0 + p1 * ln_age[rows] + ssp)
        L[rows] = q0 + q1 * ln_age[rows] + lsp
    for arr in (L, M, S):
        arr[~usable] = np.nan
    return L, M, S


def predicted(param: Param, sex, age, height_cm, ethnicity="caucasian", **kw) -> np.ndarray:
    """Predicted (median, M) value: litres for FEV1/FVC, a ratio for FEV1/FVC."""
    return gli_lms(param, sex, age, height_cm, ethnicity, **kw)[1]


def lln(param: Param, sex, age, height_cm, ethnicity="caucasian", **kw) -> np.ndarray:
    """Lower limit of normal (5th percentile), the GLI/ATS threshold that replaces fixed 0.70 / 80%."""
    return value_at_z(param, LLN_Z, sex, age, height_cm, ethnicity, **kw)


def value_at_z(param: Param, z, sex, age, height_cm, ethnicity="caucasian", **kw) -> np.ndarray:
    """Inverse of :func:`zscore`: the value whose z-score is ``z`` (used by the simulator).

    ``y = M * (1 + L*S*z)**(1/L)``; where ``1 + L*S*z <= 0`` (far below the distribution, |z| > ~6)
    the LMS transform is undefined and NaN is returned.
    """
    L, M, S = gli_lms(param, sex, age, height_cm, ethnicity, **kw)
    base = 1.0 + L * S * np.asarray(z, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(base > 0, M * np.abs(base) ** (1.0 / L), np.nan)


def zscore(param: Param, value, sex, age, height_cm, ethnicity="caucasian", **kw) -> np.ndarray:
    """GLI z-score of a measured value; NaN where ``value`` is NaN (missing spirometry stays missing).

    Raises:
        SpirolmInputError: a non-NaN value that is zero or negative (a volume/ratio must be positive).
    """
    y = _floats(value, param)
    bad = np.isfinite(y) & (y <= 0)
    if bad.any():
        raise SpirolmInputError(
            f"{param} must be positive for a GLI z-score; got {y[bad].ravel()[0]!r} "
            f"({int(bad.sum())} value(s))", field=param,
        )
    L, M, S = gli_lms(param, sex, age, height_cm, ethnicity, **kw)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((y / M) ** L - 1.0) / (L * S)


def percent_predicted(param: Param, value, sex, age, height_cm, ethnicity="caucasian", **kw) -> np.ndarray:
    """``100 * value / predicted``: the legacy %pred (GOLD's FEV1 80% threshold uses it)."""
    return 100.0 * _floats(value, param) / predicted(param, sex, age, height_cm, ethnicity, **kw)


# ---------------------------------------------------------------------------------------------------
def _floats(x, name: str) -> np.ndarray:
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise SpirolmInputError(f"{name} must be numeric; got {x!r:.60}", field=name) from None


def _labels(x, allowed: tuple[str, ...], name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=object)
    norm = np.vectorize(lambda v: str(v).strip().lower() if isinstance(v, str) else v, otypes=[object])(arr)
    ok = np.isin(norm, np.array(allowed, dtype=object))
    if not ok.all():
        bad = norm[~ok].ravel()[0]
        raise SpirolmInputError(f"unknown {name} {bad!r} for GLI-2012; expected one of {allowed}", field=name)
    return norm.astype(str)


def _check_height(h: np.ndarray) -> None:
    bad = ~np.isfinite(h) | (h <= 0)
    if bad.any():
        raise SpirolmInputError(
            f"height_cm must be a positive number; got {h[bad].ravel()[0]!r} ({int(bad.sum())} value(s))",
            field="height_cm",
        )


def _check_age(age: np.ndarray, outside_nodes: str) -> np.ndarray:
    """Return the mask of ages we can evaluate; raise for ages GLI-2012 does not cover."""
    lo, hi = GLI_AGE_RANGE
    bad = ~np.isfinite(age) | (age < lo) | (age > hi)
    if bad.any():
        raise SpirolmInputError(
            f"age {age[bad].ravel()[0]!r} is outside the GLI-2012 range {lo:g}-{hi:g} years "
            f"({int(bad.sum())} value(s))", field="age",
        )
    nlo, nhi = NODE_AGE_RANGE
    inside = (age >= nlo) & (age <= nhi)
    if not inside.all() and outside_nodes == "raise":
        raise SpirolmInputError(
            f"age {age[~inside].ravel()[0]!r} is inside GLI-2012 but outside the {nlo:g}-{nhi:g} y spline "
            f"nodes embedded in spirolm ({int((~inside).sum())} value(s)); pass outside_nodes='nan' to get NaN",
            field="age",
        )
    if outside_nodes not in ("raise", "nan"):
        raise SpirolmInputError(f"outside_nodes must be 'raise' or 'nan', got {outside_nodes!r}", field="outside_nodes")
    return inside


def _ethnic_offset(param: str, sex: str, eth: np.ndarray) -> np.ndarray:
    table = _ETH_OFFSET.get((param, sex), {})
    out = np.zeros(eth.shape)
    for name, off in table.items():
        out[eth == name] = off
    return out
