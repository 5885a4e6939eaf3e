"""Mechanics of the LLM bridge on tiny random-weight Llama and GPT-2 decoders (seconds, offline)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from llm_bridge.constants import IGNORE_INDEX
from llm_bridge.kv_cache import PrefixKVStore
from llm_bridge.llm import answer_token_ids, load_llm
from llm_bridge.model import HeLM, HeLMConfig
from llm_bridge.projector import SoftTokenProjector, build_mlp, embedding_norm
from llm_bridge.prompt import PromptConfig, encode_records, few_shot_block, select_few_shot
from llm_bridge.serialize import SerializerConfig, TabularScaler, serialize_record, serialize_records
from llm_bridge.splice import SOFT_TOKEN_ID, pad_left, splice
from llm_bridge.tiny import build_tiny_llm
from signals.errors import SpirolmInputError
from tests.helm_fixtures import records

torch.set_num_threads(1)


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def tiny(request, tmp_path_factory):
    return load_llm(build_tiny_llm(tmp_path_factory.mktemp(request.param), request.param))


# ----------------------------------------------------------------------------- serializer


def test_serializer_fixed_units_rounding_and_unknown():
    row = {"eid": 1, "age": 57.4, "sex": "male", "bmi": 27.349, "smoking_status": "previous", "pack_years": 20.2,
           "fev1_l": 2.8149, "fev1_z": -1.234, "fvc_l": np.nan, "ethnicity": None}
    text = serialize_record(row)
    assert "Age: 57 years" in text and "Sex: male" in text and "BMI: 27.3 kg/m2" in text
    assert "Smoking: previous, 20 pack-years" in text
    assert "FEV1: 2.81 L (z = -1.2)" in text
    assert "FVC: unknown" in text and "Ethnicity: unknown" in text and "Townsend deprivation index: unknown" in text


def test_serializer_configurable_fields_and_version():
    cfg = SerializerConfig(fields=("sex", "age"))
    assert serialize_records(records(2), cfg).iloc[0].splitlines()[0].startswith("Sex: ")
    with pytest.raises(SpirolmInputError, match="unknown serializer field"):
        SerializerConfig(fields=("age", "shoe_size"))
    with pytest.raises(SpirolmInputError, match="template"):
        SerializerConfig(version="v0")
    assert cfg.fingerprint() != SerializerConfig().fingerprint()


def test_record_with_every_field_missing_is_refused():
    df = records(3)
    cols = [c for c in df.columns if c not in ("eid", "split", "asthma", "copd")]
    df.loc[1, cols] = None
    with pytest.raises(SpirolmInputError, match="every serialized field missing") as err:
        serialize_records(df)
    assert "1001" in str(err.value)


def test_tabular_scaler_is_finite_with_missing_indicators():
    df = records(6)
    df.loc[0, "bmi"] = np.nan
    scaler = TabularScaler.fit(df)
    x = scaler.transform(df)
    assert x.shape == (6, scaler.width) and np.isfinite(x).all()
    assert x[0, len(scaler.columns) + scaler.columns.index("bmi")] == 1.0  # missing indicator
    assert TabularScaler.from_dict(scaler.to_dict()) == scaler


# ----------------------------------------------------------------------------- prompt


def test_long_record_is_truncated_and_logged(tiny, caplog):
    cfg = PromptConfig(max_record_tokens=16)
    with caplog.at_level(logging.WARNING):
        ids = encode_records(tiny.tokenizer, ["x " * 500, "Age: 5"], cfg)
    assert len(ids[0]) == 16 and len(ids[1]) < 16
    assert "truncation" in caplog.text and "row 0 of the batch" in caplog.text and "eid" not in caplog.text


def test_few_shot_is_balanced_and_seeded():
    df = records(40)
    ex = select_few_shot(df, "asthma", 4, seed=3)
    assert sorted(ex["asthma"].tolist()) == [0, 0, 1, 1]
    assert ex["eid"].tolist() == select_few_shot(df, "asthma", 4, seed=3)["eid"].tolist()
    block = few_shot_block(["r1", "r2"], [1, 0], "asthma", PromptConfig())
    assert block.count("Answer: yes") == 1 and block.count("Answer: no") == 1
    with pytest.raises(SpirolmInputError, match="few-shot"):
        select_few_shot(df.assign(asthma=0), "asthma", 4, seed=0)


# ----------------------------------------------------------------------------- projector


def test_projector_builder_specs():
    assert isinstance(build_mlp("linear", 8, 12, 16), torch.nn.Linear)
    assert len(build_mlp("mlp3x_gelu", 8, 12, 16)) == 5
    with pytest.raises(SpirolmInputError, match="unknown projector"):
        build_mlp("mlp2x_relu", 8, 12, 16)
    with pytest.raises(SpirolmInputError, match="identity"):
        build_mlp("identity", 8, 12, 16)


def test_soft_tokens_match_llm_embedding_norm(tiny):
    embed = tiny.model.get_input_embeddings()
    proj = SoftTokenProjector(128, tiny.hidden_size, 4, "mlp2x_gelu", embedding_norm(embed))
    tokens = proj(torch.randn(3, 128))
    assert tokens.shape == (3, 4, tiny.hidden_size)
    ratio = tokens.detach().norm(dim=-1).mean() / embedding_norm(embed)
    assert 0.8 < float(ratio) < 1.25
    with pytest.raises(SpirolmInputError, match="shape"):
        proj(torch.randn(3, 64))


# ----------------------------------------------------------------------------- splice / readout


def test_splice_places_soft_tokens_masks_and_positions(tiny):
    embed = tiny.model.get_input_embeddings()
    ids, mask = pad_left([[5, 6, SOFT_TOKEN_ID, SOFT_TOKEN_ID, 7], [8, SOFT_TOKEN_ID, SOFT_TOKEN_ID]], pad_id=1)
    soft = torch.randn(2, 2, tiny.hidden_size)
    out = splice(embed, ids, mask, soft)
    assert mask.tolist() == [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]]  # left padding
    assert out.position_ids.tolist() == [[0, 1, 2, 3, 4], [0, 0, 0, 1, 2]]
    assert torch.equal(out.inputs_embeds[0, 2:4], soft[0]) and torch.equal(out.inputs_embeds[1, 3:5], soft[1])
    assert torch.equal(out.inputs_embeds[0, 4], embed.weight[7])
    assert (out.labels[out.soft_mask] == IGNORE_INDEX).all() and (out.labels[mask == 0] == IGNORE_INDEX).all()
    with pytest.raises(ValueError, match="different numbers"):
        splice(embed, *pad_left([[SOFT_TOKEN_ID, 5], [5, 6]], 1), torch.randn(2, 1, tiny.hidden_size))


@pytest.mark.parametrize("variant", ["text", "text+spiro", "tabmlp+spiro"])
def test_prefix_cache_path_equals_full_sequence_and_padding_invariant(tiny, variant):
    df = records(4)
    df.loc[2, "smoking_status"] = None  # different lengths -> real left padding
    scaler = TabularScaler.fit(df)
    model = HeLM(tiny, HeLMConfig(variant=variant, soft_prompt_tokens=2 if variant == "text" else 0), scaler)
    ids = model.prefix_ids(df)
    assert len({len(i) for i in ids}) > 1 or variant.startswith("tabmlp")
    emb = torch.randn(4, 128)
    tab = torch.from_numpy(scaler.transform(df))
    full = model.score_full(ids, emb, tab)
    cached = model.score_prefix(model.encode_prefix(ids), emb, tab)
    alone = model.score_full(ids[2:3], emb[2:3], tab[2:3])
    assert full.shape == (4, 2, 2)
    torch.testing.assert_close(full, cached, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(full[2:3], alone, atol=1e-5, rtol=1e-4)
    # the two traits ask different questions, so they must not be the same prompt
    assert not torch.allclose(full[:, 0], full[:, 1])


def test_prefix_store_reuses_participants_across_batches(tiny):
    model = HeLM(tiny, HeLMConfig())
    df = records(5)
    ids = model.prefix_ids(df)
    store = PrefixKVStore()
    emb = torch.randn(5, 128)
    first = model.score_prefix(store.get(model.encode_prefix, df["eid"].tolist()[:3], ids[:3]), emb[:3])
    order = [4, 0, 2]
    again = model.score_prefix(store.get(model.encode_prefix, [df["eid"].iloc[i] for i in order],
                                         [ids[i] for i in order]), emb[order])
    assert store.hits == 2 and store.misses == 4 and len(store) == 4
    torch.testing.assert_close(again[1:], first[[0, 2]], atol=1e-5, rtol=1e-4)
    reference = model.score_full([ids[i] for i in order], emb[order])
    torch.testing.assert_close(again, reference, atol=1e-5, rtol=1e-4)


def test_readout_needs_single_token_answers(tmp_path):
    bad = load_llm(build_tiny_llm(tmp_path / "bad", "gpt2", single_token_answers=False))
    with pytest.raises(SpirolmInputError, match="single-token answers"):
        answer_token_ids(bad.tokenizer)
    with pytest.raises(SpirolmInputError, match="single-token"):
        HeLM(bad, HeLMConfig())


def test_missing_model_is_one_clear_line(tmp_path):
    with pytest.raises(SpirolmInputError) as err:
        load_llm("no-such-org/no-such-model")
    assert "--llm PATH" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpirolmInputError, match="cannot load a causal LM"):
        load_llm(tmp_path / "empty")
