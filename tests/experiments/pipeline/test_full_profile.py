"""The ``full`` profile (meant for a GPU) runs end to end on CPU with tiny sizes.

Why: the first GPU run must not fail on a code path nobody ran. Everything the profile switches on
runs here: the full-width encoder under torch.compile and bf16 autocast, every HeLM-paper row
(zero-shot, few-shot from a shared KV block, prompt-tuned, text+spirogram, tabular-MLP+spirogram) in
bf16, every stage of the main job. Only the sizes are cut, and a tiny Llama stands in for SmolLM2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llm_bridge.precision import bf16_supported
from llm_bridge.tiny import build_tiny_llm

pytestmark = pytest.mark.slow


def test_full_profile_runs_every_stage_on_cpu(tmp_path: Path) -> None:
    llm = build_tiny_llm(tmp_path / "llm", "llama", hidden=32)
    tiny = {
        "cohort": {"n": 600},
        "encoder": {"trainer": {"max_epochs": 1, "patience": 1, "precision": "bf16-mixed"}},
        "baselines": {"n_bootstrap": 50},
        "evaluation": {"n_bootstrap": 50},
        "helm": {"llm": str(llm), "train": {"max_train": 24, "max_val": 12, "max_epochs": 1,
                                             "batch_size": 8, "score_batch_size": 16, "few_shot_k": 2}},
        "explanations": {"max_participants": 8,
                         "helm": {"max_ablation": 8, "shap_examples": 1, "shap_background": 1, "ig_examples": 1,
                                  "ig_steps": 8}},
    }
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny))
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    env.pop("MLFLOW_TRACKING_URI", None)
    r = subprocess.run([sys.executable, "-m", "experiments.cli", "run", "--profile", "full", "--config", str(cfg),
                        "--out", str(tmp_path / "run")], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=1200)
    assert r.returncode == 0, r.stderr[-4000:]
    run = tmp_path / "run"
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["encoder"]["model"]["width_multiplier"] == 1.0 and resolved["encoder"]["trainer"]["compile"]
    stage = json.loads((run / "helm" / "helm_stage.json").read_text())
    assert stage["precision"] == ("bf16" if bf16_supported() else "fp32")
    table = (run / "report" / "comparison_helm.md").read_text()
    for row in resolved["helm"]["rows"]:
        assert f"| {row} |" in table, row
    assert (run / "report" / "report.html").exists() and (run / "explanations" / "helm" / "index.json").exists()
