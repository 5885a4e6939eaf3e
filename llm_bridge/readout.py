"""Risk readout: one forward pass, the last position's logits, softmax over `` yes`` / `` no``.

Why not ``generate()``: decoding text and parsing it costs a generation loop and turns a
probability into a hard answer; the next-token distribution at the answer position already holds
the risk. The LLM is asked for the last position's logits only (``logits_to_keep=1``), which skips
the ``(B, T, vocab)`` output projection - the largest tensor of a small LM's forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from llm_bridge.splice import SplicedInputs


@dataclass(frozen=True)
class AnswerIds:
    """Vocabulary ids of the two answers (checked single tokens, see :func:`llm_bridge.llm.answer_token_ids`)."""

    yes: int
    no: int

    def index(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """``[no, yes]`` ids: column 1 of :func:`yes_no_logits` is the positive class."""
        return torch.tensor([self.no, self.yes], device=device)


def last_logits(
    model: nn.Module,
    inputs: SplicedInputs,
    *,
    past_key_values: object | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(B, vocab)`` logits at the last position of left-padded inputs, from one forward pass.

    Args:
        model: the causal LM.
        inputs: spliced inputs (``position_ids`` already offset when a cache is given).
        past_key_values: a prefix KV cache; the cache grows by the inputs' length (callers crop it).
        attention_mask: mask over cache + inputs when a cache is given (default: ``inputs.attention_mask``).
    """
    out = model(
        inputs_embeds=inputs.inputs_embeds,
        attention_mask=inputs.attention_mask if attention_mask is None else attention_mask,
        position_ids=inputs.position_ids,
        past_key_values=past_key_values,
        use_cache=past_key_values is not None,
        logits_to_keep=1,
    )
    return out.logits[:, -1, :]


def yes_no_logits(logits: torch.Tensor, answers: AnswerIds) -> torch.Tensor:
    """``(..., 2)`` logits of ``[no, yes]`` from ``(..., vocab)`` logits."""
    return logits.index_select(-1, answers.index(logits.device))


def risk(pair: torch.Tensor) -> torch.Tensor:
    """P(yes) / (P(yes) + P(no)) from ``(..., 2)`` ``[no, yes]`` logits."""
    return torch.softmax(pair.float(), dim=-1)[..., 1]


def answer_mass(logits: torch.Tensor, answers: AnswerIds) -> torch.Tensor:
    """P(yes) + P(no) under the full vocabulary: how much the LLM is actually answering (diagnostic)."""
    return torch.softmax(logits.float(), dim=-1).index_select(-1, answers.index(logits.device)).sum(-1)
