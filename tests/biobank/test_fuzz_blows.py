"""Property-based fuzzing (hypothesis) of the field-3066 parser, cohort QC and the UKB importer.

The property everywhere: a blow value, however broken (truncated, spiked, non-numeric, negative or huge
volumes, empty arrays, bytes in UTF-8 / UTF-8 with BOM / Latin-1 / UTF-16, stray whitespace), ends as
a parsed blow or as a rejection with a reason; no other exception escapes and no participant is lost.
Settings are derandomized (CI sees the same examples every run) and kept small for a 2-core machine.
"""

from __future__ import annotations

import math
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from biobank import schema
from biobank.cohort_io import read_cohort
from biobank.cohort_qc import PRE_QC_CODES, reason_counts, rejection_reason, run_qc
from biobank.ukb_import import import_ukb_export
from signals.errors import SpirolmInputError
from signals.plausibility import IMPLAUSIBLE_FLOW, IMPLAUSIBLE_VOLUME, LIMITS
from signals.qc import REASON_CODES
from signals.ukb3066 import Blow, format_3066, parse_3066

KNOWN_CODES = set(REASON_CODES) | set(PRE_QC_CODES)

PARSER_SETTINGS = settings(max_examples=300, deadline=timedelta(milliseconds=500), derandomize=True,
                           database=None)
QC_SETTINGS = settings(max_examples=120, deadline=timedelta(seconds=2), derandomize=True, database=None,
                       suppress_health_check=[HealthCheck.too_slow])
IMPORT_SETTINGS = settings(max_examples=20, deadline=timedelta(seconds=20), derandomize=True, database=None,
                           suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

WHITESPACE = st.sampled_from([" ", "\t", "\r\n", "\n", "\xa0", "\u2003", "  \t"])
ODD_TOKENS = st.sampled_from(["1e400", "-1e400", "1e12", "-1e12", "99999999999", "inf", "nan", "NaN", "12.5",
                              "1_000", "\u0663", "0x10", "+7", "-0", "", " ", "\x00", "µ", "\ufeff12"])
ODD_HEADERS = st.sampled_from(["BLOW2", " blow 3 ", "blow", "blow99999999999", "bl\u00f3w1", "\ufeffblow1",
                               "blow-1", "blow\u0663", "1", ""])
ODD_VALUES = st.sampled_from([None, math.nan, 0, 3.5, "", "  ", "\ufeff", "blow1", "blow1,3", "blow1,3,",
                              "blow1,0,", "blow1,-2,0,1", "blow1,2,,", "blow1,1,0", "blow1,1,7", "[]", "NA",
                              "blow1,2,0,0,0", "blow1,3,0,0,0,0"])


@st.composite
def volume_series(draw: st.DrawFn) -> np.ndarray:
    """A blow-like cumulative volume (mL): exponential emptying of an FVC, noise, odd scalings.

    Two in three are lifelike (a blow QC can accept); the rest use wild sizes, lengths and speeds.
    """
    if draw(st.integers(0, 2)):
        n, fvc_ml, tau_s = draw(st.integers(650, 1300)), draw(st.integers(1500, 7000)), draw(st.floats(0.3, 1.1))
    else:
        n, fvc_ml, tau_s = draw(st.integers(1, 1400)), draw(st.integers(0, 12_000)), draw(st.floats(0.05, 3.0))
    lead = draw(st.integers(0, 10))
    t = np.clip(np.arange(n) / 100.0 - lead / 100.0, 0.0, None)
    v = fvc_ml * (1.0 - np.exp(-t / tau_s))
    noise_ml = draw(st.sampled_from([0.0, 1.0, 5.0, 60.0]))
    if noise_ml:
        v = v + np.random.default_rng(draw(st.integers(0, 2**16))).normal(0.0, noise_ml, n)
    v = np.clip(np.rint(v), 0, None)
    transform = draw(st.sampled_from(["none"] * 5 + ["x10", "x1000", "fast", "cut"]))
    if transform == "x10":
        v = v * 10
    elif transform == "x1000":
        v = v * 1000
    elif transform == "fast":
        v = v[:: draw(st.integers(2, 5))]
    elif transform == "cut":
        v = v[: draw(st.integers(1, n))]
    return v.astype(np.int64)


@st.composite
def mutated_tokens(draw: st.DrawFn, tokens: list[str]) -> list[str]:
    """One random corruption of a ``blow<k>,<n>,<v...>`` token list."""
    tokens = list(tokens)
    kind = draw(st.sampled_from(["truncate", "spike", "negative", "junk", "odd", "whitespace", "drop",
                                 "empty_array", "num_points", "header"]))
    i = draw(st.integers(2, len(tokens) - 1)) if len(tokens) > 2 else None
    if kind == "truncate":
        text = ",".join(tokens)
        return text[: draw(st.integers(0, len(text)))].split(",")
    if kind == "empty_array":
        return tokens[:2] + draw(st.sampled_from([[], [""], [" "]]))
    if kind == "num_points" and len(tokens) > 1:
        tokens[1] = str(draw(st.integers(-5, 5000)))
    elif kind == "header":
        tokens[0] = draw(ODD_HEADERS)
    elif i is None:
        return tokens
    elif kind == "spike":
        tokens[i] = str(draw(st.integers(10_001, 10**13)))
    elif kind == "negative":
        tokens[i] = str(-draw(st.integers(1, 10**6)))
    elif kind == "junk":
        tokens[i] = draw(st.text(max_size=4))
    elif kind == "odd":
        tokens[i] = draw(ODD_TOKENS)
    elif kind == "whitespace":
        tokens[i] = draw(WHITESPACE) + tokens[i] + draw(WHITESPACE)
    elif kind == "drop":
        del tokens[i]
    return tokens


def _encode(text: str, encoding: str) -> str | bytes:
    if encoding == "str":
        return text
    if encoding == "bom-str":
        return "\ufeff" + text
    return text.encode(encoding, errors="replace")


@st.composite
def blow_values(draw: st.DrawFn) -> object:
    """A field-3066 cell: mostly (corrupted) blows, sometimes random text/bytes or odd scalars."""
    kind = draw(st.sampled_from(["blow"] * 8 + ["text", "bytes", "odd"]))
    if kind == "text":
        return draw(st.text(max_size=40))
    if kind == "bytes":
        return draw(st.binary(max_size=40))
    if kind == "odd":
        return draw(ODD_VALUES)
    series = draw(volume_series())
    tokens = format_3066(draw(st.integers(0, 12)), series, padding_zeros=draw(st.integers(0, 6))).split(",")
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))):
        tokens = draw(mutated_tokens(tokens))
    text = ",".join(tokens)
    if draw(st.booleans()):
        text = draw(WHITESPACE) + text + draw(WHITESPACE)
    if draw(st.integers(0, 7)) == 0:
        text = text.replace("0", "\u00b5", 1)  # one non-ASCII character, for the Latin-1 / UTF-16 cases
    return _encode(text, draw(st.sampled_from(["str"] * 4 + ["utf-8", "utf-8-sig", "latin-1", "utf-16",
                                                             "bom-str"])))


def parse_or_reason(value: object) -> Blow | str:
    """The parser's outcome: a well-formed :class:`Blow`, or the ``qc_reason`` the importer records."""
    try:
        blow = parse_3066(value, eid=7, field="3066-0.0")  # type: ignore[arg-type]
    except SpirolmInputError as exc:
        reason = rejection_reason(exc)
        assert reason.split(":")[0] in PRE_QC_CODES and exc.problem
        assert str(exc).startswith("participant 7: field 3066-0.0: ")
        event(f"parser: {reason.split(':')[0]}")
        return reason
    event("parser: blow")
    assert blow.volume_ml.dtype == np.int32 and blow.volume_ml.ndim == 1 and blow.volume_ml.size >= 1
    assert (blow.volume_ml >= 0).all() and 0 <= blow.order < 2**31 and blow.num_points >= 1
    return blow


# --------------------------------------------------------------------------------------------------
# Parser.

@PARSER_SETTINGS
@given(blow_values())
def test_parser_gives_a_blow_or_a_reason(value: object) -> None:
    parse_or_reason(value)


@PARSER_SETTINGS
@given(volume_series(), st.integers(0, 12), st.integers(0, 6),
       st.sampled_from(["str", "utf-8", "utf-8-sig", "latin-1", "bom-str"]), WHITESPACE)
def test_clean_blow_survives_encoding_and_whitespace(series, order, padding, encoding, pad) -> None:
    start = 1 if padding > 0 and series[0] == 0 else 0
    assume(series.size > start)  # a lone padding zero is no blow (num_points 0)
    text = pad + format_3066(order, series, padding_zeros=padding) + pad
    try:
        value = text.encode(encoding) if encoding not in ("str", "bom-str") else _encode(text, encoding)
    except UnicodeEncodeError:
        assume(False)  # whitespace the encoding cannot carry
    blow = parse_or_reason(value)
    assert isinstance(blow, Blow) and blow.order == order
    np.testing.assert_array_equal(blow.volume_ml[-(series.size - start):], series[start:])


# --------------------------------------------------------------------------------------------------
# Cohort QC on whatever the parser lets through.

def _one_participant() -> pd.DataFrame:
    return pd.DataFrame({"eid": np.array([1], dtype=np.int64), "age": [55.0], "sex": ["male"],
                         "height_cm": [176.0], "gli_ethnicity": ["caucasian"]})


@QC_SETTINGS
@given(st.lists(blow_values(), min_size=1, max_size=3))
def test_qc_rejects_with_a_reason_and_accepted_blows_are_plausible(values: list) -> None:
    rows = []
    for k, value in enumerate(values):
        out = parse_or_reason(value)
        volume, reason = (out.volume_ml, "") if isinstance(out, Blow) else (None, out)
        rows.append({"eid": 1, "instance": 0, "blow_index": k, "blow_order": k + 1, "volume_ml": volume,
                     "qc_reason": reason})
    blows = pd.DataFrame(rows).astype({"eid": "int64", "instance": "int64", "blow_index": "int64",
                                       "blow_order": "Int32"})
    participants, blows, exclusions = run_qc(_one_participant(), blows, progress=False)

    for _, b in blows.iterrows():
        artefacts = sorted(set(reason_counts([b["qc_reason"]])) & {IMPLAUSIBLE_FLOW, IMPLAUSIBLE_VOLUME})
        event(f"qc: {b['qc_status']} {artefacts}")
        assert (b["qc_status"], b["qc_reason"] == "") in (("accept", True), ("reject", False))
        assert set(reason_counts([b["qc_reason"]])) <= KNOWN_CODES
        if b["volume_ml"] is not None and np.max(b["volume_ml"]) > LIMITS["volume_ml"].high:
            assert IMPLAUSIBLE_VOLUME in b["qc_reason"].split(";")
        if b["qc_status"] == "accept":
            for name in ("fev1_l", "fvc_l", "fev1_fvc", "pef_l_s"):
                assert not b[name] > LIMITS[name].high and not b[name] < LIMITS[name].low, name
        elif np.isfinite(b["pef_l_s"]) and b["pef_l_s"] > LIMITS["pef_l_s"].high:
            assert IMPLAUSIBLE_FLOW in b["qc_reason"].split(";")
    p = participants.iloc[0]
    assert (p["qc_status"] == "fail") == (not (blows["qc_status"] == "accept").any())
    assert p["qc_status"] == "pass" or p["qc_reason"]
    assert len(exclusions[exclusions["level"] == "blow"]) == (blows["qc_status"] == "reject").sum()
    # The schema guards QC's output: it never fires on input data.
    participants["split"] = "train"
    for col in ("bmi", "pack_years", "townsend", "pm25"):
        participants[col] = np.nan
    for col in ("smoking_status", "ethnicity"):
        participants[col] = None
    for col in ("hay_fever_eczema", "parental_copd"):
        participants[col] = pd.array([None], dtype="Int8")
    schema.validate_participants(participants, traits=[])
    schema.validate_blows(blows.astype({"blow_order": "Int32"}))


# --------------------------------------------------------------------------------------------------
# The importer, on small exports built from fuzzed blow cells.

BLOW_COLUMNS = ("3066-0.0", "3066-0.1", "3066-0.2")


def _csv_cell(value: object) -> bytes:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return b""
    raw = bytes(value) if isinstance(value, (bytes, bytearray)) else str(value).encode("utf-8")
    return b'"' + raw.replace(b'"', b'""') + b'"'


def _write_export(path: Path, cells: list[list[object]], bom: bool) -> list[int]:
    eids = [1000 + i for i in range(len(cells))]
    lines = [("\ufeff" if bom else "").encode() + ",".join(("eid", "31-0.0", "21022-0.0", "50-0.0")
                                                          + BLOW_COLUMNS).encode()]
    for eid, row in zip(eids, cells):
        row = list(row) + [None] * (len(BLOW_COLUMNS) - len(row))
        lines.append(f"{eid},{eid % 2},{50 + eid % 20},{160 + eid % 30},".encode()
                     + b",".join(_csv_cell(v) for v in row))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return eids


@IMPORT_SETTINGS
@given(cells=st.lists(st.lists(blow_values(), max_size=len(BLOW_COLUMNS)), min_size=1, max_size=5),
       chunksize=st.integers(1, 4), bom=st.booleans())
def test_importer_never_loses_a_participant(cells: list[list[object]], chunksize: int, bom: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "export.csv"
        eids = _write_export(export, cells, bom)
        summary = import_ukb_export(export, Path(tmp) / "cohort", chunksize=chunksize, progress=False)
        cohort = read_cohort(Path(tmp) / "cohort")  # validates both tables again
        exclusions = pd.read_csv(Path(tmp) / "cohort" / "qc_exclusions.csv")

    p = cohort.participants.set_index("eid")
    assert sorted(p.index) == eids and summary.participants == len(eids)
    b = cohort.blows
    assert ((b["qc_status"] == "accept") == (b["qc_reason"] == "")).all()
    rejected = b[b["qc_status"] == "reject"]
    counts = reason_counts(rejected["qc_reason"].tolist())
    assert set(counts) <= KNOWN_CODES and summary.rejected_blows == counts
    assert summary.implausible_blows == sum(
        1 for r in rejected["qc_reason"] if {IMPLAUSIBLE_FLOW, IMPLAUSIBLE_VOLUME} & set(reason_counts([r])))
    listed = exclusions[exclusions["level"] == "blow"]
    assert sorted(zip(listed["eid"], listed["blow_index"])) == sorted(zip(rejected["eid"], rejected["blow_index"]))
    failed = exclusions[exclusions["level"] == "participant"]["eid"].tolist()
    assert sorted(failed) == sorted(p.index[p["qc_status"] == "fail"])
    for eid, row in zip(eids, cells):
        mine = b[b["eid"] == eid]
        parseable = sum(isinstance(parse_or_reason(v), Blow) for v in row)
        assert parseable <= len(mine) <= len(row) and p.loc[eid, "n_blows"] == len(mine)
        assert (p.loc[eid, "qc_status"] == "fail") == (not (mine["qc_status"] == "accept").any())
