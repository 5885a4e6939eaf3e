"""How much signal the synthetic cohort puts where: oracle vs tabular-only vs scalar spirometry.

Used by ``tests/biobank/test_synth.py`` and ``benchmarks/synth_calibration.py``. Tabular features are built
from the *export* columns (what a real-data model would see after import), never from the latents;
label codes in 6152/20002/41270/41271 are excluded so a model cannot read the answer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from biobank.synth.config import LabelConfig
from biobank.synth.labels import TRAITS, spirogram_logits


def _has_code(df: pd.DataFrame, field: str, code: int) -> np.ndarray:
    cols = [c for c in df.columns if c.startswith(f"{field}-0.")]
    return np.any(np.stack([pd.to_numeric(df[c], errors="coerce").to_numpy() == code for c in cols]), axis=0)


def tabular_features(export_df: pd.DataFrame) -> pd.DataFrame:
    """Model-ready covariates from UKB export columns (median imputation + missing flags)."""
    num = lambda c: pd.to_numeric(export_df[c], errors="coerce").to_numpy(float)  # noqa: E731
    smoking = num("20116-0.0")
    pack_years = np.where(smoking == 0, 0.0, num("20161-0.0"))
    eth = num("21000-0.0")
    group = np.where(eth >= 1000, eth // 1000, eth)
    feats = {
        "male": num("31-0.0"),
        "age": num("21022-0.0"),
        "height_cm": num("50-0.0"),
        "bmi": num("21001-0.0"),
        "smoking_previous": (smoking == 1).astype(float),
        "smoking_current": (smoking == 2).astype(float),
        "smoking_unknown": (smoking < 0).astype(float),
        "log_pack_years": np.log1p(pack_years),
        "townsend": num("189-0.0"),
        "pm25": num("24006-0.0"),
        "white": (group == 1).astype(float),
        "hay_fever_eczema": _has_code(export_df, "6152", 9).astype(float),
        "parental_copd": (_has_code(export_df, "20107", 6) | _has_code(export_df, "20110", 6)).astype(float),
    }
    out = pd.DataFrame(feats)
    for c in ("bmi", "log_pack_years", "townsend", "pm25"):
        missing = out[c].isna()
        out[f"{c}_missing"] = missing.astype(float)
        out[c] = out[c].fillna(out[c].median() if missing.mean() < 1 else 0.0)
    return out


def _auroc_lr(x: pd.DataFrame, y: np.ndarray, idx_tr: np.ndarray, idx_te: np.ndarray) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(x.iloc[idx_tr], y[idx_tr])
    return float(roc_auc_score(y[idx_te], model.predict_proba(x.iloc[idx_te])[:, 1]))


def _auroc_gbm(x: pd.DataFrame, y: np.ndarray, idx_tr: np.ndarray, idx_te: np.ndarray, seed: int) -> float:
    model = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, max_leaf_nodes=15,
                                           early_stopping=True, random_state=seed)
    model.fit(x.iloc[idx_tr], y[idx_tr])
    return float(roc_auc_score(y[idx_te], model.predict_proba(x.iloc[idx_te])[:, 1]))


def calibration_report(export_df: pd.DataFrame, latents_df: pd.DataFrame, seed: int = 0,
                       gbm: bool = True, labels: LabelConfig | None = None) -> dict[str, dict[str, float]]:
    """AUROCs on a held-out 30 % split, per trait.

    Keys per trait: ``prevalence``, ``oracle`` (true_risk), ``tabular_lr``, ``tabular_gbm``,
    ``tabular_scalars_lr`` (tabular + true FEV1, FVC, FEV1/FVC, PEF: noise-free scalars, so an upper
    bound for what the scalars carry), ``tabular_shape_lr`` (tabular + scalars + the true shape
    descriptors knee depth and late concavity) and ``tabular_curve_gbm`` (GBM on all of it: how much of
    the oracle is recoverable from a perfectly read curve).

    With ``labels`` (the cohort's :class:`LabelConfig`), also what the record adds to the spirogram:
    ``spirogram_visible`` (the latent part of the true logit, what a perfect spirogram reader reaches),
    ``record_gap`` (oracle - spirogram_visible), ``visible_record_lr`` (LR on that logit + the tabular
    features: a stacking model with a perfect encoder score), ``stacking_gain`` (visible_record_lr -
    spirogram_visible), and ``curve_only_lr`` (scalars + shape, no tabular: a curve reader alone).
    """
    x_tab = tabular_features(export_df)
    lat = latents_df.reset_index(drop=True)
    scalars = pd.DataFrame({
        "fev1": lat["true_fev1_l"], "fvc": lat["true_fvc_l"], "ratio": lat["true_fev1_fvc"],
        "pef": lat["true_pef_l_s"],
    })
    shape = pd.DataFrame({"knee": lat["curve_knee_depth"], "late": np.log(lat["curve_late_concavity"]),
                          "log_k": np.log(lat["curve_k"])})
    x_scalar = pd.concat([x_tab, scalars], axis=1)
    x_shape = pd.concat([x_scalar, shape], axis=1)
    visible = spirogram_logits(lat, labels) if labels is not None else None
    idx = np.arange(len(lat))
    report: dict[str, dict[str, float]] = {}
    for t in TRAITS:
        y = lat[t].to_numpy()
        tr, te = train_test_split(idx, test_size=0.3, random_state=seed, stratify=y)
        r = {
            "prevalence": float(y.mean()),
            "oracle": float(roc_auc_score(y[te], lat[f"true_risk_{t}"].to_numpy()[te])),
            "oracle_all": float(roc_auc_score(y, lat[f"true_risk_{t}"].to_numpy())),
            "tabular_lr": _auroc_lr(x_tab, y, tr, te),
            "tabular_scalars_lr": _auroc_lr(x_scalar, y, tr, te),
            "tabular_shape_lr": _auroc_lr(x_shape, y, tr, te),
        }
        if visible is not None:
            v = visible[t].to_numpy()
            r["spirogram_visible"] = float(roc_auc_score(y[te], v[te]))
            r["record_gap"] = r["oracle"] - r["spirogram_visible"]
            r["visible_record_lr"] = _auroc_lr(x_tab.assign(spirogram_logit=v), y, tr, te)
            r["stacking_gain"] = r["visible_record_lr"] - r["spirogram_visible"]
            r["curve_only_lr"] = _auroc_lr(pd.concat([scalars, shape], axis=1), y, tr, te)
        if gbm:
            r["tabular_gbm"] = _auroc_gbm(x_tab, y, tr, te, seed)
            r["tabular_curve_gbm"] = _auroc_gbm(x_shape, y, tr, te, seed)
        report[t] = r
    return report
