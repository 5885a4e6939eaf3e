"""Free-text answers grounded in one participant's record (and spirogram tokens): ``spirolm chat``.

Meaningful only with an instruction-tuned LLM (the default SmolLM2-135M-Instruct is one, but at
135M parameters its answers are fluent rather than reliable); a base LM just continues the text.
The prompt is the model's own: :meth:`llm_bridge.model.HeLM.prefix_ids` for the record and
:meth:`~llm_bridge.model.HeLM.tail_ids` for the tail, with every trait's spirogram tokens where they
sat in training and the free-text question in place of the yes/no one.
"""

from __future__ import annotations

import pandas as pd
import torch

from llm_bridge.model import HeLM
from llm_bridge.splice import pad_left, splice


def chat_answer(helm: HeLM, participant: pd.DataFrame, question: str, *, embedding: torch.Tensor | None = None,
                max_new_tokens: int = 64) -> str:
    """Greedy answer to ``question`` about the single participant row in ``participant``.

    Args:
        helm: a trained graft, or an untrained ``text`` variant for a record-only answer.
        participant: a one-row participants frame.
        question: free text.
        embedding: ``(1, E)`` spirogram embedding (spirogram variants); None leaves the spirogram out.
        max_new_tokens: answer length cap.
    """
    tok = helm.tokenizer
    spiro = embedding is not None and helm.cfg.uses_spiro
    asked = tok(helm.cfg.prompt.free_question(question), add_special_tokens=False)["input_ids"]
    tail = helm.tail_ids(asked, every_set=True, spiro=spiro)
    tab = helm.tab_features(participant)
    with torch.no_grad():
        soft = helm.soft_tokens(1, embedding, None if tab is None else torch.from_numpy(tab), every_set=True,
                                spiro=spiro)
        ids, mask = pad_left([helm.prefix_ids(participant)[0] + tail], helm.pad_id, helm.llm.device)
        inputs = splice(helm.llm.get_input_embeddings(), ids, mask, soft)
        out = helm.llm.generate(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                                max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=helm.pad_id)
    return tok.decode(out[0], skip_special_tokens=True).strip()
