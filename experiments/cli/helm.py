"""``spirolm train helm`` and ``spirolm chat``: thin typer commands over :mod:`experiments.helm`.

``train helm`` reads the same config tree as ``spirolm run`` (the ``helm`` section of a profile, a
``--config`` file, ``--set``); its flags are shortcuts for keys of that section, so the same settings
train the same model as the main job's HeLM stage.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich.console import Console

from experiments.cli.run_config import ConfigFile, Overrides, Profile, resolve
from experiments.data.embeddings import EMBEDDING_COLUMNS, load_embeddings
from experiments.data.participants import read_participants
from experiments.helm.train import train_helm
from llm_bridge.chat import chat_answer
from llm_bridge.llm import ensure_llm
from llm_bridge.model import HeLM, HeLMConfig
from signals.errors import SpirolmInputError

console = Console()


def train_helm_command(
    cohort: Annotated[Path, typer.Option(help="Cohort directory.")],
    encoder: Annotated[Optional[str], typer.Option(help="Trained spirogram encoder (encoder.pt, dir or runs:/ URI).")] = None,
    embeddings: Annotated[Optional[Path], typer.Option(help="Precomputed eid + emb_* Parquet (instead of --encoder).")] = None,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("runs/helm"),
    profile: Profile = "default",
    config: ConfigFile = None,
    overrides: Overrides = None,
    llm: Annotated[Optional[str], typer.Option(help="Local HF directory of the LLM [helm.llm]; default SmolLM2-135M-Instruct.")] = None,
    variant: Annotated[str, typer.Option(help="text (prompt-tuned) | text+spiro | tabmlp+spiro.")] = "text+spiro",
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs [helm.train.max_epochs].")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Participants per batch [helm.train.batch_size].")] = None,
    lr: Annotated[Optional[float], typer.Option(help="AdamW learning rate [helm.train.lr].")] = None,
    max_train: Annotated[Optional[int], typer.Option(help="Training participants [helm.train.max_train].")] = None,
    max_val: Annotated[Optional[int], typer.Option(help="Validation participants [helm.train.max_val].")] = None,
    max_eval: Annotated[Optional[int], typer.Option(help="Test participants [helm.train.max_eval].")] = None,
    distill: Annotated[Optional[float], typer.Option(help="Probe-distillation weight [helm.train.distill_weight].")] = None,
    soft_tokens: Annotated[Optional[int], typer.Option(help="Spirogram soft tokens k [helm.model.num_soft_tokens].")] = None,
    projector: Annotated[Optional[str], typer.Option(help="Projector spec linear | mlp<N>x_gelu [helm.model.projector].")] = None,
    lora_r: Annotated[Optional[int], typer.Option(help="LoRA rank; >0 trains on full sequences [helm.model.lora_r].")] = None,
    tokens_per_trait: Annotated[Optional[bool], typer.Option(help="One set of soft tokens per trait [helm.model.tokens_per_trait].")] = None,
    projector_init: Annotated[Optional[str], typer.Option(help="random | probe | probe+features [helm.model.projector_init].")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of every draw [seed].")] = None,
) -> None:
    """Train one HeLM variant (frozen LLM + projector) and print its validation AUROC and checkpoint."""
    cfg = resolve(profile, config, overrides, section="helm", flags={
        "helm.llm": llm, "helm.train.max_epochs": epochs, "helm.train.batch_size": batch_size, "helm.train.lr": lr,
        "helm.train.max_train": max_train, "helm.train.max_val": max_val, "helm.train.max_eval": max_eval,
        "helm.train.distill_weight": distill, "helm.model.num_soft_tokens": soft_tokens,
        "helm.model.projector": projector, "helm.model.lora_r": lora_r,
        "helm.model.tokens_per_trait": tokens_per_trait, "helm.model.projector_init": projector_init, "seed": seed})
    model = dataclasses.replace(cfg.helm.model, variant=variant)
    run = train_helm(cohort, encoder_ref=encoder, embeddings=embeddings, llm=cfg.helm.llm, out_dir=out,
                     cfg=cfg.helm.train, helm_cfg=model, traits=cfg.traits, seed=cfg.seed,
                     tracking_uri=cfg.tracking.tracking_uri)
    console.print(f"{run.method}: best val AUROC {run.best_val_auroc:.3f} (epoch {run.best_epoch}), "
                  f"{run.seconds:.0f} s, {run.seconds_per_step:.2f} s/step")
    console.print(f"checkpoint: [bold]{run.checkpoint}[/]")


def chat_command(
    question: Annotated[str, typer.Argument(help="Free-text question about the participant.")],
    cohort: Annotated[Path, typer.Option(help="Cohort directory.")],
    eid: Annotated[int, typer.Option(help="Participant id.")],
    llm: Annotated[Optional[str], typer.Option(help="LLM (default SmolLM2-135M-Instruct; use an instruction-tuned model).")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="Trained text+spiro helm.pt to add the spirogram tokens.")] = None,
    embeddings: Annotated[Optional[Path], typer.Option(help="eid + emb_* Parquet (needed with --checkpoint).")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Answer length cap.")] = 64,
) -> None:
    """Answer a free-text question grounded in one participant's record (and spirogram tokens).

    Meaningful only with an instruction-tuned LLM; a 135M model gives fluent, not reliable, answers.
    """
    participants, _ = read_participants(cohort, traits=())
    row = participants[participants["eid"] == eid]
    if row.empty:
        raise SpirolmInputError("participant not in the cohort", file=cohort, eid=eid)
    loaded = ensure_llm(llm)
    helm = HeLM(loaded, HeLMConfig(variant="text"))  # record only, unless a trained graft is given
    embedding = None
    if checkpoint is not None:
        helm = HeLM.load_checkpoint(checkpoint, loaded)
        if helm.projector is None:
            raise SpirolmInputError("checkpoint has no spirogram projector (variant text)", file=checkpoint)
        if embeddings is None:
            raise SpirolmInputError("--checkpoint needs --embeddings", field="embeddings")
        emb = load_embeddings(embeddings)
        hit = emb[emb["eid"] == eid]
        if hit.empty:
            raise SpirolmInputError("participant has no spirogram embedding", file=embeddings, eid=eid)
        embedding = torch.tensor(hit[list(EMBEDDING_COLUMNS)].to_numpy(), dtype=torch.float32)
    console.print(chat_answer(helm, row, question, embedding=embedding, max_new_tokens=max_new_tokens))


app = typer.Typer(help="HeLM commands.", no_args_is_help=True, pretty_exceptions_show_locals=False)
app.command("train-helm")(train_helm_command)
app.command("chat")(chat_command)
