"""ROC, precision-recall and calibration plots with every method overlaid, one PNG per trait and kind.

Why overlaid: the comparison the project cares about is between methods on the same participants
(oracle vs LogReg vs XGBoost vs encoder vs LLM), so each figure holds all of them.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from experiments.evaluate.harness import ComparisonResult

PLOT_KINDS = ("roc", "pr", "calibration")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _style(method: str) -> dict[str, object]:
    # The oracle is the ceiling, drawn as a dashed black line so it reads as a reference, not a model.
    return {"color": "black", "linestyle": "--"} if method == "oracle" else {}


def plot_roc(result: ComparisonResult, trait: str, path: Path) -> Path:
    """ROC curves of every method for ``trait`` with AUROC in the legend."""
    y, risks = result.curves[trait]
    fig, ax = plt.subplots(figsize=(5, 5))
    for method, score in risks.items():
        fpr, tpr, _ = roc_curve(y, score)
        auc = result.metrics[(method, trait)].auroc
        ax.plot(fpr, tpr, label=f"{method} ({auc:.3f})", **_style(method))
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC - {trait}")
    return _save(fig, ax, path)


def plot_pr(result: ComparisonResult, trait: str, path: Path) -> Path:
    """Precision-recall curves of every method for ``trait``; the grey line is the prevalence."""
    y, risks = result.curves[trait]
    fig, ax = plt.subplots(figsize=(5, 5))
    for method, score in risks.items():
        precision, recall, _ = precision_recall_curve(y, score)
        ap = result.metrics[(method, trait)].auprc
        ax.step(recall, precision, where="post", label=f"{method} ({ap:.3f})", **_style(method))
    ax.axhline(float(np.mean(y)), color="grey", linewidth=0.8)
    ax.set(xlabel="recall", ylabel="precision", title=f"Precision-recall - {trait}", ylim=(0, 1.02))
    return _save(fig, ax, path)


def plot_calibration(result: ComparisonResult, trait: str, path: Path) -> Path:
    """Reliability diagram (harness bins) of every method for ``trait``."""
    fig, ax = plt.subplots(figsize=(5, 5))
    top = 0.0
    for method in result.curves[trait][1]:
        cal = result.metrics[(method, trait)].calibration
        ax.plot(cal["mean_predicted"], cal["fraction_positive"], marker="o", markersize=3,
                label=f"{method} (Brier {result.metrics[(method, trait)].brier:.3f})", **_style(method))
        top = max(top, float(cal[["mean_predicted", "fraction_positive"]].to_numpy().max()))
    lim = min(1.0, top * 1.1 + 0.01)
    ax.plot([0, lim], [0, lim], color="grey", linewidth=0.8)
    ax.set(xlabel="mean predicted risk", ylabel="observed fraction", title=f"Calibration - {trait}",
           xlim=(0, lim), ylim=(0, lim))
    return _save(fig, ax, path)


def plot_trait_curves(result: ComparisonResult, trait: str, out_dir: str | Path) -> list[Path]:
    """Write ``<trait>_roc.png``, ``<trait>_pr.png`` and ``<trait>_calibration.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = _safe(trait)
    return [
        plot_roc(result, trait, out / f"{stem}_roc.png"),
        plot_pr(result, trait, out / f"{stem}_pr.png"),
        plot_calibration(result, trait, out / f"{stem}_calibration.png"),
    ]


def _save(fig: plt.Figure, ax: plt.Axes, path: Path) -> Path:
    ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_comparison(result: ComparisonResult, out_dir: str | Path) -> list[Path]:
    """ROC, PR and calibration PNGs per trait with all methods overlaid; returns the paths."""
    return [p for trait in result.traits for p in plot_trait_curves(result, trait, out_dir)]
