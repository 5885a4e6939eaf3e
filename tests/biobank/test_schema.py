"""Cohort table schemas and cohort directory I/O: unit errors, bad codes, truncated files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from biobank import cohort_io, schema
from signals.errors import SpirolmInputError


def participants(n: int = 3) -> pd.DataFrame:
    df = pd.DataFrame({
        "eid": np.arange(100, 100 + n, dtype=np.int64),
        "age": np.linspace(45, 65, n), "sex": ["female", "male", "male"][:n] * 1,
        "height_cm": np.linspace(160, 185, n), "bmi": np.full(n, 26.0),
        "smoking_status": ["never", None, "current"][:n], "pack_years": [0.0, np.nan, 12.5][:n],
        "ethnicity": ["white", "south_asian", None][:n], "gli_ethnicity": ["caucasian", "other", "other"][:n],
        "hay_fever_eczema": pd.array([0, 1, None][:n], dtype="Int8"),
        "parental_copd": pd.array([None, 0, 1][:n], dtype="Int8"),
        "townsend": np.full(n, -1.5), "pm25": np.full(n, 9.9),
        "fev1_l": [2.8, 3.9, np.nan][:n], "fvc_l": [3.5, 4.9, np.nan][:n], "fev1_fvc": [0.8, 0.796, np.nan][:n],
        "pef_l_s": [7.0, 9.5, np.nan][:n], "fef25_75_l_s": [2.5, 3.5, np.nan][:n],
        "fev1_z": [-0.2, 0.1, np.nan][:n], "fvc_z": [-0.1, 0.3, np.nan][:n], "fev1_fvc_z": [0.0, -0.3, np.nan][:n],
        "qc_status": ["pass", "warn", "fail"][:n], "qc_reason": ["", "single_acceptable_blow", "no_blows"][:n],
        "n_blows": np.array([3, 2, 0][:n], dtype=np.int64), "split": ["train", "val", "test"][:n],
        "copd": pd.array([0, 1, None][:n], dtype="Int8"), "asthma": pd.array([1, 0, 0][:n], dtype="Int8"),
        "true_risk_copd": [0.01, 0.4, 0.2][:n],
    })
    return df


def blows() -> pd.DataFrame:
    vol = np.array([0, 100, 900, 2000, 2800, 3300, 3500], dtype=np.int32)
    return pd.DataFrame({
        "eid": np.array([100, 100, 101], dtype=np.int64),
        "instance": np.zeros(3, dtype=np.int64), "blow_index": np.array([0, 1, 0], dtype=np.int64),
        "blow_order": pd.array([1, 2, None], dtype="Int32"),
        "volume_ml": [vol, vol, None],
        "qc_status": ["accept", "reject", "reject"], "qc_reason": ["", "cough", "parse_error: bad token"],
        "is_best": [True, False, False],
        "fev1_l": [2.8, 2.7, np.nan], "fvc_l": [3.5, 3.4, np.nan], "fev1_fvc": [0.8, 0.79, np.nan],
        "pef_l_s": [7.0, 6.0, np.nan], "bev_ml": [50.0, 60.0, np.nan], "fet_s": [8.0, 7.5, np.nan],
    })


def test_valid_tables_pass():
    schema.validate_participants(participants(), "p.parquet", ["copd", "asthma"])
    schema.validate_participants(participants())  # traits inferred from Int8 columns
    schema.validate_blows(blows(), "b.parquet")


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("fev1_l", 2800.0, "mL where litres are expected"),
        ("fvc_l", 3600.0, "mL where litres are expected"),
        ("height_cm", 1.76, "metres"),
        ("fev1_fvc", 78.0, "percentage"),
        ("bmi", 260.0, "in_range"),
        ("age", 7.0, "in_range"),
    ],
)
def test_unit_errors_name_participant_column_and_hint(column, value, message):
    df = participants()
    df.loc[1, column] = value
    with pytest.raises(SpirolmInputError, match=message) as err:
        schema.validate_participants(df, "p.parquet")
    assert err.value.eid == 101 and err.value.field == column and err.value.file == "p.parquet"
    assert "101" in str(err.value)


@pytest.mark.parametrize(
    ("column", "value", "check"),
    [("sex", "M", "isin"), ("smoking_status", "ex", "isin"), ("qc_status", "ok", "isin"),
     ("split", "holdout", "isin"), ("true_risk_copd", 1.2, "in_range")],
)
def test_bad_codes(column, value, check):
    df = participants()
    df.loc[2, column] = value
    with pytest.raises(SpirolmInputError, match=check) as err:
        schema.validate_participants(df)
    assert err.value.eid == 102 and err.value.field == column


def test_trait_must_be_binary_and_present():
    df = participants()
    df["copd"] = pd.array([0, 2, None], dtype="Int8")
    with pytest.raises(SpirolmInputError, match="copd") as err:
        schema.validate_participants(df, traits=["copd"])
    assert err.value.eid == 101
    with pytest.raises(SpirolmInputError, match="missing required column"):
        schema.validate_participants(participants(), traits=["copd", "bronchiectasis"])


def test_duplicate_eid_and_missing_column():
    df = participants()
    df.loc[2, "eid"] = 101
    with pytest.raises(SpirolmInputError, match="uniqueness") as err:
        schema.validate_participants(df)
    assert err.value.eid == 101 and err.value.field == "eid"
    with pytest.raises(SpirolmInputError, match=r"missing required column\(s\) \['fev1_z'\]"):
        schema.validate_participants(participants().drop(columns="fev1_z"), "p.parquet")


def test_wrong_dtype_is_reported():
    df = participants()
    df["n_blows"] = df["n_blows"].astype(float)
    with pytest.raises(SpirolmInputError, match="n_blows"):
        schema.validate_participants(df)


def test_blows_checks():
    b = blows()
    b.loc[2, "is_best"] = True
    b.loc[2, "eid"] = 100
    b.loc[2, "blow_index"] = 2
    with pytest.raises(SpirolmInputError, match="more than one is_best blow for 1 participant .participants 100"):
        schema.validate_blows(b)
    b = blows()
    b.loc[1, "blow_index"] = 0
    with pytest.raises(SpirolmInputError, match="eid"):
        schema.validate_blows(b)
    b = blows()
    b.loc[0, "fvc_l"] = 3500.0
    with pytest.raises(SpirolmInputError, match="fvc_l") as err:
        schema.validate_blows(b)
    assert err.value.eid == 100


def test_write_read_roundtrip(tmp_path):
    cohort_io.write_cohort(tmp_path, participants(), blows(), traits=["copd", "asthma"], info={"x": 1})
    c = cohort_io.read_cohort(tmp_path)
    assert c.traits == ("copd", "asthma") and c.info["x"] == 1 and c.path == tmp_path
    assert str(c.participants["copd"].dtype) == "Int8" and c.participants["copd"].isna().sum() == 1
    assert str(c.blows["blow_order"].dtype) == "Int32"
    assert c.blows["volume_ml"].iloc[2] is None
    assert list(c.blows["volume_ml"].iloc[0]) == [0, 100, 900, 2000, 2800, 3300, 3500]
    pd.testing.assert_frame_equal(cohort_io.read_participants_file(tmp_path), c.participants)
    only = cohort_io.read_blows(tmp_path, eids=[101])
    assert only["eid"].tolist() == [101]
    assert cohort_io.read_cohort(tmp_path, blows=False).blows is None


def test_read_rejects_truncated_and_missing_files(tmp_path):
    cohort_io.write_cohort(tmp_path, participants(), blows(), traits=["copd", "asthma"])
    path = tmp_path / cohort_io.PARTICIPANTS_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SpirolmInputError, match="truncated or corrupt") as err:
        cohort_io.read_cohort(tmp_path)
    assert err.value.file == str(path)
    (tmp_path / cohort_io.BLOWS_FILE).unlink()
    with pytest.raises(SpirolmInputError, match="not found"):
        cohort_io.read_blows(tmp_path)
    (tmp_path / cohort_io.COHORT_JSON).write_text("{not json")
    with pytest.raises(SpirolmInputError, match="not valid JSON"):
        cohort_io.read_info(tmp_path)


def test_read_rejects_hand_edited_units(tmp_path):
    df = participants()
    cohort_io.write_cohort(tmp_path, df, blows(), traits=["copd", "asthma"])
    df.loc[0, "fev1_l"] = 2800.0
    df.to_parquet(tmp_path / cohort_io.PARTICIPANTS_FILE)
    with pytest.raises(SpirolmInputError, match="mL where litres") as err:
        cohort_io.read_participants_file(tmp_path)
    assert err.value.eid == 100


def test_spirometry_ranges_are_the_qc_plausibility_limits():
    from signals.plausibility import LIMITS

    for name in ("fev1_l", "fvc_l", "fev1_fvc", "pef_l_s", "fef25_75_l_s"):
        assert schema.RANGES[name] == (LIMITS[name].low, LIMITS[name].high)
    assert all(limit.why and "\n" not in limit.why for limit in LIMITS.values())


def test_only_accepted_blows_are_range_checked():
    b = blows()
    b.loc[1, ["pef_l_s", "fvc_l"]] = [31.0, 48.0]  # rejected (cough) blow: its odd values are kept as measured
    schema.validate_blows(b)
    b.loc[0, "pef_l_s"] = 31.0  # an accepted blow out of range is a QC bug: the guard fires
    with pytest.raises(SpirolmInputError, match=r"accepted blows column pef_l_s fails in_range\(0.0, 20.0\)") as err:
        schema.validate_blows(b, "b.parquet")
    assert err.value.eid == 100 and err.value.field == "pef_l_s"


def test_failures_collected_over_chunks_count_every_participant():
    failures = schema.SchemaFailures()
    for k in range(4):  # four chunks, two offenders each
        df = participants()
        df["eid"] = df["eid"] + 10 * k
        df.loc[[0, 1], "fev1_l"] = 2800.0
        schema.validate_participants(df, failures=failures)
    err = failures.error("p.parquet")
    assert "participants column fev1_l fails in_range(0.1, 10.0) for 8 participants" in str(err)
    assert "participants 100, 101, 110, 111, 120 and 3 more" in str(err) and "mL where litres" in str(err)
    assert err.eid == 100 and err.field == "fev1_l" and err.file == "p.parquet"


def test_write_cohort_records_reference_equations_in_full(tmp_path):
    info = {"reference_equations": {"fvc_z": "gli2012"}}
    cohort_io.write_cohort(tmp_path / "ok", participants(), blows(), traits=["copd", "asthma"], info=info)
    assert cohort_io.read_info(tmp_path / "ok")["reference_equations"] == {
        "fev1_z": "gli_global2022", "fvc_z": "gli2012", "fev1_fvc_z": "gli_global2022"}
    with pytest.raises(SpirolmInputError, match="unknown reference equation"):
        cohort_io.write_cohort(tmp_path / "bad", participants(), blows(), traits=["copd", "asthma"],
                               info={"reference_equations": "gli2099"})
    assert not (tmp_path / "bad").exists()
