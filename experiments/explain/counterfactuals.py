"""Counterfactual record edits: how far a trained HeLM's risk moves when one record field changes.

Why: an ablation says whether a modality matters at all; an edit says whether the model reads a
field in the direction the cohort's risk model does (smoking raises COPD risk, hay fever raises asthma
risk). Each edit applies only to participants for whom it is a change (a never-smoker made a smoker),
scores them through the model's own forward pass, and reports the mean change with a bootstrap CI
over participants. Changes are on the calibrated risk a user reads, and on raw P(yes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import bootstrap

from experiments.data.predictions import risk_column
from experiments.helm.datamodule import build_table
from experiments.helm.score import score_table
from llm_bridge.model import HeLM


@dataclass(frozen=True)
class RecordEdit:
    """One counterfactual: who it applies to, what it changes, which traits it is read on."""

    name: str
    traits: tuple[str, ...]
    eligible: Callable[[pd.DataFrame], pd.Series]
    edit: Callable[[pd.DataFrame], pd.DataFrame]


#: The edits of issue 15: smoking for COPD, atopy for asthma, age for both.
RECORD_EDITS: tuple[RecordEdit, ...] = (
    RecordEdit("never smoker -> current smoker, 40 pack-years", ("copd",),
               lambda d: d["smoking_status"] == "never",
               lambda d: d.assign(smoking_status="current", pack_years=40.0)),
    RecordEdit("hay fever or eczema: no -> yes", ("asthma",),
               lambda d: d["hay_fever_eczema"] == 0,
               lambda d: d.assign(hay_fever_eczema=1)),
    RecordEdit("age + 10 years", ("asthma", "copd"),
               lambda d: d["age"].notna(),
               lambda d: d.assign(age=d["age"] + 10)),
)


def _mean_ci(values: np.ndarray, n_bootstrap: int, seed: int) -> tuple[float, float]:
    if len(values) < 2 or n_bootstrap <= 0:
        return float("nan"), float("nan")
    res = bootstrap((values,), np.mean, n_resamples=n_bootstrap, method="percentile",
                    random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def counterfactual_effects(helm: HeLM, rows: pd.DataFrame, *, edits: Sequence[RecordEdit] = RECORD_EDITS,
                           batch_size: int = 16, n_bootstrap: int = 1000, seed: int = 0
                           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Risks before and after each edit, and the mean change per (edit, trait) with its 95% CI.

    Args:
        helm: the trained graft (its calibrators, if any, give the calibrated columns).
        rows: participants with the record columns, the traits and (spirogram variants) ``emb_*``.
        edits: the counterfactuals; traits the model does not score are skipped.
        batch_size: participants per forward; n_bootstrap, seed: the CI of each mean change.

    Returns:
        ``(per participant: edit, eid, trait, risk_before, risk_after, raw_before, raw_after;
        summary: edit, trait, n, mean_delta, ci_lo, ci_hi, mean_raw_delta, raw_ci_lo, raw_ci_hi)``.
    """
    rows = rows.reset_index(drop=True)
    traits = list(helm.cfg.traits)
    before_raw = score_table(helm, build_table(helm, rows), batch_size, desc="counterfactual: as recorded",
                             calibrated=False).set_index("eid")
    long, summary = [], []
    for e_index, edit in enumerate(edits):
        wanted = [t for t in edit.traits if t in traits]
        chosen = rows[edit.eligible(rows).fillna(False).to_numpy(dtype=bool)].reset_index(drop=True)
        if not wanted or chosen.empty:
            continue
        after_raw = score_table(helm, build_table(helm, edit.edit(chosen)), batch_size,
                                desc=f"counterfactual: {edit.name}", calibrated=False).set_index("eid")
        eids = chosen["eid"].to_numpy()
        b_raw = before_raw.loc[eids, [risk_column(t) for t in traits]].to_numpy(dtype=float)
        a_raw = after_raw.loc[eids, [risk_column(t) for t in traits]].to_numpy(dtype=float)
        b_cal, a_cal = helm.calibrated(b_raw), helm.calibrated(a_raw)
        for t in wanted:
            j = traits.index(t)
            long.append(pd.DataFrame({"edit": edit.name, "eid": eids, "trait": t, "risk_before": b_cal[:, j],
                                      "risk_after": a_cal[:, j], "raw_before": b_raw[:, j], "raw_after": a_raw[:, j]}))
            delta, raw_delta = a_cal[:, j] - b_cal[:, j], a_raw[:, j] - b_raw[:, j]
            lo, hi = _mean_ci(delta, n_bootstrap, seed + e_index)
            raw_lo, raw_hi = _mean_ci(raw_delta, n_bootstrap, seed + e_index)
            summary.append({"edit": edit.name, "trait": t, "n": len(eids), "mean_delta": float(delta.mean()),
                            "ci_lo": lo, "ci_hi": hi, "mean_raw_delta": float(raw_delta.mean()),
                            "raw_ci_lo": raw_lo, "raw_ci_hi": raw_hi})
    columns = ["edit", "eid", "trait", "risk_before", "risk_after", "raw_before", "raw_after"]
    per_participant = pd.concat(long, ignore_index=True) if long else pd.DataFrame(columns=columns)
    return per_participant, pd.DataFrame(summary, columns=["edit", "trait", "n", "mean_delta", "ci_lo", "ci_hi",
                                                           "mean_raw_delta", "raw_ci_lo", "raw_ci_hi"])
