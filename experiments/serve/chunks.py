"""How a cohort is cut into scoring chunks, and the input the pyfunc gets for one chunk.

Why its own module: both engines (the local loop in :mod:`experiments.serve.scoring` and the Ray actors
in :mod:`experiments.serve.ray_engine`) read chunks the same way, so shards from either are identical.
Chunk boundaries depend only on the cohort (participants sorted by ``eid``) and ``chunk_size``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from biobank.cohort_io import BLOWS_FILE, PARTICIPANTS_FILE
from biobank.schema import RECORD_COLUMNS
from experiments.serve.pyfunc import BLOWS_COLUMN, NUMERIC_COVARIATES, TEXT_COVARIATES
from llm_bridge import precision as P
from llm_bridge.llm import default_num_threads
from signals.errors import SpirolmInputError

ENGINES = ("local", "ray")
_BLOW_COLUMNS = ["eid", "instance", "blow_index", "volume_ml"]


@dataclass(frozen=True)
class ScoreConfig:
    """How to score (everything that changes the output bytes is part of the manifest settings).

    Attributes:
        chunk_size: participants per shard (the unit of resume and of memory).
        batch_size: participants per LLM forward pass (changes padding, hence the last bits of a risk).
        engine: ``local`` or ``ray``.
        ray_address: Ray cluster to join (else ``RAY_ADDRESS``, else a local instance).
        ray_workers: scoring actors (default: one per 2 CPUs of the cluster, at least 1).
        ray_cpus_per_worker: CPUs (and torch threads) per actor.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        precision: the LLM's compute precision (:mod:`llm_bridge.precision`: ``auto``, ``fp32``, ``bf16``);
            ``auto`` is bf16 where bf16 is native. It changes the bytes, so the manifest records it.
        num_threads: torch CPU threads of the local engine (None: the cores available). Thread count changes
            the last bits of a risk, so the manifest records it. For several single-thread processes on one
            machine use the Ray engine (benchmarks/results/cpu_speed.md compares both).
        overwrite: discard an existing result in ``out_dir`` made with other settings.
        progress: tqdm bar (None: only on a terminal).
    """

    chunk_size: int = 256
    batch_size: int = 16  # fastest on 2 CPU cores (benchmarks/results/cpu_speed.md)
    engine: str = "local"
    ray_address: str | None = None
    ray_workers: int | None = None
    ray_cpus_per_worker: int = 1
    device: str = "auto"
    precision: str = "auto"
    num_threads: int | None = None
    overwrite: bool = False
    progress: bool | None = None

    def __post_init__(self) -> None:
        if self.chunk_size < 1 or self.batch_size < 1:
            raise SpirolmInputError("chunk_size and batch_size must be >= 1", field="chunk_size")
        if self.num_threads is not None and self.num_threads < 1:
            raise SpirolmInputError("num_threads must be >= 1", field="num_threads")
        if self.engine not in ENGINES:
            raise SpirolmInputError(f"unknown engine {self.engine!r}; use local or ray", field="engine")
        P.resolve(self.precision)  # refuse an unknown name before any work
        if self.device not in ("auto", "cpu", "cuda"):
            raise SpirolmInputError(f"device must be auto, cpu or cuda, got {self.device!r}", field="device")

    @property
    def resolved_threads(self) -> int:
        """Torch threads of the local engine (``None`` resolved: the cores this process may use)."""
        return self.num_threads if self.num_threads is not None else default_num_threads()

    @property
    def resolved_precision(self) -> str:
        """The precision actually used (``auto`` resolved on this machine's device)."""
        return P.resolve(self.precision, self.device_type)

    @property
    def device_type(self) -> str:
        """The device actually used (``auto`` resolved)."""
        return ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device


def participant_order(cohort_dir: Path) -> np.ndarray:
    """Every participant id, sorted (the deterministic order that fixes chunk boundaries).

    Raises:
        SpirolmInputError: a duplicate or missing participant id.
    """
    path = cohort_dir / PARTICIPANTS_FILE
    try:
        eids = pq.read_table(path, columns=["eid"])["eid"].to_numpy(zero_copy_only=False)
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise SpirolmInputError(f"cannot read participant ids: {exc}", file=path, field="eid") from None
    eids = np.asarray(eids)
    if eids.dtype.kind not in "iu":
        raise SpirolmInputError("participant id column is not integer (or has missing values)", file=path, field="eid")
    eids = np.sort(eids.astype(np.int64))
    dup = eids[1:][eids[1:] == eids[:-1]]
    if dup.size:
        raise SpirolmInputError("participant appears twice in participants.parquet", file=path, eid=int(dup[0]),
                                field="eid")
    return eids


def chunk_bounds(n: int, chunk_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of every chunk."""
    return [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]


def chunk_input(cohort_dir: Path, eids: np.ndarray) -> pd.DataFrame:
    """The pyfunc input of one chunk: covariates + the baseline visit's blows, read with predicate pushdown.

    Only the chunk's rows are materialised (Parquet row groups whose eid statistics cannot match are
    skipped), so memory stays bounded by the chunk however large ``blows.parquet`` is.
    """
    eid_list = [int(e) for e in eids]
    p_path, b_path = cohort_dir / PARTICIPANTS_FILE, cohort_dir / BLOWS_FILE
    try:
        names = pq.read_schema(p_path).names
        cols = ["eid", *(c for c in RECORD_COLUMNS if c in names)]
        participants = pq.read_table(p_path, columns=cols, filters=[("eid", "in", eid_list)]).to_pandas()
        blows = pq.read_table(b_path, columns=_BLOW_COLUMNS, filters=[("eid", "in", eid_list)]).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise SpirolmInputError(f"unreadable cohort table (truncated or corrupt?): {exc}",
                                file=cohort_dir) from None
    blows = blows[blows["instance"] == 0].sort_values(["eid", "blow_index"], kind="stable")
    grouped = {int(e): list(g) for e, g in blows.groupby("eid", sort=False)["volume_ml"]}
    participants = participants.set_index("eid").reindex(eid_list).reset_index()
    for col in participants.columns:  # the model signature's types: float64 numbers, str/None text
        if col in NUMERIC_COVARIATES:
            participants[col] = pd.to_numeric(participants[col], errors="coerce").astype("float64")
        elif col in TEXT_COVARIATES:
            participants[col] = participants[col].astype(object).where(participants[col].notna(), None)
    participants[BLOWS_COLUMN] = [grouped.get(e, []) for e in eid_list]
    return participants
