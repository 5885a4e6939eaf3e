"""Calibration numbers of the default synthetic cohort (reported in docs/synthetic_cohort.md).

Usage::

    python benchmarks/synth_calibration.py [--n 50000] [--seed 0] [--out-dir /tmp/synth_cal]

Writes ``benchmarks/results/synth_calibration.json``: throughput and peak RSS of ``generate_export``
for n = 10,000 and for the calibration n (each in a fresh process, so the RSS belongs to that run), then
prevalence and AUROCs per trait (``biobank.synth.calibration.calibration_report``) computed from the
written export (tabular features) and ``latents.parquet`` (oracle, true curve parameters).
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

from biobank.synth import SynthConfig, generate_export
from biobank.synth.calibration import calibration_report

RESULTS = Path(__file__).resolve().parent / "results" / "synth_calibration.json"


def _run(n: int, seed: int, out_dir: str, queue: mp.Queue) -> None:
    t0 = time.perf_counter()
    result = generate_export(n, seed, Path(out_dir), SynthConfig(), chunk_size=5000, progress=False)
    queue.put({
        "n": n, "seconds": round(time.perf_counter() - t0, 2),
        "participants_per_s": round(n / (time.perf_counter() - t0), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "csv_mb": round(result.export_csv.stat().st_size / 2**20, 1),
    })


def timed_generation(n: int, seed: int, out_dir: Path) -> dict:
    """Run generate_export in a fresh process and return its speed and peak memory."""
    queue: mp.Queue = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=_run, args=(n, seed, str(out_dir), queue))
    proc.start()
    stats = queue.get()
    proc.join()
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/spirolm_synth_calibration"))
    args = parser.parse_args()
    perf = [timed_generation(10_000, args.seed, args.out_dir / "n10000")]
    perf.append(timed_generation(args.n, args.seed, args.out_dir / f"n{args.n}"))
    run_dir = args.out_dir / f"n{args.n}"
    export = pd.read_csv(run_dir / "ukb_export.csv", usecols=lambda c: not c.startswith("3066"), low_memory=False)
    latents = pd.read_parquet(run_dir / "latents.parquet")
    report = calibration_report(export, latents, seed=args.seed, gbm=True)
    out = {"n": args.n, "seed": args.seed, "config": "SynthConfig() defaults", "machine": platform.machine(),
           "generation": perf, "traits": {t: {k: round(v, 4) for k, v in r.items()} for t, r in report.items()}}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
