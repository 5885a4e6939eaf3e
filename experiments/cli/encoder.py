"""``spirolm train encoder`` and ``spirolm embed``: thin typer commands over :mod:`experiments.encoder`.

:data:`app` bundles both for standalone use and tests; ``experiments.cli.main`` registers them in the
main CLI, which turns :class:`~signals.errors.SpirolmInputError` into one ``error:`` line and exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
import yaml
from rich.console import Console

from experiments.cli.run_config import ConfigFile, Profile, resolve
from experiments.common.config_io import to_plain
from experiments.encoder.embed import embed_cohort
from experiments.encoder.train import train_encoder

console = Console()


def train_encoder_command(
    cohort: Annotated[Path, typer.Option(help="Cohort directory (participants.parquet + blows.parquet).")],
    overrides: Annotated[
        Optional[list[str]],
        typer.Argument(help="Changes of the encoder section as key.path=value, e.g. trainer.max_epochs=5 "
                            "model.width_multiplier=0.5 (seed=N and traits=[...] are run-level)."),
    ] = None,
    config: ConfigFile = None,
    profile: Profile = "default",
    out: Annotated[Path, typer.Option(help="Output directory (checkpoints, encoder/encoder.pt, predictions).")] = Path("runs/encoder"),
    print_config: Annotated[bool, typer.Option(help="Print the resolved encoder config and exit.")] = False,
) -> None:
    """Train the spirogram encoder (1-D ResNet18-D, one head per trait); log to MLflow; export encoder.pt."""
    cfg = resolve(profile, config, overrides, section="encoder")
    if print_config:
        console.print(yaml.safe_dump({"seed": cfg.seed, "traits": cfg.traits, "encoder": to_plain(cfg.encoder)},
                                     sort_keys=False), end="")
        return
    result = train_encoder(cohort, out, cfg.encoder, traits=cfg.traits, seed=cfg.seed,
                           experiment=cfg.tracking.experiment or "spirolm-encoder", tracking_uri=cfg.tracking.tracking_uri)
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
    path = embed_cohort(model, cohort, out, batch_size=batch_size, progress=progress)
    console.print(f"embeddings written to [bold]{path}[/]")


app = typer.Typer(help="Spirogram encoder commands.", no_args_is_help=True, pretty_exceptions_show_locals=False)
app.command("train-encoder")(train_encoder_command)
app.command("embed")(embed_command)
