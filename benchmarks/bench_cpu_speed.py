"""HeLM on CPU: participants/s of scoring, training and few-shot, per precision, side by side in one run.

On a finished main-job run (``--run runs/default``: its cohort, the encoder stage's embeddings and the
HeLM stage's trained text+spirogram checkpoint), on the same people every time:

1. **Precision** - scoring both traits with ``fp32`` (the pre-issue path), ``bf16`` (autocast) and ``int8``
   (dynamic quantisation of the linear layers; measured, not offered): participants/s and agreement with fp32 (Spearman of the risks, AUROC
   difference, largest risk difference), on a development slice of the validation split (where the
   default is decided: AUROC moves <= 0.005) and on the main job's HeLM test subsample (reported).
   The zero-shot row (the main job's other default HeLM row) is compared the same way, on the same people,
   and its precision decided the same way (``helm.train.untrained_precision``).
2. **Threads x batch size** of the bf16 scoring forward (what the defaults are chosen from).
3. **Training** through the prefix KV cache, fp32 vs bf16: the one-time prefix pass, then participants/s
   of an epoch from the KV store, and where a step's time goes (prefix, tail forward, backward).
4. **Few-shot** scoring, in the untrained rows' precision: every prompt carrying its examples (before) vs the
   examples' KV computed once.
5. **Peak RSS** of training on ``--rss-train`` participants with the whole KV store in memory (a
   subprocess, so the number is that training's own).
6. ``spirolm score`` (the pyfunc, QC and encoder included) on a 400-participant synthetic cohort, fp32
   vs the default, and the 500,000-participant estimate on this machine and on 32 Ray workers.

Writes ``benchmarks/results/cpu_speed.json`` and ``.md``. Speed is measured here, never in tests.
Usage::

    python benchmarks/bench_cpu_speed.py --run runs/default
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from report_md import run_cli
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from biobank.build import build_synthetic_cohort
from biobank.cohort_io import usable
from experiments.data.embeddings import load_embeddings
from experiments.data.participants import read_participants, subsample
from experiments.data.predictions import risk_column
from experiments.helm.config import ROW_TEXT_SPIRO, row_slug
from experiments.helm.datamodule import build_table
from experiments.helm.score import score_table, untrained_text_scores
from experiments.pipeline.helm_stage import load_stage_scores
from experiments.serve.pyfunc import save_helm_pyfunc
from experiments.serve.scoring import score_cohort
from llm_bridge import precision as P
from llm_bridge.kv_cache import PrefixKVStore
from llm_bridge.llm import configure_threads, default_num_threads, load_llm
from llm_bridge.model import HeLM, HeLMConfig
from llm_bridge.prompt import few_shot_block, question_ids, select_few_shot
from llm_bridge.serialize import serialize_records

OUT = Path(__file__).resolve().parent / "results" / "cpu_speed"
BEFORE_PARTICIPANTS_PER_S = 2.75  # the pre-issue scoring rate (benchmarks/results/llm_bridge.json, fp32, 2 cores)
BEFORE_TRAIN_PARTICIPANTS_PER_S = 2.1  # the pre-issue training rate the issue quotes


def _rows(run: Path, split: str, n: int | None, seed: int) -> pd.DataFrame:
    p, _ = read_participants(run / "cohort")
    emb = load_embeddings(run / "encoder" / "embeddings.parquet")
    rows = p[(p["split"] == split) & usable(p)].merge(emb, on="eid")
    return subsample(rows, n, [seed, 11])


def _score(helm: HeLM, rows: pd.DataFrame, batch: int) -> tuple[pd.DataFrame, float]:
    table = build_table(helm, rows)
    t0 = time.perf_counter()
    scores = score_table(helm, table, batch, desc="score")
    return scores, len(rows) / (time.perf_counter() - t0)


def _agreement(ref: pd.DataFrame, other: pd.DataFrame, labels: pd.DataFrame, traits: tuple[str, ...]) -> dict:
    out = {}
    for t in traits:
        a, b = ref[risk_column(t)].to_numpy(), other[risk_column(t)].to_numpy()
        y = labels[t].to_numpy()
        seen = ~np.isnan(y)
        both = len(np.unique(y[seen])) == 2
        out[t] = {"spearman": float(spearmanr(a, b).statistic), "max_abs_risk_diff": float(np.abs(a - b).max()),
                  "auroc_ref": float(roc_auc_score(y[seen], a[seen])) if both else float("nan"),
                  "auroc": float(roc_auc_score(y[seen], b[seen])) if both else float("nan")}
        out[t]["auroc_diff"] = out[t]["auroc"] - out[t]["auroc_ref"]
    return out


def precision_section(llm_spec: str | None, ckpt: Path, rows: dict[str, pd.DataFrame], batch: int) -> dict:
    result: dict = {}
    for prec in ("fp32", "bf16", "int8"):
        helm = HeLM.load_checkpoint(ckpt, load_llm(llm_spec)).eval().set_precision("fp32" if prec == "int8" else prec)
        if prec == "int8":  # measured, not offered: dynamic int8 linears (see the module docstring)
            helm.llm = P.quantized_copy(helm.llm)
        for where, df in rows.items():
            scores, rate = _score(helm, df, batch)
            result.setdefault(where, {})[prec] = {"participants_per_s": rate, "scores": scores}
        print(f"precision {prec}: " + ", ".join(f"{w} {result[w][prec]['participants_per_s']:.2f}/s" for w in rows),
              flush=True)
    traits = helm.cfg.traits
    for where, df in rows.items():
        ref = result[where]["fp32"]["scores"]
        for prec in ("bf16", "int8"):
            result[where][prec]["agreement"] = _agreement(ref, result[where][prec]["scores"], df, traits)
        for prec in result[where]:
            result[where][prec].pop("scores")
    return result


def zero_shot_section(llm, ckpt: Path, rows: dict[str, pd.DataFrame], batch: int) -> dict:
    """The main job's zero-shot row (untrained text prompt), fp32 vs bf16, on the same people as the trained row."""
    cfg = HeLM.load_checkpoint(ckpt, llm).cfg
    out: dict = {}
    for where, df in rows.items():
        people = df.assign(split="test")  # untrained_text_scores scores the rows it is given as "test"
        by_prec: dict = {}
        for prec in ("fp32", "bf16"):
            t0 = time.perf_counter()
            scores = untrained_text_scores(llm, people, cfg, batch_size=batch, precision=prec)
            by_prec[prec] = {"participants_per_s": len(df) / (time.perf_counter() - t0), "scores": scores}
            print(f"zero-shot {prec}, {where}: {by_prec[prec]['participants_per_s']:.2f}/s", flush=True)
        by_prec["bf16"]["agreement"] = _agreement(by_prec["fp32"]["scores"], by_prec["bf16"]["scores"], df, cfg.traits)
        for v in by_prec.values():
            v.pop("scores")
        out[where] = by_prec
    return out


def grid_section(llm, ckpt: Path, rows: pd.DataFrame) -> list[dict]:
    helm = HeLM.load_checkpoint(ckpt, llm).eval().set_precision("bf16")
    out = []
    for threads in sorted({1, default_num_threads()}):
        torch.set_num_threads(threads)
        for batch in (8, 16, 32):
            _, rate = _score(helm, rows, batch)
            out.append({"threads": threads, "batch": batch, "participants_per_s": rate})
            print(f"grid threads {threads} batch {batch}: {rate:.2f}/s", flush=True)
    configure_threads()
    return out


def _train_epochs(helm: HeLM, rows: pd.DataFrame, batch: int, epochs: int, kv_bytes: int) -> dict:
    """The HeLM training step (prefix from the KV store, tails with gradients, AdamW) over ``rows``."""
    table = build_table(helm, rows)
    emb = torch.from_numpy(table.embedding)
    labels = torch.from_numpy(table.labels)
    opt = torch.optim.AdamW(helm.trainable_parameters(), lr=1e-3)
    store = PrefixKVStore(kv_bytes)
    per_epoch = []
    for _ in range(epochs):
        split = {"prefix": 0.0, "tail_forward": 0.0, "backward": 0.0}
        t_epoch = time.perf_counter()
        for s in range(0, len(rows), batch):
            sl = slice(s, s + batch)
            t0 = time.perf_counter()
            state = store.get(helm.encode_prefix, table.eids[sl].tolist(), table.prefix_ids[sl])
            t1 = time.perf_counter()
            loss = helm.loss(helm.score_prefix(state, emb[sl]), labels[sl])
            t2 = time.perf_counter()
            loss.backward()
            opt.step()
            opt.zero_grad()
            t3 = time.perf_counter()
            split["prefix"] += t1 - t0
            split["tail_forward"] += t2 - t1
            split["backward"] += t3 - t2
        seconds = time.perf_counter() - t_epoch
        per_epoch.append({"seconds": seconds, "participants_per_s": len(rows) / seconds, **split})
    return {"epochs": per_epoch, "kv_store_bytes": store.bytes, "kv_store_participants": len(store)}


def training_section(llm, ckpt: Path, rows: pd.DataFrame, batch: int) -> dict:
    out = {}
    for prec in ("fp32", "bf16"):
        helm = HeLM.load_checkpoint(ckpt, llm).set_precision(prec).train()
        out[prec] = _train_epochs(helm, rows, batch, epochs=2, kv_bytes=64 << 30)
        e0, e1 = out[prec]["epochs"]
        print(f"training {prec}: prefix pass {e0['prefix']:.1f} s, epoch from the store "
              f"{e1['participants_per_s']:.2f}/s", flush=True)
    return out


def few_shot_section(llm, run: Path, rows: pd.DataFrame, batch: int, k: int, seed: int, precision: str) -> dict:
    p, traits = read_participants(run / "cohort")
    helm_cfg = HeLMConfig(variant="text", traits=(traits[0],), seed=seed)
    helm = HeLM(llm, helm_cfg).eval().set_precision(precision)
    ex = select_few_shot(p, traits[0], k, seed)
    examples = few_shot_block(serialize_records(ex, helm_cfg.serializer).tolist(), ex[traits[0]].astype(int).tolist(),
                              traits[0], helm_cfg.prompt)
    shared_ids = helm.shared_prefix_ids(examples)
    table = build_table(helm, rows, after_shared=True)
    t0 = time.perf_counter()
    shared = helm.encode_prefix([shared_ids])
    after = score_table(helm, table, batch, desc="few-shot, shared KV", shared=shared)
    after_rate = len(rows) / (time.perf_counter() - t0)
    inline = build_table(helm, rows, after_shared=True)
    inline.prefix_ids = [shared_ids + ids for ids in inline.prefix_ids]
    t0 = time.perf_counter()
    before = score_table(helm, inline, batch, desc="few-shot, examples in every prompt")
    before_rate = len(rows) / (time.perf_counter() - t0)
    col = risk_column(traits[0])
    diff = float(np.abs(after[col].to_numpy() - before[col].to_numpy()).max())
    print(f"few-shot: before {before_rate:.2f}/s, after {after_rate:.2f}/s", flush=True)
    own = float(np.mean([len(ids) for ids in table.prefix_ids])) + len(helm.tail_ids(question_ids(helm.tokenizer, traits[0], helm.cfg.prompt)))
    return {"trait": traits[0], "k": k, "precision": precision, "shared_tokens": len(shared_ids), "own_tokens": own,
            "before_participants_per_s": before_rate,
            "after_participants_per_s": after_rate, "speedup": after_rate / before_rate, "max_abs_risk_diff": diff}


def rss_section(run: Path, ckpt: Path, n: int, batch: int, seed: int) -> dict:
    """Peak RSS of a fresh process that trains one epoch on ``n`` participants with every prefix stored."""
    code = f"""
import json, resource, sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from bench_cpu_speed import _rows, _train_epochs
from llm_bridge.llm import configure_threads, load_llm
from llm_bridge.model import HeLM
from pathlib import Path
configure_threads()
rows = _rows(Path({str(run)!r}), "train", {n}, {seed})
helm = HeLM.load_checkpoint(Path({str(ckpt)!r}), load_llm(None)).set_precision("auto").train()
r = _train_epochs(helm, rows, {batch}, epochs=1, kv_bytes=64 << 30)
print(json.dumps({{"participants": len(rows), "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "kv_store_gb": r["kv_store_bytes"] / 2**30, "seconds": r["epochs"][0]["seconds"]}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"rss: {result}", flush=True)
    return result


def score_command_section(run: Path, ckpt: Path, workdir: Path) -> dict:
    cohort = workdir / "cohort400"
    build_synthetic_cohort(n=400, seed=7, out_dir=cohort)
    model = save_helm_pyfunc(workdir / "model", encoder_checkpoint=run / "encoder" / "encoder" / "encoder.pt",
                             helm_checkpoint=ckpt)
    out = {}
    for prec in ("fp32", "auto"):
        r = score_cohort(cohort, model, workdir / f"scores_{prec}", precision=prec, progress=False)
        out[prec] = {"participants": r.n_participants, "scored": r.n_scored, "seconds": r.seconds,
                     "participants_per_s": r.n_participants / r.seconds}
        print(f"spirolm score ({prec}): {out[prec]['participants_per_s']:.2f}/s", flush=True)
    rate = out["auto"]["participants_per_s"]
    out["estimate_500k_hours_this_machine"] = 500_000 / rate / 3600
    return out


def _md(r: dict) -> str:
    lines = [f"# HeLM on CPU ({r['machine']['cpu']}, {r['machine']['threads']} threads, torch {r['machine']['torch']})",
             "", f"Run: `{r['run']}`; checkpoint `{r['checkpoint']}`. One run, the same people in every row.", "",
             "## Scoring both traits: precision (participants/s and agreement with fp32)", ""]
    for where, by_prec in r["precision"].items():
        lines += [f"**{where}**", "", "| precision | participants/s | vs fp32 | " + " | ".join(
            f"{t}: Spearman / ΔAUROC / max Δrisk" for t in r["traits"]) + " |",
                  "|---|---|---|" + "---|" * len(r["traits"])]
        base = by_prec["fp32"]["participants_per_s"]
        for prec, v in by_prec.items():
            cells = [f"{v['participants_per_s']:.2f}", f"{v['participants_per_s'] / base:.2f}x"]
            for t in r["traits"]:
                a = v.get("agreement", {}).get(t)
                cells.append("reference" if a is None else
                             f"{a['spearman']:.4f} / {a['auroc_diff']:+.4f} / {a['max_abs_risk_diff']:.4f}")
            lines.append(f"| {prec} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["**zero-shot row (untrained text prompt)**: bf16 vs fp32", "", "| people | fp32 /s | bf16 /s | "
              + " | ".join(f"{t}: Spearman / ΔAUROC / max Δrisk" for t in r["traits"]) + " |",
              "|---|---|---|" + "---|" * len(r["traits"])]
    for where, z in r["zero_shot"].items():
        agree = z["bf16"]["agreement"]
        lines.append(f"| {where} | {z['fp32']['participants_per_s']:.2f} | {z['bf16']['participants_per_s']:.2f} | "
                     + " | ".join(f"{agree[t]['spearman']:.4f} / {agree[t]['auroc_diff']:+.4f} / "
                                  f"{agree[t]['max_abs_risk_diff']:.4f}" for t in r["traits"]) + " |")
    lines += ["", f"Untrained text rows' precision: **{r['untrained_precision']}** ({r['untrained_decision']}).", ""]
    lines += [f"Trained rows' default: **{r['default_precision']}** ({r['decision']}).", "",
              "## Threads x batch size (bf16 scoring forward)", "", "| threads | batch | participants/s |", "|---|---|---|"]
    lines += [f"| {g['threads']} | {g['batch']} | {g['participants_per_s']:.2f} |" for g in r["grid"]]
    t = r["training"]
    lines += ["", "## Training through the prefix KV cache", "",
              "| precision | one-time prefix pass (s) | epoch from the store: participants/s | prefix / tail forward / "
              "backward (s) | KV store (GB) |", "|---|---|---|---|---|"]
    for prec, v in t.items():
        e0, e1 = v["epochs"]
        lines.append(f"| {prec} | {e0['prefix']:.1f} | {e1['participants_per_s']:.2f} | {e1['prefix']:.1f} / "
                     f"{e1['tail_forward']:.1f} / {e1['backward']:.1f} | {v['kv_store_bytes'] / 2**30:.2f} |")
    f = r["few_shot"]
    lines += ["", "## Few-shot scoring", "", f"{f['precision']}, {f['k']} examples ({f['shared_tokens']} shared tokens), trait {f['trait']}: "
              f"examples in every prompt {f['before_participants_per_s']:.2f}/s, examples' KV once "
              f"{f['after_participants_per_s']:.2f}/s (**{f['speedup']:.1f}x**); max risk difference "
              f"{f['max_abs_risk_diff']:.5f}. Each participant's own {f['own_tokens']:.0f} tokens (record + question) "
              f"still run against all {f['shared_tokens']} shared keys, so the token ratio "
              f"{(f['shared_tokens'] + f['own_tokens']) / f['own_tokens']:.1f}x bounds what reusing the examples' KV "
              "can save in the linear layers.", "", "## Memory", "",
              f"Training one epoch on {r['rss']['participants']} participants with every prefix in the KV store: "
              f"peak RSS **{r['rss']['peak_rss_gb']:.1f} GB** (store {r['rss']['kv_store_gb']:.1f} GB) on a 24 GiB machine.",
              "", "## `spirolm score` on a 400-participant synthetic cohort", ""]
    s = r["score_command"]
    lines += [f"fp32 {s['fp32']['participants_per_s']:.2f} participants/s; default ({r['default_precision']}) "
              f"**{s['auto']['participants_per_s']:.2f} participants/s** ({s['auto']['participants_per_s'] / BEFORE_PARTICIPANTS_PER_S:.1f}x "
              f"the pre-issue {BEFORE_PARTICIPANTS_PER_S}). 500,000 participants: "
              f"{s['estimate_500k_hours_this_machine']:.1f} h on this machine, "
              f"{r['estimate_500k_hours_32_ray_workers']:.1f} h on 32 single-thread Ray workers (the 1-thread rate "
              "of the grid, times 32).", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/default"))
    ap.add_argument("--llm", default=None)
    ap.add_argument("--val", type=int, default=512, help="validation development slice (the decision)")
    ap.add_argument("--grid", type=int, default=96)
    ap.add_argument("--train", type=int, default=96)
    ap.add_argument("--few-shot", type=int, default=48)
    ap.add_argument("--rss-train", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    configure_threads()
    run = args.run
    ckpt = run / "helm" / row_slug(ROW_TEXT_SPIRO) / "helm.pt"
    test_eids = next(iter(load_stage_scores(run / "helm").values()))["eid"]
    test = _rows(run, "test", None, args.seed)
    rows = {f"validation slice ({args.val})": _rows(run, "val", args.val, args.seed),
            f"main job's HeLM test subsample ({len(test_eids)})": test[test["eid"].isin(test_eids)].reset_index(drop=True)}
    llm = load_llm(args.llm)
    result: dict = {"run": str(run), "checkpoint": str(ckpt), "traits": list(HeLM.load_checkpoint(ckpt, llm).cfg.traits),
                    "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                                "torch": torch.__version__, "bf16_native": P.bf16_supported()}}
    result["precision"] = precision_section(args.llm, ckpt, rows, args.batch)
    val = result["precision"][next(iter(rows))]
    moved = max(abs(a["auroc_diff"]) for a in val["bf16"]["agreement"].values())
    result["default_precision"] = "bf16" if moved <= 0.005 else "fp32"
    result["decision"] = f"largest |ΔAUROC| of bf16 on the validation slice {moved:.4f}; the rule is <= 0.005"
    result["zero_shot"] = zero_shot_section(llm, ckpt, rows, args.batch)
    moved = max(abs(a["auroc_diff"]) for a in result["zero_shot"][next(iter(rows))]["bf16"]["agreement"].values())
    result["untrained_precision"] = "bf16" if moved <= 0.005 else "fp32"
    result["untrained_decision"] = f"largest |ΔAUROC| of bf16 on the validation slice {moved:.4f}; the rule is <= 0.005"
    result["grid"] = grid_section(llm, ckpt, rows[next(iter(rows))].iloc[:args.grid])
    result["training"] = training_section(llm, ckpt, _rows(run, "train", args.train, args.seed), 8)
    result["few_shot"] = few_shot_section(llm, run, rows[next(iter(rows))].iloc[:args.few_shot], args.batch, 4, args.seed,
                                            result["untrained_precision"])
    one_thread = max(g["participants_per_s"] for g in result["grid"] if g["threads"] == 1)
    result["estimate_500k_hours_32_ray_workers"] = 500_000 / (32 * one_thread) / 3600
    result["rss"] = rss_section(run, ckpt, args.rss_train, 8, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        result["score_command"] = score_command_section(run, ckpt, Path(tmp))
    result["peak_rss_gb_this_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text(_md(result))
    print(_md(result))
    return 0


if __name__ == "__main__":
    run_cli(main)
