"""Curves derived from a UK Biobank volume-time series: volume-time, flow, flow-volume.

Two families live here, on purpose kept apart:

* **Analysis curves** (:func:`volume_time`, :func:`flow`, :func:`flow_centred`) in float64, used by
  :mod:`signals.measures` and for plots.
* **Encoder inputs** (:func:`flow_volume_curve`, :func:`volume_time_curve`, :func:`curves_batch`)
  that reproduce the ML-based COPD preprocessing (Cosentino et al., Nat Genet 2023;
  Google-Health/genomics-research ``ml-based-copd/learning/ukb_3066_demo_preprocessing.py``)
  operation by operation, including its float32 volume, so that a model trained on our curves sees
  exactly what theirs saw:

  1. ``volume_l = float32(volume_ml * 0.001)``; ``flow = [0] + diff(volume_l) / 0.01``;
  2. keep the first ``n_points`` samples (10 s at 100 Hz); pad volume with its last value and flow
     with 0;
  3. ``np.interp(linspace(0, 6.58, n_points), np.maximum.accumulate(volume), flow, left=0, right=0)``.

  The same ``n_points`` sets both the time window and the volume grid, as in ML-based COPD.

Every public function validates its input with :func:`validate_volume_ml` so that a bad blow fails
with a :class:`~signals.errors.SpirolmInputError` naming the participant and field instead of a
NumPy traceback (or, worse, a curve of NaNs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from signals.errors import SpirolmInputError
from signals.ukb3066 import SAMPLE_RATE_HZ

DT_S = 1.0 / SAMPLE_RATE_HZ
"""Sampling interval of field 3066 (10 ms)."""

N_POINTS = 1000
"""ML-based COPD curve length: 1000 samples = 10 s of volume-time, and 1000 volume grid points."""

MAX_VOLUME_L = 6.58
"""Upper end of the ML-based COPD flow-volume grid (litres)."""

CHANNELS = ("flow_volume", "volume_time")
"""Channel names understood by :func:`curves_batch`."""

_CHUNK_ROWS = 512
"""Rows per vectorised chunk in :func:`curves_batch`: large enough to amortise NumPy call overhead,
small enough that the (rows, n_points) float64 work arrays stay in cache (big arrays made it ~4x
slower in a benchmark)."""


def validate_volume_ml(
    volume_ml: object,
    *,
    eid: object | None = None,
    field: str | None = None,
) -> np.ndarray:
    """Check one blow and return it as a float64 array of mL.

    Why: every derived curve and measure assumes a 1-D, finite, non-negative series of at least two
    samples. Checking once here turns bad data into a readable error naming the participant.

    Args:
        volume_ml: cumulative exhaled volume in mL, one sample per 10 ms, index 0 = time 0.
        eid: participant id, only used in error messages.
        field: field/column name (e.g. ``"3066-0.1"``), only used in error messages.

    Returns:
        The series as a new float64 array (integers are represented exactly).

    Raises:
        SpirolmInputError: not numeric (including bool/object/str), not 1-D, fewer than 2 samples,
            a NaN/inf sample or a negative volume.
    """
    arr = np.asarray(volume_ml)
    if arr.dtype.kind not in "iuf":
        raise SpirolmInputError(
            f"volume series must be numeric mL, got dtype {arr.dtype}", eid=eid, field=field
        )
    if arr.ndim != 1:
        raise SpirolmInputError(
            f"volume series must be 1-D, got shape {arr.shape}", eid=eid, field=field
        )
    if arr.size < 2:
        raise SpirolmInputError(
            f"volume series has {arr.size} sample(s); at least 2 are needed", eid=eid, field=field
        )
    out = arr.astype(np.float64)
    finite = np.isfinite(out)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise SpirolmInputError(
            f"non-finite volume {out[bad]} at sample {bad}", eid=eid, field=field
        )
    if (out < 0).any():
        bad = int(np.flatnonzero(out < 0)[0])
        raise SpirolmInputError(f"negative volume {out[bad]:g} mL at sample {bad}", eid=eid, field=field)
    return out


def volume_time(
    volume_ml: object, *, eid: object | None = None, field: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Volume-time curve in SI-like units.

    Args:
        volume_ml: cumulative volume in mL at 100 Hz.
        eid, field: forwarded to error messages.

    Returns:
        ``(t_s, volume_l)``, both float64 and of the input's length; ``t_s[0] == 0``.
    """
    vol = validate_volume_ml(volume_ml, eid=eid, field=field)
    return np.arange(vol.size) * DT_S, vol / 1000.0


def flow(volume_ml: object, *, eid: object | None = None, field: str | None = None) -> np.ndarray:
    """One-sample flow, ``[0] + diff(volume_l) / 0.01`` (L/s), as ML-based COPD defines it.

    A 1 mL step is 0.1 L/s, so this flow is noisy; measures use :func:`flow_centred` instead.

    Args:
        volume_ml: cumulative volume in mL at 100 Hz.
        eid, field: forwarded to error messages.

    Returns:
        float64 flow in L/s, same length as the input, ``flow[0] == 0``.
    """
    _, vol_l = volume_time(volume_ml, eid=eid, field=field)
    return np.concatenate(([0.0], np.diff(vol_l) / DT_S))


def flow_centred(
    volume_ml: object,
    half_width: int = 4,
    *,
    eid: object | None = None,
    field: str | None = None,
) -> np.ndarray:
    """Centred-difference flow ``(v[i+h] - v[i-h]) / (2h * 10 ms)`` in L/s.

    Why: ATS/ERS asks for PEF over a ~80 ms window; the GRS-informed UKB QC re-derivation
    (legenepi/GRS_informed_QC) uses exactly ``h = 4`` samples. The series is edge-padded (volume held
    constant before the first and after the last sample), which matches the zero padding UKB writes
    before time 0 and keeps the output the same length without NaNs.

    Args:
        volume_ml: cumulative volume in mL at 100 Hz.
        half_width: samples on each side (4 → 80 ms window).
        eid, field: forwarded to error messages.

    Returns:
        float64 flow in L/s, same length as the input.
    """
    if half_width < 1:
        raise ValueError(f"half_width must be >= 1, got {half_width}")
    vol = validate_volume_ml(volume_ml, eid=eid, field=field)
    padded = np.pad(vol, half_width, mode="edge")
    # Difference in mL first, then one division by the window in ms (exactly 80.0 for h = 4):
    # equal volume steps then give bit-identical flows, so PEF ties resolve to the first sample.
    window_ms = 2 * half_width * 1000.0 / SAMPLE_RATE_HZ
    return (padded[2 * half_width :] - padded[: -2 * half_width]) / window_ms


def _pad_last(vol_ml: np.ndarray, n_points: int) -> np.ndarray:
    """First ``n_points`` samples, right-padded with the last kept value (ML-based COPD)."""
    head = vol_ml[:n_points]
    return np.pad(head, (0, n_points - head.size), mode="constant", constant_values=head[-1])


def volume_time_curve(
    volume_ml: object,
    n_points: int = N_POINTS,
    *,
    eid: object | None = None,
    field: str | None = None,
) -> np.ndarray:
    """Fixed-length volume-time encoder input: volume in L over the first ``n_points`` × 10 ms.

    Args:
        volume_ml: cumulative volume in mL at 100 Hz.
        n_points: output length (1000 = 10 s); longer blows are truncated, shorter ones padded with
            their last volume (the participant has stopped exhaling, so volume stays put).
        eid, field: forwarded to error messages.

    Returns:
        float32 array of shape ``(n_points,)``.
    """
    vol = validate_volume_ml(volume_ml, eid=eid, field=field)
    return _pad_last((vol * 0.001).astype(np.float32), n_points)


def flow_volume_curve(
    volume_ml: object,
    n_points: int = N_POINTS,
    max_volume_l: float = MAX_VOLUME_L,
    *,
    eid: object | None = None,
    field: str | None = None,
) -> np.ndarray:
    """ML-based COPD flow-volume encoder input: flow on an even volume grid.

    The steps are those of ``compute_flow``/``right_pad_array``/``compute_flow_volume`` in the
    ML-based COPD preprocessing (see the module docstring), so the curve is identical to theirs.
    Volume is made monotone with ``np.maximum.accumulate`` because ``np.interp`` needs
    non-decreasing ``xp``; flow stays the raw one-sample flow.

    Args:
        volume_ml: cumulative volume in mL at 100 Hz.
        n_points: grid size and time window (samples), 1000 in ML-based COPD.
        max_volume_l: grid upper end in litres; volumes above the blow's maximum get flow 0.
        eid, field: forwarded to error messages.

    Returns:
        float32 array of shape ``(n_points,)``: flow (L/s) at ``linspace(0, max_volume_l, n_points)``.
    """
    vol = validate_volume_ml(volume_ml, eid=eid, field=field)
    vol_l = (vol * 0.001).astype(np.float32)
    flow_l_s = np.concatenate(([0.0], np.diff(vol_l) / DT_S))
    vol_pad = _pad_last(vol_l, n_points)
    flow_pad = np.pad(flow_l_s[:n_points], (0, max(0, n_points - flow_l_s.size)))
    grid = np.linspace(0.0, max_volume_l, n_points)
    fv = np.interp(grid, np.maximum.accumulate(vol_pad), flow_pad, left=0, right=0)
    return fv.astype(np.float32)


def curves_batch(
    volumes: Sequence[object],
    channels: Sequence[str] = ("flow_volume",),
    n_points: int = N_POINTS,
    max_volume_l: float = MAX_VOLUME_L,
    *,
    eids: Sequence[object] | None = None,
    field: str | None = None,
) -> np.ndarray:
    """Encoder inputs for many blows at once, identical to the per-blow functions.

    Why a batch path: the cohort has hundreds of thousands of blows. Padding, float32 conversion,
    flow and the monotone volume are done on ``(rows, n_points)`` chunks; only ``np.interp`` runs per
    row (it has no batched form, and a vectorised re-implementation benchmarked slower).

    Args:
        volumes: blows, each a 1-D cumulative volume series in mL at 100 Hz (ragged lengths).
        channels: which curves to stack, in this order: any of ``"flow_volume"``,
            ``"volume_time"`` without repeats (the encoder uses ``("flow_volume",)`` or
            ``("flow_volume", "volume_time")``).
        n_points: curve length (and time window), 1000 as in ML-based COPD.
        max_volume_l: flow-volume grid upper end in litres.
        eids: optional participant id per blow, so an error names the participant.
        field: optional field name for error messages.

    Returns:
        float32 array of shape ``(len(volumes), len(channels), n_points)``.

    Raises:
        SpirolmInputError: a blow fails :func:`validate_volume_ml` (the message names its batch
            position and, when given, its eid).
        ValueError: unknown or repeated channel names, ``eids`` of the wrong length.
    """
    channels = tuple(channels)
    unknown = [c for c in channels if c not in CHANNELS]
    if not channels or unknown or len(set(channels)) != len(channels):
        raise ValueError(f"channels must be distinct names from {CHANNELS}, got {channels}")
    if eids is not None and len(eids) != len(volumes):
        raise ValueError(f"eids has {len(eids)} entries for {len(volumes)} blows")
    out = np.empty((len(volumes), len(channels), n_points), dtype=np.float32)
    grid = np.linspace(0.0, max_volume_l, n_points)
    for start in range(0, len(volumes), _CHUNK_ROWS):
        stop = min(start + _CHUNK_ROWS, len(volumes))
        vol_l = (_pack_chunk(volumes, start, stop, n_points, eids, field) * 0.001).astype(np.float32)
        for c, name in enumerate(channels):
            if name == "volume_time":
                out[start:stop, c] = vol_l
            else:
                out[start:stop, c] = _flow_volume_rows(vol_l, grid)
    return out


def _pack_chunk(
    volumes: Sequence[object],
    start: int,
    stop: int,
    n_points: int,
    eids: Sequence[object] | None,
    field: str | None,
) -> np.ndarray:
    """Validate blows ``start:stop`` and pack them into a ``(rows, n_points)`` float64 mL array,
    truncated / right-padded with the last kept value."""
    packed = np.empty((stop - start, n_points), dtype=np.float64)
    for row, i in enumerate(range(start, stop)):
        eid = eids[i] if eids is not None else None
        where = f"blow {i} of the batch" if eid is None else f"blow {i} of the batch (participant {eid})"
        try:
            vol = validate_volume_ml(volumes[i], eid=eid, field=field)
        except SpirolmInputError as err:
            raise SpirolmInputError(f"{where}: {err.problem}", eid=eid, field=field) from None
        k = min(vol.size, n_points)
        packed[row, :k] = vol[:k]
        packed[row, k:] = vol[k - 1]
    return packed


def _flow_volume_rows(vol_l: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Flow-volume curves for padded float32 volume rows (same arithmetic as the per-blow path).

    Padding with the last volume makes the padded flow exactly 0, as ML-based COPD's zero-padded
    flow, so no mask is needed.
    """
    flow_rows = np.zeros(vol_l.shape, dtype=np.float64)
    flow_rows[:, 1:] = np.diff(vol_l, axis=1) / DT_S
    mono = np.maximum.accumulate(vol_l, axis=1)
    out = np.empty(vol_l.shape, dtype=np.float32)
    for r in range(vol_l.shape[0]):
        out[r] = np.interp(grid, mono[r], flow_rows[r], left=0, right=0)
    return out
