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
from llm_bridge.llm import LoadedLLM
from llm_bridge.model import HeLM, HeLMConfig
from llm_bridge.prompt import few_shot_block, select_few_shot
from llm_bridge.readout import risk
from llm_bridge.serialize import serialize_records


def score_table(helm: HeLM, table: HeLMTable, batch_size: int = 32, desc: str = "score") -> pd.DataFrame:
    """``eid`` + ``risk_<trait>`` of every participant of ``table`` (one shared text prefix per participant)."""
    ds = HeLMDataset(table)
    out = []
    helm.eval()
    with torch.no_grad():
        for start in tqdm(range(0, len(ds), batch_size), desc=desc, unit="batch", disable=None):
            batch = ds.collate(list(range(start, min(start + batch_size, len(ds)))))
            if helm.uses_lora:
                pairs = helm.score_full(batch["prefix_ids"], batch["embedding"], batch["tab"], eids=batch["eid"])
            else:
                state = helm.encode_prefix(batch["prefix_ids"])
                pairs = helm.score_prefix(state, batch["embedding"], batch["tab"], eids=batch["eid"])
            out.append(risk(pairs).cpu().numpy())
    values = np.concatenate(out, axis=0) if out else np.zeros((0, len(helm.cfg.traits)))
    return scores_frame(table.eids, {t: values[:, j] for j, t in enumerate(helm.cfg.traits)})


def untrained_text_scores(llm: LoadedLLM, participants: pd.DataFrame, helm_cfg: HeLMConfig, *, few_shot_k: int = 0,
                          batch_size: int = 32) -> pd.DataFrame:
    """Zero-shot (``few_shot_k=0``) or few-shot text-only risks of the test split.

    Zero-shot scores every trait from one shared text prefix per participant (one pass). Few-shot
    prompts differ per trait (their examples carry that trait's answers), so each trait is a
    separate pass; the balanced examples come from the train split (seeded by ``helm_cfg.seed``),
    never from the test split.
    """
    test = participants[participants["split"] == "test"].reset_index(drop=True)
    text_cfg = replace(helm_cfg, variant="text", soft_prompt_tokens=0)
    if not few_shot_k:
        helm = HeLM(llm, text_cfg)
        return score_table(helm, build_table(helm, test), batch_size, desc="zero-shot")
    risks = {}
    for trait in helm_cfg.traits:
        helm = HeLM(llm, replace(text_cfg, traits=(trait,)))
        ex = select_few_shot(participants, trait, few_shot_k, helm_cfg.seed)
        examples = few_shot_block(serialize_records(ex, helm_cfg.serializer).tolist(),
                                  ex[trait].astype(int).tolist(), trait, helm_cfg.prompt)
        scored = score_table(helm, build_table(helm, test, examples=examples), batch_size, desc=f"{trait} few-shot")
        risks[trait] = scored[risk_column(trait)].to_numpy()
    return scores_frame(test["eid"].to_numpy(), risks)
