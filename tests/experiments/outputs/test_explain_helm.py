"""HeLM explanations (ablation, record SHAP, curve integrated gradients) on a tiny cohort, tiny Llama, tiny encoder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from experiments.data.curves import load_curve_table
from experiments.data.participants import read_participants
from experiments.encoder.datamodule import fit_scaling
from experiments.encoder.embed import embed_cohort
from experiments.encoder.export import save_encoder
from experiments.explain.helm_run import (
    ABLATION_FILE,
    ABLATION_SUMMARY_FILE,
    COSTS_FILE,
    IG_FILE,
    MANIFEST_FILE,
    HeLMExplainSettings,
    choose_examples,
    derangement,
    explain_helm_run,
)
from experiments.helm.datamodule import build_table
from experiments.helm.score import score_table
from llm_bridge.llm import load_llm
from llm_bridge.model import HeLM, HeLMConfig
from llm_bridge.serialize import TabularScaler
from llm_bridge.tiny import build_tiny_llm
from signals.encoder import EncoderConfig, SpiroEncoder
from signals.errors import SpirolmInputError
from tests.encoder_fixtures import build_tiny_cohort

torch.set_num_threads(1)
CHANNELS = ("flow_volume", "flow_volume_norm")
SMALL = HeLMExplainSettings(shap_examples=2, shap_background=2, ig_examples=2, ig_steps=128, ig_baseline_sample=20,
                            batch_size=8)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain_helm")
    cohort = build_tiny_cohort(root / "cohort", n=60, seed=0)
    torch.manual_seed(0)
    net = SpiroEncoder(EncoderConfig(channels=CHANNELS, width_multiplier=0.125))
    table = load_curve_table(cohort, CHANNELS)
    net.set_scaling(*fit_scaling(table.subset("train").curves))
    net.eval()
    with torch.no_grad():  # an untrained net's embeddings barely vary; give them a trained encoder's spread
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                torch.nn.init.ones_(m.weight)
        spread = net.encode(torch.from_numpy(table.curves)).std(dim=0).mean()
        net.backbone.embed.weight.div_(spread)
    encoder = save_encoder(net, root / "encoder")
    llm = load_llm(build_tiny_llm(root / "llm", "llama", hidden=32))
    ckpt = HeLM(llm, HeLMConfig(variant="text+spiro", num_soft_tokens=4, seed=0)).save_checkpoint(root / "ts.pt")
    p = pd.read_parquet(cohort / "participants.parquet")
    test_eids = p.loc[(p["split"] == "test") & (p["qc_status"] != "fail"), "eid"].astype(int).tolist()
    return {"root": root, "cohort": cohort, "encoder": encoder, "llm": llm, "ckpt": ckpt, "eids": test_eids,
            "participants": p}


@pytest.fixture(scope="module")
def text_spiro_run(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("explain_out")
    return explain_helm_run(setup["ckpt"], setup["encoder"], setup["cohort"], setup["eids"], out, llm=setup["llm"],
                            settings=SMALL, seed=0)


def test_full_risk_equals_the_normal_helm_score(setup, text_spiro_run):
    res = text_spiro_run
    helm = HeLM.load_checkpoint(setup["ckpt"], setup["llm"])
    emb = pd.read_parquet(embed_cohort(setup["encoder"], setup["cohort"], setup["root"] / "emb.parquet", progress=False))
    rows, _ = read_participants(setup["cohort"], ("asthma", "copd"))
    rows = rows[rows["eid"].isin(setup["eids"])].merge(emb, on="eid")
    normal = score_table(helm, build_table(helm, rows), batch_size=5).rename(columns=lambda c: c.removeprefix("risk_"))
    normal = normal.melt("eid", var_name="trait", value_name="normal")
    got = res.ablation.merge(normal, on=["eid", "trait"], validate="one_to_one")
    assert len(got) == 2 * len(setup["eids"]) == len(res.ablation)
    np.testing.assert_allclose(got["risk_full"], got["normal"], atol=2e-5)


def test_removing_each_modality_changes_the_risk(text_spiro_run):
    a = text_spiro_run.ablation
    assert a[["risk_full", "risk_no_spiro", "risk_no_text"]].notna().all().all()
    assert (a["risk_full"] - a["risk_no_spiro"]).abs().max() > 1e-4  # the random projector's tokens matter
    assert (a["risk_full"] - a["risk_no_text"]).abs().max() > 1e-4
    assert a[["risk_shuffled_text", "risk_other_spiro"]].notna().all().all()
    assert (a["risk_full"] - a["risk_other_spiro"]).abs().max() > 0  # another participant's tokens (untrained: tiny)
    assert (a["risk_full"] - a["risk_shuffled_text"]).abs().max() > 1e-4  # another participant's record
    # the no-spirogram prompt does not depend on the spirogram: equal records give equal risks
    s = text_spiro_run.ablation_summary.set_index("trait")
    assert set(s.index) == {"asthma", "copd"} and (s["n"] == len(a) // 2).all()
    assert np.isfinite(s.loc["asthma", "auroc_risk_full"])  # labels present -> AUROC per prompt


def test_shap_values_add_up_to_the_risk(text_spiro_run):
    res = text_spiro_run
    shap_df = res.shap
    assert shap_df["eid"].nunique() == 2
    full = res.ablation.set_index(["eid", "trait"])["risk_full"]
    for (eid, trait), d in shap_df.groupby(["eid", "trait"]):
        assert d["base_value"].iloc[0] + d["shap"].sum() == pytest.approx(d["risk"].iloc[0], abs=1e-6)
        assert d["risk"].iloc[0] == pytest.approx(full[(eid, trait)], abs=2e-5)  # same model, spirogram fixed
    assert shap_df["shap"].abs().max() > 0
    assert (shap_df["forwards"] <= shap_df["evaluations"]).all()


def test_integrated_gradients_are_complete(text_spiro_run):
    res = text_spiro_run
    data = np.load(res.out_dir / IG_FILE)
    assert data["attributions"].shape == data["curves"].shape == (2, len(CHANNELS), 1000)
    full = res.ablation.set_index(["eid", "trait"])["risk_full"]
    for k, row in res.ig.iterrows():
        change = row["risk"] - row["risk_reference"]
        assert abs(change) > 1e-5  # the curve matters, so completeness is a real check
        assert data["attributions"][k].sum() == pytest.approx(change, abs=0.02 * abs(change) + 1e-6)
        assert row["risk"] == pytest.approx(full[(row["eid"], row["trait"])], abs=2e-5)  # broadcast prefix cache


def test_manifest_lists_existing_files(text_spiro_run):
    out = text_spiro_run.out_dir
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest == text_spiro_run.manifest
    assert all((out / m["file"]).is_file() and m["kind"] in ("image", "table") and m["title"] and m["caption"]
               for m in manifest)
    files = {m["file"] for m in manifest}
    assert {"ablation.png", ABLATION_SUMMARY_FILE, COSTS_FILE, "shap_waterfall_1.png", "ig_curve_1.png",
            "shap_bar_asthma.png"} <= files
    assert pd.read_parquet(out / ABLATION_FILE).columns.tolist()[:2] == ["eid", "trait"]
    costs = pd.read_csv(out / COSTS_FILE).set_index("method")
    assert (costs.loc[["ablation", "shap", "integrated_gradients"], "seconds_per_participant"] > 0).all()
    assert not any(str(e) in m["caption"] + m["title"] for e in text_spiro_run.ablation["eid"] for m in manifest)


def test_derangement_gives_everyone_someone_else():
    for n in (2, 3, 17, 500):
        p = derangement(n, seed=n)
        assert sorted(p) == list(range(n)) and not np.any(p == np.arange(n))
    np.testing.assert_array_equal(derangement(50, 1), derangement(50, 1))
    assert derangement(1, 0).tolist() == [0]


def test_text_only_checkpoint_skips_the_spirogram_parts(setup, tmp_path):
    ckpt = HeLM(setup["llm"], HeLMConfig(variant="text", soft_prompt_tokens=2)).save_checkpoint(tmp_path / "t.pt")
    settings = HeLMExplainSettings(shap_examples=1, shap_background=1, ig_examples=2, batch_size=8)
    res = explain_helm_run(ckpt, tmp_path / "no-encoder-needed.pt", setup["cohort"], setup["eids"][:6],
                           tmp_path / "out", llm=setup["llm"], settings=settings)
    assert res.ablation["risk_no_spiro"].isna().all() and res.ablation["risk_no_text"].notna().all()
    assert res.ablation["risk_other_spiro"].isna().all() and res.ablation["risk_shuffled_text"].notna().all()
    assert res.ig.empty and "integrated_gradients" in res.skipped
    manifest = json.loads((tmp_path / "out" / MANIFEST_FILE).read_text())
    assert not any(m["file"].startswith("ig_") for m in manifest)
    assert any("integrated_gradients" in m["caption"] for m in manifest)  # the skip is said, not silent
    d = res.shap[res.shap["trait"] == "asthma"]
    assert d["base_value"].iloc[0] + d["shap"].sum() == pytest.approx(d["risk"].iloc[0], abs=1e-6)


def test_tabmlp_checkpoint_perturbs_the_tabular_tokens(setup, tmp_path):
    train = setup["participants"][setup["participants"]["split"] == "train"]
    helm = HeLM(setup["llm"], HeLMConfig(variant="tabmlp+spiro", num_soft_tokens=2, num_tab_tokens=2),
                TabularScaler.fit(train))
    ckpt = helm.save_checkpoint(tmp_path / "tab.pt")
    settings = HeLMExplainSettings(shap_examples=1, shap_background=2, ig_examples=1, ig_steps=8, ig_baseline="zeros",
                                   batch_size=8)
    res = explain_helm_run(ckpt, setup["encoder"], setup["cohort"], setup["eids"][:6], tmp_path / "out",
                           llm=setup["llm"], settings=settings)
    assert (res.ablation["risk_full"] - res.ablation["risk_no_text"]).abs().max() > 1e-4
    d = res.shap[res.shap["trait"] == "copd"]
    assert d["shap"].abs().max() > 0
    assert d["base_value"].iloc[0] + d["shap"].sum() == pytest.approx(d["risk"].iloc[0], abs=1e-6)
    assert len(res.ig) == 1


def test_bad_inputs_are_refused(setup, tmp_path):
    kw = {"llm": setup["llm"], "settings": HeLMExplainSettings(shap_examples=0, ig_examples=0)}
    with pytest.raises(SpirolmInputError, match="not in the cohort") as err:
        explain_helm_run(setup["ckpt"], setup["encoder"], setup["cohort"], [setup["eids"][0], 42], tmp_path, **kw)
    assert "participant 42" in str(err.value)
    p = setup["participants"]
    failed = int(p.loc[p["qc_status"] == "fail", "eid"].iloc[0])
    with pytest.raises(SpirolmInputError, match="no QC-passing best blow") as err:
        explain_helm_run(setup["ckpt"], setup["encoder"], setup["cohort"], [failed], tmp_path, **kw)
    assert str(failed) in str(err.value)
    other = load_llm(build_tiny_llm(setup["root"] / "other_llm", "llama", hidden=32, seed=1))
    with pytest.raises(SpirolmInputError, match="different"):
        explain_helm_run(setup["ckpt"], setup["encoder"], setup["cohort"], setup["eids"][:2], tmp_path,
                         llm=other, settings=kw["settings"])
    with pytest.raises(SpirolmInputError, match="empty"):
        explain_helm_run(setup["ckpt"], setup["encoder"], setup["cohort"], [], tmp_path, **kw)
    with pytest.raises(SpirolmInputError, match="ig_baseline"):
        HeLMExplainSettings(ig_baseline="median")  # type: ignore[arg-type]


def test_examples_are_the_highest_risk_case_and_a_typical_control():
    ablation = pd.DataFrame({
        "eid": [1, 2, 3, 4, 5, 6] * 2, "trait": ["asthma"] * 6 + ["copd"] * 6,
        "label": [1, 1, 0, 0, 0, np.nan] + [np.nan] * 6,
        "risk_full": [0.6, 0.9, 0.1, 0.3, 0.8, 0.99] + [0.5, 0.2, 0.7, 0.1, 0.3, 0.4],
    })
    ex = choose_examples(ablation)
    assert [(e.trait, e.eid, e.role) for e in ex] == [
        ("asthma", 2, "highest-risk case"), ("copd", 3, "highest risk"),
        ("asthma", 4, "typical control"), ("copd", 5, "median risk")]


def test_cli_explain_helm(setup, tmp_path):
    import typer
    from typer.testing import CliRunner

    from experiments.cli.explain import explain_helm, parse_eids

    app = typer.Typer()
    app.command()(explain_helm)
    ids = ",".join(map(str, setup["eids"][:4]))
    res = CliRunner().invoke(app, ["--cohort", str(setup["cohort"]), "--helm", str(setup["ckpt"]), "--encoder",
                                   str(setup["encoder"]), "--out", str(tmp_path / "out"), "--eids", ids, "--llm",
                                   str(setup["root"] / "llm"), "--shap-examples", "0", "--ig-examples", "0"])
    assert res.exit_code == 0, res.output
    assert "mean risk full" in res.output and (tmp_path / "out" / MANIFEST_FILE).is_file()
    (tmp_path / "ids.txt").write_text("5\n7\n")
    assert parse_eids("1, 2", tmp_path / "ids.txt") == [1, 2, 5, 7]
    with pytest.raises(SpirolmInputError, match="not an integer"):
        parse_eids("1,x", None)


def test_the_integrated_gradients_reference_keeps_the_position_channel():
    from experiments.explain.helm_run import ig_reference
    from signals.curves import position_row

    channels = ("flow_volume", "flow_volume_norm", "position")
    ref = np.random.default_rng(0).normal(size=(4, 3, 50)).astype(np.float32)
    zeros = ig_reference(ref, channels, "zeros", (3, 50))
    assert np.all(zeros[:2] == 0)  # no airflow ...
    np.testing.assert_array_equal(zeros[2], position_row(50))  # ... but the coordinate stays, so it gets no attribution
    mean = ig_reference(ref, channels, "mean", (3, 50))
    np.testing.assert_allclose(mean[:2], ref[:, :2].mean(axis=0))
    np.testing.assert_array_equal(mean[2], position_row(50))
