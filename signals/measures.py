"""Standard spirometry measures of one blow, re-derived from its volume-time series.

The recipe is the UK Biobank re-derivation used by GRS-informed QC (legenepi/GRS_informed_QC,
``clean_curve_derived_variables.R``), which follows ATS/ERS:

* flow: 80 ms centred difference (:func:`signals.curves.flow_centred`), PEF = its maximum;
* time zero by tangent back-extrapolation at PEF: ``t0 = t_PEF - V_PEF / PEF``;
  back-extrapolated volume ``BEV = V(t0)`` (linear interpolation; clamped to the first sample when
  the tangent crosses zero before the record starts);
* ``FEV1 = V(t0 + 1 s)`` (NaN when the record ends earlier), ``FVC`` = largest volume at or after
  ``t0``;
* FEF25/50/75: centred flow at the moment the monotone volume first reaches 25/50/75 % of FVC;
  ``FEF25–75 = 0.5·FVC / (t75 − t25)`` with interpolated crossing times;
* FET = end of the record − t0. We use the record end rather than "FVC reached within 25 mL"
  because the device stops recording when the participant stops, and this gives the ≈12.2 s the
  reference analysis reports for the public demo blow.

Artefact statistics used by :mod:`signals.qc` (cough, early termination, volume dips, plateau) are
public functions here so QC can re-evaluate them with its own window lengths.

Public UKB demo blow (``tests/fixtures``): FVC 5.836 L, FEV1 4.68 L, ratio 0.80, PEF 10.0 L/s,
BEV ≈ 60 mL, FET 12.2 s, end plateau 21 mL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from signals.curves import DT_S, flow_centred, validate_volume_ml

PLATEAU_WINDOW_S = 1.0
"""ATS/ERS end-of-test plateau window (volume change < 25 mL over ≥ 1 s)."""

COUGH_WINDOW_S = 1.0
"""ATS/ERS: no cough in the first second of expiration (it would distort FEV1)."""

END_FLOW_WINDOW_S = 0.25
"""Window before end of expiration over which the end flow is averaged; short enough to catch an
abrupt stop, long enough (25 samples) to average out the 1 mL quantisation."""

END_OF_EXPIRATION_TOL_ML = 25.0
"""End of expiration = first time the volume is within this of FVC (the ATS plateau tolerance)."""


@dataclass(frozen=True)
class BlowMeasures:
    """Measures of one blow. Undefined values are NaN, never an exception.

    Attributes:
        fev1_l: volume at time zero + 1 s (L); NaN when the record ends before that.
        fvc_l: largest volume at or after time zero (L).
        fev1_fvc: ``fev1_l / fvc_l``.
        pef_l_s: peak expiratory flow from the 80 ms centred difference (L/s).
        fef25_75_l_s: mean flow between 25 % and 75 % of FVC exhaled (L/s).
        fef25_l_s, fef50_l_s, fef75_l_s: flow when 25/50/75 % of FVC has been exhaled (L/s).
        time_to_pef_s: PEF time − time zero (s).
        bev_ml: back-extrapolated volume, the volume at time zero (mL).
        time_zero_s: back-extrapolated time zero on the record's clock (s; sample 0 = 0 s).
        fet_s: forced expiratory time, end of record − time zero (s).
        end_plateau_ml: volume range (max − min) over the last 1 s of the record (mL); NaN if the
            record is shorter than 1 s.
        max_flow_rebound: largest rise of flow above its running minimum between PEF and time
            zero + 1 s, as a fraction of PEF (0 for a smooth blow; a cough or hesitation gives a
            drop-and-recover).
        max_volume_dip_ml: largest fall of volume below its running maximum (mL).
        end_flow_l_s: mean flow over the 0.25 s before the volume first comes within 25 mL of FVC
            (L/s); high when expiration stops abruptly or the record is cut mid-blow.
        expiration_time_s: time from time zero until the volume first comes within 25 mL of FVC
            (s): how long the participant really exhaled, unlike ``fet_s`` which runs to the end
            of the record.
        n_samples: number of samples in the series.
    """

    fev1_l: float
    fvc_l: float
    fev1_fvc: float
    pef_l_s: float
    fef25_75_l_s: float
    fef25_l_s: float
    fef50_l_s: float
    fef75_l_s: float
    time_to_pef_s: float
    bev_ml: float
    time_zero_s: float
    fet_s: float
    end_plateau_ml: float
    max_flow_rebound: float
    max_volume_dip_ml: float
    end_flow_l_s: float
    expiration_time_s: float
    n_samples: int

    @property
    def pef_index(self) -> int | None:
        """Sample index of PEF, or None when there is no expiratory flow."""
        if not math.isfinite(self.time_zero_s):
            return None
        return int(round((self.time_zero_s + self.time_to_pef_s) / DT_S))


def compute_measures(
    volume_ml: object, *, eid: object | None = None, field: str | None = None
) -> BlowMeasures:
    """Derive the standard measures of one blow.

    A blow without any positive flow (e.g. all zeros) gets NaN for everything that needs time zero;
    QC reports it as ``low_volume`` instead of this function raising.

    Args:
        volume_ml: cumulative volume in mL at 100 Hz, index 0 = time 0.
        eid, field: forwarded to error messages.

    Returns:
        The blow's :class:`BlowMeasures`.

    Raises:
        SpirolmInputError: the series fails :func:`signals.curves.validate_volume_ml`.
    """
    vol_ml = validate_volume_ml(volume_ml, eid=eid, field=field)
    vol_l = vol_ml / 1000.0
    t_s = np.arange(vol_l.size) * DT_S
    flow_c = flow_centred(vol_ml)
    i_pef = int(np.argmax(flow_c))
    pef = float(flow_c[i_pef])
    dip = _volume_dip(vol_ml)
    plateau = _end_plateau(vol_ml, PLATEAU_WINDOW_S)
    if pef <= 0:
        nan = math.nan
        return BlowMeasures(
            fev1_l=nan, fvc_l=float(vol_l.max()), fev1_fvc=nan, pef_l_s=pef, fef25_75_l_s=nan,
            fef25_l_s=nan, fef50_l_s=nan, fef75_l_s=nan, time_to_pef_s=nan, bev_ml=nan,
            time_zero_s=nan, fet_s=nan, end_plateau_ml=plateau, max_flow_rebound=nan,
            max_volume_dip_ml=dip, end_flow_l_s=nan, expiration_time_s=nan,
            n_samples=int(vol_l.size),
        )
    t0 = float(t_s[i_pef] - vol_l[i_pef] / pef)
    fvc = float(vol_l[t_s >= t0].max())
    fev1 = float(np.interp(t0 + 1.0, t_s, vol_l)) if t0 + 1.0 <= t_s[-1] + 1e-9 else math.nan
    mono = np.maximum.accumulate(vol_l)
    t25, t50, t75 = (crossing_time(mono, frac * fvc) for frac in (0.25, 0.50, 0.75))
    fef25, fef50, fef75 = (float(np.interp(tc, t_s, flow_c)) for tc in (t25, t50, t75))
    fef25_75 = 0.5 * fvc / (t75 - t25) if t75 > t25 else math.nan
    t_eoe, end_flow = _end_flow(mono, t0, fvc, END_FLOW_WINDOW_S, END_OF_EXPIRATION_TOL_ML)
    return BlowMeasures(
        fev1_l=fev1,
        fvc_l=fvc,
        fev1_fvc=fev1 / fvc,
        pef_l_s=pef,
        fef25_75_l_s=fef25_75,
        fef25_l_s=fef25,
        fef50_l_s=fef50,
        fef75_l_s=fef75,
        time_to_pef_s=float(t_s[i_pef] - t0),
        bev_ml=float(np.interp(t0, t_s, vol_l)) * 1000.0,
        time_zero_s=t0,
        fet_s=float(t_s[-1] - t0),
        end_plateau_ml=plateau,
        max_flow_rebound=_flow_rebound(flow_c, t0, i_pef, COUGH_WINDOW_S),
        max_volume_dip_ml=dip,
        end_flow_l_s=end_flow,
        expiration_time_s=t_eoe - t0,
        n_samples=int(vol_l.size),
    )


def crossing_time(mono_volume: np.ndarray, level: float) -> float:
    """Time (s) at which a non-decreasing volume first reaches ``level``, linearly interpolated.

    ``np.interp(level, mono_volume, t)`` would pick the *last* of tied samples; a crossing must be
    the first, hence the explicit search.

    Args:
        mono_volume: non-decreasing volume series (any unit) at 100 Hz.
        level: volume to reach, same unit.

    Returns:
        The crossing time in s, 0 when the first sample already reaches it, NaN if never reached.
    """
    i = int(np.searchsorted(mono_volume, level, side="left"))
    if i >= mono_volume.size:
        return math.nan
    if i == 0:
        return 0.0
    lo, hi = mono_volume[i - 1], mono_volume[i]
    return float((i - 1 + (level - lo) / (hi - lo)) * DT_S)


def end_plateau_ml(volume_ml: object, window_s: float = PLATEAU_WINDOW_S) -> float:
    """Volume range (max − min, mL) over the last ``window_s`` of the record.

    Range rather than end-minus-start so that a dip-and-recover inside the window does not pass
    as a plateau (the demo blow: 21 mL range, 15 mL net change).

    Returns:
        The range in mL, or NaN when the record is shorter than the window.
    """
    return _end_plateau(validate_volume_ml(volume_ml), window_s)


def flow_rebound(
    volume_ml: object, time_zero_s: float, pef_index: int, window_s: float = COUGH_WINDOW_S
) -> float:
    """Largest flow drop-and-recover after PEF, as a fraction of PEF (cough statistic).

    Between PEF and ``time_zero_s + window_s`` a clean forced expiration has a falling flow. For
    every sample we take how far the 80 ms flow has climbed back above the lowest flow seen since
    PEF; a cough, a hesitation or a flow reversal makes this large.

    Args:
        volume_ml: the blow (mL at 100 Hz).
        time_zero_s: back-extrapolated time zero (s).
        pef_index: sample index of PEF.
        window_s: end of the inspected window, relative to time zero.

    Returns:
        Rebound / PEF (≥ 0), or NaN when PEF is not positive.
    """
    return _flow_rebound(flow_centred(volume_ml), time_zero_s, pef_index, window_s)


def volume_dip_ml(volume_ml: object) -> float:
    """Largest fall of volume below its running maximum (mL): an inspiration, leak or cough."""
    return _volume_dip(validate_volume_ml(volume_ml))


def end_of_expiration(
    volume_ml: object,
    time_zero_s: float,
    fvc_l: float,
    window_s: float = END_FLOW_WINDOW_S,
    tol_ml: float = END_OF_EXPIRATION_TOL_ML,
) -> tuple[float, float]:
    """End of expiration and the mean flow (L/s) just before it (early-termination statistics).

    End of expiration is the first time the monotone volume comes within ``tol_ml`` of FVC. A
    blow that tails off has a small flow there; one that stops abruptly (glottic closure) or whose
    record is cut mid-blow still has a high flow.

    Args:
        volume_ml: the blow (mL at 100 Hz).
        time_zero_s: back-extrapolated time zero (s); the window never starts before it.
        fvc_l: the blow's FVC (L).
        window_s: averaging window (s).
        tol_ml: distance to FVC that counts as "reached".

    Returns:
        ``(t_end_s, end_flow_l_s)``: the end of expiration on the record's clock, and the mean flow
        over ``[t_end − window_s, t_end]`` (NaN if that window is empty).
    """
    mono_l = np.maximum.accumulate(validate_volume_ml(volume_ml)) / 1000.0
    return _end_flow(mono_l, time_zero_s, fvc_l, window_s, tol_ml)


# Private kernels on already-validated arrays: compute_measures calls these directly so a blow
# is differentiated once, not once per statistic.


def _end_plateau(vol_ml: np.ndarray, window_s: float) -> float:
    n_win = int(round(window_s / DT_S)) + 1
    if vol_ml.size < n_win:
        return math.nan
    tail = vol_ml[-n_win:]
    return float(tail.max() - tail.min())


def _flow_rebound(flow_c: np.ndarray, time_zero_s: float, pef_index: int, window_s: float) -> float:
    pef = flow_c[pef_index]
    if not pef > 0:
        return math.nan
    stop = int(math.floor((time_zero_s + window_s) / DT_S + 1e-9)) + 1
    seg = flow_c[pef_index : max(stop, pef_index + 1)]
    return float((seg - np.minimum.accumulate(seg)).max() / pef)


def _volume_dip(vol_ml: np.ndarray) -> float:
    return float((np.maximum.accumulate(vol_ml) - vol_ml).max())


def _end_flow(
    mono_l: np.ndarray, time_zero_s: float, fvc_l: float, window_s: float, tol_ml: float
) -> tuple[float, float]:
    t_s = np.arange(mono_l.size) * DT_S
    t_end = crossing_time(mono_l, fvc_l - tol_ml / 1000.0)
    t_start = max(t_end - window_s, time_zero_s, 0.0)
    if not t_end - t_start > DT_S / 2:
        return t_end, math.nan
    dv = np.interp(t_end, t_s, mono_l) - np.interp(t_start, t_s, mono_l)
    return t_end, float(dv / (t_end - t_start))
