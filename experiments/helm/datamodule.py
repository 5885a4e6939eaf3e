"""HeLM inputs: participants + spirogram embeddings + pre-tokenized text prefixes, per split.

Why pre-tokenize: the record text of a participant never changes, so its prefix ids are computed
once (batched, in Rust) when the datamodule is set up; batches only pad them. The participant id
travels with every batch so the prefix KV store can be keyed by it and predictions by eid.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from biobank.splits import SPLITS
from experiments.common.lightning import per_device_batch, train_sampler
from experiments.data.embeddings import EMBEDDING_COLUMNS
from experiments.data.participants import subsample
from llm_bridge.model import HeLM
from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)


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


def build_table(helm: HeLM, rows: pd.DataFrame, *, after_shared: bool = False) -> HeLMTable:
    """Serialize, tokenize and stack one set of participants for ``helm``.

    ``after_shared``: their prompts continue a shared block (few-shot examples) scored from its cache.
    """
    emb = rows[list(EMBEDDING_COLUMNS)].to_numpy(dtype=np.float32) if helm.cfg.uses_spiro else None
    if emb is not None and not np.isfinite(emb).all():
        bad = ~np.isfinite(emb).all(axis=1)
        raise SpirolmInputError("non-finite spirogram embedding", eid=rows.loc[bad, "eid"].iloc[0], field="emb_*")
    return HeLMTable(
        eids=rows["eid"].to_numpy(dtype=np.int64),
        prefix_ids=helm.prefix_ids(rows, after_shared=after_shared),
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
        rows["train"] = subsample(rows["train"], max_train, seed)
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
        """Training: seeded shuffling split over the processes; evaluation: every process sees the whole
        split (the synced AUROC over duplicates is unchanged)."""
        self.setup()
        ds = HeLMDataset(self.tables[split])
        trainer = getattr(self, "trainer", None)
        if not shuffle:
            return DataLoader(ds, batch_size=self.batch_size, shuffle=False, collate_fn=ds.collate)
        batch = per_device_batch(self.batch_size, trainer) if trainer is not None else self.batch_size
        return DataLoader(ds, batch_size=batch, sampler=train_sampler(ds, trainer, self.seed), collate_fn=ds.collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)
