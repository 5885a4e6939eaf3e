"""``spirolm train helm`` and ``spirolm chat``: thin typer commands over :mod:`experiments.train_helm`.

The main CLI (``experiments/cli.py``) registers them::

    train_app.command("helm")(train_helm_command)
    app.command("chat")(chat_command)

and turns :class:`~signals.errors.SpirolmInputError` into one ``error:`` line with exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

console = Console()


def train_helm_command(
    cohort: Annotated[Path, typer.Option(help="Cohort directory.")],
    encoder: Annotated[Optional[str], typer.Option(help="Trained spirogram encoder (encoder.pt, dir or runs:/ URI).")] = None,
    embeddings: Annotated[Optional[Path], typer.Option(help="Precomputed eid + emb_* Parquet (instead of --encoder).")] = None,
    llm: Annotated[Optional[str], typer.Option(help="HF model id (already in the local HF cache) or local directory; default SmolLM2-135M-Instruct.")] = None,
    variant: Annotated[str, typer.Option(help="text (prompt-tuned) | text+spiro | tabmlp+spiro.")] = "text+spiro",
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("runs/helm"),
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 3,
    batch_size: Annotated[int, typer.Option(help="Participants per batch.")] = 8,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 2e-3,
    max_train: Annotated[Optional[int], typer.Option(help="Cap on training participants (CPU budget).")] = None,
    max_eval: Annotated[Optional[int], typer.Option(help="Cap on val/test participants.")] = None,
    soft_tokens: Annotated[int, typer.Option(help="Spirogram soft tokens k.")] = 4,
    projector: Annotated[str, typer.Option(help="Projector spec: linear | mlp<N>x_gelu.")] = "mlp2x_gelu",
    lora_r: Annotated[int, typer.Option(help="LoRA rank (0 = frozen LLM only; >0 trains on full sequences).")] = 0,
    tokens_per_trait: Annotated[bool, typer.Option(help="One set of k soft tokens per trait (else one shared set).")] = True,
    projector_init: Annotated[str, typer.Option(help="random | probe (start from a logistic-regression probe of the embeddings).")] = "probe",
    distill: Annotated[float, typer.Option(help="Weight of distilling the embedding probe's logits (0 = labels only).")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of every draw.")] = 0,
) -> None:
    """Train one HeLM variant (frozen LLM + projector) and print its validation AUROC and checkpoint."""
    from experiments.train_helm import HeLMTrainConfig, train_helm
    from llm_bridge.model import HeLMConfig

    cfg = HeLMTrainConfig(max_epochs=epochs, batch_size=batch_size, lr=lr, max_train=max_train, max_eval=max_eval,
                          distill_weight=distill, seed=seed)
    helm_cfg = HeLMConfig(num_soft_tokens=soft_tokens, projector=projector, lora_r=lora_r,
                          tokens_per_trait=tokens_per_trait, projector_init=projector_init)
    run = train_helm(cohort, encoder_ref=encoder, embeddings=embeddings, llm=llm, variant=variant, out_dir=out,
                     cfg=cfg, helm_cfg=helm_cfg)
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
    import torch

    from experiments.features import EMBEDDING_COLUMNS, load_embeddings
    from experiments.helm_data import read_helm_participants
    from llm_bridge.chat import chat_answer
    from llm_bridge.llm import configure_threads, load_llm
    from llm_bridge.model import HeLM
    from signals.errors import SpirolmInputError

    configure_threads()
    participants, _ = read_helm_participants(cohort, traits=())
    row = participants[participants["eid"] == eid]
    if row.empty:
        raise SpirolmInputError("participant not in the cohort", file=cohort, eid=eid)
    loaded = load_llm(llm)
    soft = None
    serializer = None
    if checkpoint is not None:
        helm = HeLM.load_checkpoint(checkpoint, loaded)
        serializer = helm.cfg.serializer
        if helm.projector is None:
            raise SpirolmInputError("checkpoint has no spirogram projector (variant text)", file=checkpoint)
        if embeddings is None:
            raise SpirolmInputError("--checkpoint needs --embeddings", field="embeddings")
        emb = load_embeddings(embeddings)
        hit = emb[emb["eid"] == eid]
        if hit.empty:
            raise SpirolmInputError("participant has no spirogram embedding", file=embeddings, eid=eid)
        with torch.no_grad():
            soft = helm.spirogram_tokens(torch.tensor(hit[list(EMBEDDING_COLUMNS)].to_numpy(), dtype=torch.float32))
    kwargs = {"serializer": serializer} if serializer is not None else {}
    console.print(chat_answer(loaded, row, question, soft_tokens=soft, max_new_tokens=max_new_tokens, **kwargs))


app = typer.Typer(help="HeLM commands.", no_args_is_help=True, pretty_exceptions_show_locals=False)
app.command("train-helm")(train_helm_command)
app.command("chat")(chat_command)
