"""HeLM training settings and the names of the HeLM paper's comparison rows.

The architecture is :class:`llm_bridge.model.HeLMConfig`; this is how it is trained and on whom.
Defaults are the values the default profile runs with (sized for 2 CPU cores); a profile or user
file lists only what it changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from experiments.common.config_io import STRICT
from experiments.common.lightning import DistributedConfig
from signals.errors import SpirolmInputError

#: Comparison rows, named as in the results table.
ROW_ZERO_SHOT = "helm:text-zero-shot"
ROW_FEW_SHOT = "helm:text-few-shot"
ROW_PROMPT_TUNED = "helm:text-prompt-tuned"
ROW_TEXT_SPIRO = "helm:text+spiro"
ROW_TABMLP_SPIRO = "helm:tabmlp+spiro"
ALL_ROWS = (ROW_ZERO_SHOT, ROW_FEW_SHOT, ROW_PROMPT_TUNED, ROW_TEXT_SPIRO, ROW_TABMLP_SPIRO)
UNTRAINED_ROWS = (ROW_ZERO_SHOT, ROW_FEW_SHOT)
TRAINED_ROWS = {ROW_PROMPT_TUNED: "text", ROW_TEXT_SPIRO: "text+spiro", ROW_TABMLP_SPIRO: "tabmlp+spiro"}


#: Suffix of a trained row's risks before its validation-fitted calibration (reported next to it).
UNCALIBRATED_SUFFIX = "-uncalibrated"


def uncalibrated_row(row: str) -> str:
    """The comparison row of ``row``'s risks before calibration."""
    return row + UNCALIBRATED_SUFFIX


def row_slug(row: str) -> str:
    """File-name form of a row name: ``helm:text+spiro`` -> ``helm_text_spiro``."""
    return row.replace(":", "_").replace("+", "_")


def row_for_variant(variant: str) -> str:
    """The comparison row a trained variant fills (``text`` is the prompt-tuned row)."""
    return next(row for row, v in TRAINED_ROWS.items() if v == variant)


@dataclass(frozen=True)
class HeLMTrainConfig:
    """Who HeLM trains and is scored on, and how it is optimised.

    Attributes:
        max_train: training participants (seeded subsample of the train split; None = all).
        max_val: validation participants scored after every epoch to keep the best one, then used to fit
            the risk calibrators (None = all).
        max_eval: test participants every row scores (seeded subsample; None = the whole test split).
        max_epochs, batch_size, lr, weight_decay: AdamW optimisation of the trainable parts.
        distill_weight: weight of distilling a logistic-regression probe of the train split's
            embeddings into the LLM's yes-minus-no logit (spirogram variants); 0 = labels only.
        class_weight: ``balanced`` (cases weighted n_neg/n_pos per trait) or ``none``.
        use_prefix_cache: train through the no-grad text-prefix KV cache.
        kv_store_gb: memory for per-participant prefix KV across epochs (0 = recompute every epoch).
        gradient_checkpointing: recompute LLM activations in backward (full-sequence / LoRA path).
        precision: the LLM's compute precision (:mod:`llm_bridge.precision`): ``auto`` = bf16 autocast
            where bf16 is native (AVX-512 BF16 CPUs, GPUs), else fp32; training and scoring of the trained rows.
        untrained_precision: the same for the untrained text rows (zero- and few-shot). fp32: their risks
            differ between participants by less than bf16 rounding, so bf16 reorders them (measured on a
            validation slice by ``benchmarks/bench_cpu_speed.py``).
        prompt_tuning_tokens: soft-prompt length of the prompt-tuned text-only row.
        few_shot_k: in-context examples of the few-shot row (balanced cases and controls).
        score_batch_size: participants per inference forward.
        num_threads: torch CPU threads (None: the cores this process may use).
        log_mlflow: log each trained row's params, metrics and checkpoint as an MLflow run.
        distributed: accelerator, devices, nodes and Lightning strategy of the training.
    """

    __pydantic_config__ = STRICT
    max_train: int | None = 160
    max_val: int | None = 512  # enough cases (~30 COPD) to choose the epoch and fit the calibrators
    max_eval: int | None = 192
    max_epochs: int = 2
    batch_size: int = 8  # the projector is small and cost is per participant: more, noisier steps win
    lr: float = 1e-3  # chosen on validation with probe+features (benchmarks/results/helm_selection.md)
    weight_decay: float = 0.0
    distill_weight: float = 1.0
    class_weight: Literal["balanced", "none"] = "balanced"
    use_prefix_cache: bool = True
    kv_store_gb: float = 3.0
    gradient_checkpointing: bool = False
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    untrained_precision: Literal["auto", "fp32", "bf16"] = "fp32"
    prompt_tuning_tokens: int = 8
    few_shot_k: int = 4
    score_batch_size: int = 16
    num_threads: int | None = None
    log_mlflow: bool = True
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def __post_init__(self) -> None:
        if self.class_weight not in ("balanced", "none"):
            raise SpirolmInputError("class_weight must be 'balanced' or 'none'", field="class_weight")
        if self.max_epochs < 1 or self.batch_size < 1 or self.score_batch_size < 1:
            raise SpirolmInputError("max_epochs, batch_size and score_batch_size must be >= 1", field="max_epochs")
        for name in ("max_train", "max_val", "max_eval"):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise SpirolmInputError(f"{name} must be >= 2 (or null for no cap), got {value}", field=name)
        if self.kv_store_gb < 0:
            raise SpirolmInputError("kv_store_gb must be >= 0", field="kv_store_gb")

    @property
    def kv_store_bytes(self) -> int:
        """:attr:`kv_store_gb` in bytes."""
        return int(self.kv_store_gb * (1 << 30))
