"""HeLM prompts: record text, then soft tokens, then a per-trait question answered by the next token.

Layout of one prompt (``|`` separates what :mod:`llm_bridge.splice` treats differently)::

    [few-shot examples] header + record text + intro   |  soft tokens  |  question ... "Answer:"
    \\________________ text prefix ________________/      \\_________ trainable tail _________/

* The **prefix** is plain text and does not depend on any trainable weight, so its KV cache can be
  computed once without gradients (:mod:`llm_bridge.kv_cache`). That is why the soft tokens come
  *after* the text, not before it as in classic prompt tuning.
* The **soft tokens** are the projected spirogram (``k`` tokens), optionally tabular-MLP tokens and
  a learnt soft prompt.
* The **question** ends with ``Answer:`` so that the next token is `` yes`` or `` no``.

Token ids are produced here with ``add_special_tokens=False`` (optional explicit BOS), so the same
ids come out on every transformers version. Records longer than ``max_record_tokens`` are cut at
that length (the question and soft tokens are never cut) and the cut is logged with the first
affected participant id and the count: a silently truncated prompt would be mis-scored unnoticed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from transformers import PreTrainedTokenizerBase

from llm_bridge.constants import NO, TRAIT_WORDING, YES
from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptConfig:
    """Prompt wording and limits.

    Attributes:
        header: text before the record.
        spiro_intro: text just before the soft tokens (introduces the spirogram tokens).
        question: per-trait question; ``{disease}`` is replaced by :data:`TRAIT_WORDING` (or the trait
            name); must end so that the answer is the next token.
        example_separator: between few-shot examples and the participant.
        max_record_tokens: record text longer than this is truncated (logged).
        add_bos: prepend the tokenizer's BOS token (off: SmolLM2's BOS is a chat marker).
    """

    __pydantic_config__ = {"extra": "forbid"}  # read strictly when nested in a YAML config

    header: str = "Participant record (UK Biobank):\n"
    spiro_intro: str = "\nSpirogram:"
    question: str = "\nQuestion: Does this person have {disease}? Answer yes or no.\nAnswer:"
    example_separator: str = "\n\n"
    max_record_tokens: int = 384
    add_bos: bool = False

    def __post_init__(self) -> None:
        if "{disease}" not in self.question:
            raise SpirolmInputError("prompt question must contain '{disease}'", field="prompt.question")
        if self.max_record_tokens < 8:
            raise SpirolmInputError("prompt.max_record_tokens must be >= 8", field="prompt.max_record_tokens")

    def question_for(self, trait: str) -> str:
        """The question text for one trait."""
        return self.question.format(disease=TRAIT_WORDING.get(trait, trait.replace("_", " ")))

    def free_question(self, text: str) -> str:
        """A free-text question in the yes/no question's frame (``spirolm chat``)."""
        return f"\nQuestion: {text.strip()}\nAnswer:"


def _ids(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Batched tokenization (fast tokenizers run it in Rust), never adding special tokens."""
    if not texts:
        return []
    return [list(x) for x in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def encode_records(
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[str],
    cfg: PromptConfig,
) -> list[list[int]]:
    """Token ids of record texts, truncated to ``cfg.max_record_tokens`` with a logged warning.

    The warning names the row within the batch, never the participant: logs must not carry ids.
    """
    ids = _ids(tokenizer, records)
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    long = np.flatnonzero(lengths > cfg.max_record_tokens)
    if long.size:
        first = long[0]
        log.warning("truncation: %d record(s) longer than %d tokens were cut to %d (first: row %d of the batch, %d tokens); "
                    "raise prompt.max_record_tokens or serialize fewer fields", long.size, cfg.max_record_tokens,
                    cfg.max_record_tokens, int(first), int(lengths[first]))
        for i in long:
            ids[i] = ids[i][: cfg.max_record_tokens]
    return ids


def shared_prefix_ids(tokenizer: PreTrainedTokenizerBase, examples: str, cfg: PromptConfig) -> list[int]:
    """Ids every prompt starts with: ``[BOS] [examples + separator]`` (few-shot examples are the same for all)."""
    bos = [tokenizer.bos_token_id] if cfg.add_bos and tokenizer.bos_token_id is not None else []
    return bos + (_ids(tokenizer, [examples + cfg.example_separator])[0] if examples else [])


def text_prefixes(
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[str],
    cfg: PromptConfig,
    *,
    with_intro: bool,
    after_shared: bool = False,
) -> list[list[int]]:
    """Prefix ids per participant: ``[BOS] header record [intro]``.

    Args:
        tokenizer: the LLM's tokenizer.
        records: serialized records (see :func:`llm_bridge.serialize.serialize_records`).
        cfg: prompt config.
        with_intro: append ``cfg.spiro_intro`` (when spirogram soft tokens follow).
        after_shared: the prompt continues a :func:`shared_prefix_ids` block (which holds the BOS).
    """
    head = [] if after_shared else shared_prefix_ids(tokenizer, "", cfg)
    head = head + _ids(tokenizer, [cfg.header])[0]
    tail = _ids(tokenizer, [cfg.spiro_intro])[0] if with_intro else []
    return [head + r + tail for r in encode_records(tokenizer, records, cfg)]


def question_ids(tokenizer: PreTrainedTokenizerBase, trait: str, cfg: PromptConfig) -> list[int]:
    """Token ids of the question for ``trait`` (identical for every participant)."""
    return _ids(tokenizer, [cfg.question_for(trait)])[0]


def select_few_shot(participants: pd.DataFrame, trait: str, k: int, seed: int) -> pd.DataFrame:
    """``k`` balanced in-context examples for ``trait`` from the train split (k//2 cases first drawn).

    Why balanced: with an imbalanced handful of examples the LLM copies the majority answer.

    Raises:
        SpirolmInputError: ``k`` < 2, or the train split has too few cases or controls.
    """
    if k < 2:
        raise SpirolmInputError(f"few-shot needs k >= 2 examples, got {k}", field="few_shot_k")
    train = participants[(participants["split"] == "train") & participants[trait].notna()]
    y = pd.to_numeric(train[trait]).to_numpy()
    n_pos, n_neg = k // 2, k - k // 2
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if pos.size < n_pos or neg.size < n_neg:
        raise SpirolmInputError(f"train split has {pos.size} cases and {neg.size} controls; few-shot needs "
                                f"{n_pos} and {n_neg}", field=trait)
    picked = np.concatenate([rng.choice(pos, n_pos, replace=False), rng.choice(neg, n_neg, replace=False)])
    return train.iloc[rng.permutation(picked)]


def few_shot_block(records: Sequence[str], labels: Sequence[int], trait: str, cfg: PromptConfig) -> str:
    """In-context examples as text: header, record, question and the true answer, per example."""
    parts = [cfg.header + rec + cfg.question_for(trait) + (YES if int(lab) == 1 else NO)
             for rec, lab in zip(records, labels, strict=True)]
    return cfg.example_separator.join(parts)
