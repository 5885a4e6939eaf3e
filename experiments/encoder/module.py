"""The Lightning wrapper that trains :class:`signals.encoder.SpiroEncoder` as a multi-trait classifier.

Lightning-template style (ashleve/lightning-hydra-template): the network is a plain ``nn.Module``
built from a config dict; one shared :meth:`EncoderModule.model_step` feeds train/val/test steps;
torchmetrics objects are kept separately per split and per trait and logged as
``<split>/auroc_<trait>``, ``<split>/auprc_<trait>`` and ``<split>/loss``.

Hooks implemented: ``setup`` (optional ``torch.compile``), ``training_step``, ``validation_step``,
``test_step``, ``predict_step``, ``on_{train,validation,test}_epoch_end``, ``configure_optimizers``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import lightning as L
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision

from biobank.splits import SPLITS
from signals.encoder import EncoderConfig, SpiroEncoder

log = logging.getLogger(__name__)


class EncoderModule(L.LightningModule):
    """Multi-task BCE training of the spirogram encoder with masked (missing) labels.

    Args:
        model: :class:`EncoderConfig` as a dict (``EncoderConfig.to_dict()``), so the hyperparameters in
            a Lightning checkpoint are plain JSON types and load with ``weights_only=True``.
        input_mean, input_std: per-channel train-split scaling, stored as buffers in the network.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay (the paper uses a 1e-7 L2 kernel penalty; decoupled decay is
            the PyTorch equivalent that does not interact with Adam's scaling).
        pos_weight: optional per-trait BCE positive weights (neg/pos on train).
        lr_patience: epochs without val-loss improvement before the LR is halved.
        compile: wrap the network in ``torch.compile`` (helps on GPU; usually not on 2 CPU cores).
    """

    def __init__(
        self,
        model: dict,
        input_mean: Sequence[float] | None = None,
        input_std: Sequence[float] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        pos_weight: Sequence[float] | None = None,
        lr_patience: int = 2,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.cfg = EncoderConfig.from_dict(dict(model))
        self.net = SpiroEncoder(self.cfg)
        if input_mean is not None and input_std is not None:
            self.net.set_scaling(input_mean, input_std)
        pw = None if pos_weight is None else torch.tensor(list(pos_weight), dtype=torch.float32)
        self.register_buffer("pos_weight", pw, persistent=False)
        # One metric collection per split and trait; keys come out as "val/auroc_copd". (ModuleDict keys
        # get a suffix because "train" would clash with nn.Module.train.)
        self.metrics = nn.ModuleDict({
            f"{split}_metrics": nn.ModuleDict({
                trait: MetricCollection(
                    {"auroc": BinaryAUROC(), "auprc": BinaryAveragePrecision()}, prefix=f"{split}/", postfix=f"_{trait}"
                )
                for trait in self.cfg.traits
            })
            for split in SPLITS
        })
        self._updates = {split: dict.fromkeys(self.cfg.traits, 0) for split in SPLITS}
        self._compiled = False

    # -- steps ---------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        # setup runs for fit, validate and test; compile once. In place: state_dict keys stay unprefixed.
        if self.hparams.compile and not self._compiled:
            self.net.compile()
            self._compiled = True

    def forward(self, curves: torch.Tensor) -> torch.Tensor:
        """Raw curves ``(B, C, T)`` -> per-trait probabilities ``(B, K)``."""
        logits, _ = self.net(curves)
        return torch.sigmoid(logits.float())

    def model_step(self, batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Shared by train/val/test: ``(loss, logits (B, K) float32, labels (B, K) with NaN)``."""
        curves, labels, _eid = batch
        logits, loss = self.net(curves, labels, self.pos_weight)
        return loss, logits.float(), labels

    def _update_metrics(self, split: str, logits: torch.Tensor, labels: torch.Tensor) -> None:
        probs = torch.sigmoid(logits.detach())
        for k, trait in enumerate(self.cfg.traits):
            seen = ~torch.isnan(labels[:, k])
            if seen.any():
                self.metrics[f"{split}_metrics"][trait].update(probs[seen, k], labels[seen, k].long())
                self._updates[split][trait] += 1

    def _step(self, split: str, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        loss, logits, labels = self.model_step(batch)
        self._update_metrics(split, logits, labels)
        self.log(f"{split}/loss", loss, on_step=False, on_epoch=True, prog_bar=split != "test", batch_size=labels.shape[0],
                 sync_dist=True)
        return loss

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step("train", batch)

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        self._step("val", batch)

    def test_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        self._step("test", batch)

    def predict_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(eid (B,), probabilities (B, K))`` for writing predictions keyed by participant."""
        curves, _labels, eid = batch
        return eid, self(curves)

    # -- epoch ends ----------------------------------------------------------------------------

    def _log_epoch_metrics(self, split: str) -> None:
        for trait in self.cfg.traits:
            coll = self.metrics[f"{split}_metrics"][trait]
            if self._updates[split][trait]:
                self.log_dict(coll.compute(), prog_bar=split == "val" and trait == self.cfg.traits[0])
            coll.reset()
            self._updates[split][trait] = 0

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    # -- optimisation --------------------------------------------------------------------------

    def configure_optimizers(self) -> dict:
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=self.hparams.lr_patience)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val/loss"}}
