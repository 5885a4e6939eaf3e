"""GLI spirometry reference equations, GLI-2012 and GLI Global 2022, vectorised over a cohort.

* ``gli_global2022`` (Bowerman et al., AJRCCM 2023;207:768-74): race-neutral FEV1, FVC, FEV1/FVC, the
  default for those three (recommended by ATS 2023 and the UK ARTP). No ethnicity, no FEF25-75.
* ``gli2012`` (Quanjer et al., Eur Respir J 2012;40:1324-43): adds ethnicity and FEF25-75 (its default).

Why pyspiro (MIT): it ships the complete published 0.25-year look-up tables (3-95 y; GLI-2012 FEF25-75
3-90 y) and interpolates them as the GLI supplement prescribes, so values match the official calculators
rather than our former six-node approximation. Its public API gives L, M, S only row by row (its
vectorised ``compute()`` returns z/LLN/%pred, not M or the inverse), so :func:`_pyspiro_lms` calls its
array twin of ``lms()`` (private, hence the narrow version range in ``pyproject.toml``);
``tests/signals/test_gli.py`` checks every output against the public per-row functions.

LMS: ``z = ((y/M)**L - 1) / (L*S)``, ``value_at_z = M * (1 + L*S*z)**(1/L)``, ``LLN = value_at_z(-1.645)``.
Ages outside the published range and NaN age/height give NaN (never an extrapolated value), or raise
with ``outside_range="raise"``; unknown labels and non-positive heights always raise.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from enum import Enum
from typing import Any, Literal

import numpy as np
import pyspiro

from signals.errors import SpirolmInputError


class ReferenceEquation(str, Enum):
    """Spirometry reference equations; the value is the name recorded in ``cohort.json``."""

    GLI_2012 = "gli2012"
    GLI_GLOBAL_2022 = "gli_global2022"


EquationLike = ReferenceEquation | Literal["gli2012", "gli_global2022"]
Param = Literal["fev1", "fvc", "fev1_fvc", "fef25_75"]
PARAMS: tuple[str, ...] = ("fev1", "fvc", "fev1_fvc", "fef25_75")
SEXES: tuple[str, ...] = ("male", "female")
ETHNICITIES: tuple[str, ...] = ("caucasian", "african_american", "ne_asian", "se_asian", "other")

EQUATION_PARAMS: Mapping[ReferenceEquation, tuple[str, ...]] = {
    ReferenceEquation.GLI_2012: ("fev1", "fvc", "fev1_fvc", "fef25_75"),
    ReferenceEquation.GLI_GLOBAL_2022: ("fev1", "fvc", "fev1_fvc"),
}
"""The parameters each equation publishes."""

DEFAULT_EQUATIONS: Mapping[str, ReferenceEquation] = {
    "fev1": ReferenceEquation.GLI_GLOBAL_2022,
    "fvc": ReferenceEquation.GLI_GLOBAL_2022,
    "fev1_fvc": ReferenceEquation.GLI_GLOBAL_2022,
    "fef25_75": ReferenceEquation.GLI_2012,  # GLI Global has no FEF25-75 equation
}

GLI_AGE_RANGE: tuple[float, float] = (3.0, 95.0)
"""Ages covered by both equations for FEV1, FVC and FEV1/FVC (see :func:`age_range` per parameter)."""
_AGE_RANGES: dict[tuple[ReferenceEquation, str], tuple[float, float]] = {
    (eq, p): ((3.0, 90.0) if p == "fef25_75" else GLI_AGE_RANGE) for eq, ps in EQUATION_PARAMS.items() for p in ps
}
LLN_Z = -1.645
"""5th percentile of the standard normal: the GLI lower limit of normal."""

# pyspiro's codes: sex 0 = female, 1 = male; GLI-2012 ethnicity 1-5; parameter enum names.
_SEX_CODE = {"female": 0, "male": 1}
_ETH_CODE = {name: code for code, name in enumerate(ETHNICITIES, start=1)}
_PYSPIRO_PARAM = {"fev1": "FEV1", "fvc": "FVC", "fev1_fvc": "FEV1FVC", "fef25_75": "FEF25_75"}


def equation_for(param: Param, equation: EquationLike | None = None) -> ReferenceEquation:
    """The equation used for ``param``: ``equation`` itself, or the default when ``None``.

    Raises:
        SpirolmInputError: unknown parameter or equation, or an equation without that parameter
            (GLI Global 2022 has no FEF25-75).
    """
    if param not in PARAMS:
        raise SpirolmInputError(f"unknown GLI parameter {param!r}; expected one of {PARAMS}", field="param")
    if equation is None:
        return DEFAULT_EQUATIONS[param]
    try:
        eq = ReferenceEquation(equation)
    except ValueError:
        names = tuple(e.value for e in ReferenceEquation)
        raise SpirolmInputError(f"unknown reference equation {equation!r}; expected one of {names}",
                                field="equation") from None
    if param not in EQUATION_PARAMS[eq]:
        raise SpirolmInputError(f"{eq.value} has no {param} equation; use {DEFAULT_EQUATIONS[param].value}",
                                field="equation")
    return eq


def age_range(param: Param, equation: EquationLike | None = None) -> tuple[float, float]:
    """Published age range (years, inclusive) of ``param`` under ``equation``."""
    return _AGE_RANGES[(equation_for(param, equation), param)]


def gli_lms(
    param: Param,
    sex: str | np.ndarray,
    age: float | np.ndarray,
    height_cm: float | np.ndarray,
    ethnicity: str | np.ndarray | None = None,
    *,
    equation: EquationLike | None = None,
    outside_range: Literal["nan", "raise"] = "nan",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """L, M, S for each person (broadcast over the array arguments).

    Args:
        param: ``"fev1"`` (L), ``"fvc"`` (L), ``"fev1_fvc"`` (ratio) or ``"fef25_75"`` (L/s).
        sex: ``"male"``/``"female"`` (case-insensitive), scalar or array.
        age: years; NaN, or outside :func:`age_range`, gives NaN (see ``outside_range``).
        height_cm: standing height in cm; NaN gives NaN.
        ethnicity: one of :data:`ETHNICITIES`; required by GLI-2012, ignored by GLI Global 2022.
        equation: a :class:`ReferenceEquation` (or its value); ``None`` = :data:`DEFAULT_EQUATIONS`.
        outside_range: ``"nan"`` (default) or ``"raise"`` for finite ages outside the published range.

    Returns:
        ``(L, M, S)`` float64 arrays of the broadcast shape.

    Raises:
        SpirolmInputError: unknown param/equation/sex/ethnicity, missing ethnicity for GLI-2012, a
            non-positive or infinite height, or (``outside_range="raise"``) an age outside the range.
    """
    eq = equation_for(param, equation)
    if outside_range not in ("nan", "raise"):
        raise SpirolmInputError(f"outside_range must be 'nan' or 'raise', got {outside_range!r}",
                                field="outside_range")
    uses_eth = eq is ReferenceEquation.GLI_2012
    if uses_eth and ethnicity is None:
        raise SpirolmInputError("GLI-2012 needs an ethnicity (gli_ethnicity); GLI Global 2022 does not",
                                field="ethnicity")
    arrays = [_labels(sex, SEXES, "sex"), _floats(age, "age"), _floats(height_cm, "height_cm")]
    if uses_eth:
        arrays.append(_labels(ethnicity, ETHNICITIES, "ethnicity"))
    sex_a, age_a, h_a, *eth = np.broadcast_arrays(*arrays)
    _check_height(h_a)
    lo, hi = _AGE_RANGES[(eq, param)]
    outside = np.isfinite(age_a) & ((age_a < lo) | (age_a > hi))
    if outside_range == "raise" and outside.any():
        raise SpirolmInputError(
            f"age {age_a[outside].ravel()[0]!r} is outside the {eq.value} {param} range {lo:g}-{hi:g} years "
            f"({int(outside.sum())} value(s))", field="age")
    sex_codes = np.vectorize(_SEX_CODE.__getitem__, otypes=[np.int64])(sex_a.ravel())
    eth_codes = np.vectorize(_ETH_CODE.__getitem__, otypes=[np.int64])(eth[0].ravel()) if uses_eth else None
    L, M, S, na = _pyspiro_lms(eq, param, sex_codes, age_a.ravel(), h_a.ravel(), eth_codes)
    na = na | ~np.isfinite(h_a.ravel())
    for arr in (L, M, S):
        arr[na] = np.nan
    return L.reshape(age_a.shape), M.reshape(age_a.shape), S.reshape(age_a.shape)


def predicted(param: Param, sex, age, height_cm, ethnicity=None, **kw: Any) -> np.ndarray:
    """Predicted (median, M) value: litres for FEV1/FVC, a ratio for FEV1/FVC, L/s for FEF25-75.

    ``**kw``: ``equation``, ``outside_range`` as in :func:`gli_lms` (also for the functions below).
    """
    return gli_lms(param, sex, age, height_cm, ethnicity, **kw)[1]


def lln(param: Param, sex, age, height_cm, ethnicity=None, **kw: Any) -> np.ndarray:
    """Lower limit of normal (5th percentile), the GLI/ATS threshold that replaces fixed 0.70 / 80%."""
    return value_at_z(param, LLN_Z, sex, age, height_cm, ethnicity, **kw)


def value_at_z(param: Param, z, sex, age, height_cm, ethnicity=None, **kw: Any) -> np.ndarray:
    """Inverse of :func:`zscore`: the value whose z-score is ``z`` (used by the simulator).

    ``y = M * (1 + L*S*z)**(1/L)``; where ``1 + L*S*z <= 0`` (far below the distribution, |z| > ~6)
    the LMS transform is undefined and NaN is returned.
    """
    L, M, S = gli_lms(param, sex, age, height_cm, ethnicity, **kw)
    base = 1.0 + L * S * _floats(z, "z")
    with np.errstate(invalid="ignore"):
        return np.where(base > 0, M * np.abs(base) ** (1.0 / L), np.nan)


def zscore(param: Param, value, sex, age, height_cm, ethnicity=None, **kw: Any) -> np.ndarray:
    """z-score of a measured value; NaN where ``value`` is NaN (missing spirometry stays missing).

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


def percent_predicted(param: Param, value, sex, age, height_cm, ethnicity=None, **kw: Any) -> np.ndarray:
    """``100 * value / predicted``: the legacy %pred (GOLD's FEV1 80% threshold uses it)."""
    return 100.0 * _floats(value, param) / predicted(param, sex, age, height_cm, ethnicity, **kw)


# ---------------------------------------------------------------------------------------------------
@functools.cache
def _pyspiro_reference(eq: ReferenceEquation):  # type: ignore[no-untyped-def]
    """One pyspiro equation object per process (loading its tables takes ~10 ms)."""
    ref = pyspiro.GLI_2012() if eq is ReferenceEquation.GLI_2012 else pyspiro.BOWERMAN_2022()
    ref.set_strategy("ignore")  # out-of-range ages -> NA, never clamped to the boundary
    ref.set_silence(True)
    return ref


def _pyspiro_lms(eq: ReferenceEquation, param: str, sex: np.ndarray, age: np.ndarray, height: np.ndarray,
                 eth: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """pyspiro's array twin of ``lms()`` on 1-D inputs: ``(L, M, S, na)``, ``na`` = outside the table."""
    ref = _pyspiro_reference(eq)
    parameter = ref.Parameters[_PYSPIRO_PARAM[param]]
    safe_height = np.where(np.isfinite(height), height, 170.0)  # NaN heights are masked by the caller
    with np.errstate(all="ignore"):
        L, M, S, na = ref._lms_arrays(sex, age, safe_height, eth, parameter)
    return (np.asarray(L, dtype=np.float64).copy(), np.asarray(M, dtype=np.float64).copy(),
            np.asarray(S, dtype=np.float64).copy(), np.asarray(na, dtype=bool))


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
        raise SpirolmInputError(f"unknown {name} {bad!r} for GLI; expected one of {allowed}", field=name)
    return norm.astype(str)


def _check_height(h: np.ndarray) -> None:
    bad = ~np.isnan(h) & (~np.isfinite(h) | (h <= 0))
    if bad.any():
        raise SpirolmInputError(
            f"height_cm must be a positive number; got {h[bad].ravel()[0]!r} ({int(bad.sum())} value(s))",
            field="height_cm",
        )
