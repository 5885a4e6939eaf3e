"""The Ray Data engine of :func:`experiments.serve.scoring.score_cohort`: the same chunks, scored by actors.

Why Ray Data: it is how scoring goes beyond one machine. Each pending chunk (its participant ids) is one
row of a ``ray.data`` dataset; ``map_batches`` runs a pool of :class:`ChunkScorer` actors that each load
the HeLM pyfunc once (with a GPU when the cluster has one) and score whole chunks, reading the chunk's
participants and blows themselves (:func:`experiments.serve.chunks.chunk_input`) - so the driver never holds
cohort data. Scored rows stream back to the driver, which writes the shards and the manifest exactly as the
local engine does, so shards from the two engines are interchangeable and a run may resume on either.

Cluster: ``address`` (``--ray-address``) or ``RAY_ADDRESS`` joins an existing cluster; otherwise a local
instance is started with the cores of this machine. On a remote cluster the cohort directory and the model
directory must be readable at the same path on every node (shared filesystem); the output is written by
the driver only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch

from experiments.serve.chunks import ScoreConfig, chunk_input
from experiments.serve.pyfunc import model_config
from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)


class ChunkScorer:
    """Ray actor: loads the pyfunc once, scores one chunk per call.

    Args:
        model_dir: local MLflow model directory (same path on every node).
        cohort_dir: cohort directory (same path on every node).
        model_config: the pyfunc's runtime options (batch size, device, precision, threads).
    """

    def __init__(self, model_dir: str, cohort_dir: str, model_config: dict[str, Any]) -> None:
        self.cohort_dir = Path(cohort_dir)
        self.model = mlflow.pyfunc.load_model(model_dir, model_config=model_config)

    def __call__(self, batch: dict[str, np.ndarray]) -> pd.DataFrame:
        frames = []
        for chunk, eids in zip(batch["chunk"], batch["eids"]):
            scored = self.model.predict(chunk_input(self.cohort_dir, np.asarray(eids, dtype=np.int64)))
            scored.insert(0, "chunk", int(chunk))
            frames.append(scored)
        return pd.concat(frames, ignore_index=True)


def _init_ray(cfg: ScoreConfig) -> bool:
    """Connect to / start Ray; returns whether this call started it (then we shut it down)."""
    import ray  # noqa: PLC0415 - the optional Ray engine; ray is slow to import

    if ray.is_initialized():
        return False
    address = cfg.ray_address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                     object_store_memory=256 * 1024 * 1024)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local instance"
        raise SpirolmInputError(f"cannot start or join the Ray cluster ({where}): {str(exc).splitlines()[0]}",
                                field="ray_address") from None
    return True


def score_chunks_ray(model_dir: Path, cohort_dir: Path, chunks: list[tuple[int, np.ndarray]],
                     cfg: ScoreConfig) -> Iterator[tuple[int, pd.DataFrame]]:
    """Score ``chunks`` on Ray; yields ``(chunk index, scored rows)`` as each chunk completes (any order).

    A chunk's rows may arrive split over several Ray blocks; they are gathered until the chunk is whole.
    """
    import ray  # noqa: PLC0415 - the optional Ray engine; ray is slow to import

    started = _init_ray(cfg)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the driver shows one bar over chunks
        gpus = 1 if torch.cuda.is_available() else 0
        cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        workers = cfg.ray_workers or max(1, min(len(chunks), cluster_cpus // max(1, 2 * cfg.ray_cpus_per_worker) or 1))
        if gpus:
            workers = min(workers, max(1, int(ray.cluster_resources().get("GPU", 1))))
        mc = model_config({"batch_size": cfg.batch_size, "device": cfg.device, "precision": cfg.precision,
                           "num_threads": cfg.ray_cpus_per_worker, "progress": False})
        log.info("Ray engine: %d actor(s), %d CPU(s) each, %d GPU(s) each", workers, cfg.ray_cpus_per_worker, gpus)
        items = [{"chunk": i, "eids": [int(e) for e in eids]} for i, eids in chunks]
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            ChunkScorer, fn_constructor_kwargs={"model_dir": str(model_dir), "cohort_dir": str(cohort_dir),
                                                "model_config": mc},
            batch_size=1, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=cfg.ray_cpus_per_worker,
            num_gpus=gpus)
        sizes = {i: len(eids) for i, eids in chunks}
        pending: dict[int, list[pd.DataFrame]] = {}
        for block in ds.iter_batches(batch_size=None, batch_format="pandas"):
            for chunk, rows in block.groupby("chunk", sort=False):
                i = int(chunk)
                pending.setdefault(i, []).append(rows.drop(columns="chunk"))
                if sum(len(r) for r in pending[i]) == sizes[i]:
                    yield i, pd.concat(pending.pop(i), ignore_index=True)
        if pending:
            raise RuntimeError(f"Ray returned incomplete chunk(s) {sorted(pending)[:5]}")
    finally:
        if started:
            ray.shutdown()
