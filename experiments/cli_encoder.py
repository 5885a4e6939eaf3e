"""``spirolm train encoder`` and ``spirolm embed``: thin typer commands over :mod:`experiments.train_encoder`.

The main CLI (``experiments/cli.py``) registers them::

    train_app.command("encoder")(train_encoder_command)
    app.command("embed")(embed_command)

and turns :class:`~signals.errors.SpirolmInputError` into one ``error:`` line with exit code 2.
:data:`app` bundles both for standalone use and tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

console = Console()


def train_encoder_command(
    cohort: Annotated[Path, typer.Option(help="Cohort directory (participants.parquet + blows.parquet).")],
    overrides: Annotated[
        Optional[list[str]],
        typer.Argument(help="Config overrides as key.path=value, e.g. trainer.max_epochs=5 model.width_multiplier=0.5."),
    ] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML file with differences from configs/encoder.yaml.")] = None,
    profile: Annotated[str, typer.Option(help="default (CPU, width 0.25), smoke (2 epochs) or full (GPU, width 1.0).")] = "default",
    out: Annotated[Path, typer.Option(help="Output directory (checkpoints, encoder/encoder.pt, predictions).")] = Path("runs/encoder"),
    print_config: Annotated[bool, typer.Option(help="Print the resolved config and exit.")] = False,
) -> None:
    """Train the spirogram encoder (1-D ResNet18-D, one head per trait); log to MLflow; export encoder.pt."""
    import yaml

    from experiments.train_encoder import load_train_config, train_encoder

    cfg = load_train_config(config, overrides or (), profile)
    if print_config:
        console.print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return
    result = train_encoder(cohort, out, cfg)
    for key in sorted(result.metrics):
        if "auroc" in key or "auprc" in key:
            console.print(f"{key:<22} {result.metrics[key]:.3f}")
    console.print(f"encoder: [bold]{result.model_ref}[/] ({result.epochs} epochs, {result.seconds:.0f} s)")


def embed_command(
    model: Annotated[str, typer.Option(help="encoder.pt, its directory, or an MLflow URI (runs:/<run_id>/encoder).")],
    cohort: Annotated[Path, typer.Option(help="Cohort directory.")],
    out: Annotated[Path, typer.Option(help="Output Parquet: eid + emb_000..emb_127.")],
    batch_size: Annotated[int, typer.Option(help="Curves per forward pass.")] = 1024,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Write the encoder embedding of every QC-passing participant's best blow."""
    from experiments.train_encoder import embed_cohort

    path = embed_cohort(model, cohort, out, batch_size=batch_size, progress=progress)
    console.print(f"embeddings written to [bold]{path}[/]")


app = typer.Typer(help="Spirogram encoder commands.", no_args_is_help=True, pretty_exceptions_show_locals=False)
app.command("train-encoder")(train_encoder_command)
app.command("embed")(embed_command)
