"""Latent physiology and per-person 'true' curve parameters.

Latents (z-like scales): ``atopy`` (hidden, drives hay fever), ``hyperreactivity`` h (asthma),
``obstruction`` o >= 0 and ``emphysema`` e >= 0 (COPD), ``restriction`` r (a distractor). They shift
GLI-2012 z-scores (:mod:`signals.gli`) and the shape of the flow-volume limb
(:mod:`biobank.synth.curves`). Equations: ``docs/synthetic_cohort.md``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from biobank.synth.config import CurveConfig, PhysiologyConfig
from biobank.synth.curves import knee_depth, late_concavity, solve_limb_exponent
from signals import gli


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def draw_latents(pop: pd.DataFrame, rng: np.random.Generator, cfg: PhysiologyConfig) -> pd.DataFrame:
    """Latent traits from the tabular factors plus noise (one row per participant, same order)."""
    n = len(pop)
    female = 1 - pop["male"].to_numpy()
    decade = (pop["age"].to_numpy() - 55.0) / 10.0
    current = (pop["smoking"].to_numpy() == 2).astype(float)
    log_py = np.log1p(pop["pack_years"].to_numpy())
    parental = np.maximum(pop["father_copd"].to_numpy(), pop["mother_copd"].to_numpy())
    z = rng.standard_normal((5, n))  # one independent noise row per latent, drawn in a fixed order

    atopy = z[0]
    hay_fever = (rng.random(n) < 1.0 / (1.0 + np.exp(-(cfg.hay_fever_intercept + cfg.hay_fever_per_atopy * atopy))))
    h = (cfg.hr_atopy * atopy + cfg.hr_female * female + cfg.hr_per_decade * decade
         + cfg.hr_per_bmi * (pop["bmi"].to_numpy() - 27.0) + cfg.hr_current_smoker * current
         + cfg.hr_noise_sd * z[1])
    obs_score = (cfg.obs_intercept + cfg.obs_per_log_pack_year * log_py + cfg.obs_current_smoker * current
                 + cfg.obs_per_decade * decade + cfg.obs_parental * parental
                 + cfg.obs_per_pm25 * (pop["pm25"].to_numpy() - 10.0)
                 + cfg.obs_per_townsend * pop["townsend"].to_numpy() + cfg.obs_noise_sd * z[2])
    o = _softplus(obs_score)
    emph_score = (cfg.emph_intercept + cfg.emph_per_log_pack_year * log_py + cfg.emph_per_decade * decade
                  + cfg.emph_from_obstruction * o + cfg.emph_noise_sd * z[3])
    e = _softplus(emph_score)
    r = cfg.restr_per_bmi * (pop["bmi"].to_numpy() - 27.0) + cfg.restr_noise_sd * z[4]
    return pd.DataFrame({
        "latent_atopy": atopy,
        "latent_hyperreactivity": h,
        "latent_obstruction": o,
        "latent_emphysema": e,
        "latent_restriction": r,
        "hay_fever_eczema": hay_fever.astype(np.int8),
    })


def lung_function(pop: pd.DataFrame, lat: pd.DataFrame, rng: np.random.Generator,
                  phys: PhysiologyConfig, curves: CurveConfig) -> pd.DataFrame:
    """Per-person true FVC, FEV1/FVC, PEF and limb-shape parameters.

    FVC and FEV1/FVC are GLI-2012 values at z-scores shifted by the latents; PEF scales with the GLI
    FEV1 prediction.
    GLI-2012, not GLI Global: a simulator should keep the ethnic differences GLI Global averages out.
    The limb exponent ``k`` is then solved so the parametric curve reproduces the target FEV1/FVC
    *given* the latent-driven knee (emphysema) and late concavity (asthma): those two shape features
    therefore carry information that FEV1, FVC and FEV1/FVC do not.
    """
    n = len(pop)
    sex = np.where(pop["male"].to_numpy() == 1, "male", "female")
    args = (sex, pop["age"].to_numpy(float), pop["height_cm"].to_numpy(float), pop["gli_ethnicity"].to_numpy())
    g12 = gli.ReferenceEquation.GLI_2012  # why GLI-2012: docstring
    o = lat["latent_obstruction"].to_numpy()
    e = lat["latent_emphysema"].to_numpy()
    h = lat["latent_hyperreactivity"].to_numpy()
    current = (pop["smoking"].to_numpy() == 2).astype(float)
    zn = rng.standard_normal((3, n))
    fvc_z = (zn[0] + phys.fvc_z_per_restriction * lat["latent_restriction"].to_numpy()
             + phys.fvc_z_per_obstruction * o + phys.fvc_z_current_smoker * current)
    ratio_z = (phys.healthy_ratio_z_sd * zn[1] + phys.ratio_z_per_obstruction * o
               + phys.ratio_z_per_emphysema * e + phys.ratio_z_per_hr * h)
    fvc = gli.value_at_z("fvc", np.clip(fvc_z, -5.0, 4.0), *args, equation=g12)
    ratio = gli.value_at_z("fev1_fvc", np.clip(ratio_z, -5.5, 3.0), *args, equation=g12)
    ratio = np.clip(np.nan_to_num(ratio, nan=0.3), 0.3, 0.95)
    fev1_pred = gli.predicted("fev1", *args, equation=g12)
    pef = (phys.pef_per_fev1_pred * fev1_pred * np.exp(phys.pef_log_sd * zn[2] - phys.pef_per_obstruction * o))
    pef = np.clip(pef, *phys.pef_limits_l_s)

    rise = rng.uniform(*curves.rise_time_s, n)
    d = knee_depth(e, curves)
    c = late_concavity(h, curves)
    k, solved = solve_limb_exponent(ratio, fvc, pef, rise, d, c, curves)
    return pd.DataFrame({
        "true_fvc_l": fvc,
        "true_fev1_fvc": ratio,
        "true_fev1_l": ratio * fvc,
        "true_pef_l_s": pef,
        "true_rise_time_s": rise,
        "curve_k": k,
        "curve_knee_depth": d,
        "curve_late_concavity": c,
        "curve_k_solved": solved,
        "fvc_z_true": fvc_z,
        "fev1_fvc_z_true": ratio_z,
    })
