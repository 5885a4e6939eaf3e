"""Spirometry measures: the public demo blow and analytic blows with known answers."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from signals.errors import SpirolmInputError
from signals.measures import (
    BlowMeasures,
    compute_measures,
    crossing_time,
    end_of_expiration,
    end_plateau_ml,
    flow_rebound,
    volume_dip_ml,
)
from signals.ukb3066 import parse_3066

DEMO = parse_3066(
    (Path(__file__).parents[1] / "fixtures" / "ukb_3066_demo_blow.txt").read_text().strip()
).volume_ml


def analytic_blow(
    onset_s: float = 0.2,
    hesitation_l_s: float = 0.0,
    hesitation_s: float = 0.0,
    duration_s: float = 8.0,
) -> np.ndarray:
    """Piecewise blow with closed-form measures, in whole mL at 100 Hz.

    Optional hesitation at ``hesitation_l_s`` for ``hesitation_s`` from ``onset_s``; then 6 L/s
    for 0.5 s (3 L), then an exponential approach to 1.5 L more with τ = 0.25 s (flow stays
    continuous at 6 L/s). FVC = 3 L + hesitation volume + 1.5 L.
    """
    t = np.arange(int(round(duration_s * 100)) + 1) * 0.01
    slow = hesitation_l_s * np.clip(t - onset_s, 0, hesitation_s)
    fast_start = onset_s + hesitation_s
    lin = 6.0 * np.clip(t - fast_start, 0, 0.5)
    tail = 1.5 * (1 - np.exp(-np.clip(t - fast_start - 0.5, 0, None) / 0.25))
    return np.rint((slow + lin + tail) * 1000).astype(np.int32)


def test_demo_blow_matches_the_reference_analysis() -> None:
    m = compute_measures(DEMO)
    assert m.fvc_l == pytest.approx(5.836)
    assert m.fev1_l == pytest.approx(4.68, abs=0.01)
    assert m.fev1_fvc == pytest.approx(0.80, abs=0.005)
    assert 10.0 <= m.pef_l_s <= 11.5
    assert m.bev_ml == pytest.approx(60, abs=2)
    assert m.fet_s == pytest.approx(12.2, abs=0.02)
    assert m.end_plateau_ml == pytest.approx(21.0)  # < 25 mL: a plateau
    assert m.time_to_pef_s == pytest.approx(0.06, abs=0.005)
    assert m.fef25_75_l_s == pytest.approx(4.4, abs=0.1)
    assert m.fef25_l_s > m.fef50_l_s > m.fef75_l_s > 0
    assert m.max_flow_rebound == 0.0  # flow falls monotonically after PEF
    assert m.max_volume_dip_ml == 6.0
    assert m.end_flow_l_s < 0.05
    assert m.n_samples == 1225
    assert m.pef_index == 10


def test_analytic_blow_measures() -> None:
    m = compute_measures(analytic_blow())
    # PEF on the 6 L/s segment; first full 80 ms window there is at 0.24 s, giving t0 = 0.2 s.
    assert m.pef_l_s == pytest.approx(6.0, abs=0.02)
    assert m.time_zero_s == pytest.approx(0.2, abs=0.002)
    assert m.time_to_pef_s == pytest.approx(0.04, abs=0.002)
    assert m.bev_ml == pytest.approx(0.0, abs=1.0)
    assert m.fvc_l == pytest.approx(4.5, abs=0.001)
    assert m.fev1_l == pytest.approx(3 + 1.5 * (1 - math.exp(-2)), abs=0.002)
    # 25 % (1.125 L) at 0.3875 s on the ramp; 75 % (3.375 L) when the tail has delivered 0.375 L.
    t75 = 0.7 - 0.25 * math.log(0.75)
    assert m.fef25_75_l_s == pytest.approx(2.25 / (t75 - 0.3875), rel=0.01)
    assert m.fef25_l_s == pytest.approx(6.0, abs=0.02)
    assert m.fef50_l_s == pytest.approx(6.0, abs=0.02)
    assert m.fef75_l_s == pytest.approx(4.5, rel=0.01)
    assert m.fet_s == pytest.approx(8.0 - 0.2, abs=0.002)
    assert m.end_plateau_ml == 0.0
    assert m.max_flow_rebound == 0.0 and m.max_volume_dip_ml == 0.0


def test_back_extrapolated_volume_of_a_hesitant_start() -> None:
    # 0.5 L/s for 0.4 s (200 mL) before the 6 L/s blast at 0.6 s: the tangent at PEF crosses zero
    # at 0.6 - 0.2/6 s, where the slow segment has delivered 0.5 * (0.3667 - 0) L.
    m = compute_measures(analytic_blow(hesitation_l_s=0.5, hesitation_s=0.4))
    t0 = 0.6 - 0.2 / 6
    assert m.time_zero_s == pytest.approx(t0, abs=0.002)
    assert m.bev_ml == pytest.approx(500 * (t0 - 0.2), abs=2)
    assert m.fvc_l == pytest.approx(4.7, abs=0.001)


def test_fev1_is_nan_when_record_ends_within_a_second() -> None:
    m = compute_measures(DEMO[:60])
    assert math.isnan(m.fev1_l) and math.isnan(m.fev1_fvc)
    assert m.fet_s < 1.0
    assert math.isnan(m.end_plateau_ml)  # record shorter than the plateau window
    assert m.fvc_l == pytest.approx(DEMO[:60].max() / 1000)


def test_flat_record_gives_nan_measures_not_an_exception() -> None:
    m = compute_measures(np.zeros(300, dtype=np.int32))
    assert m.pef_l_s == 0.0 and m.fvc_l == 0.0 and m.pef_index is None
    undefined = ("fev1_l", "fev1_fvc", "bev_ml", "time_zero_s", "fet_s", "fef25_75_l_s", "end_flow_l_s")
    for name in undefined:
        assert math.isnan(getattr(m, name)), name


def test_measures_are_frozen() -> None:
    m = compute_measures(DEMO)
    assert isinstance(m, BlowMeasures)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.fvc_l = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("bad", [np.array([0.0, np.nan, 5.0]), ["a", "b"], np.array([3])])
def test_bad_series_raise_naming_participant(bad: object) -> None:
    with pytest.raises(SpirolmInputError, match=r"participant 99: field 3066-0\.0"):
        compute_measures(bad, eid=99, field="3066-0.0")


def test_crossing_time_takes_first_of_tied_samples() -> None:
    mono = np.array([0.0, 1.0, 1.0, 1.0, 3.0])
    assert crossing_time(mono, 1.0) == pytest.approx(0.01)
    assert crossing_time(mono, 0.5) == pytest.approx(0.005)
    assert crossing_time(mono, 2.0) == pytest.approx(0.035)
    assert crossing_time(mono, 0.0) == 0.0
    assert math.isnan(crossing_time(mono, 3.5))


def test_end_plateau_uses_the_range_over_the_window() -> None:
    series = np.concatenate((np.arange(0, 1000, 10), np.full(101, 1000)))
    series[-50] = 970  # dip and recover inside the last second: net change 0, range 30
    assert end_plateau_ml(series) == 30.0
    assert end_plateau_ml(series, window_s=0.4) == 0.0
    assert math.isnan(end_plateau_ml(series, window_s=5.0))


def test_flow_rebound_detects_a_flow_drop_and_recover() -> None:
    m = compute_measures(DEMO)
    stalled = np.concatenate((DEMO[:40], np.repeat(DEMO[40], 10), DEMO[40:]))
    rebound = flow_rebound(stalled, m.time_zero_s, m.pef_index)
    assert rebound > 0.4  # flow went to ~0 and came back to ~5 L/s of a 10 L/s PEF
    # The same stall after the inspected window is not counted.
    assert flow_rebound(stalled, m.time_zero_s, m.pef_index, window_s=0.2) == 0.0


def test_volume_dip_and_end_of_expiration() -> None:
    dipped = DEMO.copy()
    dipped[500:600] -= 100
    assert volume_dip_ml(dipped) == 100.0
    m = compute_measures(DEMO[:200])  # record cut at 2 s, still exhaling
    t_end, end_flow = end_of_expiration(DEMO[:200], m.time_zero_s, m.fvc_l)
    assert 1.85 < t_end < 1.99  # the last 25 mL came in the final ~0.1 s
    assert end_flow > 0.3
    full = compute_measures(DEMO)
    assert full.expiration_time_s > 6.0 and full.end_flow_l_s < 0.05
