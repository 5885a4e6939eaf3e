"""Figures of a cohort's spirograms: what a phenotype's curves look like, as the encoder sees them."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from biobank.cohort_io import usable
from signals.curves import flow_volume_curve, volume_time_curve

_GROUP_COLORS = {"control": "tab:green", "asthma": "tab:blue", "copd": "tab:red", "asthma+copd": "tab:purple"}
FV_GRID_L = np.linspace(0.0, 6.58, 1000)
VT_GRID_S = np.arange(1000) * 0.01


def phenotype_groups(participants: pd.DataFrame, traits: list[str]) -> pd.Series:
    """Label each participant control / asthma / copd / asthma+copd (other traits ignored)."""
    asthma = participants["asthma"].fillna(0).astype(int) == 1 if "asthma" in traits else False
    copd = participants["copd"].fillna(0).astype(int) == 1 if "copd" in traits else False
    group = pd.Series("control", index=participants.index)
    group[asthma & ~copd] = "asthma"
    group[copd & ~asthma] = "copd"
    group[asthma & copd] = "asthma+copd"
    return group


def plot_example_curves(
    participants: pd.DataFrame,
    blows: pd.DataFrame,
    traits: list[str],
    out_png: Path,
    *,
    n_per_group: int = 4,
    seed: int = 0,
) -> Path:
    """Plot best-blow flow-volume and volume-time curves of a few random participants per phenotype.

    Only QC-passing participants are drawn, so the figure shows what the encoder is trained on.
    """
    rng = np.random.default_rng(seed)
    ok = participants[usable(participants)]
    groups = phenotype_groups(ok, traits)
    best = blows[blows["is_best"].astype(bool)].set_index("eid")
    fig, (ax_fv, ax_vt) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, color in _GROUP_COLORS.items():
        eids = ok.loc[groups == name, "eid"].to_numpy()
        eids = eids[np.isin(eids, best.index)]
        if len(eids) == 0:
            continue
        chosen = rng.choice(eids, size=min(n_per_group, len(eids)), replace=False)
        for i, eid in enumerate(chosen):
            vol = np.asarray(best.loc[eid, "volume_ml"], dtype=np.int32)
            label = f"{name} (n={len(eids):,})" if i == 0 else None
            ax_fv.plot(FV_GRID_L, flow_volume_curve(vol), color=color, alpha=0.7, lw=1, label=label)
            ax_vt.plot(VT_GRID_S, volume_time_curve(vol), color=color, alpha=0.7, lw=1, label=label)
    ax_fv.set(xlabel="volume exhaled (L)", ylabel="flow (L/s)", title="Flow-volume (encoder input, 0–6.58 L grid)")
    ax_vt.set(xlabel="time (s)", ylabel="volume (L)", title="Volume-time (first 10 s)")
    for ax in (ax_fv, ax_vt):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
