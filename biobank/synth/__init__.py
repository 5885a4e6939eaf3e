"""Embedded synthetic UK-Biobank-like cohort: the default data when no real spirograms are available.

It is synthetic and is not clinical evidence. The model (every equation and default, and the calibration
numbers) is documented in ``docs/synthetic_cohort.md``.

Public API::

    from biobank.synth import SynthConfig, generate_export, generate_chunk
    result = generate_export(n=10_000, seed=0, out_dir=Path("data/synth"))   # ukb_export.csv + latents.parquet
    export_df, latents_df = generate_chunk(1000, np.random.default_rng(0), SynthConfig(), eid_start=1_000_001)
    fusion = synth_config("fusion")   # a named variant (SYNTH_VARIANTS): record-only risk terms
"""

from biobank.synth.config import (
    CurveConfig,
    FaultConfig,
    LabelConfig,
    MissingConfig,
    PhysiologyConfig,
    PopulationConfig,
    SynthConfig,
)
from biobank.synth.export import (
    EXPORT_NAME,
    LATENTS_NAME,
    SynthResult,
    export_columns,
    generate_chunk,
    generate_export,
)
from biobank.synth.faults import FAULTS
from biobank.synth.labels import TRAITS
from biobank.synth.variants import DEFAULT_VARIANT, SYNTH_VARIANTS, synth_config

__all__ = [
    "CurveConfig", "DEFAULT_VARIANT", "EXPORT_NAME", "FAULTS", "FaultConfig", "LATENTS_NAME", "LabelConfig",
    "MissingConfig", "PhysiologyConfig", "PopulationConfig", "SYNTH_VARIANTS", "SynthConfig", "SynthResult",
    "TRAITS", "export_columns", "generate_chunk", "generate_export", "synth_config",
]
