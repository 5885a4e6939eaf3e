"""Where MLflow writes: one place to resolve the tracking URI for every pipeline.

Why: users run spirolm from notebooks, CLI and CI. All of them must agree on the store, respect
``MLFLOW_TRACKING_URI`` when set (e.g. a team tracking server), and otherwise use a local store in
the working directory that needs no server and no network.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow

DEFAULT_DB_NAME = "mlflow.db"


def resolve_tracking_uri(explicit: str | None = None, workdir: str | Path | None = None) -> str:
    """Return the tracking URI to use.

    Precedence: ``explicit`` argument > ``MLFLOW_TRACKING_URI`` environment variable > a local
    SQLite store ``<workdir or cwd>/mlflow.db`` (MLflow's own default backend since 3.x, made
    absolute so that a later ``chdir`` cannot split runs across two stores).
    """
    if explicit:
        return explicit
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    base = Path(workdir) if workdir is not None else Path.cwd()
    return f"sqlite:///{(base / DEFAULT_DB_NAME).resolve()}"


def configure_mlflow(explicit: str | None = None, workdir: str | Path | None = None) -> str:
    """Set MLflow's tracking URI (see :func:`resolve_tracking_uri`) and return it."""
    uri = resolve_tracking_uri(explicit, workdir)
    mlflow.set_tracking_uri(uri)
    return uri
