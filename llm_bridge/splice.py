"""Put soft tokens into ``inputs_embeds``: batched, padding-aware, for any HF causal LM.

LLaVA's idea, not its code: text positions hold a sentinel id (:data:`SOFT_TOKEN_ID`) where a soft
token goes; the LLM's own input-embedding layer embeds the rest and the soft tokens are scattered
into the sentinel positions in one ``masked_scatter`` (no per-sample Python loop). Sequences are
**left**-padded so that the last position of every row is its answer position - the readout then
asks the LLM for the logits of that one position only (``logits_to_keep=1``). Position ids count
real tokens only, so a participant scores the same alone or in a padded batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from llm_bridge.constants import IGNORE_INDEX

#: Sentinel id of a soft-token position in id sequences (negative: never a real vocabulary id).
SOFT_TOKEN_ID = -200


@dataclass(frozen=True)
class SplicedInputs:
    """What the LLM's ``forward`` receives, plus bookkeeping for losses and tests.

    Attributes:
        inputs_embeds: ``(B, T, d)``; soft tokens at ``soft_mask``.
        attention_mask: ``(B, T)`` long, 0 at left padding.
        position_ids: ``(B, T)``, 0 at the first real token of each row.
        soft_mask: ``(B, T)`` bool, True at soft-token positions.
        labels: ``(B, T)`` input ids with :data:`IGNORE_INDEX` at padding and soft positions (for
            language-model losses over the text; the HeLM loss uses only the answer position).
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    soft_mask: torch.Tensor
    labels: torch.Tensor


def pad_left(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad ragged id lists into ``(ids, attention_mask)``, each ``(B, T_max)`` long."""
    if not seqs:
        raise ValueError("pad_left needs at least one sequence")
    tensors = [torch.as_tensor(s, dtype=torch.long) for s in seqs]
    ids = pad_sequence(tensors, batch_first=True, padding_value=pad_id, padding_side="left")
    ones = [torch.ones(len(s), dtype=torch.long) for s in seqs]
    mask = pad_sequence(ones, batch_first=True, padding_value=0, padding_side="left")
    return ids.to(device), mask.to(device)


def position_ids_from_mask(attention_mask: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
    """Positions counting real tokens only (left padding gets 0), plus a per-row ``offset``."""
    pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    return pos if offset is None else pos + offset.view(-1, 1)


def splice(
    embed: nn.Embedding,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    soft: torch.Tensor | None,
    *,
    position_offset: torch.Tensor | None = None,
) -> SplicedInputs:
    """Embed ``input_ids`` and scatter ``soft`` into its :data:`SOFT_TOKEN_ID` positions.

    Args:
        embed: the LLM's input-embedding layer (``model.get_input_embeddings()``).
        input_ids: ``(B, T)`` ids, left-padded, with ``SOFT_TOKEN_ID`` at soft positions; every row
            holds the same number ``n`` of soft positions.
        attention_mask: ``(B, T)``.
        soft: ``(B, n, d)`` soft tokens, in order of appearance; None when ``n == 0``.
        position_offset: ``(B,)`` tokens already in a KV cache before these (KV-cache path).

    Returns:
        :class:`SplicedInputs`.

    Raises:
        ValueError: rows hold different numbers of soft positions, ``soft`` does not match them,
            or ``soft`` is not finite (a caller bug: inputs are validated upstream by participant).
    """
    soft_mask = input_ids == SOFT_TOKEN_ID
    per_row = soft_mask.sum(dim=1)
    n = int(per_row[0]) if per_row.numel() else 0
    if bool((per_row != n).any()):
        raise ValueError(f"rows hold different numbers of soft-token positions: {per_row.tolist()}")
    embeds = embed(input_ids.masked_fill(soft_mask, 0))  # (B, T, d)
    if n:
        if soft is None or soft.shape[:2] != (input_ids.shape[0], n) or soft.shape[2] != embeds.shape[2]:
            got = None if soft is None else tuple(soft.shape)
            raise ValueError(f"expected soft tokens of shape ({input_ids.shape[0]}, {n}, {embeds.shape[2]}), got {got}")
        if not bool(torch.isfinite(soft).all()):
            raise ValueError("soft tokens contain NaN/inf")
        embeds = embeds.masked_scatter(soft_mask.unsqueeze(-1), soft.to(embeds.dtype))
    elif soft is not None and soft.shape[1] != 0:
        raise ValueError(f"{soft.shape[1]} soft tokens given but the ids hold no soft positions")
    labels = input_ids.masked_fill(soft_mask | (attention_mask == 0), IGNORE_INDEX)
    return SplicedInputs(
        inputs_embeds=embeds,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask, position_offset),
        soft_mask=soft_mask,
        labels=labels,
    )
