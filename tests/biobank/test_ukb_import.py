"""UK Biobank export import: formats, namings, covariates, labels, and every bad-input case."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biobank import cohort_io
from biobank.build import rerun_qc
from biobank.cohort_io import read_cohort
from biobank.splits import assign_split
from biobank.ukb_import import import_ukb_export
from signals.errors import SpirolmInputError
from signals.ukb3066 import format_3066, parse_3066

DEMO_TEXT = (Path(__file__).parents[1] / "fixtures" / "ukb_3066_demo_blow.txt").read_text().strip()
DEMO = parse_3066(DEMO_TEXT).volume_ml


def make_export(n: int = 6) -> pd.DataFrame:
    """A small field-ID export: every participant has two repeatable copies of the demo blow."""
    i = np.arange(n)
    return pd.DataFrame({
        "eid": 5000 + i,
        "31-0.0": i % 2,
        "21022-0.0": 50.0 + i,
        "50-0.0": 165.0 + i,
        "21001-0.0": 24.0 + i / 10,
        "20116-0.0": np.resize([0, 1, 2, -3], n),
        "20161-0.0": np.resize([np.nan, 12.0, 30.5, np.nan], n),
        "21000-0.0": np.resize([1001, 3001, 4001, 5, -1, 2], n),
        "189-0.0": -2.0 + i,
        "24006-0.0": 10.0 + i,
        "6152-0.0": np.resize([6, 8, 9, -7, np.nan, np.nan], n),
        "6152-0.1": np.resize([9, np.nan], n),
        "20107-0.0": np.resize([6, 1, np.nan], n),
        "20110-0.0": np.resize([np.nan, 6, 2], n),
        "20002-0.0": np.resize([1111, np.nan, 1472, np.nan, np.nan, 1065], n),
        "41270-0.0": np.resize(["J449", "J45.0 Predominantly allergic asthma", None, "I10", None, "J47"], n),
        "41270-0.1": np.resize([None, "I10"], n),
        "41271-0.0": np.resize([None, None, None, None, "4930", None], n),
        "3066-0.0": [format_3066(1, DEMO)] * n,
        "3066-0.1": [format_3066(2, (DEMO * 0.99).astype(np.int32))] * n,
        "3066-0.2": [None] * n,
        "true_risk_copd": np.linspace(0.05, 0.5, n),
    })


def to_rap(df: pd.DataFrame) -> pd.DataFrame:
    """RAP naming: p<field>_i<instance>[_a<array>], 41270 as one JSON-list cell, participant.eid."""
    out = pd.DataFrame({"participant.eid": df["eid"]})
    for col in df.columns:
        if col == "eid" or col.startswith("41270") or col.startswith("true_risk"):
            continue
        field, rest = col.split("-")
        inst, arr = rest.split(".")
        multi = field in {"3066", "6152", "20107", "20110", "20002", "41271"}
        out[f"p{field}_i{inst}" + (f"_a{arr}" if multi else "")] = df[col]
    out["p41270"] = [json.dumps([c for c in (a, b) if isinstance(c, str)])
                     for a, b in zip(df["41270-0.0"], df["41270-0.1"])]
    out["true_risk_copd"] = df["true_risk_copd"]
    return out


def run(tmp_path: Path, df: pd.DataFrame, name: str = "export.csv", **kw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / name
    if name.endswith(".parquet"):
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False, sep="\t" if name.endswith((".tsv", ".tab")) else ",")
    out = tmp_path / "cohort"
    kw.setdefault("progress", False)
    return import_ukb_export(path, out, **kw), out


def test_field_id_csv_import(tmp_path):
    summary, out = run(tmp_path, make_export(), chunksize=4)
    c = read_cohort(out)
    p = c.participants.set_index("eid")
    assert c.traits == ("copd", "asthma") and len(p) == 6 and summary.participants == 6
    assert p["sex"].tolist() == ["female", "male"] * 3
    assert p["smoking_status"].iloc[:3].tolist() == ["never", "previous", "current"]
    assert p["smoking_status"].isna().tolist() == [False, False, False, True, False, False]  # -3 → missing
    assert p.loc[5000, "pack_years"] == 0.0 and np.isnan(p.loc[5003, "pack_years"])  # never → 0; -3 → NA
    assert p["ethnicity"].tolist()[:4] == ["white", "south_asian", "black", "chinese"]
    assert pd.isna(p.loc[5004, "ethnicity"]) and p.loc[5005, "ethnicity"] == "mixed"
    assert p["gli_ethnicity"].tolist() == ["caucasian", "other", "african_american", "ne_asian", "other", "other"]
    assert p["copd"].tolist() == [1, 0, 1, 0, 0, 0]
    assert p["asthma"].tolist() == [1, 1, 0, 0, 1, 0]
    assert p["hay_fever_eczema"].tolist() == [1, 0, 1, 0, 1, 0]  # 6152 code 9 in array 0 or 1
    assert p["parental_copd"].tolist() == [1, 1, 0, 1, 1, 0]
    assert p["townsend"].tolist() == [-2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
    assert (p["qc_status"] == "pass").all() and (p["n_blows"] == 2).all()
    assert p["fvc_l"].round(2).eq(5.84).all() and p["fev1_z"].notna().all()
    assert p["true_risk_copd"].tolist() == pytest.approx(np.linspace(0.05, 0.5, 6).tolist())
    assert p["split"].tolist() == assign_split(p.index, seed=0).tolist()
    b = c.blows
    assert len(b) == 12 and b.groupby("eid")["is_best"].sum().eq(1).all()
    assert list(b["volume_ml"].iloc[0]) == DEMO.tolist()
    assert summary.labels["copd"] == {"cases": 2, "controls": 4, "missing": 0, "prevalence": pytest.approx(1 / 3)}
    assert summary.qc_status == {"pass": 6} and summary.parse_errors == 0
    info = json.loads((out / "cohort.json").read_text())
    assert info["traits"] == ["copd", "asthma"] and info["split_seed"] == 0 and "content_hash" in info
    assert info["summary"]["participants"] == 6


@pytest.mark.parametrize("name", ["export.tsv", "export.parquet"])
def test_tsv_and_parquet_give_the_same_cohort(tmp_path, name):
    _, ref = run(tmp_path / "ref", make_export())
    _, out = run(tmp_path / "other", make_export(), name=name)
    a, b = read_cohort(ref), read_cohort(out)
    pd.testing.assert_frame_equal(a.participants, b.participants)
    pd.testing.assert_frame_equal(a.blows.drop(columns="volume_ml"), b.blows.drop(columns="volume_ml"))


@pytest.mark.parametrize("name", ["export.csv", "export.parquet"])
def test_rap_naming_gives_the_same_labels(tmp_path, name):
    _, ref = run(tmp_path / "ref", make_export())
    _, out = run(tmp_path / "rap", to_rap(make_export()), name=name)
    a, b = read_cohort(ref), read_cohort(out)
    pd.testing.assert_frame_equal(a.participants, b.participants)


def test_import_is_deterministic_and_splits_are_cohort_independent(tmp_path):
    _, one = run(tmp_path / "a", make_export(8), chunksize=3)
    _, two = run(tmp_path / "b", make_export(8), chunksize=3)
    assert (one / "cohort.json").read_text() == (two / "cohort.json").read_text()  # no timestamps, same hash
    _, three = run(tmp_path / "d", make_export(8), chunksize=5)
    pd.testing.assert_frame_equal(read_cohort(one).participants, read_cohort(three).participants)
    _, sub = run(tmp_path / "c", make_export(8).iloc[[6, 2, 5]])
    full = read_cohort(one).participants.set_index("eid")["split"]
    part = read_cohort(sub).participants.set_index("eid")["split"]
    assert (full.loc[part.index] == part).all()


def test_user_phenotype_yaml(tmp_path):
    rules = tmp_path / "extra.yaml"
    rules.write_text("traits:\n  bronchiectasis:\n    rules:\n"
                     "      - {field: 41270, match: prefix, code_type: icd, codes: [J47], source: test}\n")
    summary, out = run(tmp_path, make_export(), phenotypes=rules)
    c = read_cohort(out)
    assert c.traits == ("copd", "asthma", "bronchiectasis")
    assert c.participants["bronchiectasis"].tolist() == [0, 0, 0, 0, 0, 1]
    assert summary.labels["bronchiectasis"]["cases"] == 1


# ---------------------------------------------------------------------------------------------------
# Malformed blows: recorded, never fatal.

@pytest.mark.parametrize(
    ("value", "reason", "code"),
    [
        ("blow3,4,0,0,12,x5,30", "non-numeric volume token 'x5'", "parse_error"),
        ("blow3,500,0,0,12,30", "num_points=500 is larger", "parse_error"),
        ("blow3,4,0,0,12,-30,40", "negative volume", "implausible_volume"),
        ("blow3,4,0,0,12,99999999999,40", "beyond any spirometer's range", "implausible_volume"),
        ("blow3,4,0,0,12,nan,40", "non-finite volume", "parse_error"),
        ("blow3", "malformed 3066 value", "parse_error"),
        ("bl0w3,4,0,1,2,3", "malformed 3066 header", "parse_error"),
        ("blow12345678901,4,0,1,2,3", "malformed 3066 header", "parse_error"),
    ],
)
def test_malformed_blow_is_a_rejected_blow(tmp_path, value, reason, code):
    df = make_export()
    df.loc[1, "3066-0.2"] = value
    df.loc[3, "3066-0.0"] = value
    df.loc[3, "3066-0.1"] = value
    summary, out = run(tmp_path, df)
    c = read_cohort(out)
    b = c.blows.set_index(["eid", "blow_index"])
    assert b.loc[(5001, 2), "qc_status"] == "reject"
    assert b.loc[(5001, 2), "qc_reason"].startswith(f"{code}: ") and reason in b.loc[(5001, 2), "qc_reason"]
    assert b.loc[(5001, 2), "volume_ml"] is None
    p = c.participants.set_index("eid")
    assert p.loc[5001, "qc_status"] == "pass" and p.loc[5001, "n_blows"] == 3
    assert p.loc[5003, "qc_status"] == "fail" and p.loc[5003, "qc_reason"] == f"no_usable_blow: {code}"
    assert summary.rejected_blows == {code: 3}
    assert summary.parse_errors == (3 if code == "parse_error" else 0)
    assert summary.implausible_blows == (3 if code == "implausible_volume" else 0)
    assert summary.qc_status == {"fail": 1, "pass": 5}
    ex = pd.read_csv(out / "qc_exclusions.csv")
    assert len(ex[ex["level"] == "blow"]) == 3 and ex[ex["level"] == "participant"]["eid"].tolist() == [5003]
    assert ex["reason"].str.contains(reason, regex=False).sum() == 3


def fast_start(k: float, until: int = 300) -> np.ndarray:
    """The demo blow with its first 3 s played ``k`` times faster: PEF ~27-31 L/s for k = 3.2-3.8, an
    artefact an export can carry (issue 16); otherwise a clean blow."""
    head = np.interp(np.arange(0, until / k) * k, np.arange(DEMO.size), DEMO)
    return np.concatenate((np.rint(head).astype(np.int32), DEMO[until:]))


def test_blows_with_pef_near_30_l_s_are_rejected_not_fatal(tmp_path):
    # Issue 16: blows of 27-32 L/s used to abort the import in the blows schema (in_range(0, 30)).
    df = make_export(8)
    fast = {5001: 3.2, 5004: 3.6, 5006: 3.8}
    for eid, k in fast.items():
        df.loc[df["eid"] == eid, "3066-0.0"] = format_3066(1, fast_start(k))
    df.loc[df["eid"] == 5006, "3066-0.1"] = format_3066(2, fast_start(3.4))  # no usable blow left
    summary, out = run(tmp_path, df, chunksize=3)
    c = read_cohort(out)
    p = c.participants.set_index("eid")
    b = c.blows.set_index(["eid", "blow_index"])
    assert sorted(p.index) == list(range(5000, 5008)) and summary.participants == 8
    for eid in fast:
        assert b.loc[(eid, 0), "qc_status"] == "reject" and b.loc[(eid, 0), "qc_reason"] == "implausible_flow"
        assert b.loc[(eid, 0), "pef_l_s"] > 27 and not b.loc[(eid, 0), "is_best"]  # the measured value is kept
    assert p.loc[5001, "qc_status"] == "warn" and p.loc[5001, "qc_reason"] == "single_acceptable_blow"
    assert p.loc[5001, "pef_l_s"] < 12  # from the remaining good blow
    assert p.loc[5006, "qc_status"] == "fail"
    assert p.loc[5006, "qc_reason"] == "no_acceptable_blow (blow0: implausible_flow; blow1: implausible_flow)"
    assert summary.rejected_blows == {"implausible_flow": 4} and summary.implausible_blows == 4
    ex = pd.read_csv(out / "qc_exclusions.csv")
    blows_ex = ex[ex["level"] == "blow"]
    assert sorted(zip(blows_ex["eid"], blows_ex["blow_index"])) == [(5001, 0), (5004, 0), (5006, 0), (5006, 1)]
    assert (blows_ex["reason"] == "implausible_flow").all()
    assert ex.loc[ex["level"] == "participant", "eid"].tolist() == [5006]


def test_schema_failure_names_every_offender_across_chunks(tmp_path, monkeypatch):
    # The schema guards the importer's own output. Simulate a QC bug (the plausibility check switched
    # off): the error must count every offending participant of the file, not only the first chunk's.
    monkeypatch.setattr("signals.qc.implausible_codes", lambda *args, **kwargs: [])
    df = make_export(12)
    bad = [5001, 5004, 5005, 5008, 5009, 5011]  # in all four chunks of 3
    for eid in bad:
        df.loc[df["eid"] == eid, "3066-0.0"] = format_3066(1, fast_start(3.6))
    with pytest.raises(SpirolmInputError) as err:
        run(tmp_path, df, chunksize=3)
    message = str(err.value)
    assert "participants column pef_l_s fails in_range(0.0, 20.0) for 6 participants" in message
    assert "participants 5001, 5004, 5005, 5008, 5009 and 1 more" in message
    assert "accepted blows column pef_l_s fails in_range(0.0, 20.0) for 6 participants" in message
    assert err.value.eid == 5001 and err.value.field == "pef_l_s" and err.value.file.endswith("export.csv")
    assert not list((tmp_path / "cohort").glob("*.parquet*"))


def test_mis_encoded_blow_cell_is_one_rejected_blow(tmp_path):
    path = tmp_path / "export.csv"
    make_export().to_csv(path, index=False)
    lines = path.read_bytes().split(b"\n")
    assert lines[3].startswith(b"5002,") and b'"blow1,' in lines[3]
    lines[3] = lines[3].replace(b'"blow1,', b'"bl\xb5w1,', 1)  # a Latin-1 byte: not UTF-8
    path.write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines))  # and a UTF-8 BOM before the header
    summary = import_ukb_export(path, tmp_path / "cohort", progress=False)
    c = read_cohort(tmp_path / "cohort")
    b = c.blows.set_index(["eid", "blow_index"])
    assert b.loc[(5002, 0), "qc_reason"].startswith("parse_error: malformed 3066 header 'bl\u00b5w1'")
    assert c.participants.set_index("eid").loc[5002, "qc_status"] == "warn"
    assert summary.parse_errors == 1 and summary.participants == 6


def test_non_utf8_covariate_names_the_column(tmp_path):
    path = tmp_path / "export.csv"
    make_export().to_csv(path, index=False)
    lines = path.read_bytes().split(b"\n")
    cells = lines[2].split(b",")
    cells[3] = b"16\xb56"  # 50-0.0 (height) of participant 5001
    lines[2] = b",".join(cells)
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(SpirolmInputError, match="not UTF-8 text") as err:
        import_ukb_export(path, tmp_path / "cohort", progress=False)
    assert err.value.field == "50-0.0" and err.value.file == str(path)


def test_empty_blow_cells_mean_no_blow(tmp_path):
    df = make_export()
    df.loc[2, ["3066-0.0", "3066-0.1"]] = ["", "  "]
    df.to_parquet(tmp_path / "e.parquet")
    summary = import_ukb_export(tmp_path / "e.parquet", tmp_path / "c", progress=False)
    p = read_cohort(tmp_path / "c").participants.set_index("eid")
    assert p.loc[5002, "qc_status"] == "fail" and p.loc[5002, "qc_reason"] == "no_blows"
    assert p.loc[5002, "n_blows"] == 0 and summary.blows == 10


# ---------------------------------------------------------------------------------------------------
# Structural problems: clear errors naming file / field / eid, and no half-written cohort.

@pytest.mark.parametrize(("drop", "field"), [("31-0.0", "31"), ("21022-0.0", "21022"), ("50-0.0", "50")])
def test_missing_required_covariate(tmp_path, drop, field):
    with pytest.raises(SpirolmInputError, match=f"required field {field}") as err:
        run(tmp_path, make_export().drop(columns=drop))
    assert err.value.field == field and err.value.file.endswith("export.csv")
    assert not (tmp_path / "cohort" / "participants.parquet").exists()


def test_missing_blow_columns_and_eid(tmp_path):
    with pytest.raises(SpirolmInputError, match="required field 3066"):
        run(tmp_path, make_export().drop(columns=["3066-0.0", "3066-0.1", "3066-0.2"]))
    with pytest.raises(SpirolmInputError, match="no participant id column"):
        run(tmp_path, make_export().rename(columns={"eid": "id"}))


def test_optional_columns_missing_become_na_with_warning(tmp_path, caplog):
    df = make_export().drop(columns=["21001-0.0", "20116-0.0", "21000-0.0", "189-0.0", "20107-0.0", "20110-0.0"])
    with caplog.at_level(logging.WARNING):
        summary, out = run(tmp_path, df)
    p = read_cohort(out).participants
    assert p["bmi"].isna().all() and p["smoking_status"].isna().all() and p["parental_copd"].isna().all()
    assert (p["gli_ethnicity"] == "other").all()
    assert any("20116" in w for w in summary.warnings) and any("parental_copd" in w for w in summary.warnings)
    assert "parental_copd" in caplog.text


def test_export_without_any_optional_field(tmp_path, caplog):
    # Only what ukb_fields.REQUIRED_FIELDS names (plus eid): every optional field is absent.
    df = make_export()[["eid", "31-0.0", "21022-0.0", "50-0.0", "3066-0.0", "3066-0.1", "3066-0.2"]]
    with caplog.at_level(logging.WARNING):
        summary, out = run(tmp_path, df)
    p = read_cohort(out).participants
    absent = {21001: ["bmi"], 20116: ["smoking_status"], 20161: ["pack_years"], 21000: ["ethnicity"],
              189: ["townsend"], 24006: ["pm25"], 6152: ["hay_fever_eczema"], 20107: ["parental_copd"],
              20110: ["parental_copd"], 20002: ["copd", "asthma"], 41270: ["copd", "asthma"],
              41271: ["copd", "asthma"]}
    for f, columns in absent.items():
        assert any(str(f) in w for w in summary.warnings), f
        assert str(f) in caplog.text
        for col in columns:
            assert p[col].isna().all(), col
    assert (p["gli_ethnicity"] == "other").all()  # GLI's composite group when ethnicity is unknown
    assert len(p) == 6 and (p["qc_status"] == "pass").all() and p["fev1_z"].notna().all()
    assert summary.labels["copd"]["missing"] == 6
    info = json.loads((out / "cohort.json").read_text())
    assert info["summary"]["warnings"] == summary.warnings


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [("31-0.0", 2, "unknown code 2"), ("20116-0.0", 7, "unknown code 7"), ("21000-0.0", 9999, "unknown code 9999"),
     ("21000-0.0", -7, "unknown code -7"), ("21022-0.0", "fifty", "non-numeric value 'fifty'")],
)
def test_unknown_codes_name_participant_and_field(tmp_path, column, value, message):
    df = make_export().astype({column: object})
    df.loc[4, column] = value
    with pytest.raises(SpirolmInputError, match=message) as err:
        run(tmp_path, df)
    assert err.value.eid == 5004 and err.value.field == column


def test_negative_dont_know_codes_map_to_missing(tmp_path):
    df = make_export()
    df["21000-0.0"] = -3
    df["20116-0.0"] = -3
    _, out = run(tmp_path, df)
    p = read_cohort(out).participants
    assert p["ethnicity"].isna().all() and p["smoking_status"].isna().all()


@pytest.mark.parametrize(
    ("column", "transform", "message"),
    [
        ("50-0.0", lambda s: s / 100, "wrong unit for the whole column"),
        ("20150-0.0", None, "looks like mL"),
        ("3063-0.1", None, "looks like mL"),
    ],
)
def test_wrong_units_across_a_column(tmp_path, column, transform, message):
    df = make_export()
    df[column] = transform(df[column]) if transform else np.linspace(2500, 3500, len(df))
    with pytest.raises(SpirolmInputError, match=message) as err:
        run(tmp_path, df)
    assert err.value.field == column and err.value.eid is None


def test_single_implausible_value_names_the_participant(tmp_path):
    df = make_export()
    df.loc[2, "50-0.0"] = 1.71
    with pytest.raises(SpirolmInputError, match="height_cm 1.71 outside") as err:
        run(tmp_path, df)
    assert err.value.eid == 5002 and err.value.field == "50-0.0"


def test_ukb_best_measures_in_litres_are_passed_through(tmp_path):
    df = make_export()
    df["20150-0.0"] = np.linspace(2.5, 3.5, len(df))
    _, out = run(tmp_path, df)
    p = read_cohort(out).participants
    assert p["ukb_fev1_best_l"].tolist() == pytest.approx(np.linspace(2.5, 3.5, 6).tolist())


@pytest.mark.parametrize("chunksize", [2, 100])
def test_duplicate_eids_within_and_across_chunks(tmp_path, chunksize):
    df = make_export()
    df.loc[5, "eid"] = 5000
    with pytest.raises(SpirolmInputError, match="duplicate participant id") as err:
        run(tmp_path, df, chunksize=chunksize)
    assert err.value.eid == 5000 and err.value.field == "eid"
    assert not list((tmp_path / "cohort").glob("*.parquet*"))


def test_non_integer_eid(tmp_path):
    df = make_export().astype({"eid": object})
    df.loc[1, "eid"] = "abc"
    with pytest.raises(SpirolmInputError, match="participant id 'abc' on data row 2"):
        run(tmp_path, df)


def test_truncated_csv_names_file_and_line(tmp_path):
    path = tmp_path / "export.csv"
    make_export().to_csv(path, index=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 500])  # cut inside the last row's blow string
    with pytest.raises(SpirolmInputError, match="line 7 is incomplete") as err:
        import_ukb_export(path, tmp_path / "cohort", progress=False)
    assert err.value.file == str(path)


def test_csv_row_with_wrong_field_count(tmp_path):
    path = tmp_path / "export.csv"
    make_export().to_csv(path, index=False)
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = "5002,1,55\n"
    path.write_text("".join(lines))
    with pytest.raises(SpirolmInputError, match="line 4 has 3 fields but the header has") as err:
        import_ukb_export(path, tmp_path / "cohort", progress=False)
    assert err.value.file == str(path)


def test_truncated_parquet(tmp_path):
    path = tmp_path / "export.parquet"
    make_export().to_parquet(path, index=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SpirolmInputError, match="truncated or corrupt") as err:
        import_ukb_export(path, tmp_path / "cohort", progress=False)
    assert err.value.file == str(path)


def test_empty_and_missing_exports(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(SpirolmInputError, match="no header"):
        import_ukb_export(tmp_path / "empty.csv", tmp_path / "c", progress=False)
    make_export().iloc[:0].to_csv(tmp_path / "header.csv", index=False)
    with pytest.raises(SpirolmInputError, match="no participants"):
        import_ukb_export(tmp_path / "header.csv", tmp_path / "c", progress=False)
    with pytest.raises(SpirolmInputError, match="does not exist"):
        import_ukb_export(tmp_path / "nope.csv", tmp_path / "c", progress=False)


def test_true_risk_out_of_range(tmp_path):
    df = make_export()
    df.loc[3, "true_risk_copd"] = 1.5
    with pytest.raises(SpirolmInputError, match=r"not a probability in \[0, 1\]") as err:
        run(tmp_path, df)
    assert err.value.eid == 5003 and err.value.field == "true_risk_copd"


def test_failed_import_keeps_previous_cohort(tmp_path):
    _, out = run(tmp_path, make_export())
    before = (out / cohort_io.PARTICIPANTS_FILE).read_bytes()
    df = make_export()
    df.loc[5, "eid"] = 5000
    with pytest.raises(SpirolmInputError):
        run(tmp_path, df, chunksize=2)
    assert (out / cohort_io.PARTICIPANTS_FILE).read_bytes() == before
    read_cohort(out)


def test_reference_equations_recorded_and_kept_by_qc_rerun(tmp_path):
    _, out = run(tmp_path / "default", make_export())
    info = json.loads((out / "cohort.json").read_text())
    assert info["reference_equations"] == dict.fromkeys(("fev1_z", "fvc_z", "fev1_fvc_z"), "gli_global2022")
    _, out12 = run(tmp_path / "g12", make_export(), reference_equations="gli2012")
    assert set(json.loads((out12 / "cohort.json").read_text())["reference_equations"].values()) == {"gli2012"}
    z_default = read_cohort(out).participants["fev1_z"]
    z12 = read_cohort(out12).participants["fev1_z"]
    assert not np.allclose(z_default, z12)

    # a QC re-run keeps the recorded equations (same z) unless told otherwise, and records what it used
    rerun = rerun_qc(out12, qc_standard="ats2019")
    assert set(rerun.info["reference_equations"].values()) == {"gli2012"}
    np.testing.assert_allclose(rerun.participants["fev1_z"], z12)
    rerun = rerun_qc(out12, reference_equations="gli_global2022")
    assert set(rerun.info["reference_equations"].values()) == {"gli_global2022"}
    np.testing.assert_allclose(rerun.participants["fev1_z"], z_default)
    with pytest.raises(SpirolmInputError, match="unknown reference equation"):
        run(tmp_path / "bad", make_export(), reference_equations="gli2099")
