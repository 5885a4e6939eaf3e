"""Field-3066 parser: the public demo blow, round trips, and every malformed-input case."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from signals.errors import SpirolmInputError
from signals.ukb3066 import Blow, format_3066, parse_3066

DEMO_TEXT = (Path(__file__).parents[1] / "fixtures" / "ukb_3066_demo_blow.txt").read_text().strip()
EID, FIELD = 1234567, "3066-0.1"


def test_demo_blow_parses_to_the_published_shape() -> None:
    blow = parse_3066(DEMO_TEXT)
    assert (blow.order, blow.num_points, blow.padding_zeros) == (2, 1224, 4)
    # One padding zero is kept as time 0, so num_points + 1 samples (12.24 s at 100 Hz).
    assert blow.volume_ml.dtype == np.int32
    assert blow.volume_ml.size == 1225
    assert blow.volume_ml[:4].tolist() == [0, 3, 10, 25]
    assert blow.volume_ml.max() == 5836
    assert blow.volume_ml[-1] == 5831


def test_demo_blow_formats_back_to_the_identical_string() -> None:
    blow = parse_3066(DEMO_TEXT)
    assert format_3066(blow.order, blow.volume_ml, padding_zeros=blow.padding_zeros) == DEMO_TEXT


@pytest.mark.parametrize("padding", [1, 4, 7])
def test_round_trip_of_random_series(padding: int) -> None:
    rng = np.random.default_rng(padding)
    volume = np.concatenate(([0], np.cumsum(rng.integers(0, 60, size=400)))).astype(np.int32)
    text = format_3066(3, volume, padding_zeros=padding)
    blow = parse_3066(text)
    assert blow.order == 3
    assert blow.padding_zeros == padding
    np.testing.assert_array_equal(blow.volume_ml, volume)


def test_header_tokens_are_trusted_over_a_fixed_offset() -> None:
    # No padding at all: the series is taken as is.
    blow = parse_3066("blow1,4,5,10,20,30")
    assert blow.volume_ml.tolist() == [5, 10, 20, 30]
    assert blow.padding_zeros == 0


MALFORMED = [
    pytest.param("blow1,3,0,0,12,x7", "non-numeric volume token 'x7' at sample 3", id="non-numeric"),
    pytest.param("blow1,9,0,0,12,30", "num_points=9 is larger than the 4", id="num-points-too-large"),
    pytest.param("blow1,3,0,0,-5,30", "negative volume -5", id="negative"),
    pytest.param("blow1,3,0,0,nan,30", "non-finite volume 'nan'", id="nan"),
    pytest.param("blow1,3,0,0,12,inf", "non-finite volume 'inf'", id="inf"),
    pytest.param("", "empty", id="empty"),
    pytest.param("   ", "empty", id="blank"),
    pytest.param(None, "missing", id="none"),
    pytest.param(math.nan, "missing", id="float-nan"),
    pytest.param("spiro1,3,0,12,30", "malformed 3066 header 'spiro1'", id="bad-header"),
    pytest.param("blowX,3,0,12,30", "malformed 3066 header 'blowX'", id="bad-order"),
    pytest.param("blow1", "expected 'blow<order>,<num_points>", id="header-only"),
    pytest.param("blow1,abc,0,12,30", "num_points token 'abc'", id="bad-num-points"),
    pytest.param("blow1,0,0,12", "num_points is 0", id="zero-num-points"),
    pytest.param("blow1,3,0,0,12.5,30", "integer mL", id="fractional"),
]


@pytest.mark.parametrize(("value", "message"), MALFORMED)
def test_malformed_value_names_participant_and_field(value: object, message: str) -> None:
    with pytest.raises(SpirolmInputError) as info:
        parse_3066(value, eid=EID, field=FIELD)  # type: ignore[arg-type]
    err = info.value
    assert message in str(err)
    assert (err.eid, err.field) == (EID, FIELD)
    assert str(err).startswith(f"participant {EID}: field {FIELD}: ")


def test_error_without_context_has_no_location_prefix() -> None:
    with pytest.raises(SpirolmInputError) as info:
        parse_3066("blow1,3,0,0,-5,30")
    assert str(info.value) == "negative volume -5 mL at sample 2"


def test_blow_is_immutable() -> None:
    blow = parse_3066("blow1,2,0,5,9")
    assert isinstance(blow, Blow)
    with pytest.raises(AttributeError):
        blow.order = 3  # type: ignore[misc]
