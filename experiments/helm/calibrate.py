"""Fit a trained HeLM's per-trait risk calibrators on its validation risks.

Why here and not in the model: the model only stores and applies calibrators
(:attr:`llm_bridge.model.HeLM.calibration`); which people they are fitted on is a training decision.
They are fitted on the validation participants that also chose the best epoch (the only held-out
labels a training run has; test is never seen). A trait whose validation set is too small to choose a
map is left uncalibrated, and the reason is recorded rather than hidden.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from experiments.data.predictions import risk_column
from llm_bridge.calibration import choose_calibrator
from llm_bridge.model import HeLM
from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)


def calibrate_on_validation(helm: HeLM, labels: np.ndarray, risks: np.ndarray | None,
                            seed: int) -> dict[str, dict]:
    """Set ``helm.calibration`` from validation ``labels`` ``(N, T)`` (NaN: unknown) and raw ``risks`` ``(N, T)``.

    Returns:
        ``{trait: calibrator dict}`` for calibrated traits and ``{trait: {"skipped": reason}}`` for the rest
        (recorded in the checkpoint and the stage summary).
    """
    report: dict[str, dict] = {}
    helm.calibration = {}
    for j, trait in enumerate(helm.cfg.traits):
        if risks is None:
            report[trait] = {"skipped": "no validation risks (validation never ran)"}
            continue
        try:
            cal = choose_calibrator(labels[:, j], risks[:, j], seed=seed, trait=trait)
        except SpirolmInputError as e:
            log.warning("HeLM risks for %s left uncalibrated: %s", trait, e)
            report[trait] = {"skipped": str(e)}
            continue
        helm.calibration[trait] = cal
        report[trait] = cal.to_dict()
    return report


def calibrate_frame(helm: HeLM, scores: pd.DataFrame) -> pd.DataFrame:
    """``eid`` + ``risk_<trait>`` frame through ``helm``'s calibrators (a copy; uncalibrated traits unchanged)."""
    cols = [risk_column(t) for t in helm.cfg.traits]
    out = scores.copy()
    out[cols] = helm.calibrated(scores[cols].to_numpy(dtype=float))
    return out
