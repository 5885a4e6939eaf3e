"""UK Biobank column names, coding tables and cell normalisation.

Why one module: UKB data reach us under several naming schemes (showcase field-ID ``31-0.0``, the
Research Analysis Platform's ``p31_i0_a0``, the R ``ukbconv`` ``f.31.0.0``) and with several cell
encodings (one code per column, or a RAP list ``["J449","I10"]`` in one cell). Everything downstream
works on ``(field, instance, array)`` and bare codes, so the translation lives here and nowhere else.

Coding tables (sources: UKB showcase codings as summarised in ``shared/reference/spirometry.md`` §1.4
and the project brief):

| field | coding | values |
|---|---|---|
| 31 sex | 9 | 0 female, 1 male |
| 20116 smoking status | 90 | 0 never, 1 previous, 2 current, -3 prefer not to answer → missing |
| 21000 ethnic background | 1001 | 1/1001/1002/1003 white; 2/2001–2004 mixed; 3001–3003 south_asian;
  3/3004 other Asian → other; 4/4001–4003 black; 5 chinese; 6 other; -1 do not know / -3 prefer not to
  answer → missing |

GLI-2012 ethnic group (Quanjer 2012): white → ``caucasian``, black → ``african_american``, chinese →
``ne_asian``; every other group, **including South Asians**, → ``other``. GLI-2012 has no South-Asian
equation; its "other/mixed" composite is the documented fallback.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd

from signals.errors import SpirolmInputError

# --------------------------------------------------------------------------------------------------
# Field ids used by the importer.
FIELD_SEX = 31
FIELD_HEIGHT = 50
FIELD_TOWNSEND = 189
FIELD_FVC_BLOW = 3062
FIELD_FEV1_BLOW = 3063
FIELD_BLOW = 3066
FIELD_SMOKING = 20116
FIELD_FEV1_BEST = 20150
FIELD_FVC_BEST = 20151
FIELD_PACK_YEARS = 20161
FIELD_ETHNICITY = 21000
FIELD_BMI = 21001
FIELD_AGE = 21022
FIELD_PM25 = 24006

REQUIRED_FIELDS: tuple[int, ...] = (FIELD_SEX, FIELD_AGE, FIELD_HEIGHT, FIELD_BLOW)
"""Without these a participant cannot be placed on the GLI reference or given a spirogram."""

EID_COLUMNS: tuple[str, ...] = ("eid", "participant.eid", "Participant ID", "f.eid")

SEX_CODES: dict[int, str] = {0: "female", 1: "male"}
SMOKING_CODES: dict[int, str] = {0: "never", 1: "previous", 2: "current"}
SMOKING_MISSING_CODES: frozenset[int] = frozenset({-3})

ETHNICITY_CODES: dict[int, str] = {
    1: "white", 1001: "white", 1002: "white", 1003: "white",
    2: "mixed", 2001: "mixed", 2002: "mixed", 2003: "mixed", 2004: "mixed",
    3: "other", 3001: "south_asian", 3002: "south_asian", 3003: "south_asian", 3004: "other",
    4: "black", 4001: "black", 4002: "black", 4003: "black",
    5: "chinese",
    6: "other",
}
"""UKB coding 1001. Code 3 ("Asian or Asian British", no subgroup) cannot be told apart between
South Asian and other Asian, so it goes to ``other`` like 3004 (brief, 'Details/decisions')."""
ETHNICITY_MISSING_CODES: frozenset[int] = frozenset({-1, -3})

GLI_ETHNICITY: dict[str, str] = {
    "white": "caucasian",
    "black": "african_american",
    "chinese": "ne_asian",
    "mixed": "other",
    "south_asian": "other",
    "other": "other",
}
GLI_ETHNICITY_MISSING = "other"
"""GLI-2012 'other/mixed' is a composite of all groups: the least-wrong choice when ethnicity is unknown."""


@dataclass(frozen=True)
class FieldRef:
    """Where a column sits in UKB's data model.

    Attributes:
        field: UKB field id (e.g. 3066).
        instance: assessment visit (0 = baseline); ``None`` when the column name omits it (RAP ``p31``).
        array: array slot (blow number for 3066, diagnosis slot for 41270); ``None`` when omitted or the
            cell holds the whole array as a list.
    """

    field: int
    instance: int | None = None
    array: int | None = None


_FIELD_ID = re.compile(r"^(\d+)-(\d+)\.(\d+)$")
_UKBCONV = re.compile(r"^f\.(\d+)\.(\d+)\.(\d+)$")
_RAP = re.compile(r"^p(\d+)(?:_i(\d+))?(?:_a(\d+))?$")


def parse_column(name: str) -> FieldRef | None:
    """Parse a UKB export column name.

    Args:
        name: ``31-0.0`` (showcase), ``f.31.0.0`` (ukbconv R), ``p3066_i0_a2`` / ``p31_i0`` /
            ``p41270_a3`` / ``p41270`` (RAP).

    Returns:
        The :class:`FieldRef`, or ``None`` for anything else (``eid``, ``true_risk_copd``, ...), so callers
        can pass non-field columns through or ignore them.
    """
    text = str(name).strip()
    for pattern in (_FIELD_ID, _UKBCONV):
        m = pattern.match(text)
        if m:
            return FieldRef(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    m = _RAP.match(text)
    if m:
        inst = None if m.group(2) is None else int(m.group(2))
        arr = None if m.group(3) is None else int(m.group(3))
        return FieldRef(int(m.group(1)), inst, arr)
    return None


def map_columns(columns: Iterable[str]) -> dict[str, FieldRef]:
    """Map every UKB field column of an export header to its :class:`FieldRef` (others are skipped)."""
    out: dict[str, FieldRef] = {}
    for col in columns:
        ref = parse_column(col)
        if ref is not None:
            out[str(col)] = ref
    return out


def find_eid_column(columns: Sequence[str], *, file: object | None = None) -> str:
    """Return the participant-id column of an export.

    Raises:
        SpirolmInputError: no known id column (naming the accepted spellings), or more than one.
    """
    found = [c for c in columns if str(c).strip() in EID_COLUMNS]
    if not found:
        raise SpirolmInputError(
            f"no participant id column; expected one of {list(EID_COLUMNS)}", file=file, field="eid"
        )
    if len(found) > 1:
        raise SpirolmInputError(f"several participant id columns {found}; keep exactly one", file=file, field="eid")
    return found[0]


def columns_for_field(
    refs: dict[str, FieldRef], field: int, instance: int | None = None
) -> list[str]:
    """Columns holding ``field``, optionally restricted to one instance, in (instance, array) order.

    A column without an instance (RAP ``p31``) counts as instance 0: RAP only drops ``_i`` for fields
    that exist at a single visit.
    """
    def key(col: str) -> tuple[int, int]:
        r = refs[col]
        return (r.instance or 0, -1 if r.array is None else r.array)

    cols = [
        c for c, r in refs.items()
        if r.field == field and (instance is None or (r.instance or 0) == instance)
    ]
    return sorted(cols, key=key)


# --------------------------------------------------------------------------------------------------
# Cell normalisation.

_MISSING_TEXT = frozenset({"", "nan", "na", "none", "null", "<na>"})
_INT_FLOAT = re.compile(r"^-?\d+\.0*$")


def is_missing(value: object) -> bool:
    """True for ``None``, NaN, ``pd.NA`` and empty / 'NA'-like strings."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str):
        return value.strip().lower() in _MISSING_TEXT
    try:
        return bool(pd.isna(value)) if not isinstance(value, (list, tuple)) else False
    except (TypeError, ValueError):
        return False


def split_multi(value: object) -> list[str]:
    """Split one cell into its raw code strings.

    Why: RAP exports put a whole array field in one cell, as a JSON-ish list (``["J449","I10"]``) or
    ``|``-separated text; Parquet may give a real list. Field-ID exports have one code per column, which is
    the one-element case.
    """
    if value is None:
        return []
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if not is_missing(v)]
    if is_missing(value):
        return []
    text = str(value).strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = [t.strip().strip("'\"") for t in text[1:-1].split(",")]
        return [str(v) for v in parsed if not is_missing(v)]
    if "|" in text:
        return [t for t in (p.strip() for p in text.split("|")) if t]
    return [text]


def normalise_code(raw: object, code_type: str) -> str:
    """Normalise one code to the bare form the phenotype rules use.

    Args:
        raw: the code as read (``"J44.9 Chronic obstructive ..."``, ``"4912"``, ``"6.0"``, ``6``).
        code_type: ``"icd"`` (ICD-9/ICD-10: first token, dots removed, upper case) or ``"integer"``
            (UKB categorical codes: ``"6.0"`` → ``"6"``, so float-typed exports still match).

    Returns:
        The bare code (e.g. ``"J449"``, ``"1111"``); ``""`` if nothing is left.
    """
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    text = str(raw).strip().strip("'\"")
    if not text:
        return ""
    token = text.split()[0]
    if code_type == "icd":
        return token.replace(".", "").upper()
    if code_type == "integer":
        return token.split(".")[0] if _INT_FLOAT.match(token) else token
    raise ValueError(f"unknown code_type {code_type!r}")
