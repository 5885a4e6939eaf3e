"""The computations behind HeLM explanations: modality ablation, tabular SHAP, curve integrated gradients.

Every risk here comes from the model's own forward pass (:meth:`llm_bridge.model.HeLM.score_prefix`,
with its modality flags). Three questions, three methods (the orchestration and files are in
:mod:`experiments.explain.helm_run`):

* **Modality ablation** - what does each modality contribute? The same trained graft scores each
  participant three times: the full prompt, the prompt with the spirogram part removed (the
  ``"\\nSpirogram:"`` intro and its soft tokens are left out of the tail) and the prompt with the tabular
  record removed (text variants: the record lines are left out, the header stays; ``tabmlp+spiro``: the
  tabular soft tokens are left out). Removal, not replacement by an "average" input, because it is the
  only choice that needs no reference participant and is what "the model without this modality" means
  to a reader; the LLM is frozen, so the remaining prompt is still well-formed text it can answer.
  The full and no-spirogram prompts share the participant's text prefix, so they share its KV cache
  and the spirogram ablation costs only one short tail per trait.
* **Tabular SHAP** - which record fields move the risk? A model-agnostic permutation explainer
  (``shap.PermutationExplainer``; Strumbelj & Kononenko 2014, Lundberg & Lee 2017) over the
  *serializer fields* (``Age``, ``Smoking`` (status + pack-years), ``FEV1`` (litres + z) ...): a
  perturbed record takes each field either from the participant or from a background participant and
  is re-serialized, re-tokenized and re-scored, with the participant's **own spirogram soft tokens
  held fixed**. Values are on the risk scale and add up exactly: ``base + sum(values) = risk``
  (permutation sampling keeps efficiency). Each evaluation is a full prefix forward of the LLM, so
  the cost is ``permutations * (2 * fields + 1) * background`` forwards per participant, less the
  ones a cache of already-scored texts avoids (fields whose text equals the background's do not vary).
* **Integrated gradients** (Sundararajan et al. 2017, ``captum.attr.IntegratedGradients``) from the
  risk of one trait back to the input curves through LLM -> projector -> encoder, against a reference
  curve. The participant's text prefix is encoded once and its KV cache is broadcast over the
  interpolation steps, so each step runs only the encoder and the short tail with gradients.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import shap
import torch
from captum.attr import IntegratedGradients

from llm_bridge.kv_cache import PrefixState
from llm_bridge.model import HeLM
from llm_bridge.readout import risk
from llm_bridge.serialize import FIELDS
from signals.encoder import SpiroEncoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Modalities:
    """Which modalities a prompt keeps.

    Attributes:
        spiro: the spirogram intro + soft tokens (spirogram variants only).
        record: the tabular record (record text lines, or the tabular soft tokens of ``tabmlp+spiro``).
    """

    spiro: bool = True
    record: bool = True


FULL = Modalities()
NO_SPIRO = Modalities(spiro=False)
NO_RECORD = Modalities(record=False)


# ----------------------------------------------------------------------------- prompts without a modality


def prefix_ids(helm: HeLM, rows: pd.DataFrame, mods: Modalities = FULL) -> list[list[int]]:
    """Text prefixes of the prompts with the modalities ``mods`` keeps (:meth:`HeLM.prefix_ids`)."""
    return helm.prefix_ids(rows, spiro=mods.spiro, record=mods.record)


def encode_prefix_or_none(helm: HeLM, prefixes: Sequence[Sequence[int]]) -> PrefixState | None:
    """The no-grad prefix KV cache, or None under LoRA (the prefix then depends on trained weights)."""
    return None if helm.uses_lora else helm.encode_prefix(prefixes)


def score_risks(helm: HeLM, prefixes: Sequence[Sequence[int]], embedding: torch.Tensor | None,
                tab: torch.Tensor | None, mods: Modalities = FULL, *, state: PrefixState | None = None,
                traits: Sequence[str] | None = None) -> torch.Tensor:
    """``(B, T)`` risks of the prompts ``prefix + tail(mods)``, through the model's own forward pass.

    Args:
        helm: the graft.
        prefixes: text-prefix ids per row (:func:`prefix_ids`).
        embedding: ``(B, E)`` spirogram embeddings (may require grad), or None.
        tab: ``(B, F)`` tabular features (``tabmlp+spiro``), or None.
        mods: the modalities kept in the tail.
        state: the prefixes' KV cache (reused between calls with the same prefixes); computed here
            when None, except under LoRA, where the whole sequence runs at once.
        traits: traits to score (default: the checkpoint's).
    """
    if helm.uses_lora:
        pairs = helm.score_full(prefixes, embedding, tab, traits=traits, spiro=mods.spiro, record=mods.record)
    else:
        state = state if state is not None else helm.encode_prefix(prefixes)
        pairs = helm.score_prefix(state, embedding, tab, traits=traits, spiro=mods.spiro, record=mods.record)
    return risk(pairs)


# ----------------------------------------------------------------------------- tabular SHAP


@dataclass
class ShapExplanation:
    """SHAP values of one participant's record fields (risk scale, spirogram fixed).

    Attributes:
        fields: serializer field names; ``labels`` their printed labels.
        text: ``(M,)`` the participant's value text per field (what the LLM read).
        values: ``(M, T)`` contributions to the risk of each trait.
        base_values: ``(T,)`` mean risk over the background records (participant's own spirogram).
        risk: ``(T,)`` the participant's risk (``base_values + values.sum(0)``).
        evaluations: perturbed records the explainer asked for; ``forwards``: the unique ones scored.
    """

    fields: tuple[str, ...]
    labels: tuple[str, ...]
    text: np.ndarray
    values: np.ndarray
    base_values: np.ndarray
    risk: np.ndarray
    evaluations: int
    forwards: int


def field_text(df: pd.DataFrame, field: str) -> pd.Series:
    """The value part of a field's serialized line (``57 years``, ``previous, 20 pack-years``)."""
    return FIELDS[field][1](df).astype(str)


def _field_codes(helm: HeLM, pool: pd.DataFrame, fields: Sequence[str]) -> np.ndarray:
    """``(n, M)`` codes: for each pool row and field, the first pool row with the same field value.

    Equal codes mean equal model input, so the explainer does not vary a field whose value equals the
    background's and the score cache recognises repeats. Text variants compare the printed text (what
    the LLM reads); ``tabmlp+spiro`` compares the raw source values (its features are not rounded).
    """
    codes = np.empty((len(pool), len(fields)), dtype=np.int64)
    for j, f in enumerate(fields):
        if helm.cfg.uses_tabmlp:
            cols = [c for c in FIELDS[f][2] if c in pool.columns]
            keys = [tuple(None if pd.isna(v) else v for v in r) for r in pool[cols].itertuples(index=False)]
        else:
            keys = field_text(pool, f).tolist()
        first: dict[object, int] = {}
        codes[:, j] = [first.setdefault(k, i) for i, k in enumerate(keys)]
    return codes


def hybrid_records(pool: pd.DataFrame, fields: Sequence[str], codes: np.ndarray) -> pd.DataFrame:
    """Records whose field ``j`` comes from pool row ``codes[:, j]`` (other columns: pool row 0)."""
    base = pool.iloc[np.zeros(len(codes), dtype=np.int64)].reset_index(drop=True)
    for j, f in enumerate(fields):
        for col in FIELDS[f][2]:
            if col in pool.columns:
                base[col] = pool[col].take(codes[:, j]).reset_index(drop=True)
    return base


class _CachedRecordScorer:
    """Risk of perturbed records with one fixed spirogram embedding; repeats come from a cache."""

    def __init__(self, helm: HeLM, pool: pd.DataFrame, fields: Sequence[str], embedding: np.ndarray | None,
                 batch_size: int) -> None:
        self.helm, self.pool, self.fields, self.batch_size = helm, pool, tuple(fields), batch_size
        self.embedding = None if embedding is None else torch.as_tensor(embedding, dtype=torch.float32)[None]
        self.cache: dict[tuple, np.ndarray] = {}
        self.requested = 0

    def __call__(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes, dtype=np.int64)
        self.requested += len(codes)
        records = hybrid_records(self.pool, self.fields, codes)
        prefixes = self.helm.prefix_ids(records)
        tab = self.helm.tab_features(records)
        keys = [(tuple(p), None if tab is None else tab[i].tobytes()) for i, p in enumerate(prefixes)]
        todo = list(dict.fromkeys(k for k in keys if k not in self.cache))
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            rows = [first[k] for k in chunk]
            emb = None if self.embedding is None else self.embedding.expand(len(chunk), -1)
            tab_t = None if tab is None else torch.from_numpy(tab[rows])
            with torch.no_grad():
                r = score_risks(self.helm, [prefixes[i] for i in rows], emb, tab_t).cpu().numpy()
            for k, v in zip(chunk, r, strict=True):
                self.cache[k] = v
        return np.stack([self.cache[k] for k in keys]).astype(np.float64)


def warm_up_shap(n_outputs: int) -> None:
    """Run the permutation explainer once on a trivial model with the dtypes :func:`shap_record` uses.

    Why: shap's maskers compile numba kernels on first use (5-15 s per process on 2 cores). Paying it
    here keeps that one-off cost out of the per-participant SHAP cost and lets callers report it apart.
    """
    def model(codes: np.ndarray) -> np.ndarray:
        return np.repeat(np.asarray(codes, np.float64).sum(axis=1, keepdims=True), n_outputs, axis=1)

    saved = np.random.get_state()
    try:
        masker = shap.maskers.Independent(np.zeros((2, 3), dtype=np.int64), max_samples=2)
        shap.PermutationExplainer(model, masker, seed=0)(np.ones((1, 3), dtype=np.int64), max_evals=7, silent=True)
    finally:
        np.random.set_state(saved)


def shap_record(helm: HeLM, row: pd.DataFrame, background: pd.DataFrame, embedding: np.ndarray | None, *,
                permutations: int = 1, batch_size: int = 16, seed: int = 0) -> ShapExplanation:
    """Permutation SHAP of one participant's serializer fields, spirogram tokens fixed.

    Args:
        helm: the graft (any variant; ``tabmlp+spiro`` perturbs the columns behind its features).
        row: the participant (one row of the participant table).
        background: reference participants; a masked field takes their values (averaged over them).
        embedding: the participant's ``(E,)`` spirogram embedding (spirogram variants), held fixed.
        permutations: antithetic permutations sampled (each costs ``2 * fields + 1`` evaluations
            per background row).
        batch_size: records per LLM forward.
        seed: permutation sampling seed.
    """
    fields = tuple(helm.cfg.serializer.fields)
    pool = pd.concat([row, background], ignore_index=True)
    codes = _field_codes(helm, pool, fields)
    scorer = _CachedRecordScorer(helm, pool, fields, embedding, batch_size)
    masker = shap.maskers.Independent(codes[1:], max_samples=len(background))
    saved = np.random.get_state()  # PermutationExplainer seeds numpy's global generator; restore it
    try:
        explainer = shap.PermutationExplainer(scorer, masker, seed=seed)
        expl = explainer(codes[:1], max_evals=permutations * (2 * len(fields) + 1), silent=True)
    finally:
        np.random.set_state(saved)
    values = np.asarray(expl.values, dtype=float)[0]
    base = np.asarray(expl.base_values, dtype=float).reshape(-1)
    values = values.reshape(len(fields), -1)
    full = scorer(codes[:1])[0]
    labels = tuple(FIELDS[f][0] for f in fields)
    text = np.array([field_text(row, f).iloc[0] for f in fields], dtype=object)
    return ShapExplanation(fields, labels, text, values, base, full, scorer.requested, len(scorer.cache))


# ----------------------------------------------------------------------------- integrated gradients


@dataclass
class CurveAttribution:
    """Integrated gradients of one trait's risk over the input curves of one participant.

    Attributes:
        curve, baseline, attribution: ``(C, T)``.
        risk: f(curve); ``risk_baseline``: f(baseline) (same record, reference curve).
        delta: captum's convergence delta ``sum(attribution) - (risk - risk_baseline)``.
    """

    curve: np.ndarray
    baseline: np.ndarray
    attribution: np.ndarray
    risk: float
    risk_baseline: float
    delta: float


def curve_risk_function(helm: HeLM, encoder: SpiroEncoder, row: pd.DataFrame, trait: str
                        ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``curves (B, C, T) -> risk of trait (B,)`` for one participant: encoder -> projector -> LLM tail.

    The participant's record prefix is encoded once (no grad) and broadcast over the batch, so the
    function costs one encoder pass and one short tail per call.
    """
    prefixes = helm.prefix_ids(row)
    state1 = encode_prefix_or_none(helm, prefixes)
    tab = helm.tab_features(row)
    tab1 = None if tab is None else torch.from_numpy(tab)
    device = helm.llm.device

    def forward(curves: torch.Tensor) -> torch.Tensor:
        n = curves.shape[0]
        emb = encoder.encode(curves.to(device))
        state = None if state1 is None else state1.expand(n)
        tab_n = None if tab1 is None else tab1.expand(n, -1)
        return score_risks(helm, prefixes * n, emb, tab_n, state=state, traits=(trait,))[:, 0]

    return forward


def integrated_gradients_curve(helm: HeLM, encoder: SpiroEncoder, row: pd.DataFrame, curve: np.ndarray,
                               baseline: np.ndarray, trait: str, *, n_steps: int = 32,
                               internal_batch_size: int | None = None) -> CurveAttribution:
    """Integrated gradients from ``trait``'s risk back to the curves (captum, Gauss-Legendre steps).

    Completeness: ``attribution.sum() ~= risk - risk_baseline`` up to :attr:`CurveAttribution.delta`,
    which shrinks with ``n_steps``.
    """
    forward = curve_risk_function(helm, encoder, row, trait)
    x = torch.as_tensor(curve, dtype=torch.float32)[None]
    b = torch.as_tensor(baseline, dtype=torch.float32)[None]
    ig = IntegratedGradients(forward)
    attr, delta = ig.attribute(x, baselines=b, n_steps=n_steps, method="gausslegendre",
                               internal_batch_size=internal_batch_size or n_steps, return_convergence_delta=True)
    with torch.no_grad():
        both = forward(torch.cat([x, b])).cpu().numpy()
    return CurveAttribution(curve=np.asarray(curve, np.float32), baseline=np.asarray(baseline, np.float32),
                            attribution=attr[0].detach().cpu().numpy().astype(np.float32),
                            risk=float(both[0]), risk_baseline=float(both[1]), delta=float(delta.reshape(-1)[0]))
