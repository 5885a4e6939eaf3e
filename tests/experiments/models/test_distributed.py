"""Data-parallel training (``strategy: ddp``) on 2 CPU processes over gloo, against one process.

Real subprocesses, as a user runs them: Lightning starts the second rank by re-running the command.
Checked: both ranks finish, only rank 0 writes (one checkpoint, one export), and the result equals
the single-process one up to float noise where the model has no batch norm (HeLM: same global
batches, synced metrics). The encoder's batch norm is synced on CUDA only; on CPU each process
normalises with its half of the batch, so there the metrics agree closely, not to float noise.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llm_bridge.tiny import build_tiny_llm
from tests.encoder_fixtures import build_tiny_cohort
from tests.helm_fixtures import label_carrying_embeddings

SPIROLM = [sys.executable, "-m", "experiments.cli"]
DDP = ["distributed.strategy=ddp", "distributed.devices=2", "distributed.accelerator=cpu"]

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SPIROLM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
               PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([*SPIROLM, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_cohort(tmp_path_factory.mktemp("ddp") / "cohort", n=120, seed=0)


def test_encoder_ddp_equals_one_process(cohort: Path, tmp_path: Path) -> None:
    tiny = ["model.width_multiplier=0.125", "data.batch_size=16", "trainer.max_epochs=2", "log_mlflow=false"]
    one = _run(["train", "encoder", "--cohort", str(cohort), "--out", str(tmp_path / "one"), *tiny], tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _run(["train", "encoder", "--cohort", str(cohort), "--out", str(tmp_path / "two"), *tiny, *DDP], tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "distributed_backend=gloo" in two.stderr and "All distributed processes registered" in two.stderr
    assert len(list((tmp_path / "two" / "checkpoints").glob("best-*.ckpt"))) == 1  # rank 0 wrote once
    assert len(list((tmp_path / "two" / "encoder").glob("encoder.pt"))) == 1
    metrics = {}
    for name, run in (("one", one), ("two", two)):
        lines = [line.split() for line in run.stdout.splitlines() if line.startswith(("val/auroc", "test/auroc"))]
        metrics[name] = {key: float(value) for key, value in lines}
    assert metrics["one"].keys() == metrics["two"].keys() and metrics["one"]
    for key, value in metrics["one"].items():  # synced metrics over the whole split, per-process batch norm
        assert abs(metrics["two"][key] - value) < 0.1, (key, value, metrics["two"][key])


def test_helm_ddp_equals_one_process(cohort: Path, tmp_path: Path) -> None:
    emb = tmp_path / "emb.parquet"
    label_carrying_embeddings(cohort).to_parquet(emb)
    llm = build_tiny_llm(tmp_path / "llm", "llama", hidden=32)
    common = ["train", "helm", "--cohort", str(cohort), "--embeddings", str(emb), "--llm", str(llm),
              "--set", "train.max_train=48", "--set", "train.max_val=16", "--set", "train.max_eval=8",
              "--set", "train.batch_size=8", "--set", "train.log_mlflow=false", "--set", "train.precision=fp32"]
    one = _run([*common, "--out", str(tmp_path / "one")], tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _run([*common, "--out", str(tmp_path / "two"), *(a for c in DDP for a in ("--set", f"train.{c}"))],
               tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "All distributed processes registered" in two.stderr
    assert len(list((tmp_path / "two").rglob("helm.pt"))) == 1
    a = torch.load(next((tmp_path / "one").rglob("helm.pt")), weights_only=True)
    b = torch.load(next((tmp_path / "two").rglob("helm.pt")), weights_only=True)
    assert a["extra"]["best_epoch"] == b["extra"]["best_epoch"]
    for name, tensor in a["state"].items():
        torch.testing.assert_close(b["state"][name], tensor, rtol=1e-3, atol=1e-5, msg=name)
