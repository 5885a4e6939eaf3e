"""Run ATS/ERS spirometry QC over a cohort: per-blow flags, best blow, participant status, GLI z-scores.

Why here and not in ``signals``: ``signals.qc`` judges the blows of *one* session; this module applies it
to every (participant, instance) of a cohort table, picks which instance feeds the participant's
spirometry columns (instance 0 by default, the baseline visit used by ML-based COPD), and records every
rejected blow and failed participant in an exclusions table so nothing is dropped silently.

Decisions (also in ``docs/phenotypes.md``):

* Blows that could not be parsed arrive with ``volume_ml = null`` and ``qc_reason = "parse_error: ..."``
  (or ``"implausible_volume: ..."`` for a negative or out-of-range volume the parser refused); they stay
  rejected and are not shown to ``qc_participant``. A null volume without a reason is a ``parse_error``.
* A blow that parses but breaks a physiological limit (``signals.plausibility``) is rejected by
  ``signals.qc`` with ``implausible_flow`` / ``implausible_volume``, like any other QC code, so it never
  feeds the participant's spirometry columns.
* Every instance is QC'd (so ``blows.qc_status`` is meaningful for all rows), but ``is_best`` is set only
  for the chosen instance, so ``blows[blows.is_best]`` has at most one row per participant.
* A participant with no usable blow at the chosen instance is ``fail`` with reason ``no_blows`` (no 3066
  value at all) or ``no_usable_blow: <codes>`` (all blows refused before QC); they stay in the table, since
  their EHR labels are still usable by models that do not need spirometry.
* ``n_blows`` counts the blows recorded at the chosen instance, parseable or not.
* z-scores (``signals.gli.zscore``) use GLI Global 2022 by default (race-neutral; ATS 2023, ARTP) or
  GLI-2012 on request (``reference_equations=``); :func:`zscore_equations` says which equation produced
  each z column, and the cohort writers record that in ``cohort.json`` (``reference_equations``). They are
  NaN where the spirometry value, age, sex or height is missing (or GLI-2012's ethnicity), or the age lies
  outside the equation's published range (3-95 y).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from signals import gli
from signals.curves import validate_volume_ml
from signals.errors import ImplausibleBlowError, SpirolmInputError
from signals.measures import BlowMeasures
from signals.plausibility import IMPLAUSIBLE_VOLUME
from signals.qc import ParticipantQC, QCConfig, qc_participant

BLOW_MEASURES = ("fev1_l", "fvc_l", "fev1_fvc", "pef_l_s", "bev_ml", "fet_s")
PARTICIPANT_MEASURES = ("fev1_l", "fvc_l", "fev1_fvc", "pef_l_s", "fef25_75_l_s")
Z_COLUMNS = {"fev1_z": ("fev1", "fev1_l"), "fvc_z": ("fvc", "fvc_l"), "fev1_fvc_z": ("fev1_fvc", "fev1_fvc")}
EquationChoice = gli.EquationLike | Mapping[str, gli.EquationLike] | None
"""One equation for every z column, a ``{z column: equation}`` mapping (missing columns get the default),
or ``None`` for the defaults (:data:`signals.gli.DEFAULT_EQUATIONS`)."""
PARSE_ERROR = "parse_error"
PRE_QC_CODES = (PARSE_ERROR, IMPLAUSIBLE_VOLUME)
"""Codes of blows refused before QC (no volume series): ``qc_reason`` is ``"<code>: <message>"``."""
EXCLUSION_COLUMNS = ("eid", "instance", "blow_index", "level", "reason")
_PARALLEL_MIN_GROUPS = 2000
"""Below this many sessions process start-up costs more than it saves."""


def run_qc(
    participants: pd.DataFrame,
    blows: pd.DataFrame,
    cfg: QCConfig = QCConfig(),
    *,
    instance: int = 0,
    workers: int = 1,
    progress: bool | None = None,
    reference_equations: EquationChoice = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """QC every blow and summarise each participant.

    Args:
        participants: needs ``eid``, ``age``, ``sex``, ``height_cm``, ``gli_ethnicity``.
        blows: needs ``eid``, ``instance``, ``blow_index``, ``volume_ml`` (array or ``None`` when the
            blow was refused before QC, with ``qc_reason`` ``"<code>: <message>"``, see
            :data:`PRE_QC_CODES`).
        cfg: ATS/ERS thresholds (``signals.qc.QCConfig``).
        instance: the assessment visit whose best blow fills the participant's spirometry columns.
        workers: processes for the per-session QC (1 = in-process).
        progress: tqdm progress bar; ``None`` = only on a terminal.
        reference_equations: which GLI equation the z-scores use (see :data:`EquationChoice`).

    Returns:
        ``(participants, blows, exclusions)``: copies with QC columns filled, and the exclusions table
        (``eid, instance, blow_index, level=blow|participant, reason``).
    """
    participants = participants.reset_index(drop=True).copy()
    parsed = blows["volume_ml"].map(_has_volume).to_numpy(dtype=bool)
    blows = _init_blow_columns(blows.reset_index(drop=True).copy(), parsed)
    sub = blows[parsed]
    volumes = sub["volume_ml"].to_numpy()
    jobs = [(key, sub.index[idx], [np.asarray(volumes[i], dtype=np.int32) for i in idx])
            for key, idx in sub.groupby(["eid", "instance"], sort=False).indices.items()]
    results = _qc_all(jobs, cfg, workers, progress)

    # Fill plain arrays and assign columns once: per-cell DataFrame writes dominate the run time otherwise.
    status = blows["qc_status"].to_numpy(dtype=object).copy()
    reason = blows["qc_reason"].to_numpy(dtype=object).copy()
    values = {k: np.full(len(blows), np.nan) for k in BLOW_MEASURES}
    is_best = np.zeros(len(blows), dtype=bool)
    summaries: dict[int, ParticipantQC] = {}
    for (key, rows, _), (reasons, measures, pqc, best) in zip(jobs, results):
        for row, codes, meas in zip(rows, reasons, measures):
            status[row] = "reject" if codes else "accept"
            reason[row] = ";".join(codes)
            for k, v in meas.items():
                values[k][row] = v
        if key[1] == instance:
            summaries[int(key[0])] = pqc
            if best is not None:
                is_best[rows[best]] = True
    blows["qc_status"], blows["qc_reason"], blows["is_best"] = status, reason, is_best
    for k, v in values.items():
        blows[k] = v
    participants = _fill_participants(participants, blows, summaries, instance)
    participants = add_zscores(participants, reference_equations)
    exclusions = _exclusions(participants, blows, instance)
    return participants, blows, exclusions


# --------------------------------------------------------------------------------------------------
# Per-session QC (top-level functions so a process pool can pickle them).

def _qc_session(
    volumes: list[np.ndarray], cfg: QCConfig
) -> tuple[list[list[str]], list[dict], ParticipantQC, int | None]:
    """QC one (participant, instance) session.

    A series that ``signals`` refuses (e.g. a single sample) is rejected as ``parse_error`` (a negative
    volume as ``implausible_volume``) instead of failing the whole session, so one bad blow never hides
    the participant's good ones.

    Returns:
        ``(reasons, measures, summary, best)``: per-blow reason codes and measure dicts in input order,
        the :class:`signals.qc.ParticipantQC`, and the best blow's position in ``volumes``.
    """
    valid, reasons, measures = [], [], []
    for v in volumes:
        try:
            validate_volume_ml(v)
        except SpirolmInputError as exc:
            reasons.append([rejection_reason(exc)])
            measures.append(dict.fromkeys(BLOW_MEASURES, np.nan))
            continue
        valid.append(len(reasons))
        reasons.append([])
        measures.append({})
    valid_reasons, pqc = qc_participant([volumes[i] for i in valid], cfg)
    for pos, codes, m in zip(valid, valid_reasons, pqc.blow_measures):
        reasons[pos] = list(codes)
        measures[pos] = _measure_dict(m)
    best = None if pqc.best_index is None else valid[pqc.best_index]
    return reasons, measures, pqc, best


def _qc_batch(batch: list[list[np.ndarray]], cfg: QCConfig) -> list:
    return [_qc_session(v, cfg) for v in batch]


def _qc_all(jobs: list, cfg: QCConfig, workers: int, progress: bool | None) -> list:
    sessions = [vols for _, _, vols in jobs]
    disable = None if progress is None else not progress
    if workers <= 1 or len(sessions) < _PARALLEL_MIN_GROUPS:
        return [_qc_session(v, cfg) for v in tqdm(sessions, desc="spirometry QC", unit="session", disable=disable)]
    size = max(1, math.ceil(len(sessions) / (workers * 8)))
    batches = [sessions[i:i + size] for i in range(0, len(sessions), size)]
    out: list = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for res in tqdm(pool.map(_qc_batch, batches, [cfg] * len(batches)), total=len(batches),
                        desc="spirometry QC", unit="batch", disable=disable):
            out.extend(res)
    return out


def _measure_dict(m: BlowMeasures) -> dict:
    return {k: float(getattr(m, k)) for k in BLOW_MEASURES}


# --------------------------------------------------------------------------------------------------
# Filling the tables.

def _has_volume(v: object) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _init_blow_columns(blows: pd.DataFrame, parsed: np.ndarray) -> pd.DataFrame:
    if "qc_reason" not in blows:
        blows["qc_reason"] = ""
    reason = blows["qc_reason"].fillna("").astype(object)
    # A blow without a series is rejected whatever its reason says: it cannot be measured.
    blows["qc_reason"] = np.where(~parsed & (reason == ""), f"{PARSE_ERROR}: no volume series", reason)
    blows["qc_reason"] = blows["qc_reason"].astype(object)
    blows["qc_status"] = np.where(parsed, "accept", "reject").astype(object)
    blows["is_best"] = False
    for col in BLOW_MEASURES:
        blows[col] = np.nan
    return blows


def _fill_participants(
    participants: pd.DataFrame, blows: pd.DataFrame, summaries: dict, instance: int
) -> pd.DataFrame:
    at_inst = blows[blows["instance"] == instance]
    n_blows = at_inst.groupby("eid").size()
    pre_qc = at_inst[at_inst["qc_reason"].map(lambda r: _pre_qc_code(r) is not None).to_numpy(dtype=bool)]
    pre_qc_reasons = pre_qc.groupby("eid")["qc_reason"].agg(lambda s: ";".join(sorted({_pre_qc_code(r) for r in s})))
    status, reason = [], []
    values = {k: [] for k in PARTICIPANT_MEASURES}
    for eid in participants["eid"].to_numpy():
        pqc = summaries.get(int(eid))
        if pqc is None or pqc.n_blows == 0:  # no blow reached QC
            status.append("fail")
            reason.append(f"no_usable_blow: {pre_qc_reasons[eid]}" if eid in pre_qc_reasons.index else "no_blows")
            for k in PARTICIPANT_MEASURES:
                values[k].append(np.nan)
            continue
        status.append(pqc.status)
        reason.append(pqc.reason or "")
        for k in PARTICIPANT_MEASURES:
            v = getattr(pqc, k)
            values[k].append(np.nan if v is None else float(v))
    participants["qc_status"] = status
    participants["qc_reason"] = reason
    for k, v in values.items():
        participants[k] = np.asarray(v, dtype=float)
    participants["n_blows"] = participants["eid"].map(n_blows).fillna(0).astype("int64")
    return participants


def zscore_equations(choice: EquationChoice = None) -> dict[str, str]:
    """``{z column: equation name}`` for a choice, e.g. ``{"fev1_z": "gli_global2022", ...}``.

    This is what ``cohort.json`` records as ``reference_equations``.

    Raises:
        SpirolmInputError: an unknown z column or equation, or an equation without that parameter.
    """
    if isinstance(choice, Mapping):
        unknown = sorted(set(choice) - set(Z_COLUMNS))
        if unknown:
            raise SpirolmInputError(f"unknown z-score column(s) {unknown}; expected {sorted(Z_COLUMNS)}",
                                    field="reference_equations")
        return {z: gli.equation_for(param, choice.get(z)).value for z, (param, _) in Z_COLUMNS.items()}
    return {z: gli.equation_for(param, choice).value for z, (param, _) in Z_COLUMNS.items()}


def add_zscores(participants: pd.DataFrame, reference_equations: EquationChoice = None) -> pd.DataFrame:
    """z-scores for FEV1, FVC and FEV1/FVC (NaN where any input is missing or the age is out of range).

    Args:
        participants: needs ``age``, ``sex``, ``height_cm``, the measures, and ``gli_ethnicity`` when
            a column uses GLI-2012.
        reference_equations: see :data:`EquationChoice`; :func:`zscore_equations` gives the result.
    """
    equations = zscore_equations(reference_equations)
    age = participants["age"].to_numpy(dtype=float)
    height = participants["height_cm"].to_numpy(dtype=float)
    sex = participants["sex"].astype(object).to_numpy()
    base_ok = np.isfinite(age) & np.isfinite(height) & (height > 0) & pd.notna(sex)
    for zcol, (param, col) in Z_COLUMNS.items():
        equation = gli.ReferenceEquation(equations[zcol])
        value = participants[col].to_numpy(dtype=float)
        ok = base_ok & np.isfinite(value) & (value > 0)
        eth = None
        if equation is gli.ReferenceEquation.GLI_2012:
            eth = participants["gli_ethnicity"].astype(object).to_numpy()
            ok &= pd.notna(eth)
        z = np.full(len(participants), np.nan)
        if ok.any():
            z[ok] = gli.zscore(param, value[ok], sex[ok].astype(str), age[ok], height[ok],
                               None if eth is None else eth[ok].astype(str), equation=equation)
        participants[zcol] = z
    return participants


def _exclusions(participants: pd.DataFrame, blows: pd.DataFrame, instance: int) -> pd.DataFrame:
    rej = blows.loc[blows["qc_status"] == "reject", ["eid", "instance", "blow_index", "qc_reason"]]
    blow_rows = pd.DataFrame({
        "eid": rej["eid"].to_numpy(), "instance": rej["instance"].to_numpy(),
        "blow_index": rej["blow_index"].to_numpy(), "level": "blow", "reason": rej["qc_reason"].to_numpy()})
    fail = participants.loc[participants["qc_status"] == "fail", ["eid", "qc_reason"]]
    part_rows = pd.DataFrame({
        "eid": fail["eid"].to_numpy(), "instance": instance, "blow_index": pd.NA,
        "level": "participant", "reason": fail["qc_reason"].to_numpy()})
    out = pd.concat([blow_rows, part_rows], ignore_index=True)
    out["blow_index"] = out["blow_index"].astype("Int64")
    return out[list(EXCLUSION_COLUMNS)]


def rejection_reason(exc: SpirolmInputError) -> str:
    """``qc_reason`` of a blow refused before QC: ``"implausible_volume: <problem>"`` for an
    :class:`~signals.errors.ImplausibleBlowError`, else ``"parse_error: <problem>"``."""
    code = IMPLAUSIBLE_VOLUME if isinstance(exc, ImplausibleBlowError) else PARSE_ERROR
    return f"{code}: {exc.problem}"


def _pre_qc_code(reason: str) -> str | None:
    """The code of a ``"<code>: <message>"`` reason of a blow refused before QC, else None."""
    return next((c for c in PRE_QC_CODES if reason.startswith(c + ":")), None)


def reason_counts(reasons: Sequence[str]) -> dict[str, int]:
    """Count ``;``-joined reason codes, collapsing ``<code>: <message>`` (a blow refused before QC, see
    :data:`PRE_QC_CODES`) to ``<code>``."""
    counts: dict[str, int] = {}
    for text in reasons:
        if not text:
            continue
        pre = _pre_qc_code(text)
        codes = [pre] if pre is not None else text.split(";")
        for c in codes:
            counts[c] = counts.get(c, 0) + 1
    return dict(sorted(counts.items()))
