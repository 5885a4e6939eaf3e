"""Scoring under faults: a SIGKILLed `spirolm score`, a corrupt shard, a full disk, an unreachable MLflow server."""

from __future__ import annotations

import errno
import filecmp
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import experiments.serve.scoring as scoring
from experiments.serve.scoring import MANIFEST, SHARD_DIR, read_scores, score_cohort
from signals.errors import SpirolmInputError
from tests.scoring_fixtures import build_parts

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return build_parts(tmp_path_factory.mktemp("scoring_faults"))


def _score(parts, out: Path, **kw):
    args = {"chunk_size": 16, "batch_size": 8, "num_threads": 1, "progress": False, **kw}
    return score_cohort(parts.cohort, parts.model, out, **args)


def _cli(parts, out: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "experiments.cli", "score", "--cohort", str(parts.cohort), "--model", str(parts.model),
           "--out", str(out), *extra]
    full_env = {**os.environ, "SPIROLM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{out.parent / 'mlflow.db'}",
                **(env or {})}
    return subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigkilled_run_resumes_without_lost_or_duplicated_rows(parts, tmp_path):
    """A real `spirolm score` process, SIGKILLed right after its first shard lands, then re-run."""
    args = ("--chunk-size", "1", "--batch-size", "1")
    proc = _cli(parts, tmp_path / "killed", *args)
    shards = tmp_path / "killed" / SHARD_DIR
    deadline = time.monotonic() + 120
    while not any(shards.glob("part-*.parquet")):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no shard appeared"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    manifest = json.loads((tmp_path / "killed" / MANIFEST).read_text())
    assert not manifest["complete"] and len(manifest["shards"]) < 60  # really interrupted mid-run

    resumed = _cli(parts, tmp_path / "killed", *args)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    whole = _score(parts, tmp_path / "whole", chunk_size=1, batch_size=1)
    got = read_scores(tmp_path / "killed")
    assert got["eid"].is_unique and len(got) == whole.n_participants
    pd.testing.assert_frame_equal(got, read_scores(tmp_path / "whole"))
    for i in range(whole.n_chunks):
        name = f"part-{i:05d}.parquet"
        assert filecmp.cmp(shards / name, tmp_path / "whole" / SHARD_DIR / name, shallow=False)
    assert not list(shards.glob(".*tmp*"))


def test_corrupt_and_missing_shards_are_detected_and_recomputed(parts, tmp_path):
    out = tmp_path / "out"
    first = _score(parts, out)
    original = {p.name: p.read_bytes() for p in first.shards}
    flipped = bytearray(original["part-00001.parquet"])
    flipped[len(flipped) // 2] ^= 0xFF
    first.shards[1].write_bytes(bytes(flipped))
    first.shards[2].write_bytes(original["part-00002.parquet"][:100])  # truncated
    first.shards[3].unlink()
    with pytest.raises(SpirolmInputError, match="changed since it was written"):
        read_scores(out)
    again = _score(parts, out)
    assert (again.n_reused, again.n_computed, again.n_recomputed) == (1, 3, 2)
    assert {p.name: p.read_bytes() for p in again.shards} == original


def test_disk_full_leaves_no_partial_shard_and_rerun_completes(parts, tmp_path, monkeypatch):
    reference = _score(parts, tmp_path / "ref")
    real_write = scoring.pq.write_table
    calls = {"n": 0}

    def full_disk(table, where, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            Path(where).write_bytes(b"PAR1 half a shard")  # the OS wrote part of it, then ran out of space
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(table, where, **kw)

    monkeypatch.setattr(scoring.pq, "write_table", full_disk)
    out = tmp_path / "out"
    with pytest.raises(SpirolmInputError, match="disk full"):
        _score(parts, out)
    left = sorted(p.name for p in (out / SHARD_DIR).iterdir())
    assert left == ["part-00000.parquet"]  # the finished shard is kept, nothing half-written
    monkeypatch.setattr(scoring.pq, "write_table", real_write)
    done = _score(parts, out)
    assert done.n_reused == 1 and done.n_computed == 3
    pd.testing.assert_frame_equal(read_scores(out), read_scores(tmp_path / "ref"))
    assert [p.read_bytes() for p in done.shards] == [p.read_bytes() for p in reference.shards]


def test_unreachable_tracking_server_is_one_clear_error_and_keeps_local_scores(parts, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _score(parts, out)
    before = {p: p.read_bytes() for p in [out / MANIFEST, *sorted((out / SHARD_DIR).iterdir())]}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    t0 = time.monotonic()
    with pytest.raises(SpirolmInputError, match="unreachable"):
        score_cohort(parts.cohort, "models:/x/1", out, chunk_size=16, batch_size=8, progress=False)
    assert time.monotonic() - t0 < 60  # no minutes of HTTP retries
    assert {p: p.read_bytes() for p in before} == before

    cmd = [sys.executable, "-m", "experiments.cli", "score", "--cohort", str(parts.cohort), "--model", "models:/x/1",
           "--out", str(tmp_path / "cli_out")]
    res = subprocess.run(cmd, cwd=REPO, env={**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "unreachable" in lines[0] and "Traceback" not in res.stderr


def test_missing_model_is_a_clear_error(parts, tmp_path):
    with pytest.raises(SpirolmInputError, match="model not found"):
        score_cohort(parts.cohort, tmp_path / "no_such_model", tmp_path / "out", progress=False)
    with pytest.raises(SpirolmInputError, match="MLmodel"):
        score_cohort(parts.cohort, parts.cohort, tmp_path / "out", progress=False)
