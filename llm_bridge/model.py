"""HeLM: a frozen causal LM that reads a serialized record plus spirogram soft tokens and answers yes/no.

Composition, not mixins: :class:`HeLM` holds the Hugging Face model as an attribute, frozen once with
``requires_grad_(False)``, next to the trainable parts - the spirogram :class:`SoftTokenProjector`,
an optional tabular-MLP projector, an optional soft prompt, and optional LoRA adapters (``peft``).

Variants (the HeLM comparison, Belyaeva et al. 2023):

* ``text`` - serialized record only (zero-shot, few-shot, or prompt-tuned with a soft prompt);
* ``text+spiro`` - serialized record + ``k`` projected spirogram tokens (HeLM);
* ``tabmlp+spiro`` - the record as tabular-MLP soft tokens instead of text + spirogram tokens.

Two numerically identical forward paths (tested): :meth:`HeLM.score_full` splices the whole
prompt into one sequence (one prompt per trait); :meth:`HeLM.score_prefix` reuses a text-prefix KV
cache for every trait and runs only soft tokens + question with gradients.

Checkpoints hold only the trainable weights, the per-trait risk calibrators
(:mod:`llm_bridge.calibration`) and the LLM's :class:`~llm_bridge.llm.LLMIdentity`, and are refused
against a different LLM or a different hidden size.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from llm_bridge import precision as P
from llm_bridge.calibration import RiskCalibrator
from llm_bridge.constants import DEFAULT_NUM_SOFT_TOKENS
from llm_bridge.kv_cache import PrefixState, encode_prefix
from llm_bridge.llm import LLMIdentity, LoadedLLM, answer_token_ids
from llm_bridge.projector import SoftPrompt, SoftTokenProjector, embedding_norm
from llm_bridge.prompt import PromptConfig, question_ids, shared_prefix_ids, text_prefixes
from llm_bridge.readout import AnswerIds, last_logits, yes_no_logits
from llm_bridge.serialize import SerializerConfig, TabularScaler, serialize_records
from llm_bridge.splice import SOFT_TOKEN_ID, pad_left, splice
from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)

VARIANTS = ("text", "text+spiro", "tabmlp+spiro")
PROJECTOR_INITS = ("random", "probe", "probe+features")
CHECKPOINT_FORMAT = "spirolm-helm-v1"


@dataclass(frozen=True)
class HeLMConfig:
    """Architecture of the graft (everything a checkpoint needs to rebuild the trainable parts).

    Attributes:
        variant: one of :data:`VARIANTS`.
        traits: traits asked about, in output order.
        num_soft_tokens: spirogram soft tokens ``k``.
        tokens_per_trait: give every trait its own ``k`` spirogram (and tabular) soft tokens, in that
            trait's tail only. With one shared set the LLM reads the tokens almost the same way for
            every question, so a token that says "yes" to COPD also says "yes" to asthma and the
            traits fight over it (docs/llm_bridge.md). Separate sets cost nothing extra: the tail is
            per trait anyway (InstructBLIP's instruction-aware query tokens are the same idea).
        projector_init: ``random``; ``probe+features`` (start the spirogram projector from a logistic
            regression of the train split's embeddings, with every other hidden unit reading the whole
            embedding: :meth:`SoftTokenProjector.init_from_probe` with ``free_units``); or ``probe`` (the
            same start as a bottleneck: one probe logit per trait and nothing else). The probe is fitted
            by the trainer, which has the labels.
        projector: spirogram projector spec (``linear``, ``mlp<N>x_gelu``).
        embedding_dim: width of the encoder embedding (128).
        num_tab_tokens: tabular-MLP soft tokens (``tabmlp+spiro`` only).
        tab_projector: tabular projector spec.
        soft_prompt_tokens: learnt soft-prompt tokens (0 = none; >0 with ``text`` = prompt tuning).
        lora_r: LoRA rank (0 = no LoRA; LoRA disables the prefix KV-cache path).
        lora_alpha, lora_dropout, lora_targets: LoRA settings (``peft.LoraConfig``).
        answer_loss: ``yes_no`` (2-way softmax over the answers) or ``vocab`` (full-vocabulary
            cross-entropy of the answer token).
        serializer, prompt: text configs (their versions are part of the checkpoint).
        seed: initialisation seed.
    """

    __pydantic_config__ = {"extra": "forbid"}  # read strictly when nested in a YAML config

    variant: str = "text+spiro"
    traits: tuple[str, ...] = ("asthma", "copd")
    num_soft_tokens: int = DEFAULT_NUM_SOFT_TOKENS
    tokens_per_trait: bool = True
    projector_init: str = "probe+features"  # chosen on validation (benchmarks/results/helm_selection.md)
    projector: str = "mlp2x_gelu"
    embedding_dim: int = 128
    num_tab_tokens: int = 4
    tab_projector: str = "mlp2x_gelu"
    soft_prompt_tokens: int = 0
    lora_r: int = 0
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    answer_loss: str = "yes_no"
    serializer: SerializerConfig = field(default_factory=SerializerConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise SpirolmInputError(f"unknown HeLM variant {self.variant!r}; use one of {', '.join(VARIANTS)}",
                                    field="variant")
        if not self.traits:
            raise SpirolmInputError("HeLM needs at least one trait", field="traits")
        if self.projector_init not in PROJECTOR_INITS:
            raise SpirolmInputError(f"projector_init must be one of {', '.join(PROJECTOR_INITS)}, got "
                                    f"{self.projector_init!r}", field="projector_init")
        if self.answer_loss not in ("yes_no", "vocab"):
            raise SpirolmInputError(f"answer_loss must be 'yes_no' or 'vocab', got {self.answer_loss!r}",
                                    field="answer_loss")

    @property
    def uses_spiro(self) -> bool:
        """Whether spirogram soft tokens are part of the prompt."""
        return self.variant.endswith("+spiro")

    @property
    def uses_tabmlp(self) -> bool:
        """Whether the record enters as tabular-MLP tokens instead of text."""
        return self.variant.startswith("tabmlp")

    def to_dict(self) -> dict:
        """Plain nested dict (checkpoint, MLflow params)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> HeLMConfig:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        # checkpoints written before these options existed used one shared, randomly initialised set
        d.setdefault("tokens_per_trait", False)
        d.setdefault("projector_init", "random")
        d["serializer"] = SerializerConfig(**{k: tuple(v) if isinstance(v, list) else v
                                              for k, v in d["serializer"].items()})
        d["prompt"] = PromptConfig(**d["prompt"])
        for key in ("traits", "lora_targets"):
            d[key] = tuple(d[key])
        return cls(**d)


def check_hidden_size(expected: int, llm: LoadedLLM, *, file: object = None) -> None:
    """Refuse an LLM whose embedding width differs from what the projector writes."""
    if expected != llm.hidden_size:
        raise SpirolmInputError(
            f"projector writes {expected}-d soft tokens but LLM {llm.identity.name!r} has hidden size "
            f"{llm.hidden_size}; use the LLM the projector was trained with", file=file, field="llm")


class HeLM(nn.Module):
    """The graft. See the module docstring.

    Args:
        llm: the frozen LLM (:func:`llm_bridge.llm.load_llm`).
        cfg: :class:`HeLMConfig`.
        tab_scaler: standardisation of the numeric record (required for ``tabmlp+spiro``).
    """

    def __init__(self, llm: LoadedLLM, cfg: HeLMConfig = HeLMConfig(), tab_scaler: TabularScaler | None = None) -> None:
        super().__init__()
        self.cfg, self.identity, self.tokenizer = cfg, llm.identity, llm.tokenizer
        self.answers = AnswerIds(*answer_token_ids(llm.tokenizer))
        self.pad_id = int(llm.tokenizer.pad_token_id if llm.tokenizer.pad_token_id is not None
                          else (llm.tokenizer.eos_token_id or 0))
        self.d_model = llm.hidden_size
        llm.model.requires_grad_(False).eval()
        self.llm = llm.model
        embed = llm.model.get_input_embeddings()
        norm = embedding_norm(embed)
        torch.manual_seed(cfg.seed)
        sets = self.token_sets
        self.projector = (SoftTokenProjector(cfg.embedding_dim, self.d_model, cfg.num_soft_tokens * sets, cfg.projector,
                                             norm) if cfg.uses_spiro else None)
        self.tab_scaler = tab_scaler
        if cfg.uses_tabmlp and tab_scaler is None:
            raise SpirolmInputError("variant tabmlp+spiro needs a TabularScaler fitted on the train split",
                                    field="tab_scaler")
        self.tab_projector = (SoftTokenProjector(tab_scaler.width, self.d_model, cfg.num_tab_tokens * sets,
                                                 cfg.tab_projector, norm) if cfg.uses_tabmlp and tab_scaler is not None else None)
        self.soft_prompt = SoftPrompt(embed, cfg.soft_prompt_tokens, cfg.seed) if cfg.soft_prompt_tokens else None
        if cfg.lora_r:
            self._add_lora()
        self._templates: dict[tuple[str, bool, bool], list[int]] = {}
        self.precision = "fp32"
        self.calibration: dict[str, RiskCalibrator] = {}  # per trait, fitted on validation by the trainer
        self.assert_llm_frozen()

    # ------------------------------------------------------------------ construction helpers

    def _add_lora(self) -> None:
        from peft import LoraConfig, get_peft_model  # noqa: PLC0415 - optional LoRA path; peft is slow to import

        lcfg = LoraConfig(r=self.cfg.lora_r, lora_alpha=self.cfg.lora_alpha, lora_dropout=self.cfg.lora_dropout,
                          target_modules=list(self.cfg.lora_targets), bias="none")
        self.llm = get_peft_model(self.llm, lcfg)

    def set_precision(self, precision: str) -> HeLM:
        """Run the LLM in ``precision`` (:data:`llm_bridge.precision.PRECISIONS` or ``auto``)."""
        self.precision = P.resolve(precision, self.llm.device)
        return self

    def calibrated(self, risks: np.ndarray) -> np.ndarray:
        """``(N, T)`` risks in :attr:`HeLMConfig.traits` order through each trait's calibrator (if any)."""
        out = np.array(risks, dtype=float, copy=True)
        for j, trait in enumerate(self.cfg.traits):
            if trait in self.calibration:
                out[:, j] = self.calibration[trait].apply(out[:, j])
        return out

    @property
    def uses_lora(self) -> bool:
        """Whether LoRA adapters modify the LLM (then the prefix KV cache is not constant)."""
        return self.cfg.lora_r > 0

    @property
    def token_sets(self) -> int:
        """Sets of projected soft tokens: one per trait (``tokens_per_trait``) or one shared set."""
        return len(self.cfg.traits) if self.cfg.tokens_per_trait else 1

    @property
    def n_soft(self) -> int:
        """Soft tokens per prompt (soft prompt + tabular + spirogram)."""
        return ((self.cfg.soft_prompt_tokens or 0) + (self.cfg.num_tab_tokens if self.cfg.uses_tabmlp else 0)
                + (self.cfg.num_soft_tokens if self.cfg.uses_spiro else 0))

    def tail_ids(self, question: Sequence[int], *, every_set: bool = False, spiro: bool = True,
                 record: bool = True) -> list[int]:
        """Ids of a prompt's tail, ``SOFT_TOKEN_ID`` at soft positions: soft prompt, tabular tokens,
        spirogram intro (unless :meth:`prefix_ids` holds it) + tokens, then ``question``.

        The one tail builder: training, scoring, explanations and chat all prompt through it.

        Args:
            question: the question's ids (a trait's yes/no question, or a free-text one).
            every_set: room for every trait's token set (free-text chat), not one trait's.
            spiro, record: leave out the spirogram / tabular part (modality ablation).
        """
        cfg = self.cfg
        sets = self.token_sets if every_set else 1
        ids = [SOFT_TOKEN_ID] * cfg.soft_prompt_tokens
        if cfg.uses_tabmlp and record:
            ids += [SOFT_TOKEN_ID] * (cfg.num_tab_tokens * sets)
        if cfg.uses_spiro and spiro:
            if not self._intro_in_prefix(spiro):
                ids += self.tokenizer(cfg.prompt.spiro_intro, add_special_tokens=False)["input_ids"]
            ids += [SOFT_TOKEN_ID] * (cfg.num_soft_tokens * sets)
        return ids + list(question)

    def _template(self, trait: str, spiro: bool = True, record: bool = True) -> list[int]:
        """The yes/no tail of ``trait`` (cached: it is the same for every participant)."""
        key = (trait, spiro, record)
        if key not in self._templates:
            question = question_ids(self.tokenizer, trait, self.cfg.prompt)
            self._templates[key] = self.tail_ids(question, spiro=spiro, record=record)
        return self._templates[key]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimizer gets: projectors, soft prompt, LoRA - never a base LLM weight."""
        return [p for p in self.parameters() if p.requires_grad]

    def assert_llm_frozen(self) -> None:
        """Raise if any base LLM parameter is trainable (only LoRA adapters may be)."""
        bad = [n for n, p in self.llm.named_parameters() if p.requires_grad and "lora_" not in n]
        if bad:
            raise RuntimeError(f"LLM parameters are trainable: {bad[:3]}")

    def train(self, mode: bool = True) -> HeLM:
        """Train mode for the trainable parts; the frozen LLM stays in eval mode (no dropout)."""
        super().train(mode)
        if not self.uses_lora:
            self.llm.eval()
        return self

    # ------------------------------------------------------------------ inputs

    def prefix_ids(self, participants: pd.DataFrame, *, spiro: bool = True, record: bool = True,
                   after_shared: bool = False) -> list[list[int]]:
        """Token ids of each participant's text prefix: everything before the first soft token.

        That is the header and the record text (only the header for ``tabmlp+spiro``, whose record
        enters as soft tokens), plus the spirogram intro when it directly precedes the spirogram tokens:
        constant text belongs in the no-grad prefix, not in the graded tail.

        Args:
            participants: participant rows.
            spiro, record: the modalities the prompt keeps (modality ablation); without the record a
                text variant keeps only the header.
            after_shared: the prompts continue a shared block (:meth:`shared_prefix_ids`).
        """
        if self.cfg.uses_tabmlp:
            records = ["(record given as feature tokens)"] * len(participants)
        elif record:
            records = serialize_records(participants, self.cfg.serializer).tolist()
        else:
            records = [""] * len(participants)
        return text_prefixes(self.tokenizer, records, self.cfg.prompt, with_intro=self._intro_in_prefix(spiro),
                             after_shared=after_shared)

    def shared_prefix_ids(self, examples: str) -> list[int]:
        """Ids of a block every participant's prompt starts with (few-shot examples): its KV is computed once."""
        return shared_prefix_ids(self.tokenizer, examples, self.cfg.prompt)

    def without_spirogram(self, state: PrefixState) -> PrefixState:
        """The prefix state of the prompt without the spirogram, from the full prompt's state (ablation)."""
        if not self._intro_in_prefix(True):
            return state
        return state.drop_last(len(self.tokenizer(self.cfg.prompt.spiro_intro, add_special_tokens=False)["input_ids"]))

    def _intro_in_prefix(self, spiro: bool) -> bool:
        """The spirogram intro is prefix text when nothing trainable comes before it."""
        return self.cfg.uses_spiro and spiro and not self.cfg.soft_prompt_tokens and not self.cfg.uses_tabmlp

    def tab_features(self, participants: pd.DataFrame) -> np.ndarray | None:
        """Standardised tabular features (``tabmlp+spiro``) or None."""
        return self.tab_scaler.transform(participants) if self.cfg.uses_tabmlp and self.tab_scaler else None

    def soft_tokens(self, batch_size: int, embedding: torch.Tensor | None, tab: torch.Tensor | None,
                    eids: Sequence[object] | None = None, *, trait: str | None = None, every_set: bool = False,
                    spiro: bool = True, record: bool = True) -> torch.Tensor | None:
        """``(B, n, d)`` soft tokens of ``trait``'s tail in prompt order: soft prompt, tabular, spirogram.

        Args:
            batch_size: rows (the soft prompt is the same for all).
            embedding: ``(B, E)`` spirogram embeddings (spirogram variants).
            tab: ``(B, F)`` standardised tabular features (``tabmlp+spiro``).
            eids: participant ids, only for error messages.
            trait: whose token set to return (required with ``tokens_per_trait`` unless ``every_set``).
            every_set: return every trait's set, in trait order (free-text chat).
            spiro, record: leave out the spirogram / tabular tokens (modality ablation).
        """
        parts = []
        if self.soft_prompt is not None:
            parts.append(self.soft_prompt(batch_size))
        if self.tab_projector is not None and record:
            if tab is None:
                raise SpirolmInputError("tabmlp+spiro needs tabular features", field="tab")
            parts.append(self._trait_set(self.tab_projector(tab.float()), trait, every_set))
        if self.projector is not None and spiro:
            if embedding is None:
                raise SpirolmInputError("variant needs spirogram embeddings (--encoder or --embeddings)",
                                        field="embedding")
            check_finite_embeddings(embedding, eids)
            parts.append(self._trait_set(self.projector(embedding.float()), trait, every_set))
        if not parts:
            return None
        return torch.cat(parts, dim=1).to(self.llm.dtype)

    def _trait_set(self, tokens: torch.Tensor, trait: str | None, every_set: bool = False) -> torch.Tensor:
        """The slice of ``(B, k * sets, d)`` projector output that ``trait``'s tail holds."""
        if self.token_sets == 1 or every_set:
            return tokens
        if trait not in self.cfg.traits:
            raise ValueError(f"tokens_per_trait needs one of the model's traits {self.cfg.traits}, got {trait!r}")
        k = tokens.shape[1] // self.token_sets
        j = self.cfg.traits.index(trait)
        return tokens[:, j * k:(j + 1) * k]

    # ------------------------------------------------------------------ forward paths

    def _pairs(self, logits: torch.Tensor) -> torch.Tensor:
        return yes_no_logits(logits, self.answers).float()

    def score_full(self, prefix_ids: Sequence[Sequence[int]], embedding: torch.Tensor | None = None,
                   tab: torch.Tensor | None = None, traits: Sequence[str] | None = None,
                   eids: Sequence[object] | None = None, full_vocab: bool = False, *, spiro: bool = True,
                   record: bool = True) -> torch.Tensor:
        """One full-sequence prompt per trait; returns ``(B, T, 2)`` [no, yes] logits (or ``(B, T, V)``).

        ``spiro`` / ``record`` leave that modality out of the tail (modality ablation).
        """
        device = self.llm.device
        embedding, tab = _to(embedding, device), _to(tab, device)
        out = []
        for trait in traits or self.cfg.traits:
            soft = self.soft_tokens(len(prefix_ids), embedding, tab, eids, trait=trait, spiro=spiro, record=record)
            template = self._template(trait, spiro, record)
            ids, mask = pad_left([list(p) + template for p in prefix_ids], self.pad_id, device)
            with P.compute(self.precision, device):
                inputs = splice(self.llm.get_input_embeddings(), ids, mask, soft)
                logits = last_logits(self.llm, inputs)
            out.append(logits.float() if full_vocab else self._pairs(logits))
        return torch.stack(out, dim=1)

    def encode_prefix(self, prefix_ids: Sequence[Sequence[int]], shared: PrefixState | None = None) -> PrefixState:
        """No-grad KV cache of the text prefixes (see :mod:`llm_bridge.kv_cache`), in the compute precision.

        ``shared``: the cache of a block every prompt starts with (:meth:`shared_prefix_ids`), computed once.
        """
        with P.compute(self.precision, self.llm.device):
            return encode_prefix(self.llm, prefix_ids, self.pad_id, self.llm.device, shared=shared,
                                 dtype=P.kv_dtype(self.precision))

    def score_prefix(self, state: PrefixState, embedding: torch.Tensor | None = None, tab: torch.Tensor | None = None,
                     traits: Sequence[str] | None = None, eids: Sequence[object] | None = None,
                     full_vocab: bool = False, *, spiro: bool = True, record: bool = True) -> torch.Tensor:
        """Every trait from one shared prefix cache; returns ``(B, T, 2)`` [no, yes] logits (or ``(B, T, V)``).

        Only the tail (soft tokens + question) runs here, with gradients to the soft tokens;
        ``spiro`` / ``record`` leave that modality out of the tail (modality ablation).
        """
        if self.uses_lora:
            raise RuntimeError("the prefix KV cache is not constant under LoRA; use score_full")
        device = self.llm.device
        batch = int(state.lengths.shape[0])
        embedding, tab = _to(embedding, device), _to(tab, device)
        embed = self.llm.get_input_embeddings()
        out = []
        for trait in traits or self.cfg.traits:
            soft = self.soft_tokens(batch, embedding, tab, eids, trait=trait, spiro=spiro, record=record)
            template = torch.tensor(self._template(trait, spiro, record), device=device).expand(batch, -1)
            tail_mask = torch.ones_like(template)
            try:
                with P.compute(self.precision, device):
                    inputs = splice(embed, template, tail_mask, soft, position_offset=state.lengths)
                    logits = last_logits(self.llm, inputs, past_key_values=state.cache,
                                         attention_mask=state.tail_mask(template.shape[1]))
            finally:
                state.reset()
            out.append(logits.float() if full_vocab else self._pairs(logits))
        return torch.stack(out, dim=1)

    @staticmethod
    def loss_weights(labels: torch.Tensor, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T)`` weight of each answer in the loss: 0 for a missing label, ``pos_weight`` for a case, else 1."""
        weight = (~torch.isnan(labels)).float()
        if pos_weight is not None:
            cases = torch.nan_to_num(labels, nan=0.0) == 1
            weight = weight * torch.where(cases, pos_weight.to(labels.device).view(1, -1), torch.ones_like(labels))
        return weight

    def loss(self, out: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor | None = None,
             normalizer: torch.Tensor | None = None) -> torch.Tensor:
        """Weighted cross-entropy of the answer token, divided by the batch's total weight.

        Args:
            out: ``(B, T, 2)`` [no, yes] logits, or ``(B, T, V)`` for ``answer_loss='vocab'``.
            labels: ``(B, T)`` float 0/1 with NaN for missing labels (masked out).
            pos_weight: ``(T,)`` weight of cases (class weighting); None = 1.
            normalizer: the divisor instead of this batch's total weight (data parallelism divides by
                the global batch's, so that averaging the processes' gradients gives one process's).
        """
        weight = self.loss_weights(labels, pos_weight)
        if not bool((weight > 0).any()):
            return out.sum() * 0.0
        y = torch.nan_to_num(labels, nan=0.0).long()
        target = torch.where(y == 1, self.answers.yes, self.answers.no) if self.cfg.answer_loss == "vocab" else y
        ce = nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1), reduction="none")
        return (ce.view_as(labels) * weight).sum() / (weight.sum() if normalizer is None else normalizer)

    # ------------------------------------------------------------------ checkpoints

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the trained weights (and projector buffers): projectors, soft prompt, LoRA."""
        keep = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v.detach().cpu() for k, v in self.state_dict().items()
                if k in keep or (not k.startswith("llm.") and k.endswith(".scale"))}

    def save_checkpoint(self, path: str | Path, extra: dict | None = None) -> Path:
        """Write trainable weights + config + LLM identity (no LLM weight) to ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({
            "format": CHECKPOINT_FORMAT,
            "config": self.cfg.to_dict(),
            "llm": self.identity.to_dict(),
            "hidden_size": self.d_model,
            "tab_scaler": self.tab_scaler.to_dict() if self.tab_scaler else None,
            "state": self.trainable_state_dict(),
            "calibration": {t: c.to_dict() for t, c in self.calibration.items()},
            "extra": extra or {},
        }, path)
        return path

    @classmethod
    def load_checkpoint(cls, path: str | Path, llm: LoadedLLM) -> HeLM:
        """Rebuild a HeLM from a checkpoint against ``llm``.

        Raises:
            SpirolmInputError: unreadable file, wrong format, hidden-size mismatch, or a different LLM.
        """
        path = Path(path)
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
            raise SpirolmInputError(f"cannot read HeLM checkpoint ({exc})".splitlines()[0], file=path) from exc
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise SpirolmInputError(f"not a {CHECKPOINT_FORMAT} checkpoint", file=path)
        check_hidden_size(int(ckpt["hidden_size"]), llm, file=path)
        LLMIdentity.from_dict(ckpt["llm"]).check_matches(llm.identity, file=path)
        scaler = TabularScaler.from_dict(ckpt["tab_scaler"]) if ckpt["tab_scaler"] else None
        model = cls(llm, HeLMConfig.from_dict(ckpt["config"]), scaler)
        model.calibration = {t: RiskCalibrator.from_dict(c) for t, c in ckpt.get("calibration", {}).items()}
        missing, unexpected = model.load_state_dict(ckpt["state"], strict=False)
        expected = set(model.trainable_state_dict())
        if unexpected or expected - set(ckpt["state"]):
            raise SpirolmInputError(f"checkpoint tensors do not match the model (missing "
                                    f"{sorted(expected - set(ckpt['state']))[:3]}, unexpected {unexpected[:3]})",
                                    file=path)
        return model


def _to(x: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if x is None else x.to(device)


def check_finite_embeddings(embedding: torch.Tensor, eids: Sequence[object] | None = None) -> None:
    """Refuse NaN/inf spirogram embeddings, naming the first participant."""
    bad = ~torch.isfinite(embedding).all(dim=-1)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0, 0])
        raise SpirolmInputError(f"non-finite spirogram embedding for {int(bad.sum())} participant(s); re-run the "
                                "encoder or drop them", eid=None if eids is None else eids[i], field="emb_*")


def with_variant(cfg: HeLMConfig, variant: str, **changes: object) -> HeLMConfig:
    """Copy of ``cfg`` for another variant (convenience for the comparison rows)."""
    return replace(cfg, variant=variant, **changes)
