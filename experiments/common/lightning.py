"""Where a Lightning training runs: accelerator, devices, nodes and strategy, shared by every trainer.

Why one place: the encoder and HeLM trainers must mean the same thing by ``devices: 4`` or
``strategy: ddp``, and both must be correct under data parallelism: every process sees its own slice of
each global batch (a :class:`~torch.utils.data.DistributedSampler` that, with one process, draws exactly
the same batches), metrics are synced across processes, and only global rank 0 writes files. The
per-device batch is the configured batch divided by the world size, so one process and ``N`` processes
take the same optimisation steps up to float noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import Dataset, DistributedSampler

from experiments.common.config_io import STRICT
from signals.errors import SpirolmInputError


@dataclass(frozen=True)
class DistributedConfig:
    """Lightning's ``accelerator`` / ``devices`` / ``num_nodes`` / ``strategy``.

    ``strategy`` is any Lightning strategy name: ``auto`` (one process), ``ddp`` (one process per
    device; on CPU over gloo), ``ddp_spawn``, ``fsdp``, ... With a multi-process strategy every process
    runs the training; only global rank 0 continues to scoring and writes files.
    """

    __pydantic_config__ = STRICT
    accelerator: Literal["auto", "cpu", "cuda", "gpu"] = "auto"  # auto: CUDA when available
    devices: int = 1  # per node: GPUs, or CPU processes with ddp
    num_nodes: int = 1
    strategy: str = "auto"

    def __post_init__(self) -> None:
        if self.devices < 1 or self.num_nodes < 1:
            raise SpirolmInputError("devices and num_nodes must be >= 1", field="devices")

    @property
    def cuda(self) -> bool:
        """Whether training runs on CUDA devices."""
        return torch.cuda.is_available() and self.accelerator in ("auto", "cuda", "gpu")

    def trainer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``lightning.Trainer`` for this placement."""
        return {"accelerator": "gpu" if self.cuda else "cpu", "devices": self.devices, "num_nodes": self.num_nodes,
                "strategy": self.strategy, "use_distributed_sampler": False}


def per_device_batch(batch_size: int, trainer: L.Trainer) -> int:
    """The per-process batch that makes ``batch_size`` the global batch.

    Raises:
        SpirolmInputError: ``batch_size`` does not split evenly over the processes.
    """
    world = trainer.world_size
    if batch_size % world:
        raise SpirolmInputError(f"batch size {batch_size} does not split over {world} processes", field="batch_size")
    return batch_size // world


def train_sampler(dataset: Dataset, trainer: L.Trainer | None, seed: int) -> DistributedSampler:
    """Seeded shuffling that gives one process and ``N`` processes the same global batches.

    Rank ``r`` of ``N`` takes every ``N``-th index of one seeded permutation, so the union of the ranks'
    ``k``-th batches is the single process's ``k``-th batch. Lightning sets the epoch on it.
    """
    world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
    return DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=False)


class SecondaryRank(SystemExit):
    """Ends a non-zero global rank once its share of a multi-process training is done.

    Why an exit and not a return value: with a multi-process strategy every process runs the same
    command; the others took part in fitting, validation and testing, but only rank 0 may write the
    model, score and go on to later pipeline stages. Exit status 0: nothing went wrong.
    """

    def __init__(self) -> None:
        super().__init__(0)


def stop_unless_global_zero(trainer: L.Trainer) -> None:
    """Raise :class:`SecondaryRank` on every process but global rank 0."""
    if trainer.global_rank != 0:
        raise SecondaryRank()
