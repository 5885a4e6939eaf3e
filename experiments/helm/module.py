"""LightningModule for HeLM: answer-token cross-entropy, prefix-KV training path, per-split AUROC.

The network (:class:`llm_bridge.model.HeLM`) knows nothing about training; this module owns the
optimizer (trainable parameters only - asserted), the class weighting, the prefix KV store that
lives across epochs, and ``train/…``, ``val/…`` metrics. Lightning's own checkpointing is off: it
would save the frozen LLM; the best validation epoch's *trainable* weights are kept instead and
written by :func:`experiments.helm.train.train_variant` with the LLM identity.
"""

from __future__ import annotations

import copy
import logging

import lightning as L
import numpy as np
import torch
from torchmetrics.classification import BinaryAUROC

from llm_bridge.kv_cache import PrefixKVStore
from llm_bridge.model import HeLM
from llm_bridge.readout import risk

log = logging.getLogger(__name__)


class HeLMModule(L.LightningModule):
    """Hooks: ``training_step``, ``validation_step``, ``on_validation_epoch_end``, ``configure_optimizers``.

    Args:
        helm: the graft.
        lr, weight_decay: AdamW settings.
        pos_weight: ``(T,)`` case weights (None = unweighted).
        use_prefix_cache: train through the no-grad prefix KV cache (ignored under LoRA).
        kv_store_bytes: memory budget of the per-participant prefix store (0 = recompute each epoch).
        gradient_checkpointing: recompute LLM activations in backward (full-sequence path only).
        teacher: ``(weight (T, E), bias (T,))`` of a linear probe of the spirogram embedding (its
            logits are the distillation targets); distill_weight: weight of the distillation term,
            the mean squared difference between the LLM's yes-minus-no logit and the probe's logit.
            Why: a label says only yes or no, and with 10 % cases most participants of a small
            training set say "no" to every trait; the probe's logit grades every participant on
            every trait, so each step carries far more signal about where to write in token space.
        store: a prefix store shared with other runs on the same LLM, precision and prompt (a
            selection sweep computes every participant's prefix once); None: a new one of
            ``kv_store_bytes``.
    """

    def __init__(self, helm: HeLM, *, lr: float = 1e-3, weight_decay: float = 0.0,
                 pos_weight: torch.Tensor | None = None, use_prefix_cache: bool = True,
                 kv_store_bytes: int = 3 << 30, gradient_checkpointing: bool = False,
                 teacher: tuple[torch.Tensor, torch.Tensor] | None = None, distill_weight: float = 0.0,
                 store: PrefixKVStore | None = None) -> None:
        super().__init__()
        self.helm = helm
        self.lr, self.weight_decay = lr, weight_decay
        self.register_buffer("pos_weight", pos_weight if pos_weight is not None else torch.ones(len(helm.cfg.traits)))
        if distill_weight > 0 and teacher is None:
            raise ValueError("distill_weight > 0 needs a teacher probe")
        self.distill_weight = distill_weight
        self.teacher = teacher
        self.use_prefix_cache = use_prefix_cache and not helm.uses_lora
        if use_prefix_cache and helm.uses_lora:
            log.info("LoRA adapts the LLM, so the text prefix is not constant: training on full sequences")
        if store is None and self.use_prefix_cache and kv_store_bytes > 0:
            store = PrefixKVStore(kv_store_bytes)
        self.store = store if self.use_prefix_cache else None
        if gradient_checkpointing and not self.use_prefix_cache:
            self.helm.llm.gradient_checkpointing_enable()
        self.val_auroc = torch.nn.ModuleList([BinaryAUROC() for _ in helm.cfg.traits])
        self.best_score = float("-inf")
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch = -1
        self.best_val_risks: np.ndarray | None = None  # (N_val, T) risks of the kept epoch, in table order
        self._val_risks: list[torch.Tensor] = []

    def model_step(self, batch: dict, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, [no, yes] logits (B, T, 2))`` of one batch."""
        full_vocab = self.helm.cfg.answer_loss == "vocab"
        if self.use_prefix_cache:
            if self.store is not None:  # train and validation prefixes are computed once, then reused every epoch
                state = self.store.get(self.helm.encode_prefix, batch["eid"], batch["prefix_ids"], self.device)
            else:
                state = self.helm.encode_prefix(batch["prefix_ids"])
            out = self.helm.score_prefix(state, batch["embedding"], batch["tab"], eids=batch["eid"], full_vocab=full_vocab)
        else:
            out = self.helm.score_full(batch["prefix_ids"], batch["embedding"], batch["tab"], eids=batch["eid"],
                                       full_vocab=full_vocab)
        loss = self.helm.loss(out, batch["labels"], self.pos_weight, normalizer=self._normalizer(batch, train))
        pairs = self.helm._pairs(out) if full_vocab else out
        if self.distill_weight > 0 and self.teacher is not None and train:
            weight, bias = (t.to(pairs.device) for t in self.teacher)
            target = batch["embedding"].to(pairs.device).float() @ weight.T + bias  # (B, T) probe logits
            distill = ((pairs[..., 1] - pairs[..., 0]) - target).pow(2).mean()
            self.log("train/distill", distill, on_step=False, on_epoch=True, batch_size=len(batch["eid"]))
            loss = loss + self.distill_weight * distill
        return loss, pairs

    def _normalizer(self, batch: dict, train: bool) -> torch.Tensor | None:
        """Under data parallelism, the global batch's loss weight per process (None: this batch's own).

        Why: each process divides by the same total, so the average of the processes' gradients is the
        gradient one process would take on the whole batch.
        """
        world = self.trainer.world_size if self._trainer is not None else 1
        if not train or world == 1:
            return None
        local = self.helm.loss_weights(batch["labels"].to(self.device), self.pos_weight).sum()
        return self.all_gather(local).sum() / world

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _ = self.model_step(batch, train=True)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["eid"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, pairs = self.model_step(batch, train=False)
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=len(batch["eid"]), sync_dist=True)
        r = risk(pairs)
        self._val_risks.append(r.detach().float().cpu())
        for j, metric in enumerate(self.val_auroc):
            known = ~torch.isnan(batch["labels"][:, j])
            if bool(known.any()):
                metric.update(r[known, j], batch["labels"][known, j].long())

    def on_validation_epoch_start(self) -> None:
        self._val_risks = []

    def on_validation_epoch_end(self) -> None:
        scores = []
        for trait, metric in zip(self.helm.cfg.traits, self.val_auroc, strict=True):
            value = metric.compute() if metric.update_count else torch.tensor(float("nan"))
            self.log(f"val/auroc_{trait}", value)
            scores.append(float(value))
            metric.reset()
        mean = float(torch.tensor(scores).nanmean())
        self.log("val/auroc_mean", mean, prog_bar=True)
        if not self.trainer.sanity_checking and mean > self.best_score:
            # epoch -1: a validation before training (the initial weights are a candidate)
            initial = self.trainer.state.fn == "validate"
            self.best_score, self.best_epoch = mean, -1 if initial else int(self.current_epoch)
            self.best_state = copy.deepcopy(self.helm.trainable_state_dict())
            # every process sees the whole (unshuffled) validation split, so these are its risks in order
            self.best_val_risks = torch.cat(self._val_risks).numpy() if self._val_risks else None

    def on_train_epoch_end(self) -> None:
        if self.store is not None:
            self.log("train/kv_store_participants", float(len(self.store)))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = self.helm.trainable_parameters()
        llm_ids = {id(p) for n, p in self.helm.llm.named_parameters() if "lora_" not in n}
        assert not any(id(p) in llm_ids for p in params), "a frozen LLM parameter reached the optimizer"
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
