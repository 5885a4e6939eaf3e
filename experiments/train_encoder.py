"""Train the spirogram encoder, export it, load it back, and embed a cohort.

Library functions (the CLI in ``experiments/cli_encoder.py`` is a thin wrapper):

* :func:`load_train_config` - typed, strictly validated config from ``configs/encoder.yaml``, a
  profile, a user YAML file and ``key.path=value`` overrides (the project's config style, see
  ``experiments/config.py``).
* :func:`train_encoder` - Lightning training (early stopping and best checkpoint on ``val/loss``),
  MLflow logging (params, per-epoch metrics, best checkpoint, exported encoder, validation ROC plot),
  test-split metrics and predictions keyed by ``eid``.
* :func:`save_encoder` / :func:`load_encoder` - the exported ``encoder.pt``: a plain state_dict plus
  config JSON and an architecture fingerprint, read with ``torch.load(weights_only=True)``; ``REF``
  may be a file, a directory or an MLflow artifact URI such as ``runs:/<run_id>/encoder``.
* :func:`embed_cohort` - ``eid`` + 128 embedding columns for every QC-passing participant, streamed
  in batches to Parquet.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError
from tqdm.auto import tqdm

from experiments.encoder_data import EncoderDataModule, build_curves, check_best_blow_coverage, iter_best_blows, read_participants
from experiments.encoder_module import EncoderModule
from signals.encoder import EncoderConfig, SpiroEncoder
from experiments.config import deep_merge, parse_yaml_mapping
from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)

_STRICT = ConfigDict(extra="forbid")
PROFILES = ("default", "smoke", "full")
FORMAT = "spirolm-encoder/1"
MODEL_FILE = "encoder.pt"
CONFIG_FILE = "encoder.json"
ARTIFACT_DIR = "encoder"  # MLflow artifact path: runs:/<run_id>/encoder


# ----------------------------------------------------------------------------------------------
# Typed configuration


@dataclass(frozen=True)
class ModelSection:
    """Architecture knobs; see :class:`signals.encoder.EncoderConfig` (traits come from the data)."""

    __pydantic_config__ = _STRICT
    # Defaults come from EncoderConfig (one source for the architecture); names/order checked there too.
    channels: tuple[str, ...] = EncoderConfig.channels
    stem_filters: tuple[int, int, int] = EncoderConfig.stem_filters
    stage_filters: tuple[int, ...] = EncoderConfig.stage_filters
    blocks_per_stage: int = EncoderConfig.blocks_per_stage
    kernel_size: int = EncoderConfig.kernel_size
    embedding_dim: int = EncoderConfig.embedding_dim
    head_dims: tuple[int, ...] = EncoderConfig.head_dims
    width_multiplier: float = 0.25  # CPU default profile; the paper's full width (EncoderConfig) is 1.0


@dataclass(frozen=True)
class DataSection:
    """Which labels and how the cohort is batched."""

    __pydantic_config__ = _STRICT
    traits: tuple[str, ...] | None = None  # None = every trait of the cohort
    batch_size: int = 256
    eval_batch_size: int = 1024
    num_workers: int = 0


@dataclass(frozen=True)
class OptimSection:
    """AdamW + reduce-on-plateau."""

    __pydantic_config__ = _STRICT
    lr: float = 2e-3
    weight_decay: float = 1e-4
    pos_weight: bool = False
    lr_patience: int = 2


@dataclass(frozen=True)
class TrainerSection:
    """Lightning Trainer settings."""

    __pydantic_config__ = _STRICT
    max_epochs: int = 15
    patience: int = 4
    accelerator: Literal["auto", "cpu", "cuda", "gpu"] = "auto"
    precision: str = "auto"  # auto: bf16-mixed on CUDA, 32-true on CPU
    compile: bool = False
    fast_dev_run: bool = False
    limit_train_batches: float = 1.0
    threads: int | None = None


@dataclass(frozen=True)
class TrackingSection:
    """MLflow: where and under which experiment name."""

    __pydantic_config__ = _STRICT
    enabled: bool = True
    experiment: str = "spirolm-encoder"
    run_name: str | None = None
    tracking_uri: str | None = None


@dataclass(frozen=True)
class TrainEncoderConfig:
    """Everything ``spirolm train encoder`` needs besides the cohort and output directory."""

    __pydantic_config__ = _STRICT
    seed: int = 0
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    trainer: TrainerSection = field(default_factory=TrainerSection)
    tracking: TrackingSection = field(default_factory=TrackingSection)

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-ready dict (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def parse_override(text: str) -> dict[str, Any]:
    """``"trainer.max_epochs=3"`` -> ``{"trainer": {"max_epochs": 3}}`` (value parsed as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise SpirolmInputError(f"override {text!r} must look like key.path=value", field=text)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise SpirolmInputError(f"override value {raw!r} is not valid YAML", field=key) from None
    out: dict[str, Any] = value
    for part in reversed(key.strip().split(".")):
        out = {part: out}
    return out


def load_train_config(
    config_file: str | Path | None = None, overrides: Sequence[str] = (), profile: str = "default"
) -> TrainEncoderConfig:
    """Defaults (``configs/encoder.yaml``) <- profile <- user YAML file <- ``key.path=value`` overrides.

    Raises:
        SpirolmInputError: unknown profile, unreadable file, unknown key or wrong type (naming the
            file and the key path, e.g. ``trainer.max_epochs``).
    """
    base = parse_yaml_mapping((resources.files("experiments") / "configs" / "encoder.yaml").read_text(), "encoder.yaml")
    profiles = base.pop("profiles", {})
    if profile not in profiles:
        raise SpirolmInputError(f"unknown encoder profile {profile!r}; choose one of {', '.join(profiles)}", field="profile")
    data = deep_merge(base, profiles[profile] or {})
    label = f"encoder.yaml (profile {profile})"
    if config_file is not None:
        path = Path(config_file)
        try:
            text = path.read_text()
        except OSError as exc:
            raise SpirolmInputError(f"cannot read config: {exc.strerror}", file=path) from None
        data = deep_merge(data, parse_yaml_mapping(text, str(path)))
        label = str(path)
    for item in overrides:
        data = deep_merge(data, parse_override(item))
    try:
        return TypeAdapter(TrainEncoderConfig).validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise SpirolmInputError(f"invalid encoder config: {problems}", file=label) from None


def encoder_config(cfg: TrainEncoderConfig, traits: Sequence[str]) -> EncoderConfig:
    """The network's architecture config for the resolved traits."""
    return EncoderConfig(traits=tuple(traits), **dataclasses.asdict(cfg.model))


# ----------------------------------------------------------------------------------------------
# Export / load


def save_encoder(net: SpiroEncoder, directory: str | Path) -> Path:
    """Write ``encoder.pt`` (state_dict + config JSON + fingerprint) and a readable ``encoder.json``.

    Why not a Lightning checkpoint: it carries optimizer and loop state, and consumers (LLM bridge,
    ``embed``) only need weights that load with ``weights_only=True`` and a way to refuse a file that
    does not match the code.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "config": net.cfg.to_dict(), "fingerprint": net.fingerprint()}
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    torch.save({"format": FORMAT, "config_json": json.dumps(meta["config"]), "fingerprint": meta["fingerprint"],
                "state_dict": state}, directory / MODEL_FILE)
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return directory / MODEL_FILE


def _resolve_ref(ref: str | Path) -> Path:
    """A local file/dir, or an MLflow artifact URI (``runs:/...``, ``models:/...``, ``mlflow-artifacts:/...``)."""
    text = str(ref)
    if text.startswith(("runs:/", "models:/")) or "://" in text or text.startswith("mlflow-artifacts:"):
        import mlflow

        from experiments.tracking import resolve_tracking_uri

        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=text, tracking_uri=resolve_tracking_uri())
        except Exception as exc:  # MLflow raises several types (MlflowException, OSError, ...)
            raise SpirolmInputError(f"cannot fetch encoder from MLflow: {exc}", file=text) from None
        path = Path(local)
    else:
        path = Path(text)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise SpirolmInputError("encoder file not found (expected encoder.pt or a directory holding it)", file=path)
    return path


def load_encoder(ref: str | Path, *, expected: EncoderConfig | None = None, map_location: str = "cpu") -> SpiroEncoder:
    """Load an exported encoder safely (``weights_only=True``) and check it matches this code.

    Args:
        ref: ``encoder.pt``, a directory containing it, or an MLflow URI (``runs:/<id>/encoder``).
        expected: if given, the file's channels, curve length and embedding width must match it
            (e.g. an LLM bridge built for 128-d embeddings of flow-volume curves).
        map_location: device for the tensors.

    Returns:
        The network in eval mode.

    Raises:
        SpirolmInputError: not a spirolm encoder file, another architecture (fingerprint or state_dict
            mismatch), or a mismatch with ``expected``.
    """
    path = _resolve_ref(ref)
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise SpirolmInputError(f"not a loadable encoder file (weights_only load refused it: {str(exc)[:200]})", file=path) from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT or "state_dict" not in blob:
        raise SpirolmInputError(
            f"not a spirolm encoder export (expected format {FORMAT!r}; a Lightning .ckpt or another model's "
            "weights? export with `spirolm train encoder`)", file=path,
        )
    try:
        cfg = EncoderConfig.from_dict(json.loads(blob["config_json"]))
    except (json.JSONDecodeError, TypeError) as exc:
        raise SpirolmInputError(f"encoder config in the file is unreadable: {exc}", file=path) from None
    net = SpiroEncoder(cfg)
    if net.fingerprint() != blob.get("fingerprint"):
        raise SpirolmInputError(
            f"encoder was written for another architecture (file fingerprint {blob.get('fingerprint')}, "
            f"this code builds {net.fingerprint()} for the same config); retrain or use the matching spirolm version",
            file=path,
        )
    try:
        net.load_state_dict(blob["state_dict"], strict=True)
    except RuntimeError as exc:
        raise SpirolmInputError(f"encoder weights do not match the architecture: {str(exc)[:300]}", file=path) from None
    if expected is not None:
        for name in ("channels", "curve_points", "embedding_dim"):
            if getattr(cfg, name) != getattr(expected, name):
                raise SpirolmInputError(
                    f"encoder {name} is {getattr(cfg, name)!r}, expected {getattr(expected, name)!r}", file=path, field=name
                )
    return net.eval()


# ----------------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_encoder` produced.

    Attributes:
        model_path: the exported ``encoder.pt``.
        model_ref: ``runs:/<run_id>/encoder`` when tracked in MLflow, else ``model_path`` as a string.
        checkpoint: best Lightning checkpoint (for resuming), ``None`` in ``fast_dev_run``.
        run_id: MLflow run id or ``None``.
        traits: trait heads trained.
        metrics: final logged metrics (``val/...`` of the best epoch, ``test/...``).
        predictions: Parquet with ``eid``, ``split`` and ``risk_<trait>`` for val and test.
        epochs: epochs run; seconds: wall time of ``fit``.
    """

    model_path: Path
    model_ref: str
    checkpoint: Path | None
    run_id: str | None
    traits: tuple[str, ...]
    metrics: dict[str, float]
    predictions: Path
    epochs: int
    seconds: float


def _trainer_kwargs(cfg: TrainerSection) -> dict[str, Any]:
    cuda = torch.cuda.is_available() and cfg.accelerator in ("auto", "cuda", "gpu")
    precision = cfg.precision if cfg.precision != "auto" else ("bf16-mixed" if cuda else "32-true")
    return {
        "accelerator": "gpu" if cuda else "cpu",
        "devices": 1,
        "precision": precision,
        # Bit-identical reruns on CPU; on GPU some cuDNN kernels have no deterministic variant.
        "deterministic": True if not cuda else "warn",
        "max_epochs": cfg.max_epochs,
        "fast_dev_run": cfg.fast_dev_run,
        "limit_train_batches": cfg.limit_train_batches,
    }


def _mlflow_logger(cfg: TrainEncoderConfig, out_dir: Path) -> Any:
    if not cfg.tracking.enabled or cfg.trainer.fast_dev_run:
        return None
    from experiments.tracking import lightning_mlflow_logger

    return lightning_mlflow_logger(cfg.tracking.experiment, cfg.tracking.run_name or "encoder", cfg.tracking.tracking_uri)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def _predict(module: EncoderModule, dm: EncoderDataModule, split: str, device: torch.device) -> pd.DataFrame:
    """Per-participant probabilities for one split (plain loop: no Trainer state to reset)."""
    ds = dm.dataset(split)
    module = module.to(device).eval()
    probs, eids = [], []
    with torch.no_grad():
        for start in range(0, len(ds), dm.eval_batch_size):
            curves, _, eid = ds[start:start + dm.eval_batch_size]
            probs.append(module(curves.to(device)).float().cpu().numpy())
            eids.append(eid.numpy())
    p = np.concatenate(probs) if probs else np.empty((0, len(dm.traits)), np.float32)
    df = pd.DataFrame({"eid": np.concatenate(eids) if eids else np.empty(0, np.int64), "split": split})
    for k, t in enumerate(dm.traits):
        df[f"risk_{t}"] = p[:, k]
    return df


def plot_val_roc(pred: pd.DataFrame, dm: EncoderDataModule, path: Path) -> Path:
    """Validation ROC curves, one line per trait, AUROC in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    val = dm.table.subset("val")  # type: ignore[union-attr]
    fig, ax = plt.subplots(figsize=(5, 5))
    for k, t in enumerate(dm.traits):
        y = val.labels[:, k]
        seen = ~np.isnan(y)
        score = pred[f"risk_{t}"].to_numpy()[seen]
        fpr, tpr, _ = roc_curve(y[seen], score)
        ax.plot(fpr, tpr, label=f"{t} (AUROC {roc_auc_score(y[seen], score):.3f}, n={int(seen.sum())})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="Spirogram encoder, validation split")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def train_encoder(
    cohort_dir: str | Path, out_dir: str | Path, cfg: TrainEncoderConfig | None = None, *, progress: bool | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train the encoder on a cohort's train split, select on val, report test, export the best model.

    Args:
        cohort_dir: cohort directory (docs/design.md tables).
        out_dir: receives ``checkpoints/``, ``encoder/encoder.pt``, ``predictions.parquet``, ``val_roc.png``.
        cfg: configuration (default: :func:`load_train_config()`).
        progress: Lightning progress bar (``None``: on for a terminal only).
        resume: continue from ``out_dir/checkpoints/last.ckpt`` when it exists (an interrupted run
            into the same directory with the same config; the caller guarantees that).

    Raises:
        SpirolmInputError: bad cohort (missing best blows, NaN curves, a trait without positives in
            train or val, ...), naming participant/trait/file.
    """
    cfg = cfg or load_train_config()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    dm = EncoderDataModule(cohort_dir, cfg.model.channels, cfg.data.traits, cfg.data.batch_size,
                           cfg.data.eval_batch_size, cfg.data.num_workers, seed=cfg.seed)
    dm.setup("fit")
    net_cfg = encoder_config(cfg, dm.traits)
    mean, std = dm.scaling
    module = EncoderModule(
        net_cfg.to_dict(), input_mean=mean.tolist(), input_std=std.tolist(), lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay, pos_weight=dm.pos_weight.tolist() if cfg.optim.pos_weight else None,
        lr_patience=cfg.optim.lr_patience, compile=cfg.trainer.compile,
    )
    logger = _mlflow_logger(cfg, out_dir)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="best-{epoch:02d}",
                                               monitor="val/loss", mode="min", save_top_k=1, save_last=True)
    stop = L.pytorch.callbacks.EarlyStopping(monitor="val/loss", mode="min", patience=cfg.trainer.patience)
    show = progress if progress is not None else bool(os.isatty(2))
    trainer = L.Trainer(**_trainer_kwargs(cfg.trainer), logger=logger or False, callbacks=[ckpt, stop],
                        default_root_dir=out_dir, enable_progress_bar=show, enable_model_summary=show,
                        log_every_n_steps=1, num_sanity_val_steps=0)
    if logger is not None:
        logger.log_hyperparams(_flat({"config": cfg.to_dict()}) | {"traits": ",".join(dm.traits),
                                                                    "n_params": module.net.num_params()})
    last = out_dir / "checkpoints" / "last.ckpt"
    resume_from = str(last) if resume and last.exists() else None
    if resume_from:  # an interrupted build of the same stage: continue its optimizer, epoch and callbacks
        log.info("encoder: resuming training from %s", last)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=resume_from)
    seconds = time.perf_counter() - t0

    best = Path(ckpt.best_model_path) if ckpt.best_model_path else None
    if best is not None:  # reload the best epoch's weights (safe load: plain types only)
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    # Metrics of the selected (best) weights, not of the last epoch early stopping ran.
    metrics = {k: float(v) for k, v in trainer.validate(module, datamodule=dm, verbose=False)[0].items()}
    if (dm.table.split == "test").any():  # type: ignore[union-attr]
        metrics.update({k: float(v) for k, v in trainer.test(module, datamodule=dm, verbose=False)[0].items()})

    model_path = save_encoder(module.net, out_dir / ARTIFACT_DIR)
    device = next(module.parameters()).device
    pred = pd.concat([_predict(module, dm, s, device) for s in ("val", "test")], ignore_index=True)
    pred_path = out_dir / "predictions.parquet"
    pred.to_parquet(pred_path, index=False)
    roc_path = plot_val_roc(pred[pred["split"] == "val"], dm, out_dir / "val_roc.png")
    (out_dir / "encoder_config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    run_id = None
    model_ref = str(model_path)
    if logger is not None:
        run_id = logger.run_id
        client = logger.experiment
        client.log_artifacts(run_id, str(out_dir / ARTIFACT_DIR), ARTIFACT_DIR)
        # predictions.parquet stays local: participant ids are not logged to MLflow (as mlflow_utils).
        for path in (roc_path, out_dir / "encoder_config.yaml"):
            client.log_artifact(run_id, str(path))
        if best is not None:
            client.log_artifact(run_id, str(best), "checkpoints")
        logger.finalize("success")
        model_ref = f"runs:/{run_id}/{ARTIFACT_DIR}"
    log.info("encoder trained in %.1f s (%d epochs); %s", seconds, trainer.current_epoch, model_ref)
    return TrainResult(model_path, model_ref, best, run_id, dm.traits, metrics, pred_path,
                       int(trainer.current_epoch), seconds)


# ----------------------------------------------------------------------------------------------
# Embedding export


def embedding_columns(dim: int) -> list[str]:
    """``emb_000 .. emb_<dim-1>``."""
    return [f"emb_{i:03d}" for i in range(dim)]


def embed_cohort(
    model_ref: str | Path,
    cohort_dir: str | Path,
    out_path: str | Path,
    batch_size: int = 1024,
    progress: bool | None = True,
    device: str = "auto",
) -> Path:
    """Write ``eid`` + ``emb_000..`` (float32) for every participant with ``qc_status != "fail"``.

    Streams ``blows.parquet`` in row batches and writes Parquet row groups as it goes (to a temporary
    file, renamed at the end, so a failure never leaves a half-written table behind).

    Args:
        model_ref: see :func:`load_encoder`.
        cohort_dir: cohort directory.
        out_path: output ``.parquet``.
        batch_size: curves per forward pass.
        progress: tqdm bar (``None``: only on a terminal).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.

    Returns:
        ``out_path``.

    Raises:
        SpirolmInputError: bad model reference, a QC-passing participant without a best blow, bad curves.
    """
    if batch_size < 1:
        raise SpirolmInputError(f"batch_size must be >= 1, got {batch_size}", field="batch_size")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    net = load_encoder(model_ref, map_location="cpu").to(dev)
    cohort_dir, out_path = Path(cohort_dir), Path(out_path)
    participants, _ = read_participants(cohort_dir, traits=())
    eids = participants["eid"].to_numpy(dtype=np.int64)
    check_best_blow_coverage(cohort_dir, eids)
    cols = embedding_columns(net.cfg.embedding_dim)
    schema = pa.schema([("eid", pa.int64())] + [(c, pa.float32()) for c in cols])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".partial")
    written = 0
    blows_file = cohort_dir / "blows.parquet"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
    try:
        with pq.ParquetWriter(tmp, schema) as writer, tqdm(total=len(eids), unit="participant", desc="embed",
                                                           disable=None if progress is None else not progress) as bar:
            for batch_eids, volumes in iter_best_blows(cohort_dir, eids, batch_size=batch_size):
                curves = build_curves(volumes, batch_eids, net.cfg, file=blows_file)
                with torch.no_grad(), autocast:
                    emb = net.encode(torch.from_numpy(curves).to(dev)).float().cpu().numpy()
                table = pa.Table.from_arrays([pa.array(batch_eids)] + [pa.array(emb[:, j]) for j in range(emb.shape[1])],
                                             schema=schema)
                writer.write_table(table)
                written += len(batch_eids)
                bar.update(len(batch_eids))
        if written != len(eids):  # coverage was checked up front; this guards the streaming logic
            raise SpirolmInputError(f"embedded {written} participants but {len(eids)} passed QC", file=blows_file)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("embedded %d participants -> %s", written, out_path)
    return out_path
