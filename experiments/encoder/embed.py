"""Curves → penultimate embeddings: the one batch loop, and the cohort's embedding file.

Why one function for the loop: training exports, explanations and batch scoring all turn curves into
embeddings, and they must agree to the bit (same batching, same dtype handling, same device rules).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from biobank.cohort_io import BLOWS_FILE
from experiments.data.curves import build_curves, check_best_blow_coverage, iter_best_blows
from experiments.data.embeddings import embedding_columns
from experiments.data.participants import read_participants
from experiments.encoder.export import load_encoder
from signals.encoder import SpiroEncoder
from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cpu`` / ``cuda`` as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def encode_curves(net: SpiroEncoder, curves: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """``(n, C, T)`` curves → ``(n, E)`` float32 embeddings, on the network's device, no gradients.

    On CUDA the forward runs under bf16 autocast (the encoder trains in bf16-mixed there); on CPU in fp32.
    """
    if batch_size < 1:
        raise SpirolmInputError(f"batch_size must be >= 1, got {batch_size}", field="batch_size")
    device = net.input_mean.device
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    out = []
    with torch.no_grad(), autocast:
        for start in range(0, len(curves), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(curves[start:start + batch_size])).to(device)
            out.append(net.encode(x).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, net.cfg.embedding_dim), np.float32)


def embed_cohort(
    model_ref: str | Path,
    cohort_dir: str | Path,
    out_path: str | Path,
    batch_size: int = 1024,
    progress: bool | None = True,
    device: str = "auto",
) -> Path:
    """Write ``eid`` + ``emb_000..`` (float32) for every participant with a usable spirogram.

    Streams ``blows.parquet`` in row batches and writes Parquet row groups as it goes (to a temporary
    file, renamed at the end, so a failure never leaves a half-written table behind).

    Args:
        model_ref: see :func:`experiments.encoder.export.load_encoder`.
        cohort_dir: cohort directory.
        out_path: output ``.parquet``.
        batch_size: curves per forward pass.
        progress: tqdm bar (``None``: only on a terminal).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.

    Returns:
        ``out_path``.

    Raises:
        SpirolmInputError: bad model reference, a usable participant without a best blow, bad curves.
    """
    if batch_size < 1:
        raise SpirolmInputError(f"batch_size must be >= 1, got {batch_size}", field="batch_size")
    net = load_encoder(model_ref, map_location="cpu").to(resolve_device(device))
    cohort_dir, out_path = Path(cohort_dir), Path(out_path)
    participants, _ = read_participants(cohort_dir, traits=(), usable_only=True)
    eids = participants["eid"].to_numpy(dtype=np.int64)
    check_best_blow_coverage(cohort_dir, eids)
    cols = embedding_columns(net.cfg.embedding_dim)
    schema = pa.schema([("eid", pa.int64())] + [(c, pa.float32()) for c in cols])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".partial")
    written = 0
    blows_file = cohort_dir / BLOWS_FILE
    try:
        with pq.ParquetWriter(tmp, schema) as writer, tqdm(total=len(eids), unit="participant", desc="embed",
                                                           disable=None if progress is None else not progress) as bar:
            for batch_eids, volumes in iter_best_blows(cohort_dir, eids, batch_size=batch_size):
                curves = build_curves(volumes, batch_eids, net.cfg, file=blows_file)
                emb = encode_curves(net, curves, batch_size)
                table = pa.Table.from_arrays([pa.array(batch_eids)] + [pa.array(emb[:, j]) for j in range(emb.shape[1])],
                                             schema=schema)
                writer.write_table(table)
                written += len(batch_eids)
                bar.update(len(batch_eids))
        if written != len(eids):  # coverage was checked up front; this guards the streaming logic
            raise SpirolmInputError(f"embedded {written} participants but {len(eids)} passed QC", file=blows_file)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("embedded %d participants -> %s", written, out_path)
    return out_path
