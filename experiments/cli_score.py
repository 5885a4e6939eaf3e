"""``spirolm score``: thin typer command over :func:`experiments.scoring.score_cohort`.

Registered in ``experiments/cli.py`` (``app.command("score")(score)``), which turns
:class:`~signals.errors.SpirolmInputError` into one ``error:`` line and exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

console = Console()


def score(
    cohort: Annotated[Path, typer.Option(help="Cohort directory or UK Biobank export file (CSV/TSV/Parquet).")],
    model: Annotated[str, typer.Option(help="HeLM pyfunc: local MLflow model directory, models:/name/version or runs:/<id>/helm_model.")],
    out: Annotated[Path, typer.Option(help="Result directory (shards + manifest; re-run the same command to resume).")],
    chunk_size: Annotated[int, typer.Option(help="Participants per shard (unit of resume and memory).")] = 256,
    batch_size: Annotated[int, typer.Option(help="Participants per LLM forward pass.")] = 32,
    engine: Annotated[str, typer.Option(help="local (one process) or ray (Ray Data actors, local or remote cluster).")] = "local",
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster address (default: $RAY_ADDRESS, else a local instance).")] = None,
    ray_workers: Annotated[Optional[int], typer.Option(help="Ray scoring actors (default: CPUs / 2).")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(help="fp32 | bf16 (GPU).")] = "fp32",
    overwrite: Annotated[bool, typer.Option(help="Discard scores in --out made with other settings.")] = False,
) -> None:
    """Score every participant of a cohort with a HeLM model into resumable Parquet shards."""
    from experiments.scoring import ScoreConfig, score_cohort

    cfg = ScoreConfig(chunk_size=chunk_size, batch_size=batch_size, engine=engine, ray_address=ray_address,
                      ray_workers=ray_workers, device=device, dtype=dtype, overwrite=overwrite)
    r = score_cohort(cohort, model, out, cfg=cfg)
    console.print(f"{r.n_participants} participants ({r.n_scored} scored, {r.n_qc_fail} failed QC, kept with the "
                  f"reason) in {r.n_chunks} shards: {r.n_computed} computed ({r.n_recomputed} replaced a corrupt "
                  f"shard), {r.n_reused} kept; {r.seconds:.1f} s with the {r.engine} engine")
    console.print(f"scores: [bold]{r.out_dir}[/] (read with experiments.scoring.read_scores)")
