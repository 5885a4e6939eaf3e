"""Figures of the HeLM explanations (PNG; same style as :mod:`experiments.explain.tabular_shap`).

No figure names a participant id: examples are titled by trait and role ("asthma: highest-risk case").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import shap
from matplotlib.collections import LineCollection
from matplotlib.colors import TwoSlopeNorm

from signals.curves import MAX_VOLUME_L
from signals.ukb3066 import SAMPLE_RATE_HZ

#: Per channel: x label, y label and the x grid the curve builder used (signals.curves).
CHANNEL_AXES = {
    "flow_volume": ("volume (L)", "flow (L/s)", lambda n: np.linspace(0.0, MAX_VOLUME_L, n)),
    "flow_volume_norm": ("volume / FVC", "flow / PEF", lambda n: np.linspace(0.0, 1.0, n)),
    "volume_time": ("time (s)", "volume (L)", lambda n: np.arange(n) / SAMPLE_RATE_HZ),
    "position": ("grid position", "position (CoordConv)", lambda n: np.linspace(0.0, 1.0, n)),
}
VARIANT_LABELS = {"risk_full": "full", "risk_no_spiro": "no spirogram", "risk_no_text": "no record",
                  "risk_shuffled_text": "other's record", "risk_other_spiro": "other's spirogram"}


def _save(fig: plt.Figure, path: Path, dpi: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_ablation(ablation: pd.DataFrame, summary: pd.DataFrame, path: Path, *, dpi: int = 110) -> Path:
    """Per trait: risk under each prompt (full / a modality removed / taken from another participant),
    cases and controls apart."""
    traits = list(dict.fromkeys(ablation["trait"]))
    variants = [v for v in VARIANT_LABELS if v in ablation.columns and ablation[v].notna().any()]
    fig, axes = plt.subplots(1, len(traits), figsize=(5.6 * len(traits), 3.8), squeeze=False, layout="constrained")
    for ax, trait in zip(axes[0], traits, strict=True):
        d = ablation[ablation["trait"] == trait]
        groups = [("all", d)] if d["label"].isna().all() else [("control", d[d["label"] == 0]),
                                                              ("case", d[d["label"] == 1])]
        width = 0.8 / len(groups)
        for g, (name, part) in enumerate(groups):
            pos = np.arange(len(variants)) + (g - (len(groups) - 1) / 2) * width
            data = [part[v].dropna().to_numpy() for v in variants]
            keep = [i for i, x in enumerate(data) if x.size]
            if keep:
                bp = ax.boxplot([data[i] for i in keep], positions=pos[keep], widths=width * 0.9, patch_artist=True,
                                showfliers=False)
                for patch in bp["boxes"]:
                    patch.set_facecolor("tab:red" if name == "case" else "tab:blue" if name == "control" else "0.7")
                    patch.set_alpha(0.5)
            ax.plot([], [], "s", color="tab:red" if name == "case" else "tab:blue" if name == "control" else "0.7",
                    alpha=0.5, label=f"{name} (n={len(part)})")
        ax.set_xticks(np.arange(len(variants)), [VARIANT_LABELS[v] for v in variants])
        ax.set_ylabel("risk P(yes)")
        row = summary[summary["trait"] == trait]
        aurocs = [f"{VARIANT_LABELS[v]} {row[f'auroc_{v}'].iloc[0]:.2f}" for v in variants
                  if f"auroc_{v}" in row and np.isfinite(row[f"auroc_{v}"].iloc[0])]
        ax.set_title(trait + ("\nAUROC: " + ", ".join(aurocs) if aurocs else ""), fontsize=9)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle("Modality ablation: risk with a modality removed from the prompt", fontsize=10)
    return _save(fig, path, dpi)


def plot_shap_bar(labels: Sequence[str], values: np.ndarray, path: Path, *, title: str, dpi: int = 110) -> Path:
    """Mean |SHAP| per record field over the explained participants (``values``: ``(n, M)``, risk scale).

    Shown in percentage points of risk: a 135M LLM's record effects are often below 0.01, which
    shap's two-decimal labels would print as 0.
    """
    mean_abs = 100 * np.abs(values).mean(axis=0)
    order = np.argsort(mean_abs)
    fig, ax = plt.subplots(figsize=(5.5, 0.28 * len(labels) + 1.2))
    ax.barh(np.asarray(labels)[order], mean_abs[order], color="#1E88E5")
    ax.set_xlabel("mean |SHAP| (percentage points of risk)")
    ax.set_title(title, fontsize=9)
    return _save(fig, path, dpi)


def plot_shap_waterfall(labels: Sequence[str], text: Sequence[str], values: np.ndarray, base: float, path: Path, *,
                        title: str, max_display: int = 12, dpi: int = 110) -> Path:
    """One participant's waterfall from the background mean risk to theirs (``shap.plots.waterfall``).

    In percentage points of risk (values and base x 100), for the reason given in :func:`plot_shap_bar`.
    """
    expl = shap.Explanation(values=100 * np.asarray(values, float), base_values=100 * float(base),
                            data=np.asarray(text, dtype=object), feature_names=list(labels))
    plt.figure()
    shap.plots.waterfall(expl, max_display=max_display, show=False)
    fig = plt.gcf()
    fig.suptitle(title + "\n(risk in percentage points)", fontsize=10)
    return _save(fig, path, dpi)


def _coloured_line(ax: plt.Axes, x: np.ndarray, y: np.ndarray, c: np.ndarray, norm: TwoSlopeNorm) -> LineCollection:
    points = np.stack([x, y], axis=1)[:, None, :]
    segments = np.concatenate([points[:-1], points[1:]], axis=1)
    ax.plot(x, y, color="0.25", lw=3.2, zorder=1)  # outline: the curve stays visible where attribution ~ 0
    lc = LineCollection(segments, cmap="coolwarm", norm=norm, linewidths=2.2, zorder=2)
    lc.set_array(0.5 * (c[:-1] + c[1:]))
    ax.add_collection(lc)
    return lc


def plot_curve_attribution(curve: np.ndarray, baseline: np.ndarray, attribution: np.ndarray,
                           channels: Sequence[str], path: Path, *, title: str, dpi: int = 110) -> Path:
    """Each input curve coloured by its integrated-gradients attribution, the attribution below it.

    Red raises the risk, blue lowers it (relative to the reference curve, dashed grey).
    """
    n_ch, n = curve.shape
    fig, axes = plt.subplots(2, n_ch, figsize=(5.6 * n_ch, 5.4), squeeze=False, layout="constrained",
                             gridspec_kw={"height_ratios": [3, 1.3]}, sharex="col")
    for k, name in enumerate(channels):
        xlabel, ylabel, grid = CHANNEL_AXES.get(name, ("index", name, lambda m: np.arange(m)))
        x = grid(n)
        a = attribution[k]
        lim = float(np.abs(attribution).max()) or 1e-12
        norm = TwoSlopeNorm(vmin=-lim, vcenter=0.0, vmax=lim)
        top, bottom = axes[0, k], axes[1, k]
        top.plot(x, baseline[k], "--", color="0.6", lw=1, label="reference curve")
        lc = _coloured_line(top, x, curve[k], a, norm)
        top.set_xlim(x.min(), x.max())
        lo, hi = min(curve[k].min(), baseline[k].min()), max(curve[k].max(), baseline[k].max())
        top.set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.08 * (hi - lo + 1e-9))
        top.set_ylabel(ylabel)
        top.set_title(f"{name}: sum of attributions {a.sum():+.3f}", fontsize=9)
        top.legend(fontsize=7, loc="upper right")
        bottom.fill_between(x, 0, a, where=a >= 0, color="tab:red", alpha=0.7, lw=0)
        bottom.fill_between(x, 0, a, where=a < 0, color="tab:blue", alpha=0.7, lw=0)
        bottom.axhline(0, color="0.3", lw=0.5)
        bottom.set_xlabel(xlabel)
        bottom.set_ylabel("attribution")
        fig.colorbar(lc, ax=axes[:, k], label="attribution (risk)", shrink=0.8, pad=0.01)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path, dpi)
