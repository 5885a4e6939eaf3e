"""Named variants of the synthetic cohort model, selectable by name from configs and the CLI.

``default`` is the calibrated :class:`SynthConfig`. On it the record adds almost nothing once the
spirogram is known (the label logit is driven by latents the curve shows), so a fusion model cannot be
told apart from the spirogram encoder. ``fusion`` moves part of each trait's risk from the latent terms
to record-only terms of the label logit (``LabelConfig.asthma_hay_fever``, ``asthma_female``,
``copd_per_log_pack_year``, ``copd_parental``), which no curve reflects, and re-tunes the intercepts so
the prevalences stay those of the default. Coefficients, prevalences and the measured gap: ``docs/synthetic_cohort.md``,
'Fusion variant'.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType

from biobank.synth.config import LabelConfig, SynthConfig
from signals.errors import SpirolmInputError

DEFAULT_VARIANT = "default"

_FUSION_LABELS = dataclasses.replace(
    LabelConfig(),
    # Part of the latent weight moves to the record, so the oracle AUROC stays near the default's while
    # a perfect spirogram reader loses ~0.04-0.05 AUROC to it (docs: measured gaps).
    asthma_intercept=-4.0,  # re-tuned: asthma prevalence ~13.9 % like the default
    asthma_per_hr=1.6,  # default 2.0
    asthma_hay_fever=2.0,  # allergic history: the record's main asthma signal (default 0.1)
    asthma_female=0.6,
    copd_intercept=-6.09,  # re-tuned: COPD prevalence ~6.1 % like the default
    copd_per_obstruction=2.2,  # default 3.8
    copd_per_emphysema=1.7,  # default 3.0
    copd_per_log_pack_year=0.7,  # dose beyond what the lungs show
    copd_parental=1.6,  # familial risk beyond the obstruction it causes
)

SYNTH_VARIANTS: Mapping[str, SynthConfig] = MappingProxyType({
    DEFAULT_VARIANT: SynthConfig(),
    "fusion": SynthConfig(labels=_FUSION_LABELS),
})
"""Variant name -> the whole cohort model. Only the label logit differs between them, so the same seed
gives the same people, latents and spirograms in every variant; only risks, labels and codes change."""


def synth_config(variant: str, *, field: str = "variant") -> SynthConfig:
    """The cohort model of a named variant.

    Raises:
        SpirolmInputError: unknown name, naming ``field`` and the known variants.
    """
    if variant not in SYNTH_VARIANTS:
        raise SpirolmInputError(
            f"unknown synthetic cohort variant {variant!r}; choose from {', '.join(SYNTH_VARIANTS)}", field=field)
    return SYNTH_VARIANTS[variant]
