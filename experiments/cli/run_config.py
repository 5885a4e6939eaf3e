"""The options every config-driven command shares: ``--profile``, ``--config`` and ``--set key.path=value``.

Why shared: ``spirolm run`` and the ``spirolm train`` commands read one config tree
(:mod:`experiments.pipeline.config`), so the same settings give the same model from either command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from experiments.pipeline.config import PROFILES, RunConfig, load_run_config

Profile = Annotated[str, typer.Option(help=f"Config profile: {' | '.join(PROFILES)} (experiments/configs/run_<profile>.yaml).")]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="YAML listing changes from the profile.")]
Overrides = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Config change as key.path=value (repeatable), e.g. --set encoder.trainer.max_epochs=5.")]


def resolve(profile: str, config: Path | None, overrides: list[str] | None, *, section: str | None = None,
            flags: dict[str, object] | None = None) -> RunConfig:
    """The run config of a command: profile <- file <- ``--set`` <- explicit command flags.

    Args:
        section: prefix of the command's own keys (``encoder``, ``helm``): ``--set trainer.max_epochs=5``
            then means ``encoder.trainer.max_epochs=5``; ``seed=`` and ``traits=`` stay run-level.
        flags: ``{key.path: value}`` of command options the user gave (None values are ignored).
    """
    items = list(overrides or [])
    if section is not None:
        items = [i if i.split("=", 1)[0].split(".")[0] in ("seed", "traits", section) else f"{section}.{i}"
                 for i in items]
    items += [f"{k}={_yaml(v)}" for k, v in (flags or {}).items() if v is not None]
    return load_run_config(profile, config, items)


def _yaml(value: object) -> str:
    """A flag value as the YAML the override parser reads back to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)
