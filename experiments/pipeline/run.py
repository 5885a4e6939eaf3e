"""The main job (``spirolm run``): one config, every stage, cached by content hash.

Stages: cohort (synthetic → UKB export → import → QC, or a user's export → import → QC) → spirogram
encoder → embeddings → tabular baselines (three feature sets, the third on the embeddings) → HeLM rows
(text-only LLM and HeLM variants, on a seeded test subsample) → evaluation (every model on the
QC-passing test split; a second table on the HeLM subsample with the same people for every row) →
explanations (tabular SHAP, HeLM SHAP / integrated gradients / modality ablation) → a self-contained
HTML report. Each stage's cache key holds its own config section and its upstream stages' keys, so a
change redoes exactly the stages it affects; ``--resume`` keeps an interrupted stage's partial work.
Everything is logged to MLflow as one parent run whose stages are child runs.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pandas as pd
import yaml

from biobank.build import build_synthetic_cohort, import_export
from biobank.cohort_io import Cohort, read_cohort, usable
from biobank.describe import CohortDescription, describe_cohort
from experiments.baselines.controls import PROBE, STACKING, probe_scores, stacking_scores
from experiments.common.tracking import job_parent_run, metric_key
from experiments.data.embeddings import load_embeddings
from experiments.data.participants import read_participants
from experiments.data.predictions import read_predictions, write_predictions
from experiments.encoder.embed import embed_cohort
from experiments.encoder.train import METHOD as ENCODER_ROW
from experiments.encoder.train import PREDICTIONS_FILE as ENCODER_PREDICTIONS
from experiments.encoder.train import train_encoder
from experiments.evaluate.harness import ORACLE, compare_methods
from experiments.evaluate.paired import DIFFERENCES_FILE, differences_markdown, paired_differences
from experiments.evaluate.plots import plot_comparison
from experiments.explain.helm_run import explain_helm_run
from experiments.explain.tabular_shap import shap_folder_name
from experiments.helm.config import ROW_TEXT_SPIRO, UNCALIBRATED_SUFFIX, row_slug
from experiments.pipeline.baselines_job import train_baselines
from experiments.pipeline.config import RunConfig
from experiments.pipeline.helm_stage import SUMMARY_FILE as HELM_SUMMARY_FILE
from experiments.pipeline.helm_stage import helm_stage_scores, load_stage_scores, restrict_to_eids
from experiments.pipeline.stages import file_fingerprint, is_cached, run_stage, stage_key, stage_seconds, stamp_key
from experiments.report.browser_check import screenshot_html
from experiments.report.cohort_figures import plot_example_curves
from experiments.report.html_report import write_html_report
from experiments.serve.pyfunc import log_helm_pyfunc
from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)

# Bump a stage's version when what it writes changes, so that cached builds are not reused.
COHORT_STAGE_VERSION = 2  # 2: GLI z-scores from pyspiro (GLI Global 2022 by default), implausible blows rejected
ENCODER_STAGE_VERSION = 2  # 2: predictions in the shared prediction-table schema
BASELINES_STAGE_VERSION = 3  # 3: predictions in the shared prediction-table schema
HELM_STAGE_VERSION = 3  # 2: predictions in the shared prediction-table schema; 3: calibrated + uncalibrated rows
EXPLAIN_STAGE_VERSION = 1
CONTROLS_STAGE_VERSION = 1
CONTROLS_PREDICTIONS = "predictions_test.parquet"
EMBEDDINGS_FILE = "embeddings.parquet"
STAGES_FILE = "stages.json"
MLFLOW_RUN_FILE = "mlflow_run.json"


@dataclass(frozen=True)
class RunResult:
    """What the main job produced."""

    out_dir: Path
    cohort_dir: Path
    description: CohortDescription
    summary_markdown: str
    report_html: Path | None = None
    parent_run_id: str | None = None
    stages: dict[str, dict] = field(default_factory=dict)


@dataclass
class RunContext:
    """One invocation of the job: its config, directory, resume flag and the stages it ran."""

    cfg: RunConfig
    out_dir: Path
    resume: bool = False
    stages: dict[str, dict] = field(default_factory=dict)

    def stage(self, name: str, key: str, build: Callable[[Path], None]) -> Path:
        """Run (or reuse) stage ``name`` in ``out_dir/name`` and record whether it was cached and its time."""
        stage_dir = self.out_dir / name
        cached = is_cached(stage_dir, key)
        path = run_stage(name, stage_dir, key, build, resume=self.resume)
        self.stages[name] = {"key": key, "cached": cached, "seconds": stage_seconds(path)}
        return path


def synthetic_cohort_key(cfg: RunConfig) -> str:
    """Cache key of a synthetic cohort: seed, QC, splits and the cohort section (n and the variant, since
    another cohort model is another cohort)."""
    d = cfg.to_dict()
    return stage_key(COHORT_STAGE_VERSION, cfg.seed, d["cohort"], d["qc"], d["splits"])


def cohort_stage(ctx: RunContext) -> Path:
    """Build (or reuse) the run's cohort directory."""
    cfg = ctx.cfg
    d = cfg.to_dict()
    source = cfg.cohort.source
    if source == "synthetic":
        key = synthetic_cohort_key(cfg)

        def build(tmp: Path) -> None:
            build_synthetic_cohort(
                n=cfg.cohort.n, seed=cfg.seed, out_dir=tmp, qc_standard=cfg.qc.standard,
                split_seed=cfg.splits.seed, variant=cfg.cohort.variant,
                reference_equations=cfg.qc.reference_equations,
            )

    else:
        export = Path(source)
        if not export.exists():
            raise SpirolmInputError("cohort.source is neither 'synthetic' nor an existing export file", file=export)
        key = stage_key(COHORT_STAGE_VERSION, file_fingerprint(export), d["qc"], d["splits"])

        def build(tmp: Path) -> None:
            import_export(export, tmp, qc_standard=cfg.qc.standard, split_seed=cfg.splits.seed,
                          reference_equations=cfg.qc.reference_equations)

    return ctx.stage("cohort", key, build)


def encoder_stage(ctx: RunContext, cohort_dir: Path) -> Path:
    """Train the spirogram encoder and embed every QC-passing participant (one cached stage).

    Resumable: an interrupted build keeps Lightning's ``checkpoints/last.ckpt``, and ``--resume``
    continues training from it (same key = same data and config).
    """
    cfg = ctx.cfg
    d = cfg.to_dict()
    key = stage_key(ENCODER_STAGE_VERSION, stamp_key(cohort_dir), d["encoder"], cfg.seed, d["traits"])

    def build(tmp: Path) -> None:
        result = train_encoder(cohort_dir, tmp, cfg.encoder, traits=cfg.traits, seed=cfg.seed,
                               tracking_uri=cfg.tracking.tracking_uri, resume=True)
        embed_cohort(result.model_path, cohort_dir, tmp / EMBEDDINGS_FILE)

    return ctx.stage("encoder", key, build)


def baselines_stage(ctx: RunContext, cohort_dir: Path, embeddings: Path | None = None) -> Path:
    """Fit and evaluate the tabular baselines (cached on the cohort, the config and the embeddings)."""
    cfg = ctx.cfg
    b = cfg.baselines
    d = cfg.to_dict()
    key = stage_key(BASELINES_STAGE_VERSION, stamp_key(cohort_dir), cfg.seed, d["baselines"], d["traits"],
                    None if embeddings is None else file_fingerprint(embeddings))

    def build(tmp: Path) -> None:
        train_baselines(
            cohort_dir,
            traits=cfg.traits,
            feature_sets=b.feature_sets,
            models=b.models,
            embeddings=embeddings,
            out_dir=tmp,
            seed=cfg.seed,
            n_bootstrap=b.n_bootstrap,
            shap_dir=tmp / "shap",
        )

    return ctx.stage("baselines", key, build)


def helm_stage(ctx: RunContext, cohort_dir: Path, encoder_dir: Path) -> Path:
    """The text-only LLM and HeLM rows on a seeded test subsample (:mod:`experiments.pipeline.helm_stage`)."""
    cfg = ctx.cfg
    d = cfg.to_dict()
    key = stage_key(HELM_STAGE_VERSION, stamp_key(cohort_dir), stamp_key(encoder_dir), d["helm"], cfg.seed, d["traits"])

    def build(tmp: Path) -> None:
        helm_stage_scores(cfg.helm, cohort_dir, encoder_dir / EMBEDDINGS_FILE, tmp, cfg.seed, traits=cfg.traits,
                          tracking_uri=cfg.tracking.tracking_uri, resume=True)

    return ctx.stage("helm", key, build)


def controls_stage(ctx: RunContext, cohort_dir: Path, encoder_dir: Path) -> Path:
    """The stacking and probe reference rows (:mod:`experiments.baselines.controls`), with their training sizes."""
    cfg = ctx.cfg
    balanced = cfg.helm.train.class_weight == "balanced"
    key = stage_key(CONTROLS_STAGE_VERSION, stamp_key(cohort_dir), stamp_key(encoder_dir), cfg.seed,
                    cfg.to_dict()["traits"], balanced)

    def build(tmp: Path) -> None:
        participants, traits = read_participants(cohort_dir, cfg.traits)
        encoder = read_predictions(encoder_dir / ENCODER_PREDICTIONS)[ENCODER_ROW]
        stacking = stacking_scores(participants, encoder, traits, cfg.seed)
        probe = probe_scores(participants, load_embeddings(encoder_dir / EMBEDDINGS_FILE), traits, balanced=balanced)
        write_predictions(tmp / CONTROLS_PREDICTIONS, {STACKING: stacking.scores, PROBE: probe.scores}, split="test")
        (tmp / "controls.json").write_text(json.dumps({
            STACKING: {"fitted_on": "val", "participants": stacking.fitted_on},
            PROBE: {"fitted_on": "train", "participants": probe.fitted_on, "class_weight_balanced": balanced},
        }, indent=1))

    return ctx.stage("controls", key, build)


def _method_scores(baselines_dir: Path | None, encoder_dir: Path | None, helm_dir: Path | None,
                   controls_dir: Path | None = None) -> dict[str, pd.DataFrame]:
    """Collect every model's test-split risks as ``{method: eid + risk_<trait>}``."""
    methods: dict[str, pd.DataFrame] = {}
    if baselines_dir is not None:
        methods.update(load_stage_scores(baselines_dir))
    if encoder_dir is not None:
        methods.update(read_predictions(encoder_dir / ENCODER_PREDICTIONS, split="test"))
    if controls_dir is not None:
        methods.update(read_predictions(controls_dir / CONTROLS_PREDICTIONS, split="test"))
    if helm_dir is not None:
        methods.update(load_stage_scores(helm_dir))
    return methods


def _training_sizes(helm_dir: Path | None, controls_dir: Path | None) -> str:
    """One sentence with who fitted the HeLM rows and the controls (every training size is stated)."""
    parts = []
    if helm_dir is not None and (helm_dir / HELM_SUMMARY_FILE).exists():
        c = json.loads((helm_dir / HELM_SUMMARY_FILE).read_text())["counts"]
        parts.append(f"trained HeLM rows fitted on {c['train']:,} training participants, their best epoch and "
                     f"risk calibrators chosen on {c['val']:,} validation participants"
                     + (f", their teacher probe fitted on {c['teacher_probe_train']:,} training participants"
                        if c.get("teacher_probe_train") else ""))
    if controls_dir is not None and (controls_dir / "controls.json").exists():
        c = json.loads((controls_dir / "controls.json").read_text())
        parts.append(f"{STACKING} fitted on {max(c[STACKING]['participants'].values()):,} validation participants, "
                     f"{PROBE} on {max(c[PROBE]['participants'].values()):,} training participants")
    return ("Training sizes: " + "; ".join(parts) + ". ") if parts else ""


def evaluation_stage(ctx: RunContext, name: str, cohort: Cohort, deps: dict[str, Path | None],
                     restrict_to: Path | None = None) -> Path:
    """Compare every model on the same participants: the test split with a usable spirogram.

    The encoder cannot score a participant whose every blow failed QC, so all methods are compared on
    the QC-passing test participants (the count left out is reported), keeping the rows comparable.
    With ``restrict_to`` (the HeLM stage directory) the comparison is cut to the HeLM test subsample,
    so that the HeLM rows sit next to every other model on exactly the same people.
    """
    cfg = ctx.cfg
    present = {k: v for k, v in deps.items() if v is not None}
    key = stage_key(sorted((k, stamp_key(v)) for k, v in present.items()), cfg.to_dict()["evaluation"], cfg.seed)

    def build(tmp: Path) -> None:
        p = cohort.participants
        test = p[p["split"] == "test"]
        compared = test[usable(test)].reset_index(drop=True)
        methods = _method_scores(present.get("baselines"), present.get("encoder"), present.get("helm"),
                                 present.get("controls"))
        methods = {m: s[s["eid"].isin(compared["eid"])].reset_index(drop=True) for m, s in methods.items()}
        note = (f"Test split: {len(test):,} participants; compared on the {len(compared):,} with a QC-passing spirogram "
                f"({len(test) - len(compared):,} QC failures left out, listed in the cohort's qc_exclusions.csv). ")
        if restrict_to is not None:
            helm_eids = next(iter(load_stage_scores(restrict_to).values()))["eid"].to_numpy()
            compared, methods = restrict_to_eids(compared, methods, helm_eids)
            note += (f"This table: the seeded subsample of {len(compared):,} of them that every HeLM row scored "
                     "(an LLM forward per participant is slow on CPU); every method on the same people. ")
        traits = list(cfg.traits or cohort.traits)
        result = compare_methods(compared, methods, traits, n_bootstrap=cfg.evaluation.n_bootstrap, seed=cfg.seed)
        result.save_tables(tmp)
        plot_comparison(result, tmp / "plots")
        against = [m for m in result.methods if m != ORACLE and not m.endswith(UNCALIBRATED_SUFFIX)]
        diffs = paired_differences(result, cfg.evaluation.focal, against)
        diffs.to_csv(tmp / DIFFERENCES_FILE, index=False)
        note += _training_sizes(present.get("helm"), present.get("controls"))
        note += "Cells: AUROC [95% CI] / AUPRC [95% CI], bootstrap, seeded."
        text = note + "\n\n" + result.to_markdown() + "\n"
        if not diffs.empty:
            text += "\n" + differences_markdown(diffs) + "\n"
        text += ("\nCalibration on the same people (Brier score; calibration slope, ideal 1; calibration-in-the-"
                 "large intercept, ideal 0; ECE; reliability diagrams in plots/). Trained HeLM rows are calibrated "
                 f"on validation; `*{UNCALIBRATED_SUFFIX}` rows are their risks before.\n\n"
                 + result.calibration_markdown())
        (tmp / "comparison.md").write_text(text)

    return ctx.stage(name, key, build)


def _tabular_shap_index(baselines_dir: Path, evaluation_dir: Path, out: Path) -> None:
    """``index.json`` for the report: SHAP of the best baseline per trait (files stay in the baselines stage)."""
    results = pd.read_csv(evaluation_dir / "results.csv")
    shap_root = baselines_dir / "shap"
    items = []
    for trait, rows in results.groupby("trait", sort=False):
        ranked = rows[rows["method"].str.contains(":")].sort_values("auroc", ascending=False)
        for method in ranked["method"]:
            folder = shap_root / shap_folder_name(method, str(trait))
            if (folder / "shap_summary.png").exists():
                for file, what in (("shap_summary.png", "summary (beeswarm)"),
                                   ("shap_waterfall_highest_risk.png", "waterfall, highest-risk explained test row")):
                    items.append({"title": f"{method}, {trait}: SHAP {what}", "kind": "image",
                                  "file": str(Path("..", "..", "baselines", "shap", folder.name, file)),
                                  "caption": f"Best baseline for {trait} on the test split (AUROC "
                                             f"{float(ranked.iloc[0]['auroc']):.3f}); log-odds SHAP values, "
                                             "training-split background."})
                break
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.json").write_text(json.dumps(items, indent=1))


def _helm_checkpoint(helm_dir: Path) -> Path | None:
    """The HeLM stage's text+spirogram checkpoint (the model explained and registered), if trained."""
    ckpt = helm_dir / row_slug(ROW_TEXT_SPIRO) / "helm.pt"
    return ckpt if ckpt.exists() else None


def tabular_explanations_stage(ctx: RunContext, baselines_dir: Path, evaluation_dir: Path) -> Path:
    """The report's index of the best baseline's SHAP plots per trait (the plots come with the baselines)."""
    key = stage_key(EXPLAIN_STAGE_VERSION, stamp_key(baselines_dir), stamp_key(evaluation_dir))
    return ctx.stage("explanations/tabular", key,
                     lambda tmp: _tabular_shap_index(baselines_dir, evaluation_dir, tmp))


def helm_explanations_stage(ctx: RunContext, cohort_dir: Path, encoder_dir: Path, helm_dir: Path) -> Path | None:
    """HeLM explanations (modality ablation, record SHAP, curve integrated gradients) of the text+spiro row.

    A stage of its own, keyed on the HeLM and encoder stages only, so that a baselines change does not
    recompute these (the most expensive explanations: one LLM forward per perturbed record).
    """
    cfg = ctx.cfg
    ckpt = _helm_checkpoint(helm_dir)
    if ckpt is None:
        log.info("explanations: no trained helm:text+spiro row in this run; HeLM explanations skipped")
        return None
    key = stage_key(EXPLAIN_STAGE_VERSION, stamp_key(cohort_dir), stamp_key(encoder_dir), stamp_key(helm_dir),
                    cfg.to_dict()["explanations"], cfg.seed, cfg.helm.llm)

    def build(tmp: Path) -> None:
        eids = next(iter(load_stage_scores(helm_dir).values()))["eid"].to_numpy()
        explain_helm_run(ckpt, encoder_dir / "encoder" / "encoder.pt", cohort_dir,
                         eids[: cfg.explanations.max_participants], tmp, llm_spec=cfg.helm.llm,
                         settings=cfg.explanations.helm, seed=cfg.seed)

    return ctx.stage("explanations/helm", key, build)


def _log_job_outputs(ctx: RunContext, report: Path | None, helm_dir: Path | None, encoder_dir: Path | None) -> None:
    """The parent run's params, stage timings, tables, report and the HeLM pyfunc model (no participant ids)."""
    cfg = ctx.cfg
    flat = pd.json_normalize(cfg.to_dict(), sep=".").iloc[0].to_dict()
    mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})
    mlflow.log_dict(ctx.stages, STAGES_FILE)
    mlflow.log_artifact(str(ctx.out_dir / "config.yaml"))
    for name in ("evaluation", "evaluation_helm"):
        d = ctx.out_dir / name
        for f in ("results.csv", "comparison.md"):
            if (d / f).exists():
                mlflow.log_artifact(str(d / f), artifact_path=name)
        if (d / "results.csv").exists():
            res = pd.read_csv(d / "results.csv")
            mlflow.log_metrics({f"{name}/{r.trait}/{_metric_safe(r.method)}/auroc": float(r.auroc)
                                for r in res.itertuples() if pd.notna(r.auroc)})
    if report is not None and report.exists():
        mlflow.log_artifact(str(report), artifact_path="report")
    ckpt = _helm_checkpoint(helm_dir) if helm_dir is not None else None
    if ckpt is not None and encoder_dir is not None:
        uri = log_helm_pyfunc(encoder_checkpoint=encoder_dir / "encoder" / "encoder.pt", helm_checkpoint=ckpt,
                              llm=cfg.helm.llm, registered_model_name=cfg.tracking.register_model,
                              qc_standard=cfg.qc.standard)
        mlflow.set_tag("spirolm.helm_model_uri", uri)
        (ctx.out_dir / "helm_model_uri.txt").write_text(uri + "\n")
        log.info("HeLM pyfunc model: %s", uri)


def _metric_safe(method: str) -> str:
    return metric_key(method).replace("/", "_")


def _check_one_process(cfg: RunConfig) -> None:
    """Refuse multi-process training strategies in the main job, before any stage runs.

    Why: Lightning starts the other ranks by re-running the command, and a second ``spirolm run`` would
    rebuild the stage directories rank 0 is writing. ``spirolm train encoder`` / ``train helm`` support them.
    """
    for name, placement in (("encoder.distributed", cfg.encoder.distributed),
                            ("helm.train.distributed", cfg.helm.train.distributed)):
        if placement.devices * placement.num_nodes > 1 or placement.strategy not in ("auto", "single_device"):
            raise SpirolmInputError("the main job trains each stage in one process; for several devices or nodes "
                                    "train with `spirolm train encoder` / `spirolm train helm`", field=name)


def run_main(cfg: RunConfig, out_dir: Path, *, resume: bool = False) -> RunResult:
    """Run every stage of the main job into ``out_dir``, inside one MLflow parent run.

    Args:
        cfg: the job's config.
        out_dir: run directory; finished stages in it are reused when their inputs are unchanged.
        resume: continue an interrupted run: keep interrupted stages' partial work (training
            checkpoints, finished HeLM rows) and reopen the interrupted MLflow parent run.
    """
    _check_one_process(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(cfg, out_dir, resume)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    t = cfg.tracking
    experiment = t.experiment or f"spirolm-run/{out_dir.resolve().name}"
    state_file = out_dir / MLFLOW_RUN_FILE
    config_hash = stage_key(cfg.to_dict())
    previous = json.loads(state_file.read_text()) if resume and state_file.exists() else {}
    # Reopen the interrupted parent run only for the same config: its params must not change.
    same = previous.get("status") == "RUNNING" and previous.get("config") == config_hash
    run_id = previous.get("run_id") if same else None
    t0 = time.perf_counter()
    with job_parent_run(experiment, f"spirolm-run-{out_dir.resolve().name}", t.tracking_uri, run_id=run_id,
                        tags={"spirolm.kind": "main-job", "spirolm.run_dir": str(out_dir.resolve())}) as parent:
        state = {"run_id": parent.info.run_id, "experiment": experiment, "config": config_hash, "status": "RUNNING"}
        state_file.write_text(json.dumps(state))
        result = _run_stages(ctx)
        ctx.stages["total"] = {"seconds": round(time.perf_counter() - t0, 1)}
        (out_dir / STAGES_FILE).write_text(json.dumps(ctx.stages, indent=1))
        report = _report(ctx)
        _log_job_outputs(ctx, report, *(result[k] for k in ("helm", "encoder")))
        state_file.write_text(json.dumps({**state, "status": "FINISHED"}))
    summary = result["summary"]
    return RunResult(out_dir=out_dir, cohort_dir=result["cohort"], description=result["description"],
                     summary_markdown=summary, report_html=report, parent_run_id=parent.info.run_id, stages=ctx.stages)


def _run_stages(ctx: RunContext) -> dict:
    """Every stage in order; returns the directories and the markdown summary."""
    cfg, out_dir = ctx.cfg, ctx.out_dir
    cohort_dir = cohort_stage(ctx)
    cohort = read_cohort(cohort_dir)
    desc = describe_cohort(cohort.participants, cohort.traits, cohort.blows)
    report = out_dir / "report"
    report.mkdir(exist_ok=True)
    summary = "## Cohort\n\n" + desc.to_markdown()
    (report / "cohort.md").write_text(summary + "\n")
    plot_example_curves(cohort.participants, cohort.blows, cohort.traits, report / "example_curves.png", seed=cfg.seed)

    encoder_dir = encoder_stage(ctx, cohort_dir) if cfg.encoder.enabled else None
    embeddings = encoder_dir / EMBEDDINGS_FILE if encoder_dir is not None else None
    baselines_dir = baselines_stage(ctx, cohort_dir, embeddings) if cfg.baselines.enabled else None
    helm_dir = None
    if cfg.helm.enabled:
        if encoder_dir is None:
            raise SpirolmInputError("the HeLM stage needs the encoder's embeddings: enable the encoder or "
                                    "set helm.enabled: false", field="helm.enabled")
        helm_dir = helm_stage(ctx, cohort_dir, encoder_dir)
    controls_dir = (controls_stage(ctx, cohort_dir, encoder_dir)
                    if encoder_dir is not None and cfg.evaluation.controls else None)
    eval_dir = None
    if encoder_dir is not None or baselines_dir is not None:
        eval_dir = evaluation_stage(ctx, "evaluation", cohort, {"encoder": encoder_dir, "baselines": baselines_dir,
                                                               "controls": controls_dir})
        comparison = (eval_dir / "comparison.md").read_text()
        (report / "comparison.md").write_text(comparison)
        summary += "\n\n## Model comparison (test split)\n\n" + comparison
    if helm_dir is not None:
        helm_eval = evaluation_stage(ctx, "evaluation_helm", cohort,
                                     {"encoder": encoder_dir, "baselines": baselines_dir, "helm": helm_dir,
                                      "controls": controls_dir},
                                     restrict_to=helm_dir)
        comparison = (helm_eval / "comparison.md").read_text()
        (report / "comparison_helm.md").write_text(comparison)
        summary += "\n\n## With the LLM rows (HeLM test subsample)\n\n" + comparison
    if cfg.explanations.enabled:
        if baselines_dir is not None and eval_dir is not None:
            tabular_explanations_stage(ctx, baselines_dir, eval_dir)
        if helm_dir is not None and encoder_dir is not None:
            helm_explanations_stage(ctx, cohort_dir, encoder_dir, helm_dir)
    return {"cohort": cohort_dir, "description": desc, "summary": summary, "helm": helm_dir, "encoder": encoder_dir}


def _report(ctx: RunContext) -> Path | None:
    """The self-contained HTML report (and, optionally, its headless-Chromium screenshot)."""
    if not ctx.cfg.report.html:
        return None
    path = write_html_report(ctx.out_dir)
    if ctx.cfg.report.screenshot:
        screenshot_html(path, path.with_suffix(".png"))
    log.info("report: %s", path)
    return path
