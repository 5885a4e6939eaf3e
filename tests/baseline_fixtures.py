"""A small participants table with a known signal, for the baselines, MLflow and SHAP tests.

``make_participants`` / ``write_cohort`` build it: COPD risk from pack-years, age and FEV1/FVC; asthma from hay
fever and FEV1/FVC; ``true_risk_*`` columns for the oracle row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from biobank.schema import SPIROMETRY_SCALARS
from experiments.baselines import models as B

SPIRO = list(SPIROMETRY_SCALARS)
# Small, single-threaded XGBoost for tests: OpenMP threads spin-wait on a busy 2-core CI machine.
FAST = {"xgboost": B.XGBoostConfig(n_estimators=150, learning_rate=0.2, early_stopping_rounds=10, nthread=1)}


def make_participants(n: int = 1200, seed: int = 0) -> pd.DataFrame:
    """A cohort table following docs/design.md with a known logistic signal and true risks."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(40, 70, n)
    sex = rng.choice(["female", "male"], n)
    smoking = rng.choice(["never", "previous", "current"], n, p=[0.55, 0.33, 0.12]).astype(object)
    smoking[rng.random(n) < 0.03] = None
    pack = np.where(smoking == "never", 0.0, rng.gamma(2.0, 10.0, n))
    height = np.where(sex == "male", 176.0, 163.0) + rng.normal(0, 7, n)
    ratio = np.clip(0.78 - 0.004 * pack + rng.normal(0, 0.06, n), 0.3, 0.95)
    fvc = np.clip((height / 100) ** 2 * 1.6 - 0.02 * (age - 40) + rng.normal(0, 0.4, n), 1.0, 8.0)
    fev1 = fvc * ratio
    hay = (rng.random(n) < 0.25).astype(np.int8)
    df = pd.DataFrame({
        "eid": np.arange(1_000_001, 1_000_001 + n, dtype=np.int64), "age": age, "sex": sex,
        "height_cm": height, "bmi": np.clip(rng.normal(27, 4, n), 15, 50), "smoking_status": smoking,
        "pack_years": pack, "ethnicity": rng.choice(["white", "south_asian", "black", "other"], n,
                                                    p=[0.85, 0.05, 0.05, 0.05]),
        "gli_ethnicity": "caucasian", "hay_fever_eczema": pd.array(hay, dtype="Int8"),
        "parental_copd": pd.array((rng.random(n) < 0.1).astype(np.int8), dtype="Int8"),
        "townsend": rng.normal(-1, 3, n), "pm25": np.clip(rng.normal(10, 1, n), 5, 20),
        "fev1_l": fev1, "fvc_l": fvc, "fev1_fvc": ratio, "pef_l_s": fev1 * 2.1, "fef25_75_l_s": fev1 * ratio * 0.9,
        "fev1_z": rng.normal(0, 1, n), "fvc_z": rng.normal(0, 1, n), "fev1_fvc_z": (ratio - 0.78) / 0.06,
        "qc_status": "pass", "qc_reason": "", "n_blows": np.full(n, 3, dtype=np.int64),
    })
    fail = rng.random(n) < 0.05
    df.loc[fail, SPIRO] = np.nan
    df.loc[fail, "qc_status"] = "fail"
    df.loc[fail, "qc_reason"] = "no_end_of_test"
    z = (ratio - 0.78) / 0.06
    logits = {"asthma": -1.8 + 1.5 * hay - 0.8 * z, "copd": -2.5 + 0.05 * pack + 0.04 * (age - 55) - 1.2 * z}
    for trait, logit in logits.items():
        risk = 1 / (1 + np.exp(-logit))
        df[trait] = pd.array((rng.random(n) < risk).astype(np.int8), dtype="Int8")
        df[f"true_risk_{trait}"] = risk
    df.loc[rng.random(n) < 0.01, "asthma"] = pd.NA
    u = rng.random(n)
    df["split"] = np.where(u < 0.6, "train", np.where(u < 0.8, "val", "test"))
    return df


def write_cohort(directory: Path, participants: pd.DataFrame | None = None, **kwargs) -> Path:
    """Write ``participants.parquet`` only (the baselines never read blows)."""
    directory.mkdir(parents=True, exist_ok=True)
    (participants if participants is not None else make_participants(**kwargs)).to_parquet(
        directory / "participants.parquet", index=False)
    return directory
