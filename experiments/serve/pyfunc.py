"""HeLM as an MLflow ``pyfunc`` model: participants + raw blows in, QC status and risk per trait out.

Why a pyfunc: batch scoring, a model registry and serving all speak MLflow model URIs
(``models:/name/3``, ``runs:/<id>/helm_model``). The pyfunc bundles what is *ours* - the spirogram
encoder export (``encoder.pt``) and the HeLM checkpoint (``helm.pt``: projector weights, config and the
identity of the frozen LLM) - and only *references* the LLM (the embedded default SmolLM2, or a local
Hugging Face directory). LLM weights are hundreds of MB to GB and already live on the scoring machine;
the checkpoint's identity check (:meth:`llm_bridge.model.HeLM.load_checkpoint`) refuses a different LLM.

Input (one ``pandas.DataFrame``, one row per participant; see :data:`INPUT_COLUMNS`):

* ``eid`` - integer participant id (unique in the frame);
* covariates as in ``participants.parquet`` (``age``, ``sex``, ``height_cm``, ``bmi``,
  ``smoking_status``, ``pack_years``, ``ethnicity``, ``gli_ethnicity``, ``hay_fever_eczema``,
  ``parental_copd``, ``townsend``, ``pm25``). Missing columns or values are allowed: the record text
  says ``unknown`` and GLI z-scores are NaN;
* ``blows`` - the participant's blows of the baseline visit, a list whose items are either a volume
  series (integers, mL every 10 ms, index 0 = time 0: the ``volume_ml`` of ``blows.parquet``) or a
  raw UK Biobank field-3066 string. ``None`` / empty = no blows.

Output: ``eid``, ``risk_<trait>`` (float64, P(yes)/(P(yes)+P(no)) through the trait's validation-fitted
calibrator when the checkpoint has one) per trait, ``qc_status``
(``pass``/``warn``/``fail``) and ``qc_reason``, row-aligned with the input. Each participant goes
through the *same* code as a cohort import: :func:`biobank.cohort_qc.run_qc` (ATS/ERS QC, best blow,
spirometry scalars and GLI z-scores for the record text) → :func:`experiments.data.curves.build_curves`
→ :func:`experiments.encoder.embed.encode_curves` → :func:`experiments.helm.score.score_table`. A participant whose spirometry fails
QC keeps its row with NaN risks (spirogram variants) and the reason - never dropped.

Runtime options go through ``mlflow.pyfunc.load_model(uri, model_config={...})`` (see
:data:`DEFAULT_MODEL_CONFIG`): ``batch_size``, ``device`` (``auto``/``cpu``/``cuda``), ``precision``
(:mod:`llm_bridge.precision`; ``auto`` = bf16 where native), ``num_threads``, ``progress``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pyarrow
import torch
import transformers
from mlflow.models import ModelSignature
from mlflow.types import DataType
from mlflow.types.schema import AnyType, ColSpec, Schema

from biobank.build import qc_config_for
from biobank.cohort_qc import rejection_reason, run_qc
from biobank.schema import NUMERIC_COVARIATES, RECORD_COLUMNS
from experiments.data.curves import build_curves
from experiments.data.embeddings import EMBEDDING_COLUMNS
from experiments.data.predictions import risk_column
from experiments.encoder.embed import encode_curves, resolve_device
from experiments.encoder.export import load_encoder
from experiments.helm.datamodule import build_table
from experiments.helm.score import score_table
from llm_bridge.llm import ensure_llm, load_llm
from llm_bridge.model import HeLM
from signals.errors import SpirolmInputError
from signals.ukb3066 import parse_3066

log = logging.getLogger(__name__)

PYFUNC_FORMAT = "spirolm-helm-pyfunc-v1"
SPEC_FILE = "helm_pyfunc.json"
ARTIFACT_ENCODER = "encoder"
ARTIFACT_HELM = "helm"
ARTIFACT_SPEC = "spec"
BLOWS_COLUMN = "blows"
#: Participant columns the record text and QC use (all optional except ``eid`` and ``blows``).
INPUT_COLUMNS = ("eid", *RECORD_COLUMNS, BLOWS_COLUMN)
#: Runtime options accepted in ``model_config`` (defaults).
DEFAULT_MODEL_CONFIG: dict[str, Any] = {"batch_size": 16, "device": "auto", "precision": "auto", "num_threads": None,
                                        "progress": None}
TEXT_COVARIATES = tuple(c for c in RECORD_COLUMNS if c not in NUMERIC_COVARIATES)


def output_columns(traits: tuple[str, ...]) -> list[str]:
    """Columns :meth:`HeLMPyfunc.predict` returns, in order."""
    return ["eid", *(risk_column(t) for t in traits), "qc_status", "qc_reason"]


# ----------------------------------------------------------------------------- input preparation


def _blow_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Long blows table (``eid, instance, blow_index, volume_ml, qc_reason``) as :func:`run_qc` wants it.

    A blow that cannot be read becomes ``volume_ml=None`` with the importer's reason
    (:func:`biobank.cohort_qc.rejection_reason`), so one bad blow never hides the participant's other blows.
    """
    rows: list[dict[str, object]] = []
    for eid, blows in zip(frame["eid"].to_numpy(dtype=np.int64), frame[BLOWS_COLUMN].tolist()):
        if blows is None or (isinstance(blows, float) and math.isnan(blows)):
            continue
        if isinstance(blows, (str, bytes)) or not hasattr(blows, "__len__"):
            raise SpirolmInputError("'blows' must be a list of blows (volume series or field-3066 strings)",
                                    eid=int(eid), field=BLOWS_COLUMN)
        for j, blow in enumerate(blows):
            volume: np.ndarray | None = None
            reason = ""
            try:
                if isinstance(blow, str):
                    volume = parse_3066(blow, eid=int(eid), field=f"{BLOWS_COLUMN}[{j}]").volume_ml
                else:
                    arr = np.asarray(blow, dtype=np.float64)
                    if arr.ndim != 1 or not np.isfinite(arr).all() or (arr != np.round(arr)).any():
                        raise SpirolmInputError("volume series must be a 1-D list of finite integers (mL)")
                    volume = arr.astype(np.int32)
            except SpirolmInputError as exc:
                volume, reason = None, rejection_reason(exc)
            except (TypeError, ValueError) as exc:
                volume, reason = None, rejection_reason(SpirolmInputError(str(exc)))
            rows.append({"eid": int(eid), "instance": 0, "blow_index": j, "volume_ml": volume, "qc_reason": reason})
    cols = ["eid", "instance", "blow_index", "volume_ml", "qc_reason"]
    return pd.DataFrame(rows, columns=cols).astype({"eid": "int64", "instance": "int64", "blow_index": "int64"})


def _participant_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Covariates with fixed dtypes (absent columns become missing, never an error)."""
    out = pd.DataFrame({"eid": frame["eid"].to_numpy(dtype=np.int64)})
    for col in NUMERIC_COVARIATES:
        out[col] = pd.to_numeric(frame[col], errors="coerce").astype(float).to_numpy() if col in frame else np.nan
    for col in TEXT_COVARIATES:
        out[col] = frame[col].astype(object).where(frame[col].notna(), None).to_numpy() if col in frame else None
    return out


def check_input(frame: pd.DataFrame) -> None:
    """Refuse a frame the model cannot score (missing ``eid``/``blows``, duplicate or non-integer ids).

    Raises:
        SpirolmInputError: naming the column and the first offending participant.
    """
    if not isinstance(frame, pd.DataFrame):
        raise SpirolmInputError(f"HeLM pyfunc takes a pandas DataFrame, got {type(frame).__name__}")
    for col in ("eid", BLOWS_COLUMN):
        if col not in frame.columns:
            raise SpirolmInputError("column missing from the model input", field=col)
    eid = pd.to_numeric(frame["eid"], errors="coerce")
    bad = eid.isna() | (eid != np.round(eid))
    if bad.any():
        raise SpirolmInputError("participant id is not an integer", eid=frame["eid"][bad].iloc[0], field="eid")
    dup = eid[eid.duplicated()]
    if len(dup):
        raise SpirolmInputError("participant appears more than once in the model input", eid=int(dup.iloc[0]),
                                field="eid")


# ----------------------------------------------------------------------------- the model


class HeLMPyfunc(mlflow.pyfunc.PythonModel):
    """The pyfunc wrapper. See the module docstring for input and output."""

    def load_context(self, context: Any) -> None:
        """Load the encoder, the LLM it names (identity-checked) and the HeLM checkpoint."""
        spec = json.loads(Path(context.artifacts[ARTIFACT_SPEC]).read_text())
        if spec.get("format") != PYFUNC_FORMAT:
            raise SpirolmInputError(f"not a {PYFUNC_FORMAT} model", file=context.artifacts[ARTIFACT_SPEC])
        cfg = {**DEFAULT_MODEL_CONFIG, **(getattr(context, "model_config", None) or {})}
        device = resolve_device(cfg["device"])
        self.spec, self.batch_size, self.progress = spec, int(cfg["batch_size"]), cfg["progress"]
        self.device = device
        self.qc_config = qc_config_for(spec["qc_standard"])
        self.encoder = load_encoder(context.artifacts[ARTIFACT_ENCODER], map_location="cpu").to(device).eval()
        # The LLM identity hash is defined on the stored fp32 weights; the compute precision comes after.
        llm = ensure_llm(spec["llm"], cfg["num_threads"])
        self.helm = HeLM.load_checkpoint(context.artifacts[ARTIFACT_HELM], llm).to(device).eval()
        self.helm.set_precision(cfg["precision"])
        self.traits = tuple(self.helm.cfg.traits)

    # -- the three steps, each reusing the code a cohort import / training run uses

    def _qc(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        participants = _participant_frame(frame)
        blows = _blow_rows(frame)
        participants, blows, _ = run_qc(participants, blows, self.qc_config, progress=False)
        return participants, blows

    def _embed(self, participants: pd.DataFrame, blows: pd.DataFrame) -> tuple[pd.DataFrame, dict[int, str]]:
        """``eid + emb_*`` of participants with a best blow; curve problems become per-participant failures."""
        best = blows[blows["is_best"]].set_index("eid")["volume_ml"]
        eids = participants.loc[participants["eid"].isin(best.index), "eid"].to_numpy(dtype=np.int64)
        volumes = [best.loc[e] for e in eids]
        failed: dict[int, str] = {}
        if not len(eids):  # e.g. a chunk whose participants all failed QC
            return pd.DataFrame(columns=["eid", *EMBEDDING_COLUMNS]).astype({"eid": "int64"}), failed
        try:
            curves = build_curves(volumes, eids, self.encoder.cfg)
        except SpirolmInputError:  # isolate the offending participant(s); the rest are still scored
            keep, parts = [], []
            for e, v in zip(eids, volumes):
                try:
                    parts.append(build_curves([v], np.array([e]), self.encoder.cfg))
                    keep.append(e)
                except SpirolmInputError as exc:
                    failed[int(e)] = f"curve_error: {exc.problem}"
            eids = np.asarray(keep, dtype=np.int64)
            curves = np.concatenate(parts) if parts else np.zeros((0, len(self.encoder.cfg.channels),
                                                                   self.encoder.cfg.curve_points), np.float32)
        emb = encode_curves(self.encoder, curves)
        frame = pd.DataFrame(emb, columns=list(EMBEDDING_COLUMNS))
        frame.insert(0, "eid", eids)
        return frame, failed

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Score participants; see the module docstring for the columns."""
        check_input(model_input)
        frame = model_input.reset_index(drop=True)
        participants, blows = self._qc(frame)
        status = participants["qc_status"].astype(object).to_numpy().copy()
        reason = participants["qc_reason"].astype(object).to_numpy().copy()
        rows = participants.copy()
        for t in self.traits:  # build_table reads label columns; unknown at scoring time
            rows[t] = np.nan
        if self.helm.cfg.uses_spiro:
            emb, failed = self._embed(participants[participants["qc_status"] != "fail"], blows)
            for i, e in enumerate(participants["eid"].to_numpy()):
                if int(e) in failed:
                    status[i], reason[i] = "fail", failed[int(e)]
            rows = rows.merge(emb, on="eid", how="inner", validate="one_to_one")
        risks = np.full((len(frame), len(self.traits)), np.nan)
        if len(rows):
            scored = score_table(self.helm, build_table(self.helm, rows), self.batch_size, desc="HeLM")
            pos = pd.Index(participants["eid"]).get_indexer(scored["eid"])
            risks[pos] = scored[[risk_column(t) for t in self.traits]].to_numpy(dtype=np.float64)
        out = pd.DataFrame({"eid": participants["eid"].to_numpy(dtype=np.int64)})
        for j, t in enumerate(self.traits):
            out[risk_column(t)] = risks[:, j]
        out["qc_status"] = status.astype(str)
        out["qc_reason"] = pd.Series(reason).fillna("").astype(str).to_numpy()
        return out


# ----------------------------------------------------------------------------- save / log


def _check_parts(encoder_checkpoint: Path, helm_checkpoint: Path, llm: str | None) -> dict[str, Any]:
    """Load all three parts once so a mismatched bundle is refused when it is built, not when it is scored."""
    for path in (encoder_checkpoint, helm_checkpoint):
        if not Path(path).is_file():
            raise SpirolmInputError("model part not found", file=path)
    encoder = load_encoder(encoder_checkpoint)
    helm = HeLM.load_checkpoint(helm_checkpoint, load_llm(llm))
    if helm.cfg.uses_spiro and encoder.cfg.embedding_dim != helm.cfg.embedding_dim:
        raise SpirolmInputError(f"encoder writes {encoder.cfg.embedding_dim}-d embeddings but the HeLM projector "
                                f"reads {helm.cfg.embedding_dim}-d", file=encoder_checkpoint, field="embedding_dim")
    return {"traits": list(helm.cfg.traits), "variant": helm.cfg.variant, "llm_identity": helm.identity.to_dict(),
            "calibration": {t: c.method for t, c in helm.calibration.items()}}


def model_signature(traits: tuple[str, ...]) -> Any:
    """Input/output schema: ``eid`` and ``blows`` required (``blows`` is a ragged list, so ``AnyType``),
    covariates optional; outputs as :func:`output_columns`."""
    inputs = [ColSpec(DataType.long, "eid")]
    inputs += [ColSpec(DataType.double if c in NUMERIC_COVARIATES else DataType.string, c, required=False)
               for c in RECORD_COLUMNS]
    inputs.append(ColSpec(AnyType(), BLOWS_COLUMN))
    outputs = [ColSpec(DataType.long, "eid"), *(ColSpec(DataType.double, risk_column(t)) for t in traits),
               ColSpec(DataType.string, "qc_status"), ColSpec(DataType.string, "qc_reason")]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def _pip_requirements() -> list[str]:
    """Pinned requirements (explicit: MLflow's inference would import the model in a subprocess)."""
    return [f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__.split('+')[0]}",
            f"transformers=={transformers.__version__}", f"pandas=={pd.__version__}", f"numpy=={np.__version__}",
            f"pyarrow=={pyarrow.__version__}", "spirolm"]


def _prepare(encoder_checkpoint: str | Path, helm_checkpoint: str | Path, llm: str | None, qc_standard: str,
             workdir: Path) -> tuple[dict[str, str], dict[str, Any]]:
    if llm is not None and Path(llm).exists():
        llm = str(Path(llm).resolve())  # a reference, not a copy: the path must exist where it is scored
    meta = _check_parts(Path(encoder_checkpoint), Path(helm_checkpoint), llm)
    qc_config_for(qc_standard)
    spec = {"format": PYFUNC_FORMAT, "llm": llm, "qc_standard": qc_standard, **meta}
    spec_path = workdir / SPEC_FILE
    spec_path.write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
    artifacts = {ARTIFACT_ENCODER: str(encoder_checkpoint), ARTIFACT_HELM: str(helm_checkpoint),
                 ARTIFACT_SPEC: str(spec_path)}
    return artifacts, spec


def save_helm_pyfunc(path: str | Path, *, encoder_checkpoint: str | Path, helm_checkpoint: str | Path,
                     llm: str | None = None, qc_standard: str = "ats2005", overwrite: bool = False) -> Path:
    """Write HeLM as a local MLflow pyfunc model directory.

    Args:
        path: model directory to create (must not exist unless ``overwrite``).
        encoder_checkpoint: ``encoder.pt`` (:func:`experiments.encoder.export.save_encoder`).
        helm_checkpoint: ``helm.pt`` (:meth:`llm_bridge.model.HeLM.save_checkpoint`).
        llm: ``None`` for the embedded default SmolLM2, or a local Hugging Face directory (referenced, not copied).
        qc_standard: ATS/ERS edition of the QC the model applies (``ats2005`` or ``ats2019``).
        overwrite: replace an existing directory.

    Returns:
        ``path``.

    Raises:
        SpirolmInputError: a missing or unreadable part, or a checkpoint trained against another LLM.
    """
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise SpirolmInputError("model directory already exists (pass overwrite=True)", file=path)
        shutil.rmtree(path)
    with tempfile.TemporaryDirectory() as tmp:
        artifacts, spec = _prepare(encoder_checkpoint, helm_checkpoint, llm, qc_standard, Path(tmp))
        mlflow.pyfunc.save_model(str(path), python_model=HeLMPyfunc(), artifacts=artifacts,
                                 pip_requirements=_pip_requirements(), model_config=dict(DEFAULT_MODEL_CONFIG),
                                 signature=model_signature(tuple(spec["traits"])))
    return path


def log_helm_pyfunc(*, encoder_checkpoint: str | Path, helm_checkpoint: str | Path, llm: str | None = None,
                    name: str = "helm_model", registered_model_name: str | None = None,
                    qc_standard: str = "ats2005") -> str:
    """Log HeLM as a pyfunc into the active MLflow run (registering a version when asked).

    Params logged are model settings only (variant, traits, LLM name and hashes) - no participant data.

    Returns:
        The model URI (``models:/<registered_model_name>/<version>`` when registered, else the logged
        model's ``models:/<model_id>`` URI).

    Raises:
        SpirolmInputError: no active run, or see :func:`save_helm_pyfunc`.
    """
    run = mlflow.active_run()
    if run is None:
        raise SpirolmInputError("log_helm_pyfunc needs an active MLflow run (mlflow.start_run())")
    with tempfile.TemporaryDirectory() as tmp:
        artifacts, spec = _prepare(encoder_checkpoint, helm_checkpoint, llm, qc_standard, Path(tmp))
        info = mlflow.pyfunc.log_model(name=name, python_model=HeLMPyfunc(), artifacts=artifacts,
                                       pip_requirements=_pip_requirements(), model_config=dict(DEFAULT_MODEL_CONFIG),
                                       signature=model_signature(tuple(spec["traits"])),
                                       registered_model_name=registered_model_name)
    mlflow.log_params({f"{name}.variant": spec["variant"], f"{name}.traits": ",".join(spec["traits"]),
                       f"{name}.llm": spec["llm"] or "default", f"{name}.qc_standard": qc_standard,
                       **{f"{name}.llm_{k}": v for k, v in spec["llm_identity"].items() if k != "name"}})
    if registered_model_name and info.registered_model_version is not None:
        return f"models:/{registered_model_name}/{info.registered_model_version}"
    return info.model_uri


def model_config(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``DEFAULT_MODEL_CONFIG`` with ``overrides`` (unknown keys refused: a typo must not be ignored)."""
    extra = set(overrides or {}) - set(DEFAULT_MODEL_CONFIG)
    if extra:
        raise SpirolmInputError(f"unknown model_config key(s) {sorted(extra)}; known: {sorted(DEFAULT_MODEL_CONFIG)}",
                                field="model_config")
    return {**DEFAULT_MODEL_CONFIG, **(overrides or {})}
