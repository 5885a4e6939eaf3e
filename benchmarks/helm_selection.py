"""Benchmark: choose HeLM's projector and training settings on validation, never on test.

Why: earlier HeLM designs were picked by their AUROC on test people (docs/llm_bridge.md). Here every
candidate trains on the same seeded training subsample and is compared on the same fixed development
slice of the validation split; the test split is not read at all (the participants passed to the
trainer hold no test row). Every candidate shares one prefix KV store, so each participant's text
prefix is computed once for the whole sweep.

The chosen candidate is the one with the highest mean validation AUROC over the traits; each other
candidate gets a paired bootstrap CI of its difference to the chosen one on the same validation
people, so a "win" inside the noise is visible as such. The validation AUROC of a candidate is that of
its kept epoch (chosen on the same slice, as in every training run), so it is slightly optimistic for
every candidate alike.

    python benchmarks/helm_selection.py --run runs/default --max-train 1000 --dev 1024 --epochs 2

Writes ``benchmarks/results/helm_selection.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from report_md import run_cli
from scipy.stats import spearmanr

from experiments.baselines.controls import PROBE, probe_scores
from experiments.data.embeddings import load_embeddings
from experiments.data.participants import read_participants
from experiments.data.predictions import risk_column
from experiments.evaluate.harness import compare_methods
from experiments.evaluate.paired import differences_markdown, paired_differences
from experiments.helm.config import ROW_TEXT_SPIRO
from experiments.helm.train import prepare_participants, select_participants, train_variant, variant_config
from experiments.pipeline.config import load_run_config
from llm_bridge.kv_cache import PrefixKVStore
from llm_bridge.llm import ensure_llm

OUT = Path(__file__).resolve().parent / "results" / "helm_selection"

#: name -> (HeLMConfig changes, HeLMTrainConfig changes), all on the text+spiro row.
CANDIDATES: dict[str, tuple[dict, dict]] = {
    "probe bottleneck, distill 1": ({"projector_init": "probe"}, {"distill_weight": 1.0, "lr": 3e-3}),
    "probe+features, distill 1": ({"projector_init": "probe+features"}, {"distill_weight": 1.0, "lr": 3e-3}),
    "probe+features, distill 1, lr 1e-3": ({"projector_init": "probe+features"}, {"distill_weight": 1.0, "lr": 1e-3}),
    "probe+features, distill 0.1": ({"projector_init": "probe+features"}, {"distill_weight": 0.1, "lr": 3e-3}),
    "probe+features, no distill": ({"projector_init": "probe+features"}, {"distill_weight": 0.0, "lr": 1e-3}),
    "random, no distill": ({"projector_init": "random"}, {"distill_weight": 0.0, "lr": 1e-3}),
    "probe+features, distill 1, one token set": ({"projector_init": "probe+features", "tokens_per_trait": False},
                                                 {"distill_weight": 1.0, "lr": 3e-3}),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/default"))
    ap.add_argument("--max-train", type=int, default=1000)
    ap.add_argument("--dev", type=int, default=1024, help="validation development slice (seeded subsample)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    ap.add_argument("--kv-store-gb", type=float, default=10.0)
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    d = load_run_config().helm
    base_train = replace(d.train, max_train=args.max_train, max_val=args.dev, max_eval=None,
                         max_epochs=args.epochs, log_mlflow=False)
    cohort = args.run / "cohort"
    embeddings = args.run / "encoder" / "embeddings.parquet"
    work = Path(tempfile.mkdtemp(prefix="helm_selection_"))
    rows, traits, _ = prepare_participants(cohort, embeddings, None, work, need_embeddings=True)
    chosen_people = select_participants(rows, base_train, args.seed)
    participants = chosen_people[chosen_people["split"] != "test"].reset_index(drop=True)  # test is never read
    val = participants[participants["split"] == "val"].reset_index(drop=True)
    llm = ensure_llm(d.llm, base_train.num_threads)
    store = PrefixKVStore(int(args.kv_store_gb * (1 << 30)))
    scores: dict[str, pd.DataFrame] = {}
    info: dict[str, dict] = {}
    for name in args.candidates:
        model_changes, train_changes = CANDIDATES[name]
        cfg = replace(base_train, **train_changes)
        hcfg = variant_config(replace(d.model, **model_changes), "text+spiro", cfg, traits, args.seed)
        t0 = time.perf_counter()
        run = train_variant(llm, participants, hcfg, method=ROW_TEXT_SPIRO, out_dir=work / str(len(info)), cfg=cfg,
                            kv_store=store)
        scores[name] = run.val_scores
        info[name] = {"model": model_changes, "train": train_changes, "best_epoch": run.best_epoch,
                      "seconds": time.perf_counter() - t0, "calibration": run.calibration}
        print(f"{name}: val AUROC mean {run.best_val_auroc:.4f} (epoch {run.best_epoch}) "
              f"in {info[name]['seconds']:.0f} s", flush=True)
    # the probe every probe-initialised candidate starts from, fitted on the whole train split
    all_rows, _ = read_participants(cohort, traits)
    probe = probe_scores(all_rows, load_embeddings(embeddings), traits,
                         balanced=base_train.class_weight == "balanced", split="val")
    scores[PROBE] = probe.scores[probe.scores["eid"].isin(val["eid"])].reset_index(drop=True)
    result = compare_methods(val, scores, list(traits), n_bootstrap=args.n_bootstrap, seed=args.seed)
    mean_auroc = {m: float(np.mean([result.metrics[(m, t)].auroc for t in traits])) for m in args.candidates}
    chosen = max(mean_auroc, key=lambda m: mean_auroc[m])
    diffs = paired_differences(result, [chosen], [m for m in result.methods if m not in ("oracle", chosen)])
    agreement = {m: {t: float(spearmanr(scores[m].set_index("eid").loc[val["eid"], risk_column(t)],
                                        scores[PROBE].set_index("eid").loc[val["eid"], risk_column(t)]).statistic)
                     for t in traits} for m in args.candidates}
    report = {
        "command": "python benchmarks/helm_selection.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "run": str(args.run), "seed": args.seed, "traits": list(traits),
        "sizes": {"helm_train": int((participants["split"] == "train").sum() if args.max_train is None
                                    else min(args.max_train, int((participants["split"] == "train").sum()))),
                  "validation_dev_slice": len(val), "probe_train": probe.fitted_on, "test": 0},
        "epochs": args.epochs, "base_settings": {"model": d.model.__dict__ | {"serializer": None, "prompt": None},
                                                 "train": {k: v for k, v in base_train.__dict__.items()
                                                           if k != "distributed"}},
        "candidates": info, "val_mean_auroc": mean_auroc, "chosen": chosen,
        "val_table": result.to_frame()[["method", "trait", "n", "n_pos", "auroc", "auroc_ci_lo", "auroc_ci_hi",
                                        "brier"]].to_dict(orient="records"),
        "paired_vs_chosen": diffs.to_dict(orient="records"),
        "spearman_vs_probe": agreement,
        "kv_store": {"participants": len(store), "hits": store.hits, "misses": store.misses},
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    lines = [f"# HeLM design choice on validation (`{args.run}`)", "",
             f"Command: `{report['command']}`", "",
             f"Every candidate: `helm:text+spiro`, trained on the same {report['sizes']['helm_train']} training "
             f"participants for up to {args.epochs} epochs (best epoch kept on the slice), compared on a fixed "
             f"validation development slice of {len(val)} participants. The probe row (no LLM) is the logistic "
             f"regression of the embedding that probe-initialised candidates start from, fitted on "
             f"{max(probe.fitted_on.values())} training participants. Test is not read.", "",
             result.to_markdown(), "",
             "Seconds: the first candidate also computes every participant's text prefix (shared by the rest).", "",
             "| candidate | mean val AUROC | best epoch | seconds | Spearman vs probe (" + " / ".join(traits) + ") |",
             "|---|---|---|---|---|"]
    for m in args.candidates:
        lines.append(f"| {m} | {mean_auroc[m]:.4f} | {info[m]['best_epoch']} | {info[m]['seconds']:.0f} | "
                     + " / ".join(f"{agreement[m][t]:.3f}" for t in traits) + " |")
    lines += ["", f"**Chosen on validation: {chosen}.**", "", differences_markdown(diffs)]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    run_cli(main)
