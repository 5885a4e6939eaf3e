"""Benchmark: spirogram-encoder training (fwd + bwd + AdamW step) and embedding throughput, in curves/s.

Why synthetic tensors: throughput depends on the network, batch and device only; reading a cohort
would time Parquet and curve derivation instead (the curve derivation has its own benchmark).
Each configuration is warmed up (compilation, allocator, oneDNN kernel choice) before timing.
The results are merged into a JSON file keyed by device, so CPU and GPU runs can be added separately.

    python benchmarks/bench_encoder.py                                  # CPU: widths 0.25, 0.5, 1.0
    python benchmarks/bench_encoder.py --device cuda --widths 1.0       # GPU: fp32 / bf16, +- torch.compile
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time
from pathlib import Path

import torch

from signals.encoder import EncoderConfig, SpiroEncoder

TRAIN_PARTICIPANTS = 14_000  # the main job: ~20k participants, 70% train
TARGETS_H100 = {"train_curves_per_s": 5_000, "embed_curves_per_s": 50_000}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: torch.device, min_seconds: float, min_iters: int = 3) -> float:
    """Seconds per call of ``fn``, averaged over at least ``min_iters`` calls and ``min_seconds``."""
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - t0 < min_seconds:
        fn()
        n += 1
    _sync(device)
    return (time.perf_counter() - t0) / n


def bench_one(width: float, channels: int, device: torch.device, precision: str, compile_: bool,
              train_batch: int, embed_batch: int, seconds: float) -> dict:
    """Train and embed throughput for one configuration."""
    torch.manual_seed(0)
    cfg = EncoderConfig(channels=("flow_volume", "volume_time")[:channels], width_multiplier=width)
    net = SpiroEncoder(cfg).to(device)
    if compile_:
        net.compile()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    x = torch.randn(train_batch, channels, cfg.curve_points, device=device)
    y = torch.randint(0, 2, (train_batch, len(cfg.traits)), device=device).float()

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast:
            _, loss = net(x, y)
        loss.backward()
        opt.step()

    net.train()
    for _ in range(3):  # warm-up (and compile)
        train_step()
    t_train = _timed(train_step, device, seconds)

    xe = torch.randn(embed_batch, channels, cfg.curve_points, device=device)
    net.eval()

    def embed_step() -> None:
        with torch.no_grad(), autocast:
            net.encode(xe)

    for _ in range(3):
        embed_step()
    t_embed = _timed(embed_step, device, seconds)
    train_rate = train_batch / t_train
    return {
        "width": width, "channels": channels, "precision": precision, "compile": compile_,
        "params": net.num_params(), "train_batch": train_batch, "embed_batch": embed_batch,
        "train_curves_per_s": round(train_rate, 1), "embed_curves_per_s": round(embed_batch / t_embed, 1),
        "epoch_seconds_14k_train": round(TRAIN_PARTICIPANTS / train_rate, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--widths", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    ap.add_argument("--channels", type=int, default=1, choices=[1, 2])
    ap.add_argument("--train-batch", type=int, default=256)
    ap.add_argument("--embed-batch", type=int, default=None, help="default 1024 on CPU, 8192 on CUDA")
    ap.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per measurement")
    ap.add_argument("--compile", choices=["off", "on", "both"], default=None,
                    help="torch.compile (default: off on CPU, both on CUDA)")
    ap.add_argument("--precision", choices=["fp32", "bf16", "both"], default=None,
                    help="default: fp32 on CPU, both on CUDA")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/encoder.json"))
    args = ap.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    compiles = {"off": [False], "on": [True], "both": [False, True]}[args.compile or ("both" if cuda else "off")]
    precisions = {"fp32": ["fp32"], "bf16": ["bf16"], "both": ["fp32", "bf16"]}[args.precision or ("both" if cuda else "fp32")]
    embed_batch = args.embed_batch or (8192 if cuda else 1024)
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # The reference machine's 2 cores are shared: record the load so contended numbers are recognisable.
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rows = []
    for width in args.widths:
        for precision in precisions:
            for compile_ in compiles:
                r = bench_one(width, args.channels, device, precision, compile_, args.train_batch, embed_batch, args.seconds)
                rows.append(r)
                print(f"{args.device} width={width:<5} {precision} compile={compile_!s:<5} params={r['params']:>9,}  "
                      f"train {r['train_curves_per_s']:>9,.0f} curves/s  embed {r['embed_curves_per_s']:>9,.0f} curves/s  "
                      f"(epoch of 14k: {r['epoch_seconds_14k_train']} s)")

    name = torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine()
    entry = {
        "device": args.device, "device_name": name, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(), "load_avg_1min_before": load_before,
        "load_avg_1min_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None, "rows": rows,
    }
    if cuda:
        entry["targets_h100"] = TARGETS_H100
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[args.device] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results -> {args.out}")


if __name__ == "__main__":
    main()
