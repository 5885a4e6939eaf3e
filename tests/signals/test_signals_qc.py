"""ATS/ERS blow QC, repeatability and best-blow selection, on the demo blow and faulty variants."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from signals.errors import SpirolmInputError
from signals.measures import compute_measures
from signals.qc import (
    REASON_CODES,
    ParticipantQC,
    QCConfig,
    qc_blow,
    qc_participant,
    summarise,
)
from signals.ukb3066 import parse_3066

DEMO = parse_3066(
    (Path(__file__).parents[1] / "fixtures" / "ukb_3066_demo_blow.txt").read_text().strip()
).volume_ml.astype(np.int64)


# --- synthetic faulty blows, each derived from the real demo blow --------------------------------


def scaled(factor: float, series: np.ndarray = DEMO) -> np.ndarray:
    return np.rint(series * factor).astype(np.int64)


def with_slow_start(series: np.ndarray, volume_ml: int, samples: int) -> np.ndarray:
    """Prepend a slow linear ramp of ``volume_ml`` over ``samples`` × 10 ms (hesitant start)."""
    ramp = np.rint(np.linspace(0, volume_ml, samples + 1)[:-1]).astype(np.int64)
    return np.concatenate((ramp, series + volume_ml))


def with_cough(
    series: np.ndarray = DEMO, at: int = 50, depth_ml: int = 150, width: int = 15
) -> np.ndarray:
    """Subtract a half-sine volume bump in the first second: flow drops, reverses, recovers."""
    out = series.copy()
    out[at : at + width] -= np.rint(depth_ml * np.sin(np.linspace(0, np.pi, width))).astype(np.int64)
    return out


def with_stall(series: np.ndarray = DEMO, at: int = 40, samples: int = 10) -> np.ndarray:
    """Hold the volume for ``samples`` × 10 ms mid-blast (glottic closure / cough hesitation)."""
    return np.concatenate((series[:at], np.repeat(series[at], samples), series[at:]))


def abrupt_stop(series: np.ndarray = DEMO, at: int = 300, flat: int = 500) -> np.ndarray:
    """Stop exhaling at sample ``at`` and record a flat tail: a plateau, but not a real end."""
    return np.concatenate((series[:at], np.repeat(series[at - 1], flat)))


def with_leak(series: np.ndarray = DEMO) -> np.ndarray:
    out = series.copy()
    out[500:600] -= 100
    return out


def too_fast(series: np.ndarray = DEMO) -> np.ndarray:
    """The first 3 s played 3x faster: PEF ~26 L/s, otherwise a clean blow (an export artefact)."""
    return np.concatenate((series[:300:3], series[300:]))


def with_spike(series: np.ndarray = DEMO, at: int = 600, volume_ml: int = 40_000) -> np.ndarray:
    out = series.copy()
    out[at] = volume_ml
    return out


def crawl() -> np.ndarray:
    """0.9 L exhaled evenly over 10 s: FEV1 0.09 L, no forced expiration at all."""
    return np.r_[0, np.rint(np.linspace(1, 900, 1000))].astype(np.int64)


# --- blow-level -----------------------------------------------------------------------------------


def test_demo_blow_is_acceptable() -> None:
    assert qc_blow(DEMO) == []
    assert qc_blow(DEMO, compute_measures(DEMO), QCConfig(standard="ats2019")) == []


@pytest.mark.parametrize(
    ("blow", "expected"),
    [
        pytest.param(with_cough(), ["cough"], id="cough-dip"),
        pytest.param(with_stall(), ["cough"], id="cough-stall"),
        pytest.param(DEMO[:50], ["too_short", "no_end_of_test", "early_termination"], id="cut-0.5s"),
        pytest.param(DEMO[:200], ["no_end_of_test", "early_termination"], id="cut-2s"),
        pytest.param(abrupt_stop(), ["early_termination"], id="abrupt-stop-3s"),
        pytest.param(with_slow_start(DEMO, 600, 40), ["bev_high"], id="slow-start"),
        pytest.param(with_leak(), ["non_monotone"], id="leak"),
        pytest.param(np.zeros(800, dtype=np.int64), ["low_volume"], id="flat"),
        pytest.param(np.r_[0, 40, 80, np.full(700, 100)], ["low_volume"], id="tiny"),
        pytest.param(too_fast(), ["implausible_flow"], id="pef-26-l-s"),
        pytest.param(with_spike(), ["implausible_flow", "implausible_volume", "bev_high", "early_termination",
                                    "cough", "non_monotone"], id="40-l-spike"),
        pytest.param(crawl(), ["implausible_volume"], id="fev1-under-0.1-l"),
        pytest.param(np.r_[0, 30_000, np.zeros(300, dtype=np.int64)], ["implausible_volume", "low_volume"],
                     id="spike-in-empty-record"),
    ],
)
def test_each_reason_code_fires_on_its_artefact(blow: np.ndarray, expected: list[str]) -> None:
    assert qc_blow(blow) == expected


def test_every_reason_code_is_exercised_above() -> None:
    exercised = {
        "cough", "too_short", "no_end_of_test", "early_termination", "bev_high", "non_monotone",
        "low_volume", "implausible_flow", "implausible_volume",
    }
    assert set(REASON_CODES) == exercised


def test_an_implausible_blow_never_feeds_the_participant() -> None:
    reasons, pqc = qc_participant([too_fast(), DEMO])
    assert reasons == [["implausible_flow"], []]
    assert (pqc.status, pqc.reason, pqc.best_index) == ("warn", "single_acceptable_blow", 1)
    assert pqc.pef_l_s == pytest.approx(compute_measures(DEMO).pef_l_s)
    assert pqc.blow_measures[0].pef_l_s > 20  # measured, kept, but not reported


def test_long_blow_without_plateau_passes_on_fet() -> None:
    # Cut at 7 s: volume still rising (no plateau) but FET >= 6 s satisfies end of test.
    m = compute_measures(DEMO[:700])
    assert m.end_plateau_ml >= 25 and m.fet_s >= 6
    assert qc_blow(DEMO[:700], m) == []
    assert qc_blow(DEMO[:700], m, QCConfig(min_fet_s=8.0)) == ["no_end_of_test"]


def test_bev_floor_differs_between_2005_and_2019() -> None:
    # A 2 L blow with a hesitant start: BEV ~120 mL > 5 % FVC (~100 mL), between the two floors.
    blow = with_slow_start(scaled(1.9 / 5.836), 120, 20)
    m = compute_measures(blow)
    assert 110 < m.bev_ml < 145 and 1.9 < m.fvc_l < 2.1
    assert qc_blow(blow, m, QCConfig(standard="ats2005")) == []
    assert qc_blow(blow, m, QCConfig(standard="ats2019")) == ["bev_high"]


@pytest.mark.parametrize(
    ("bev_ml", "fvc_l", "standard", "rejected"),
    [
        (120.0, 2.0, "ats2005", False),  # floor 150 mL
        (120.0, 2.0, "ats2019", True),  # floor 100 mL, 5 % = 100 mL
        (151.0, 2.0, "ats2005", True),
        (280.0, 6.0, "ats2019", False),  # 5 % of 6 L = 300 mL beats both floors
        (310.0, 6.0, "ats2005", True),
    ],
)
def test_bev_rule_is_max_of_fraction_and_floor(
    bev_ml: float, fvc_l: float, standard: str, rejected: bool
) -> None:
    m = dataclasses.replace(compute_measures(DEMO), bev_ml=bev_ml, fvc_l=fvc_l)
    assert ("bev_high" in qc_blow(DEMO, m, QCConfig(standard=standard))) is rejected


def test_thresholds_come_from_the_config() -> None:
    stalled = with_stall()
    assert qc_blow(stalled, cfg=QCConfig(cough_rebound_fraction=0.6)) == []
    assert qc_blow(with_leak(), cfg=QCConfig(max_volume_dip_ml=150.0)) == []
    assert qc_blow(abrupt_stop(), cfg=QCConfig(early_termination_flow_l_s=0.3)) == []
    # Windows are re-evaluated on the curve even when measures were computed with defaults.
    cut = DEMO[:920]  # FET 9.15 s; volume range 19 mL over the last 1 s, 47 mL over the last 2 s
    m = compute_measures(cut)
    strict = QCConfig(min_fet_s=10.0)  # only a plateau can end the test
    assert qc_blow(cut, m, strict) == []
    assert qc_blow(cut, m, dataclasses.replace(strict, plateau_window_s=2.0)) == ["no_end_of_test"]


def test_config_validation() -> None:
    assert QCConfig().bev_floor_ml == 150.0 and QCConfig(standard="ats2019").bev_floor_ml == 100.0
    with pytest.raises(SpirolmInputError, match="qc.standard"):
        QCConfig(standard="ats1994")  # type: ignore[arg-type]
    with pytest.raises(SpirolmInputError, match="qc.plateau_ml"):
        QCConfig(plateau_ml=-1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        QCConfig().plateau_ml = 30.0  # type: ignore[misc]


def test_qc_blow_rejects_invalid_series() -> None:
    with pytest.raises(SpirolmInputError, match="participant 5"):
        qc_blow(np.array([0.0, np.nan, 3.0]), eid=5)


# --- participant-level ----------------------------------------------------------------------------


def test_repeatable_acceptable_blows_pass() -> None:
    blows = [scaled(0.98), DEMO, scaled(0.95)]
    reasons, summary = qc_participant(blows)
    assert reasons == [[], [], []]
    assert (summary.status, summary.reason, summary.repeatable) == ("pass", "", True)
    assert summary.best_index == 1
    assert summary.fvc_l == pytest.approx(5.836) and summary.fev1_l == pytest.approx(4.677, abs=0.001)
    assert summary.fev1_fvc == pytest.approx(summary.fev1_l / summary.fvc_l)
    assert summary.pef_l_s == pytest.approx(10.0125)
    assert (summary.n_blows, summary.n_acceptable, len(summary.blow_measures)) == (3, 3, 3)


def test_non_repeatable_blows_warn_with_the_gaps() -> None:
    reasons, summary = qc_participant([DEMO, scaled(0.95)])
    assert reasons == [[], []]
    assert summary.status == "warn" and not summary.repeatable
    assert summary.reason == "not_repeatable (fvc_diff_ml=292, fev1_diff_ml=234)"
    assert summary.fvc_l == pytest.approx(5.836)


def test_repeatability_tolerance_is_inclusive_and_configurable() -> None:
    _, summary = qc_participant([DEMO, scaled(0.95)], QCConfig(repeat_tol_ml=292.0))
    assert summary.status == "pass"


def test_single_acceptable_blow_warns() -> None:
    reasons, summary = qc_participant([DEMO, with_cough()])
    assert reasons == [[], ["cough"]]
    assert (summary.status, summary.reason, summary.best_index) == ("warn", "single_acceptable_blow", 0)
    assert summary.n_acceptable == 1 and not summary.repeatable
    assert summary.fev1_l == pytest.approx(4.677, abs=0.001)


def test_no_acceptable_blow_fails_and_lists_every_blow() -> None:
    blows = [with_slow_start(DEMO, 600, 40), with_cough(), DEMO[:200]]
    reasons, summary = qc_participant(blows)
    assert summary.status == "fail"
    assert summary.reason == (
        "no_acceptable_blow (blow0: bev_high; blow1: cough; blow2: no_end_of_test,early_termination)"
    )
    assert summary.best_index is None and not summary.repeatable
    for name in ("fev1_l", "fvc_l", "fev1_fvc", "pef_l_s", "fef25_75_l_s"):
        assert math.isnan(getattr(summary, name)), name
    assert len(summary.blow_measures) == 3  # the failed participant keeps its per-blow data


def test_zero_blows_fail_with_no_blows() -> None:
    reasons, summary = qc_participant([])
    assert reasons == []
    assert (summary.status, summary.reason, summary.n_blows) == ("fail", "no_blows", 0)
    assert math.isnan(summary.fev1_l)


def test_reported_fev1_and_fvc_are_maxima_and_pef_comes_from_best_blow() -> None:
    # B: 3 % more flow (higher FEV1 and PEF) but capped at 5.78 L (lower FVC than the demo).
    b = np.minimum(scaled(1.03), 5780)
    reasons, summary = qc_participant([DEMO, b])
    assert reasons == [[], []]
    mb = compute_measures(b)
    assert summary.fev1_l == pytest.approx(mb.fev1_l)  # from B
    assert summary.fvc_l == pytest.approx(5.836)  # from the demo
    assert summary.fev1_fvc == pytest.approx(mb.fev1_l / 5.836)
    assert summary.best_index == 1  # FEV1 + FVC: 4.817 + 5.78 > 4.677 + 5.836
    assert summary.pef_l_s == pytest.approx(mb.pef_l_s) and summary.pef_l_s > 10.2
    assert summary.status == "pass"


def test_invalid_blow_names_participant_and_position() -> None:
    with pytest.raises(SpirolmInputError) as info:
        qc_participant([DEMO, np.array([0.0, np.nan, 2.0])], eid=1234, field="3066-0.1")
    msg = str(info.value)
    assert "participant 1234" in msg and "field 3066-0.1" in msg and "blow 1: non-finite" in msg


def test_summarise_checks_lengths_and_is_frozen() -> None:
    with pytest.raises(ValueError):
        summarise([compute_measures(DEMO)], [])
    summary = summarise([compute_measures(DEMO)], [[]])
    assert isinstance(summary, ParticipantQC)
    with pytest.raises(dataclasses.FrozenInstanceError):
        summary.status = "pass"  # type: ignore[misc]
