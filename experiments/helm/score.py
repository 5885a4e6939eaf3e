"""HeLM risks for a table of participants, and the untrained text-only rows (zero-shot, few-shot).

One forward path per participant batch: the text prefix is encoded once and every trait's tail is
scored from its KV cache (:meth:`llm_bridge.model.HeLM.score_prefix`); LoRA, which changes the prefix,
scores full sequences instead.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from experiments.data.predictions import risk_column, scores_frame
from experiments.helm.datamodule import HeLMDataset, HeLMTable, build_table
from llm_bridge.kv_cache import PrefixState
from llm_bridge.llm import LoadedLLM
from llm_bridge.model import HeLM, HeLMConfig
from llm_bridge.prompt import few_shot_block, select_few_shot
from llm_bridge.readout import risk
from llm_bridge.serialize import serialize_records


def score_table(helm: HeLM, table: HeLMTable, batch_size: int = 32, desc: str = "score",
                shared: PrefixState | None = None, *, calibrated: bool = True) -> pd.DataFrame:
    """``eid`` + ``risk_<trait>`` of every participant of ``table``, in table order.

    Batches hold participants of similar prompt length (a stable sort by length), so little of each
    forward is spent on padding; the order depends only on the table, so results are reproducible.
    ``shared``: the cache of a block every prompt continues (few-shot examples), computed once.
    ``calibrated``: through the model's risk calibrators (:attr:`HeLM.calibration`; none: unchanged).
    """
    ds = HeLMDataset(table)
    order = np.argsort([len(p) for p in table.prefix_ids], kind="stable")
    values = np.zeros((len(ds), len(helm.cfg.traits)))
    helm.eval()
    with torch.no_grad():
        for start in tqdm(range(0, len(ds), batch_size), desc=desc, unit="batch", disable=None):
            rows = order[start:start + batch_size]
            batch = ds.collate(rows.tolist())
            if helm.uses_lora:
                pairs = helm.score_full(batch["prefix_ids"], batch["embedding"], batch["tab"], eids=batch["eid"])
            else:
                state = helm.encode_prefix(batch["prefix_ids"], shared=shared)
                pairs = helm.score_prefix(state, batch["embedding"], batch["tab"], eids=batch["eid"])
            values[rows] = risk(pairs).cpu().numpy()
    if calibrated:
        values = helm.calibrated(values)
    return scores_frame(table.eids, {t: values[:, j] for j, t in enumerate(helm.cfg.traits)})


def untrained_text_scores(llm: LoadedLLM, participants: pd.DataFrame, helm_cfg: HeLMConfig, *, few_shot_k: int = 0,
                          batch_size: int = 32, precision: str = "auto") -> pd.DataFrame:
    """Zero-shot (``few_shot_k=0``) or few-shot text-only risks of the test split.

    Zero-shot scores every trait from one shared text prefix per participant (one pass). Few-shot
    prompts differ per trait (their examples carry that trait's answers), so each trait is a
    separate pass; the examples block is the same for every participant, so its KV is computed once
    per trait and each participant's own prefix runs on top of it. The balanced examples come from the
    train split (seeded by ``helm_cfg.seed``), never from the test split.
    """
    test = participants[participants["split"] == "test"].reset_index(drop=True)
    text_cfg = replace(helm_cfg, variant="text", soft_prompt_tokens=0)
    if not few_shot_k:
        helm = HeLM(llm, text_cfg).set_precision(precision)
        return score_table(helm, build_table(helm, test), batch_size, desc="zero-shot")
    risks = {}
    for trait in helm_cfg.traits:
        helm = HeLM(llm, replace(text_cfg, traits=(trait,))).set_precision(precision)
        ex = select_few_shot(participants, trait, few_shot_k, helm_cfg.seed)
        examples = few_shot_block(serialize_records(ex, helm_cfg.serializer).tolist(),
                                  ex[trait].astype(int).tolist(), trait, helm_cfg.prompt)
        shared = helm.encode_prefix([helm.shared_prefix_ids(examples)])
        scored = score_table(helm, build_table(helm, test, after_shared=True), batch_size, desc=f"{trait} few-shot",
                             shared=shared)
        risks[trait] = scored[risk_column(trait)].to_numpy()
    return scores_frame(test["eid"].to_numpy(), risks)
