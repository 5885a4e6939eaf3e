"""Trait labels and history flags from UK Biobank EHR / self-report fields, driven by YAML rules.

Why rules as data: case definitions change between papers (ML-based COPD vs PhE-T vs a user's own
study), and each code needs a citation. Keeping them in ``phenotypes.yaml`` makes every rule reviewable
in one place (``docs/phenotypes.md``) and lets users add traits without touching code.

Label semantics (per participant, per entry):

* ``1`` if any rule matches any instance/array slot of its field;
* ``0`` if at least one of the entry's source fields is present in the export and nothing matches
  (a participant with no hospital record has empty 41270 cells: that is a control, as in UKB practice);
* ``NA`` if none of the entry's source fields is in the export at all (we cannot tell).

Unknown codes are not errors: 41270 holds thousands of ICD-10 codes and 20002 hundreds of self-report
codes, and a code outside a rule is simply not a match.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml

from biobank import ukb_fields
from biobank.ukb_fields import FieldRef
from signals.errors import SpirolmInputError

DEFAULT_PHENOTYPES = Path(__file__).with_name("phenotypes.yaml")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_RULE_KEYS = {"field", "match", "code_type", "codes", "source", "instances"}
RESERVED_NAMES = frozenset({
    "eid", "age", "sex", "height_cm", "bmi", "smoking_status", "pack_years", "ethnicity", "gli_ethnicity",
    "townsend", "pm25", "fev1_l", "fvc_l", "fev1_fvc", "pef_l_s", "fef25_75_l_s", "fev1_z", "fvc_z",
    "fev1_fvc_z", "qc_status", "qc_reason", "n_blows", "split",
})
"""Participants-table columns a trait may not shadow."""


@dataclass(frozen=True)
class Rule:
    """One code list on one field.

    Attributes:
        field: UKB field id.
        match: ``exact`` (code equality) or ``prefix`` (ICD block, e.g. ``J44`` → J440…J449).
        code_type: ``icd`` or ``integer``; decides how cells are normalised (:func:`ukb_fields.normalise_code`).
        codes: normalised codes.
        source: citation for the rule (``[U]`` = unverified).
        instances: instances searched; ``None`` = every instance in the export.
    """

    field: int
    match: Literal["exact", "prefix"]
    code_type: Literal["icd", "integer"]
    codes: tuple[str, ...]
    source: str
    instances: tuple[int, ...] | None = None

    def matches(self, code: str) -> bool:
        """True if the normalised ``code`` satisfies this rule."""
        if self.match == "exact":
            return code in self.codes
        return code.startswith(self.codes)


@dataclass(frozen=True)
class Trait:
    """A named 0/1 label: the OR of its rules."""

    name: str
    rules: tuple[Rule, ...]
    description: str = ""

    @property
    def fields(self) -> tuple[int, ...]:
        """Source fields, in rule order, without repeats."""
        return tuple(dict.fromkeys(r.field for r in self.rules))


@dataclass(frozen=True)
class PhenotypeSpec:
    """All label definitions for one import.

    Attributes:
        traits: outcome labels (participants columns such as ``asthma``, ``copd``).
        history: covariate flags derived the same way (``hay_fever_eczema``, ``parental_copd``).
        files: the YAML files the spec was built from, for provenance.
    """

    traits: tuple[Trait, ...]
    history: tuple[Trait, ...]
    files: tuple[str, ...]

    @property
    def trait_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.traits)

    def to_dict(self) -> dict:
        """Plain-data form for ``cohort.json`` provenance."""
        def entry(t: Trait) -> dict:
            return {"description": t.description, "rules": [
                {"field": r.field, "match": r.match, "code_type": r.code_type, "codes": list(r.codes),
                 "instances": None if r.instances is None else list(r.instances), "source": r.source}
                for r in t.rules]}
        return {"files": list(self.files), "traits": {t.name: entry(t) for t in self.traits},
                "history": {t.name: entry(t) for t in self.history}}


# --------------------------------------------------------------------------------------------------
# Loading.

def load_phenotypes(path: str | Path | None = None) -> PhenotypeSpec:
    """Load the default rules, optionally extended by a user YAML file.

    A user file has the same layout as ``biobank/phenotypes.yaml``. Its entries are added to the defaults,
    replacing a default entry of the same name; with ``replace_defaults: true`` at the top level the
    defaults are dropped entirely.

    Args:
        path: user YAML file, or ``None`` for the defaults only.

    Raises:
        SpirolmInputError: unreadable file or invalid rule, naming the file and the offending key.
    """
    base = _read_yaml(DEFAULT_PHENOTYPES)
    traits = _parse_section(base, "traits", DEFAULT_PHENOTYPES)
    history = _parse_section(base, "history", DEFAULT_PHENOTYPES)
    files = [str(DEFAULT_PHENOTYPES)]
    if path is not None:
        user = _read_yaml(Path(path))
        user_traits = _parse_section(user, "traits", path)
        user_history = _parse_section(user, "history", path)
        if user.get("replace_defaults", False):
            traits, history = {}, {}
        traits.update(user_traits)
        history.update(user_history)
        files.append(str(path))
    clash = set(traits) & set(history)
    if clash:
        raise SpirolmInputError(f"names used both as trait and history flag: {sorted(clash)}", file=path)
    return PhenotypeSpec(tuple(traits.values()), tuple(history.values()), tuple(files))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise SpirolmInputError("phenotype rules file not found", file=path) from None
    except yaml.YAMLError as exc:
        raise SpirolmInputError(f"invalid YAML: {exc}", file=path) from None
    if not isinstance(data, dict):
        raise SpirolmInputError("phenotype rules file must be a mapping with 'traits' / 'history'", file=path)
    unknown = set(data) - {"version", "traits", "history", "replace_defaults"}
    if unknown:
        raise SpirolmInputError(f"unknown top-level keys {sorted(unknown)}", file=path)
    return data


def _parse_section(data: Mapping, section: str, file: str | Path) -> dict[str, Trait]:
    raw = data.get(section) or {}
    if not isinstance(raw, Mapping):
        raise SpirolmInputError(f"'{section}' must map names to entries", file=file, field=section)
    out: dict[str, Trait] = {}
    for name, entry in raw.items():
        where = f"{section}.{name}"
        if not isinstance(name, str) or not _NAME.match(name) or name in RESERVED_NAMES:
            raise SpirolmInputError(
                "name must be lower_snake_case and not a participants column", file=file, field=where)
        if not isinstance(entry, Mapping) or not entry.get("rules"):
            raise SpirolmInputError("entry needs a non-empty 'rules' list", file=file, field=where)
        rules = tuple(_parse_rule(r, file, f"{where}.rules[{i}]") for i, r in enumerate(entry["rules"]))
        out[name] = Trait(name=name, rules=rules, description=str(entry.get("description", "")).strip())
    return out


def _parse_rule(raw: object, file: str | Path, where: str) -> Rule:
    if not isinstance(raw, Mapping):
        raise SpirolmInputError("rule must be a mapping", file=file, field=where)
    unknown = set(raw) - _RULE_KEYS
    missing = {"field", "match", "codes", "source"} - set(raw)
    if unknown or missing:
        raise SpirolmInputError(
            f"rule keys: unknown {sorted(unknown)}, missing {sorted(missing)}", file=file, field=where)
    try:
        field = int(raw["field"])
    except (TypeError, ValueError):
        raise SpirolmInputError(f"field {raw['field']!r} is not a UKB field id", file=file, field=where) from None
    match = raw["match"]
    if match not in ("exact", "prefix"):
        raise SpirolmInputError(f"match must be exact|prefix, got {match!r}", file=file, field=where)
    code_type = raw.get("code_type", "integer")
    if code_type not in ("icd", "integer"):
        raise SpirolmInputError(f"code_type must be icd|integer, got {code_type!r}", file=file, field=where)
    codes_raw = raw["codes"]
    if not isinstance(codes_raw, list) or not codes_raw:
        raise SpirolmInputError("codes must be a non-empty list", file=file, field=where)
    codes = tuple(ukb_fields.normalise_code(c, code_type) for c in codes_raw)
    inst = raw.get("instances")
    instances = None if inst is None else tuple(int(i) for i in inst)
    return Rule(field, match, code_type, codes, str(raw["source"]), instances)


# --------------------------------------------------------------------------------------------------
# Deriving labels.

def derive_traits(export_df: pd.DataFrame, spec: PhenotypeSpec | None = None) -> pd.DataFrame:
    """Trait labels for every row of an export (chunk).

    Args:
        export_df: UKB export with an eid column and field columns in any supported naming.
        spec: rules; the defaults when ``None``.

    Returns:
        ``DataFrame[eid, <trait>...]`` with nullable ``Int8`` 0/1 labels (see module docstring).
    """
    spec = spec or load_phenotypes()
    return _derive(export_df, spec.traits)


def derive_history(export_df: pd.DataFrame, spec: PhenotypeSpec | None = None) -> pd.DataFrame:
    """History flags (``hay_fever_eczema``, ``parental_copd``, ...) with the same semantics as traits.

    A flag whose fields are all absent is NA; callers warn once per import via :func:`absent_sources`
    (these are optional covariates, not errors).
    """
    spec = spec or load_phenotypes()
    return _derive(export_df, spec.history)


def absent_sources(entries: tuple[Trait, ...], columns: list[str]) -> dict[str, tuple[int, ...]]:
    """Entries none of whose source fields is in ``columns`` (their labels will be all NA)."""
    present = {r.field for r in ukb_fields.map_columns(columns).values()}
    return {t.name: t.fields for t in entries if not set(t.fields) & present}


def _derive(export_df: pd.DataFrame, entries: tuple[Trait, ...]) -> pd.DataFrame:
    eid_col = ukb_fields.find_eid_column(list(export_df.columns))
    refs = ukb_fields.map_columns(export_df.columns)
    out = pd.DataFrame({"eid": export_df[eid_col].to_numpy()})
    for entry in entries:
        out[entry.name] = _evaluate(export_df, refs, entry)
    return out


def _evaluate(df: pd.DataFrame, refs: dict[str, FieldRef], entry: Trait) -> pd.array:
    present = False
    hit = np.zeros(len(df), dtype=bool)
    for rule in entry.rules:
        cols = [c for c, r in refs.items() if r.field == rule.field
                and (rule.instances is None or (r.instance or 0) in rule.instances)]
        if cols:
            present = True
            hit |= _rule_hits(df[cols], rule)
    if not present:
        return pd.array([pd.NA] * len(df), dtype="Int8")
    return pd.array(hit.astype(np.int8), dtype="Int8")


def _rule_hits(frame: pd.DataFrame, rule: Rule) -> np.ndarray:
    """Row mask: does any cell of ``frame`` hold a code matching ``rule``?

    Cells repeat heavily (a few thousand distinct ICD codes over millions of cells), so each distinct
    cell value is split/normalised/matched once and cached.
    """
    n_rows, n_cols = frame.shape
    values = frame.to_numpy(dtype=object).ravel()
    rows = np.repeat(np.arange(n_rows), n_cols)
    keep = pd.notna(values)  # element-wise; list cells count as present
    rows, values = rows[keep], values[keep]
    cache: dict[object, bool] = {}
    hit = np.zeros(n_rows, dtype=bool)
    for row, value in zip(rows, values):
        if hit[row]:
            continue
        key = tuple(value) if isinstance(value, (list, np.ndarray)) else value
        found = cache.get(key)
        if found is None:
            codes = (ukb_fields.normalise_code(c, rule.code_type) for c in ukb_fields.split_multi(value))
            found = any(rule.matches(c) for c in codes if c)
            cache[key] = found
        hit[row] = found
    return hit
