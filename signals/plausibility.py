"""Physiological limits of one blow: values no human forced expiration produces.

Why: a real export can carry artefacts (a sensor spike, a unit slip, a corrupted sample) that parse
fine but describe no lung. :func:`signals.qc.qc_blow` rejects such a blow with ``implausible_flow`` or
``implausible_volume``, exactly like a malformed blow, so one odd blow never aborts a cohort and never
feeds a participant's spirometry. The cohort schema (``biobank.schema``) checks accepted blows and
participant columns against these same limits, so after QC those checks can fire only on a bug in
spirolm, never on input data. This module is the one place the limits live.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from signals.measures import BlowMeasures

IMPLAUSIBLE_FLOW = "implausible_flow"
IMPLAUSIBLE_VOLUME = "implausible_volume"


@dataclass(frozen=True)
class Limit:
    """Inclusive plausible range of one quantity, the code its violation gives, and why.

    Attributes:
        low, high: the range (values equal to a bound are plausible).
        code: :data:`IMPLAUSIBLE_FLOW` or :data:`IMPLAUSIBLE_VOLUME`.
        why: the physiological rationale, one line.
    """

    low: float
    high: float
    code: str
    why: str


LIMITS: dict[str, Limit] = {
    "volume_ml": Limit(0.0, 10_000.0, IMPLAUSIBLE_VOLUME,
                       "10 L: above the GLI-2012 upper limit of normal FVC of adults up to 2.05 m and the "
                       "8 L range ATS/ERS require of spirometers; more is a spike or a unit slip"),
    "fvc_l": Limit(0.1, 10.0, IMPLAUSIBLE_VOLUME,
                   "under 0.1 L nothing was exhaled (low_volume, 0.2 L by default, fires first); the ceiling "
                   "is the volume ceiling"),
    "fev1_l": Limit(0.1, 10.0, IMPLAUSIBLE_VOLUME,
                    "under 0.1 L is below end-stage COPD (about 0.3 L): not a forced expiration; FEV1 <= FVC"),
    "fev1_fvc": Limit(0.1, 1.0, IMPLAUSIBLE_VOLUME,
                      "end-stage obstruction keeps FEV1/FVC near 0.2-0.3; under 0.1 nothing was forced; "
                      "above 1 is impossible"),
    "pef_l_s": Limit(0.0, 20.0, IMPLAUSIBLE_FLOW,
                     "1,200 L/min: far above the predicted PEF of tall young men (about 700 L/min) and the "
                     "14 L/s flow range ATS/ERS require of spirometers"),
    "fef25_75_l_s": Limit(0.0, 20.0, IMPLAUSIBLE_FLOW,
                          "a mean mid-expiratory flow cannot exceed the peak-flow ceiling"),
}
"""Plausible range of each blow quantity (volume samples in mL, volumes in L, flows in L/s)."""

MAX_VOLUME_ML = LIMITS["volume_ml"].high
"""Largest plausible cumulative volume sample (mL)."""


def implausible_codes(
    volume_ml: np.ndarray, measures: BlowMeasures, *, lower_bounds: bool = True
) -> list[str]:
    """Codes for every :data:`LIMITS` entry the blow violates (``[]`` when plausible).

    Args:
        volume_ml: the validated blow (mL at 100 Hz).
        measures: its :func:`signals.measures.compute_measures` result.
        lower_bounds: check the lower bounds too. :func:`signals.qc.qc_blow` turns them off for a
            blow it already calls ``low_volume`` (an empty record is not an artefact).

    Returns:
        A sorted list of distinct codes; undefined (NaN) measures never count as implausible.
    """
    values = {
        "fvc_l": measures.fvc_l,
        "fev1_l": measures.fev1_l,
        "fev1_fvc": measures.fev1_fvc,
        "pef_l_s": measures.pef_l_s,
        "fef25_75_l_s": measures.fef25_75_l_s,
    }
    codes = set()
    vol = np.asarray(volume_ml)
    if vol.size and (vol.max() > MAX_VOLUME_ML or vol.min() < LIMITS["volume_ml"].low):
        codes.add(LIMITS["volume_ml"].code)
    for name, value in values.items():
        limit = LIMITS[name]
        if not math.isfinite(value):
            continue
        if value > limit.high or (lower_bounds and value < limit.low):
            codes.add(limit.code)
    return sorted(codes)
