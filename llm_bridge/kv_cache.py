"""The text prefix's KV cache: computed once without gradients, reused across traits and epochs.

Why: the LLM is frozen and the serialized record does not depend on any trainable weight, so the
keys/values of the text prefix are constants of the participant. Only the short tail (soft tokens
+ question, ~20 tokens instead of ~130) runs with gradients; the backward pass never enters the
prefix. :class:`PrefixKVStore` additionally keeps each participant's prefix KV in memory (up to a
byte budget) so later epochs skip even the no-grad prefix forward.

Not valid when LoRA adapts the LLM (the prefix KV then depends on trainable weights):
:class:`llm_bridge.model.HeLM` falls back to full-sequence training in that case.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from transformers import DynamicCache

from llm_bridge.splice import pad_left, position_ids_from_mask

log = logging.getLogger(__name__)


@dataclass
class PrefixState:
    """A batch's prefix KV cache and its mask.

    Attributes:
        cache: ``DynamicCache`` holding the left-padded prefix (callers crop it back after a tail).
        attention_mask: ``(B, P)`` mask of the prefix (0 at left padding).
        lengths: ``(B,)`` real prefix tokens per row (the tail's position offset).
    """

    cache: DynamicCache
    attention_mask: torch.Tensor
    lengths: torch.Tensor

    @property
    def prefix_len(self) -> int:
        """Padded prefix length ``P``."""
        return int(self.attention_mask.shape[1])

    def tail_mask(self, tail_len: int) -> torch.Tensor:
        """``(B, P + tail_len)`` mask over prefix and a tail of real tokens."""
        ones = torch.ones(self.attention_mask.shape[0], tail_len, dtype=self.attention_mask.dtype,
                          device=self.attention_mask.device)
        return torch.cat([self.attention_mask, ones], dim=1)

    def reset(self) -> None:
        """Drop whatever a tail forward appended, keeping the prefix."""
        extra = self.cache.get_seq_length() - self.prefix_len
        if extra > 0:
            self.cache.crop(-extra)
            # The cropped keys are views of cat(prefix, tail) and would drag the tail's autograd graph
            # into the next trait or step; the prefix is a constant, so cut the history.
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys.detach(), layer.values.detach()


    def drop_last(self, n: int) -> PrefixState:
        """The state without its last ``n`` positions, which every row shares (e.g. the spirogram intro)."""
        if n <= 0:
            return self
        data = [(k[:, :, :-n], v[:, :, :-n]) for k, v in _layers(self.cache)]
        return PrefixState(cache=DynamicCache(ddp_cache_data=data), attention_mask=self.attention_mask[:, :-n],
                           lengths=self.lengths - n)

    def expand(self, n: int) -> PrefixState:
        """A batch-1 state broadcast to ``n`` rows (a view: the prefix keys/values are not copied)."""
        data = [(layer.keys.expand(n, -1, -1, -1), layer.values.expand(n, -1, -1, -1)) for layer in self.cache.layers]
        return PrefixState(cache=DynamicCache(ddp_cache_data=data), attention_mask=self.attention_mask.expand(n, -1),
                           lengths=self.lengths.expand(n))


@torch.no_grad()
def encode_prefix(model: nn.Module, prefix_ids: Sequence[Sequence[int]], pad_id: int,
                  device: torch.device | str = "cpu", *, shared: PrefixState | None = None,
                  dtype: torch.dtype | None = None) -> PrefixState:
    """Run the frozen LLM over left-padded prefixes once, without gradients, and keep the cache.

    Args:
        model: the frozen causal LM.
        prefix_ids: one id list per row.
        pad_id: padding id.
        device: where the cache lives.
        shared: the batch-1 cache of a block every row continues (few-shot examples): its keys and
            values are computed once and only each row's own tokens run here (left padding then sits
            between the shared block and the row; the mask and positions skip it).
        dtype: store the keys/values in this dtype (the compute precision; None keeps the model's).
    """
    ids, mask = pad_left(prefix_ids, pad_id, device)
    if shared is None:
        out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                    use_cache=True, logits_to_keep=1)
    else:
        base = shared.expand(ids.shape[0])
        position_ids = position_ids_from_mask(mask, base.lengths)
        mask = torch.cat([base.attention_mask, mask], dim=1)
        out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, past_key_values=base.cache,
                    use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    if dtype is not None:
        cache = DynamicCache(ddp_cache_data=[(k.to(dtype), v.to(dtype)) for k, v in _layers(cache)])
    return PrefixState(cache=cache, attention_mask=mask, lengths=mask.sum(dim=1))


def _layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


class PrefixKVStore:
    """Per-participant prefix KV tensors kept in memory across epochs, within a byte budget.

    Entries are stored without padding (``(heads, len, head_dim)`` per layer) and left-padded again
    when a batch is assembled, so the same participant can sit in any batch. When the budget is
    full, new prefixes are still computed (and used) but not stored; hits and misses are counted.

    Args:
        max_bytes: memory budget (SmolLM2-135M: ~8 MB per 180-token prefix in fp32, half in bf16).
        dtype: storage dtype (None: the dtype the prefix was encoded in, i.e. the compute precision).
    """

    def __init__(self, max_bytes: int = 3 << 30, dtype: torch.dtype | None = None) -> None:
        self.max_bytes, self.dtype = int(max_bytes), dtype
        self._data: dict[Hashable, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._model_dtype: torch.dtype | None = None

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    def clear(self) -> None:
        """Forget every entry (e.g. when the LLM or the prompt changes)."""
        self._data.clear()
        self.bytes = 0

    def _store(self, keys: Sequence[Hashable], state: PrefixState) -> None:
        lengths = state.lengths.tolist()
        pad = state.prefix_len
        layers = _layers(state.cache)
        self._model_dtype = layers[0][0].dtype
        for row, (key, n) in enumerate(zip(keys, lengths, strict=True)):
            entry = [(k[row, :, pad - n:].to(self.dtype or k.dtype).clone(),
                      v[row, :, pad - n:].to(self.dtype or v.dtype).clone()) for k, v in layers]
            size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in entry)
            if self.bytes + size > self.max_bytes:
                if self.bytes <= self.max_bytes:  # log once when the budget is first exceeded
                    log.info("prefix KV store full (%d participants, %.2f GB); later prefixes are recomputed",
                             len(self._data), self.bytes / 1e9)
                    self.bytes = self.max_bytes + 1
                return
            self._data[key] = entry
            self.bytes += size

    def get(self, encode: Callable[[Sequence[Sequence[int]]], PrefixState], keys: Sequence[Hashable],
            prefix_ids: Sequence[Sequence[int]], device: torch.device | str = "cpu") -> PrefixState:
        """The prefix state of a batch, computing (with ``encode``) and storing only the participants not seen yet."""
        missing = [i for i, k in enumerate(keys) if k not in self._data]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if len(missing) == len(keys) and self.bytes > self.max_bytes:
            return encode(prefix_ids)
        if missing:
            fresh = encode([prefix_ids[i] for i in missing])
            self._store([keys[i] for i in missing], fresh)
            if any(keys[i] not in self._data for i in missing):  # budget exhausted mid-batch
                return encode(prefix_ids)
        return self._assemble(keys, device)

    def _assemble(self, keys: Sequence[Hashable], device: torch.device | str) -> PrefixState:
        entries = [self._data[k] for k in keys]
        n_layers = len(entries[0])
        data = []
        for layer in range(n_layers):
            # pad_sequence pads dim 0 (sequence) of (len, heads, hd) tensors, on the left
            ks = pad_sequence([e[layer][0].transpose(0, 1) for e in entries], batch_first=True, padding_side="left")
            vs = pad_sequence([e[layer][1].transpose(0, 1) for e in entries], batch_first=True, padding_side="left")
            data.append((ks.transpose(1, 2).contiguous().to(device), vs.transpose(1, 2).contiguous().to(device)))
        lengths = torch.tensor([e[0][0].shape[1] for e in entries], device=device)
        width = int(lengths.max())
        mask = (torch.arange(width, device=device).unsqueeze(0) >= (width - lengths).unsqueeze(1)).long()
        if self.dtype is not None and self._model_dtype is not None:
            data = [(k.to(self._model_dtype), v.to(self._model_dtype)) for k, v in data]
        return PrefixState(cache=DynamicCache(ddp_cache_data=data), attention_mask=mask, lengths=lengths)
