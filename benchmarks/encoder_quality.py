"""Benchmark: does the spirogram encoder meet its quality bar (issue 3) on a synthetic cohort?

Why a benchmark and not a test: it trains the encoder with the real default profile on the 20k
default cohort (minutes on 2 CPU cores). It measures, with the one evaluation harness every spirolm
model is scored with (:func:`experiments.evaluate.harness.compare_methods`: oracle row from
``true_risk_<trait>``, seeded percentile bootstrap, paired resamples):

* the encoder's test-split AUROC / AUPRC per trait next to the oracle and the tabular baselines
  (``logreg`` / ``xgboost`` on ``tabular`` and ``tabular+spirometry``, refitted here with the same seed);
* the bar: COPD encoder AUROC >= oracle AUROC - 0.03; asthma encoder AUROC > the best tabular-only
  baseline (the encoder sees the curve only, no covariates), with the paired bootstrap CI of each
  difference so the margin can be judged, not just the point estimate.

Every row is scored on the same participants: the test split minus QC-failed participants (who have
no best blow, so the encoder cannot score them; the baselines are fitted on the whole cohort as
``spirolm train baselines`` does, and only their evaluation is restricted).

    MLFLOW_TRACKING_URI=sqlite:////tmp/spirolm-enc-quality.db python benchmarks/encoder_quality.py
    python benchmarks/encoder_quality.py --cohort runs/default/cohort --set trainer.max_epochs=5

The encoder is configured like ``spirolm train encoder``: the ``encoder`` section of the run config
(:func:`experiments.pipeline.config.load_run_config` with ``--profile``), changed by ``--set`` keys relative
to that section (``trainer.max_epochs=5`` means ``encoder.trainer.max_epochs=5``; ``seed=`` and
``traits=`` are run-level).

Writes ``benchmarks/results/encoder_quality.json`` and ``.md`` (paths via ``--out``). Without
``MLFLOW_TRACKING_URI`` the MLflow run goes to a throwaway sqlite store in the work directory, so the
benchmark never litters the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from biobank.cohort_io import usable
from experiments.data.predictions import risk_columns
from experiments.evaluate.harness import ORACLE, ComparisonResult, bootstrap_auroc_auprc, compare_methods

ENCODER = "encoder"
TABULAR_ONLY = ("logreg:tabular", "xgboost:tabular")
COPD_MARGIN = 0.03  # issue 3: encoder COPD AUROC >= oracle - 0.03


@dataclass(frozen=True)
class Bar:
    """One quality-bar check: ``encoder - reference >= -margin`` (strictly > 0 when margin is 0).

    Attributes:
        trait: the trait.
        reference: the row the encoder is compared with (``oracle`` or a baseline).
        margin: allowed shortfall in AUROC.
        encoder_auroc, reference_auroc: point estimates.
        diff: ``encoder_auroc - reference_auroc``.
        diff_ci: paired-bootstrap 95% CI of ``diff`` (same resamples for both rows).
        passed: point estimate meets the bar.
        passed_ci: the whole CI meets it (a stricter reading, reported alongside).
    """

    trait: str
    reference: str
    margin: float
    encoder_auroc: float
    reference_auroc: float
    diff: float
    diff_ci: tuple[float, float]
    passed: bool
    passed_ci: bool


def paired_auroc_diff_ci(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, n_bootstrap: int, seed: int
) -> tuple[float, float]:
    """Percentile 95% CI of ``AUROC(a) - AUROC(b)`` over paired resamples of the participants.

    Why paired: both scores are on the same people, so the per-row CIs of the table overlap far more
    than the uncertainty of their difference; resampling the pair together gives the right interval.
    """
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(n_bootstrap, len(y)))
    auc_a, _, valid_a = bootstrap_auroc_auprc(y, a, idx)
    auc_b, _, valid_b = bootstrap_auroc_auprc(y, b, idx)
    d = (auc_a - auc_b)[valid_a & valid_b]
    lo, hi = np.percentile(d, [2.5, 97.5])
    return float(lo), float(hi)


def check_bars(comp: ComparisonResult, n_bootstrap: int, seed: int) -> list[Bar]:
    """The issue-3 bar per trait: COPD against the oracle, asthma against the best tabular-only row."""
    bars = []
    for trait in comp.traits:
        if trait == "copd":
            reference, margin = ORACLE, COPD_MARGIN
        elif trait == "asthma":
            rows = [m for m in TABULAR_ONLY if (m, trait) in comp.metrics]
            reference, margin = max(rows, key=lambda m: comp.metrics[(m, trait)].auroc), 0.0
        else:
            continue
        y, risks = comp.curves[trait]
        enc, ref = comp.metrics[(ENCODER, trait)].auroc, comp.metrics[(reference, trait)].auroc
        lo, hi = paired_auroc_diff_ci(y, risks[ENCODER], risks[reference], n_bootstrap, seed)
        ok = (enc - ref >= -margin) if margin > 0 else (enc - ref > 0)
        ok_ci = (lo >= -margin) if margin > 0 else (lo > 0)
        bars.append(Bar(trait, reference, margin, enc, ref, enc - ref, (lo, hi), bool(ok), bool(ok_ci)))
    return bars


def baseline_scores(participants: pd.DataFrame, traits: Sequence[str], seed: int) -> dict[str, pd.DataFrame]:
    """Tabular-only and tabular+spirometry baselines refitted on the cohort: ``{method: eid + risk_<trait>}``
    for every test participant."""
    from experiments.baselines.fit import fit_baselines

    fitted = fit_baselines(
        participants, traits, feature_sets=("tabular", "tabular+spirometry"), models=("logreg", "xgboost"),
        embeddings=None, seed=seed,
    )
    return fitted.scores


def evaluate(
    participants: pd.DataFrame,
    encoder_scores: pd.DataFrame,
    baselines: Mapping[str, pd.DataFrame],
    traits: Sequence[str],
    n_bootstrap: int,
    seed: int,
) -> ComparisonResult:
    """Score encoder + baselines (+ oracle) on the QC-passing test participants with the shared harness.

    ``encoder_scores`` and ``baselines`` are score frames (``eid`` + ``risk_<trait>``); the encoder's are
    its test-split predictions.
    """
    test = participants[(participants["split"] == "test") & usable(participants)]
    test = test.reset_index(drop=True)
    keep = test["eid"]
    scores = {ENCODER: encoder_scores[["eid", *risk_columns(traits)]]}
    for method, df in baselines.items():
        scores[method] = df[df["eid"].isin(keep)].reset_index(drop=True)
    return compare_methods(test, scores, traits, n_bootstrap=n_bootstrap, seed=seed)


def _metric_rows(comp: ComparisonResult) -> list[dict]:
    rows = []
    for (method, trait), m in comp.metrics.items():
        rows.append({"method": method, "trait": trait, "n": m.n, "n_pos": m.n_pos,
                     "auroc": round(m.auroc, 4), "auroc_ci": [round(m.auroc_ci.low, 4), round(m.auroc_ci.high, 4)],
                     "auprc": round(m.auprc, 4), "auprc_ci": [round(m.auprc_ci.low, 4), round(m.auprc_ci.high, 4)],
                     "auroc_vs_oracle": round(m.auroc / comp.oracle_auroc(trait), 4)})
    return rows


def bars_markdown(bars: Sequence[Bar]) -> str:
    """The bar checks as a Markdown table."""
    lines = ["| trait | bar | encoder AUROC | reference AUROC | difference [paired 95% CI] | met (point) | met (CI) |",
             "|---|---|---|---|---|---|---|"]
    for b in bars:
        rule = f"encoder >= {b.reference} - {b.margin:.2f}" if b.margin else f"encoder > {b.reference}"
        lines.append(f"| {b.trait} | {rule} | {b.encoder_auroc:.3f} | {b.reference_auroc:.3f} | "
                     f"{b.diff:+.3f} [{b.diff_ci[0]:+.3f}, {b.diff_ci[1]:+.3f}] | "
                     f"{'yes' if b.passed else 'NO'} | {'yes' if b.passed_ci else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cohort", default="runs/default/cohort", help="cohort directory")
    ap.add_argument("--out", default="benchmarks/results/encoder_quality.json", help="JSON output (.md beside it)")
    ap.add_argument("--work-dir", default=None, help="encoder run directory (default: a temporary directory)")
    ap.add_argument("--profile", default="default",
                    help="run-config profile: default | smoke | full (experiments/configs/run_<profile>.yaml)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="encoder config override, repeatable (e.g. trainer.max_epochs=5; seed=N and "
                         "traits=[...] are run-level)")
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0, help="bootstrap and baseline seed")
    args = ap.parse_args(argv)

    from experiments.cli.run_config import resolve
    from experiments.data.participants import read_participants
    from experiments.data.predictions import read_predictions
    from experiments.encoder.train import METHOD, train_encoder

    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="spirolm-enc-quality-"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{(work / 'mlflow.db').resolve()}")
    work.mkdir(parents=True, exist_ok=True)
    # --set keys are relative to the encoder section (as `spirolm train encoder` reads them)
    run = resolve(args.profile, None, args.overrides, section="encoder")
    load_before = os.getloadavg()
    result = train_encoder(args.cohort, work / "encoder", run.encoder, traits=run.traits, seed=run.seed,
                           experiment=run.tracking.experiment or "spirolm-encoder",
                           tracking_uri=run.tracking.tracking_uri, progress=False)
    load_after = os.getloadavg()

    participants, cohort_traits = read_participants(args.cohort)
    traits = [t for t in ("copd", "asthma") if t in result.traits] or list(result.traits)
    t0 = time.perf_counter()
    baselines = baseline_scores(participants, traits, args.seed)
    baseline_seconds = time.perf_counter() - t0
    encoder_scores = read_predictions(result.predictions, split="test")[METHOD]
    comp = evaluate(participants, encoder_scores, baselines, traits, args.n_bootstrap, args.seed)
    bars = check_bars(comp, args.n_bootstrap, args.seed)

    config = run.to_dict()  # the encoder's settings: the run's seed and traits + the encoder section
    config["encoder"]["model"]["traits"] = list(result.traits)  # the heads trained (train_encoder sets them)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/encoder_quality.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report = {
        "command": command.strip(),
        "cohort": str(args.cohort),
        "evaluated": "test split, qc_status != fail (every row scored on the same participants)",
        "n_bootstrap": args.n_bootstrap,
        "seed": args.seed,
        "encoder_config": {key: config[key] for key in ("seed", "traits")} | config["encoder"],
        "encoder_train_seconds": round(result.seconds, 1),
        "encoder_epochs": result.epochs,
        "encoder_val_metrics": {k: round(v, 4) for k, v in result.metrics.items() if k.startswith("val/")},
        "baseline_seconds": round(baseline_seconds, 1),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "platform": platform.platform(), "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in load_after]},
        "metrics": _metric_rows(comp),
        "bars": [b.__dict__ for b in bars],
        "all_bars_met": all(b.passed for b in bars),
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    md = out.with_suffix(".md")
    md.write_text(f"# Encoder quality ({args.cohort}, profile {args.profile})\n\n`{report['command']}`; "
                  f"training {result.seconds / 60:.1f} min, {result.epochs} epochs.\n\n"
                  + comp.to_markdown() + "\n" + bars_markdown(bars))
    print(md.read_text())
    return 0 if report["all_bars_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
