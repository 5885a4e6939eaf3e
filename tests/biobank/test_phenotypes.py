"""Trait rules from YAML and their label semantics (1 match / 0 field present / NA field absent)."""

from __future__ import annotations

import pandas as pd
import pytest

from biobank.phenotypes import absent_sources, derive_history, derive_traits, load_phenotypes
from signals.errors import SpirolmInputError


def _labels(df: pd.DataFrame, spec=None) -> dict[int, dict[str, object]]:
    out = derive_traits(df, spec)
    return {int(r["eid"]): {k: (None if pd.isna(v) else int(v)) for k, v in r.items() if k != "eid"}
            for _, r in out.iterrows()}


def test_default_rules_have_sources_and_expected_codes():
    spec = load_phenotypes()
    assert spec.trait_names == ("copd", "asthma")
    copd = {r.field: r for r in spec.traits[0].rules}
    assert copd[41270].codes == ("J41", "J42", "J43", "J44") and copd[41270].match == "prefix"
    assert copd[41271].codes == ("491", "492", "496")
    assert copd[20002].codes == ("1112", "1113", "1472") and copd[6152].codes == ("6",)
    asthma = {r.field: r for r in spec.traits[1].rules}
    assert asthma[41270].codes == ("J45", "J46") and asthma[41271].codes == ("493",)
    assert asthma[20002].codes == ("1111",) and asthma[6152].codes == ("8",)
    assert all(r.source for t in spec.traits + spec.history for r in t.rules)


def test_field_id_export_labels():
    df = pd.DataFrame({
        "eid": [1, 2, 3, 4, 5, 6],
        "41270-0.0": ["J449", "J45.9 Asthma, unspecified", "J4", "I10", None, ""],
        "41270-0.1": [None, None, None, "J460", None, None],
        "41271-0.0": [None, None, "4912", None, "4930", None],
        "20002-0.0": ["1111.0", None, None, None, None, "9999"],
        "6152-0.0": [None, None, None, None, "6", "-7"],
    })
    got = _labels(df)
    assert got[1] == {"copd": 1, "asthma": 1}      # J449 (prefix J44) + self-report 1111 given as "1111.0"
    assert got[2] == {"copd": 0, "asthma": 1}      # dotted ICD-10 with a text label
    assert got[3] == {"copd": 1, "asthma": 0}      # "J4" is not J41-J44; ICD-9 4912 is
    assert got[4] == {"copd": 0, "asthma": 1}      # second array slot J460
    assert got[5] == {"copd": 1, "asthma": 1}      # 6152 code 6 and ICD-9 4930
    assert got[6] == {"copd": 0, "asthma": 0}      # unknown codes are simply not matches


def test_rap_list_cells_and_participant_eid():
    df = pd.DataFrame({
        "participant.eid": [10, 11, 12],
        "p41270": ['["J449","I10"]', "I10|J45", None],
        "p20002_i0": ["[1113]", None, None],
    })
    got = _labels(df)
    assert got[10] == {"copd": 1, "asthma": 0}
    assert got[11] == {"copd": 0, "asthma": 1}
    assert got[12] == {"copd": 0, "asthma": 0}


def test_missing_source_fields_give_na_not_zero():
    df = pd.DataFrame({"eid": [1, 2], "31-0.0": [0, 1]})
    out = derive_traits(df)
    assert out["copd"].isna().all() and out["asthma"].isna().all()
    assert str(out["copd"].dtype) == "Int8"
    assert absent_sources(load_phenotypes().traits, list(df.columns)) == {
        "copd": (6152, 20002, 41270, 41271), "asthma": (41270, 41271, 20002, 6152)}


def test_history_flags():
    df = pd.DataFrame({
        "eid": [1, 2, 3],
        "6152-0.0": ["9", "8", None],
        "20107-0.0": [None, "6", "1"],
        "20110-0.2": ["6", None, None],
    })
    out = derive_history(df).set_index("eid")
    assert out["hay_fever_eczema"].tolist() == [1, 0, 0]
    assert out["parental_copd"].tolist() == [1, 1, 0]


def test_list_valued_parquet_cells():
    df = pd.DataFrame({"eid": [1, 2], "p41270": [["I10", "J441"], []]})
    got = _labels(df)
    assert got[1]["copd"] == 1 and got[2]["copd"] == 0


def test_user_yaml_adds_and_replaces(tmp_path):
    user = tmp_path / "extra.yaml"
    user.write_text(
        "traits:\n"
        "  bronchiectasis:\n"
        "    rules:\n"
        "      - {field: 41270, match: prefix, code_type: icd, codes: [J47], source: test}\n"
        "  copd:\n"
        "    rules:\n"
        "      - {field: 41270, match: exact, code_type: icd, codes: [J44.9], source: test}\n"
    )
    spec = load_phenotypes(user)
    assert spec.trait_names == ("copd", "asthma", "bronchiectasis")
    df = pd.DataFrame({"eid": [1, 2], "41270-0.0": ["J470", "J441"]})
    got = _labels(df, spec)
    assert got[1]["bronchiectasis"] == 1 and got[2]["copd"] == 0  # exact J449 only now
    only = tmp_path / "only.yaml"
    only.write_text("replace_defaults: true\n" + user.read_text())
    assert load_phenotypes(only).trait_names == ("bronchiectasis", "copd")
    assert load_phenotypes(only).history == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("traits: [1, 2]", "must map names"),
        ("traits:\n  Bad-Name:\n    rules: [{field: 1, match: exact, codes: [1], source: s}]", "lower_snake_case"),
        ("traits:\n  fev1_l:\n    rules: [{field: 1, match: exact, codes: [1], source: s}]", "participants column"),
        ("traits:\n  t:\n    rules: [{field: 1, match: fuzzy, codes: [1], source: s}]", "exact|prefix"),
        ("traits:\n  t:\n    rules: [{field: 1, match: exact, codes: [1]}]", "missing \\['source'\\]"),
        ("traits:\n  t:\n    rules: [{field: x, match: exact, codes: [1], source: s}]", "not a UKB field id"),
        ("traits:\n  t:\n    rules: [{field: 1, match: exact, code_type: read, codes: [1], source: s}]", "icd|integer"),
        ("traits:\n  t:\n    rules: []", "non-empty 'rules'"),
        ("trait: {}", "unknown top-level keys"),
        ("traits: {a: [", "invalid YAML"),
    ],
)
def test_invalid_user_yaml_names_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpirolmInputError, match=message) as err:
        load_phenotypes(path)
    assert err.value.file == str(path)


def test_missing_user_yaml():
    with pytest.raises(SpirolmInputError, match="not found"):
        load_phenotypes("/nonexistent/rules.yaml")
