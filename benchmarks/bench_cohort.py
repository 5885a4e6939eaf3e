"""Benchmark: synthetic cohort generation and UKB import (parse + QC) — throughput and peak memory.

Each measurement runs in a fresh subprocess so its peak RSS is its own. Two cohort sizes side by side
show whether memory stays bounded as n grows (streaming), and the time per participant is extrapolated
to a UK-Biobank-sized cohort of 500,000.

    python benchmarks/bench_cohort.py [--sizes 2000 10000] [--out benchmarks/results/cohort.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
n, stage, d = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
if stage == "generate":
    from biobank.synth import generate_export
    t = time.perf_counter(); generate_export(n=n, seed=0, out_dir=d, progress=False); dt = time.perf_counter() - t
else:
    from biobank.ukb_import import import_ukb_export
    t = time.perf_counter(); import_ukb_export(d / "ukb_export.csv", d, progress=False); dt = time.perf_counter() - t
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"stage": stage, "n": n, "seconds": dt, "per_s": n / dt, "peak_rss_mb": rss_mb}))
"""


def measure(n: int, stage: str, workdir: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(n), stage, str(workdir)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[20000, 60000])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cohort.json"))
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            for stage in ("generate", "import"):
                r = measure(n, stage, Path(tmp))
                r["export_mb"] = (Path(tmp) / "ukb_export.csv").stat().st_size / 2**20
                rows.append(r)
                print(f"{stage:9s} n={n:>7,}  {r['per_s']:8.0f} participants/s  peak RSS {r['peak_rss_mb']:7.0f} MB")
    largest = {s: max((r for r in rows if r["stage"] == s), key=lambda r: r["n"]) for s in ("generate", "import")}
    extrapolation = {s: 500_000 / r["per_s"] / 60 for s, r in largest.items()}
    result = {
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "rows": rows,
        "extrapolated_minutes_for_500k": extrapolation,
        "rss_ratio_largest_vs_smallest": {
            s: max(r["peak_rss_mb"] for r in rows if r["stage"] == s) / min(r["peak_rss_mb"] for r in rows if r["stage"] == s)
            for s in ("generate", "import")
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["extrapolated_minutes_for_500k"], indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
