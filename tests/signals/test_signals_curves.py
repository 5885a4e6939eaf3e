"""Curve derivation: validation, analysis curves, and ML-based COPD encoder inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import signals.curves as curves
from signals.curves import (
    curves_batch,
    flow,
    flow_centred,
    flow_volume_curve,
    flow_volume_norm_curve,
    validate_volume_ml,
    volume_time,
    volume_time_curve,
)
from signals.errors import SpirolmInputError
from signals.ukb3066 import parse_3066

DEMO = parse_3066(
    (Path(__file__).parents[1] / "fixtures" / "ukb_3066_demo_blow.txt").read_text().strip()
).volume_ml


def copd_reference_flow_volume(series: np.ndarray) -> np.ndarray:
    """Independent oracle: the ML-based COPD steps written out one by one.

    float32 litres; one-sample flow with a leading 0 on the unpadded blow; first 1000 samples;
    volume padded with its last value and flow with 0; monotone volume; interp on 1000 points over
    [0, 6.58] L with 0 outside.
    """
    volume = (series * 0.001).astype(np.float32)
    flow_l_s = np.concatenate(([0.0], np.diff(volume) / 0.01))
    volume, flow_l_s = volume[:1000], flow_l_s[:1000]
    volume = np.pad(volume, (0, 1000 - len(volume)), constant_values=volume[-1])
    flow_l_s = np.pad(flow_l_s, (0, 1000 - len(flow_l_s)), constant_values=0)
    grid = np.linspace(0, 6.58, num=1000)
    return np.interp(grid, np.maximum.accumulate(volume), flow_l_s, left=0, right=0)


def random_blows(n: int, seed: int) -> list[np.ndarray]:
    """Demo-like blows with random scale, length (< and > 1000 samples) and wobble."""
    rng = np.random.default_rng(seed)
    blows = []
    for _ in range(n):
        length = int(rng.integers(50, DEMO.size + 1))
        base = DEMO[:length] * rng.uniform(0.3, 1.3)
        wobble = rng.integers(-3, 4, size=length)
        blows.append(np.clip(np.rint(base) + wobble, 0, None).astype(np.int32))
    return blows


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param([0.0, np.nan, 3.0], "non-finite volume nan at sample 1", id="nan"),
        pytest.param([0.0, 1.0, np.inf], "non-finite volume inf at sample 2", id="inf"),
        pytest.param(np.array(["0", "1"]), "must be numeric", id="str"),
        pytest.param(np.array([0, None], dtype=object), "must be numeric", id="object"),
        pytest.param(np.array([True, False]), "must be numeric", id="bool"),
        pytest.param(np.zeros((2, 3)), "must be 1-D", id="2d"),
        pytest.param([5], "1 sample(s)", id="one-sample"),
        pytest.param([], "0 sample(s)", id="empty"),
        pytest.param([0, 10, -4], "negative volume -4 mL at sample 2", id="negative"),
    ],
)
def test_invalid_series_raise_with_participant_and_field(value: object, message: str) -> None:
    with pytest.raises(SpirolmInputError) as info:
        validate_volume_ml(value, eid=42, field="3066-0.0")
    assert message in str(info.value)
    assert "participant 42" in str(info.value) and "field 3066-0.0" in str(info.value)


@pytest.mark.parametrize(
    "func", [volume_time, flow, flow_centred, flow_volume_curve, flow_volume_norm_curve, volume_time_curve]
)
def test_every_curve_function_validates(func) -> None:
    with pytest.raises(SpirolmInputError, match="participant 7"):
        func(np.array([0.0, np.nan]), eid=7)


def test_validate_returns_float64_copy() -> None:
    src = np.array([0, 3, 9], dtype=np.int32)
    out = validate_volume_ml(src)
    assert out.dtype == np.float64 and out.tolist() == [0.0, 3.0, 9.0]
    out[0] = 99
    assert src[0] == 0


# --- analysis curves --------------------------------------------------------------------------


def test_volume_time_units() -> None:
    t_s, vol_l = volume_time(DEMO)
    assert t_s.shape == vol_l.shape == (1225,)
    assert t_s[1] == pytest.approx(0.01) and t_s[-1] == pytest.approx(12.24)
    assert vol_l.max() == pytest.approx(5.836)


def test_one_sample_flow_matches_definition() -> None:
    f = flow(DEMO)
    assert f[0] == 0.0 and f.shape == DEMO.shape
    np.testing.assert_allclose(f[1:], np.diff(DEMO.astype(float)) / 10.0)
    # Reference analysis: one-sample PEF of the demo is 11.5 L/s.
    assert f.max() == pytest.approx(11.5)


def test_centred_flow_on_a_ramp_and_on_the_demo() -> None:
    ramp = np.concatenate((np.zeros(20), np.arange(1, 101) * 50.0, np.full(20, 5000.0)))
    f = flow_centred(ramp)
    np.testing.assert_allclose(f[30:110], 5.0)  # 50 mL / 10 ms
    assert f[0] == 0.0 and f[-1] == 0.0  # edge padding: constant volume outside the record
    # Reference analysis: 80 ms centred-difference PEF of the demo is 10.0 L/s.
    assert flow_centred(DEMO).max() == pytest.approx(10.0125)
    with pytest.raises(ValueError):
        flow_centred(DEMO, half_width=0)


# --- encoder inputs ---------------------------------------------------------------------------


def test_flow_volume_curve_equals_ml_based_copd_on_demo() -> None:
    fv = flow_volume_curve(DEMO)
    assert fv.dtype == np.float32 and fv.shape == (1000,)
    np.testing.assert_array_equal(fv, copd_reference_flow_volume(DEMO).astype(np.float32))
    grid = np.linspace(0, 6.58, 1000)
    max_vol_10s = DEMO[:1000].max() / 1000.0
    assert np.all(fv[grid > max_vol_10s] == 0)  # right=0 beyond the (10 s) maximum volume
    assert fv[0] == 0  # grid point 0 L is time 0, where ML-based COPD flow is 0
    assert 10.5 < fv.max() <= 11.5  # grid samples of the 11.5 L/s one-sample peak


def test_flow_volume_curve_equals_ml_based_copd_on_random_blows() -> None:
    for blow in random_blows(40, seed=1):
        np.testing.assert_array_equal(
            flow_volume_curve(blow), copd_reference_flow_volume(blow).astype(np.float32)
        )


def test_volume_time_curve_pads_with_last_value_and_truncates() -> None:
    long = volume_time_curve(DEMO)
    np.testing.assert_array_equal(long, (DEMO[:1000] * 0.001).astype(np.float32))
    short = volume_time_curve(DEMO[:300])
    assert short.shape == (1000,) and short.dtype == np.float32
    assert np.all(short[300:] == np.float32(DEMO[299] * 0.001))
    assert volume_time_curve(DEMO, n_points=50).shape == (50,)


@pytest.mark.parametrize(
    "channels",
    [
        ("flow_volume",),
        ("flow_volume", "volume_time"),
        ("volume_time", "flow_volume"),
        ("flow_volume", "flow_volume_norm"),
        ("flow_volume_norm", "volume_time", "flow_volume"),
        ("position", "flow_volume"),
        ("flow_volume", "flow_volume_norm", "position"),
    ],
)
def test_batch_equals_per_blow_functions(channels: tuple[str, ...], monkeypatch) -> None:
    monkeypatch.setattr(curves, "_CHUNK_ROWS", 7)  # several chunks, one partial
    blows = random_blows(23, seed=2) + [DEMO]
    out = curves_batch(blows, channels=channels)
    assert out.shape == (24, len(channels), 1000) and out.dtype == np.float32
    per_blow = {
        "flow_volume": flow_volume_curve,
        "flow_volume_norm": flow_volume_norm_curve,
        "volume_time": volume_time_curve,
        "position": lambda b: np.linspace(0, 1, 1000, dtype=np.float32),
    }
    for c, name in enumerate(channels):
        expected = np.stack([per_blow[name](b) for b in blows])
        np.testing.assert_array_equal(out[:, c], expected)


def test_batch_accepts_lists_and_floats_and_empty_input() -> None:
    as_list = [DEMO.tolist(), DEMO.astype(np.float64)]
    out = curves_batch(as_list, channels=("flow_volume", "volume_time"))
    np.testing.assert_array_equal(out[0], out[1])
    assert curves_batch([], channels=("volume_time",)).shape == (0, 1, 1000)


def test_batch_error_names_position_and_participant() -> None:
    blows = random_blows(6, seed=3)
    blows[4] = np.array([0.0, 12.0, np.nan])
    with pytest.raises(SpirolmInputError) as info:
        curves_batch(blows, eids=[10, 11, 12, 13, 14, 15], field="3066-0.2")
    msg = str(info.value)
    assert "blow 4 of the batch" in msg and "participant 14" in msg and "field 3066-0.2" in msg
    assert "non-finite" in msg


@pytest.mark.parametrize(
    "channels", [(), ("flow",), ("flow_volume", "flow_volume"), ("flow_volume_norm", "flow_volume_norm")]
)
def test_batch_rejects_bad_channels(channels: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="channels"):
        curves_batch([DEMO], channels=channels)


def test_batch_rejects_eids_of_wrong_length() -> None:
    with pytest.raises(ValueError, match="eids"):
        curves_batch([DEMO, DEMO], eids=[1])


# --- spirolm's normalised flow-volume channel ------------------------------------------------


def norm_reference(series: np.ndarray, n_points: int = 1000) -> np.ndarray:
    """Independent oracle for ``flow_volume_norm``, written from its definition, one step a line."""
    f = flow_centred(series)  # 80 ms centred difference, L/s, whole blow
    volume = np.maximum.accumulate(np.asarray(series, dtype=float))
    return np.interp(np.linspace(0, 1, n_points), volume / volume.max(), f / f.max())


def test_norm_curve_matches_its_definition_on_demo_and_random_blows() -> None:
    for blow in [DEMO, *random_blows(20, seed=4)]:
        got = flow_volume_norm_curve(blow)
        assert got.dtype == np.float32 and got.shape == (1000,)
        np.testing.assert_allclose(got, norm_reference(blow), rtol=0, atol=1e-6)
    assert flow_volume_norm_curve(DEMO, n_points=64).shape == (64,)


def test_norm_curve_shape_and_range_on_demo() -> None:
    c = flow_volume_norm_curve(DEMO)
    # Peak flow / PEF = 1 exactly at the grid point nearest the peak, within one grid step's change.
    assert 0.98 < c.max() <= 1.0
    # Demo PEF is reached at ~12 % of FVC (early peak, as in a good effort).
    assert 0.05 < np.argmax(c) / 999 < 0.2
    # Near FVC flow has fallen to a few % of PEF; the blow is monotone up to sensor noise.
    assert abs(c[-1]) < 0.02 and c.min() > -0.01
    # Descending limb: flow at 25/50/75 % FVC decreases (MEF75 > MEF50 > MEF25 ordering).
    assert c[250] > c[500] > c[750] > 0


def test_norm_curve_uses_whole_blow_not_first_10_s() -> None:
    # The demo lasts 12.2 s; truncating it at 10 s would move FVC and change the curve.
    assert DEMO.size > 1000
    assert not np.allclose(flow_volume_norm_curve(DEMO), flow_volume_norm_curve(DEMO[:1000]), atol=1e-3)


@pytest.mark.parametrize("scale", [2.0, 0.5, 3.0])
def test_norm_curve_is_scale_invariant(scale: float) -> None:
    """A blow scaled in volume (a bigger/smaller lung, same shape) gives the same normalised curve,
    while ML-based COPD's absolute curve changes."""
    base = DEMO.astype(np.float64)
    np.testing.assert_allclose(flow_volume_norm_curve(base * scale), flow_volume_norm_curve(base), atol=1e-6)
    assert not np.allclose(flow_volume_curve(base * scale), flow_volume_curve(base), atol=1e-3)


def test_norm_curve_separates_shapes_a_scalar_misses() -> None:
    """Two blows with equal FVC and PEF but different late-limb concavity give different curves
    (the asthma signal of the synthetic cohort)."""
    x = np.linspace(0, 1, 400)

    def blow(late: float) -> np.ndarray:
        g = (1 - x) / (1 + late * np.clip((x - 0.45) / 0.55, 0, 1) ** 2)
        t = np.concatenate(([0.0], np.cumsum(np.diff(x) / np.maximum(g[1:], 1e-3)))) * 0.08
        return np.interp(np.arange(0, t[-1], 0.01), t, x * 4000.0)

    plain, concave = flow_volume_norm_curve(blow(0.0)), flow_volume_norm_curve(blow(2.0))
    assert np.abs(plain[:400] - concave[:400]).max() < 0.02  # before the late limb: equal
    assert (plain[600:950] - concave[600:950]).min() > 0.02  # late limb: concave flow is lower


@pytest.mark.parametrize(
    "series", [np.zeros(50), np.full(30, 250.0)], ids=["all-zero", "constant"]
)
def test_norm_curve_rejects_blow_without_exhaled_volume(series: np.ndarray) -> None:
    with pytest.raises(SpirolmInputError, match="no exhaled volume") as info:
        flow_volume_norm_curve(series, eid=9, field="3066-0.0")
    assert "participant 9" in str(info.value) and "field 3066-0.0" in str(info.value)


def test_norm_batch_error_names_position_and_participant() -> None:
    blows = random_blows(5, seed=5)
    blows[3] = np.zeros(40, dtype=np.int32)
    with pytest.raises(SpirolmInputError) as info:
        curves_batch(blows, channels=("flow_volume", "flow_volume_norm"), eids=[1, 2, 3, 4, 5], field="volume_ml")
    msg = str(info.value)
    assert "blow 3 of the batch (participant 4)" in msg and "no exhaled volume" in msg
    # The ML-based COPD channel alone accepts the same batch (an all-zero curve, as the paper's code).
    assert np.all(curves_batch(blows, channels=("flow_volume",))[3] == 0)
