"""Tiny random-weight causal LMs built from a config, for tests and speed benchmarks.

Why: the graft's mechanics (splice, masks, padding side, KV-cache reuse, frozen weights,
checkpoint identity) must be tested on more than one architecture without downloading anything
and in seconds on 2 CPU cores. A byte-level BPE tokenizer trained on prompt-like text in
milliseconds, plus a Llama-style or GPT-2-style decoder from a config, saved as an ordinary
Hugging Face directory, loads through exactly the same :func:`llm_bridge.llm.load_llm` path as a
real model. The same builder makes the ~1B-parameter Llama used for GPU throughput benchmarks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, PreTrainedTokenizerFast

from llm_bridge.llm import LLMIdentity, LoadedLLM, config_hash
from llm_bridge.serialize import FIELDS

Arch = Literal["llama", "gpt2"]
SPECIAL_TOKENS = ("<|endoftext|>", "<pad>")


def _corpus(with_answers: bool, seed: int) -> list[str]:
    """Prompt-like sentences so that field labels, digits and answers become tokens."""
    rng = np.random.default_rng(seed)
    words = [label for label, _, _ in FIELDS.values()] + [
        "Question", "Does this person have asthma", "chronic obstructive pulmonary disease (COPD)", "Answer",
        "Spirogram", "unknown", "years", "male", "female", "never", "previous", "current", "pack-years",
        "Participant record", "kg/m2", "L/s", "the", "a", "is", "what", "and", "of", "or",
    ]
    lines = []
    for _ in range(400):
        picked = rng.choice(words, size=6)
        numbers = [f"{rng.normal(0, 30):.1f}" for _ in range(2)]
        line = " ".join([*picked, *numbers])
        if with_answers:
            line += " Answer:" + (" yes" if rng.random() < 0.5 else " no")
        lines.append(line)
    return lines


def build_tokenizer(vocab_size: int = 512, *, single_token_answers: bool = True, seed: int = 0) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (GPT-2 style, leading-space tokens) trained on prompt-like text.

    Args:
        vocab_size: target vocabulary (bytes + merges + 2 specials).
        single_token_answers: when False the corpus never contains "yes"/"no" and the vocabulary is
            bytes only, so " yes" is several tokens (the bad-tokenizer test case).
        seed: corpus seed.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    size = vocab_size if single_token_answers else 256 + len(SPECIAL_TOKENS)
    trainer = trainers.BpeTrainer(vocab_size=size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(single_token_answers, seed), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<pad>", unk_token=None)


def tiny_config(arch: Arch, vocab_size: int, *, hidden: int = 32, layers: int = 2, heads: int = 4,
                intermediate: int | None = None, max_positions: int = 4096):
    """A Hugging Face config of a small decoder (Llama with GQA, or GPT-2)."""
    if arch == "llama":
        return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate or 2 * hidden,
                           num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                           max_position_embeddings=max_positions, tie_word_embeddings=True,
                           bos_token_id=0, eos_token_id=0, pad_token_id=1)
    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=max_positions,
                          bos_token_id=0, eos_token_id=0, pad_token_id=1)
    raise ValueError(f"unknown tiny architecture {arch!r}; use 'llama' or 'gpt2'")


def build_tiny_llm(out_dir: str | Path, arch: Arch = "llama", *, hidden: int = 32, layers: int = 2, heads: int = 4,
                   single_token_answers: bool = True, seed: int = 0) -> Path:
    """Save a random-weight decoder + tokenizer as a Hugging Face directory and return it.

    Args:
        out_dir: directory to write (``config.json``, ``model.safetensors``, tokenizer files).
        arch: ``"llama"`` or ``"gpt2"``.
        hidden, layers, heads: model size.
        single_token_answers: see :func:`build_tokenizer`.
        seed: torch seed of the weights and corpus seed of the tokenizer.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(single_token_answers=single_token_answers, seed=seed)
    cfg = tiny_config(arch, len(tokenizer), hidden=hidden, layers=layers, heads=heads)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


#: Llama-architecture sizes for speed benchmarks. ``1b``: Llama-3.2-1B's decoder (hidden 2048, 16 layers,
#: 32 query / 8 key-value heads, MLP 8192) with the small benchmark vocabulary: 0.97 B parameters.
LLAMA_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"hidden": 64, "layers": 2, "heads": 4, "intermediate": 128},
    "1b": {"hidden": 2048, "layers": 16, "heads": 32, "intermediate": 8192},
}


def preset_config(preset: str, vocab_size: int):
    """The ``LlamaConfig`` of a :data:`LLAMA_PRESETS` size (grouped-query attention, 4 query heads per KV head).

    Raises:
        ValueError: unknown preset.
    """
    if preset not in LLAMA_PRESETS:
        raise ValueError(f"unknown Llama preset {preset!r}; use one of {', '.join(LLAMA_PRESETS)}")
    size = LLAMA_PRESETS[preset]
    cfg = tiny_config("llama", vocab_size, hidden=size["hidden"], layers=size["layers"], heads=size["heads"],
                      intermediate=size["intermediate"])
    cfg.num_key_value_heads = max(1, size["heads"] // 4)
    return cfg


def random_llama(preset: str = "1b", *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 attn_implementation: str = "sdpa", seed: int = 0):
    """A frozen random-weight Llama of a :data:`LLAMA_PRESETS` size, in memory, as a ``LoadedLLM``.

    Why in memory: throughput does not depend on the weights' values, and a 1B checkpoint written to
    disk and read back would cost minutes and 4 GB for nothing. The weights hash is not computed (the
    identity says ``random:seed<N>``): these models are never checkpointed against.

    Raises:
        ValueError: unknown preset.
    """
    tokenizer = build_tokenizer(seed=seed)
    cfg = preset_config(preset, len(tokenizer))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation=attn_implementation)
    model.to(device).eval().requires_grad_(False)
    identity = LLMIdentity(name=f"random-llama-{preset}", config_hash=config_hash(model.config),
                           weights_hash=f"random:seed{seed}")
    return LoadedLLM(model=model, tokenizer=tokenizer, identity=identity, source=Path(f"random-llama-{preset}"))
