"""Shared fixture data for the HeLM tests: embeddings that carry the labels, as a trained encoder's would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from experiments.data.embeddings import EMBEDDING_COLUMNS
from llm_bridge.llm import LoadedLLM, load_llm
from llm_bridge.tiny import build_tiny_llm
from tests.encoder_fixtures import build_tiny_cohort


def label_carrying_embeddings(cohort_dir: Path, seed: int = 0) -> pd.DataFrame:
    """``eid + emb_*`` for every QC-passing participant: noise plus a shift on the asthma/COPD labels."""
    p = pd.read_parquet(Path(cohort_dir) / "participants.parquet")
    p = p[p["qc_status"] != "fail"]
    rng = np.random.default_rng(seed)
    y = np.stack([p["asthma"].fillna(0).to_numpy(float), p["copd"].fillna(0).to_numpy(float)], axis=1)
    emb = rng.normal(0, 1, (len(p), 128)) + np.repeat(y, 64, axis=1) * 1.5
    frame = pd.DataFrame(emb.astype(np.float32), columns=list(EMBEDDING_COLUMNS))
    frame.insert(0, "eid", p["eid"].to_numpy())
    return frame


def records(n: int = 5, seed: int = 0) -> pd.DataFrame:
    """``n`` plausible serializable records with labels, all in the train split."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "eid": np.arange(1000, 1000 + n),
        "age": rng.uniform(40, 70, n), "sex": rng.choice(["male", "female"], n),
        "height_cm": rng.normal(170, 8, n), "bmi": rng.normal(27, 4, n),
        "smoking_status": rng.choice(["never", "previous", "current"], n), "pack_years": rng.uniform(0, 40, n),
        "ethnicity": rng.choice(["white", "south_asian"], n), "hay_fever_eczema": rng.integers(0, 2, n),
        "fev1_l": rng.normal(3, 0.6, n), "fev1_z": rng.normal(0, 1, n), "fvc_l": rng.normal(4, 0.7, n),
        "split": ["train"] * n, "asthma": rng.integers(0, 2, n), "copd": rng.integers(0, 2, n),
    })


def helm_setup(root: Path) -> tuple[Path, pd.DataFrame, LoadedLLM]:
    """A 120-person tiny cohort, its label-carrying embeddings and a tiny llama: the HeLM tests' common ground."""
    cohort = build_tiny_cohort(root / "cohort", n=120, seed=0)
    return cohort, label_carrying_embeddings(cohort), load_llm(build_tiny_llm(root / "llm", "llama", hidden=32))
