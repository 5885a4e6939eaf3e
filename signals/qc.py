"""ATS/ERS quality control of spirometry blows, repeatability, and best-blow selection.

Every blow gets a list of reason codes (empty = acceptable); every participant gets a
:class:`ParticipantQC` whose ``reason`` spells out why it is not a clean pass. Nothing is dropped
silently: a participant with no acceptable blow is kept with status ``fail`` and NaN measures, and
its reason lists each blow's codes.

Blow reason codes (stable strings; thresholds are :class:`QCConfig` fields, except the fixed
physiological limits of the two ``implausible_*`` codes, which the cohort schema checks too):

=======================  ==========================================================================
code                     fires when
=======================  ==========================================================================
``implausible_flow``     PEF or FEF25-75 above the flow limit (20 L/s) in
                         :data:`signals.plausibility.LIMITS`: an artefact, not a manoeuvre fault.
``implausible_volume``   a volume beyond a physiological limit: any sample above 10 L, or FVC,
                         FEV1 or FEV1/FVC outside :data:`signals.plausibility.LIMITS`. Negative
                         volumes never get here: the field-3066 parser rejects them with this code.
``low_volume``           no expiratory flow at all, or FVC < ``min_fvc_ml`` (an empty or aborted
                         record). When it fires no other check runs (the two upper-limit checks
                         above excepted): they mean nothing on a flat line.
``too_short``            less than ``min_fev1_time_s`` (1 s) of record after time zero, so FEV1
                         cannot be measured.
``bev_high``             back-extrapolated volume > max(``bev_fraction`` × FVC, floor); the floor
                         is 150 mL for ``ats2005`` (UK Biobank era) and 100 mL for ``ats2019``.
``no_end_of_test``       no plateau (volume range over the last ``plateau_window_s`` ≥
                         ``plateau_ml``) and FET < ``min_fet_s``.
``early_termination``    expiration ended (volume within 25 mL of FVC) less than ``min_fet_s``
                         after time zero while the mean flow over the preceding
                         ``end_flow_window_s`` was still > ``early_termination_flow_l_s``: an
                         abrupt stop or a record cut mid-blow. A long obstructive blow still
                         flowing when the record ends after ``min_fet_s`` is not flagged (ATS
                         accepts FET ≥ 6 s).
``cough``                between PEF and time zero + ``cough_window_s`` the 80 ms flow climbs back
                         above its running minimum by > ``cough_rebound_fraction`` × PEF (a flow
                         drop-and-recover or reversal in the first second distorts FEV1).
``non_monotone``         volume falls > ``max_volume_dip_ml`` below its running maximum anywhere
                         (inspiration, leak, large cough).
=======================  ==========================================================================

Participant status: ``pass`` = at least two acceptable blows and the two largest FVC and the two
largest FEV1 each within ``repeat_tol_ml``; ``warn`` = acceptable blows exist but
``single_acceptable_blow`` or ``not_repeatable (...)``; ``fail`` = ``no_blows`` or
``no_acceptable_blow (blow0: ...; blow1: ...)``. Reported FEV1 and FVC are the largest over
acceptable blows (ATS), the ratio is their quotient, and PEF / FEF25–75 come from the best blow
(largest FEV1 + FVC), as in the GRS-informed UK Biobank QC.

Deliberate simplifications: acceptability is all-or-nothing (no ATS 2019 "usable for FEV1 only"
grade), and the end-of-test rule is "plateau or FET ≥ ``min_fet_s``" for both standards (ATS 2005's
text asks for a plateau *and* ≥ 6 s, which would reject most UK Biobank blows cut at 6 s; ATS 2019
accepts 15 s without a plateau: set ``min_fet_s=15`` for that).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np

from signals.curves import validate_volume_ml
from signals.errors import SpirolmInputError
from signals.measures import (
    END_OF_EXPIRATION_TOL_ML,
    BlowMeasures,
    compute_measures,
    end_of_expiration,
    end_plateau_ml,
    flow_rebound,
)
from signals.plausibility import IMPLAUSIBLE_FLOW, IMPLAUSIBLE_VOLUME, implausible_codes

LOW_VOLUME = "low_volume"
TOO_SHORT = "too_short"
BEV_HIGH = "bev_high"
NO_END_OF_TEST = "no_end_of_test"
EARLY_TERMINATION = "early_termination"
COUGH = "cough"
NON_MONOTONE = "non_monotone"
REASON_CODES = (IMPLAUSIBLE_FLOW, IMPLAUSIBLE_VOLUME, LOW_VOLUME, TOO_SHORT, BEV_HIGH, NO_END_OF_TEST,
                EARLY_TERMINATION, COUGH, NON_MONOTONE)
"""All blow reason codes, in the order :func:`qc_blow` reports them."""

_BEV_FLOOR_ML = {"ats2005": 150.0, "ats2019": 100.0}


@dataclass(frozen=True)
class QCConfig:
    """Thresholds for blow acceptability and repeatability.

    Attributes:
        standard: ATS/ERS edition for the start-of-test rule: ``"ats2005"`` (BEV floor 150 mL, the
            standard in force when UK Biobank measured) or ``"ats2019"`` (100 mL).
        bev_fraction: BEV limit as a fraction of FVC (5 % in both editions).
        plateau_ml: end-of-test plateau: volume range below this over ``plateau_window_s``.
        plateau_window_s: plateau window length (s).
        min_fet_s: forced expiratory time that satisfies end of test without a plateau.
        repeat_tol_ml: repeatability tolerance between the two largest FVC and FEV1.
        min_fev1_time_s: record needed after time zero to measure FEV1 (else ``too_short``).
        min_fvc_ml: below this FVC a record is not a real blow (``low_volume``).
        cough_window_s: inspected window for coughs, from time zero (ATS: first second).
        cough_rebound_fraction: flow rebound, as a fraction of PEF, that counts as a cough. A clean
            blow has ~0 (the public demo: 0.0); 0.2 leaves room for 1 mL quantisation at low PEF.
        early_termination_flow_l_s: end flow above this is an abrupt stop. A blow that tails off
            exponentially reaches "within 25 mL of FVC" at 25 mL / τ ≈ 0.03–0.05 L/s (the public
            demo: 0.024); the demo cut at 2 s still flows 0.37 L/s, cut at 3 s 0.17 L/s.
        end_flow_window_s: averaging window for the end flow (s).
        max_volume_dip_ml: largest tolerated volume fall (the demo has 6 mL of sensor wobble).
    """

    standard: Literal["ats2005", "ats2019"] = "ats2005"
    bev_fraction: float = 0.05
    plateau_ml: float = 25.0
    plateau_window_s: float = 1.0
    min_fet_s: float = 6.0
    repeat_tol_ml: float = 150.0
    min_fev1_time_s: float = 1.0
    min_fvc_ml: float = 200.0
    cough_window_s: float = 1.0
    cough_rebound_fraction: float = 0.2
    early_termination_flow_l_s: float = 0.15
    end_flow_window_s: float = 0.25
    max_volume_dip_ml: float = 50.0

    def __post_init__(self) -> None:
        if self.standard not in _BEV_FLOOR_ML:
            raise SpirolmInputError(
                f"unknown QC standard {self.standard!r}; use one of {sorted(_BEV_FLOOR_ML)}",
                field="qc.standard",
            )
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "standard" and not (isinstance(value, (int, float)) and value > 0):
                raise SpirolmInputError(
                    f"QC threshold must be a positive number, got {value!r}", field=f"qc.{f.name}"
                )

    @property
    def bev_floor_ml(self) -> float:
        """Absolute BEV floor of the chosen standard (mL)."""
        return _BEV_FLOOR_ML[self.standard]


@dataclass(frozen=True)
class ParticipantQC:
    """QC summary of one participant's blows.

    Attributes:
        status: ``"pass"``, ``"warn"`` or ``"fail"`` (see the module docstring).
        reason: ``""`` when pass; otherwise a stable code first, details in parentheses.
        best_index: position in ``blows`` of the acceptable blow with the largest FEV1 + FVC;
            None when fail.
        fev1_l, fvc_l: largest over acceptable blows (NaN when fail).
        fev1_fvc: ``fev1_l / fvc_l`` (NaN when fail).
        pef_l_s, fef25_75_l_s: from the best blow (NaN when fail).
        repeatable: two largest acceptable FVC and FEV1 each within ``repeat_tol_ml``.
        n_blows: number of blows given.
        n_acceptable: number of acceptable blows.
        blow_measures: each blow's measures, in input order (so callers need not recompute them).
    """

    status: Literal["pass", "warn", "fail"]
    reason: str
    best_index: int | None
    fev1_l: float
    fvc_l: float
    fev1_fvc: float
    pef_l_s: float
    fef25_75_l_s: float
    repeatable: bool
    n_blows: int = 0
    n_acceptable: int = 0
    blow_measures: tuple[BlowMeasures, ...] = ()


def qc_blow(
    volume_ml: object,
    measures: BlowMeasures | None = None,
    cfg: QCConfig = QCConfig(),
    *,
    eid: object | None = None,
    field: str | None = None,
) -> list[str]:
    """ATS/ERS acceptability of one blow.

    Window-dependent statistics (plateau, cough, end flow) are re-evaluated on the curve with the
    windows in ``cfg``, so changing a window in the config takes effect even when ``measures`` was
    computed with the defaults.

    Args:
        volume_ml: the blow, cumulative mL at 100 Hz.
        measures: its :func:`~signals.measures.compute_measures` result; computed when None.
        cfg: thresholds.
        eid, field: forwarded to error messages.

    Returns:
        Reason codes in :data:`REASON_CODES` order; empty when the blow is acceptable.

    Raises:
        SpirolmInputError: the series is not a valid blow.
    """
    vol = validate_volume_ml(volume_ml, eid=eid, field=field)
    m = compute_measures(vol) if measures is None else measures
    pef_index = m.pef_index
    if pef_index is None or not m.fvc_l * 1000.0 >= cfg.min_fvc_ml:
        return implausible_codes(vol, m, lower_bounds=False) + [LOW_VOLUME]
    plateau = end_plateau_ml(vol, cfg.plateau_window_s)
    rebound = flow_rebound(vol, m.time_zero_s, pef_index, cfg.cough_window_s)
    t_end, end_flow = end_of_expiration(
        vol, m.time_zero_s, m.fvc_l, cfg.end_flow_window_s, END_OF_EXPIRATION_TOL_ML
    )
    checks = {
        TOO_SHORT: m.fet_s < cfg.min_fev1_time_s,
        BEV_HIGH: m.bev_ml > max(cfg.bev_fraction * m.fvc_l * 1000.0, cfg.bev_floor_ml),
        NO_END_OF_TEST: not plateau < cfg.plateau_ml and m.fet_s < cfg.min_fet_s,
        EARLY_TERMINATION: (
            end_flow > cfg.early_termination_flow_l_s and t_end - m.time_zero_s < cfg.min_fet_s
        ),
        COUGH: rebound > cfg.cough_rebound_fraction,
        NON_MONOTONE: m.max_volume_dip_ml > cfg.max_volume_dip_ml,
    }
    for code in implausible_codes(vol, m):
        checks[code] = True
    return [code for code in REASON_CODES if checks.get(code, False)]


def qc_participant(
    blows: Sequence[object],
    cfg: QCConfig = QCConfig(),
    *,
    eid: object | None = None,
    field: str | None = None,
) -> tuple[list[list[str]], ParticipantQC]:
    """QC all blows of one participant (one visit) and summarise.

    Args:
        blows: the participant's blows (cumulative mL at 100 Hz), in field-3066 array order; the
            labels ``blow0``, ``blow1`` … in reasons are positions in this sequence.
        cfg: thresholds.
        eid, field: forwarded to error messages.

    Returns:
        ``(reasons, summary)``: one reason-code list per blow (empty = acceptable) and the
        :class:`ParticipantQC`.

    Raises:
        SpirolmInputError: a blow is not a valid series (the message names its position).
    """
    measures: list[BlowMeasures] = []
    reasons: list[list[str]] = []
    for i, blow in enumerate(blows):
        try:
            vol = validate_volume_ml(blow, eid=eid, field=field)
        except SpirolmInputError as err:
            raise SpirolmInputError(f"blow {i}: {err.problem}", eid=eid, field=field) from None
        m = compute_measures(vol)
        measures.append(m)
        reasons.append(qc_blow(vol, m, cfg))
    return reasons, summarise(measures, reasons, cfg)


def summarise(
    measures: Sequence[BlowMeasures], reasons: Sequence[Sequence[str]], cfg: QCConfig = QCConfig()
) -> ParticipantQC:
    """Participant status, repeatability and reported values from per-blow results.

    Separate from :func:`qc_participant` so a caller holding stored per-blow results can
    re-summarise without recomputing curves.

    Args:
        measures: per-blow measures.
        reasons: per-blow reason codes (same length; empty = acceptable).
        cfg: thresholds (``repeat_tol_ml``).
    """
    if len(measures) != len(reasons):
        raise ValueError(f"{len(measures)} measures but {len(reasons)} reason lists")
    common = {"n_blows": len(measures), "blow_measures": tuple(measures)}
    ok = [i for i, r in enumerate(reasons) if not r]
    if not ok:
        reason = "no_blows" if not measures else "no_acceptable_blow (" + "; ".join(
            f"blow{i}: {','.join(r)}" for i, r in enumerate(reasons)
        ) + ")"
        nan = math.nan
        return ParticipantQC(
            status="fail", reason=reason, best_index=None, fev1_l=nan, fvc_l=nan, fev1_fvc=nan,
            pef_l_s=nan, fef25_75_l_s=nan, repeatable=False, n_acceptable=0, **common,
        )
    fvc = np.array([measures[i].fvc_l for i in ok])
    fev1 = np.array([measures[i].fev1_l for i in ok])
    best = ok[int(np.argmax(fvc + fev1))]
    fvc_gap_ml, fev1_gap_ml = _top_two_gap_ml(fvc), _top_two_gap_ml(fev1)
    repeatable = len(ok) >= 2 and max(fvc_gap_ml, fev1_gap_ml) <= cfg.repeat_tol_ml
    if len(ok) == 1:
        status, reason = "warn", "single_acceptable_blow"
    elif not repeatable:
        status = "warn"
        reason = f"not_repeatable (fvc_diff_ml={fvc_gap_ml:.0f}, fev1_diff_ml={fev1_gap_ml:.0f})"
    else:
        status, reason = "pass", ""
    return ParticipantQC(
        status=status,
        reason=reason,
        best_index=best,
        fev1_l=float(fev1.max()),
        fvc_l=float(fvc.max()),
        fev1_fvc=float(fev1.max() / fvc.max()),
        pef_l_s=measures[best].pef_l_s,
        fef25_75_l_s=measures[best].fef25_75_l_s,
        repeatable=bool(repeatable),
        n_acceptable=len(ok),
        **common,
    )


def _top_two_gap_ml(values_l: np.ndarray) -> float:
    """Difference between the largest and second-largest value, in mL (NaN with one value)."""
    if values_l.size < 2:
        return math.nan
    top = np.sort(values_l)[-2:]
    # Rounded: volumes are whole mL, and 150.00000000001 must not count as > 150.
    return round(float((top[1] - top[0]) * 1000.0), 6)
