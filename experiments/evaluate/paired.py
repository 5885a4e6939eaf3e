"""Paired bootstrap CIs of AUROC differences between the rows of one comparison.

Why paired: two models scored on the same people share most of their sampling noise, so the CI of
their difference is far narrower than either model's own CI; comparing one model's point estimate
with another's CI bound (the old "bar") says little. Each difference is computed on the very
resamples behind the rows' own CIs (:func:`~experiments.evaluate.harness.resample_blocks`, one seed
per trait), so a table of differences and the comparison table always agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from experiments.evaluate.harness import (
    ORACLE,
    ComparisonResult,
    Interval,
    bootstrap_auroc_auprc,
    resample_blocks,
    trait_seed,
)
from signals.errors import SpirolmInputError

DIFFERENCES_FILE = "differences.csv"


@dataclass(frozen=True)
class PairedDifference:
    """AUROC(a) - AUROC(b) on the same participants, with its paired percentile-bootstrap 95% CI.

    ``n_bootstrap_skipped``: resamples with a single class (no AUROC), left out of the CI.
    """

    diff: float
    ci: Interval
    n_bootstrap_skipped: int


def paired_auroc_difference(y: np.ndarray, a: np.ndarray, b: np.ndarray, n_bootstrap: int,
                            seed: int) -> PairedDifference:
    """``AUROC(y, a) - AUROC(y, b)`` and its 95% CI over the same resamples for both scores.

    Args:
        y: 0/1 labels ``(n,)``; a, b: the two models' risks ``(n,)`` for the same participants.
        n_bootstrap: resamples (0: no CI); seed: the trait's bootstrap seed.
    """
    if not (len(y) == len(a) == len(b)):
        raise SpirolmInputError(f"mismatched lengths: {len(y)} labels, {len(a)} and {len(b)} risks", field="scores")
    diff = float(roc_auc_score(y, a) - roc_auc_score(y, b))
    diffs, skipped = [], 0
    for idx in resample_blocks(len(y), n_bootstrap, seed):
        auroc_a, _, valid = bootstrap_auroc_auprc(y, a, idx)
        auroc_b, _, _ = bootstrap_auroc_auprc(y, b, idx)
        skipped += int((~valid).sum())
        diffs.append((auroc_a - auroc_b)[valid])
    d = np.concatenate(diffs) if diffs else np.empty(0)
    lo, hi = np.percentile(d, [2.5, 97.5]) if d.size else (float("nan"), float("nan"))
    return PairedDifference(diff, Interval(float(lo), float(hi)), skipped)


def paired_differences(result: ComparisonResult, focal: Sequence[str],
                       against: Sequence[str] | None = None) -> pd.DataFrame:
    """Every focal row against every other row (or ``against``), per trait, on the comparison's resamples.

    Returns a long table ``focal, other, trait, n, auroc_diff, ci_lo, ci_hi, n_bootstrap_skipped``
    (``auroc_diff`` = focal - other). Focal rows the comparison lacks are skipped, not invented.
    """
    rows = []
    for t_index, trait in enumerate(result.traits):
        y, risks = result.curves[trait]
        for f in (m for m in focal if m in risks):
            others = [m for m in (against if against is not None else result.methods)
                      if m in risks and m != f and not (against is None and m == ORACLE)]
            for other in others:
                d = paired_auroc_difference(y, risks[f], risks[other], result.n_bootstrap,
                                            trait_seed(result.seed, t_index))
                rows.append({"focal": f, "other": other, "trait": trait, "n": len(y), "auroc_diff": d.diff,
                             "ci_lo": d.ci.low, "ci_hi": d.ci.high, "n_bootstrap_skipped": d.n_bootstrap_skipped})
    return pd.DataFrame(rows, columns=["focal", "other", "trait", "n", "auroc_diff", "ci_lo", "ci_hi",
                                       "n_bootstrap_skipped"])


def differences_markdown(diffs: pd.DataFrame, digits: int = 3) -> str:
    """One table per focal row: rows = the other models, columns = traits, cells = ΔAUROC [95% CI]."""
    parts = []
    f = f"{{:+.{digits}f}}"
    for focal, block in diffs.groupby("focal", sort=False):
        traits = list(dict.fromkeys(block["trait"]))
        lines = [f"**{focal} minus each other row** (paired bootstrap, same participants)", "",
                 "| other | " + " | ".join(f"{t}: ΔAUROC [95% CI]" for t in traits) + " |",
                 "|---|" + "---|" * len(traits)]
        for other, rows in block.groupby("other", sort=False):
            cell = {r.trait: f"{f.format(r.auroc_diff)} [{f.format(r.ci_lo)}, {f.format(r.ci_hi)}]"
                    for r in rows.itertuples()}
            cells = [cell.get(t, "-") for t in traits]
            lines.append(f"| {other} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n" if parts else ""
