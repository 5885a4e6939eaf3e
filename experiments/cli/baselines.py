"""``spirolm train baselines``: a thin command over :func:`experiments.pipeline.baselines_job.train_baselines`.

Registered by ``experiments.cli.main``; kept in its own module so the command can be tested without the
rest of the CLI. Bad input surfaces as :class:`signals.errors.SpirolmInputError`, which the CLI's ``main``
turns into one line and exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markdown import Markdown

from experiments.baselines.features import FEATURE_SETS
from experiments.pipeline.baselines_job import train_baselines

console = Console()


def train_baselines_cmd(
    cohort: Annotated[Path, typer.Option(help="Cohort directory (participants.parquet with splits and traits).")],
    traits: Annotated[Optional[list[str]], typer.Option(
        "--traits", help="Trait to model (repeatable); default: every trait in the cohort.")] = None,
    features: Annotated[Optional[list[str]], typer.Option(
        "--features", help="Feature set (repeatable): tabular, tabular+spirometry, tabular+embedding; default: all "
        "(tabular+embedding is skipped with a message when --embeddings is not given).")] = None,
    embeddings: Annotated[Optional[Path], typer.Option(
        help="Spirogram encoder embeddings (Parquet: eid + emb_000..emb_127).")] = None,
    out: Annotated[Path, typer.Option(help="Output directory (predictions, results table, plots).")] = Path(
        "runs/baselines"),
    seed: Annotated[int, typer.Option(help="Seed of models and bootstrap; same seed, same numbers.")] = 0,
) -> None:
    """Train logistic regression and XGBoost on each feature set and trait; evaluate on the test split."""
    result = train_baselines(
        cohort, traits=traits or None, feature_sets=tuple(features) if features else FEATURE_SETS,
        embeddings=embeddings, out_dir=out, seed=seed,
    )
    console.print(Markdown(result.comparison.to_markdown()))
    for line in result.skipped:
        console.print(f"[yellow]skipped:[/] {line}")
    for trait, by_split in result.missing_labels.items():
        if any(by_split.values()):
            console.print(f"{trait}: participants without a label (excluded): "
                          + ", ".join(f"{s} {n}" for s, n in by_split.items()))
    for note in result.notes:
        console.print(f"note: {note}")
    console.print(f"results: [bold]{out / 'results.md'}[/], {out / 'results.csv'}; plots in {out / 'plots'}")
    console.print(f"MLflow: experiment [bold]{result.experiment_name}[/] in {result.tracking_uri} "
                  f"(parent run {result.parent_run_id}); open with "
                  f"[bold]mlflow ui --backend-store-uri {result.tracking_uri}[/]")
