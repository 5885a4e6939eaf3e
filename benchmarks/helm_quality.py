"""Benchmark: HeLM quality on a finished main-job run directory (issue 5's bar), under a CPU budget.

Why a benchmark and not a test: it runs the real SmolLM2-135M-Instruct over hundreds of
participants (minutes on 2 CPU cores). It runs the main job's HeLM stage
(:func:`experiments.pipeline.helm_stage.helm_stage_scores`) on ``<run>/cohort`` with the encoder stage's
``<run>/encoder/embeddings.parquet``, then evaluates, with the one shared harness
(:func:`experiments.evaluate.harness.compare_methods`: oracle row, seeded paired bootstrap), every HeLM
row next to the baselines (``<run>/baselines/predictions_test.parquet``) and the encoder
(``<run>/encoder/predictions.parquet``, test split) - all restricted to the same seeded test
subsample the HeLM rows scored.

The stage's settings are the default profile's ``helm`` section
(:func:`experiments.pipeline.config.load_run_config`) changed by the flags below; MLflow logging is off.

The bar (issue 5), per trait: HeLM text+spirogram AUROC >= the best baseline's lower 95% CI bound,
and >= oracle AUROC - 0.03.

    python benchmarks/helm_quality.py --run runs/default
    python benchmarks/helm_quality.py --run runs/default --rows helm:text-zero-shot helm:text-few-shot \\
        helm:text+spiro --max-train 512 --epochs 3 --max-eval 300

Writes ``benchmarks/results/helm_quality.json`` and ``.md`` (``--out`` changes the stem).
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
from report_md import run_cli, trait_table

from biobank.cohort_io import usable
from experiments.data.embeddings import EMBEDDING_COLUMNS
from experiments.data.participants import read_participants
from experiments.data.predictions import read_predictions, risk_column, scores_frame
from experiments.encoder.train import METHOD as ENCODER
from experiments.encoder.train import PREDICTIONS_FILE as ENCODER_PREDICTIONS
from experiments.evaluate.harness import ComparisonResult, compare_methods
from experiments.helm.config import ROW_TABMLP_SPIRO, ROW_TEXT_SPIRO
from experiments.pipeline.baselines_job import PREDICTIONS_FILE as BASELINE_PREDICTIONS
from experiments.pipeline.config import HeLMStageConfig, load_run_config
from experiments.pipeline.helm_stage import helm_stage_scores, restrict_to_eids
from llm_bridge.projector import fit_embedding_probe

OUT = Path(__file__).resolve().parent / "results" / "helm_quality"
ORACLE_MARGIN = 0.03
PROBE = "embedding probe (distillation teacher)"


def other_methods(run: Path, traits: list[str]) -> dict[str, pd.DataFrame]:
    """Baseline and encoder test risks of a finished run (as the main job's evaluation reads them):
    ``{method: eid + risk_<trait>}``, restricted to ``traits``."""
    methods: dict[str, pd.DataFrame] = {}
    base = run / "baselines" / BASELINE_PREDICTIONS
    if base.exists():
        methods.update(read_predictions(base, split="test"))
    enc = run / "encoder" / ENCODER_PREDICTIONS
    if enc.exists():
        methods.update(read_predictions(enc, split="test"))
    return {m: df[["eid", *(c for c in map(risk_column, traits) if c in df.columns)]] for m, df in methods.items()}


def probe_scores(run: Path, traits: list[str], balanced: bool) -> pd.DataFrame:
    """Test risks of the logistic-regression probe of the embeddings that HeLM's projector starts from
    and is distilled toward (:func:`llm_bridge.projector.fit_embedding_probe`, fitted on the train split):
    the level a faithful copy of the probe would reach."""
    p, _ = read_participants(run / "cohort", traits)
    rows = p.merge(pd.read_parquet(run / "encoder" / "embeddings.parquet"), on="eid")
    train, test = rows[rows["split"] == "train"], rows[rows["split"] == "test"]
    weight, bias = fit_embedding_probe(train[list(EMBEDDING_COLUMNS)].to_numpy(dtype=np.float32),
                                       train[traits].to_numpy(dtype=float), balanced=balanced, names=traits)
    logits = torch.from_numpy(test[list(EMBEDDING_COLUMNS)].to_numpy(dtype=np.float32)) @ weight.T + bias
    return scores_frame(test["eid"].to_numpy(), {t: torch.sigmoid(logits[:, j]).numpy() for j, t in enumerate(traits)})


def teacher_agreement(methods: dict[str, pd.DataFrame], eids: np.ndarray, traits: list[str]) -> dict[str, dict[str, float]]:
    """Spearman correlation of each spirogram HeLM row's risk with the probe's, per trait, on ``eids``.

    Why: the projector is initialised from and distilled toward the probe, so how faithfully the LLM's
    answer copies it (1 = the same ranking) separates "the LLM bridge loses signal" from "the
    embedding does not have it".
    """
    from scipy.stats import spearmanr

    probe = methods[PROBE].set_index("eid").loc[eids]
    out = {}
    for row in (ROW_TEXT_SPIRO, ROW_TABMLP_SPIRO):
        if row in methods:
            scores = methods[row].set_index("eid").loc[eids]
            out[row] = {t: float(spearmanr(scores[risk_column(t)], probe[risk_column(t)]).statistic) for t in traits}
    return out


def bar_checks(result: ComparisonResult, baselines: list[str], row: str = ROW_TEXT_SPIRO) -> list[dict]:
    """Issue 5's two conditions per trait, with the numbers they compare."""
    checks = []
    for trait in result.traits:
        helm = result.metrics.get((row, trait))
        if helm is None:
            continue
        best = max((b for b in baselines if (b, trait) in result.metrics), key=lambda b: result.metrics[(b, trait)].auroc,
                   default=None)
        oracle = result.oracle_auroc(trait)
        lo = result.metrics[(best, trait)].auroc_ci.low if best else float("nan")
        checks.append({
            "trait": trait, "helm_auroc": helm.auroc, "helm_auroc_ci": [helm.auroc_ci.low, helm.auroc_ci.high],
            "best_baseline": best, "best_baseline_auroc": result.metrics[(best, trait)].auroc if best else None,
            "best_baseline_ci_low": lo, "oracle_auroc": oracle,
            "gap_to_oracle": oracle - helm.auroc,
            "meets_baseline_ci": bool(helm.auroc >= lo), "meets_oracle_margin": bool(oracle - helm.auroc <= ORACLE_MARGIN),
        })
    return checks


def flat_settings(settings: HeLMStageConfig) -> dict:
    """The stage settings as this benchmark reports them: one flat mapping (the keys and order of the
    results written before the config was nested into ``model`` / ``train``)."""
    m, t = settings.model, settings.train
    return {"enabled": settings.enabled, "llm": settings.llm, "rows": list(settings.rows),
            "max_train": t.max_train, "max_val": t.max_val, "max_eval": t.max_eval, "max_epochs": t.max_epochs,
            "batch_size": t.batch_size, "lr": t.lr, "distill_weight": t.distill_weight,
            "class_weight": t.class_weight, "num_soft_tokens": m.num_soft_tokens,
            "tokens_per_trait": m.tokens_per_trait, "projector_init": m.projector_init, "few_shot_k": t.few_shot_k,
            "prompt_tuning_tokens": t.prompt_tuning_tokens, "kv_store_gb": t.kv_store_gb,
            "score_batch_size": t.score_batch_size, "num_threads": t.num_threads, "log_mlflow": t.log_mlflow}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/default"))
    d = load_run_config().helm  # the default profile's HeLM stage
    ap.add_argument("--rows", nargs="+", default=list(d.rows))
    ap.add_argument("--max-train", type=int, default=d.train.max_train)
    ap.add_argument("--max-val", type=int, default=d.train.max_val)
    ap.add_argument("--max-eval", type=int, default=d.train.max_eval)
    ap.add_argument("--epochs", type=int, default=d.train.max_epochs)
    ap.add_argument("--batch-size", type=int, default=d.train.batch_size)
    ap.add_argument("--lr", type=float, default=d.train.lr)
    ap.add_argument("--soft-tokens", type=int, default=d.model.num_soft_tokens)
    ap.add_argument("--tokens-per-trait", action=argparse.BooleanOptionalAction, default=d.model.tokens_per_trait)
    ap.add_argument("--projector-init", choices=["random", "probe"], default=d.model.projector_init)
    ap.add_argument("--distill", type=float, default=d.train.distill_weight, help="distillation weight")
    ap.add_argument("--class-weight", default=d.train.class_weight)
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--llm", default=None)
    ap.add_argument("--work", type=Path, default=None, help="stage output directory (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=OUT, help="result stem: writes <out>.json and <out>.md")
    args = ap.parse_args(argv)
    settings = replace(
        d, llm=args.llm, rows=tuple(args.rows),
        model=replace(d.model, num_soft_tokens=args.soft_tokens, tokens_per_trait=args.tokens_per_trait,
                      projector_init=args.projector_init),
        train=replace(d.train, max_train=args.max_train, max_val=args.max_val, max_eval=args.max_eval,
                      max_epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      distill_weight=args.distill, class_weight=args.class_weight, log_mlflow=False),
    )
    cohort = args.run / "cohort"
    embeddings = args.run / "encoder" / "embeddings.parquet"
    work = args.work or Path(tempfile.mkdtemp(prefix="helm_quality_"))
    t0 = time.perf_counter()
    stage = helm_stage_scores(settings, cohort, embeddings, work, seed=args.seed)
    wall = time.perf_counter() - t0
    p, _ = read_participants(cohort, stage.traits)
    evaluated = p[(p["split"] == "test") & usable(p)].reset_index(drop=True)
    others = other_methods(args.run, list(stage.traits))
    others[PROBE] = probe_scores(args.run, list(stage.traits), balanced=settings.train.class_weight == "balanced")
    keep, methods = restrict_to_eids(evaluated, {**others, **stage.scores}, stage.eval_eids)
    result = compare_methods(keep, methods, list(stage.traits), n_bootstrap=args.n_bootstrap, seed=args.seed)
    baselines = [m for m in others if m not in (ENCODER, PROBE)]
    checks = bar_checks(result, baselines)
    agreement = teacher_agreement({**others, **stage.scores}, np.asarray(stage.eval_eids), list(stage.traits))
    report = {
        "command": "python benchmarks/helm_quality.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "run": str(args.run), "settings": flat_settings(settings),
        "seed": args.seed, "counts": stage.counts, "seconds": stage.seconds, "wall_s": wall,
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "table": result.to_frame()[["method", "trait", "n", "n_pos", "auroc", "auroc_ci_lo", "auroc_ci_hi", "auprc",
                                    "auprc_ci_lo", "auprc_ci_hi", "auroc_vs_oracle"]].to_dict(orient="records"),
        "bar": checks,
        "teacher_agreement_spearman": agreement,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    lines = [f"# HeLM quality on `{args.run}`", "", f"Command: `{report['command']}`", "",
             f"Participants: train {stage.counts['train']}, val {stage.counts['val']}, test subsample "
             f"{stage.counts['test']} of {stage.counts['test_available']} (every row on the same people). "
             f"Stage wall time {wall:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in stage.seconds.items())}).", "",
             result.to_markdown(), "", "| trait | HeLM text+spiro | best baseline (CI low) | oracle | gap | bar |",
             "|---|---|---|---|---|---|"]
    for c in checks:
        ok = c["meets_baseline_ci"] and c["meets_oracle_margin"]
        lines.append(f"| {c['trait']} | {c['helm_auroc']:.3f} | {c['best_baseline']} {c['best_baseline_auroc']:.3f} "
                     f"({c['best_baseline_ci_low']:.3f}) | {c['oracle_auroc']:.3f} | {c['gap_to_oracle']:+.3f} | "
                     f"{'met' if ok else 'not met'} |")
    if agreement:
        lines += ["", f"Agreement with the {PROBE} (Spearman of the risks on the same people; 1 = the same ranking):", "",
                  *trait_table("row", agreement, stage.traits)]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    run_cli(main)
