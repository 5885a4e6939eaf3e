"""Test isolation shared by every test module."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _isolate_mlflow_tracking_uri() -> Iterator[None]:
    """Keep ``MLFLOW_TRACKING_URI`` from leaking between tests.

    ``mlflow.set_tracking_uri`` also writes the environment variable (so child processes inherit it).
    Without this, a test that logs to a temporary store would redirect every later test of the same
    worker — and the `spirolm` subprocesses they start — to that store, and a developer's own tracking
    server would receive test runs.
    """
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    if saved is not None:
        os.environ["MLFLOW_TRACKING_URI"] = saved
