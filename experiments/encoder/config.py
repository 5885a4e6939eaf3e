"""Training settings of the spirogram encoder (the ``encoder`` section of the run config).

The architecture is :class:`signals.encoder.EncoderConfig` itself, nested as ``model``; its ``traits``
come from the run (``RunConfig.traits`` or the cohort), never from this section. Defaults here are the
values the default profile trains with; a profile or user file lists only what it changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from experiments.common.config_io import STRICT
from experiments.common.lightning import DistributedConfig
from signals.encoder import EncoderConfig


@dataclass(frozen=True)
class EncoderDataConfig:
    """How the curves are batched."""

    __pydantic_config__ = STRICT
    batch_size: int = 256
    eval_batch_size: int = 1024
    num_workers: int = 0  # in-memory tensors: worker processes only add overhead


@dataclass(frozen=True)
class EncoderOptimConfig:
    """AdamW + halve-on-plateau."""

    __pydantic_config__ = STRICT
    lr: float = 3e-3
    weight_decay: float = 1e-4  # decoupled decay: the AdamW form of the paper's L2 kernel penalty
    pos_weight: bool = False  # true: BCE pos_weight = neg/pos of the train split, per trait
    lr_patience: int = 2  # epochs without val-loss improvement before the LR is halved


@dataclass(frozen=True)
class EncoderTrainerConfig:
    """Lightning Trainer settings."""

    __pydantic_config__ = STRICT
    max_epochs: int = 25
    patience: int = 5  # early stopping on val/loss
    precision: str = "auto"  # auto: bf16-mixed on CUDA, 32-true on CPU
    compile: bool = False  # torch.compile the network (pays off on a GPU, not on 2 CPU cores)
    fast_dev_run: bool = False
    limit_train_batches: float = 1.0
    threads: int | None = None  # torch CPU threads; None = torch's default


@dataclass(frozen=True)
class EncoderTrainConfig:
    """Everything encoder training needs besides the cohort, the traits, the seed and where to write."""

    __pydantic_config__ = STRICT
    enabled: bool = True  # the main job's encoder stage (off: no embeddings, no spirogram models)
    model: EncoderConfig = field(default_factory=EncoderConfig)
    data: EncoderDataConfig = field(default_factory=EncoderDataConfig)
    optim: EncoderOptimConfig = field(default_factory=EncoderOptimConfig)
    trainer: EncoderTrainerConfig = field(default_factory=EncoderTrainerConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    log_mlflow: bool = True  # params, per-epoch metrics, the best checkpoint and the export
