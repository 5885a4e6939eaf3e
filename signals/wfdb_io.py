"""Lossless WFDB storage of a participant's blows (PhysioNet format, ``wfdb`` package).

Why WFDB: it is the standard physiological-signal format, readable by PhysioNet tools and many
viewers, and stores integers losslessly. One record per blow:

* record name ``<eid>_i<instance>_b<index>`` (``index`` = position in the field-3066 array);
* one channel ``volume`` in ``mL`` at 100 Hz, written as digital samples with ``adc_gain=1``,
  ``baseline=0``, format ``16`` (or ``32`` when a volume exceeds 32767 mL), so reading back gives
  exactly the integers written (recipe in ``shared/reference/spirometry.md`` §4);
* the header comment ``eid=<eid> instance=<instance> blow=<index>`` ties a record to its owner, and
  the header checksum is verified on read, so renamed or corrupted files are reported, not loaded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import wfdb

from signals.curves import validate_volume_ml
from signals.errors import SpirolmInputError
from signals.ukb3066 import SAMPLE_RATE_HZ

_EID = re.compile(r"^-?[A-Za-z0-9]+$")
"""Safe participant ids: UKB eids are integers (negative for withdrawn participants in some
releases); letters allowed for synthetic ids. No ``_`` (it separates the name parts), no paths."""

_INT16 = np.iinfo(np.int16)
_INT32 = np.iinfo(np.int32)
_READ_ERRORS = (OSError, ValueError, IndexError, KeyError, TypeError)
"""What ``wfdb.rdrecord`` raises on missing, truncated or malformed files (seen: FileNotFoundError,
ValueError "Samples were not loaded correctly", HeaderSyntaxError(ValueError))."""


def record_name(eid: object, instance: int, index: int) -> str:
    """The record name of blow ``index`` of ``eid`` at ``instance``, after checking it is safe.

    Raises:
        SpirolmInputError: an eid that is not alphanumeric (optionally with a leading minus), or a
            negative instance/index.
    """
    text = str(eid)
    if not _EID.fullmatch(text):
        raise SpirolmInputError(
            f"participant id {text!r} cannot be used in a WFDB record name "
            "(letters and digits only, optional leading '-')",
            eid=eid, field="eid",
        )
    for label, value in (("instance", instance), ("blow index", index)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise SpirolmInputError(f"{label} must be a non-negative integer, got {value!r}", eid=eid)
    return f"{text}_i{int(instance)}_b{int(index)}"


def write_blows_wfdb(
    directory: str | Path,
    eid: object,
    blows: Sequence[object],
    instance: int = 0,
    *,
    overwrite: bool = False,
) -> list[Path]:
    """Write one WFDB record per blow.

    Args:
        directory: output folder (created if missing).
        eid: participant id (becomes part of the record name).
        blows: cumulative volume series in whole mL at 100 Hz.
        instance: UK Biobank visit (assessment instance).
        overwrite: replace this participant/instance's existing records. Without it, existing
            records are an error: writing 2 blows over an old set of 3 would otherwise leave a
            stale third blow that a later read would return.

    Returns:
        The header (``.hea``) path of each record, in blow order; each has a ``.dat`` beside it.

    Raises:
        SpirolmInputError: unsafe eid, a blow that is not a valid series or has fractional mL
            (it could not be stored losslessly), or existing records without ``overwrite``.
    """
    directory = Path(directory)
    record_name(eid, instance, 0)  # validates eid/instance even when there are no blows
    names = [record_name(eid, instance, i) for i in range(len(blows))]
    series = [_whole_ml(blow, eid, i) for i, blow in enumerate(blows)]
    existing = _existing_records(directory, eid, instance)
    if existing and not overwrite:
        raise SpirolmInputError(
            "WFDB records for this participant/instance already exist; pass overwrite=True",
            file=existing[0][1], eid=eid,
        )
    for _, header in existing:
        header.unlink()
        header.with_suffix(".dat").unlink(missing_ok=True)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (name, vol) in enumerate(zip(names, series)):
        fits16 = vol.min() >= _INT16.min and vol.max() <= _INT16.max
        wfdb.wrsamp(
            name,
            fs=SAMPLE_RATE_HZ,
            units=["mL"],
            sig_name=["volume"],
            d_signal=vol.reshape(-1, 1),
            fmt=["16" if fits16 else "32"],
            adc_gain=[1.0],
            baseline=[0],
            comments=[_comment(eid, instance, i)],
            write_dir=str(directory),
        )
        paths.append(directory / f"{name}.hea")
    return paths


def read_blows_wfdb(directory: str | Path, eid: object, instance: int = 0) -> list[np.ndarray]:
    """Read back the blows written by :func:`write_blows_wfdb`.

    Args:
        directory: folder holding the records.
        eid: participant id.
        instance: UK Biobank visit.

    Returns:
        The blows as int32 mL arrays, in blow-index order.

    Raises:
        SpirolmInputError: missing folder, no records for the participant, a gap in blow indices,
            or a record that is unreadable, corrupted (checksum), or not a spirolm volume record
            (the message names the file).
    """
    directory = Path(directory)
    record_name(eid, instance, 0)  # validates eid/instance before touching the filesystem
    if not directory.is_dir():
        raise SpirolmInputError("WFDB directory does not exist", file=directory, eid=eid)
    existing = _existing_records(directory, eid, instance)
    if not existing:
        raise SpirolmInputError(
            f"no WFDB records for instance {instance} of this participant", file=directory, eid=eid
        )
    blows = []
    for expected, (index, header) in enumerate(existing):
        if index != expected:
            missing = directory / f"{record_name(eid, instance, expected)}.hea"
            raise SpirolmInputError(
                "missing WFDB record (blow indices have a gap)", file=missing, eid=eid
            )
        blows.append(_read_record(header, eid, instance, index))
    return blows


def _whole_ml(blow: object, eid: object, index: int) -> np.ndarray:
    """Validate a blow and return it as int32 mL, refusing anything that would be stored lossily."""
    try:
        vol = validate_volume_ml(blow, eid=eid)
    except SpirolmInputError as err:
        raise SpirolmInputError(f"blow {index}: {err.problem}", eid=eid) from None
    if np.any(vol != np.round(vol)):
        raise SpirolmInputError(
            f"blow {index}: WFDB stores whole mL but the series has fractional volumes", eid=eid
        )
    if vol.max() > _INT32.max:
        raise SpirolmInputError(f"blow {index}: volume {vol.max():g} mL exceeds int32", eid=eid)
    return vol.astype(np.int32)


def _existing_records(directory: Path, eid: object, instance: int) -> list[tuple[int, Path]]:
    """(blow index, header path) of this participant/instance's records, sorted by index."""
    if not directory.is_dir():
        return []
    pattern = re.compile(rf"^{re.escape(str(eid))}_i{int(instance)}_b(\d+)\.hea$")
    found = []
    for path in directory.glob(f"{eid}_i{int(instance)}_b*.hea"):
        match = pattern.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def _read_record(header: Path, eid: object, instance: int, index: int) -> np.ndarray:
    """Read one record and check it is the intact spirolm volume record it claims to be."""
    try:
        rec = wfdb.rdrecord(str(header.with_suffix("")), physical=False)
    except _READ_ERRORS as err:
        raise SpirolmInputError(f"unreadable WFDB record: {err}", file=header, eid=eid) from None
    problems = []
    if rec.n_sig != 1 or rec.sig_name != ["volume"] or rec.units != ["mL"]:
        problems.append(f"expected one 'volume' channel in mL, got {rec.sig_name} in {rec.units}")
    if rec.fs != SAMPLE_RATE_HZ:
        problems.append(f"sampling rate {rec.fs} Hz, expected {SAMPLE_RATE_HZ}")
    if list(rec.adc_gain) != [1.0] or list(rec.baseline) != [0]:
        problems.append(f"gain/baseline {rec.adc_gain}/{rec.baseline}, expected 1/0 (lossless mL)")
    if _comment(eid, instance, index) not in (rec.comments or []):
        problems.append(f"header comment {rec.comments} does not name this participant/blow")
    if not problems and list(rec.checksum) != list(rec.calc_checksum()):
        problems.append("checksum mismatch: the signal file is corrupted")
    if problems:
        raise SpirolmInputError("; ".join(problems), file=header, eid=eid)
    return rec.d_signal[:, 0].astype(np.int32)


def _comment(eid: object, instance: int, index: int) -> str:
    return f"eid={eid} instance={int(instance)} blow={index}"
