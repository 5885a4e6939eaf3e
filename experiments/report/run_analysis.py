"""Load a finished main-job run from MLflow for analysis (the notebooks' one entry point).

Why a module: notebooks only import. Finding "the run" (latest finished main job, or a given run
id), locating its run directory and reading its tables are library code with errors that name what
is missing — not cells that rot when a file moves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import yaml

from experiments.common.tracking import configure_mlflow
from experiments.explain.helm_run import ABLATION_FILE, ABLATION_SUMMARY_FILE, COSTS_FILE, IG_FILE, SHAP_FILE
from signals.errors import SpirolmInputError

MAIN_JOB_KIND = "main-job"


@dataclass
class FinishedRun:
    """A finished ``spirolm run``: its MLflow parent run and its run directory's outputs.

    Attributes:
        run_id: the MLflow parent run.
        run_dir: the run directory (tag ``spirolm.run_dir``).
        config: the job's config (``config.yaml``).
        stages: per-stage key, cached flag and seconds (``stages.json``).
        comparison: every model on the QC-passing test split (``evaluation/results.csv``).
        comparison_helm: every model incl. the LLM rows on the HeLM subsample (``evaluation_helm``).
        metrics: the parent run's MLflow metrics.
        helm_model_uri: the logged HeLM pyfunc (tag ``spirolm.helm_model_uri``), if any.
    """

    run_id: str
    run_dir: Path
    config: dict
    stages: dict
    comparison: pd.DataFrame | None
    comparison_helm: pd.DataFrame | None
    metrics: dict[str, float] = field(default_factory=dict)
    helm_model_uri: str | None = None

    @property
    def cohort_dir(self) -> Path:
        return self.run_dir / "cohort"

    @property
    def explanations_dir(self) -> Path:
        return self.run_dir / "explanations"

    def manifest(self, part: str) -> list[dict]:
        """The ``index.json`` of ``explanations/<part>`` (``tabular`` or ``helm``); empty if not run."""
        path = self.explanations_dir / part / "index.json"
        return json.loads(path.read_text()) if path.exists() else []


def _read_csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.exists() else None


def load_finished_run(run_id: str | None = None, *, tracking_uri: str | None = None,
                      experiment: str | None = None) -> FinishedRun:
    """The given main-job run, or the latest finished one (optionally within ``experiment``).

    Raises:
        SpirolmInputError: no finished main-job run in the store, an unknown run id, or a run whose
            run directory is gone (naming it).
    """
    uri = configure_mlflow(tracking_uri)
    if run_id is None:
        if experiment is not None:
            exp = mlflow.get_experiment_by_name(experiment)
            if exp is None:
                raise SpirolmInputError(f"no MLflow experiment {experiment!r} in {uri}", field="experiment")
            found = mlflow.search_runs([exp.experiment_id], filter_string=f"tags.`spirolm.kind` = '{MAIN_JOB_KIND}' "
                                       "and attributes.status = 'FINISHED'", order_by=["attributes.end_time DESC"],
                                       max_results=1)
        else:
            found = mlflow.search_runs(search_all_experiments=True, max_results=1,
                                       filter_string=f"tags.`spirolm.kind` = '{MAIN_JOB_KIND}' "
                                       "and attributes.status = 'FINISHED'", order_by=["attributes.end_time DESC"])
        if found.empty:
            raise SpirolmInputError(f"no finished `spirolm run` in the MLflow store {uri}; run one first "
                                    "(README's first command) or pass tracking_uri", field="run_id")
        run_id = str(found["run_id"].iloc[0])
    try:
        run = mlflow.get_run(run_id)
    except mlflow.exceptions.MlflowException as exc:
        raise SpirolmInputError(f"MLflow run {run_id} not found in {uri}: {exc}", field="run_id") from None
    tags = run.data.tags
    if tags.get("spirolm.kind") != MAIN_JOB_KIND:
        raise SpirolmInputError(f"MLflow run {run_id} is not a `spirolm run` parent run", field="run_id")
    run_dir = Path(tags.get("spirolm.run_dir", ""))
    if not (run_dir / "config.yaml").exists():
        raise SpirolmInputError(f"the run directory of MLflow run {run_id} is gone (moved or deleted)", file=run_dir)
    stages_file = run_dir / "stages.json"
    return FinishedRun(
        run_id=run_id, run_dir=run_dir, config=yaml.safe_load((run_dir / "config.yaml").read_text()),
        stages=json.loads(stages_file.read_text()) if stages_file.exists() else {},
        comparison=_read_csv(run_dir / "evaluation" / "results.csv"),
        comparison_helm=_read_csv(run_dir / "evaluation_helm" / "results.csv"),
        metrics=dict(run.data.metrics), helm_model_uri=tags.get("spirolm.helm_model_uri"),
    )


def auroc_table(results: pd.DataFrame) -> pd.DataFrame:
    """``method × trait`` AUROC with its CI as text ("0.913 [0.897, 0.928]"), oracle first."""
    cell = results.apply(lambda r: f"{r.auroc:.3f} [{r.auroc_ci_lo:.3f}, {r.auroc_ci_hi:.3f}]", axis=1)
    table = results.assign(cell=cell).pivot(index="method", columns="trait", values="cell")
    order = ["oracle", *[m for m in results["method"].drop_duplicates() if m != "oracle"]]
    return table.reindex([m for m in order if m in table.index])


@dataclass
class HeLMExplanations:
    """The HeLM explanation outputs of a run (``explanations/helm``; see :mod:`experiments.explain.helm_run`).

    Attributes:
        folder: ``explanations/helm``.
        ablation: per participant and trait: risk with the full prompt, without the spirogram, without the record.
        ablation_summary: per trait means/medians/changes and each prompt's AUROC.
        shap: record-field SHAP values of the example participants (risk scale).
        curves: ``curve_attributions.npz`` as a dict (curves, reference, attributions, eids, traits, channels, ...),
            empty for text-only models.
        costs: seconds per method and per explained participant.
    """

    folder: Path
    ablation: pd.DataFrame
    ablation_summary: pd.DataFrame
    shap: pd.DataFrame | None
    curves: dict
    costs: pd.DataFrame


def load_helm_explanations(run: FinishedRun) -> HeLMExplanations:
    """Read a run's HeLM explanations.

    Raises:
        SpirolmInputError: the run has no HeLM explanations (stage disabled, or no trained HeLM row).
    """
    folder = run.explanations_dir / "helm"
    if not (folder / ABLATION_FILE).exists():
        raise SpirolmInputError("this run has no HeLM explanations (explanations disabled or no trained "
                                "helm:text+spiro row)", file=folder)
    curves: dict = {}
    if (folder / IG_FILE).exists():
        with np.load(folder / IG_FILE) as z:
            curves = {k: z[k] for k in z.files}
    return HeLMExplanations(
        folder=folder, ablation=pd.read_parquet(folder / ABLATION_FILE),
        ablation_summary=pd.read_csv(folder / ABLATION_SUMMARY_FILE), shap=_read_csv(folder / SHAP_FILE),
        curves=curves, costs=pd.read_csv(folder / COSTS_FILE),
    )
