"""Calibration numbers of the synthetic cohort, per variant (reported in docs/synthetic_cohort.md).

Usage::

    python benchmarks/synth_calibration.py [--n 50000] [--seed 0] [--variant default] [--out-dir /tmp/synth_cal]

Writes ``benchmarks/results/synth_calibration.json`` (``--variant default``) or
``benchmarks/results/synth_calibration_<variant>.json``: throughput and peak RSS of ``generate_export``
(each run in a fresh process, so the RSS belongs to that run; the n = 10,000 reference run only for the
default, as variants differ in the label model only), then prevalence and AUROCs per trait
(``biobank.synth.calibration.calibration_report``) computed from the written export (tabular features) and
``latents.parquet`` (oracle, true curve parameters, the spirogram-visible part of the true logit).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import time
from pathlib import Path

import pandas as pd

from biobank.synth import DEFAULT_VARIANT, SYNTH_VARIANTS, generate_export, synth_config
from biobank.synth.calibration import calibration_report

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def results_path(variant: str) -> Path:
    """Where a variant's numbers go (the default keeps its historical name)."""
    name = "synth_calibration" if variant == DEFAULT_VARIANT else f"synth_calibration_{variant}"
    return RESULTS_DIR / f"{name}.json"


def _run(n: int, seed: int, variant: str, out_dir: str, queue: mp.Queue) -> None:
    t0 = time.perf_counter()
    result = generate_export(n, seed, Path(out_dir), synth_config(variant), chunk_size=5000, progress=False)
    queue.put({
        "n": n, "seconds": round(time.perf_counter() - t0, 2),
        "participants_per_s": round(n / (time.perf_counter() - t0), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "csv_mb": round(result.export_csv.stat().st_size / 2**20, 1),
    })


def timed_generation(n: int, seed: int, variant: str, out_dir: Path) -> dict:
    """Run generate_export in a fresh process and return its speed and peak memory."""
    queue: mp.Queue = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=_run, args=(n, seed, variant, str(out_dir), queue))
    proc.start()
    stats = queue.get()
    proc.join()
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", choices=tuple(SYNTH_VARIANTS), default=DEFAULT_VARIANT)
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/spirolm_synth_calibration"))
    args = parser.parse_args()
    base = args.out_dir / args.variant
    perf = [timed_generation(10_000, args.seed, args.variant, base / "n10000")] if args.variant == DEFAULT_VARIANT else []
    perf.append(timed_generation(args.n, args.seed, args.variant, base / f"n{args.n}"))
    run_dir = base / f"n{args.n}"
    export = pd.read_csv(run_dir / "ukb_export.csv", usecols=lambda c: not c.startswith("3066"), low_memory=False)
    latents = pd.read_parquet(run_dir / "latents.parquet")
    cfg = synth_config(args.variant)
    t0 = time.perf_counter()
    report = calibration_report(export, latents, seed=args.seed, gbm=True, labels=cfg.labels)
    out = {"n": args.n, "seed": args.seed, "variant": args.variant,
           "config": "SynthConfig() defaults" if args.variant == DEFAULT_VARIANT else f"SYNTH_VARIANTS[{args.variant!r}]",
           "labels": {k: v for k, v in vars(cfg.labels).items() if not k.startswith("p_") and k != "distractor_rate"},
           "machine": platform.machine(), "generation": perf, "report_seconds": round(time.perf_counter() - t0, 1),
           "traits": {t: {k: round(v, 4) for k, v in r.items()} for t, r in report.items()}}
    path = results_path(args.variant)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
