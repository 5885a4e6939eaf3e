"""Explanations of a trained HeLM graft: modality ablation, tabular SHAP, curve integrated gradients.

:func:`explain_helm_run` is the one entry point (the main job and ``spirolm explain helm`` call it).
The methods themselves are in :mod:`experiments.explain.helm_methods`, the figures in
:mod:`experiments.explain.helm_plots`. Order of work and why:

1. **Ablation on every requested participant** (capped by :attr:`HeLMExplainSettings.max_ablation`):
   it is cheap per participant (the no-spirogram prompt reuses the full prompt's prefix KV cache; the
   no-record prompt has a short constant prefix) and gives each participant's full risk, which
2. **chooses the examples** deterministically: per trait the highest-risk labelled case and the control
   with the median control risk (a typical control; the lower median for an even count); without labels the
   highest- and the median-risk participant. Order: every trait's case, then every trait's control.
3. **Tabular SHAP** on the first ``shap_examples`` distinct example participants (expensive: one full
   LLM forward per perturbed record) and
4. **integrated gradients** on the first ``ig_examples`` examples (spirogram variants only).

Outputs in ``out_dir`` (every figure and CSV is listed in ``index.json`` as
``{"title", "file", "caption", "kind": "image"|"table"}`` for the HTML report):

* ``ablation.parquet`` (eid, trait, label, risk_full, risk_no_spiro, risk_no_text, risk_shuffled_text,
  risk_other_spiro: the record or the spirogram tokens of another participant), ``ablation_summary.csv``
  (per trait: n, means, medians, mean changes, AUROC of each prompt when both classes are labelled),
  ``ablation.png``;
* ``shap_values.csv`` (eid, trait, field, label, value text, shap, base value, risk), ``shap_bar_<trait>.png``,
  ``shap_waterfall_<k>.png`` per example;
* ``curve_attributions.npz`` (curves, reference, attributions, ids, traits), ``ig_summary.csv``,
  ``ig_curve_<k>.png`` per example;
* ``costs.csv``: seconds per method and per explained participant, and what was skipped and why.

Reference curve of integrated gradients (``ig_baseline``): ``mean`` (default) is the mean best-blow
curve of a seeded sample of train-split participants - a typical spirogram, so attributions say where
*this* curve differs from a typical one in a way that moves the risk. ``zeros`` (no airflow at all) is
available, but then every point of the curve is "different from the reference" and the attributions
mostly follow the curve's height.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from biobank.cohort_io import usable
from experiments.common.config_io import STRICT
from experiments.data.curves import best_curves
from experiments.data.participants import labels_as_float, read_participants, subsample
from experiments.encoder.embed import encode_curves
from experiments.encoder.export import load_encoder
from experiments.explain.helm_methods import (
    FULL,
    NO_RECORD,
    NO_SPIRO,
    CurveAttribution,
    ShapExplanation,
    encode_prefix_or_none,
    integrated_gradients_curve,
    prefix_ids,
    score_risks,
    shap_record,
    warm_up_shap,
)
from experiments.explain.helm_plots import plot_ablation, plot_curve_attribution, plot_shap_bar, plot_shap_waterfall
from llm_bridge.llm import LoadedLLM, ensure_llm
from llm_bridge.model import HeLM
from signals.curves import position_row
from signals.encoder import SpiroEncoder
from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)

ABLATION_FILE = "ablation.parquet"
ABLATION_SUMMARY_FILE = "ablation_summary.csv"
SHAP_FILE = "shap_values.csv"
IG_FILE = "curve_attributions.npz"
IG_SUMMARY_FILE = "ig_summary.csv"
COSTS_FILE = "costs.csv"
MANIFEST_FILE = "index.json"
RISK_COLUMNS = ("risk_full", "risk_no_spiro", "risk_no_text", "risk_shuffled_text", "risk_other_spiro")


@dataclass(frozen=True)
class HeLMExplainSettings:
    """How much to explain. Defaults fit about 90 s on 2 CPU cores with SmolLM2-135M (see docs).

    Attributes:
        max_ablation: participants in the ablation (seeded subsample of ``eids`` when more; None = all).
        shap_examples: distinct example participants explained with SHAP (0 = skip).
        shap_background: background records (seeded sample of QC-passing train participants).
        shap_permutations: antithetic permutations per participant; each costs
            ``(2 * fields + 1) * shap_background`` record evaluations (fewer after de-duplication).
        ig_examples: examples explained with integrated gradients (0 = skip).
        ig_steps: interpolation steps (Gauss-Legendre); the completeness error shrinks with more.
        ig_baseline: reference curve, ``mean`` (mean train-split curve) or ``zeros`` (no airflow).
        ig_baseline_sample: participants averaged into the ``mean`` reference curve.
        batch_size: prompts per LLM forward (ablation and SHAP) and interpolation steps per IG batch.
        num_threads: torch CPU threads (None: the cores this process may use).
        dpi: figure resolution.
    """

    __pydantic_config__ = STRICT
    max_ablation: int | None = 64
    shap_examples: int = 2
    shap_background: int = 2
    shap_permutations: int = 1
    ig_examples: int = 4
    ig_steps: int = 32
    ig_baseline: Literal["mean", "zeros"] = "mean"
    ig_baseline_sample: int = 256
    batch_size: int = 16
    num_threads: int | None = None
    dpi: int = 110

    def __post_init__(self) -> None:
        for name in ("shap_examples", "ig_examples"):
            if getattr(self, name) < 0:
                raise SpirolmInputError(f"{name} must be >= 0", field=name)
        for name in ("shap_background", "shap_permutations", "ig_steps", "ig_baseline_sample", "batch_size"):
            if getattr(self, name) < 1:
                raise SpirolmInputError(f"{name} must be >= 1", field=name)
        if self.max_ablation is not None and self.max_ablation < 1:
            raise SpirolmInputError("max_ablation must be >= 1 (or None for all)", field="max_ablation")
        if self.ig_baseline not in ("mean", "zeros"):
            raise SpirolmInputError(f"ig_baseline must be 'mean' or 'zeros', got {self.ig_baseline!r}",
                                    field="ig_baseline")


@dataclass(frozen=True)
class Example:
    """One explained case: which trait, who, and why they were picked (``role``)."""

    trait: str
    eid: int
    role: str
    risk: float
    label: float

    @property
    def title(self) -> str:
        """Plot title without the participant id."""
        return f"{self.trait}: {self.role} (risk {self.risk:.3f})"


@dataclass
class HeLMExplainResult:
    """What :func:`explain_helm_run` produced.

    Attributes:
        out_dir: where the files are.
        variant: the checkpoint's HeLM variant; ``traits`` its traits.
        ablation: long table, one row per participant and trait.
        ablation_summary: one row per trait.
        examples: the chosen examples, in order.
        shap: long SHAP table (empty when skipped).
        ig: one row per integrated-gradients example (empty when skipped).
        seconds: wall time per method; ``seconds_per_participant``: the same divided by participants.
        skipped: method -> reason, for what did not apply or was switched off.
        manifest: the ``index.json`` entries.
    """

    out_dir: Path
    variant: str
    traits: tuple[str, ...]
    ablation: pd.DataFrame
    ablation_summary: pd.DataFrame
    examples: list[Example]
    shap: pd.DataFrame
    ig: pd.DataFrame
    seconds: dict[str, float] = field(default_factory=dict)
    seconds_per_participant: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    manifest: list[dict[str, str]] = field(default_factory=list)


# ----------------------------------------------------------------------------- inputs


def ig_reference(ref_curves: np.ndarray, channels: Sequence[str], kind: str, shape: tuple[int, ...]) -> np.ndarray:
    """Reference curve ``(C, T)`` of integrated gradients: the mean of ``ref_curves`` or zeros (``kind``).

    The ``position`` channel is the grid coordinate, not airflow, so every reference keeps it as it is:
    it then gets no attribution, whatever the reference.
    """
    reference = (ref_curves.mean(axis=0) if kind == "mean" else np.zeros(shape, np.float32)).astype(np.float32)
    for k, name in enumerate(channels):
        if name == "position":
            reference[k] = position_row(reference.shape[1])
    return reference


def _participants(cohort_dir: Path, eids: Sequence[int], traits: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(requested rows in request order with float labels, the whole participant table)."""
    table, _ = read_participants(cohort_dir, traits=())
    for t in traits:
        table[t] = labels_as_float(table[t]) if t in table.columns else np.nan
    if len(eids) == 0:
        raise SpirolmInputError("no participants to explain (empty eid list)", field="eids")
    wanted = pd.Index(pd.unique(np.asarray(eids, dtype=np.int64)))
    if len(wanted) < len(eids):
        log.info("explain: %d duplicate participant id(s) ignored", len(eids) - len(wanted))
    pos = pd.Index(table["eid"].astype("int64")).get_indexer(wanted)
    if (pos < 0).any():
        missing = wanted[pos < 0]
        raise SpirolmInputError(f"participant not in the cohort ({len(missing)} requested id(s) unknown)",
                                file=cohort_dir, eid=int(missing[0]), field="eid")
    return table.iloc[pos].reset_index(drop=True), table


def _background_pool(table: pd.DataFrame) -> pd.DataFrame:
    """Usable train-split participants (the population the graft was fitted on); else all usable ones."""
    ok = usable(table)
    train = table[ok & (table["split"] == "train")]
    return (train if len(train) else table[ok]).reset_index(drop=True)


# ----------------------------------------------------------------------------- ablation


def derangement(n: int, seed: int) -> np.ndarray:
    """A seeded permutation of ``range(n)`` with no fixed point (each participant gets someone else's part)."""
    if n < 2:
        return np.arange(n)
    order = np.random.default_rng(seed).permutation(n)
    out = np.empty(n, dtype=np.int64)
    out[order] = np.roll(order, 1)  # one cycle through a random order: never i -> i
    return out


def modality_ablation(helm: HeLM, rows: pd.DataFrame, embeddings: np.ndarray | None, *, batch_size: int = 16,
                      seed: int = 0) -> tuple[pd.DataFrame, dict[str, float]]:
    """Risks of the full prompt, with each modality removed, and with each taken from another participant.

    Why both kinds: removing a modality changes the prompt's form as well as its content; giving the
    participant someone else's record (or spirogram tokens) keeps the form and breaks only the link,
    so a model that reads the modality loses AUROC and one that ignores it does not.

    Args:
        seed: the derangement that says whose record and spirogram each participant is given.

    Returns:
        (long table ``eid, trait, label`` + :data:`RISK_COLUMNS`; seconds spent on each prompt).
        ``risk_no_spiro`` and ``risk_other_spiro`` are NaN for the text-only variant.
    """
    traits = helm.cfg.traits
    n = len(rows)
    other = derangement(n, seed)
    out = {c: np.full((n, len(traits)), np.nan) for c in RISK_COLUMNS}
    secs = dict.fromkeys(("full", "no_spiro", "no_text", "shuffled_text", "other_spiro"), 0.0)
    with torch.no_grad():
        for s in tqdm(range(0, n, batch_size), desc="ablation", unit="batch", disable=None):
            part = rows.iloc[s:s + batch_size]
            sl = slice(s, s + len(part))
            emb = None if embeddings is None else torch.from_numpy(embeddings[sl])
            tab_np = helm.tab_features(part)
            tab = None if tab_np is None else torch.from_numpy(tab_np)
            t0 = time.perf_counter()
            prefixes = prefix_ids(helm, part, FULL)
            state = encode_prefix_or_none(helm, prefixes)
            out["risk_full"][sl] = score_risks(helm, prefixes, emb, tab, FULL, state=state).cpu().numpy()
            t1 = time.perf_counter()
            if emb is not None:
                swapped = torch.from_numpy(embeddings[other[sl]])
                out["risk_other_spiro"][sl] = score_risks(helm, prefixes, swapped, tab, FULL, state=state).cpu().numpy()
            t1b = time.perf_counter()
            donors = rows.iloc[other[sl]]
            donor_tab = helm.tab_features(donors)
            out["risk_shuffled_text"][sl] = score_risks(
                helm, prefix_ids(helm, donors, FULL), emb, None if donor_tab is None else torch.from_numpy(donor_tab),
                FULL).cpu().numpy()
            t1c = time.perf_counter()
            secs["other_spiro"] += t1b - t1
            secs["shuffled_text"] += t1c - t1b
            t1 = t1c
            if helm.cfg.uses_spiro:
                no_spiro = prefix_ids(helm, part, NO_SPIRO)
                state_ns = None if state is None else helm.without_spirogram(state)
                out["risk_no_spiro"][sl] = score_risks(helm, no_spiro, emb, tab, NO_SPIRO, state=state_ns).cpu().numpy()
            t2 = time.perf_counter()
            short = prefix_ids(helm, part, NO_RECORD)
            out["risk_no_text"][sl] = score_risks(helm, short, emb, tab, NO_RECORD).cpu().numpy()
            t3 = time.perf_counter()
            secs["full"] += t1 - t0
            secs["no_spiro"] += t2 - t1
            secs["no_text"] += t3 - t2
    frames = []
    for j, t in enumerate(traits):
        frames.append(pd.DataFrame({"eid": rows["eid"].to_numpy(np.int64), "trait": t,
                                    "label": rows[t].to_numpy(np.float64) if t in rows else np.nan,
                                    **{c: out[c][:, j] for c in RISK_COLUMNS}}))
    return pd.concat(frames, ignore_index=True), secs


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    keep = np.isfinite(y) & np.isfinite(s)
    y, s = y[keep], s[keep]
    return float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else float("nan")


def summarize_ablation(ablation: pd.DataFrame) -> pd.DataFrame:
    """Per trait: n, labelled cases, mean/median risk per prompt, mean change, AUROC per prompt."""
    rows = []
    for trait, d in ablation.groupby("trait", sort=False):
        y = d["label"].to_numpy(float)
        row: dict[str, object] = {"trait": trait, "n": len(d), "n_cases": int(np.nansum(y == 1)),
                                  "n_controls": int(np.nansum(y == 0))}
        for c in RISK_COLUMNS:
            row[f"mean_{c}"] = float(d[c].mean())
            row[f"median_{c}"] = float(d[c].median())
        for c in RISK_COLUMNS[1:]:
            row[f"mean_change_{c}"] = float((d[c] - d["risk_full"]).mean())
            row[f"mean_abs_change_{c}"] = float((d[c] - d["risk_full"]).abs().mean())
        for c in RISK_COLUMNS:
            row[f"auroc_{c}"] = _auroc(y, d[c].to_numpy(float))
        rows.append(row)
    return pd.DataFrame(rows)


def choose_examples(ablation: pd.DataFrame) -> list[Example]:
    """Per trait the highest-risk case and a typical (median-risk) control; cases of all traits first."""
    cases, controls = [], []
    for trait, d in ablation.groupby("trait", sort=False):
        d = d.sort_values("eid", kind="stable")  # deterministic ties
        labelled = d["label"].notna().any()
        pos = d[d["label"] == 1] if labelled else d
        neg = d[d["label"] == 0] if labelled else d
        if len(pos):
            r = pos.loc[pos["risk_full"].idxmax()]
            cases.append(Example(str(trait), int(r["eid"]), "highest-risk case" if labelled else "highest risk",
                                 float(r["risk_full"]), float(r["label"])))
        if len(neg):
            r = neg.sort_values("risk_full", kind="stable").iloc[(len(neg) - 1) // 2]  # the (lower) median
            controls.append(Example(str(trait), int(r["eid"]), "typical control" if labelled else "median risk",
                                    float(r["risk_full"]), float(r["label"])))
    return cases + controls


# ----------------------------------------------------------------------------- entry point


def explain_helm_run(helm_checkpoint: Path, encoder_checkpoint: Path, cohort_dir: Path, eids: Sequence[int],
                     out_dir: Path, *, llm: LoadedLLM | None = None, llm_spec: str | None = None,
                     settings: HeLMExplainSettings = HeLMExplainSettings(), seed: int = 0) -> HeLMExplainResult:
    """Ablation, SHAP and integrated gradients of a trained HeLM on ``eids``; files in ``out_dir``.

    Args:
        helm_checkpoint: ``helm.pt`` of any variant (``text``, ``text+spiro``, ``tabmlp+spiro``).
        encoder_checkpoint: the spirogram encoder whose embeddings the graft was trained on (not read
            for the text-only variant).
        cohort_dir: cohort directory holding the participants.
        eids: participants to explain (all get the ablation, a few examples get SHAP and IG).
        out_dir: output directory (created).
        llm: an already loaded LLM; else ``llm_spec`` is loaded (None: the default SmolLM2).
        settings: budgets (:class:`HeLMExplainSettings`).
        seed: subsample and permutation seed.

    Returns:
        :class:`HeLMExplainResult`.

    Raises:
        SpirolmInputError: unknown participant, participant without a spirogram (spirogram variants),
            checkpoint trained against another LLM, encoder width different from the graft's.
    """
    cohort_dir, out_dir = Path(cohort_dir), Path(out_dir)
    loaded = ensure_llm(llm if llm is not None else llm_spec, settings.num_threads)
    helm = HeLM.load_checkpoint(helm_checkpoint, loaded).to(loaded.model.device)
    helm.eval().requires_grad_(False)
    traits = tuple(helm.cfg.traits)
    rows, table = _participants(cohort_dir, eids, traits)
    if settings.max_ablation is not None and len(rows) > settings.max_ablation:
        log.info("explain: ablation on a seeded subsample of %d of %d participants", settings.max_ablation, len(rows))
        rows = subsample(rows, settings.max_ablation, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    pool = _background_pool(table)
    skipped: dict[str, str] = {}
    seconds: dict[str, float] = {}

    encoder = embeddings = ref_curves = curves = None
    if helm.cfg.uses_spiro:
        t0 = time.perf_counter()
        encoder = load_encoder(encoder_checkpoint).to(loaded.model.device).requires_grad_(False)
        if encoder.cfg.embedding_dim != helm.cfg.embedding_dim:
            raise SpirolmInputError(f"encoder writes {encoder.cfg.embedding_dim}-d embeddings but the HeLM projector "
                                    f"reads {helm.cfg.embedding_dim}-d; use the encoder the graft was trained with",
                                    file=encoder_checkpoint, field="embedding_dim")
        ref_rows = subsample(pool, settings.ig_baseline_sample, seed + 1) if (
            settings.ig_examples and settings.ig_baseline == "mean") else pool.iloc[:0]
        want = np.concatenate([rows["eid"].to_numpy(np.int64), ref_rows["eid"].to_numpy(np.int64)])
        all_curves = best_curves(cohort_dir, want, encoder.cfg)
        curves, ref_curves = all_curves[:len(rows)], all_curves[len(rows):]
        embeddings = encode_curves(encoder, curves)
        seconds["curves_and_embeddings"] = time.perf_counter() - t0
    else:
        skipped["integrated_gradients"] = f"variant {helm.cfg.variant} has no spirogram input"
        skipped["ablation_no_spiro"] = f"variant {helm.cfg.variant} has no spirogram tokens to remove"

    t0 = time.perf_counter()
    ablation, abl_secs = modality_ablation(helm, rows, embeddings, batch_size=settings.batch_size, seed=seed)
    seconds["ablation"] = time.perf_counter() - t0
    seconds.update({f"ablation_{k}": v for k, v in abl_secs.items()})
    summary = summarize_ablation(ablation)
    examples = choose_examples(ablation)
    row_of = {int(e): i for i, e in enumerate(rows["eid"])}

    # --- SHAP
    shap_out: list[tuple[Example, ShapExplanation]] = []
    shap_eids: list[int] = []
    if settings.shap_examples:
        background = subsample(pool, settings.shap_background, seed + 2)
        t0 = time.perf_counter()
        warm_up_shap(len(traits))
        seconds["shap_setup"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for ex in examples:
            if ex.eid in shap_eids or len(shap_eids) >= settings.shap_examples:
                continue
            shap_eids.append(ex.eid)
        cache: dict[int, ShapExplanation] = {}
        for e in tqdm(shap_eids, desc="SHAP", unit="participant", disable=None):
            i = row_of[e]
            cache[e] = shap_record(helm, rows.iloc[[i]].reset_index(drop=True), background,
                                   None if embeddings is None else embeddings[i],
                                   permutations=settings.shap_permutations, batch_size=settings.batch_size, seed=seed)
        shap_out = [(ex, cache[ex.eid]) for ex in examples if ex.eid in cache]
        seconds["shap"] = time.perf_counter() - t0
    else:
        skipped["shap"] = "switched off (shap_examples = 0)"

    # --- integrated gradients
    ig_out: list[tuple[Example, CurveAttribution]] = []
    if helm.cfg.uses_spiro and settings.ig_examples:
        reference = ig_reference(ref_curves, encoder.cfg.channels, settings.ig_baseline, curves.shape[1:])
        t0 = time.perf_counter()
        for ex in tqdm(examples[:settings.ig_examples], desc="integrated gradients", unit="example", disable=None):
            i = row_of[ex.eid]
            ig_out.append((ex, integrated_gradients_curve(helm, encoder, rows.iloc[[i]].reset_index(drop=True),
                                                          curves[i], reference, ex.trait, n_steps=settings.ig_steps,
                                                          internal_batch_size=settings.batch_size)))
        seconds["integrated_gradients"] = time.perf_counter() - t0
    elif helm.cfg.uses_spiro:
        skipped["integrated_gradients"] = "switched off (ig_examples = 0)"

    per = {"ablation": len(rows), "shap": len(shap_eids), "integrated_gradients": len(ig_out)}
    per_participant = {k: seconds[k] / per[k] for k in per if k in seconds and per[k]}
    result = HeLMExplainResult(out_dir, helm.cfg.variant, traits, ablation, summary, examples,
                               _shap_table(shap_out, traits), _ig_table(ig_out), seconds, per_participant, skipped)
    result.manifest = _write_outputs(result, shap_out, ig_out, encoder, settings, per)
    log.info("explanations written to %s (%s)", out_dir,
             ", ".join(f"{k} {v:.1f} s/participant" for k, v in per_participant.items()))
    return result


# ----------------------------------------------------------------------------- tables and files


def _shap_table(shap_out: list[tuple[Example, ShapExplanation]], traits: Sequence[str]) -> pd.DataFrame:
    frames, seen = [], set()
    for ex, s in shap_out:
        if ex.eid in seen:
            continue
        seen.add(ex.eid)
        for j in range(s.values.shape[1]):
            frames.append(pd.DataFrame({"eid": ex.eid, "trait": traits[j], "field": s.fields, "label": s.labels,
                                        "value": s.text, "shap": s.values[:, j], "base_value": s.base_values[j],
                                        "risk": s.risk[j], "evaluations": s.evaluations, "forwards": s.forwards}))
    cols = ["eid", "trait", "field", "label", "value", "shap", "base_value", "risk", "evaluations", "forwards"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def _ig_table(ig_out: list[tuple[Example, CurveAttribution]]) -> pd.DataFrame:
    return pd.DataFrame([{"example": k, "trait": ex.trait, "role": ex.role, "eid": ex.eid, "label": ex.label,
                          "risk": a.risk, "risk_reference": a.risk_baseline,
                          "sum_attribution": float(a.attribution.sum()),
                          "completeness_error": a.delta}
                         for k, (ex, a) in enumerate(ig_out, start=1)],
                        columns=["example", "trait", "role", "eid", "label", "risk", "risk_reference",
                                 "sum_attribution", "completeness_error"])


def _write_outputs(result: HeLMExplainResult, shap_out: list[tuple[Example, ShapExplanation]],
                   ig_out: list[tuple[Example, CurveAttribution]], encoder: SpiroEncoder | None,
                   settings: HeLMExplainSettings, per: dict[str, int]) -> list[dict[str, str]]:
    out, dpi, traits = result.out_dir, settings.dpi, result.traits
    manifest: list[dict[str, str]] = []

    def add(title: str, file: str, caption: str, kind: str) -> None:
        manifest.append({"title": title, "file": file, "caption": caption, "kind": kind})

    # ablation
    result.ablation.to_parquet(out / ABLATION_FILE, index=False)
    result.ablation_summary.to_csv(out / ABLATION_SUMMARY_FILE, index=False, float_format="%.4f")
    plot_ablation(result.ablation, result.ablation_summary, out / "ablation.png", dpi=dpi)
    note = (" The spirogram cannot be removed from a text-only model (no_spiro is empty)."
            if "ablation_no_spiro" in result.skipped else "")
    record = "tabular soft tokens" if result.variant.startswith("tabmlp") else "record text lines"
    add("Modality ablation", "ablation.png",
        f"Risk of {len(result.ablation) // max(1, len(traits))} participants with the full prompt, without the "
        f"spirogram (intro and soft tokens left out) and without the record ({record} left out), cases and "
        f"controls apart; AUROC per prompt in the titles.{note}", "image")
    add("Modality ablation summary", ABLATION_SUMMARY_FILE,
        "Per trait: mean and median risk per prompt, mean (absolute) change against the full prompt, and the "
        f"AUROC of each prompt where both classes are labelled.{note}", "table")

    # SHAP
    if shap_out:
        result.shap.to_csv(out / SHAP_FILE, index=False, float_format="%.5f")
        first = shap_out[0][1]
        bg = settings.shap_background
        cost = f"{result.seconds_per_participant.get('shap', float('nan')):.1f} s per participant"
        uniq = {ex.eid: s for ex, s in shap_out}
        fixed = "; spirogram tokens held fixed" if "+spiro" in result.variant else ""
        for j, t in enumerate(traits):
            values = np.stack([s.values[:, j] for s in uniq.values()])
            file = f"shap_bar_{_slug(t)}.png"
            plot_shap_bar(first.labels, values, out / file, dpi=dpi,
                          title=f"{t}: mean |SHAP| over {len(uniq)} explained participant(s)")
            add(f"Record SHAP: {t}", file,
                f"Mean absolute SHAP value (percentage points of risk) of each record field for {t}, over "
                f"{len(uniq)} example "
                f"participant(s){fixed}, {bg} background record(s), "
                f"{settings.shap_permutations} permutation(s); {cost}.", "image")
        for k, (ex, s) in enumerate(shap_out, start=1):
            j = traits.index(ex.trait)
            file = f"shap_waterfall_{k}.png"
            plot_shap_waterfall(s.labels, s.text, s.values[:, j], s.base_values[j], out / file, dpi=dpi,
                                title=f"{ex.title}: record SHAP")
            add(f"Record SHAP waterfall {k}: {ex.trait}, {ex.role}", file,
                f"From the mean risk over the background records{' (same spirogram)' if fixed else ''} to this "
                f"participant's risk, "
                f"field by field; base {s.base_values[j]:.3f} + contributions = risk {s.risk[j]:.3f}.", "image")
        add("Record SHAP values", SHAP_FILE, "SHAP value of every record field of the explained participants, per "
            "trait (risk scale; base_value + sum over fields = risk).", "table")
    else:
        result.skipped.setdefault("shap", "no example participant")

    # integrated gradients
    if ig_out and encoder is not None:
        channels = tuple(encoder.cfg.channels)
        np.savez_compressed(
            out / IG_FILE, curves=np.stack([a.curve for _, a in ig_out]), reference=ig_out[0][1].baseline,
            attributions=np.stack([a.attribution for _, a in ig_out]), eids=np.array([ex.eid for ex, _ in ig_out]),
            traits=np.array([ex.trait for ex, _ in ig_out]), roles=np.array([ex.role for ex, _ in ig_out]),
            risk=np.array([a.risk for _, a in ig_out]), risk_reference=np.array([a.risk_baseline for _, a in ig_out]),
            completeness_error=np.array([a.delta for _, a in ig_out]), channels=np.array(channels),
            reference_kind=np.array(settings.ig_baseline))
        result.ig.to_csv(out / IG_SUMMARY_FILE, index=False, float_format="%.5f")
        ref = ("the mean train-split curve" if settings.ig_baseline == "mean" else "a zero (no airflow) curve")
        for k, (ex, a) in enumerate(ig_out, start=1):
            file = f"ig_curve_{k}.png"
            plot_curve_attribution(a.curve, a.baseline, a.attribution, channels, out / file, dpi=dpi,
                                   title=f"{ex.title}: integrated gradients (reference risk {a.risk_baseline:.3f})")
            add(f"Spirogram attribution {k}: {ex.trait}, {ex.role}", file,
                f"Input curves coloured by integrated-gradients attribution of the {ex.trait} risk "
                f"({settings.ig_steps} steps, reference: {ref}, dashed); red raises the risk, blue lowers it; attributions sum to "
                f"{a.attribution.sum():+.3f} vs risk change {a.risk - a.risk_baseline:+.3f}.", "image")
        add("Spirogram attribution summary", IG_SUMMARY_FILE,
            "Per example: risk, risk with the reference curve, sum of attributions and the completeness error "
            "(sum - risk change).", "table")

    # costs
    costs = []
    for method in ("ablation", "shap", "integrated_gradients"):
        costs.append({"method": method, "participants": per.get(method, 0),
                      "seconds": result.seconds.get(method, float("nan")),
                      "seconds_per_participant": result.seconds_per_participant.get(method, float("nan")),
                      "status": "skipped: " + result.skipped[method] if method in result.skipped else "done"})
    if "shap_setup" in result.seconds:
        costs.append({"method": "shap_setup", "participants": 0, "seconds": result.seconds["shap_setup"],
                      "seconds_per_participant": float("nan"),
                      "status": "once per process: shap's numba kernels compile on first use"})
    for method, why in result.skipped.items():
        if method not in ("ablation", "shap", "integrated_gradients"):
            costs.append({"method": method, "participants": 0, "seconds": float("nan"),
                          "seconds_per_participant": float("nan"), "status": "skipped: " + why})
    pd.DataFrame(costs).to_csv(out / COSTS_FILE, index=False, float_format="%.3g")
    skipped = "; ".join(f"{k}: {v}" for k, v in result.skipped.items())
    add("Explanation costs", COSTS_FILE, "Wall-clock seconds per method and per explained participant on this "
        "machine" + (f". Skipped - {skipped}." if skipped else "; nothing was skipped."), "table")
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "explain_settings.json").write_text(json.dumps(
        {"settings": asdict(settings), "variant": result.variant, "traits": list(traits),
         "seconds": result.seconds, "seconds_per_participant": result.seconds_per_participant,
         "skipped": result.skipped}, indent=2) + "\n")
    return manifest


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)
