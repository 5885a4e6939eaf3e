"""LLM-bridge speed ratios, measured in one run on the same machine and model.

1. Training step: prefix KV cache (no-grad text prefix, soft tokens + question with gradients)
   vs full-sequence forward+backward; also with the prefix already in the per-participant store
   (what later epochs cost).
2. Readout: one forward with ``logits_to_keep=1`` vs ``generate()``-based scoring (first-step scores).
3. Multi-trait scoring: one shared prefix for every trait vs one full prompt per trait.

Writes ``benchmarks/results/llm_bridge.json``. Default LLM: the embedded SmolLM2-135M-Instruct on CPU
with the threads this process may use (2 here). Usage::

    python benchmarks/bench_llm_bridge.py [--llm PATH] [--batch 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from llm_bridge.kv_cache import PrefixKVStore
from llm_bridge.llm import configure_threads, load_llm
from llm_bridge.model import HeLM, HeLMConfig
from llm_bridge.readout import AnswerIds, last_logits, risk, yes_no_logits
from llm_bridge.splice import pad_left, splice

OUT = Path(__file__).resolve().parent / "results" / "llm_bridge.json"


def participants(n: int, seed: int) -> pd.DataFrame:
    """Synthetic records with every serialized field filled (realistic prompt length)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "eid": np.arange(n), "age": rng.uniform(40, 70, n), "sex": rng.choice(["male", "female"], n),
        "height_cm": rng.normal(170, 8, n), "bmi": rng.normal(27, 4, n),
        "smoking_status": rng.choice(["never", "previous", "current"], n), "pack_years": rng.uniform(0, 40, n),
        "ethnicity": rng.choice(["white", "south_asian", "black"], n), "hay_fever_eczema": rng.integers(0, 2, n),
        "parental_copd": rng.integers(0, 2, n), "townsend": rng.normal(0, 3, n), "pm25": rng.normal(10, 1, n),
        "fev1_l": rng.normal(3, 0.6, n), "fev1_z": rng.normal(0, 1, n), "fvc_l": rng.normal(4, 0.7, n),
        "fvc_z": rng.normal(0, 1, n), "fev1_fvc": rng.normal(0.75, 0.08, n), "fev1_fvc_z": rng.normal(0, 1, n),
        "pef_l_s": rng.normal(8, 1.5, n), "fef25_75_l_s": rng.normal(3, 1, n),
    })


def timed(fn, repeats: int) -> float:
    """Median wall seconds of ``fn`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llm", default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    threads = configure_threads()
    llm = load_llm(args.llm)
    df = participants(args.batch, seed=0)
    labels = torch.tensor(np.random.default_rng(1).integers(0, 2, (args.batch, 2)), dtype=torch.float32)
    emb = torch.randn(args.batch, 128, generator=torch.Generator().manual_seed(0))
    helm = HeLM(llm, HeLMConfig())
    ids = helm.prefix_ids(df)
    eids = df["eid"].tolist()

    def step(use_cache: bool, store: PrefixKVStore | None = None) -> None:
        helm.projector.zero_grad(set_to_none=True)
        if use_cache:
            state = store.get(helm.llm, eids, ids, helm.pad_id) if store else helm.encode_prefix(ids)
            out = helm.score_prefix(state, emb)
        else:
            out = helm.score_full(ids, emb)
        helm.loss(out, labels).backward()

    store = PrefixKVStore()
    t_full = timed(lambda: step(False), args.repeats)
    t_cache = timed(lambda: step(True), args.repeats)
    t_store = timed(lambda: step(True, store), args.repeats)

    answers = AnswerIds(*helm.answers.__dict__.values())
    one = HeLM(llm, HeLMConfig(variant="text", traits=("asthma",)))
    text_ids = one.prefix_ids(df)
    template = one._templates["asthma"]
    batch_ids, mask = pad_left([list(p) + template for p in text_ids], one.pad_id)

    @torch.no_grad()
    def single_forward() -> torch.Tensor:
        inputs = splice(one.llm.get_input_embeddings(), batch_ids, mask, None)
        return risk(yes_no_logits(last_logits(one.llm, inputs), answers))

    @torch.no_grad()
    def generate_scoring() -> torch.Tensor:
        gen = one.llm.generate(input_ids=batch_ids, attention_mask=mask, max_new_tokens=1, do_sample=False,
                               output_scores=True, return_dict_in_generate=True, pad_token_id=one.pad_id)
        return risk(yes_no_logits(gen.scores[0], answers))

    torch.testing.assert_close(single_forward(), generate_scoring(), atol=1e-4, rtol=1e-4)
    t_single = timed(single_forward, args.repeats)
    t_generate = timed(generate_scoring, args.repeats)

    @torch.no_grad()
    def shared_prefix() -> torch.Tensor:
        return helm.score_prefix(helm.encode_prefix(ids), emb)

    @torch.no_grad()
    def per_trait() -> torch.Tensor:
        return helm.score_full(ids, emb)

    t_shared = timed(shared_prefix, args.repeats)
    t_per_trait = timed(per_trait, args.repeats)

    lengths = [len(p) for p in ids]
    result = {
        "llm": llm.identity.name, "params_m": round(sum(p.numel() for p in llm.model.parameters()) / 1e6, 1),
        "device": "cpu", "threads": threads, "machine": platform.machine(), "torch": torch.__version__,
        "batch": args.batch, "repeats": args.repeats, "prefix_tokens_mean": float(np.mean(lengths)),
        "tail_tokens": len(helm._templates["asthma"]), "traits": list(helm.cfg.traits),
        "train_step_s": {"full_sequence": t_full, "prefix_cache": t_cache, "prefix_store_hit": t_store},
        "train_step_speedup": {"prefix_cache_vs_full": t_full / t_cache, "prefix_store_vs_full": t_full / t_store},
        "readout_s": {"single_forward": t_single, "generate": t_generate},
        "readout_speedup_single_vs_generate": t_generate / t_single,
        "multi_trait_s": {"shared_prefix": t_shared, "prompt_per_trait": t_per_trait},
        "multi_trait_speedup_shared_vs_per_trait": t_per_trait / t_shared,
        "scoring_participants_per_s": args.batch / t_shared,
        "note": "medians of wall time on a possibly shared CPU; compare ratios within this file only",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
