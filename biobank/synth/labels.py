"""Trait risk model, label draws and the UKB phenotype codes that encode them.

``true_risk_<trait>`` is exactly the probability each label was drawn with, so any model can be
compared with this oracle. Cases are written with a random mix of the sources the importer's rules read
(``biobank/phenotypes.yaml``); controls get only distractor codes, never a trait code.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from biobank.synth.config import LabelConfig

TRAITS: tuple[str, ...] = ("asthma", "copd")

# Distractors: common codes in UKB that match no trait rule (respiratory ones included on purpose).
ICD10_DISTRACTORS = ("I10", "E119", "K219", "E785", "M179", "I251", "J189", "J301", "K573", "N390")
ICD9_DISTRACTORS = ("4019", "2500", "5301", "7140")
SELFREPORT_DISTRACTORS = (1065, 1220, 1226, 1473, 1138, 1465, 1154)  # hypertension, T2D, hypothyroidism, ...
TOUCHSCREEN_DISTRACTORS = (5, 7)  # DVT, pulmonary embolism
PARENT_DISTRACTORS = (1, 2, 8, 9, 10, 13)  # heart disease, stroke, high BP, diabetes, Alzheimer's, prostate


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def spirogram_logits(lat: pd.DataFrame, cfg: LabelConfig) -> pd.DataFrame:
    """The part of each trait's logit that the spirogram shows: intercept + latent terms.

    Only the latents shape the curves, so no spirogram reader can do better than this part (up to what
    the curve reveals about sex, age and size); it works on ``latents.parquet`` as well.
    """
    copd = (cfg.copd_intercept + cfg.copd_per_obstruction * lat["latent_obstruction"].to_numpy()
            + cfg.copd_per_emphysema * lat["latent_emphysema"].to_numpy())
    asthma = cfg.asthma_intercept + cfg.asthma_per_hr * lat["latent_hyperreactivity"].to_numpy()
    return pd.DataFrame({"asthma": asthma, "copd": copd})


def record_logits(pop: pd.DataFrame, lat: pd.DataFrame, cfg: LabelConfig) -> pd.DataFrame:
    """The part of each trait's logit that comes from the record only (sex, age, smoking, hay fever,
    parental COPD): these terms move no latent and no curve."""
    decade = (pop["age"].to_numpy() - 55.0) / 10.0
    current = (pop["smoking"].to_numpy() == 2).astype(float)
    log_py = np.log1p(pop["pack_years"].to_numpy())
    parental = np.maximum(pop["father_copd"].to_numpy(), pop["mother_copd"].to_numpy()).astype(float)
    female = 1.0 - pop["male"].to_numpy()
    copd = (cfg.copd_per_decade * decade + cfg.copd_current_smoker * current
            + cfg.copd_per_log_pack_year * log_py + cfg.copd_parental * parental)
    asthma = cfg.asthma_hay_fever * lat["hay_fever_eczema"].to_numpy() + cfg.asthma_female * female
    return pd.DataFrame({"asthma": asthma, "copd": copd})


def true_risks(pop: pd.DataFrame, lat: pd.DataFrame, cfg: LabelConfig) -> pd.DataFrame:
    """The oracle probabilities ``true_risk_asthma`` and ``true_risk_copd``: σ(spirogram + record logit).

    With the record-only coefficients at 0 (the default) the sums are bit-for-bit those of the
    original single expression, so default cohorts do not change.
    """
    vis, rec = spirogram_logits(lat, cfg), record_logits(pop, lat, cfg)
    return pd.DataFrame({"true_risk_asthma": _sigmoid(vis["asthma"].to_numpy() + rec["asthma"].to_numpy()),
                         "true_risk_copd": _sigmoid(vis["copd"].to_numpy() + rec["copd"].to_numpy())})


def draw_labels(risks: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Bernoulli draws from the oracle risks (one uniform per trait, fixed order)."""
    u = rng.random((len(TRAITS), len(risks)))
    return pd.DataFrame({t: (u[i] < risks[f"true_risk_{t}"].to_numpy()).astype(np.int8)
                         for i, t in enumerate(TRAITS)})


def phenotype_codes(labels: pd.DataFrame, hay_fever: np.ndarray, father_copd: np.ndarray,
                    mother_copd: np.ndarray, rng: np.random.Generator, cfg: LabelConfig,
                    slots: dict[str, int]) -> dict[str, list[list]]:
    """Per participant code lists for fields 6152, 20002, 41270, 41271, 20107, 20110.

    Args:
        slots: maximum array slots per field; lists are truncated to fit (trait codes come first, so
            only distractors are ever dropped).

    Returns:
        ``{field: [codes of participant 0, codes of participant 1, ...]}``.
    """
    n = len(labels)
    asthma = labels["asthma"].to_numpy() == 1
    copd = labels["copd"].to_numpy() == 1
    src_asthma = _sources(asthma, (cfg.p_asthma_icd10, cfg.p_asthma_icd9, cfg.p_asthma_selfreport_20002,
                                   cfg.p_asthma_6152), rng)
    src_copd = _sources(copd, (cfg.p_copd_icd10, cfg.p_copd_icd9, cfg.p_copd_selfreport_20002,
                               cfg.p_copd_6152), rng)
    n_distract = rng.poisson(cfg.distractor_rate, (3, n))
    picks = rng.random((12, n))
    out: dict[str, list[list]] = {f: [] for f in ("6152", "20002", "41270", "41271", "20107", "20110")}
    for i in range(n):
        icd10, icd9, sr, ts = [], [], [], []
        if src_copd[0, i]:
            icd10.append(("J449", "J440", "J439", "J438")[int(picks[0, i] * 4)])
        if src_copd[1, i]:
            icd9.append(("4912", "4928", "496")[int(picks[1, i] * 3)])
        if src_copd[2, i]:
            sr.append((1112, 1113, 1472)[int(picks[2, i] * 3)])
        if src_copd[3, i]:
            ts.append(6)
        if src_asthma[0, i]:
            icd10.append(("J459", "J450", "J451", "J46")[int(picks[3, i] * 4)])
        if src_asthma[1, i]:
            icd9.append(("4939", "4930")[int(picks[4, i] * 2)])
        if src_asthma[2, i]:
            sr.append(1111)
        if src_asthma[3, i]:
            ts.append(8)
        if hay_fever[i]:
            ts.append(9)
        icd10 += _distractors(ICD10_DISTRACTORS, n_distract[0, i], picks[5, i])
        icd9 += _distractors(ICD9_DISTRACTORS, int(n_distract[1, i] > 1), picks[6, i])
        sr += _distractors(SELFREPORT_DISTRACTORS, n_distract[2, i], picks[7, i])
        if picks[8, i] < 0.03:
            ts.append(TOUCHSCREEN_DISTRACTORS[int(picks[9, i] * 2)])
        out["6152"].append(ts[: slots["6152"]] or [-7])  # -7: none of the above
        out["20002"].append(sr[: slots["20002"]])
        out["41270"].append(icd10[: slots["41270"]])
        out["41271"].append(icd9[: slots["41271"]])
        out["20107"].append(_parent(father_copd[i], picks[10, i], slots["20107"]))
        out["20110"].append(_parent(mother_copd[i], picks[11, i], slots["20110"]))
    return out


def _sources(case: np.ndarray, probs: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """Which of 4 sources record each case; every case gets at least one (else it is not a case)."""
    draw = rng.random((len(probs), case.size)) < np.asarray(probs)[:, None]
    forced = rng.choice(len(probs), size=case.size, p=np.asarray(probs) / np.sum(probs))
    none = ~draw.any(axis=0)
    draw[forced[none], np.flatnonzero(none)] = True
    return draw & case[None, :]


def _distractors(pool: tuple, count: int, u: float) -> list:
    """``count`` distinct codes from ``pool``, chosen deterministically from one uniform ``u``."""
    if count <= 0:
        return []
    start = int(u * len(pool))
    return [pool[(start + 3 * j) % len(pool)] for j in range(min(count, len(pool)))]


def _parent(has_copd: int, u: float, n_slots: int) -> list:
    codes = [6] if has_copd else []
    codes += _distractors(PARENT_DISTRACTORS, int(u * 3), u)
    return codes[:n_slots] or [-17]  # -17: none of the above
