"""Where MLflow writes: one place to resolve the tracking URI for every pipeline.

Why: users run spirolm from notebooks, CLI and CI. All of them must agree on the store, respect
``MLFLOW_TRACKING_URI`` when set (e.g. a team tracking server), and otherwise use a local store in
the working directory that needs no server and no network.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from lightning.pytorch.loggers import MLFlowLogger

from signals.errors import SpirolmInputError

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


def metric_key(*parts: str) -> str:
    """An MLflow-safe metric key from parts (``xgboost:tabular+spirometry`` -> ``xgboost_tabular_spirometry``,
    ``age_band_>=70`` -> ``age_band_ge70``)."""
    readable = (p.replace(">=", "ge").replace("<=", "le").replace("<", "lt").replace(">", "gt") for p in parts)
    return "/".join(re.sub(r"[^A-Za-z0-9_.\- ]+", "_", p).strip("_") for p in readable)


def flat_params(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict → ``{"a.b.c": value}`` (MLflow params are flat)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(flat_params(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def cohort_content_hash(cohort_dir: str | Path) -> str:
    """Short content hash of a cohort's ``participants.parquet`` + ``cohort.json`` (names its experiment)."""
    h = hashlib.sha256()
    for name in ("participants.parquet", "cohort.json"):
        path = Path(cohort_dir) / name
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()[:8]


def experiment_name_for(cohort_dir: str | Path) -> str:
    """``spirolm/<cohort dir name>-<8-char content hash>``: two cohorts with one directory name never mix."""
    cohort_dir = Path(cohort_dir).resolve()
    return f"spirolm/{cohort_dir.name}-{cohort_content_hash(cohort_dir)}"


# ----------------------------------------------------------------------------- the main job's parent run
#
# Why environment variables: the main job's stages log through three mechanisms (the fluent API in
# baselines job, Lightning's ``MLFlowLogger`` for the encoder and HeLM, ``mlflow.pyfunc``). One
# parent run must own them all, in one experiment, without threading a run handle through every
# library signature. :func:`job_parent_run` publishes the parent's experiment and run id here and
# the loggers read them back; outside a job nothing is set and each pipeline logs where it always has.

JOB_EXPERIMENT_ENV = "SPIROLM_MLFLOW_EXPERIMENT"
JOB_PARENT_ENV = "SPIROLM_MLFLOW_PARENT_RUN_ID"


def job_experiment(default: str) -> str:
    """The experiment a pipeline should log to: the running job's, else ``default``."""
    return os.environ.get(JOB_EXPERIMENT_ENV) or default


def child_run_tags() -> dict[str, str]:
    """Tags that make a run a child of the running job's parent run (empty outside a job)."""
    parent = os.environ.get(JOB_PARENT_ENV)
    return {"mlflow.parentRunId": parent} if parent else {}


def artifact_location_for(uri: str) -> str | None:
    """Keep a local SQLite store's artifacts next to it (``mlartifacts/``), not in the cwd's ``./mlruns``."""
    if uri.startswith("sqlite:"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return None


def lightning_mlflow_logger(experiment: str, run_name: str | None, tracking_uri: str | None = None) -> Any:
    """Lightning's ``MLFlowLogger`` for a training run, nested under the running job when there is one."""
    uri = resolve_tracking_uri(tracking_uri)
    return MLFlowLogger(experiment_name=job_experiment(experiment), run_name=run_name, tracking_uri=uri,
                        artifact_location=artifact_location_for(uri), tags=child_run_tags() or None,
                        log_model=False)


def check_tracking_server(uri: str, timeout_s: float = 5.0, *, hint: str = "start it, fix MLFLOW_TRACKING_URI / "
                          "tracking.tracking_uri, or unset it to log to the local ./mlflow.db") -> None:
    """Fail fast, before hours of work, when a remote tracking server cannot be reached.

    Why: MLflow's client retries an unreachable server for minutes and then fails in the middle of a
    stage. Checking ``/health`` first turns that into one clear line; local stores need no check.

    Args:
        uri: the tracking URI (only http(s) URIs are checked).
        timeout_s: seconds to wait for ``/health``.
        hint: what the user can do, appended to the error.

    Raises:
        SpirolmInputError: the server does not answer, naming the URI and ``hint``.
    """
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as resp:  # noqa: S310
            if resp.status < 400:
                return
            problem = f"HTTP {resp.status}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        problem = str(getattr(exc, "reason", exc))
    raise SpirolmInputError(f"MLflow tracking server {uri} is unreachable ({problem}); {hint}", field="tracking_uri")


@contextmanager
def job_parent_run(experiment: str, run_name: str, tracking_uri: str | None = None,
                   tags: dict[str, str] | None = None, run_id: str | None = None) -> Iterator[Any]:
    """Open the job's parent run and make every run started inside a child of it.

    Args:
        experiment: experiment name for the job and all its children.
        run_name: the parent run's name.
        tracking_uri: store (see :func:`resolve_tracking_uri`).
        tags: tags of the parent run.
        run_id: re-open this parent run (``--resume``) instead of starting a new one.

    Yields:
        the active parent run (``mlflow.ActiveRun``); it ends FAILED if the block raises.
    """
    uri = configure_mlflow(tracking_uri)
    check_tracking_server(uri)
    if run_id is None:
        exp = mlflow.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else mlflow.create_experiment(
            experiment, artifact_location=artifact_location_for(uri))
        mlflow.set_experiment(experiment_id=exp_id)
    saved = {k: os.environ.get(k) for k in (JOB_EXPERIMENT_ENV, JOB_PARENT_ENV)}
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, tags=tags) as parent:
        os.environ[JOB_EXPERIMENT_ENV] = experiment
        os.environ[JOB_PARENT_ENV] = parent.info.run_id
        try:
            yield parent
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
