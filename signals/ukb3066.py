"""UK Biobank field 3066 ("Spirometry blow data") strings <-> integer volume series.

Format (UKB showcase example, ML-based COPD ``ukb_3066_demo_preprocessing.py``)::

    blow<order>,<num_points>,<v1>,<v2>,...

``v*`` are cumulative exhaled volumes in mL sampled every 10 ms, left-padded with zeros so that
``len(series) == num_zeros + num_points``. Parsers in the wild disagree on how many header tokens
to drop; we trust the ``num_points`` token and never a fixed offset. Like Google's code we keep the
last ``num_points + 1`` samples when a padding zero exists (one leading zero marks time 0).

Bad values raise :class:`SpirolmInputError`; a readable value that no spirometer can record (a negative
volume, or one too large for int32 mL) raises its subclass :class:`ImplausibleBlowError`, so callers
can record it as ``implausible_volume`` rather than as a syntax error. Bytes are decoded as UTF-8 (a
BOM is dropped), falling back to Latin-1: a valid value is ASCII either way, and anything else is
rejected token by token with a message naming it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from signals.errors import ImplausibleBlowError, SpirolmInputError

SAMPLE_RATE_HZ = 100
"""UKB 3066 samples volume every 10 ms."""

_HEADER = re.compile(r"^\s*blow\s*(\d{1,9})\s*$", re.IGNORECASE)
"""``blow<order>``; at most 9 digits so the order fits the int32 ``blow_order`` column."""
_INT32_MAX = np.iinfo(np.int32).max


@dataclass(frozen=True)
class Blow:
    """One parsed blow.

    Attributes:
        order: the blow's order token (``blow<order>``), 1-based as UKB writes it.
        num_points: the declared number of points (trusted over the series length).
        volume_ml: cumulative volume in mL, int32, padding zeros trimmed to at most one.
        padding_zeros: how many leading zeros the raw string had before trimming.
    """

    order: int
    num_points: int
    volume_ml: np.ndarray
    padding_zeros: int


def parse_3066(value: str | bytes, *, eid: object | None = None, field: str | None = None) -> Blow:
    """Parse one field-3066 string.

    Args:
        value: the raw string (or bytes), e.g. ``"blow2,1224,0,0,0,0,3,10,..."``.
        eid, field: only used to name the participant/field in error messages.

    Raises:
        SpirolmInputError: empty value, bad header, non-numeric or non-finite volumes, fractional
            volumes, or ``num_points`` larger than the series.
        ImplausibleBlowError: a negative volume, or one beyond int32 mL (a :class:`SpirolmInputError`).
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise SpirolmInputError("empty spirometry blow (field 3066 value is missing)", eid=eid, field=field)
    text = as_text(value).strip().lstrip("\ufeff").strip()
    if not text:
        raise SpirolmInputError("empty spirometry blow (field 3066 value is empty)", eid=eid, field=field)
    tokens = text.split(",")
    if len(tokens) < 3:
        raise SpirolmInputError(
            f"malformed 3066 value: expected 'blow<order>,<num_points>,<volumes...>', got {text[:40]!r}",
            eid=eid, field=field,
        )
    m = _HEADER.match(tokens[0])
    if not m:
        raise SpirolmInputError(f"malformed 3066 header {tokens[0][:20]!r}: expected 'blow<order>'", eid=eid, field=field)
    order = int(m.group(1))
    try:
        num_points = int(tokens[1])
    except ValueError:
        raise SpirolmInputError(f"malformed 3066 num_points token {tokens[1][:20]!r}: not an integer", eid=eid, field=field) from None
    if num_points <= 0:
        raise SpirolmInputError(f"3066 num_points is {num_points}; it must be positive", eid=eid, field=field)
    raw = tokens[2:]
    try:
        series = np.array(raw, dtype=np.float64)  # numpy parses the strings in C
    except ValueError:
        bad = next((i for i, t in enumerate(raw) if not _is_number(t)), None)
        if bad is None:
            raise SpirolmInputError("volume tokens are not all numbers", eid=eid, field=field) from None
        raise SpirolmInputError(
            f"non-numeric volume token {raw[bad][:20]!r} at sample {bad}", eid=eid, field=field
        ) from None
    if not np.all(np.isfinite(series)):
        bad = int(np.flatnonzero(~np.isfinite(series))[0])
        raise SpirolmInputError(f"non-finite volume {raw[bad][:20]!r} at sample {bad}", eid=eid, field=field)
    if np.any(series < 0):
        bad = int(np.flatnonzero(series < 0)[0])
        raise ImplausibleBlowError(f"negative volume {raw[bad].strip()[:20]} mL at sample {bad}", eid=eid,
                                   field=field)
    if np.any(series > _INT32_MAX):
        bad = int(np.flatnonzero(series > _INT32_MAX)[0])
        raise ImplausibleBlowError(f"volume {raw[bad].strip()[:20]} mL at sample {bad} is beyond any spirometer's "
                                   "range", eid=eid, field=field)
    if num_points > series.size:
        raise SpirolmInputError(
            f"3066 num_points={num_points} is larger than the {series.size} volume samples present "
            "(truncated value?)",
            eid=eid, field=field,
        )
    padding = series.size - num_points
    # Keep one leading zero (time 0) when padding exists, as Google's preprocessing does.
    start = padding - 1 if padding > 0 else 0
    volume = series[start:]
    if np.any(volume != np.round(volume)):
        # UKB writes integer mL; fractional values mean another unit or a corrupted export.
        raise SpirolmInputError("3066 volumes must be integer mL; got fractional values", eid=eid, field=field)
    return Blow(order=order, num_points=num_points, volume_ml=volume.astype(np.int32), padding_zeros=padding)


def format_3066(order: int, volume_ml: np.ndarray, padding_zeros: int = 4) -> str:
    """Write a blow in the 3066 string format (inverse of :func:`parse_3066`).

    Args:
        order: the blow order token.
        volume_ml: cumulative volume in mL (rounded to integers), starting at time 0.
        padding_zeros: leading zeros to prepend, as the UKB device export does.
    """
    vol = np.rint(np.asarray(volume_ml, dtype=np.float64)).astype(np.int64)
    if vol.ndim != 1 or vol.size == 0:
        raise ValueError("volume_ml must be a non-empty 1-D array")
    if np.any(vol < 0):
        raise ValueError("volume_ml must be non-negative")
    # num_points counts the samples after the padding; parse keeps one padding zero as time 0,
    # so a series starting at 0 is written as (padding_zeros - 1) zeros + the series itself.
    if padding_zeros > 0 and vol[0] == 0:
        body = vol[1:]
        pad = padding_zeros
    else:
        body = vol
        pad = padding_zeros
    values = ",".join(["0"] * pad + list(map(str, body.tolist())))
    return f"blow{int(order)},{body.size},{values}"


def as_text(value: object) -> str:
    """A 3066 cell as text: bytes decode as UTF-8 (BOM dropped), else as Latin-1, which never fails
    (a valid value is ASCII, so the fallback only changes how junk is named in the error)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            return raw.decode("latin-1")
    return str(value)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True
