"""The one evaluation harness every spirolm model is scored with.

Why one harness: HeLM-style comparisons (Belyaeva et al. 2023) are only meaningful when every row of
the table - oracle, logistic regression, XGBoost, the spirogram encoder, the LLM - is computed by the
same code on the same participants with the same bootstrap resamples. This module owns that code:

* :func:`evaluate_scores` - one model, one trait: AUROC / AUPRC with seeded percentile-bootstrap 95%
  CIs, Brier score, a reliability diagram, prevalence, and the same metrics per subgroup (sex, age
  band, smoking status).
* :func:`compare_methods` - many models, many traits on one test split. When the cohort carries
  ``true_risk_<trait>`` (synthetic cohorts) an **oracle** row that scores with the true risk is always
  added, and each model's AUROC is also reported as a fraction of the oracle's, because on synthetic
  data the oracle - not 1.0 - is the best any model can reach.

Bad input never passes silently: mismatched lengths, non-finite scores, labels other than 0/1, a
single class, or missing participants raise :class:`~signals.errors.SpirolmInputError`; rows with a
missing label are dropped from the metrics but counted (``n_missing_label``); bootstrap resamples
that contain one class only are skipped and counted (``n_bootstrap_skipped``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.special import expit
from sklearn.calibration import calibration_curve
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from experiments.data.predictions import risk_column, scores_frame
from llm_bridge.calibration import clipped_logit
from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)

ORACLE = "oracle"
TRUE_RISK_PREFIX = "true_risk_"
# Resamples are drawn in blocks so that 1000 x 10k-row bootstraps stay well under 100 MB of memory.
_BOOTSTRAP_BLOCK = 100
# Age bands of the HeLM / UKB subgroup analyses; <40 and >=70 only appear when present.
AGE_BAND_EDGES = (-np.inf, 40.0, 50.0, 60.0, 70.0, np.inf)
AGE_BAND_LABELS = ("<40", "40-49", "50-59", "60-69", ">=70")


@dataclass(frozen=True)
class Interval:
    """A two-sided confidence interval (percentile bootstrap)."""

    low: float
    high: float

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies inside the closed interval."""
        return bool(self.low <= value <= self.high)


@dataclass(frozen=True)
class TraitMetrics:
    """Metrics of one score for one trait on one set of participants.

    Attributes:
        n: participants with a label (used for the metrics).
        n_pos: cases among them.
        prevalence: ``n_pos / n``.
        n_missing_label: participants dropped because their label was missing (reported, not hidden).
        auroc, auroc_ci: area under the ROC curve and its bootstrap 95% CI.
        auprc, auprc_ci: average precision (sklearn's step-wise AUPRC) and its 95% CI.
        brier: Brier score of the risks (lower is better; needs calibrated risks to be meaningful).
        calibration_slope: ``b`` of the logistic recalibration ``logit P(y) = a + b logit(risk)`` (1 is ideal;
            below 1 the risks are too extreme).
        calibration_intercept: calibration-in-the-large, ``a`` with the slope fixed at 1 (0 is ideal;
            negative: the risks are too high on average).
        calibration: reliability-diagram bins: ``bin, mean_predicted, fraction_positive, count``.
        ece: expected calibration error (count-weighted |fraction_positive - mean_predicted|).
        subgroups: one row per (variable, level): ``variable, level, n, n_pos, prevalence, auroc,
            auroc_lo, auroc_hi, auprc, auprc_lo, auprc_hi, brier, note`` (``note`` explains NaNs).
        n_bootstrap: resamples requested.
        n_bootstrap_skipped: resamples skipped because they held a single class.
        seed: bootstrap seed (same seed -> identical CIs).
    """

    n: int
    n_pos: int
    prevalence: float
    n_missing_label: int
    auroc: float
    auroc_ci: Interval
    auprc: float
    auprc_ci: Interval
    brier: float
    calibration_slope: float
    calibration_intercept: float
    calibration: pd.DataFrame
    ece: float
    subgroups: pd.DataFrame
    n_bootstrap: int
    n_bootstrap_skipped: int
    seed: int

    def summary(self) -> dict[str, float]:
        """Flat scalar metrics (what MLflow logs and the CSV table holds)."""
        return {
            "n": float(self.n),
            "n_pos": float(self.n_pos),
            "prevalence": self.prevalence,
            "n_missing_label": float(self.n_missing_label),
            "auroc": self.auroc,
            "auroc_ci_lo": self.auroc_ci.low,
            "auroc_ci_hi": self.auroc_ci.high,
            "auprc": self.auprc,
            "auprc_ci_lo": self.auprc_ci.low,
            "auprc_ci_hi": self.auprc_ci.high,
            "brier": self.brier,
            "calibration_slope": self.calibration_slope,
            "calibration_intercept": self.calibration_intercept,
            "ece": self.ece,
            "n_bootstrap_skipped": float(self.n_bootstrap_skipped),
        }


# ----------------------------------------------------------------------------- input checks


def _as_labels(y_true: object, ids: np.ndarray | None) -> np.ndarray:
    """Labels as float (NaN = missing); anything but 0/1/missing is an error naming the participant."""
    series = pd.Series(np.asarray(y_true, dtype=object) if not isinstance(y_true, pd.Series) else y_true)
    numeric = pd.to_numeric(series, errors="coerce")
    bad = numeric.notna() & ~numeric.isin([0, 1])
    unparsable = numeric.isna() & series.notna()
    bad_mask = (bad | unparsable).to_numpy()
    if bad_mask.any():
        i = int(np.flatnonzero(bad_mask)[0])
        raise SpirolmInputError(
            f"label {series.iloc[i]!r} at row {i} is not 0/1 ({int(bad_mask.sum())} such rows)",
            eid=None if ids is None else ids[i],
            field="y_true",
        )
    return numeric.to_numpy(dtype=float, na_value=np.nan)


def _as_scores(y_score: object, ids: np.ndarray | None) -> np.ndarray:
    """Scores as float; NaN/inf are an error because a model that cannot score someone must say so."""
    try:
        scores = np.asarray(pd.to_numeric(pd.Series(np.asarray(y_score).ravel()), errors="raise"), dtype=float)
    except (ValueError, TypeError) as exc:
        raise SpirolmInputError(f"predicted risks are not numeric ({exc})", field="y_score") from exc
    nonfinite = ~np.isfinite(scores)
    if nonfinite.any():
        i = int(np.flatnonzero(nonfinite)[0])
        raise SpirolmInputError(
            f"non-finite predicted risk {scores[i]} at row {i} ({int(nonfinite.sum())} non-finite of "
            f"{scores.size}); fix the model or drop the participant explicitly",
            eid=None if ids is None else ids[i],
            field="y_score",
        )
    return scores


def _check_lengths(y_true: np.ndarray, y_score: np.ndarray, groups: pd.DataFrame | None) -> None:
    if len(y_true) != len(y_score):
        raise SpirolmInputError(
            f"mismatched lengths: {len(y_true)} labels but {len(y_score)} predicted risks", field="y_score"
        )
    if groups is not None and len(groups) != len(y_true):
        raise SpirolmInputError(
            f"mismatched lengths: {len(y_true)} labels but {len(groups)} subgroup rows", field="groups"
        )


# ----------------------------------------------------------------------------- vectorised bootstrap


def bootstrap_auroc_auprc(
    y: np.ndarray, score: np.ndarray, idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUROC and average precision of many resamples at once, without sorting each resample.

    Why not call sklearn 1000 times: that is ~1000x slower. A resample only re-weights the original
    participants, so each score is replaced once by its rank among the distinct scores; per resample,
    ``bincount`` then gives the cases and controls at every distinct threshold, from which the
    Mann-Whitney AUROC (ties count 1/2, as ``roc_auc_score``) and the step-wise average precision
    (ties form one threshold, as ``average_precision_score``) follow exactly. Ties matter because a
    bootstrap resample duplicates participants.

    Args:
        y: 0/1 labels, shape (n,).
        score: risks, shape (n,).
        idx: resample indices, shape (B, m).

    Returns:
        ``(auroc, auprc, valid)``, each shape (B,); invalid (single-class) rows hold NaN.
    """
    distinct, key = np.unique(score, return_inverse=True)
    k = distinct.size
    b = idx.shape[0]
    flat = (np.arange(b)[:, None] * k + key[idx]).ravel()
    pos = np.bincount(flat, weights=y[idx].ravel(), minlength=b * k).reshape(b, k)
    tot = np.bincount(flat, minlength=b * k).reshape(b, k)
    neg = tot - pos
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    valid = (n_pos > 0) & (n_neg > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        # ascending scores: controls strictly below each threshold + half the tied controls
        neg_below = np.cumsum(neg, axis=1) - neg
        auroc = (pos * (neg_below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)
        # descending thresholds for precision/recall
        tp = np.cumsum(pos[:, ::-1], axis=1)
        seen = np.cumsum(tot[:, ::-1], axis=1)
        precision = np.where(seen > 0, tp / np.maximum(seen, 1), 0.0)
        auprc = (pos[:, ::-1] * precision).sum(axis=1) / n_pos
    auroc[~valid] = np.nan
    auprc[~valid] = np.nan
    return auroc, auprc, valid


def resample_blocks(n: int, n_bootstrap: int, seed: int) -> Iterator[np.ndarray]:
    """The bootstrap resamples of ``n`` participants, as ``(b, n)`` index blocks.

    One home for the draw: the same ``(n, n_bootstrap, seed)`` gives the same resamples to every
    method's CI and to every paired difference, which is what makes them paired.
    """
    rng = np.random.default_rng(seed)
    for start in range(0, n_bootstrap, _BOOTSTRAP_BLOCK):
        yield rng.integers(0, n, size=(min(_BOOTSTRAP_BLOCK, n_bootstrap - start), n))


def trait_seed(seed: int, trait_index: int) -> int:
    """The bootstrap seed of one trait of a comparison (the same for every method)."""
    return int(np.random.SeedSequence([seed, trait_index]).generate_state(1)[0])


def _bootstrap_cis(
    y: np.ndarray, score: np.ndarray, n_bootstrap: int, seed: int
) -> tuple[Interval, Interval, int]:
    """Percentile 95% CIs for AUROC and AUPRC; returns the count of skipped single-class resamples."""
    if n_bootstrap <= 0:
        nan = Interval(float("nan"), float("nan"))
        return nan, nan, 0
    aurocs, auprcs = [], []
    skipped = 0
    for idx in resample_blocks(len(y), n_bootstrap, seed):
        auroc, auprc, valid = bootstrap_auroc_auprc(y, score, idx)
        skipped += int((~valid).sum())
        aurocs.append(auroc[valid])
        auprcs.append(auprc[valid])
    a, p = np.concatenate(aurocs), np.concatenate(auprcs)
    if a.size == 0:
        nan = Interval(float("nan"), float("nan"))
        return nan, nan, skipped
    if skipped:
        log.debug("bootstrap: skipped %d of %d single-class resamples", skipped, n_bootstrap)
    lo, hi = np.percentile(a, [2.5, 97.5])
    plo, phi = np.percentile(p, [2.5, 97.5])
    return Interval(float(lo), float(hi)), Interval(float(plo), float(phi)), skipped


# ----------------------------------------------------------------------------- calibration


def reliability_bins(
    y: np.ndarray, score: np.ndarray, n_bins: int = 10, strategy: str = "quantile"
) -> pd.DataFrame:
    """Reliability-diagram bins (sklearn ``calibration_curve``) with the count of each bin.

    Why quantile bins by default: disease risks are concentrated below 0.2, so uniform bins leave most
    bins empty and one bin holding nearly everyone.
    """
    prob_true, prob_pred = calibration_curve(y, score, n_bins=n_bins, strategy=strategy)
    # Same bin assignment as sklearn, to report the number of participants per bin.
    if strategy == "quantile":
        edges = np.percentile(score, np.linspace(0, 100, n_bins + 1))
    else:
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    bin_ids = np.searchsorted(edges[1:-1], score)
    counts = np.bincount(bin_ids, minlength=len(edges) - 1)
    nonempty = np.flatnonzero(counts)
    return pd.DataFrame(
        {
            "bin": nonempty.astype(int),
            "mean_predicted": prob_pred,
            "fraction_positive": prob_true,
            "count": counts[nonempty].astype(int),
        }
    )


def calibration_slope_intercept(y: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """Calibration slope and calibration-in-the-large intercept of risks ``score`` for labels ``y``.

    The slope is the coefficient of an (unpenalised) logistic regression of ``y`` on ``logit(score)``; the
    intercept is the ``a`` that solves the score equation of ``logit P(y) = a + logit(score)`` (slope
    fixed at 1), a one-dimensional root.
    """
    lp = clipped_logit(score)
    slope = float(LogisticRegression(C=1e6, max_iter=1000).fit(lp.reshape(-1, 1), y).coef_[0, 0])
    intercept = float(brentq(lambda a: float(np.sum(y - expit(a + lp))), -30.0, 30.0))
    return slope, intercept


def _ece(calibration: pd.DataFrame) -> float:
    weights = calibration["count"] / calibration["count"].sum()
    return float((weights * (calibration["fraction_positive"] - calibration["mean_predicted"]).abs()).sum())


# ----------------------------------------------------------------------------- subgroups


def age_band(age: pd.Series | np.ndarray) -> pd.Series:
    """Ten-year age bands ``40-49, 50-59, 60-69`` (plus ``<40`` / ``>=70`` when present)."""
    bands = pd.cut(pd.Series(age, dtype=float), bins=list(AGE_BAND_EDGES), labels=list(AGE_BAND_LABELS), right=False)
    return bands.astype(object).where(bands.notna(), "missing")


def default_subgroups(participants: pd.DataFrame) -> pd.DataFrame:
    """The standard subgroup columns - ``sex``, ``age_band``, ``smoking_status`` - of a participants table.

    Missing values become the level ``"missing"`` so those participants stay visible in the table.
    Columns absent from the table are left out.
    """
    out = pd.DataFrame(index=participants.index)
    if "sex" in participants:
        out["sex"] = participants["sex"].astype(object).where(participants["sex"].notna(), "missing")
    if "age" in participants:
        out["age_band"] = age_band(participants["age"]).to_numpy()
    if "smoking_status" in participants:
        s = participants["smoking_status"]
        out["smoking_status"] = s.astype(object).where(s.notna(), "missing")
    return out


def _subgroup_metrics(
    y: np.ndarray, score: np.ndarray, groups: pd.DataFrame, n_bootstrap: int, seed: int
) -> pd.DataFrame:
    rows = []
    for variable in groups.columns:
        values = groups[variable].astype(object).where(groups[variable].notna(), "missing").to_numpy()
        for level in sorted(pd.unique(values), key=str):
            mask = values == level
            ys, ss = y[mask], score[mask]
            n, n_pos = int(mask.sum()), int(ys.sum())
            row = {"variable": str(variable), "level": str(level), "n": n, "n_pos": n_pos,
                   "prevalence": n_pos / n if n else float("nan")}
            if 0 < n_pos < n:
                auroc_ci, auprc_ci, _ = _bootstrap_cis(ys, ss, n_bootstrap, seed)
                row |= {
                    "auroc": float(roc_auc_score(ys, ss)), "auroc_lo": auroc_ci.low, "auroc_hi": auroc_ci.high,
                    "auprc": float(average_precision_score(ys, ss)), "auprc_lo": auprc_ci.low,
                    "auprc_hi": auprc_ci.high, "brier": float(brier_score_loss(ys, ss)), "note": "",
                }
            else:
                row |= {k: float("nan") for k in
                        ("auroc", "auroc_lo", "auroc_hi", "auprc", "auprc_lo", "auprc_hi")}
                row |= {"brier": float(brier_score_loss(ys, ss, labels=[0, 1])) if n else float("nan"),
                        "note": "single class in subgroup: AUROC/AUPRC undefined"}
            rows.append(row)
    columns = ["variable", "level", "n", "n_pos", "prevalence", "auroc", "auroc_lo", "auroc_hi",
               "auprc", "auprc_lo", "auprc_hi", "brier", "note"]
    return pd.DataFrame(rows, columns=columns)


# ----------------------------------------------------------------------------- public API


def evaluate_scores(
    y_true: Sequence[float] | np.ndarray | pd.Series,
    y_score: Sequence[float] | np.ndarray | pd.Series,
    *,
    groups: pd.DataFrame | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    n_bins: int = 10,
    calibration_strategy: str = "quantile",
    ids: Sequence[object] | np.ndarray | None = None,
    trait: str | None = None,
) -> TraitMetrics:
    """Score one model's risks for one trait.

    Args:
        y_true: 0/1 labels; missing labels (NaN/None/pd.NA) are dropped and counted.
        y_score: predicted risks in [0, 1] (Brier and calibration assume probabilities), same length.
        groups: optional subgroup columns aligned row-by-row with ``y_true`` (e.g.
            :func:`default_subgroups`); each column's levels get their own metrics.
        n_bootstrap: percentile-bootstrap resamples for the 95% CIs (0 disables CIs).
        seed: bootstrap seed; the same seed and inputs give identical numbers.
        n_bins: reliability-diagram bins.
        calibration_strategy: ``"quantile"`` or ``"uniform"`` bins (see :func:`reliability_bins`).
        ids: optional participant ids aligned with the rows, used only to name the participant in
            error messages.
        trait: optional trait name, used only in error messages.

    Returns:
        :class:`TraitMetrics`.

    Raises:
        SpirolmInputError: mismatched lengths, non-finite risks, labels other than 0/1, or a single
            class among the labelled participants.
    """
    id_arr = None if ids is None else np.asarray(ids, dtype=object)
    y = _as_labels(y_true, id_arr)
    score = _as_scores(y_score, id_arr)
    _check_lengths(y, score, groups)
    if id_arr is not None and len(id_arr) != len(y):
        raise SpirolmInputError(f"mismatched lengths: {len(y)} labels but {len(id_arr)} ids", field="ids")
    labelled = ~np.isnan(y)
    n_missing = int((~labelled).sum())
    if n_missing:
        log.info("%s: %d participants with a missing label excluded from metrics", trait or "trait", n_missing)
    y, score = y[labelled], score[labelled]
    n, n_pos = int(y.size), int(y.sum())
    if n_pos == 0 or n_pos == n:
        raise SpirolmInputError(
            f"only one class among {n} labelled participants ({n_pos} cases); AUROC is undefined",
            field=trait or "y_true",
        )
    if (score < 0).any() or (score > 1).any():
        raise SpirolmInputError(
            f"predicted risks must lie in [0, 1] (range {score.min():.3g}..{score.max():.3g})", field="y_score"
        )
    auroc_ci, auprc_ci, skipped = _bootstrap_cis(y, score, n_bootstrap, seed)
    calibration = reliability_bins(y, score, n_bins=n_bins, strategy=calibration_strategy)
    slope, intercept = calibration_slope_intercept(y, score)
    subgroups = (
        _subgroup_metrics(y, score, groups.loc[labelled] if isinstance(groups, pd.DataFrame) else groups,
                          n_bootstrap, seed)
        if groups is not None
        else _subgroup_metrics(y, score, pd.DataFrame(index=range(n)), 0, seed)
    )
    return TraitMetrics(
        n=n,
        n_pos=n_pos,
        prevalence=n_pos / n,
        n_missing_label=n_missing,
        auroc=float(roc_auc_score(y, score)),
        auroc_ci=auroc_ci,
        auprc=float(average_precision_score(y, score)),
        auprc_ci=auprc_ci,
        brier=float(brier_score_loss(y, score)),
        calibration_slope=slope,
        calibration_intercept=intercept,
        calibration=calibration,
        ece=_ece(calibration),
        subgroups=subgroups,
        n_bootstrap=n_bootstrap,
        n_bootstrap_skipped=skipped,
        seed=seed,
    )


@dataclass
class ComparisonResult:
    """Every method scored on every trait of one test split (the HeLM comparison table).

    Attributes:
        metrics: ``{(method, trait): TraitMetrics}``.
        methods: row order of the table (oracle first when present).
        traits: column order of the table.
        curves: ``{trait: (labels, {method: risks})}`` on the labelled participants, for the plots
            and the paired differences (no participant ids).
        n_bootstrap, seed: the bootstrap behind every CI (:func:`trait_seed` per trait).
    """

    metrics: dict[tuple[str, str], TraitMetrics]
    methods: list[str]
    traits: list[str]
    curves: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = field(repr=False)
    n_bootstrap: int = 1000
    seed: int = 0

    def oracle_auroc(self, trait: str) -> float:
        """The oracle's AUROC for ``trait`` (NaN when the cohort has no ``true_risk_<trait>``)."""
        m = self.metrics.get((ORACLE, trait))
        return m.auroc if m is not None else float("nan")

    def to_frame(self) -> pd.DataFrame:
        """Long table: one row per (method, trait) with all scalar metrics and ``auroc_vs_oracle``."""
        rows = []
        for method in self.methods:
            for trait in self.traits:
                m = self.metrics.get((method, trait))
                if m is None:
                    continue
                rows.append({"method": method, "trait": trait, **m.summary(),
                             "auroc_vs_oracle": m.auroc / self.oracle_auroc(trait)})
        return pd.DataFrame(rows)

    def subgroup_frame(self) -> pd.DataFrame:
        """Long subgroup table: ``method, trait`` + :attr:`TraitMetrics.subgroups` columns."""
        parts = [m.subgroups.assign(method=method, trait=trait) for (method, trait), m in self.metrics.items()]
        if not parts:
            return pd.DataFrame()
        df = pd.concat(parts, ignore_index=True)
        return df[["method", "trait", *[c for c in df.columns if c not in ("method", "trait")]]]

    def cell(self, method: str, trait: str, digits: int = 3) -> str:
        """One table cell: ``AUROC [lo, hi] / AUPRC [lo, hi]`` (+ fraction of oracle AUROC)."""
        m = self.metrics.get((method, trait))
        if m is None:
            return "-"
        f = f"{{:.{digits}f}}"
        text = (f"{f.format(m.auroc)} [{f.format(m.auroc_ci.low)}, {f.format(m.auroc_ci.high)}] / "
                f"{f.format(m.auprc)} [{f.format(m.auprc_ci.low)}, {f.format(m.auprc_ci.high)}]")
        oracle = self.oracle_auroc(trait)
        if method != ORACLE and np.isfinite(oracle):
            text += f" ({m.auroc / oracle:.0%} of oracle)"
        return text

    def to_markdown(self, digits: int = 3) -> str:
        """HeLM-layout table: rows = methods, columns = traits, cells = AUROC [CI] / AUPRC [CI]."""
        header = ["method", *[f"{t} (n={self._n(t)}, prev={self._prev(t)})" for t in self.traits]]
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
        for method in self.methods:
            cells = [self.cell(method, t, digits) for t in self.traits]
            lines.append("| " + " | ".join([method, *cells]) + " |")
        return "\n".join(lines) + "\n"

    def calibration_markdown(self, digits: int = 3) -> str:
        """Rows = methods, cells = ``Brier / slope / intercept / ECE`` (ideal: low / 1 / 0 / 0)."""
        header = ["method", *[f"{t}: Brier / slope / intercept / ECE" for t in self.traits]]
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
        f = f"{{:.{digits}f}}"
        for method in self.methods:
            cells = []
            for t in self.traits:
                m = self.metrics.get((method, t))
                cells.append("-" if m is None else " / ".join(f.format(v) for v in (
                    m.brier, m.calibration_slope, m.calibration_intercept, m.ece)))
            lines.append("| " + " | ".join([method, *cells]) + " |")
        return "\n".join(lines) + "\n"

    def to_csv(self, path: str | Path) -> Path:
        """Write :meth:`to_frame` as CSV and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.to_frame().to_csv(path, index=False)
        return path

    def save_tables(self, out_dir: str | Path, stem: str = "results") -> list[Path]:
        """Write ``<stem>.md``, ``<stem>.csv`` and ``<stem>_subgroups.csv`` into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        md = out / f"{stem}.md"
        md.write_text(self.to_markdown())
        sub = out / f"{stem}_subgroups.csv"
        self.subgroup_frame().to_csv(sub, index=False)
        return [md, self.to_csv(out / f"{stem}.csv"), sub]

    def _n(self, trait: str) -> int:
        return next((m.n for (_, t), m in self.metrics.items() if t == trait), 0)

    def _prev(self, trait: str) -> str:
        m = next((m for (_, t), m in self.metrics.items() if t == trait), None)
        return "-" if m is None else f"{m.prevalence:.3f}"


def _aligned_scores(
    scores: pd.DataFrame, method: str, trait: str, eids: pd.Series
) -> np.ndarray:
    """A method's risks for ``trait`` in the order of ``eids``; every test participant must be scored."""
    if "eid" not in scores.columns:
        raise SpirolmInputError(f"scores of method {method!r} have no 'eid' column", field="eid")
    dup = scores["eid"].duplicated()
    if dup.any():
        raise SpirolmInputError(f"method {method!r} scores a participant twice", eid=scores["eid"][dup].iloc[0],
                                field=trait)
    indexed = scores.set_index("eid")[risk_column(trait)]
    missing = ~eids.isin(indexed.index)
    if missing.any():
        raise SpirolmInputError(
            f"method {method!r} has no risk for {int(missing.sum())} of {len(eids)} participants",
            eid=eids[missing].iloc[0], field=trait,
        )
    extra = ~indexed.index.isin(eids)
    if extra.any():
        raise SpirolmInputError(
            f"method {method!r} scores {int(extra.sum())} participants that are not in the evaluated set; "
            "pass scores for exactly the evaluated participants", eid=indexed.index[extra][0], field=trait,
        )
    return indexed.reindex(eids.to_numpy()).to_numpy()


def compare_methods(
    participants: pd.DataFrame,
    scores: Mapping[str, pd.DataFrame],
    traits: Sequence[str],
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    n_bins: int = 10,
    subgroups: bool = True,
    include_oracle: bool = True,
) -> ComparisonResult:
    """Score every method on every trait of one set of participants (normally the test split).

    Each trait uses the same bootstrap seed for every method, so the resamples are paired and the
    CIs are comparable across rows.

    Args:
        participants: cohort rows to evaluate on: ``eid``, the trait columns, optional
            ``true_risk_<trait>`` and the subgroup columns (``sex``, ``age``, ``smoking_status``).
        scores: ``{method name: DataFrame[eid, risk_<trait>...]}`` (:mod:`experiments.data.predictions`);
            a method may omit traits (cell "-"), but for a trait it reports, it must score exactly the
            participants given.
        traits: traits (columns of ``participants``) to evaluate.
        n_bootstrap, seed, n_bins: see :func:`evaluate_scores`.
        subgroups: also compute subgroup metrics by sex, age band and smoking status.
        include_oracle: add the oracle row when ``true_risk_<trait>`` exists (default, always on in
            the pipelines).

    Returns:
        :class:`ComparisonResult`.

    Raises:
        SpirolmInputError: a trait or eid column is missing, a method misses or duplicates a
            participant, a method is named ``"oracle"``, or any :func:`evaluate_scores` error.
    """
    for col in ("eid", *traits):
        if col not in participants.columns:
            raise SpirolmInputError("column missing from the participants table", field=col)
    if ORACLE in scores:
        raise SpirolmInputError(f"method name {ORACLE!r} is reserved for the true-risk row", field="scores")
    eids = participants["eid"].reset_index(drop=True)
    groups = default_subgroups(participants).reset_index(drop=True) if subgroups else None
    all_scores: dict[str, pd.DataFrame] = {}
    if include_oracle:
        oracle_cols = {t: f"{TRUE_RISK_PREFIX}{t}" for t in traits if f"{TRUE_RISK_PREFIX}{t}" in participants}
        if oracle_cols:
            all_scores[ORACLE] = scores_frame(eids, {t: participants[c].to_numpy() for t, c in oracle_cols.items()})
    all_scores.update(scores)

    metrics: dict[tuple[str, str], TraitMetrics] = {}
    curves: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    for t_index, trait in enumerate(traits):
        y_raw = participants[trait].reset_index(drop=True)
        labelled = y_raw.notna().to_numpy()
        per_method: dict[str, np.ndarray] = {}
        t_seed = trait_seed(seed, t_index)
        for method, df in all_scores.items():
            if risk_column(trait) not in df.columns:
                continue
            risk = _aligned_scores(df, method, trait, eids)
            metrics[(method, trait)] = evaluate_scores(
                y_raw, risk, groups=groups, n_bootstrap=n_bootstrap, seed=t_seed, n_bins=n_bins,
                ids=eids.to_numpy(), trait=trait,
            )
            per_method[method] = risk[labelled]
        curves[trait] = (pd.to_numeric(y_raw[labelled]).to_numpy(dtype=float), per_method)
    methods = list(all_scores)
    return ComparisonResult(metrics=metrics, methods=methods, traits=list(traits), curves=curves,
                            n_bootstrap=n_bootstrap, seed=seed)
