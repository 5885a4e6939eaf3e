"""Demographics and exposures with UK-Biobank-like distributions (true values, before missingness)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from biobank.synth.config import PopulationConfig

GLI_BY_CODE_PREFIX: dict[int, str] = {1: "caucasian", 4: "african_american", 5: "ne_asian"}
"""UKB 21000 top-level group -> GLI-2012 equation. Chinese (5) -> NE Asian; everyone else, including
South Asians and unknown, -> 'other' (GLI has no South-Asian equation). Same mapping as
``biobank/ukb_fields.py`` so simulated physiology and imported z-scores agree."""


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def gli_ethnicity_of(codes: np.ndarray) -> np.ndarray:
    """Map UKB 21000 codes (1001, 4002, 5, -3, ...) to GLI-2012 ethnicity names."""
    codes = np.asarray(codes)
    group = np.where(codes >= 1000, codes // 1000, codes)
    out = np.full(codes.shape, "other", dtype=object)
    for g, name in GLI_BY_CODE_PREFIX.items():
        out[group == g] = name
    return out


def draw_population(n: int, rng: np.random.Generator, cfg: PopulationConfig) -> pd.DataFrame:
    """Draw ``n`` participants' true demographics and exposures.

    Returns:
        DataFrame with ``male`` (0/1), ``age`` (integer years), ``height_cm``, ``bmi``, ``smoking``
        (0 never / 1 previous / 2 current), ``pack_years`` (0 for never), ``ethnicity_code`` (UKB 21000),
        ``gli_ethnicity``, ``townsend``, ``pm25``, ``father_copd``, ``mother_copd`` (0/1).
    """
    male = (rng.random(n) >= cfg.p_female).astype(np.int8)
    span = cfg.age_max + 1 - cfg.age_min
    age = np.minimum(cfg.age_min + np.floor(span * rng.beta(cfg.age_beta_a, 1.0, n)), cfg.age_max)
    h_mean = np.where(male == 1, cfg.height_mean_cm[1], cfg.height_mean_cm[0])
    h_sd = np.where(male == 1, cfg.height_sd_cm[1], cfg.height_sd_cm[0])
    height = h_mean + h_sd * rng.standard_normal(n) + cfg.height_per_decade_cm * (age - 55.0) / 10.0
    height = np.round(np.clip(height, 140.0, 205.0))
    bmi_med = np.where(male == 1, cfg.bmi_median[1], cfg.bmi_median[0])
    bmi = np.round(np.clip(bmi_med * np.exp(cfg.bmi_log_sd * rng.standard_normal(n)), 15.0, 60.0), 2)

    smoking = _draw_smoking(n, male, age, rng, cfg)
    pack_years = np.zeros(n)
    ever = smoking > 0
    mu = np.where(smoking == 2, cfg.pack_years_log_mean[1], cfg.pack_years_log_mean[0])
    py = np.exp(mu + cfg.pack_years_log_sd * rng.standard_normal(n)) * (age / 57.0)  # longer smoking when older
    pack_years[ever] = np.round(np.clip(py[ever], 0.5, 150.0), 1)

    eth = rng.choice(np.asarray(cfg.ethnicity_codes), size=n, p=_normalised(cfg.ethnicity_p))
    k, theta = cfg.townsend_gamma
    townsend = np.round(cfg.townsend_shift + rng.gamma(k, theta, n), 2)
    pm25 = cfg.pm25_mean + cfg.pm25_per_townsend * (townsend + 1.3) + cfg.pm25_sd * rng.standard_normal(n)
    pm25 = np.round(np.clip(pm25, 7.5, 22.0), 2)

    # Centred on the ever-smoker share so the marginal rates stay near p_parent_copd.
    smoker_logit = cfg.parent_copd_per_smoker * (ever - (1.0 - cfg.p_smoking[0]))
    father = rng.random(n) < _sigmoid(_logit(cfg.p_parent_copd[0]) + smoker_logit)
    mother = rng.random(n) < _sigmoid(_logit(cfg.p_parent_copd[1]) + smoker_logit)
    return pd.DataFrame({
        "male": male,
        "age": age,
        "height_cm": height,
        "bmi": bmi,
        "smoking": smoking,
        "pack_years": pack_years,
        "ethnicity_code": eth.astype(np.int64),
        "gli_ethnicity": gli_ethnicity_of(eth),
        "townsend": townsend,
        "pm25": pm25,
        "father_copd": father.astype(np.int8),
        "mother_copd": mother.astype(np.int8),
    })


def _draw_smoking(n: int, male: np.ndarray, age: np.ndarray, rng: np.random.Generator,
                  cfg: PopulationConfig) -> np.ndarray:
    """Never/previous/current with more ever-smoking in men and more quitting with age."""
    p_never, p_prev, p_curr = _normalised(cfg.p_smoking)
    ever_logit = _logit(1.0 - p_never) + cfg.male_ever_smoker_logit * (male - 0.455)
    ever = rng.random(n) < _sigmoid(ever_logit)
    quit_logit = _logit(p_prev / (p_prev + p_curr)) + 0.04 * (age - 56.5)
    quit = rng.random(n) < _sigmoid(quit_logit)
    return np.where(ever, np.where(quit, 1, 2), 0).astype(np.int8)


def _normalised(p) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    return p / p.sum()


def _logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))
