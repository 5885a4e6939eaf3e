"""The ``spirolm`` command line: thin entry points over importable library functions.

Every command parses arguments, calls one library function and prints its result. Bad input
(:class:`signals.errors.SpirolmInputError`) becomes one readable ``error: ...`` line and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markdown import Markdown

from biobank.build import build_synthetic_cohort, import_export, rerun_qc
from biobank.cohort_io import Cohort, read_cohort
from biobank.describe import describe_cohort
from biobank.synth import DEFAULT_VARIANT, SYNTH_VARIANTS
from experiments.cli import baselines, encoder, explain, helm, score
from experiments.cli.run_config import ConfigFile, Overrides, Profile, resolve
from experiments.common.console import configure_console
from experiments.pipeline.run import run_main
from signals.errors import SpirolmInputError

app = typer.Typer(
    help="spirolm: respiratory risk (asthma, COPD) from spirograms + EHR with a HeLM-style multimodal LLM.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
cohort_app = typer.Typer(help="Build, import, QC and describe cohorts.", no_args_is_help=True)
train_app = typer.Typer(help="Train models (encoder, baselines, HeLM).", no_args_is_help=True)
app.add_typer(cohort_app, name="cohort")
app.add_typer(train_app, name="train")

console = Console()

Equations = Annotated[str, typer.Option(help="GLI equation of the FEV1, FVC and FEV1/FVC z-scores: gli_global2022 "
                                             "(race-neutral; ATS 2023, ARTP) or gli2012. Recorded in cohort.json.")]


@cohort_app.command("synth")
def cohort_synth(
    n: Annotated[int, typer.Option(help="Number of participants.")] = 20000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives byte-identical files.")] = 0,
    out: Annotated[Path, typer.Option(help="Output cohort directory.")] = Path("cohort"),
    qc_standard: Annotated[str, typer.Option(help="ats2005 (UKB era) or ats2019.")] = "ats2005",
    split_seed: Annotated[int, typer.Option(help="Seed of the participant split hash.")] = 0,
    variant: Annotated[str, typer.Option(help=f"Synthetic cohort model: {', '.join(SYNTH_VARIANTS)} "
                                              "(fusion: part of the risk is in the record only; docs/synthetic_cohort.md).")] = DEFAULT_VARIANT,
    reference_equations: Equations = "gli_global2022",
) -> None:
    """Generate the embedded synthetic cohort as a UKB field-ID export, then import it (synth → export → import → QC)."""
    build_synthetic_cohort(n=n, seed=seed, out_dir=out, qc_standard=qc_standard, split_seed=split_seed,
                           reference_equations=reference_equations, variant=variant)
    _print_description(read_cohort(out))
    console.print(f"cohort written to [bold]{out}[/] (ukb_export.csv, participants.parquet, blows.parquet)")


@cohort_app.command("import-ukb")
def cohort_import_ukb(
    export: Annotated[Path, typer.Argument(help="UK Biobank field-ID export (CSV, TSV or Parquet).")],
    out: Annotated[Path, typer.Option(help="Output cohort directory.")],
    phenotypes: Annotated[Optional[Path], typer.Option(help="Trait rules YAML (default: biobank/phenotypes.yaml).")] = None,
    qc_standard: Annotated[str, typer.Option(help="ats2005 (UKB era) or ats2019.")] = "ats2005",
    split_seed: Annotated[int, typer.Option(help="Seed of the participant split hash.")] = 0,
    reference_equations: Equations = "gli_global2022",
) -> None:
    """Import a UK Biobank export into participants.parquet + blows.parquet, with QC and splits."""
    import_export(export, out, qc_standard=qc_standard, split_seed=split_seed, phenotypes=phenotypes,
                  reference_equations=reference_equations)
    _print_description(read_cohort(out))


@cohort_app.command("qc")
def cohort_qc(
    cohort: Annotated[Path, typer.Argument(help="Cohort directory.")],
    qc_standard: Annotated[str, typer.Option(help="ats2005 (UKB era) or ats2019.")] = "ats2005",
    reference_equations: Annotated[Optional[str], typer.Option(
        help="gli_global2022 or gli2012; default: keep the equations cohort.json records.")] = None,
) -> None:
    """Re-run ATS/ERS QC on a cohort directory (rewrites QC columns and qc_exclusions.csv)."""
    rerun_qc(cohort, qc_standard=qc_standard, reference_equations=reference_equations)
    _print_description(read_cohort(cohort))


@cohort_app.command("describe")
def cohort_describe(cohort: Annotated[Path, typer.Argument(help="Cohort directory.")]) -> None:
    """Counts, prevalences, QC exclusions with reasons, and (synthetic cohorts) the oracle AUROC per trait."""
    _print_description(read_cohort(cohort))


@app.command("run")
def run(
    profile: Profile = "default",
    config: ConfigFile = None,
    overrides: Overrides = None,
    out: Annotated[Path, typer.Option(help="Run directory (stages are cached here).")] = Path("runs/default"),
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run: keep the interrupted stage's "
                                              "checkpoints / finished parts and its MLflow parent run.")] = False,
) -> None:
    """The main job: cohort → QC → encoder → baselines → HeLM → evaluation → explanations → HTML report, in MLflow."""
    cfg = resolve(profile, config, overrides)
    result = run_main(cfg, out, resume=resume)
    console.print(Markdown(result.summary_markdown))
    if result.report_html is not None:
        console.print(f"report: [bold]{result.report_html}[/]")
    console.print(f"run directory: [bold]{out}[/]  (MLflow parent run {result.parent_run_id})")


train_app.command("encoder")(encoder.train_encoder_command)
train_app.command("baselines")(baselines.train_baselines_cmd)
train_app.command("helm")(helm.train_helm_command)
app.command("embed")(encoder.embed_command)
app.command("chat")(helm.chat_command)
app.command("score")(score.score)
explain_app = typer.Typer(help="Explain trained models.", no_args_is_help=True)
app.add_typer(explain_app, name="explain")
explain_app.command("helm")(explain.explain_helm)


def _print_description(cohort: Cohort) -> None:
    desc = describe_cohort(cohort.participants, cohort.traits, cohort.blows)
    console.print(Markdown(desc.to_markdown()))


def main() -> None:
    """Console-script entry point."""
    configure_console()
    try:
        app()
    except SpirolmInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
