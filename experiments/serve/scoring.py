"""Batch scoring of a cohort with a HeLM pyfunc model: chunked, resumable, byte-reproducible.

Why this shape: scoring 500,000 participants with an LLM takes hours to days, on machines that get
pre-empted and disks that fill up. So the work is cut into fixed chunks of participants (sorted by
``eid``, so chunk boundaries depend only on the cohort and ``chunk_size``), each chunk becomes one Parquet
shard written to a temporary name and ``os.replace``\\ d into place (a shard is either complete or absent),
and a manifest records what every shard must contain (row count, sha256). A re-run with the same
arguments keeps every shard that verifies and recomputes only missing or corrupt ones, so a run killed at
any point resumes with no lost and no duplicated rows; a re-run with different arguments into the same
directory is refused unless ``overwrite``.

Output directory::

    out_dir/manifest.json            settings (input fingerprint, model URI/version, chunk and batch size, ...)
                                     + one entry per finished shard (rows, sha256)
    out_dir/shards/part-00000.parquet  eid, risk_<trait>..., model_uri, model_version, qc_status, qc_reason
    out_dir/_cohort/                 the imported cohort when the source is a UKB export file (cached)
    out_dir/_model/                  the model fetched from MLflow (models:/, runs:/ URIs)

:func:`read_scores` returns the whole result as one DataFrame. Memory is bounded by one chunk: the
participants and blows of a chunk are read with Parquet predicate pushdown (``eid in chunk``), never the
whole blows table. Engines: ``local`` (one process) and ``ray`` (:mod:`experiments.serve.ray_engine`, Ray Data
actors on a local or remote cluster) produce interchangeable shards.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from mlflow import MlflowClient
from tqdm.auto import tqdm

from biobank.build import import_export
from experiments.common.tracking import check_tracking_server, resolve_tracking_uri
from experiments.data.predictions import risk_column
from experiments.serve.chunks import ScoreConfig, chunk_bounds, chunk_input, participant_order
from experiments.serve.pyfunc import SPEC_FILE, model_config
from experiments.serve.ray_engine import score_chunks_ray
from llm_bridge.llm import file_sha256
from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SHARD_DIR = "shards"
COHORT_CACHE = "_cohort"
MODEL_CACHE = "_model"
MANIFEST_FORMAT = "spirolm-scores-v1"


@dataclass
class ScoreResult:
    """What :func:`score_cohort` did.

    Attributes:
        out_dir: result directory; ``shards`` the shard files in chunk order.
        n_participants: rows in the result (= participants in the cohort).
        n_scored: rows with every risk present; ``n_qc_fail``: rows with ``qc_status == "fail"``.
        n_chunks: shards; ``n_reused`` kept from an earlier run; ``n_computed`` computed now
            (``n_recomputed`` of them replaced a corrupt shard).
        model_uri, model_version: as written in every row.
        seconds: wall time of this call; ``engine`` which engine ran.
    """

    out_dir: Path
    shards: list[Path]
    n_participants: int
    n_scored: int
    n_qc_fail: int
    n_chunks: int
    n_reused: int
    n_computed: int
    n_recomputed: int
    model_uri: str
    model_version: str
    seconds: float
    engine: str
    traits: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to load: where it came from and a local MLflow model directory."""

    uri: str
    version: str
    local_path: Path
    traits: tuple[str, ...]


# ----------------------------------------------------------------------------- hashing and files


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _disk_error(exc, path) from None


def _disk_error(exc: OSError, path: Path) -> SpirolmInputError:
    if exc.errno == errno.ENOSPC:
        return SpirolmInputError("disk full while writing scores; finished shards are kept - free space and re-run "
                                 "the same command to resume", file=path)
    return SpirolmInputError(f"cannot write scores ({exc.strerror or exc}); finished shards are kept - fix it and "
                             "re-run the same command to resume", file=path)


def shard_schema(traits: Sequence[str]) -> pa.Schema:
    """Arrow schema of a shard (fixed, so every engine writes the same bytes)."""
    return pa.schema([("eid", pa.int64()), *((risk_column(t), pa.float64()) for t in traits),
                      ("model_uri", pa.string()), ("model_version", pa.string()),
                      ("qc_status", pa.string()), ("qc_reason", pa.string())])


def write_shard(frame: pd.DataFrame, path: Path, traits: Sequence[str]) -> str:
    """Write one shard atomically (temporary name, fsync, ``os.replace``) and return its sha256.

    Raises:
        SpirolmInputError: disk full or another write error; no partial shard is left behind.
    """
    schema = shard_schema(traits)
    table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False).replace_schema_metadata(None)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        digest = file_sha256(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _disk_error(exc, path) from None
    return digest


# ----------------------------------------------------------------------------- source and model


def _is_cohort_dir(path: Path) -> bool:
    return path.is_dir() and (path / "participants.parquet").is_file()


def cohort_fingerprint(cohort_dir: Path) -> str:
    """sha256 over the two cohort tables (what scoring reads): a changed cohort is never mixed with old shards."""
    h = hashlib.sha256()
    for name in ("participants.parquet", "blows.parquet"):
        path = cohort_dir / name
        if not path.is_file():
            raise SpirolmInputError(f"cohort file is missing (expected {name})", file=path)
        h.update(name.encode() + b"\0" + file_sha256(path).encode())
    return h.hexdigest()


def resolve_source(source: str | Path, out_dir: Path, *, progress: bool | None = None) -> Path:
    """A cohort directory as is, or a UKB export file imported into ``out_dir/_cohort`` (cached by its sha256)."""
    src = Path(source)
    if _is_cohort_dir(src):
        return src
    if src.is_dir():
        raise SpirolmInputError("not a cohort directory (no participants.parquet)", file=src)
    if not src.is_file():
        raise SpirolmInputError("cohort not found (expected a cohort directory or a UKB export file)", file=src)
    digest = file_sha256(src)
    target = out_dir / COHORT_CACHE
    stamp = target / "import_source.json"
    if stamp.is_file() and _is_cohort_dir(target):
        try:
            if json.loads(stamp.read_text()).get("sha256") == digest:
                return target
        except json.JSONDecodeError:
            pass
    shutil.rmtree(target, ignore_errors=True)
    log.info("importing the UKB export into %s", target)
    import_export(src, target)
    _write_json_atomic(stamp, {"source": str(src.resolve()), "sha256": digest})
    return target


def _registry_version(uri: str, tracking_uri: str) -> str:
    """Version number behind ``models:/name/<version|alias|latest>``."""
    rest = uri.removeprefix("models:/").strip("/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return str(MlflowClient(tracking_uri).get_model_version_by_alias(name, alias).version)
    parts = rest.split("/")
    if len(parts) == 2 and parts[1].isdigit():
        return parts[1]
    if len(parts) == 2 and parts[1] == "latest":
        versions = MlflowClient(tracking_uri).search_model_versions(f"name='{parts[0]}'")
        return str(max(int(v.version) for v in versions)) if versions else ""
    return ""


def _model_meta(local: Path) -> tuple[str, tuple[str, ...]]:
    """``(model_uuid, traits)`` of a local HeLM pyfunc directory."""
    mlmodel = local / "MLmodel"
    if not mlmodel.is_file():
        raise SpirolmInputError("not an MLflow model directory (no MLmodel file)", file=local)
    meta = yaml.safe_load(mlmodel.read_text()) or {}
    specs = list(local.rglob(SPEC_FILE))
    if not specs:
        raise SpirolmInputError("not a spirolm HeLM pyfunc model (no helm_pyfunc.json artifact)", file=local)
    traits = tuple(json.loads(specs[0].read_text())["traits"])
    return str(meta.get("model_uuid") or meta.get("model_id") or ""), traits


def resolve_model(model: str | Path, out_dir: Path) -> ResolvedModel:
    """A local model directory, or an MLflow URI fetched into ``out_dir/_model``.

    Raises:
        SpirolmInputError: unreachable tracking server, unknown model/version, or not a HeLM pyfunc.
    """
    text = str(model)
    local = Path(text)
    if local.exists():
        uuid, traits = _model_meta(local)
        return ResolvedModel(str(local.resolve()), uuid, local.resolve(), traits)
    if not (text.startswith(("models:/", "runs:/", "mlflow-artifacts:/")) or "://" in text):
        raise SpirolmInputError("model not found (a local MLflow model directory or an MLflow URI such as "
                                "models:/name/1 or runs:/<run_id>/helm_model)", file=text, field="model")
    tracking = resolve_tracking_uri()
    check_tracking_server(tracking, hint="nothing was written - start the server, set MLFLOW_TRACKING_URI, "
                                        "or pass a local model directory")
    dest = out_dir / MODEL_CACHE
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        version = _registry_version(text, tracking) if text.startswith("models:/") else ""
        path = Path(mlflow.artifacts.download_artifacts(artifact_uri=text, dst_path=str(dest), tracking_uri=tracking))
    except SpirolmInputError:
        raise
    except Exception as exc:  # MLflow raises MlflowException, OSError, requests errors ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpirolmInputError(f"cannot fetch the model from MLflow ({tracking}): {first[:300]}", file=text,
                                field="model") from None
    uuid, traits = _model_meta(path)
    return ResolvedModel(text, version or uuid, path, traits)


# ----------------------------------------------------------------------------- chunks


def finish_chunk(scored: pd.DataFrame, eids: np.ndarray, model: ResolvedModel) -> pd.DataFrame:
    """Check the model returned exactly the chunk's participants, in order, and add model columns.

    Raises:
        RuntimeError: rows lost or duplicated by the model (a bug, never written as a shard).
    """
    if len(scored) != len(eids) or not np.array_equal(scored["eid"].to_numpy(dtype=np.int64), eids):
        raise RuntimeError(f"model returned {len(scored)} rows for a chunk of {len(eids)} participants")
    out = scored.reset_index(drop=True).copy()
    out["model_uri"] = model.uri
    out["model_version"] = model.version
    return out


# ----------------------------------------------------------------------------- manifest


def _settings(fingerprint: str, model: ResolvedModel, cfg: ScoreConfig, n: int, n_chunks: int) -> dict[str, Any]:
    """What a shard's bytes depend on; the engine and worker count are deliberately not in it."""
    return {"input_fingerprint": fingerprint, "model_uri": model.uri, "model_version": model.version,
            "traits": list(model.traits), "chunk_size": cfg.chunk_size, "batch_size": cfg.batch_size,
            "device": cfg.device_type, "precision": cfg.resolved_precision,
            "threads": cfg.ray_cpus_per_worker if cfg.engine == "ray" else cfg.resolved_threads, "n_participants": n, "n_chunks": n_chunks}


def _shard_name(i: int) -> str:
    return f"part-{i:05d}.parquet"


def _load_manifest(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) and data.get("format") == MANIFEST_FORMAT else None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None


def _valid_shard(path: Path, entry: dict | None, expected_rows: int) -> str | None:
    """``None`` when the shard verifies, else why it must be recomputed."""
    if entry is None:
        return "not recorded" if path.exists() else "missing"
    if not path.is_file():
        return "missing"
    if entry.get("rows") != expected_rows:
        return "wrong row count"
    if file_sha256(path) != entry.get("sha256"):
        return "content hash mismatch"
    try:
        if pq.read_metadata(path).num_rows != expected_rows:
            return "wrong row count"
    except (pa.ArrowException, OSError):
        return "unreadable"
    return None


def _prepare_out_dir(out_dir: Path, settings: dict, overwrite: bool) -> dict:
    """Load (or start) the manifest; refuse a directory holding another scoring run."""
    shards = out_dir / SHARD_DIR
    manifest_path = out_dir / MANIFEST
    manifest = _load_manifest(manifest_path)
    if manifest is not None and manifest.get("settings") != settings:
        if not overwrite:
            old = manifest.get("settings", {})
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise SpirolmInputError(f"holds scores made with other settings ({', '.join(diff)} differ); use another "
                                    "--out or pass --overwrite to discard them", file=out_dir)
        manifest = None
    if manifest is None:
        if overwrite or (manifest_path.exists() and _load_manifest(manifest_path) is None):
            if manifest_path.exists() and not overwrite:
                log.warning("manifest is unreadable, so no shard can be verified; recomputing every shard")
            shutil.rmtree(shards, ignore_errors=True)
        manifest = {"format": MANIFEST_FORMAT, "settings": settings, "shards": {}, "complete": False}
    shards.mkdir(parents=True, exist_ok=True)
    for stale in shards.glob(".part-*.tmp-*"):  # temp files of a killed run: never valid
        stale.unlink(missing_ok=True)
    return manifest


# ----------------------------------------------------------------------------- scoring


def _local_engine(model: ResolvedModel, cohort_dir: Path, chunks: list[tuple[int, np.ndarray]],
                  cfg: ScoreConfig) -> Iterator[tuple[int, pd.DataFrame]]:
    pyfunc = mlflow.pyfunc.load_model(str(model.local_path), model_config=model_config(
        {"batch_size": cfg.batch_size, "device": cfg.device, "precision": cfg.precision,
         "num_threads": cfg.resolved_threads, "progress": False}))
    for i, eids in chunks:
        yield i, pyfunc.predict(chunk_input(cohort_dir, eids))


def score_cohort(source: str | Path, model: str | Path, out_dir: str | Path, *, cfg: ScoreConfig | None = None,
                 **options: Any) -> ScoreResult:
    """Score every participant of a cohort with a HeLM pyfunc model into resumable Parquet shards.

    Args:
        source: a cohort directory, or a UKB export file (imported once into ``out_dir/_cohort``).
        model: a local MLflow model directory, or an MLflow URI (``models:/name/1``, ``runs:/<id>/helm_model``).
        out_dir: result directory (see the module docstring).
        cfg: a full :class:`ScoreConfig`, or
        options: :class:`ScoreConfig` fields (``chunk_size``, ``batch_size``, ``engine``, ``precision``, ...).

    Returns:
        :class:`ScoreResult`.

    Raises:
        SpirolmInputError: bad cohort, model or settings, an unreachable MLflow server, a directory holding
            another run, or a full disk (finished shards are kept; re-run to resume).
    """
    t0 = time.perf_counter()
    cfg = cfg or ScoreConfig(**options)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cohort_dir = resolve_source(source, out, progress=cfg.progress)
    resolved = resolve_model(model, out)
    eids = participant_order(cohort_dir)
    bounds = chunk_bounds(len(eids), cfg.chunk_size)
    settings = _settings(cohort_fingerprint(cohort_dir), resolved, cfg, len(eids), len(bounds))
    manifest = _prepare_out_dir(out, settings, cfg.overwrite)
    shard_dir = out / SHARD_DIR
    pending: list[tuple[int, np.ndarray]] = []
    recomputed = 0
    for i, (a, b) in enumerate(bounds):
        why = _valid_shard(shard_dir / _shard_name(i), manifest["shards"].get(str(i)), b - a)
        if why is not None:
            if why not in ("missing", "not recorded"):
                log.warning("shard %d is invalid (%s); recomputing it", i, why)
                recomputed += 1
            manifest["shards"].pop(str(i), None)
            pending.append((i, eids[a:b]))
    manifest["complete"] = False
    _write_json_atomic(out / MANIFEST, manifest)
    log.info("scoring %d participants in %d chunks (%d to compute, %d kept) with %s", len(eids), len(bounds),
             len(pending), len(bounds) - len(pending), cfg.engine)
    expected = {i: e for i, e in pending}
    if pending:
        if cfg.engine == "ray":
            results = score_chunks_ray(resolved.local_path, cohort_dir, pending, cfg)
        else:
            results = _local_engine(resolved, cohort_dir, pending, cfg)
        with tqdm(total=len(bounds), initial=len(bounds) - len(pending), unit="chunk", desc="score",
                  disable=None if cfg.progress is None else not cfg.progress) as bar:
            for i, scored in results:
                frame = finish_chunk(scored, expected.pop(i), resolved)
                path = shard_dir / _shard_name(i)
                digest = write_shard(frame, path, resolved.traits)
                manifest["shards"][str(i)] = {"file": f"{SHARD_DIR}/{path.name}", "rows": len(frame), "sha256": digest}
                _write_json_atomic(out / MANIFEST, manifest)
                bar.update(1)
        if expected:
            raise RuntimeError(f"{len(expected)} chunk(s) were not returned by the {cfg.engine} engine")
    manifest["complete"] = True
    _write_json_atomic(out / MANIFEST, manifest)
    shards = [shard_dir / _shard_name(i) for i in range(len(bounds))]
    counts = _summary_counts(shards, resolved.traits)
    return ScoreResult(out, shards, len(eids), counts[0], counts[1], len(bounds), len(bounds) - len(pending),
                       len(pending), recomputed, resolved.uri, resolved.version, time.perf_counter() - t0, cfg.engine,
                       resolved.traits)


def _summary_counts(shards: Sequence[Path], traits: Sequence[str]) -> tuple[int, int]:
    scored = failed = 0
    for path in shards:
        t = pq.read_table(path, columns=[*(risk_column(x) for x in traits), "qc_status"]).to_pandas()
        scored += int(t[[risk_column(x) for x in traits]].notna().all(axis=1).sum())
        failed += int((t["qc_status"] == "fail").sum())
    return scored, failed


def read_scores(out_dir: str | Path, *, verify: bool = True) -> pd.DataFrame:
    """The whole result of :func:`score_cohort` as one DataFrame (rows in ``eid`` order).

    Raises:
        SpirolmInputError: no manifest, an unfinished run, or (``verify``) a shard changed since it was written.
    """
    out = Path(out_dir)
    manifest = _load_manifest(out / MANIFEST)
    if manifest is None:
        raise SpirolmInputError("no scoring manifest (run `spirolm score` first)", file=out / MANIFEST)
    if not manifest.get("complete"):
        raise SpirolmInputError("scoring is not finished; re-run the same `spirolm score` command to resume", file=out)
    n = int(manifest["settings"]["n_chunks"])
    frames = []
    for i in range(n):
        entry = manifest["shards"].get(str(i))
        path = out / SHARD_DIR / _shard_name(i)
        if entry is None or not path.is_file() or (verify and file_sha256(path) != entry["sha256"]):
            raise SpirolmInputError("shard is missing or changed since it was written; re-run the same `spirolm "
                                    "score` command to recompute it", file=path)
        frames.append(pq.read_table(path).to_pandas())
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=shard_schema(
        manifest["settings"]["traits"]).names)


def result_summary(result: ScoreResult) -> dict[str, Any]:
    """Plain dict of a :class:`ScoreResult` (CLI output, benchmarks)."""
    d = asdict(result)
    d["out_dir"] = str(result.out_dir)
    d["shards"] = len(result.shards)
    return d
