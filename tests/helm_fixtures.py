"""Shared fixture data for the HeLM tests: embeddings that carry the labels, as a trained encoder's would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from experiments.data.embeddings import EMBEDDING_COLUMNS


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
