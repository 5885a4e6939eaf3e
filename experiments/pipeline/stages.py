"""Content-hash cached pipeline stages.

Why: the main job is a chain of slow stages (cohort, encoder, baselines, HeLM). Re-running after a
change must redo only what changed, and an interrupted stage must never be mistaken for a finished one.
A stage builds into a temporary directory and is renamed into place only when complete, with a stamp
holding the hash of everything it depends on (its config sections, upstream stage keys, input files).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

STAMP = ".stage.json"


def file_fingerprint(path: Path) -> str:
    """A cheap fingerprint of an input file: size, mtime and the first/last MiB.

    Hashing a multi-GB UKB export on every run would cost minutes; size + mtime + head/tail catches
    replaced, appended and truncated files.
    """
    path = Path(path)
    st = path.stat()
    h = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}".encode())
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
        if st.st_size > (1 << 20):
            f.seek(max(st.st_size - (1 << 20), 0))
            h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


def stage_key(*parts: object) -> str:
    """Combine the things a stage depends on into one short hash."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_cached(stage_dir: Path, key: str) -> bool:
    stamp = Path(stage_dir) / STAMP
    if not stamp.exists():
        return False
    try:
        return json.loads(stamp.read_text()).get("key") == key
    except (OSError, json.JSONDecodeError):
        return False


def stamp_key(stage_dir: Path) -> str:
    """The key a finished stage was built with (an upstream dependency of later stages)."""
    return json.loads((Path(stage_dir) / STAMP).read_text())["key"]


PARTIAL_KEY = ".partial-key"


def partial_dir(stage_dir: Path) -> Path:
    """Where a stage builds before it is complete (kept across an interruption for ``--resume``)."""
    stage_dir = Path(stage_dir)
    return stage_dir.with_name(stage_dir.name + ".partial")


def run_stage(name: str, stage_dir: Path, key: str, build: Callable[[Path], None], *, resume: bool = False) -> Path:
    """Run ``build(tmp_dir)`` unless ``stage_dir`` already holds a finished build with this key.

    Args:
        name: stage name (logs).
        stage_dir: the finished stage's directory.
        key: content hash of everything the stage depends on.
        build: fills a temporary directory. With ``resume``, it may find its own earlier partial
            work there (training checkpoints, finished sub-steps) and must continue from it.
        resume: keep the partial directory of an interrupted build *with the same key* (a partial
            build of another key is always discarded: it was made from other inputs).

    Returns:
        ``stage_dir``, complete.
    """
    stage_dir = Path(stage_dir)
    if is_cached(stage_dir, key):
        log.info("stage %s: cached (key %s)", name, key)
        return stage_dir
    tmp = partial_dir(stage_dir)
    marker = tmp / PARTIAL_KEY
    same = tmp.exists() and marker.exists() and marker.read_text().strip() == key
    if resume and same:
        log.info("stage %s: resuming the interrupted build (key %s)", name, key)
    else:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        marker.write_text(key)
        log.info("stage %s: building (key %s)", name, key)
    t0 = time.perf_counter()
    build(tmp)
    marker.unlink(missing_ok=True)
    seconds = round(time.perf_counter() - t0, 1)
    (tmp / STAMP).write_text(json.dumps({"stage": name, "key": key, "seconds": seconds}))
    log.info("stage %s: done in %.1f s", name, seconds)
    if stage_dir.exists():
        shutil.rmtree(stage_dir)
    tmp.rename(stage_dir)
    return stage_dir


def stage_seconds(stage_dir: Path) -> float | None:
    """Wall seconds the finished stage's build took (None for stamps written before timing was recorded)."""
    try:
        return json.loads((Path(stage_dir) / STAMP).read_text()).get("seconds")
    except (OSError, json.JSONDecodeError):
        return None
