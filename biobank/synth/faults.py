"""Blows per participant: within-person variability plus realistic manoeuvre faults.

Fault codes (one per blow at most, stored in ``latents.parquet`` as ``fault_<i>``):

| code | what the blow looks like | what ATS/ERS QC should say |
|---|---|---|
| ``""`` | clean | acceptable |
| ``slow_start`` | hesitant 0.35-0.8 s ramp exhaling 7-15 % of FVC before the rise | BEV > max(5 % FVC, 150 mL) |
| ``cough`` | Gaussian volume dip of 180-400 mL at 0.25-0.9 s: flow dip / reversal | cough in the first second |
| ``early_termination`` | series stops at 1-3.5 s while flow is still high | no plateau and FET < 6 s |
| ``submaximal`` | PEF x0.6-0.85, FVC x0.9-0.97, slower rise | usually acceptable; not the best blow |
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from biobank.synth.config import CurveConfig, FaultConfig
from biobank.synth.curves import BlowParams

FAULTS: tuple[str, ...] = ("", "slow_start", "cough", "early_termination", "submaximal")


def draw_blows(phys: pd.DataFrame, obstruction: np.ndarray, rng: np.random.Generator,
               curves: CurveConfig, faults: FaultConfig) -> tuple[np.ndarray, np.ndarray, BlowParams]:
    """Expand per-person curve parameters to 2-3 blows each.

    Returns:
        ``(owner, fault, params)``: ``owner[j]`` is the participant row of blow ``j`` (blows of one
        participant are consecutive), ``fault[j]`` a code from :data:`FAULTS`, and the blow parameters.
    """
    n = len(phys)
    n_blows = np.where(rng.random(n) < curves.blows_p3, 3, 2)
    owner = np.repeat(np.arange(n), n_blows)
    m = owner.size
    col = lambda name: phys[name].to_numpy()[owner]  # noqa: E731 - tiny local accessor
    z = rng.standard_normal((5, m))
    fvc = col("true_fvc_l") * np.exp(curves.blow_fvc_log_sd * z[0])
    pef = col("true_pef_l_s") * np.exp(curves.blow_pef_log_sd * z[1])
    k = col("curve_k") * np.exp(curves.blow_k_log_sd * z[2])
    late = col("curve_late_concavity") * np.exp(curves.blow_late_log_sd * z[3])
    knee = np.clip(col("curve_knee_depth") + curves.blow_knee_sd * z[4], 0.0, 0.9)
    rise = np.clip(col("true_rise_time_s") * np.exp(0.1 * rng.standard_normal(m)), 0.04, 0.16)
    fet = np.clip(curves.fet_mean_s + curves.fet_sd_s * rng.standard_normal(m)
                  + curves.fet_per_obstruction_s * obstruction[owner], *curves.fet_limits_s)
    lead_in = rng.integers(curves.lead_in_samples[0], curves.lead_in_samples[1] + 1, m)

    fault = _draw_fault_codes(m, rng, faults)
    u = rng.random((4, m))
    hes_s = np.zeros(m)
    hes_l = np.zeros(m)
    slow = fault == "slow_start"
    hes_s[slow] = _between(faults.slow_rise_s, u[0][slow])
    hes_l[slow] = fvc[slow] * _between((0.07, 0.15), u[1][slow])
    cough_s = np.full(m, np.nan)
    cough_ml = np.zeros(m)
    cough = fault == "cough"
    cough_s[cough] = _between(faults.cough_time_s, u[0][cough])
    cough_ml[cough] = _between(faults.cough_dip_ml, u[1][cough])
    early = fault == "early_termination"
    fet[early] = _between(faults.early_stop_s, u[0][early])
    sub = fault == "submaximal"
    pef[sub] *= _between(faults.submax_pef_factor, u[0][sub])
    fvc[sub] *= _between(faults.submax_fvc_factor, u[1][sub])
    rise[sub] = np.minimum(rise[sub] * 1.4, 0.2)
    pef = np.clip(pef, 1.5, 14.0)
    # Keep the peak within the first quarter of the blow volume (small people with fast rises).
    rise = np.minimum(rise, 0.5 * fvc / pef)
    params = BlowParams(
        fvc_l=fvc, pef_l_s=pef, rise_s=rise, k=k, knee=knee, late=late, hesitation_s=hes_s,
        hesitation_l=hes_l, fet_s=fet, lead_in=lead_in, cough_s=cough_s, cough_ml=cough_ml,
        cough_width_s=np.full(m, faults.cough_width_s),
    )
    return owner, fault, params


def _draw_fault_codes(m: int, rng: np.random.Generator, cfg: FaultConfig) -> np.ndarray:
    p = np.array([cfg.p_slow_start, cfg.p_cough, cfg.p_early_termination, cfg.p_submaximal])
    probs = np.concatenate([[1.0 - p.sum()], p])
    return np.asarray(FAULTS, dtype=object)[rng.choice(len(FAULTS), size=m, p=probs)]


def _between(bounds: tuple[float, float], u: np.ndarray) -> np.ndarray:
    return bounds[0] + (bounds[1] - bounds[0]) * u
