"""The main job (``spirolm run``): one config, every stage, cached by content hash.

Stages so far: cohort (synthetic → UKB export → import → QC, or a user's export → import → QC),
then a description of the cohort (counts, QC exclusions, prevalence, oracle AUROC) and a figure of
example curves per phenotype. Later stages (encoder, baselines, HeLM, evaluation, report) hang off the
same run directory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

from biobank.build import build_synthetic_cohort, import_export
from biobank.cohort_io import read_cohort
from biobank.describe import CohortDescription, describe_cohort
from experiments.cohort_figures import plot_example_curves
from experiments.config import RunConfig
from experiments.stages import file_fingerprint, run_stage, stage_key, stamp_key

log = logging.getLogger(__name__)

COHORT_STAGE_VERSION = 1  # bump when the cohort format or QC logic changes, to invalidate caches


@dataclass(frozen=True)
class RunResult:
    """What the main job produced."""

    out_dir: Path
    cohort_dir: Path
    description: CohortDescription
    summary_markdown: str


def cohort_stage(cfg: RunConfig, out_dir: Path) -> Path:
    """Build (or reuse) the run's cohort directory."""
    source = cfg.cohort.source
    if source == "synthetic":
        key = stage_key(COHORT_STAGE_VERSION, cfg.seed, cfg.to_dict()["cohort"], cfg.to_dict()["qc"], cfg.to_dict()["splits"])

        def build(d: Path) -> None:
            build_synthetic_cohort(
                n=cfg.cohort.n, seed=cfg.seed, out_dir=d, qc_standard=cfg.qc.standard, split_seed=cfg.splits.seed
            )

    else:
        export = Path(source)
        if not export.exists():
            from signals.errors import SpirolmInputError

            raise SpirolmInputError("cohort.source is neither 'synthetic' nor an existing export file", file=export)
        key = stage_key(COHORT_STAGE_VERSION, file_fingerprint(export), cfg.to_dict()["qc"], cfg.to_dict()["splits"])

        def build(d: Path) -> None:
            import_export(export, d, qc_standard=cfg.qc.standard, split_seed=cfg.splits.seed)

    return run_stage("cohort", out_dir / "cohort", key, build)


def baselines_stage(cfg: RunConfig, out_dir: Path, cohort_dir: Path, embeddings: Path | None = None) -> Path:
    """Fit and evaluate the tabular baselines (cached on the cohort, the config and the embeddings)."""
    from experiments.baselines import train_baselines

    b = cfg.baselines
    key = stage_key(
        stamp_key(cohort_dir), cfg.seed, cfg.to_dict()["baselines"], None if embeddings is None else file_fingerprint(embeddings)
    )

    def build(d: Path) -> None:
        train_baselines(
            cohort_dir,
            feature_sets=b.feature_sets,
            models=b.models,
            embeddings=embeddings,
            out_dir=d,
            seed=cfg.seed,
            n_bootstrap=b.n_bootstrap,
        )

    return run_stage("baselines", out_dir / "baselines", key, build)


def run_main(cfg: RunConfig, out_dir: Path) -> RunResult:
    """Run every stage of the main job into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    cohort_dir = cohort_stage(cfg, out_dir)
    cohort = read_cohort(cohort_dir)
    desc = describe_cohort(cohort.participants, cohort.traits, cohort.blows)
    report = out_dir / "report"
    report.mkdir(exist_ok=True)
    summary = "## Cohort\n\n" + desc.to_markdown()
    (report / "cohort.md").write_text(summary + "\n")
    plot_example_curves(cohort.participants, cohort.blows, cohort.traits, report / "example_curves.png", seed=cfg.seed)
    if cfg.baselines.enabled:
        baselines_dir = baselines_stage(cfg, out_dir, cohort_dir)
        summary += "\n\n## Model comparison (test split)\n\n" + (baselines_dir / "results.md").read_text()
        (report / "comparison.md").write_text((baselines_dir / "results.md").read_text())
    return RunResult(out_dir=out_dir, cohort_dir=cohort_dir, description=desc, summary_markdown=summary)
