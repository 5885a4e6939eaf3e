"""The spirogram embedding table: ``eid`` + ``emb_000..emb_127``, as the encoder writes it.

Why a table of its own: the embedding is the interface between the encoder and everything downstream
(baselines, HeLM, explanations). It is validated once on read, and participants without one are
counted and named, never dropped silently.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)

EMBEDDING_DIM = 128  # the encoder's penultimate width (signals.encoder.EncoderConfig.embedding_dim)


def embedding_columns(dim: int = EMBEDDING_DIM) -> tuple[str, ...]:
    """``emb_000 .. emb_<dim-1>``."""
    return tuple(f"emb_{i:03d}" for i in range(dim))


EMBEDDING_COLUMNS = embedding_columns()


def load_embeddings(path: str | Path) -> pd.DataFrame:
    """Read the encoder's embedding file (``eid`` + ``emb_000..emb_127``) and validate it.

    Raises:
        SpirolmInputError: unreadable file, missing/duplicate eids, missing embedding columns or
            non-finite values (naming the participant).
    """
    path = Path(path)
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise SpirolmInputError(f"cannot read embeddings ({exc})", file=path) from exc
    if "eid" not in df.columns:
        raise SpirolmInputError("embeddings have no 'eid' column", file=path, field="eid")
    missing = [c for c in EMBEDDING_COLUMNS if c not in df.columns]
    if missing:
        raise SpirolmInputError(f"{len(missing)} embedding columns missing (first: {missing[0]})",
                                file=path, field=missing[0])
    dup = df["eid"].duplicated()
    if dup.any():
        raise SpirolmInputError("participant appears twice in the embeddings", file=path,
                                eid=df.loc[dup, "eid"].iloc[0], field="eid")
    values = df[list(EMBEDDING_COLUMNS)].to_numpy(dtype=float)
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        raise SpirolmInputError(f"non-finite embedding values for {int(bad.sum())} participants", file=path,
                                eid=df.loc[bad, "eid"].iloc[0], field="emb_*")
    return df[["eid", *EMBEDDING_COLUMNS]].reset_index(drop=True)


def as_embedding_frame(embeddings: str | Path | pd.DataFrame | None) -> pd.DataFrame | None:
    """Embeddings from a Parquet path (validated by :func:`load_embeddings`) or an in-memory frame."""
    if embeddings is None or isinstance(embeddings, pd.DataFrame):
        return embeddings
    return load_embeddings(embeddings)


def attach_embeddings(participants: pd.DataFrame, embeddings: pd.DataFrame | None, *,
                      needed: bool) -> tuple[pd.DataFrame, int]:
    """Participants that have an embedding, with ``emb_*`` columns, and how many were left out.

    Participants without one (QC-failed spirometry) cannot be scored by a spirogram model: they are
    excluded, counted and logged.

    Raises:
        SpirolmInputError: ``needed`` and no embeddings given.
    """
    if embeddings is None:
        if needed:
            raise SpirolmInputError("this HeLM variant needs spirogram embeddings: pass --encoder REF or "
                                    "--embeddings FILE", field="embeddings")
        return participants, 0
    merged = participants.merge(embeddings, on="eid", how="left", validate="one_to_one")
    has = merged[EMBEDDING_COLUMNS[0]].notna()
    excluded = int((~has).sum())
    if excluded:
        log.warning("%d participant(s) have no spirogram embedding (e.g. QC-failed spirometry); "
                    "they are excluded from every spirogram model", excluded)
    return merged.loc[has].reset_index(drop=True), excluded
