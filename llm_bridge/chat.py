"""Free-text answers grounded in one participant's record (and spirogram tokens): ``spirolm chat``.

Meaningful only with an instruction-tuned LLM (the default SmolLM2-135M-Instruct is one, but at
135M parameters its answers are fluent rather than reliable); a base LM just continues the text.
With a trained ``text+spiro`` checkpoint the spirogram soft tokens are spliced in after the
record, exactly where they sat in training; the question replaces the yes/no question.
"""

from __future__ import annotations

import pandas as pd
import torch

from llm_bridge.llm import LoadedLLM
from llm_bridge.serialize import SerializerConfig, serialize_records
from llm_bridge.splice import SOFT_TOKEN_ID, pad_left, splice


def chat_answer(
    llm: LoadedLLM,
    participant: pd.DataFrame,
    question: str,
    *,
    soft_tokens: torch.Tensor | None = None,
    serializer: SerializerConfig = SerializerConfig(),
    header: str = "Participant record (UK Biobank):\n",
    spiro_intro: str = "\nSpirogram:",
    max_new_tokens: int = 64,
) -> str:
    """Greedy answer to ``question`` about the single participant row in ``participant``.

    Args:
        llm: the LLM.
        participant: a one-row participants frame.
        question: free text.
        soft_tokens: ``(1, k, d)`` projected spirogram tokens from a trained HeLM, or None.
        serializer: record fields.
        header, spiro_intro: prompt pieces (as in training).
        max_new_tokens: answer length cap.
    """
    tok = llm.tokenizer
    record = serialize_records(participant, serializer).iloc[0]
    ids = tok(header + record, add_special_tokens=False)["input_ids"]
    if soft_tokens is not None:
        ids += tok(spiro_intro, add_special_tokens=False)["input_ids"] + [SOFT_TOKEN_ID] * soft_tokens.shape[1]
    ids += tok(f"\nQuestion: {question.strip()}\nAnswer:", add_special_tokens=False)["input_ids"]
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    input_ids, mask = pad_left([ids], pad, llm.model.device)
    inputs = splice(llm.model.get_input_embeddings(), input_ids, mask, soft_tokens)
    with torch.no_grad():
        out = llm.model.generate(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                                 max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
    return tok.decode(out[0], skip_special_tokens=True).strip()
