"""``spirolm explain helm``: a thin typer command over :func:`experiments.explain.helm_run.explain_helm_run`.

Its budgets default to the ``explanations.helm`` section of the chosen profile; the flags change single
keys of it. ``experiments.cli.main`` registers it under an ``explain`` group and turns
:class:`~signals.errors.SpirolmInputError` into one ``error:`` line with exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
import typer
from rich.console import Console

from experiments.cli.run_config import ConfigFile, Overrides, Profile, resolve
from experiments.explain.helm_run import explain_helm_run
from signals.errors import SpirolmInputError

console = Console()


def parse_eids(text: str | None, file: Path | None) -> list[int]:
    """Participant ids from ``"1,2,3"`` and/or a file (one id per line, or a CSV/Parquet ``eid`` column)."""
    eids: list[int] = []
    for token in (text or "").replace(" ", "").split(","):
        if token:
            try:
                eids.append(int(token))
            except ValueError:
                raise SpirolmInputError(f"participant id {token!r} is not an integer", field="eids") from None
    if file is not None:
        if not Path(file).is_file():
            raise SpirolmInputError("eid file does not exist", file=file)
        if str(file).endswith(".parquet"):
            frame = pd.read_parquet(file, columns=["eid"])
        else:
            frame = pd.read_csv(file)
            if "eid" not in frame.columns:
                frame = pd.read_csv(file, header=None, names=["eid"])
        values = pd.to_numeric(frame["eid"], errors="coerce")
        if values.isna().any():
            raise SpirolmInputError(f"non-integer participant id on row {int(values.isna().to_numpy().argmax()) + 1}",
                                    file=file, field="eid")
        eids += values.astype("int64").tolist()
    if not eids:
        raise SpirolmInputError("give the participants to explain with --eids 1,2,3 or --eids-file FILE", field="eids")
    return eids


def explain_helm(
    cohort: Annotated[Path, typer.Option(help="Cohort directory.")],
    helm: Annotated[Path, typer.Option(help="Trained HeLM checkpoint (helm.pt).")],
    encoder: Annotated[Path, typer.Option(help="Spirogram encoder the graft was trained with (encoder.pt or its directory).")],
    out: Annotated[Path, typer.Option(help="Output directory (figures, tables, index.json).")],
    eids: Annotated[Optional[str], typer.Option(help="Participants to explain, comma-separated: 1000001,1000002.")] = None,
    eids_file: Annotated[Optional[Path], typer.Option(help="File of participant ids (one per line, or an eid column).")] = None,
    llm: Annotated[Optional[str], typer.Option(help="The LLM the checkpoint was trained with [helm.llm].")] = None,
    profile: Profile = "default",
    config: ConfigFile = None,
    overrides: Overrides = None,
    max_ablation: Annotated[Optional[int], typer.Option(help="Participants in the modality ablation (seeded subsample).")] = None,
    shap_examples: Annotated[Optional[int], typer.Option(help="Example participants explained with record SHAP (0 = skip).")] = None,
    shap_background: Annotated[Optional[int], typer.Option(help="Background records of the SHAP explainer.")] = None,
    ig_examples: Annotated[Optional[int], typer.Option(help="Examples explained with integrated gradients (0 = skip).")] = None,
    ig_steps: Annotated[Optional[int], typer.Option(help="Integrated-gradients interpolation steps.")] = None,
    ig_baseline: Annotated[Optional[str], typer.Option(help="Reference curve: mean (train-split mean curve) | zeros.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of subsamples and SHAP permutations [seed].")] = None,
) -> None:
    """Explain a trained HeLM: modality ablation, record SHAP (spirogram fixed), integrated gradients on the curve."""
    keys = {"max_ablation": max_ablation, "shap_examples": shap_examples, "shap_background": shap_background,
            "ig_examples": ig_examples, "ig_steps": ig_steps, "ig_baseline": ig_baseline}
    cfg = resolve(profile, config, overrides, flags={"helm.llm": llm, "seed": seed,
                                                     **{f"explanations.helm.{k}": v for k, v in keys.items()}})
    result = explain_helm_run(helm, encoder, cohort, parse_eids(eids, eids_file), out, llm_spec=cfg.helm.llm,
                              settings=cfg.explanations.helm, seed=cfg.seed)
    for _, row in result.ablation_summary.iterrows():
        console.print(f"{row['trait']}: mean risk full {row['mean_risk_full']:.3f}, no spirogram "
                      f"{row['mean_risk_no_spiro']:.3f}, no record {row['mean_risk_no_text']:.3f}")
    for method, secs in result.seconds_per_participant.items():
        console.print(f"{method}: {secs:.1f} s per participant")
    for method, why in result.skipped.items():
        console.print(f"skipped {method}: {why}")
    console.print(f"{len(result.manifest)} artifacts listed in [bold]{out / 'index.json'}[/]")
