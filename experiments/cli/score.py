"""``spirolm score``: thin typer command over :func:`experiments.serve.scoring.score_cohort`.

Registered in ``experiments.cli.main``, which turns :class:`~signals.errors.SpirolmInputError` into one
``error:`` line and exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from experiments.serve.chunks import ScoreConfig
from experiments.serve.scoring import score_cohort

console = Console()


def score(
    cohort: Annotated[Path, typer.Option(help="Cohort directory or UK Biobank export file (CSV/TSV/Parquet).")],
    model: Annotated[str, typer.Option(help="HeLM pyfunc: local MLflow model directory, models:/name/version or runs:/<id>/helm_model.")],
    out: Annotated[Path, typer.Option(help="Result directory (shards + manifest; re-run the same command to resume).")],
    chunk_size: Annotated[Optional[int], typer.Option(help="Participants per shard (unit of resume and memory).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Participants per LLM forward pass.")] = None,
    engine: Annotated[Optional[str], typer.Option(help="local (one process) or ray (Ray Data actors, local or remote cluster).")] = None,
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster address (default: $RAY_ADDRESS, else a local instance).")] = None,
    ray_workers: Annotated[Optional[int], typer.Option(help="Ray scoring actors (default: CPUs / 2).")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda.")] = None,
    precision: Annotated[Optional[str], typer.Option(help="auto (bf16 where native) | fp32 | bf16.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="Torch threads of the local engine (default: the cores available).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Discard scores in --out made with other settings.")] = False,
) -> None:
    """Score every participant of a cohort with a HeLM model into resumable Parquet shards."""
    given = {"chunk_size": chunk_size, "batch_size": batch_size, "engine": engine, "ray_address": ray_address,
             "ray_workers": ray_workers, "device": device, "precision": precision, "num_threads": threads, "overwrite": overwrite}
    cfg = ScoreConfig(**{k: v for k, v in given.items() if v is not None})  # unset flags: ScoreConfig's defaults
    r = score_cohort(cohort, model, out, cfg=cfg)
    console.print(f"{r.n_participants} participants ({r.n_scored} scored, {r.n_qc_fail} failed QC, kept with the "
                  f"reason) in {r.n_chunks} shards: {r.n_computed} computed ({r.n_recomputed} replaced a corrupt "
                  f"shard), {r.n_reused} kept; {r.seconds:.1f} s with the {r.engine} engine")
    console.print(f"scores: [bold]{r.out_dir}[/] (read with experiments.serve.scoring.read_scores)")
