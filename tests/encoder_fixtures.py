"""A tiny cohort directory for the encoder tests, built to the docs/design.md table contract.

Why our own builder: the encoder tests must not depend on the full synthetic-cohort generator (slow,
and owned by another module); a 100-odd participant cohort with parametric curves is enough to check
shapes, masking, determinism and error paths. Curves carry the disease signal in their *shape*
(bi-exponential volume-time, slow component larger in COPD and asthma) so a short training run can
actually learn something.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from biobank.cohort_io import write_cohort

TRAITS = ("asthma", "copd")


def blow_volume_ml(rng: np.random.Generator, fvc_l: float, slow_frac: float, duration_s: float) -> np.ndarray:
    """One cumulative volume series in integer mL at 100 Hz, starting at time 0.

    Bi-exponential ``V(t) = FVC (1 - a e^{-t/tau1} - (1-a) e^{-t/tau2})`` (Steltner et al.), with a short
    rise phase; ``slow_frac = 1 - a`` sets how obstructed (concave) the curve is.
    """
    t = np.arange(int(duration_s * 100)) / 100.0
    tau1, tau2 = rng.uniform(0.25, 0.4), rng.uniform(1.5, 2.5)
    a = 1.0 - slow_frac
    v = fvc_l * (1.0 - a * np.exp(-t / tau1) - (1.0 - a) * np.exp(-t / tau2))
    rise = np.clip(t / 0.08, 0.0, 1.0)  # ~80 ms to peak flow
    v = v * rise
    v = np.maximum.accumulate(v + rng.normal(0.0, 0.002, t.size))
    out = np.rint(np.clip(v, 0.0, None) * 1000.0).astype(np.int32)
    out[0] = 0
    return out


def build_tiny_cohort(
    out_dir: Path,
    n: int = 120,
    seed: int = 0,
    *,
    n_fail: int = 6,
    missing_label_frac: float = 0.1,
    zero_positive_trait: str | None = None,
) -> Path:
    """Write ``participants.parquet`` and ``blows.parquet`` for ``n`` participants.

    Args:
        out_dir: directory to create.
        n: participants; 2 blows each.
        seed: everything is drawn from ``numpy.random.default_rng(seed)``.
        n_fail: participants with ``qc_status == "fail"`` (no best blow; must never be embedded).
        missing_label_frac: fraction of trait labels set to NA (the loss must mask them).
        zero_positive_trait: make this trait all-negative in the train split (a bad-input case).

    Returns:
        ``out_dir``.
    """
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    eids = np.arange(1_000_001, 1_000_001 + n, dtype=np.int64)
    # Splits cycle so every split gets every label pattern, even at n ~ 100.
    split = np.array(["train", "train", "train", "val", "test"])[np.arange(n) % 5]
    labels = {t: rng.random(n) < 0.4 for t in TRAITS}
    qc_status = np.full(n, "pass", dtype=object)
    qc_status[rng.choice(n, size=n_fail, replace=False)] = "fail"
    age = rng.uniform(40, 70, n)
    sex = rng.choice(["female", "male"], n)
    height = np.where(sex == "male", rng.normal(176, 7, n), rng.normal(163, 6, n))
    fvc = np.where(sex == "male", 4.8, 3.6) * rng.uniform(0.85, 1.15, n)

    blow_rows = []
    fev1 = np.empty(n)
    for i, eid in enumerate(eids):
        slow = 0.15 + 0.35 * labels["copd"][i] + 0.2 * labels["asthma"][i] + rng.uniform(0, 0.1)
        fvc_i = fvc[i] * (0.85 if labels["copd"][i] else 1.0)
        best = None if qc_status[i] == "fail" else int(rng.integers(0, 2))
        for b in range(2):
            vol = blow_volume_ml(rng, fvc_i * rng.uniform(0.97, 1.0), slow, rng.uniform(7.0, 12.0))
            fev1_b, fvc_b = vol[min(100, vol.size - 1)] / 1000.0, vol.max() / 1000.0
            if b == (best if best is not None else 0):
                fev1[i] = fev1_b
            blow_rows.append({
                "eid": eid, "instance": 0, "blow_index": b, "blow_order": b + 1, "volume_ml": vol,
                "qc_status": "reject" if qc_status[i] == "fail" else "accept",
                "qc_reason": "bev_high" if qc_status[i] == "fail" else "",
                "is_best": best == b, "fev1_l": fev1_b, "fvc_l": fvc_b, "fev1_fvc": fev1_b / fvc_b, "pef_l_s": 8.0, "bev_ml": 50.0,
                "fet_s": vol.size / 100.0,
            })

    trait_cols = {}
    for t in TRAITS:
        y = pd.array(labels[t].astype("int8"), dtype="Int8")
        mask = rng.random(n) < missing_label_frac
        y[mask] = pd.NA
        if t == zero_positive_trait:
            y[(split == "train") & ~mask] = 0
        trait_cols[t] = y
    participants = pd.DataFrame({
        "eid": eids, "age": age, "sex": sex, "height_cm": height, "bmi": rng.normal(27, 4, n),
        "smoking_status": rng.choice(["never", "previous", "current"], n), "pack_years": rng.uniform(0, 30, n),
        "ethnicity": "white", "gli_ethnicity": "caucasian",
        "hay_fever_eczema": pd.array(rng.integers(0, 2, n).astype("int8"), dtype="Int8"),
        "parental_copd": pd.array(rng.integers(0, 2, n).astype("int8"), dtype="Int8"),
        "townsend": rng.normal(0, 3, n), "pm25": rng.normal(10, 1, n),
        "fev1_l": fev1, "fvc_l": fvc, "fev1_fvc": fev1 / fvc, "pef_l_s": 8.0, "fef25_75_l_s": 3.0,
        "fev1_z": 0.0, "fvc_z": 0.0, "fev1_fvc_z": 0.0,
        "qc_status": qc_status, "qc_reason": np.where(qc_status == "fail", "bev_high", ""),
        "n_blows": np.int64(2), **trait_cols, "split": split,
        **{f"true_risk_{t}": np.where(labels[t], 0.7, 0.2) for t in TRAITS},
    })
    blows = pd.DataFrame(blow_rows)
    blows["blow_order"] = blows["blow_order"].astype("Int32")
    # The cohort writer validates both tables against the pandera schemas, so the fixture is
    # guaranteed to follow the same contract as a real import.
    return write_cohort(out_dir, participants, blows, traits=TRAITS)


def qc_passing_eids(cohort_dir: Path) -> set[int]:
    """Participants that ``embed`` must cover: ``qc_status != "fail"``."""
    p = pd.read_parquet(Path(cohort_dir) / "participants.parquet", columns=["eid", "qc_status"])
    return set(p.loc[p["qc_status"] != "fail", "eid"].astype(int))
