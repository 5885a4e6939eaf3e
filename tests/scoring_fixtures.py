"""Tiny parts of a HeLM pyfunc for the scoring tests: synthetic cohort, tiny Llama, untrained encoder and projector.

Why untrained: scoring tests check plumbing (QC rows, shards, resume, engines), not quality; a random
projector on a 2-layer, 32-wide Llama gives distinct, deterministic risks in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from biobank.build import build_synthetic_cohort
from experiments.encoder.export import save_encoder
from experiments.serve.pyfunc import save_helm_pyfunc
from llm_bridge.llm import load_llm
from llm_bridge.model import HeLM, HeLMConfig
from llm_bridge.tiny import build_tiny_llm
from signals.encoder import EncoderConfig, SpiroEncoder


@dataclass(frozen=True)
class ScoringParts:
    cohort: Path
    llm_dir: Path
    encoder: Path
    helm: Path
    model: Path


def tiny_encoder_config() -> EncoderConfig:
    return EncoderConfig(channels=("flow_volume", "flow_volume_norm"), width_multiplier=0.125, stem_filters=(8, 8, 16),
                         stage_filters=(16, 16, 16, 16), blocks_per_stage=1)


def build_parts(root: Path, n: int = 60, seed: int = 0) -> ScoringParts:
    """Cohort of ``n`` synthetic participants + a saved HeLM pyfunc directory under ``root``."""
    cohort = root / "cohort"
    build_synthetic_cohort(n=n, seed=seed, out_dir=cohort)
    llm_dir = build_tiny_llm(root / "llm", "llama", hidden=32)
    torch.manual_seed(seed)
    encoder = save_encoder(SpiroEncoder(tiny_encoder_config()), root / "encoder")
    helm = HeLM(load_llm(llm_dir), HeLMConfig(traits=("asthma", "copd"), seed=seed)).save_checkpoint(root / "helm.pt")
    model = save_helm_pyfunc(root / "model", encoder_checkpoint=encoder, helm_checkpoint=helm, llm=str(llm_dir))
    return ScoringParts(cohort, llm_dir, encoder, helm, model)
