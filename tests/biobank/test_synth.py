"""Synthetic cohort: determinism, UKB export format, distributions, label codes, calibration bands."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pandas as pd
import pytest

from biobank.synth import FAULTS, SynthConfig, export_columns, generate_chunk, generate_export
from biobank.synth.calibration import calibration_report
from biobank.synth.export import RNG_BLOCK
from signals.errors import SpirolmInputError
from signals.ukb3066 import parse_3066

COPD_ICD10, COPD_ICD9, COPD_SR, COPD_TS = ("J41", "J42", "J43", "J44"), ("491", "492", "496"), {1112, 1113, 1472}, {6}
ASTHMA_ICD10, ASTHMA_ICD9, ASTHMA_SR, ASTHMA_TS = ("J45", "J46"), ("493",), {1111}, {8}


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def chunk() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate_chunk(2000, np.random.default_rng(7), SynthConfig(), eid_start=2_000_001)


@pytest.fixture(scope="module")
def big() -> tuple[pd.DataFrame, pd.DataFrame]:
    """20k participants in RNG blocks exactly as generate_export makes them (seed 0)."""
    parts = [generate_chunk(RNG_BLOCK, np.random.default_rng(np.random.SeedSequence(0, spawn_key=(b,))),
                            eid_start=1_000_001 + RNG_BLOCK * b) for b in range(20)]
    return (pd.concat([p[0] for p in parts], ignore_index=True),
            pd.concat([p[1] for p in parts], ignore_index=True))


def test_same_seed_gives_identical_bytes_regardless_of_chunk_size(tmp_path):
    a = generate_export(2500, 3, tmp_path / "a", chunk_size=1000, progress=False)
    b = generate_export(2500, 3, tmp_path / "b", chunk_size=5000, progress=False)
    c = generate_export(2500, 4, tmp_path / "c", chunk_size=5000, progress=False)
    assert _sha(a.export_csv) == _sha(b.export_csv)
    assert _sha(a.export_csv) != _sha(c.export_csv)
    pd.testing.assert_frame_equal(pd.read_parquet(a.latents_parquet), pd.read_parquet(b.latents_parquet))
    df = pd.read_csv(a.export_csv, dtype=str)
    assert list(df.columns) == export_columns(SynthConfig())
    assert len(df) == 2500 and df["eid"].is_unique
    assert not any(c.startswith("latent") for c in df.columns)
    assert a.prevalence["copd"] > 0 and a.participants_per_s > 0


def test_blows_parse_and_are_physiological(chunk):
    export, latents = chunk
    n_seen = 0
    for i in range(0, len(export), 5):
        for a in range(3):
            value = export.at[i, f"3066-0.{a}"]
            fault = latents.at[i, f"fault_{a}"]
            if pd.isna(value):
                assert a == 2 and latents.at[i, "n_blows"] == 2
                continue
            assert value.startswith(f"blow{a + 1},") and ",0,0,0,0," in value[:20]
            vol = parse_3066(value, eid=export.at[i, "eid"], field=f"3066-0.{a}").volume_ml
            assert vol[0] == 0 and vol.min() >= 0
            if fault != "cough":
                assert np.all(np.diff(vol) >= 0), "only cough blows may go backwards"
            seconds = (vol.size - 1) / 100
            if fault == "early_termination":
                assert seconds < 4.0
            else:
                assert 6.0 <= seconds <= 15.1
            assert 0.6 <= vol.max() / 1000 <= 9.0
            peak_flow = np.max(vol[8:] - vol[:-8]) / 1000 / 0.08
            assert 1.5 <= peak_flow <= 14.0
            n_seen += 1
    assert n_seen > 900
    fvc = latents["true_fvc_l"]
    assert fvc.between(1.5, 6.5).mean() > 0.97
    assert latents["true_pef_l_s"].between(3.0, 13.0).all()
    assert latents["curve_k_solved"].mean() > 0.98


def test_fault_rates_follow_config(chunk):
    _, latents = chunk
    faults = pd.concat([latents[f"fault_{a}"] for a in range(3)]).dropna()
    assert set(faults) <= set(FAULTS)
    rates = faults.value_counts(normalize=True)
    cfg = SynthConfig().faults
    assert rates["cough"] == pytest.approx(cfg.p_cough, abs=0.02)
    assert rates["submaximal"] == pytest.approx(cfg.p_submaximal, abs=0.03)
    assert latents["n_blows"].isin([2, 3]).all()
    assert (latents["n_blows"] == 3).mean() == pytest.approx(0.667, abs=0.04)


def test_covariates_are_ukb_like(chunk):
    export, latents = chunk
    age = export["21022-0.0"]
    assert age.between(40, 69).all() and 55 < age.mean() < 58
    assert export["31-0.0"].mean() == pytest.approx(0.455, abs=0.03)
    h = export["50-0.0"]
    assert 174 < h[export["31-0.0"] == 1].mean() < 178 and 161 < h[export["31-0.0"] == 0].mean() < 165
    bmi = export["21001-0.0"]
    assert 26.5 < bmi.mean() < 28.5 and 0 < bmi.isna().mean() < 0.02
    smoking = export["20116-0.0"].value_counts(normalize=True)
    assert smoking[0] == pytest.approx(0.548, abs=0.04) and smoking[2] == pytest.approx(0.107, abs=0.03)
    never = export["20116-0.0"] == 0
    assert export.loc[never, "20161-0.0"].isna().all()  # UKB leaves pack-years empty for never smokers
    assert export.loc[export["20116-0.0"] > 0, "20161-0.0"].notna().mean() > 0.85
    assert export["21000-0.0"].isin([1001, 1002, 1003]).mean() == pytest.approx(0.94, abs=0.02)
    assert export["189-0.0"].mean() == pytest.approx(-1.3, abs=0.5)
    assert 9.0 < export["24006-0.0"].mean() < 11.0
    assert latents["hay_fever_eczema"].mean() == pytest.approx(0.23, abs=0.04)


def _codes(export: pd.DataFrame, field: str) -> list[set[str]]:
    cols = [c for c in export.columns if c.startswith(f"{field}-0.")]
    return [{str(v) for v in row if pd.notna(v)} for row in export[cols].itertuples(index=False)]


def test_trait_codes_match_labels_exactly(chunk):
    export, latents = chunk
    icd10, icd9 = _codes(export, "41270"), _codes(export, "41271")
    sr, ts = _codes(export, "20002"), _codes(export, "6152")
    for trait, (p10, p9, srs, tss) in {"copd": (COPD_ICD10, COPD_ICD9, COPD_SR, COPD_TS),
                                       "asthma": (ASTHMA_ICD10, ASTHMA_ICD9, ASTHMA_SR, ASTHMA_TS)}.items():
        derived = np.array([
            any(c.startswith(p10) for c in a) or any(c.startswith(p9) for c in b)
            or bool({int(x) for x in c} & srs) or bool({int(x) for x in d} & tss)
            for a, b, c, d in zip(icd10, icd9, sr, ts)
        ])
        np.testing.assert_array_equal(derived, latents[trait].to_numpy() == 1, err_msg=trait)
    hay = np.array(["9" in s for s in ts])
    np.testing.assert_array_equal(hay, latents["hay_fever_eczema"].to_numpy() == 1)
    assert any("I10" in s for s in icd10) and any("1065" in s for s in sr)  # distractors are present


def test_calibration_bands(big):
    export, latents = big
    report = calibration_report(export, latents, seed=0, gbm=False)
    asthma, copd = report["asthma"], report["copd"]
    assert 0.12 <= asthma["prevalence"] <= 0.15
    assert 0.04 <= copd["prevalence"] <= 0.08
    assert asthma["oracle_all"] >= 0.80 and copd["oracle_all"] >= 0.90
    assert 0.55 <= asthma["tabular_lr"] <= 0.65
    assert 0.70 <= copd["tabular_lr"] <= 0.80
    # Part of the asthma signal is in curve shape only: scalars stay well below the oracle, shape closes it.
    assert asthma["tabular_scalars_lr"] < asthma["oracle"] - 0.15
    assert asthma["tabular_shape_lr"] > asthma["oracle"] - 0.03
    # COPD risk is readable from a perfectly read curve.
    assert copd["tabular_shape_lr"] > copd["oracle"] - 0.03


def test_oracle_is_the_drawing_probability(big):
    _, latents = big
    for t in ("asthma", "copd"):
        risk = latents[f"true_risk_{t}"]
        assert risk.between(0, 1).all()
        bins = pd.qcut(risk, 10, duplicates="drop")
        observed = latents[t].groupby(bins, observed=True).mean()
        expected = risk.groupby(bins, observed=True).mean()
        assert np.abs(observed - expected).max() < 0.03


def test_missingness_and_prefer_not_to_answer_are_configurable():
    cfg = SynthConfig()
    heavy = dataclasses.replace(cfg, missing=dataclasses.replace(cfg.missing, p_bmi=0.5, p_smoking_prefer_not=0.3))
    export, _ = generate_chunk(1000, np.random.default_rng(1), heavy)
    assert export["21001-0.0"].isna().mean() == pytest.approx(0.5, abs=0.06)
    assert (export["20116-0.0"] == -3).mean() == pytest.approx(0.3, abs=0.05)


@pytest.mark.parametrize("kwargs,match", [
    (dict(n=0), "must be positive"),
    (dict(chunk_size=0), "chunk_size"),
])
def test_bad_arguments_raise(tmp_path, kwargs, match):
    args = dict(n=10, seed=0, out_dir=tmp_path / "x", chunk_size=1000, progress=False) | kwargs
    with pytest.raises(SpirolmInputError, match=match):
        generate_export(**args)


def test_output_path_that_is_a_file_and_bad_rates_raise(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(SpirolmInputError, match="not a directory"):
        generate_export(10, 0, f, progress=False)
    cfg = SynthConfig()
    bad = dataclasses.replace(cfg, faults=dataclasses.replace(cfg.faults, p_cough=0.9))
    with pytest.raises(SpirolmInputError, match="fault rates"):
        generate_chunk(10, np.random.default_rng(0), bad)
