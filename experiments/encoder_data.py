"""Cohort Parquet -> encoder tensors: best-blow curves, trait labels, splits, train-only scaling.

Why read Parquet directly (column projection) instead of loading the whole cohort: the encoder needs
four participant columns and one blow column, and ``blows.parquet`` is the largest file of a cohort;
``embed`` streams it in row batches. Every column we rely on is checked here, and a problem names
the file, participant and column (docs/design.md conventions).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, TensorDataset

from signals.encoder import EncoderConfig, check_curves
from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)

PARTICIPANTS = "participants.parquet"
BLOWS = "blows.parquet"
SPLITS = ("train", "val", "test")

@dataclass(frozen=True)
class CurveTable:
    """Best-blow curves of the QC-passing participants, with labels and splits.

    Attributes:
        eids: ``(n,)`` int64.
        curves: ``(n, C, T)`` float32, raw (unscaled).
        labels: ``(n, K)`` float32, NaN where missing, columns in ``traits`` order.
        split: ``(n,)`` str, one of train/val/test.
        traits: trait names.
    """

    eids: np.ndarray
    curves: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    traits: tuple[str, ...]

    def subset(self, name: str) -> CurveTable:
        """Rows of one split."""
        m = self.split == name
        return CurveTable(self.eids[m], self.curves[m], self.labels[m], self.split[m], self.traits)


# ----------------------------------------------------------------------------------------------
# Reading the cohort


def _file(cohort_dir: Path, name: str) -> Path:
    path = Path(cohort_dir) / name
    if not path.is_file():
        raise SpirolmInputError(f"cohort file is missing (expected {name} in {cohort_dir})", file=path)
    return path


def _require_columns(path: Path, present: Sequence[str], needed: Sequence[str]) -> None:
    missing = [c for c in needed if c not in present]
    if missing:
        raise SpirolmInputError(f"missing column(s) {missing}", file=path, field=missing[0])


def read_participants(cohort_dir: Path, traits: Sequence[str] | None) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """QC-passing participants (``qc_status != "fail"``) with eid, split and trait columns.

    Loads and validates ``participants.parquet`` with :func:`biobank.cohort_io.read_cohort` (no blows),
    so unit, label and split problems are reported by the cohort schema, naming eid and column.

    Args:
        cohort_dir: the cohort directory.
        traits: trait columns to use, or ``None`` for the cohort's traits (``cohort.json``, else its
            0/1 ``Int8`` columns) - i.e. COPD, asthma and any other trait present.

    Returns:
        ``(participants[eid, split, *traits] with float32 labels (NaN = missing), traits)``.

    Raises:
        SpirolmInputError: missing file or column, schema failure, or no trait columns.
    """
    from biobank.cohort_io import read_cohort

    cohort = read_cohort(cohort_dir, blows=False)
    path = Path(cohort_dir) / PARTICIPANTS
    traits = cohort.traits if traits is None else tuple(traits)
    _require_columns(path, list(cohort.participants.columns), ["eid", "qc_status", "split", *traits])
    df = cohort.participants
    df = df.loc[df["qc_status"].astype("string").fillna("") != "fail", ["eid", "split", *traits]].reset_index(drop=True)
    df["eid"] = df["eid"].astype("int64")
    for t in traits:
        df[t] = pd.to_numeric(df[t]).astype("Float64").to_numpy(dtype=np.float32, na_value=np.nan)
    df["split"] = df["split"].astype(str)
    return df, traits


def build_curves(volumes: Sequence[object], eids: np.ndarray, cfg: EncoderConfig, *, file: Path | None = None) -> np.ndarray:
    """Volume series -> checked ``(n, C, 1000)`` float32 curves via ``signals.curves.curves_batch``.

    Raises:
        SpirolmInputError: a bad volume series or a non-finite curve, naming the participant and file.
    """
    from signals.curves import curves_batch

    try:
        curves = curves_batch(volumes, channels=cfg.channels, n_points=cfg.curve_points,
                              eids=[int(e) for e in eids], field="volume_ml")
    except SpirolmInputError as exc:
        raise SpirolmInputError(exc.problem, file=file, eid=exc.eid, field=exc.field) from None
    curves = np.asarray(curves, dtype=np.float32)
    check_curves(curves, [int(e) for e in eids], cfg, file=file)
    return curves


def iter_best_blows(cohort_dir: Path, keep_eids: np.ndarray, batch_size: int = 1024) -> Iterator[tuple[np.ndarray, list[object]]]:
    """Stream ``(eids, volumes)`` of the best blows of ``keep_eids`` in file order, ``batch_size`` at a time.

    Raises:
        SpirolmInputError: missing columns or a participant with two best blows.
    """
    path = _file(cohort_dir, BLOWS)
    pf = pq.ParquetFile(path)
    _require_columns(path, pf.schema_arrow.names, ["eid", "is_best", "volume_ml"])
    keep = pd.Index(np.asarray(keep_eids, dtype=np.int64))
    seen: set[int] = set()
    buf_eids: list[np.ndarray] = []
    buf_vols: list[object] = []
    for batch in pf.iter_batches(batch_size=max(batch_size, 1024), columns=["eid", "is_best", "volume_ml"]):
        df = batch.to_pandas()
        best = df["is_best"].fillna(False).astype(bool) & df["eid"].isin(keep)
        if not best.any():
            continue
        df = df[best]
        eids = df["eid"].to_numpy(dtype=np.int64)
        for e in eids:
            if int(e) in seen:
                raise SpirolmInputError("participant has more than one best blow (is_best)", file=path, eid=int(e), field="is_best")
            seen.add(int(e))
        buf_eids.append(eids)
        buf_vols.extend(df["volume_ml"].tolist())
        while len(buf_vols) >= batch_size:  # re-batch: blows batches hold several blows per participant
            flat = np.concatenate(buf_eids)
            yield flat[:batch_size], buf_vols[:batch_size]
            buf_eids, buf_vols = [flat[batch_size:]], buf_vols[batch_size:]
    if buf_vols:
        yield np.concatenate(buf_eids), buf_vols


def check_best_blow_coverage(cohort_dir: Path, eids: np.ndarray) -> None:
    """Every QC-passing participant must have exactly one best blow; name the first that has none.

    Cheap (reads two small columns) so ``embed`` can fail before writing anything.
    """
    path = _file(cohort_dir, BLOWS)
    _require_columns(path, pq.read_schema(path).names, ["eid", "is_best"])
    blows = pd.read_parquet(path, columns=["eid", "is_best"])
    best = blows.loc[blows["is_best"].fillna(False).astype(bool), "eid"].astype("int64")
    dup = best[best.duplicated()]
    if len(dup):
        raise SpirolmInputError("participant has more than one best blow (is_best)", file=path, eid=int(dup.iloc[0]), field="is_best")
    missing = np.setdiff1d(np.asarray(eids, dtype=np.int64), best.to_numpy())
    if missing.size:
        raise SpirolmInputError(
            f"QC-passing participant has no best blow ({missing.size} participant(s) affected)",
            file=path, eid=int(missing[0]), field="is_best",
        )


def load_curve_table(
    cohort_dir: Path, channels: Sequence[str] = ("flow_volume",), traits: Sequence[str] | None = None
) -> CurveTable:
    """Best-blow curves, labels and splits of every QC-passing participant.

    Args:
        cohort_dir: cohort directory (docs/design.md).
        channels: curve channels to build (see ``signals.encoder.KNOWN_CHANNELS``).
        traits: trait columns, or ``None`` to detect them.
    """
    participants, traits = read_participants(cohort_dir, traits)
    cfg = EncoderConfig(channels=tuple(channels), traits=traits)  # only channels/length are used
    eids = participants["eid"].to_numpy(dtype=np.int64)
    check_best_blow_coverage(cohort_dir, eids)
    got_eids: list[np.ndarray] = []
    got_curves: list[np.ndarray] = []
    path = Path(cohort_dir) / BLOWS
    for batch_eids, volumes in iter_best_blows(cohort_dir, eids, batch_size=4096):
        got_eids.append(batch_eids)
        got_curves.append(build_curves(volumes, batch_eids, cfg, file=path))
    order = pd.Index(np.concatenate(got_eids)).get_indexer(eids)  # align curves with participants
    curves = np.concatenate(got_curves)[order]
    labels = participants[list(traits)].to_numpy(dtype=np.float32)
    return CurveTable(eids, curves, labels, participants["split"].to_numpy(dtype=str), tuple(traits))


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
                "drop the trait (--set data.traits=[...]) or use a larger cohort",
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
    """Train/val/test loaders of best-blow curves for :class:`~experiments.encoder_module.EncoderModule`.

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
        path = self.cohort_dir / PARTICIPANTS
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
        # A seeded generator: the shuffling order depends on the seed only (determinism test).
        gen = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            self.dataset(split), batch_size=self.batch_size if shuffle else self.eval_batch_size, shuffle=shuffle,
            generator=gen, num_workers=self.num_workers, drop_last=False,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
