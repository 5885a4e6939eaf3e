"""The exported encoder (``encoder.pt``): save, and load back safely from a file, directory or MLflow URI.

Why not a Lightning checkpoint: it carries optimizer and loop state, and consumers (the LLM bridge,
``embed``, scoring) only need weights that load with ``weights_only=True`` plus a way to refuse a file
that does not match the code (an architecture fingerprint).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import mlflow
import torch

from experiments.common.tracking import resolve_tracking_uri
from signals.encoder import EncoderConfig, SpiroEncoder
from signals.errors import SpirolmInputError

FORMAT = "spirolm-encoder/1"
MODEL_FILE = "encoder.pt"
CONFIG_FILE = "encoder.json"
ARTIFACT_DIR = "encoder"  # MLflow artifact path: runs:/<run_id>/encoder


def save_encoder(net: SpiroEncoder, directory: str | Path) -> Path:
    """Write ``encoder.pt`` (state_dict + config JSON + fingerprint) and a readable ``encoder.json``."""
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
