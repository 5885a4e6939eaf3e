"""Cohort-level QC orchestration: blow flags, best blow, participant status, z-scores, exclusions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biobank import cohort_qc
from biobank.cohort_qc import reason_counts, run_qc
from signals import gli
from signals.errors import SpirolmInputError
from signals.qc import QCConfig
from signals.ukb3066 import parse_3066

DEMO = parse_3066((Path(__file__).parents[1] / "fixtures" / "ukb_3066_demo_blow.txt").read_text().strip()).volume_ml


def _participants(eids) -> pd.DataFrame:
    n = len(eids)
    return pd.DataFrame({"eid": np.asarray(eids, dtype=np.int64), "age": np.full(n, 55.0),
                         "sex": ["male"] * n, "height_cm": np.full(n, 176.0), "gli_ethnicity": ["caucasian"] * n})


def _blow(eid, volume, instance=0, index=0, reason=""):
    return {"eid": eid, "instance": instance, "blow_index": index, "blow_order": index + 1,
            "volume_ml": volume, "qc_reason": reason}


def _table(rows) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for c in ("eid", "instance", "blow_index"):
        df[c] = df[c].astype("int64")
    return df


def test_demo_blows_pass_and_best_is_largest():
    smaller = (DEMO * 0.99).astype(np.int32)  # 58 mL less FVC: repeatable
    p, b, ex = run_qc(_participants([1]), _table([_blow(1, smaller, index=0), _blow(1, DEMO, index=1)]))
    row = p.iloc[0]
    assert row["qc_status"] == "pass" and row["qc_reason"] == ""
    assert row["fvc_l"] == pytest.approx(5.84, abs=0.02) and row["fev1_l"] == pytest.approx(4.68, abs=0.02)
    assert row["n_blows"] == 2
    assert b["is_best"].tolist() == [False, True]
    assert b["qc_status"].tolist() == ["accept", "accept"]
    assert b.loc[1, "bev_ml"] == pytest.approx(60, abs=5) and b.loc[1, "fet_s"] == pytest.approx(12.2, abs=0.1)
    expected = gli.zscore("fev1", row["fev1_l"], "male", 55.0, 176.0, "caucasian")
    assert row["fev1_z"] == pytest.approx(float(expected))
    assert np.isfinite(row[["fvc_z", "fev1_fvc_z"]].astype(float)).all()
    assert ex.empty


def test_parse_errors_no_blows_and_bad_blows_are_recorded():
    flat = np.zeros(300, dtype=np.int32)  # no expiration at all: low_volume
    rows = [
        _blow(1, DEMO, index=0), _blow(1, None, index=1, reason="parse_error: negative volume -3 mL at sample 9"),
        _blow(2, None, index=0, reason="parse_error: non-numeric volume token 'x' at sample 2"),
        _blow(3, flat, index=0),
        _blow(4, np.array([5], dtype=np.int32), index=0),  # one sample: signals refuses it
    ]
    p, b, ex = run_qc(_participants([1, 2, 3, 4, 5]), _table(rows))
    status = dict(zip(p["eid"], zip(p["qc_status"], p["qc_reason"])))
    assert status[1] == ("warn", "single_acceptable_blow")
    assert status[2] == ("fail", "no_usable_blow: parse_error")
    assert status[3][0] == "fail" and "low_volume" in status[3][1]
    assert status[4][0] == "fail"
    assert status[5] == ("fail", "no_blows")
    assert p.set_index("eid").loc[[2, 3, 5], "fev1_l"].isna().all()
    assert p.set_index("eid")["n_blows"].to_dict() == {1: 2, 2: 1, 3: 1, 4: 1, 5: 0}
    one_sample = b[b["eid"] == 4].iloc[0]
    assert one_sample["qc_status"] == "reject" and one_sample["qc_reason"].startswith("parse_error: ")
    blow_ex = ex[ex["level"] == "blow"]
    assert sorted(zip(blow_ex["eid"], blow_ex["blow_index"])) == [(1, 1), (2, 0), (3, 0), (4, 0)]
    part_ex = ex[ex["level"] == "participant"]
    assert sorted(part_ex["eid"]) == [2, 3, 4, 5] and part_ex["blow_index"].isna().all()
    assert reason_counts(blow_ex["reason"])["parse_error"] == 3


def test_only_chosen_instance_feeds_participant_and_best():
    rows = [_blow(1, DEMO, instance=0, index=0), _blow(1, (DEMO * 0.5).astype(np.int32), instance=1, index=0),
            _blow(2, DEMO, instance=1, index=0)]
    p, b, _ = run_qc(_participants([1, 2]), _table(rows))
    assert b["is_best"].tolist() == [True, False, False]
    assert (b["qc_status"] == "accept").all() and b["fvc_l"].notna().all()  # instance 1 is QC'd too
    assert p.set_index("eid").loc[2, "qc_reason"] == "no_blows"
    p1, b1, _ = run_qc(_participants([1, 2]), _table(rows), instance=1)
    assert b1["is_best"].tolist() == [False, True, True]
    assert p1.set_index("eid").loc[1, "fvc_l"] == pytest.approx(5.84 * 0.5, abs=0.02)


def test_config_is_passed_to_signals_qc():
    p, b, _ = run_qc(_participants([1]), _table([_blow(1, DEMO)]), QCConfig())
    assert b.loc[0, "qc_reason"] == "" and p.loc[0, "qc_status"] == "warn"
    p, b, _ = run_qc(_participants([1]), _table([_blow(1, DEMO)]), QCConfig(min_fvc_ml=7000.0))
    assert b.loc[0, "qc_reason"] == "low_volume" and p.loc[0, "qc_status"] == "fail"


def test_zscores_nan_when_inputs_missing():
    p = _participants([1, 2, 3])
    p.loc[1, "height_cm"] = np.nan
    p.loc[2, "sex"] = None
    p2, _, _ = run_qc(p, _table([_blow(e, DEMO) for e in (1, 2, 3)]))
    assert np.isfinite(p2.loc[0, "fev1_z"]) and p2.loc[[1, 2], ["fev1_z", "fvc_z", "fev1_fvc_z"]].isna().all().all()


def test_parallel_matches_serial(monkeypatch):
    rng = np.random.default_rng(0)
    eids = np.arange(1, 41)
    rows = [_blow(int(e), (DEMO * rng.uniform(0.6, 1.1)).astype(np.int32), index=k) for e in eids for k in range(2)]
    serial = run_qc(_participants(eids), _table(rows))
    monkeypatch.setattr(cohort_qc, "_PARALLEL_MIN_GROUPS", 1)
    parallel = run_qc(_participants(eids), _table(rows), workers=2)
    pd.testing.assert_frame_equal(serial[0], parallel[0])
    pd.testing.assert_frame_equal(serial[1].drop(columns="volume_ml"), parallel[1].drop(columns="volume_ml"))


def test_zscore_equation_choice_and_record():
    assert cohort_qc.zscore_equations() == dict.fromkeys(cohort_qc.Z_COLUMNS, "gli_global2022")
    assert cohort_qc.zscore_equations("gli2012") == dict.fromkeys(cohort_qc.Z_COLUMNS, "gli2012")
    assert cohort_qc.zscore_equations({"fvc_z": gli.ReferenceEquation.GLI_2012}) == {
        "fev1_z": "gli_global2022", "fvc_z": "gli2012", "fev1_fvc_z": "gli_global2022"}
    with pytest.raises(SpirolmInputError, match="unknown z-score column"):
        cohort_qc.zscore_equations({"pef_z": "gli2012"})
    with pytest.raises(SpirolmInputError, match="unknown reference equation"):
        cohort_qc.zscore_equations("nhanes3")

    p = _participants([1, 2])
    p.loc[1, "gli_ethnicity"] = "african_american"
    blows = _table([_blow(e, DEMO) for e in (1, 2)])
    default, _, _ = run_qc(p, blows)
    g12, _, _ = run_qc(p, blows, reference_equations="gli2012")
    for p_out, eq in ((default, "gli_global2022"), (g12, "gli2012")):
        for zcol, (param, col) in cohort_qc.Z_COLUMNS.items():
            want = gli.zscore(param, p_out[col], p_out["sex"], p_out["age"], p_out["height_cm"],
                              p_out["gli_ethnicity"], equation=eq)
            np.testing.assert_allclose(p_out[zcol], want, rtol=1e-12)
    # GLI Global ignores ethnicity; GLI-2012 does not
    assert default.loc[0, "fev1_z"] == pytest.approx(default.loc[1, "fev1_z"])
    assert g12.loc[0, "fev1_z"] != pytest.approx(g12.loc[1, "fev1_z"])


def test_zscores_real_outside_old_nodes_nan_outside_published_range():
    p = _participants([1, 2, 3, 4])
    p["age"] = [21.0, 84.0, 96.0, 2.0]
    out, _, _ = run_qc(p, _table([_blow(e, DEMO) for e in (1, 2, 3, 4)]))
    z = out[["fev1_z", "fvc_z", "fev1_fvc_z"]].to_numpy(dtype=float)
    assert np.isfinite(z[:2]).all() and np.isnan(z[2:]).all()
