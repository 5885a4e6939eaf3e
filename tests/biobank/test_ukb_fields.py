"""Column-name parsing, coding tables and cell normalisation for UK Biobank exports."""

from __future__ import annotations

import numpy as np
import pytest

from biobank import ukb_fields
from biobank.ukb_fields import FieldRef, normalise_code, parse_column, split_multi
from signals.errors import SpirolmInputError


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("31-0.0", FieldRef(31, 0, 0)),
        ("3066-2.1", FieldRef(3066, 2, 1)),
        ("f.41270.0.12", FieldRef(41270, 0, 12)),
        ("p3066_i0_a2", FieldRef(3066, 0, 2)),
        ("p31_i0", FieldRef(31, 0, None)),
        ("p41270_a3", FieldRef(41270, None, 3)),
        ("p41270", FieldRef(41270, None, None)),
        ("eid", None),
        ("true_risk_copd", None),
        ("31-0", None),
        ("px31", None),
    ],
)
def test_parse_column(name, expected):
    assert parse_column(name) == expected


def test_columns_for_field_orders_by_instance_and_array_and_treats_missing_instance_as_zero():
    refs = ukb_fields.map_columns(["eid", "3066-1.0", "3066-0.2", "3066-0.0", "p31", "31-1.0"])
    assert ukb_fields.columns_for_field(refs, 3066) == ["3066-0.0", "3066-0.2", "3066-1.0"]
    assert ukb_fields.columns_for_field(refs, 3066, instance=0) == ["3066-0.0", "3066-0.2"]
    assert ukb_fields.columns_for_field(refs, 31, instance=0) == ["p31"]


@pytest.mark.parametrize("col", ["eid", "participant.eid", "Participant ID"])
def test_find_eid_column_accepts_known_spellings(col):
    assert ukb_fields.find_eid_column([col, "31-0.0"]) == col


def test_find_eid_column_errors_name_the_file():
    with pytest.raises(SpirolmInputError, match="no participant id column") as err:
        ukb_fields.find_eid_column(["id", "31-0.0"], file="x.csv")
    assert err.value.file == "x.csv"
    with pytest.raises(SpirolmInputError, match="several participant id columns"):
        ukb_fields.find_eid_column(["eid", "participant.eid"])


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ('["J449","I10"]', ["J449", "I10"]),
        ("['J449', 'I10']", ["J449", "I10"]),
        ("J449|I10", ["J449", "I10"]),
        ("J449", ["J449"]),
        (["J449", None, "I10"], ["J449", "I10"]),
        (np.array(["a", "b"], dtype=object), ["a", "b"]),
        ("", []),
        (None, []),
        (float("nan"), []),
        ("NA", []),
    ],
)
def test_split_multi(cell, expected):
    assert split_multi(cell) == expected


@pytest.mark.parametrize(
    ("raw", "code_type", "expected"),
    [
        ("J44.9 Chronic obstructive pulmonary disease, unspecified", "icd", "J449"),
        ("j45.0", "icd", "J450"),
        ('"4912"', "icd", "4912"),
        (4912.0, "icd", "4912"),
        ("0389", "icd", "0389"),
        ("6.0", "integer", "6"),
        (6.0, "integer", "6"),
        ("1111", "integer", "1111"),
        ("-7", "integer", "-7"),
        ("  ", "integer", ""),
    ],
)
def test_normalise_code(raw, code_type, expected):
    assert normalise_code(raw, code_type) == expected


def test_coding_tables_cover_documented_codes():
    assert ukb_fields.SEX_CODES == {0: "female", 1: "male"}
    assert ukb_fields.SMOKING_CODES[2] == "current" and -3 in ukb_fields.SMOKING_MISSING_CODES
    assert {ukb_fields.ETHNICITY_CODES[c] for c in (1, 1001, 1002, 1003)} == {"white"}
    assert {ukb_fields.ETHNICITY_CODES[c] for c in (3001, 3002, 3003)} == {"south_asian"}
    assert ukb_fields.ETHNICITY_CODES[3004] == "other" and ukb_fields.ETHNICITY_CODES[5] == "chinese"
    # GLI-2012 has no South-Asian equation: documented fallback to the 'other' composite.
    assert ukb_fields.GLI_ETHNICITY["south_asian"] == "other"
    assert ukb_fields.GLI_ETHNICITY["black"] == "african_american"
    assert ukb_fields.GLI_ETHNICITY["chinese"] == "ne_asian"
