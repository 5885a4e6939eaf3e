"""Cohort building entry points shared by the CLI and the main job.

The embedded default cohort deliberately goes through the real-data path: the synthetic generator
writes a UK Biobank field-ID export, and the same importer a user runs on their own export turns it into
the cohort tables. So every run on the default exercises the reader, QC and phenotype rules.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from biobank.cohort_io import read_cohort, read_info, write_cohort, write_info
from biobank.cohort_qc import EquationChoice, run_qc, zscore_equations
from biobank.synth import DEFAULT_VARIANT, generate_export, synth_config
from biobank.ukb_import import import_ukb_export
from signals.errors import SpirolmInputError
from signals.qc import QCConfig

log = logging.getLogger(__name__)

EXPORT_NAME = "ukb_export.csv"


def qc_config_for(standard: str) -> QCConfig:
    """The QC configuration for a named ATS/ERS standard (``ats2005`` or ``ats2019``)."""
    if standard not in ("ats2005", "ats2019"):
        raise SpirolmInputError(f"unknown QC standard {standard!r}; use ats2005 or ats2019", field="qc_standard")
    return QCConfig(standard=standard)


def import_export(
    export: Path,
    out_dir: Path,
    *,
    qc_standard: str = "ats2005",
    split_seed: int = 0,
    phenotypes: Path | None = None,
    reference_equations: EquationChoice = None,
):  # type: ignore[no-untyped-def]
    """Import a UKB export (CSV/TSV/Parquet) into a cohort directory; returns the import summary.

    ``reference_equations``: GLI equation(s) of the z-scores (default GLI Global 2022, see
    :data:`biobank.cohort_qc.EquationChoice`); ``cohort.json`` records them.
    """
    export = Path(export)
    if not export.exists():
        raise SpirolmInputError("export file does not exist", file=export)
    return import_ukb_export(
        export, Path(out_dir), qc_config=qc_config_for(qc_standard), phenotypes=phenotypes, split_seed=split_seed,
        reference_equations=reference_equations,
    )


def build_synthetic_cohort(
    *, n: int, seed: int, out_dir: Path, qc_standard: str = "ats2005", split_seed: int = 0,
    reference_equations: EquationChoice = None, variant: str = DEFAULT_VARIANT,
):  # type: ignore[no-untyped-def]
    """Generate the synthetic cohort's UKB export in ``out_dir`` and import it there.

    ``variant`` names the cohort model (:data:`biobank.synth.SYNTH_VARIANTS`); ``cohort.json`` records
    it under ``synthetic`` with ``n`` and ``seed``, since the export itself does not say which model made it.
    """
    if n < 1:
        raise SpirolmInputError(f"--n must be at least 1, got {n}", field="n")
    cfg = synth_config(variant)
    zscore_equations(reference_equations)  # refuse an unknown equation before generating anything
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    generate_export(n=n, seed=seed, out_dir=out_dir, cfg=cfg)
    summary = import_export(out_dir / EXPORT_NAME, out_dir, qc_standard=qc_standard, split_seed=split_seed,
                            reference_equations=reference_equations)
    info = read_info(out_dir)
    info["synthetic"] = {"variant": variant, "n": n, "seed": seed}
    write_info(out_dir, info)
    return summary


def rerun_qc(
    cohort_dir: Path, *, qc_standard: str = "ats2005", reference_equations: EquationChoice = None
):  # type: ignore[no-untyped-def]
    """Re-run QC on an existing cohort directory with another standard and rewrite it in place.

    Blows refused at import (``parse_error``, ``implausible_volume``: their volumes are null) stay
    rejected; everything else is re-measured, so switching ``ats2005`` ↔ ``ats2019`` changes only what the
    BEV floor changes. ``reference_equations=None`` keeps the GLI equations ``cohort.json`` records (the
    defaults for a cohort that records none), so a QC re-run never switches equations silently;
    ``cohort.json`` is rewritten with the equations actually used.
    """
    cfg = qc_config_for(qc_standard)
    cohort = read_cohort(cohort_dir)
    if reference_equations is None:
        reference_equations = cohort.info.get("reference_equations")
    equations = zscore_equations(reference_equations)
    participants, blows, exclusions = run_qc(cohort.participants, cohort.blows, cfg,
                                             reference_equations=equations)
    info = dict(cohort.info)
    info["qc_config"] = dataclasses.asdict(cfg)
    info["reference_equations"] = equations
    write_cohort(cohort_dir, participants, blows, traits=cohort.traits, exclusions=exclusions, info=info)
    return read_cohort(cohort_dir)
