"""Best blows → checked encoder input curves, streamed from ``blows.parquet``.

Why stream the blows file (column projection, row batches): it is the largest table of a cohort, and
every consumer (encoder training, embedding, explanations) needs one blow per participant. Every
column relied on is checked here, and a problem names the file, participant and column.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from biobank.cohort_io import BLOWS_FILE
from experiments.data.participants import read_participants
from signals.curves import curves_batch
from signals.encoder import EncoderConfig, check_curves
from signals.errors import SpirolmInputError


@dataclass(frozen=True)
class CurveTable:
    """Best-blow curves of the usable participants, with labels and splits.

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


def _blows_file(cohort_dir: Path) -> Path:
    path = Path(cohort_dir) / BLOWS_FILE
    if not path.is_file():
        raise SpirolmInputError(f"cohort file is missing (expected {BLOWS_FILE} in {cohort_dir})", file=path)
    return path


def _require_columns(path: Path, present: Sequence[str], needed: Sequence[str]) -> None:
    missing = [c for c in needed if c not in present]
    if missing:
        raise SpirolmInputError(f"missing column(s) {missing}", file=path, field=missing[0])


def build_curves(volumes: Sequence[object], eids: np.ndarray, cfg: EncoderConfig, *, file: Path | None = None) -> np.ndarray:
    """Volume series -> checked ``(n, C, T)`` float32 curves of ``cfg``'s channels.

    Raises:
        SpirolmInputError: a bad volume series or a non-finite curve, naming the participant and file.
    """
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
    path = _blows_file(cohort_dir)
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
    """Every usable participant must have exactly one best blow; name the first that has none.

    Cheap (reads two small columns) so ``embed`` can fail before writing anything.
    """
    path = _blows_file(cohort_dir)
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


def best_curves(cohort_dir: Path, eids: np.ndarray, cfg: EncoderConfig) -> np.ndarray:
    """``(n, C, T)`` best-blow curves of ``eids``, in that order.

    Raises:
        SpirolmInputError: a participant without a best blow (e.g. QC failure), or bad curves.
    """
    eids = np.asarray(eids, dtype=np.int64)
    if len(eids) == 0:
        return np.zeros((0, cfg.in_channels, cfg.curve_points), np.float32)
    path = Path(cohort_dir) / BLOWS_FILE
    got_e, got_c = [], []
    for batch_eids, volumes in iter_best_blows(cohort_dir, eids, batch_size=4096):
        got_e.append(batch_eids)
        got_c.append(build_curves(volumes, batch_eids, cfg, file=path))
    found = np.concatenate(got_e) if got_e else np.zeros(0, np.int64)
    pos = pd.Index(found).get_indexer(eids)
    if (pos < 0).any():
        raise SpirolmInputError("participant has no QC-passing best blow, so no spirogram model can score them; "
                                "leave QC-failed participants out", file=path, eid=int(eids[pos < 0][0]),
                                field="is_best")
    return np.concatenate(got_c)[pos]


def load_curve_table(cohort_dir: Path, channels: Sequence[str] = ("flow_volume",),
                     traits: Sequence[str] | None = None) -> CurveTable:
    """Best-blow curves, labels and splits of every usable participant.

    Args:
        cohort_dir: cohort directory (docs/design.md).
        channels: curve channels to build (see ``signals.encoder.KNOWN_CHANNELS``).
        traits: trait columns, or ``None`` for the cohort's.
    """
    participants, traits = read_participants(cohort_dir, traits, usable_only=True)
    cfg = EncoderConfig(channels=tuple(channels), traits=traits)  # only channels/length are used
    eids = participants["eid"].to_numpy(dtype=np.int64)
    check_best_blow_coverage(cohort_dir, eids)
    curves = best_curves(cohort_dir, eids, cfg)
    labels = participants[list(traits)].to_numpy(dtype=np.float32)
    return CurveTable(eids, curves, labels, participants["split"].to_numpy(dtype=str), tuple(traits))
