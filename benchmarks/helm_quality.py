"""Benchmark: HeLM on the whole QC-passing test split of a finished main-job run, against its controls.

Why a benchmark and not a test: it runs the real SmolLM2-135M-Instruct over thousands of participants
(tens of minutes on 2 CPU cores). It runs the main job's HeLM stage
(:func:`experiments.pipeline.helm_stage.helm_stage_scores`) on ``<run>/cohort`` with the encoder stage's
embeddings, with the settings chosen on validation (``benchmarks/helm_selection.py``) passed as flags,
and evaluates every row with the one shared harness next to:

* the baselines and the encoder of the run (same people);
* the two "no LLM" controls of :mod:`experiments.baselines.controls` (stacking: record + encoder logit
  fitted on validation; probe: HeLM's teacher, fitted on the train split);
* paired bootstrap CIs of ``helm:text+spiro`` minus every other row;
* calibration before and after (Brier, slope, intercept, ECE);
* modality ablations and counterfactual record edits of the trained text+spiro model on the same people.

Test is scored once per reported configuration: nothing here feeds back into a choice.

    python benchmarks/helm_quality.py --run runs/default --max-train 2000 --projector-init probe+features
    python benchmarks/helm_quality.py --run runs/default --rows helm:text-zero-shot helm:text-few-shot \\
        --work /tmp/rows --resume --no-explain        # more rows into the same work directory

Writes ``benchmarks/results/helm_test_split.json`` and ``.md`` (``--out`` changes the stem).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from report_md import run_cli
from scipy.stats import spearmanr

from biobank.cohort_io import usable
from experiments.baselines.controls import PROBE, STACKING, probe_scores, stacking_scores
from experiments.common.config_io import to_plain
from experiments.data.embeddings import EMBEDDING_COLUMNS, attach_embeddings, load_embeddings
from experiments.data.participants import read_participants
from experiments.data.predictions import read_predictions, risk_column
from experiments.encoder.train import METHOD as ENCODER
from experiments.encoder.train import PREDICTIONS_FILE as ENCODER_PREDICTIONS
from experiments.evaluate.harness import ORACLE, compare_methods
from experiments.evaluate.paired import differences_markdown, paired_differences
from experiments.explain.counterfactuals import counterfactual_effects
from experiments.explain.helm_run import modality_ablation, summarize_ablation
from experiments.helm.config import ROW_TEXT_SPIRO, UNCALIBRATED_SUFFIX, row_slug
from experiments.pipeline.baselines_job import PREDICTIONS_FILE as BASELINE_PREDICTIONS
from experiments.pipeline.config import load_run_config
from experiments.pipeline.helm_stage import helm_stage_scores, restrict_to_eids
from llm_bridge.llm import ensure_llm
from llm_bridge.model import PROJECTOR_INITS, HeLM

OUT = Path(__file__).resolve().parent / "results" / "helm_test_split"


def other_methods(run: Path, traits: list[str]) -> dict[str, pd.DataFrame]:
    """Baseline and encoder test risks of a finished run: ``{method: eid + risk_<trait>}``."""
    methods: dict[str, pd.DataFrame] = {}
    for path in (run / "baselines" / BASELINE_PREDICTIONS, run / "encoder" / ENCODER_PREDICTIONS):
        if path.exists():
            methods.update(read_predictions(path, split="test"))
    return {m: df[["eid", *(c for c in map(risk_column, traits) if c in df.columns)]] for m, df in methods.items()}


def targets(result, diffs: pd.DataFrame, spearman: dict[str, float], traits: list[str]) -> list[dict]:
    """Issue 15's targets with the numbers they compare (reported, never asserted)."""
    out = []
    for t in traits:
        helm = result.metrics[(ROW_TEXT_SPIRO, t)]
        enc = result.metrics[(ENCODER, t)]
        d = diffs[(diffs["other"] == STACKING) & (diffs["trait"] == t)].iloc[0]
        oracle = result.oracle_auroc(t)
        out += [
            {"trait": t, "target": "HeLM >= stacking - 0.01, paired CI low > -0.02",
             "value": f"{d.auroc_diff:+.3f} [{d.ci_lo:+.3f}, {d.ci_hi:+.3f}]",
             "met": bool(d.auroc_diff >= -0.01 and d.ci_lo > -0.02)},
            {"trait": t, "target": "HeLM >= 0.95 x oracle", "value": f"{helm.auroc / oracle:.3f} x oracle",
             "met": bool(helm.auroc >= 0.95 * oracle)},
            {"trait": t, "target": "Spearman vs probe < 0.98", "value": f"{spearman[t]:.3f}",
             "met": bool(spearman[t] < 0.98)},
            {"trait": t, "target": "calibrated Brier within 10% of the encoder's",
             "value": f"{helm.brier:.4f} vs {enc.brier:.4f}", "met": bool(helm.brier <= 1.1 * enc.brier)},
            {"trait": t, "target": "calibration slope in [0.8, 1.2]", "value": f"{helm.calibration_slope:.2f}",
             "met": bool(0.8 <= helm.calibration_slope <= 1.2)},
        ]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/default"))
    d = load_run_config().helm  # the default profile's HeLM stage
    ap.add_argument("--rows", nargs="+", default=[ROW_TEXT_SPIRO])
    ap.add_argument("--max-train", type=int, default=d.train.max_train)
    ap.add_argument("--max-val", type=int, default=d.train.max_val)
    ap.add_argument("--max-eval", type=int, default=None, help="test participants (default: the whole split)")
    ap.add_argument("--epochs", type=int, default=d.train.max_epochs)
    ap.add_argument("--batch-size", type=int, default=d.train.batch_size)
    ap.add_argument("--lr", type=float, default=d.train.lr)
    ap.add_argument("--projector-init", choices=PROJECTOR_INITS, default=d.model.projector_init)
    ap.add_argument("--distill", type=float, default=d.train.distill_weight, help="distillation weight")
    ap.add_argument("--explain", action=argparse.BooleanOptionalAction, default=True,
                    help="modality ablations and counterfactuals of the trained text+spiro row")
    ap.add_argument("--max-counterfactual", type=int, default=None,
                    help="participants of the counterfactual edits (seeded subsample; default: all evaluated)")
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="stage output directory (default: a temporary one)")
    ap.add_argument("--resume", action="store_true", help="reuse rows already finished in --work")
    ap.add_argument("--out", type=Path, default=OUT, help="result stem: writes <out>.json and <out>.md")
    args = ap.parse_args(argv)
    settings = replace(
        d, rows=tuple(args.rows), model=replace(d.model, projector_init=args.projector_init),
        train=replace(d.train, max_train=args.max_train, max_val=args.max_val, max_eval=args.max_eval,
                      max_epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      distill_weight=args.distill, log_mlflow=False),
    )
    cohort = args.run / "cohort"
    emb_path = args.run / "encoder" / "embeddings.parquet"
    work = args.work or Path(tempfile.mkdtemp(prefix="helm_quality_"))
    t0 = time.perf_counter()
    llm = ensure_llm(settings.llm, settings.train.num_threads)
    stage = helm_stage_scores(settings, cohort, emb_path, work, seed=args.seed, llm=llm, resume=args.resume)
    wall = {"helm_stage": time.perf_counter() - t0}
    traits = list(stage.traits)
    p, _ = read_participants(cohort, traits)
    evaluated = p[(p["split"] == "test") & usable(p)].reset_index(drop=True)
    embeddings = load_embeddings(emb_path)
    others = other_methods(args.run, traits)
    balanced = settings.train.class_weight == "balanced"
    stacking = stacking_scores(p, read_predictions(args.run / "encoder" / ENCODER_PREDICTIONS)[ENCODER], traits, args.seed)
    probe = probe_scores(p, embeddings, traits, balanced=balanced)
    controls = {STACKING: stacking.scores, PROBE: probe.scores}
    keep, methods = restrict_to_eids(evaluated, {**others, **controls, **stage.scores}, stage.eval_eids)
    result = compare_methods(keep, methods, traits, n_bootstrap=args.n_bootstrap, seed=args.seed)
    against = [m for m in result.methods if m != ORACLE and not m.endswith(UNCALIBRATED_SUFFIX)]
    diffs = paired_differences(result, [r for r in args.rows if r in methods], against)
    probe_at = methods[PROBE].set_index("eid").loc[keep["eid"]]
    spearman = {row: {t: float(spearmanr(methods[row].set_index("eid").loc[keep["eid"], risk_column(t)],
                                         probe_at[risk_column(t)]).statistic) for t in traits}
                for row in stage.scores if "spiro" in row and not row.endswith(UNCALIBRATED_SUFFIX)}
    report: dict = {
        "command": "python benchmarks/helm_quality.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "run": str(args.run), "seed": args.seed, "settings": to_plain(settings),
        "sizes": {"helm": stage.counts, "stacking_fitted_on_val": stacking.fitted_on, "probe_fitted_on_train": probe.fitted_on},
        "seconds": stage.seconds,
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "table": result.to_frame().drop(columns=["note"], errors="ignore").to_dict(orient="records"),
        "paired_differences": diffs.to_dict(orient="records"),
        "spearman_vs_probe": spearman,
    }
    if ROW_TEXT_SPIRO in stage.scores:
        report["targets"] = targets(result, diffs, spearman[ROW_TEXT_SPIRO], traits)
    explain_md: list[str] = []
    if args.explain and ROW_TEXT_SPIRO in stage.scores:
        t0 = time.perf_counter()
        helm = HeLM.load_checkpoint(work / row_slug(ROW_TEXT_SPIRO) / "helm.pt", llm).to(llm.model.device)
        helm.set_precision(settings.train.precision)
        rows, _ = attach_embeddings(keep, embeddings, needed=True)
        ablation, _ = modality_ablation(helm, rows, rows[list(EMBEDDING_COLUMNS)].to_numpy(np.float32),
                                        batch_size=settings.train.score_batch_size, seed=args.seed)
        summary = summarize_ablation(ablation)
        wall["ablation"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cf_rows = rows if args.max_counterfactual is None else rows.sample(
            n=min(args.max_counterfactual, len(rows)), random_state=args.seed).sort_index()
        _, cf = counterfactual_effects(helm, cf_rows, batch_size=settings.train.score_batch_size,
                                       n_bootstrap=args.n_bootstrap, seed=args.seed)
        wall["counterfactuals"] = time.perf_counter() - t0
        report["ablation"] = summary.to_dict(orient="records")
        report["counterfactuals"] = cf.to_dict(orient="records")
        explain_md = ablation_markdown(summary) + ["", *counterfactual_markdown(cf)]
    report["wall_s"] = wall
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    c = stage.counts
    lines = [f"# HeLM on the QC-passing test split of `{args.run}`", "", f"Command: `{report['command']}`", "",
             f"HeLM: trained on {c['train']} training participants, best epoch and calibrators chosen on {c['val']} "
             f"validation participants; scored on {c['test']} of {c['test_available']} test participants with an "
             f"embedding (every row on the same people). Teacher probe fitted on "
             f"{max(probe.fitted_on.values())} training participants; stacking fitted on "
             f"{max(stacking.fitted_on.values())} validation participants. Stage wall time "
             f"{wall['helm_stage']:.0f} s. Synthetic cohort: not clinical evidence.", "",
             result.to_markdown(), "", differences_markdown(diffs), "",
             "Calibration (Brier / slope / intercept / ECE; ideal low / 1 / 0 / 0):", "", result.calibration_markdown()]
    if spearman:
        lines += ["Spearman of the risks with the probe's on the same people (1 = the same ranking):", "",
                  "| row | " + " | ".join(traits) + " |", "|---|" + "---|" * len(traits),
                  *[f"| {r} | " + " | ".join(f"{v[t]:.3f}" for t in traits) + " |" for r, v in spearman.items()], ""]
    if "targets" in report:
        lines += ["Issue 15's targets (reported, not asserted):", "", "| trait | target | value | met |", "|---|---|---|---|",
                  *[f"| {t['trait']} | {t['target']} | {t['value']} | {'yes' if t['met'] else 'no'} |"
                    for t in report["targets"]], ""]
    lines += explain_md
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def ablation_markdown(summary: pd.DataFrame) -> list[str]:
    """AUROC and mean |Δrisk| of each prompt (raw P(yes), before calibration)."""
    prompts = {"risk_full": "full prompt", "risk_no_text": "record text removed",
               "risk_shuffled_text": "record of another participant", "risk_no_spiro": "spirogram tokens removed",
               "risk_other_spiro": "spirogram tokens of another participant"}
    lines = ["## Modality ablations (trained helm:text+spiro, same people; raw P(yes))", "",
             "| prompt | " + " | ".join(f"{t}: AUROC / mean abs Δrisk" for t in summary["trait"]) + " |",
             "|---|" + "---|" * len(summary)]
    for col, name in prompts.items():
        cells = []
        for _, r in summary.iterrows():
            change = "-" if col == "risk_full" else f"{r[f'mean_abs_change_{col}']:.4f}"
            cells.append(f"{r[f'auroc_{col}']:.3f} / {change}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def counterfactual_markdown(cf: pd.DataFrame) -> list[str]:
    """Mean change of the calibrated risk per edit, with its bootstrap CI (and the raw P(yes) change)."""
    lines = ["## Counterfactual record edits (mean Δrisk [95% CI], calibrated; raw P(yes) in brackets)", "",
             "| edit | trait | n | mean Δrisk | raw mean Δ |", "|---|---|---|---|---|"]
    for r in cf.itertuples():
        lines.append(f"| {r.edit} | {r.trait} | {r.n} | {r.mean_delta:+.4f} [{r.ci_lo:+.4f}, {r.ci_hi:+.4f}] | "
                     f"{r.mean_raw_delta:+.4f} [{r.raw_ci_lo:+.4f}, {r.raw_ci_hi:+.4f}] |")
    return lines


if __name__ == "__main__":
    run_cli(main)
