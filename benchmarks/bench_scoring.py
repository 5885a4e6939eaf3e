"""Batch-scoring throughput: ``spirolm score`` local engine vs Ray engine, same model, same cohort, one run.

Measures participants/s and prompt tokens/s end to end (chunk read → QC → curves → encoder → HeLM →
shard write), the peak resident memory of the whole process tree (driver + Ray workers, sampled every
0.2 s with psutil), and extrapolates to 500,000 participants and to N Ray workers. The extrapolation
assumes throughput scales linearly with workers (each worker as fast as measured here) and ignores
cluster start-up and shared-storage I/O: it is an estimate, not a measurement.

Model: the trained encoder of ``runs/default`` plus an **untrained** HeLM ``text+spiro`` projector on the
real default SmolLM2-135M-Instruct (speed does not depend on the projector's weights; quality is not
measured here). Usage::

    python benchmarks/bench_scoring.py [--run runs/default] [--n 200] [--device cuda --dtype bf16]

Writes ``benchmarks/results/scoring.json`` and ``scoring.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow.parquet as pq
import torch

from biobank.cohort_io import usable
from experiments.serve.chunks import ScoreConfig
from experiments.serve.pyfunc import save_helm_pyfunc
from experiments.serve.scoring import read_scores, score_cohort
from llm_bridge.llm import default_num_threads, load_llm
from llm_bridge.model import HeLM, HeLMConfig

RESULTS = Path(__file__).resolve().parent / "results"
TARGET = 500_000


class PeakRSS:
    """Peak RSS (bytes) of this process and all its descendants while the block runs."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def sub_cohort(cohort: Path, n: int, out: Path) -> Path:
    """The first ``n`` participants (by eid) of ``cohort`` and their blows, as a cohort directory."""
    out.mkdir(parents=True, exist_ok=True)
    eids = np.sort(pq.read_table(cohort / "participants.parquet", columns=["eid"])["eid"].to_numpy())[:n]
    for name in ("participants.parquet", "blows.parquet"):
        table = pq.read_table(cohort / name, filters=[("eid", "in", [int(e) for e in eids])])
        pq.write_table(table, out / name)
    shutil.copy(cohort / "cohort.json", out / "cohort.json")
    return out


def prompt_tokens(helm: HeLM, cohort: Path) -> int:
    """Tokens the LLM reads for the scored participants: text prefix once + every trait's tail."""
    p = pd.read_parquet(cohort / "participants.parquet")
    p = p[usable(p)] if helm.cfg.uses_spiro else p
    tails = sum(len(helm._template(t)) for t in helm.cfg.traits)
    return int(sum(len(ids) for ids in helm.prefix_ids(p)) + tails * len(p))


def run_engine(engine: str, cohort: Path, model: Path, out: Path, args: argparse.Namespace) -> dict:
    cfg = ScoreConfig(chunk_size=args.chunk_size, batch_size=args.batch_size, engine=engine, device=args.device,
                      dtype=args.dtype, ray_workers=args.ray_workers, ray_cpus_per_worker=args.ray_cpus_per_worker,
                      progress=False)
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        result = score_cohort(cohort, model, out, cfg=cfg)
        seconds = time.perf_counter() - t0
    return {"engine": engine, "seconds": round(seconds, 2), "participants": result.n_participants,
            "scored": result.n_scored, "qc_fail": result.n_qc_fail,
            "participants_per_s": round(result.n_participants / seconds, 3), "peak_rss_mb": round(mem.peak / 2**20),
            "workers": (args.ray_workers if engine == "ray" else 1),
            "threads_per_worker": (args.ray_cpus_per_worker if engine == "ray" else default_num_threads())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/default"), help="finished main run (cohort + encoder)")
    ap.add_argument("--n", type=int, default=200, help="participants to score")
    ap.add_argument("--chunk-size", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--ray-workers", type=int, default=2)
    ap.add_argument("--ray-cpus-per-worker", type=int, default=1)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--engines", nargs="+", default=["local", "ray"])
    ap.add_argument("--out", type=Path, default=RESULTS / "scoring.json")
    args = ap.parse_args()

    cohort_src, encoder = args.run / "cohort", args.run / "encoder" / "encoder" / "encoder.pt"
    traits = tuple(json.loads((cohort_src / "cohort.json").read_text())["traits"])
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        cohort = sub_cohort(cohort_src, args.n, tmp / "cohort")
        llm = load_llm(None)
        helm = HeLM(llm, HeLMConfig(traits=traits, seed=0))
        ckpt = helm.save_checkpoint(tmp / "helm.pt", extra={"note": "untrained projector (speed benchmark)"})
        tokens = prompt_tokens(helm, cohort)
        model = save_helm_pyfunc(tmp / "model", encoder_checkpoint=encoder, helm_checkpoint=ckpt, llm=None)
        del helm, llm
        rows = []
        load_before = os.getloadavg()[0]
        for engine in args.engines:
            row = run_engine(engine, cohort, model, tmp / f"out_{engine}", args)
            row["prompt_tokens"] = tokens
            row["tokens_per_s"] = round(tokens / row["seconds"], 1)
            rows.append(row)
        if len(rows) == 2:
            a, b = (read_scores(tmp / f"out_{e}") for e in args.engines)
            cols = [c for c in a.columns if c.startswith("risk_")]
            max_diff = float(np.nanmax(np.abs(a[cols].to_numpy() - b[cols].to_numpy())))
        else:
            max_diff = None
    per_worker = {r["engine"]: r["participants_per_s"] / r["workers"] for r in rows}
    extrapolation = {r["engine"]: {"hours_500k": round(TARGET / r["participants_per_s"] / 3600, 1)} for r in rows}
    if "ray" in per_worker:
        extrapolation["ray_n_workers_hours_500k"] = {str(n): round(TARGET / (per_worker["ray"] * n) / 3600, 1)
                                                     for n in (8, 32, 128)}
    result = {
        "what": "spirolm score end to end: chunk read, QC, curves, encoder, HeLM (SmolLM2-135M, untrained "
                "text+spiro projector), shard write",
        "machine": {"cpus": os.cpu_count(), "torch_threads": default_num_threads(), "python": platform.python_version(),
                    "torch": torch.__version__, "device": args.device, "dtype": args.dtype,
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "note": f"1-min load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after the run "
                            f"on {os.cpu_count()} CPUs (above the CPU count: other jobs shared the cores)"},
        "settings": {"n": args.n, "chunk_size": args.chunk_size, "batch_size": args.batch_size, "traits": list(traits)},
        "rows": rows,
        "ratio_ray_over_local": (round(rows[1]["participants_per_s"] / rows[0]["participants_per_s"], 2)
                                 if len(rows) == 2 else None),
        "max_abs_risk_difference_local_vs_ray": max_diff,
        "extrapolation_500k": extrapolation,
        "extrapolation_note": "linear in participants and in Ray workers (each as fast as one measured worker); "
                              "ignores cluster start-up and storage I/O - an estimate, not a measurement",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(to_markdown(result))
    print(to_markdown(result))


def to_markdown(r: dict) -> str:
    lines = [f"# Batch scoring throughput ({r['machine']['device']}, {r['machine']['dtype']})", "",
             f"{r['what']}. {r['settings']['n']} participants of the default synthetic cohort, chunk "
             f"{r['settings']['chunk_size']}, batch {r['settings']['batch_size']}, traits "
             f"{', '.join(r['settings']['traits'])}. Machine: {r['machine']['cpus']} CPUs; {r['machine']['note']}.", "",
             "| engine | workers × threads | seconds | participants/s | prompt tokens/s | peak RSS (MB, all processes) | 500k participants (h, extrapolated) |",
             "|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['engine']} | {row['workers']} × {row['threads_per_worker']} | {row['seconds']} | "
                     f"{row['participants_per_s']} | {row['tokens_per_s']} | {row['peak_rss_mb']} | "
                     f"{r['extrapolation_500k'][row['engine']]['hours_500k']} |")
    if r.get("ratio_ray_over_local") is not None:
        lines += ["", f"Ray / local throughput: {r['ratio_ray_over_local']}× (same cores). Largest risk difference "
                      f"between the engines: {r['max_abs_risk_difference_local_vs_ray']:.2e}."]
    if "ray_n_workers_hours_500k" in r["extrapolation_500k"]:
        hours = r["extrapolation_500k"]["ray_n_workers_hours_500k"]
        lines += ["", "Extrapolation to 500,000 participants on N Ray workers like one measured here: "
                  + ", ".join(f"{n} workers ≈ {h} h" for n, h in hours.items()) + f". {r['extrapolation_note']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
