"""The main job (``spirolm run``): one config, every stage, cached by content hash.

Stages: cohort (synthetic → UKB export → import → QC, or a user's export → import → QC) → spirogram
encoder → embeddings → tabular baselines (three feature sets, the third on the embeddings) → one
comparison of every model on the test split with the shared harness. Each stage's cache key holds its
own config section and its upstream stages' keys, so a change redoes exactly the stages it affects.
The HeLM, scoring and report stages hang off the same run directory as they land.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from biobank.build import build_synthetic_cohort, import_export
from biobank.cohort_io import read_cohort
from biobank.describe import CohortDescription, describe_cohort
from experiments.cohort_figures import plot_example_curves
from experiments.config import RunConfig
from experiments.stages import file_fingerprint, run_stage, stage_key, stamp_key
from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)

COHORT_STAGE_VERSION = 1  # bump when the cohort format or QC logic changes, to invalidate caches
EMBEDDINGS_FILE = "embeddings.parquet"


@dataclass(frozen=True)
class RunResult:
    """What the main job produced."""

    out_dir: Path
    cohort_dir: Path
    description: CohortDescription
    summary_markdown: str


def cohort_stage(cfg: RunConfig, out_dir: Path) -> Path:
    """Build (or reuse) the run's cohort directory."""
    d = cfg.to_dict()
    source = cfg.cohort.source
    if source == "synthetic":
        key = stage_key(COHORT_STAGE_VERSION, cfg.seed, d["cohort"], d["qc"], d["splits"])

        def build(tmp: Path) -> None:
            build_synthetic_cohort(
                n=cfg.cohort.n, seed=cfg.seed, out_dir=tmp, qc_standard=cfg.qc.standard, split_seed=cfg.splits.seed
            )

    else:
        export = Path(source)
        if not export.exists():
            raise SpirolmInputError("cohort.source is neither 'synthetic' nor an existing export file", file=export)
        key = stage_key(COHORT_STAGE_VERSION, file_fingerprint(export), d["qc"], d["splits"])

        def build(tmp: Path) -> None:
            import_export(export, tmp, qc_standard=cfg.qc.standard, split_seed=cfg.splits.seed)

    return run_stage("cohort", out_dir / "cohort", key, build)


def encoder_stage(cfg: RunConfig, out_dir: Path, cohort_dir: Path) -> Path:
    """Train the spirogram encoder and embed every QC-passing participant (one cached stage)."""
    from experiments.train_encoder import embed_cohort, load_train_config, train_encoder

    enc_cfg = load_train_config(overrides=cfg.encoder.overrides, profile=cfg.encoder.profile)
    key = stage_key(stamp_key(cohort_dir), enc_cfg.to_dict())

    def build(tmp: Path) -> None:
        result = train_encoder(cohort_dir, tmp, enc_cfg)
        embed_cohort(result.model_path, cohort_dir, tmp / EMBEDDINGS_FILE)

    return run_stage("encoder", out_dir / "encoder", key, build)


def baselines_stage(cfg: RunConfig, out_dir: Path, cohort_dir: Path, embeddings: Path | None = None) -> Path:
    """Fit and evaluate the tabular baselines (cached on the cohort, the config and the embeddings)."""
    from experiments.baselines import train_baselines

    b = cfg.baselines
    key = stage_key(
        stamp_key(cohort_dir), cfg.seed, cfg.to_dict()["baselines"], None if embeddings is None else file_fingerprint(embeddings)
    )

    def build(tmp: Path) -> None:
        train_baselines(
            cohort_dir,
            feature_sets=b.feature_sets,
            models=b.models,
            embeddings=embeddings,
            out_dir=tmp,
            seed=cfg.seed,
            n_bootstrap=b.n_bootstrap,
        )

    return run_stage("baselines", out_dir / "baselines", key, build)


def _method_scores(baselines_dir: Path | None, encoder_dir: Path | None, traits: list[str]) -> dict[str, pd.DataFrame]:
    """Collect every model's test-split risks as ``{method: DataFrame[eid, trait...]}``."""
    methods: dict[str, pd.DataFrame] = {}
    if baselines_dir is not None:
        wide = pd.read_parquet(baselines_dir / "predictions_test.parquet")
        for col in wide.columns.drop("eid"):
            trait, method = col.split("__", 1)
            methods.setdefault(method, wide[["eid"]].copy())[trait] = wide[col].to_numpy()
    if encoder_dir is not None:
        enc = pd.read_parquet(encoder_dir / "predictions.parquet")
        enc = enc[enc["split"] == "test"]
        cols = {f"risk_{t}": t for t in traits if f"risk_{t}" in enc.columns}
        methods["encoder (spirogram only)"] = enc[["eid", *cols]].rename(columns=cols).reset_index(drop=True)
    return methods


def evaluation_stage(cfg: RunConfig, out_dir: Path, cohort, deps: list[Path]) -> Path:  # type: ignore[no-untyped-def]
    """Compare every model on the same participants: the test split with a usable spirogram.

    The encoder cannot score a participant whose every blow failed QC, so all methods are compared on
    the QC-passing test participants (the count left out is reported), keeping the rows comparable.
    """
    from experiments.evaluation import compare_methods

    key = stage_key([stamp_key(d) for d in deps], cfg.to_dict()["evaluation"], cfg.seed)

    def build(tmp: Path) -> None:
        p = cohort.participants
        test = p[p["split"] == "test"]
        usable = test[test["qc_status"] != "fail"].reset_index(drop=True)
        methods = _method_scores(
            next((d for d in deps if d.name == "baselines"), None), next((d for d in deps if d.name == "encoder"), None), cohort.traits
        )
        methods = {m: s[s["eid"].isin(usable["eid"])].reset_index(drop=True) for m, s in methods.items()}
        result = compare_methods(usable, methods, cohort.traits, n_bootstrap=cfg.evaluation.n_bootstrap, seed=cfg.seed)
        result.save_tables(tmp)
        result.plot(tmp / "plots")
        note = (
            f"Test split: {len(test):,} participants; compared on the {len(usable):,} with a QC-passing spirogram "
            f"({len(test) - len(usable):,} QC failures left out, listed in the cohort's qc_exclusions.csv). "
            "Cells: AUROC [95% CI] / AUPRC [95% CI], bootstrap, seeded."
        )
        (tmp / "comparison.md").write_text(note + "\n\n" + result.to_markdown() + "\n")

    return run_stage("evaluation", out_dir / "evaluation", key, build)


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

    encoder_dir = encoder_stage(cfg, out_dir, cohort_dir) if cfg.encoder.enabled else None
    embeddings = encoder_dir / EMBEDDINGS_FILE if encoder_dir is not None else None
    baselines_dir = baselines_stage(cfg, out_dir, cohort_dir, embeddings) if cfg.baselines.enabled else None
    deps = [d for d in (encoder_dir, baselines_dir) if d is not None]
    if deps:
        eval_dir = evaluation_stage(cfg, out_dir, cohort, deps)
        comparison = (eval_dir / "comparison.md").read_text()
        (report / "comparison.md").write_text(comparison)
        summary += "\n\n## Model comparison (test split)\n\n" + comparison
    return RunResult(out_dir=out_dir, cohort_dir=cohort_dir, description=desc, summary_markdown=summary)
