"""Named synthetic cohort variants: the default is unchanged, 'fusion' puts risk in the record only."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from biobank.build import build_synthetic_cohort
from biobank.cohort_io import read_info
from biobank.synth import SYNTH_VARIANTS, SynthConfig, generate_chunk, synth_config
from biobank.synth.labels import TRAITS, draw_labels, record_logits, spirogram_logits, true_risks
from biobank.synth.physiology import draw_latents
from biobank.synth.population import draw_population
from signals.errors import SpirolmInputError

FUSION = SYNTH_VARIANTS["fusion"]


def _chunk(cfg: SynthConfig, n: int = 600, seed: int = 11) -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate_chunk(n, np.random.default_rng(seed), cfg, eid_start=3_000_001)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@pytest.fixture(scope="module")
def people() -> tuple[pd.DataFrame, pd.DataFrame]:
    """40k participants' population and latents (no curves: what the label model reads, in < 1 s)."""
    rng = np.random.default_rng(2024)
    pop = draw_population(40_000, rng, FUSION.population)
    return pop, draw_latents(pop, rng, FUSION.physiology)


def test_default_variant_is_the_default_config_and_its_risks_are_unchanged() -> None:
    assert synth_config("default") == SynthConfig()
    a_exp, a_lat = _chunk(synth_config("default"))
    b_exp, b_lat = _chunk(SynthConfig())
    pd.testing.assert_frame_equal(a_exp, b_exp)
    pd.testing.assert_frame_equal(a_lat, b_lat)
    # The split into spirogram + record parts adds exact zeros: the risk is bit-for-bit the one-expression model.
    cfg = SynthConfig().labels
    lat = a_lat
    decade = (lat["true_age"].to_numpy() - 55.0) / 10.0
    current = (lat["true_smoking"].to_numpy() == 2).astype(float)
    copd = (cfg.copd_intercept + cfg.copd_per_obstruction * lat["latent_obstruction"].to_numpy()
            + cfg.copd_per_emphysema * lat["latent_emphysema"].to_numpy()
            + cfg.copd_per_decade * decade + cfg.copd_current_smoker * current)
    asthma = (cfg.asthma_intercept + cfg.asthma_per_hr * lat["latent_hyperreactivity"].to_numpy()
              + cfg.asthma_hay_fever * lat["hay_fever_eczema"].to_numpy())
    assert np.array_equal(lat["true_risk_copd"].to_numpy(), _sigmoid(copd))
    assert np.array_equal(lat["true_risk_asthma"].to_numpy(), _sigmoid(asthma))


def test_fusion_changes_only_the_label_model() -> None:
    assert dataclasses.replace(FUSION, labels=SynthConfig().labels) == SynthConfig()
    d_exp, d_lat = _chunk(SynthConfig())
    f_exp, f_lat = _chunk(FUSION)
    # Same people, latents and spirograms: the record-only terms reach no latent and no curve.
    same = [c for c in d_lat.columns if c not in (*TRAITS, *(f"true_risk_{t}" for t in TRAITS))]
    pd.testing.assert_frame_equal(d_lat[same], f_lat[same])
    # The export differs only where labels show: trait codes (6152, 20002, ICD) and the oracle columns.
    label_fields = ("6152-", "20002-", "41270-", "41271-", "true_risk_")
    kept = [c for c in d_exp.columns if not c.startswith(label_fields)]
    assert any(c.startswith("3066-") for c in kept) and "20107-0.0" in kept
    pd.testing.assert_frame_equal(d_exp[kept], f_exp[kept])
    assert not np.allclose(d_lat["true_risk_asthma"], f_lat["true_risk_asthma"])


def test_fusion_risk_is_the_spirogram_logit_plus_the_record_terms() -> None:
    export, lat = _chunk(FUSION)
    cfg = FUSION.labels
    parental = np.zeros(len(export), dtype=bool)
    for col in [c for c in export.columns if c.startswith(("20107-", "20110-"))]:
        parental |= (export[col] == 6).fillna(False).to_numpy(bool)
    vis = spirogram_logits(lat, cfg)
    female = 1.0 - lat["true_male"].to_numpy()
    rec_asthma = cfg.asthma_hay_fever * lat["hay_fever_eczema"].to_numpy() + cfg.asthma_female * female
    rec_copd = cfg.copd_per_log_pack_year * np.log1p(lat["true_pack_years"].to_numpy()) + cfg.copd_parental * parental
    np.testing.assert_allclose(lat["true_risk_asthma"], _sigmoid(vis["asthma"].to_numpy() + rec_asthma), rtol=1e-12)
    np.testing.assert_allclose(lat["true_risk_copd"], _sigmoid(vis["copd"].to_numpy() + rec_copd), rtol=1e-12)
    assert rec_asthma.std() > 0.3 and rec_copd.std() > 0.5
    # The export's oracle columns are the latents' risks (rounded for the CSV).
    for t in TRAITS:
        np.testing.assert_allclose(export[f"true_risk_{t}"], lat[f"true_risk_{t}"], atol=1e-7)


def test_fusion_record_raises_risk_at_identical_latents(people: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    pop, lat = people
    hay = lat.assign(hay_fever_eczema=np.int8(1))
    no_hay = lat.assign(hay_fever_eczema=np.int8(0))
    assert (true_risks(pop, hay, FUSION.labels)["true_risk_asthma"]
            > true_risks(pop, no_hay, FUSION.labels)["true_risk_asthma"]).all()
    parents = pop.assign(father_copd=np.int8(1))
    no_parents = pop.assign(father_copd=np.int8(0), mother_copd=np.int8(0))
    assert (true_risks(parents, lat, FUSION.labels)["true_risk_copd"]
            > true_risks(no_parents, lat, FUSION.labels)["true_risk_copd"]).all()
    # ... and not in the default, where the record adds only the small hay-fever term.
    base = SynthConfig().labels
    assert np.array_equal(true_risks(parents, lat, base)["true_risk_copd"],
                          true_risks(no_parents, lat, base)["true_risk_copd"])


def test_fusion_prevalence_band_and_record_gap(people: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    pop, lat = people
    risks = true_risks(pop, lat, FUSION.labels)
    labels = draw_labels(risks, np.random.default_rng(5))
    vis = spirogram_logits(lat, FUSION.labels)
    rec = record_logits(pop, lat, FUSION.labels)
    assert 0.12 <= labels["asthma"].mean() <= 0.155
    assert 0.045 <= labels["copd"].mean() <= 0.075
    for t in TRAITS:
        y = labels[t].to_numpy()
        oracle = roc_auc_score(y, risks[f"true_risk_{t}"])
        visible = roc_auc_score(y, vis[t])
        assert oracle - visible >= 0.03, (t, oracle, visible)  # what the record adds to a perfect spirogram reader
        assert rec[t].std() > 0
    # The oracle is the drawing probability: binned observed rates match the mean risk.
    for t in TRAITS:
        bins = pd.qcut(risks[f"true_risk_{t}"], 10, duplicates="drop")
        observed = labels[t].groupby(bins, observed=True).mean()
        expected = risks[f"true_risk_{t}"].groupby(bins, observed=True).mean()
        assert np.abs(observed - expected).max() < 0.02


def test_unknown_variant_is_refused_naming_the_field(tmp_path) -> None:
    with pytest.raises(SpirolmInputError, match="fusion") as exc:
        synth_config("fusoin")
    assert exc.value.field == "variant" and "fusoin" in str(exc.value)
    with pytest.raises(SpirolmInputError, match="fusoin"):
        build_synthetic_cohort(n=10, seed=0, out_dir=tmp_path / "c", variant="fusoin")
    assert not (tmp_path / "c").exists()


def test_cohort_json_records_the_variant(tmp_path) -> None:
    build_synthetic_cohort(n=40, seed=1, out_dir=tmp_path / "c", variant="fusion")
    info = read_info(tmp_path / "c")
    assert info["synthetic"] == {"variant": "fusion", "n": 40, "seed": 1}
    assert info["traits"] and json.loads((tmp_path / "c" / "cohort.json").read_text()) == info
