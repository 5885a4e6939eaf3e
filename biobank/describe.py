"""Describe a cohort: what a user checks before training anything.

Counts, split sizes, prevalence per trait and split, QC outcomes with their reasons, missing labels and
— for synthetic cohorts, which carry ``true_risk_<trait>`` — the oracle AUROC, i.e. the best AUROC any
model could reach on these labels. Pure functions over the cohort tables; rendering is separate so that
the CLI (rich), the HTML report and tests all use the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from biobank.splits import SPLITS


@dataclass(frozen=True)
class TraitSummary:
    """Label counts and (for synthetic cohorts) the oracle AUROC of one trait."""

    trait: str
    n_labelled: int
    n_missing: int
    n_cases: int
    prevalence: float
    prevalence_by_split: dict[str, float]
    oracle_auroc: float | None
    oracle_auroc_test: float | None


@dataclass(frozen=True)
class CohortDescription:
    """Everything ``spirolm cohort describe`` prints."""

    n_participants: int
    n_blows: int | None
    split_counts: dict[str, int]
    qc_status_counts: dict[str, int]
    participant_qc_reasons: dict[str, int]
    blow_qc_reasons: dict[str, int]
    traits: list[TraitSummary] = field(default_factory=list)
    synthetic: bool = False

    def to_markdown(self) -> str:
        """Markdown rendering used in docs and the HTML report."""
        lines = [
            f"Participants: {self.n_participants:,}"
            + (f"; blows: {self.n_blows:,}" if self.n_blows is not None else ""),
            "",
            "Splits: " + ", ".join(f"{k} {v:,}" for k, v in self.split_counts.items()),
            "",
            "QC status: " + ", ".join(f"{k} {v:,}" for k, v in self.qc_status_counts.items()),
            "",
            "| trait | labelled | missing | cases | prevalence | train | val | test | oracle AUROC (all) | oracle AUROC (test) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for t in self.traits:
            ps = [t.prevalence_by_split.get(s, float("nan")) for s in SPLITS]
            lines.append(
                f"| {t.trait} | {t.n_labelled:,} | {t.n_missing:,} | {t.n_cases:,} | {t.prevalence:.3f} | "
                + " | ".join(f"{p:.3f}" for p in ps)
                + f" | {_fmt(t.oracle_auroc)} | {_fmt(t.oracle_auroc_test)} |"
            )
        if self.participant_qc_reasons:
            lines += ["", "| participant QC reason (warn/fail) | count |", "|---|---|"]
            lines += [f"| {k} | {v:,} |" for k, v in self.participant_qc_reasons.items()]
        if self.blow_qc_reasons:
            lines += ["", "| blow rejection reason | count |", "|---|---|"]
            lines += [f"| {k} | {v:,} |" for k, v in self.blow_qc_reasons.items()]
        return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.3f}"


def _reason_counts(reasons: pd.Series, *, multi: bool) -> dict[str, int]:
    """Count reason codes.

    Blow reasons are ``;``-joined codes (``"bev_high;cough"``, ``multi=True``). A participant reason is one
    code followed by detail (``"no_acceptable_blow (blow0: bev_high; blow1: cough)"``, ``multi=False``):
    only its leading code is counted, so the detail's own separators are not mistaken for codes.
    """
    codes = reasons.dropna().astype(str)
    if multi:
        codes = codes.str.split(";").explode()
    codes = codes.str.strip().str.split(r"[\s(:]", n=1, regex=True).str[0]
    codes = codes[codes != ""]
    return {str(k): int(v) for k, v in codes.value_counts().items()}


def _oracle_auroc(labels: pd.Series, risk: pd.Series) -> float | None:
    mask = labels.notna() & risk.notna()
    y = labels[mask].astype(int).to_numpy()
    if mask.sum() == 0 or len(np.unique(y)) < 2:
        return None
    return float(roc_auc_score(y, risk[mask].to_numpy(dtype=float)))


def describe_cohort(
    participants: pd.DataFrame, traits: list[str], blows: pd.DataFrame | None = None
) -> CohortDescription:
    """Summarise a cohort.

    Args:
        participants: the participants table (contract in docs/design.md).
        traits: trait column names (0/1 nullable labels).
        blows: the blows table, if loaded, for blow-level QC reasons.
    """
    split_counts = {s: int((participants["split"] == s).sum()) for s in SPLITS} if "split" in participants else {}
    qc_counts = {str(k): int(v) for k, v in participants["qc_status"].value_counts().items()}
    not_pass = participants.loc[participants["qc_status"] != "pass", "qc_reason"]
    blow_reasons: dict[str, int] = {}
    if blows is not None and "qc_reason" in blows:
        blow_reasons = _reason_counts(blows.loc[blows["qc_status"] != "accept", "qc_reason"], multi=True)
    summaries = []
    synthetic = False
    for trait in traits:
        y = participants[trait]
        labelled = y.notna()
        by_split = {}
        if "split" in participants:
            for s in SPLITS:
                ys = y[(participants["split"] == s) & labelled]
                by_split[s] = float(ys.astype(float).mean()) if len(ys) else float("nan")
        risk_col = f"true_risk_{trait}"
        oracle = oracle_test = None
        if risk_col in participants:
            synthetic = True
            oracle = _oracle_auroc(y, participants[risk_col])
            if "split" in participants:
                test = participants["split"] == "test"
                oracle_test = _oracle_auroc(y[test], participants.loc[test, risk_col])
        summaries.append(
            TraitSummary(
                trait=trait,
                n_labelled=int(labelled.sum()),
                n_missing=int((~labelled).sum()),
                n_cases=int((y[labelled].astype(int) == 1).sum()),
                prevalence=float(y[labelled].astype(float).mean()) if labelled.any() else float("nan"),
                prevalence_by_split=by_split,
                oracle_auroc=oracle,
                oracle_auroc_test=oracle_test,
            )
        )
    return CohortDescription(
        n_participants=len(participants),
        n_blows=None if blows is None else len(blows),
        split_counts=split_counts,
        qc_status_counts=qc_counts,
        participant_qc_reasons=_reason_counts(not_pass, multi=False),
        blow_qc_reasons=blow_reasons,
        traits=summaries,
        synthetic=synthetic,
    )
