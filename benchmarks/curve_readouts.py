"""Benchmark: how much of each trait simple readouts of the observed spirogram curve recover, next to the encoder.

Why: HeLM's answer now copies a linear probe of the encoder's embedding (docs/llm_bridge.md, "Fifth
session"), so its distance to the oracle is the encoder's. This asks whether the encoder is short of what
the *curve* carries, or the curve is short of what the oracle knows. Every readout is fitted on the train
split and scored on the test split of a finished main-job run (QC-passing participants, best blow unless
said otherwise):

* logistic regression on ``flow_volume_norm`` (every 12th of 1000 points), with the channel's 80 ms flow
  window and with 240 / 500 ms windows (less flow noise in the late limb);
* the same on log flow;
* the same on the mean curve of the participant's acceptable blows (less noise again);
* gradient boosting on the curve points (every 6th);
* logistic regression on the synthetic cohort's *true* shape parameters (``latents.parquet``; an upper
  bound of a perfect curve reader, synthetic cohorts only);
* the encoder's own test predictions, and the oracle.

Usage::

    python benchmarks/curve_readouts.py --run runs/default [--out benchmarks/results/curve_readouts]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
from report_md import run_cli, trait_table
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

import signals.curves as curves
from experiments.data.curves import load_curve_table
from experiments.data.predictions import read_predictions, risk_column
from experiments.encoder.train import METHOD as ENCODER
from experiments.encoder.train import PREDICTIONS_FILE as ENCODER_PREDICTIONS

OUT = Path(__file__).resolve().parent / "results" / "curve_readouts"
SHAPE = ["curve_k", "curve_knee_depth", "curve_late_concavity", "true_fev1_fvc", "true_pef_l_s", "true_fvc_l"]


def lr_auroc(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
    """Test AUROC of a standardised logistic regression fitted on the train rows."""
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000)).fit(x[train], y[train])
    return float(roc_auc_score(y[test], model.decision_function(x[test])))


def mean_acceptable_curves(cohort: Path, eids: np.ndarray) -> np.ndarray:
    """``flow_volume_norm`` averaged over each participant's accepted blows (the best blow always counts)."""
    blows = pd.read_parquet(cohort / "blows.parquet", columns=["eid", "qc_status", "is_best", "volume_ml"])
    best = blows["is_best"].fillna(False).astype(bool)
    keep = blows[blows["eid"].isin(eids) & ((blows["qc_status"] == "accept") | best)].reset_index(drop=True)
    rows = curves.curves_batch(keep["volume_ml"].tolist(), channels=("flow_volume_norm",), eids=keep["eid"].tolist(),
                               field="volume_ml")[:, 0, :]
    frame = pd.DataFrame(rows)
    frame["eid"] = keep["eid"].to_numpy()
    return frame.groupby("eid").mean().loc[eids].to_numpy(dtype=np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/default"))
    ap.add_argument("--out", type=Path, default=OUT, help="result stem: writes <out>.json and <out>.md")
    args = ap.parse_args(argv)
    cohort = args.run / "cohort"
    t0 = time.perf_counter()
    tables = {}
    for half_width in tqdm((4, 12, 25), desc="flow windows"):
        with mock.patch.object(curves, "PEF_HALF_WIDTH", half_width):
            tables[half_width] = load_curve_table(cohort, channels=("flow_volume_norm",))
    base = tables[4]
    traits, eids = list(base.traits), base.eids
    train, test = base.split == "train", base.split == "test"
    features = {f"LR, {20 * h} ms flow window" + (" (the encoder's channel)" if h == 4 else ""):
                t.curves[:, 0, 5::12] for h, t in tables.items()}
    features["LR, log flow"] = np.log(np.clip(base.curves[:, 0, 5::12], 1e-2, None))
    features["LR, mean of the accepted blows"] = mean_acceptable_curves(cohort, eids)[:, 5::12]
    latents = cohort / "latents.parquet"
    if latents.exists():
        lat = pd.read_parquet(latents).set_index("eid").loc[eids]
        features["LR, true shape parameters (synthetic latents)"] = lat[SHAPE].to_numpy(dtype=np.float64)
    pred = read_predictions(args.run / "encoder" / ENCODER_PREDICTIONS, split="test")[ENCODER].set_index("eid")
    rows: list[dict] = []
    for j, trait in enumerate(traits):
        y = base.labels[:, j]
        known = ~np.isnan(y)
        tr, te = train & known, test & known
        for name, x in features.items():
            rows.append({"readout": name, "trait": trait, "auroc": lr_auroc(x, y, tr, te)})
        gbm = HistGradientBoostingClassifier(max_iter=400, learning_rate=0.05, random_state=0)
        gbm.fit(base.curves[tr, 0, 5::6], y[tr])
        rows.append({"readout": "gradient boosting on the curve points", "trait": trait,
                     "auroc": float(roc_auc_score(y[te], gbm.predict_proba(base.curves[te, 0, 5::6])[:, 1]))})
        enc = pred.loc[eids[te], risk_column(trait)].to_numpy()
        rows.append({"readout": "the encoder (CNN)", "trait": trait, "auroc": float(roc_auc_score(y[te], enc))})
        if latents.exists():
            rows.append({"readout": "oracle (true risk)", "trait": trait,
                         "auroc": float(roc_auc_score(y[te], lat.loc[eids[te], f"true_risk_{trait}"]))})
    table = pd.DataFrame(rows).pivot(index="readout", columns="trait", values="auroc")[traits]
    table = table.loc[list(dict.fromkeys(r["readout"] for r in rows))]
    report = {"command": "python benchmarks/curve_readouts.py " + " ".join(argv or sys.argv[1:]), "run": str(args.run),
              "n_train": int(train.sum()), "n_test": int(test.sum()), "seconds": time.perf_counter() - t0,
              "auroc": {r: {t: float(table.loc[r, t]) for t in traits} for r in table.index}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    md = [f"# Curve readouts on `{args.run}`", "", f"Command: `{report['command']}`", "",
          f"Test AUROC; fitted on {report['n_train']} train, scored on {report['n_test']} test participants "
          f"(QC-passing). {report['seconds']:.0f} s.", "", *trait_table("readout", report["auroc"], traits)]
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    run_cli(main)
