"""HeLM inputs: participants + spirogram embeddings + pre-tokenized text prefixes, per split.

Why pre-tokenize: the record text of a participant never changes, so its prefix ids are computed
once (batched, in Rust) when the datamodule is set up; batches only pad them. The participant id
travels with every batch so the prefix KV store can be keyed by it and predictions by eid.

Participants without a spirogram embedding (QC-failed spirometry) cannot be scored by the spirogram
variants: they are excluded, counted and logged - never silently dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from experiments.features import EMBEDDING_COLUMNS, load_embeddings
from llm_bridge.model import HeLM
from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def read_helm_participants(cohort_dir: str | Path, traits: tuple[str, ...] | None = None) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """All participant columns (the serializer needs them) with float labels (NaN = missing)."""
    from biobank.cohort_io import read_cohort

    cohort = read_cohort(cohort_dir, blows=False)
    traits = tuple(cohort.traits) if traits is None else tuple(traits)
    df = cohort.participants.reset_index(drop=True).copy()
    for col in ("eid", "split", *traits):
        if col not in df.columns:
            raise SpirolmInputError("column missing from participants.parquet", file=Path(cohort_dir), field=col)
    for t in traits:
        df[t] = pd.to_numeric(df[t]).astype("Float64").to_numpy(dtype=np.float32, na_value=np.nan)
    df["split"] = df["split"].astype(str)
    return df, traits


def join_embeddings(participants: pd.DataFrame, embeddings: pd.DataFrame | None, *, needed: bool) -> tuple[pd.DataFrame, int]:
    """Attach ``emb_*`` columns; returns ``(rows that can be scored, number excluded for lack of one)``."""
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
                    "they are excluded from every HeLM row", excluded)
    return merged.loc[has].reset_index(drop=True), excluded


@dataclass
class HeLMTable:
    """One split, ready for batching (row-aligned arrays)."""

    eids: np.ndarray
    prefix_ids: list[list[int]]
    embedding: np.ndarray | None
    tab: np.ndarray | None
    labels: np.ndarray


class HeLMDataset(Dataset):
    """Index dataset over a :class:`HeLMTable`; :func:`collate` builds the batch."""

    def __init__(self, table: HeLMTable) -> None:
        self.table = table

    def __len__(self) -> int:
        return len(self.table.eids)

    def __getitem__(self, i: int) -> int:
        return i

    def collate(self, idx: list[int]) -> dict:
        """Batch dict: ``eid`` list, ``prefix_ids`` lists, ``embedding`` / ``tab`` tensors, ``labels`` (B, T)."""
        t = self.table
        ix = np.asarray(idx)
        return {
            "eid": t.eids[ix].tolist(),
            "prefix_ids": [t.prefix_ids[i] for i in idx],
            "embedding": None if t.embedding is None else torch.from_numpy(t.embedding[ix]),
            "tab": None if t.tab is None else torch.from_numpy(t.tab[ix]),
            "labels": torch.from_numpy(t.labels[ix]),
        }


def build_table(helm: HeLM, rows: pd.DataFrame, examples: str = "") -> HeLMTable:
    """Serialize, tokenize and stack one set of participants for ``helm``."""
    emb = rows[list(EMBEDDING_COLUMNS)].to_numpy(dtype=np.float32) if helm.cfg.uses_spiro else None
    if emb is not None and not np.isfinite(emb).all():
        bad = ~np.isfinite(emb).all(axis=1)
        raise SpirolmInputError("non-finite spirogram embedding", eid=rows.loc[bad, "eid"].iloc[0], field="emb_*")
    return HeLMTable(
        eids=rows["eid"].to_numpy(dtype=np.int64),
        prefix_ids=helm.prefix_ids(rows, examples=examples),
        embedding=emb,
        tab=helm.tab_features(rows),
        labels=rows[list(helm.cfg.traits)].to_numpy(dtype=np.float32),
    )


class HeLMDataModule(L.LightningDataModule):
    """Train/val/test loaders of HeLM batches.

    Args:
        helm: the model (its tokenizer, serializer and variant decide the inputs).
        participants: rows to use (with ``split``, traits and, for spirogram variants, ``emb_*``).
        batch_size: participants per batch.
        seed: shuffling seed.
        max_train: optional cap on training participants (seeded subsample; CPU budgets).
    """

    def __init__(self, helm: HeLM, participants: pd.DataFrame, *, batch_size: int = 16, seed: int = 0,
                 max_train: int | None = None) -> None:
        super().__init__()
        self.helm, self.batch_size, self.seed = helm, batch_size, seed
        rows = {s: participants[participants["split"] == s].reset_index(drop=True) for s in SPLITS}
        if max_train is not None and len(rows["train"]) > max_train:
            rng = np.random.default_rng(seed)
            keep = np.sort(rng.choice(len(rows["train"]), max_train, replace=False))
            rows["train"] = rows["train"].iloc[keep].reset_index(drop=True)
        for s in ("train", "val"):
            if rows[s].empty:
                raise SpirolmInputError(f"the {s} split is empty", field="split")
        self.rows = rows
        self.tables: dict[str, HeLMTable] = {}

    def setup(self, stage: str | None = None) -> None:
        """Tokenize every split once."""
        for s in SPLITS:
            if s not in self.tables and not self.rows[s].empty:
                self.tables[s] = build_table(self.helm, self.rows[s])

    def pos_weight(self) -> torch.Tensor:
        """``n_neg / n_pos`` per trait on the train split (class weighting)."""
        self.setup()
        y = self.tables["train"].labels
        pos = np.nansum(y == 1, axis=0)
        neg = np.nansum(y == 0, axis=0)
        if (pos == 0).any():
            t = self.helm.cfg.traits[int(np.flatnonzero(pos == 0)[0])]
            raise SpirolmInputError("no cases of this trait in the train split", field=t)
        return torch.tensor(neg / pos, dtype=torch.float32)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        ds = HeLMDataset(self.tables[split])
        gen = torch.Generator().manual_seed(self.seed)
        return DataLoader(ds, batch_size=self.batch_size, shuffle=shuffle, collate_fn=ds.collate, generator=gen)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)


def load_embedding_frame(embeddings: str | Path | pd.DataFrame | None) -> pd.DataFrame | None:
    """Embeddings from a Parquet path (validated by :func:`experiments.features.load_embeddings`) or a frame."""
    if embeddings is None or isinstance(embeddings, pd.DataFrame):
        return embeddings
    return load_embeddings(embeddings)
