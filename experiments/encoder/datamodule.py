"""Encoder training data: train/val/test loaders of best-blow curves, train-only scaling, label checks.

Why a LightningDataModule that can be set up early: the caller reads :attr:`EncoderDataModule.traits`,
:attr:`~EncoderDataModule.scaling` and :attr:`~EncoderDataModule.pos_weight` to build the model before
the Trainer runs (scaling is fitted on the train split only).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from biobank.cohort_io import PARTICIPANTS_FILE
from biobank.splits import SPLITS
from experiments.common.lightning import per_device_batch, train_sampler
from experiments.data.curves import CurveTable, load_curve_table
from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Scaling and label checks


def fit_scaling(train_curves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean/std over the train split (the paper scales each input column globally)."""
    mean = train_curves.mean(axis=(0, 2), dtype=np.float64)
    std = train_curves.std(axis=(0, 2), dtype=np.float64)
    std = np.where(std > 1e-8, std, 1.0)  # a constant channel stays unscaled rather than dividing by 0
    return mean.astype(np.float32), std.astype(np.float32)


def check_both_classes(table: CurveTable, split: str, file: Path) -> None:
    """Each trait needs positives and negatives in ``split``; otherwise AUROC is undefined and a head
    would only learn the constant. Raise naming the trait rather than logging a NaN metric."""
    for k, trait in enumerate(table.traits):
        y = table.labels[:, k]
        y = y[~np.isnan(y)]
        n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
        if n_pos == 0 or n_neg == 0:
            what = "positives" if n_pos == 0 else "negatives"
            raise SpirolmInputError(
                f"trait {trait!r} has no {what} in the {split} split ({n_pos} positive, {n_neg} negative labelled); "
                "restrict the run to other traits (config key traits: [...]) or use a larger cohort",
                file=file, field=trait,
            )


def positive_weights(train: CurveTable) -> np.ndarray:
    """neg/pos ratio per trait, for BCE ``pos_weight`` when classes are imbalanced."""
    y = train.labels
    pos = np.nansum(y == 1, axis=0).astype(np.float64)
    neg = np.nansum(y == 0, axis=0).astype(np.float64)
    return (neg / np.maximum(pos, 1.0)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# The DataModule


class EncoderDataModule(L.LightningDataModule):
    """Train/val/test loaders of best-blow curves for :class:`~experiments.encoder.module.EncoderModule`.

    ``setup`` is idempotent and can be called before the Trainer does, so the caller can read
    :attr:`traits`, :attr:`scaling` and :attr:`pos_weight` to build the model (scaling is fitted on
    the train split only).

    Batches are ``(curves (B, C, T) float32, labels (B, K) float32 with NaN, eid (B,) int64)``.
    """

    def __init__(
        self,
        cohort_dir: str | Path,
        channels: Sequence[str] = ("flow_volume",),
        traits: Sequence[str] | None = None,
        batch_size: int = 256,
        eval_batch_size: int = 1024,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.cohort_dir = Path(cohort_dir)
        self.channels = tuple(channels)
        self.requested_traits = None if traits is None else tuple(traits)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.table: CurveTable | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.table is not None:
            return
        table = load_curve_table(self.cohort_dir, channels=self.channels, traits=self.requested_traits)
        path = self.cohort_dir / PARTICIPANTS_FILE
        for split in ("train", "val"):
            if not (table.split == split).any():
                raise SpirolmInputError(f"no QC-passing participants in the {split} split", file=path, field="split")
            check_both_classes(table.subset(split), split, path)
        self.table = table
        log.info("encoder data: %d participants (%s), traits %s", len(table.eids),
                 ", ".join(f"{s}={int((table.split == s).sum())}" for s in SPLITS), table.traits)

    def _need(self) -> CurveTable:
        if self.table is None:
            raise RuntimeError("EncoderDataModule.setup() has not run")
        return self.table

    @property
    def traits(self) -> tuple[str, ...]:
        return self._need().traits

    @property
    def scaling(self) -> tuple[np.ndarray, np.ndarray]:
        return fit_scaling(self._need().subset("train").curves)

    @property
    def pos_weight(self) -> np.ndarray:
        return positive_weights(self._need().subset("train"))

    def dataset(self, split: str) -> TensorDataset:
        t = self._need().subset(split)
        return TensorDataset(torch.from_numpy(t.curves), torch.from_numpy(t.labels), torch.from_numpy(t.eids))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        """Training: seeded shuffling split over the processes (:func:`train_sampler`); evaluation: every
        process sees the whole split (metrics synced over duplicates are unchanged)."""
        ds = self.dataset(split)
        trainer = getattr(self, "trainer", None)
        if shuffle:
            sampler = train_sampler(ds, trainer, self.seed)
            batch = per_device_batch(self.batch_size, trainer) if trainer is not None else self.batch_size
        else:
            sampler, batch = None, self.eval_batch_size
        return DataLoader(ds, batch_size=batch, sampler=sampler, shuffle=False, num_workers=self.num_workers,
                          drop_last=False, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
