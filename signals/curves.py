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

* **spirolm's extension** (:func:`flow_volume_norm_curve`, channel ``"flow_volume_norm"``): a
  *shape* channel that ML-based COPD does not have. Flow from the 80 ms centred difference
  (:func:`flow_centred`) divided by the blow's PEF, on an even grid of volume / FVC in [0, 1], over the
  whole blow (not only the first 10 s). Why: the one-sample flow of integer-mL volumes is quantised in
  0.1 L/s steps, which at the low flows of the late limb (0.2-1 L/s) swamps the curve's shape, and
  the absolute-volume grid puts a small and a large lung's late limbs at different positions. Dividing
  by PEF and FVC removes size (a blow scaled x2 in volume gives the same curve), so the channel carries
  shape only - e.g. the late-limb concavity of asthma - while ``flow_volume`` keeps size and PEF.

Every public function validates its input with :func:`validate_volume_ml` so that a bad blow fails
with a :class:`~signals.errors.SpirolmInputError` naming the participant and field instead of a
NumPy traceback (or, worse, a curve of NaNs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from signals.errors import ImplausibleBlowError, SpirolmInputError
from signals.ukb3066 import SAMPLE_RATE_HZ

DT_S = 1.0 / SAMPLE_RATE_HZ
"""Sampling interval of field 3066 (10 ms)."""

N_POINTS = 1000
"""ML-based COPD curve length: 1000 samples = 10 s of volume-time, and 1000 volume grid points."""

MAX_VOLUME_L = 6.58
"""Upper end of the ML-based COPD flow-volume grid (litres)."""

CHANNELS = ("flow_volume", "flow_volume_norm", "volume_time", "position")
"""Channel names understood by :func:`curves_batch` (``flow_volume`` is ML-based COPD's input,
``flow_volume_norm`` spirolm's size-free shape channel, ``volume_time`` the 10 s volume-time curve,
``position`` the grid position 0..1, the same for every blow: CoordConv, see :func:`position_row`)."""

PEF_HALF_WIDTH = 4
"""Half-width (samples) of the centred difference behind ``flow_volume_norm``: 80 ms, as PEF in
:mod:`signals.measures` (ATS/ERS; UKB GRS QC re-derivation)."""

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
            a NaN/inf sample, or a negative volume (as :class:`~signals.errors.ImplausibleBlowError`).
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
        raise ImplausibleBlowError(f"negative volume {out[bad]:g} mL at sample {bad}", eid=eid, field=field)
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


def flow_volume_norm_curve(
    volume_ml: object,
    n_points: int = N_POINTS,
    *,
    eid: object | None = None,
    field: str | None = None,
) -> np.ndarray:
    """spirolm's shape channel: flow / PEF on an even grid of volume / FVC in [0, 1].

    Why: see the module docstring - a size-free, low-noise view of the curve's shape, so that a small
    CNN sees the late-limb concavity that FEV1, FVC, FEV1/FVC and PEF do not reveal. Steps:

    1. flow = 80 ms centred difference (:func:`flow_centred`, ``h = 4``) of the **whole** blow;
    2. PEF = its maximum; FVC = the maximum volume; volume made monotone with ``np.maximum.accumulate``
       (``np.interp`` needs non-decreasing ``xp``);
    3. ``np.interp(linspace(0, 1, n_points), monotone_volume / FVC, flow / PEF)``.

    Values are in (-inf, 1]: 1 at the peak (when it falls on a grid point), about 0 at FVC; only a
    blow whose volume drops (a leak, a non-monotone artefact) has negative flow.

    Args:
        volume_ml: cumulative volume in mL at 100 Hz.
        n_points: grid size over volume / FVC = 0..1.
        eid, field: forwarded to error messages.

    Returns:
        float32 array of shape ``(n_points,)``.

    Raises:
        SpirolmInputError: invalid series (:func:`validate_volume_ml`) or a blow without exhaled
            volume (FVC or PEF not positive), which has no shape to normalise.
    """
    vol = validate_volume_ml(volume_ml, eid=eid, field=field)
    return _flow_volume_norm_rows([vol], n_points, eids=[eid], field=field)[0]


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
            ``"flow_volume_norm"``, ``"volume_time"``, ``"position"`` without repeats (the encoder stacks a subset
            of :data:`CHANNELS` in that order, ``flow_volume`` first).
        n_points: curve length (and time window), 1000 as in ML-based COPD.
        max_volume_l: flow-volume grid upper end in litres.
        eids: optional participant id per blow, so an error names the participant.
        field: optional field name for error messages.

    Returns:
        float32 array of shape ``(len(volumes), len(channels), n_points)``.

    Raises:
        SpirolmInputError: a blow fails :func:`validate_volume_ml`, or has no exhaled volume when
            ``flow_volume_norm`` is asked for (the message names its batch position and, when
            given, its eid).
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
        blows = _validate_chunk(volumes, start, stop, eids, field)
        chunk_eids = [None] * len(blows) if eids is None else list(eids[start:stop])
        vol_l = (_pad_rows(blows, n_points) * 0.001).astype(np.float32)
        for c, name in enumerate(channels):
            if name == "volume_time":
                out[start:stop, c] = vol_l
            elif name == "position":
                out[start:stop, c] = position_row(n_points)
            elif name == "flow_volume":
                out[start:stop, c] = _flow_volume_rows(vol_l, grid)
            else:
                out[start:stop, c] = _flow_volume_norm_rows(
                    blows, n_points, eids=chunk_eids, field=field, first=start
                )
    return out


def position_row(n_points: int = N_POINTS) -> np.ndarray:
    """The ``position`` channel: ``linspace(0, 1, n_points)``, identical for every blow (CoordConv).

    Why: the encoder is convolutional with global average pooling, so on its own it cannot tell *where*
    on the grid a feature is - it has to infer it from the zero padding at the ends. Asthma's signal is
    positional (the flow / PEF of the last half of the volume, :func:`flow_volume_norm_curve`): a linear
    model that knows the position reads it at once, while the CNN learnt it only slowly. Giving the
    convolutions the coordinate as an input channel (Liu et al. 2018, "CoordConv") removes that handicap;
    measured on the default cohort in docs/encoder.md.
    """
    return np.linspace(0.0, 1.0, n_points, dtype=np.float32)


def _where(i: int | None, eid: object | None) -> str:
    """Error-message prefix locating a blow in a batch."""
    if i is None:
        return ""
    return f"blow {i} of the batch: " if eid is None else f"blow {i} of the batch (participant {eid}): "


def _validate_chunk(
    volumes: Sequence[object],
    start: int,
    stop: int,
    eids: Sequence[object] | None,
    field: str | None,
) -> list[np.ndarray]:
    """Validate blows ``start:stop`` (float64 mL copies); an error names the batch position."""
    out = []
    for i in range(start, stop):
        eid = eids[i] if eids is not None else None
        try:
            out.append(validate_volume_ml(volumes[i], eid=eid, field=field))
        except SpirolmInputError as err:
            raise SpirolmInputError(f"{_where(i, eid)}{err.problem}", eid=eid, field=field) from None
    return out


def _pad_rows(blows: Sequence[np.ndarray], width: int) -> np.ndarray:
    """Pack validated blows into a ``(rows, width)`` float64 mL array, truncated / right-padded
    with the last kept value (the participant has stopped exhaling, so volume stays put)."""
    packed = np.empty((len(blows), width), dtype=np.float64)
    for row, vol in enumerate(blows):
        k = min(vol.size, width)
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


def _flow_volume_norm_rows(
    blows: Sequence[np.ndarray],
    n_points: int,
    *,
    eids: Sequence[object | None],
    field: str | None,
    first: int | None = None,
) -> np.ndarray:
    """``flow_volume_norm`` curves of validated float64 mL blows (whole blows, ragged lengths).

    Rows are right-padded with their last volume to the longest blow: the centred difference pads
    with the edge value too, so a padded row's flow equals :func:`flow_centred` of the blow over its
    real samples; the padded samples then copy the last real sample's flow, so they sit at
    volume / FVC = 1 with the value the single-blow curve has there. Only ``np.interp`` runs per row.

    Args:
        blows: validated blows (mL).
        n_points: grid size over volume / FVC in [0, 1].
        eids: participant id per blow (``None`` entries allowed), for error messages.
        field: field name for error messages.
        first: batch position of ``blows[0]`` (error messages), ``None`` outside a batch.
    """
    h = PEF_HALF_WIDTH
    lengths = np.array([b.size for b in blows])
    vol = _pad_rows(blows, int(lengths.max()))
    padded = np.pad(vol, ((0, 0), (h, h)), mode="edge")
    window_ms = 2 * h * 1000.0 / SAMPLE_RATE_HZ
    flow_l_s = (padded[:, 2 * h :] - padded[:, : -2 * h]) / window_ms  # mL / ms = L / s
    # Padding samples repeat the blow's last sample (flow included), so they neither add a PEF nor
    # change the interpolation at volume / FVC = 1: the curve equals the single-blow one exactly.
    rows = np.arange(vol.shape[0])
    past_end = np.arange(vol.shape[1])[None, :] >= lengths[:, None]
    flow_l_s = np.where(past_end, flow_l_s[rows, lengths - 1][:, None], flow_l_s)
    mono = np.maximum.accumulate(vol, axis=1)
    fvc_ml = mono[:, -1]
    pef = flow_l_s.max(axis=1)
    bad = np.flatnonzero((fvc_ml <= 0) | (pef <= 0))
    if bad.size:
        r = int(bad[0])
        pos = None if first is None else first + r
        raise SpirolmInputError(
            f"{_where(pos, eids[r])}blow has no exhaled volume (max volume {fvc_ml[r]:g} mL, "
            f"PEF {pef[r]:g} L/s), so flow/PEF over volume/FVC is undefined",
            eid=eids[r], field=field,
        )
    x = mono / fvc_ml[:, None]
    y = flow_l_s / pef[:, None]
    grid = np.linspace(0.0, 1.0, n_points)
    out = np.empty((vol.shape[0], n_points), dtype=np.float32)
    for r in range(vol.shape[0]):
        out[r] = np.interp(grid, x[r], y[r])
    return out
