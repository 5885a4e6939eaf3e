"""Import a UK Biobank field-ID export (CSV / TSV / Parquet) into a cohort directory.

Why streaming: a full UKB spirometry export is ~500k participants with 3-9 blow strings of ~1,200
samples each (tens of GB as CSV). We read it in row chunks (pyarrow's CSV stream reader / Parquet
record batches), turn each chunk into participants + blows rows, run QC on the chunk and append it to
the output Parquet files with ``ParquetWriter``, so memory stays bounded by the chunk size.

Bad input policy (documented in ``docs/phenotypes.md``):

* **Structural** problems abort with :class:`SpirolmInputError` naming file / field / eid: missing required
  column (eid, 31, 21022, 50, any 3066), duplicate participant id (also across chunks), unreadable or
  truncated file, CSV rows with the wrong number of fields, a whole column in the wrong unit (height in
  metres, FEV1 in mL), non-numeric or out-of-range covariates, unknown sex / smoking / ethnicity codes.
* **One bad blow** never aborts: it becomes a rejected blow with ``qc_reason = "parse_error: <message>"``
  (``"implausible_volume: <message>"`` for a negative or out-of-range volume) in ``blows.parquet`` and
  ``qc_exclusions.csv``; the participant stays (QC ``fail`` if no usable blow) and the summary counts
  it. A blow that parses but breaks a physiological limit (``signals.plausibility``: PEF 30 L/s, a 40 L
  sample) is rejected by QC as ``implausible_flow`` / ``implausible_volume`` the same way. Blow cells
  are read as bytes and decoded per cell (UTF-8, else Latin-1), so one mis-encoded blow is one
  rejected blow, not an unreadable file.
* The cohort schema then checks the importer's own output: on input data it cannot fail (QC enforces
  its spirometry ranges first); if it ever does, the error counts every offending participant of the
  file and names the first few.
* **Optional** fields (BMI, smoking, pack-years, ethnicity, Townsend, PM2.5, history flags) that are absent
  become NA with one logged warning (also listed in ``cohort.json``).
* UKB's negative "do not know / prefer not to answer" codes (-1, -3) for smoking and ethnicity → missing.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from biobank import cohort_io, schema, ukb_fields
from biobank.cohort_qc import EquationChoice, reason_counts, rejection_reason, run_qc, zscore_equations
from biobank.phenotypes import PhenotypeSpec, absent_sources, derive_history, derive_traits, load_phenotypes
from biobank.splits import assign_split
from biobank.ukb_fields import FieldRef, is_missing
from signals.errors import SpirolmInputError
from signals.plausibility import IMPLAUSIBLE_FLOW, IMPLAUSIBLE_VOLUME
from signals.qc import QCConfig
from signals.ukb3066 import as_text, parse_3066

log = logging.getLogger(__name__)

IMPORTER_VERSION = "1.1"  # 1.1: exact GLI tables (pyspiro), GLI Global 2022 z-scores by default
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
_TAB_SUFFIXES = (".tsv", ".tab", ".txt")
_PARQUET_SUFFIXES = (".parquet", ".pq")

COVARIATE_FIELDS: dict[str, int] = {
    "sex": ukb_fields.FIELD_SEX,
    "age": ukb_fields.FIELD_AGE,
    "height_cm": ukb_fields.FIELD_HEIGHT,
    "bmi": ukb_fields.FIELD_BMI,
    "smoking_status": ukb_fields.FIELD_SMOKING,
    "pack_years": ukb_fields.FIELD_PACK_YEARS,
    "ethnicity": ukb_fields.FIELD_ETHNICITY,
    "townsend": ukb_fields.FIELD_TOWNSEND,
    "pm25": ukb_fields.FIELD_PM25,
}
REQUIRED_COVARIATES = ("sex", "age", "height_cm")
PASS_THROUGH_FIELDS: dict[str, int] = {
    "ukb_fev1_best_l": ukb_fields.FIELD_FEV1_BEST,
    "ukb_fvc_best_l": ukb_fields.FIELD_FVC_BEST,
}
"""UKB's own best-measure FEV1/FVC (litres), kept next to ours for cross-checks."""
LITRE_FIELDS = (ukb_fields.FIELD_FVC_BLOW, ukb_fields.FIELD_FEV1_BLOW,
                ukb_fields.FIELD_FEV1_BEST, ukb_fields.FIELD_FVC_BEST)
"""UKB spirometry summary fields recorded in litres; a column median above 10 means mL."""


@dataclass
class ImportSummary:
    """What an import did, for the CLI, logs and ``cohort.json``.

    Attributes:
        source: the export file.
        out_dir: the cohort directory written.
        participants: participants written.
        blows: blow rows written (all instances, parseable or not).
        parse_errors: blows rejected because their 3066 string could not be parsed.
        implausible_blows: blows rejected for breaking a physiological limit (``implausible_flow`` or
            ``implausible_volume``; counted once if both).
        rejected_blows: rejected blows by reason code (a blow with two codes counts under both).
        qc_status: participants per QC status at the QC instance.
        labels: per trait ``{"cases", "controls", "missing", "prevalence"}`` (prevalence among labelled).
        splits: participants per split.
        warnings: optional fields absent from the export.
    """

    source: str
    out_dir: str
    participants: int = 0
    blows: int = 0
    parse_errors: int = 0
    implausible_blows: int = 0
    rejected_blows: dict[str, int] = field(default_factory=dict)
    qc_status: dict[str, int] = field(default_factory=dict)
    labels: dict[str, dict[str, float]] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class _Plan:
    """Which export column feeds which output, resolved once from the header."""

    eid: str
    covariates: dict[str, str | None]
    blow_columns: tuple[tuple[str, int, int | None], ...]
    litre_columns: tuple[str, ...]
    pass_through: dict[str, str]
    true_risk: tuple[str, ...]


def import_ukb_export(
    export_path: str | Path,
    out_dir: str | Path,
    *,
    qc_config: QCConfig = QCConfig(),
    phenotypes: str | Path | PhenotypeSpec | None = None,
    split_seed: int = 0,
    chunksize: int = 5000,
    progress: bool = True,
    qc_instance: int = 0,
    workers: int = 1,
    reference_equations: EquationChoice = None,
) -> ImportSummary:
    """Import a UKB export into ``participants.parquet``, ``blows.parquet``, ``qc_exclusions.csv`` and
    ``cohort.json`` in ``out_dir``.

    Args:
        export_path: ``.csv`` / ``.tsv`` / ``.tab`` / ``.txt`` (tab) / ``.parquet``; field-ID (``31-0.0``),
            ukbconv (``f.31.0.0``) or RAP (``p31``, ``p3066_i0_a1``) column names.
        out_dir: cohort directory (created; existing cohort files are replaced only on success).
        qc_config: ATS/ERS QC thresholds.
        phenotypes: a user YAML of extra/replacement traits, a loaded spec, or ``None`` for the defaults.
        split_seed: seed of the participant split hash.
        chunksize: participants per chunk (memory bound).
        progress: show a tqdm bar.
        qc_instance: the visit whose blows give the participant's spirometry (0 = baseline).
        workers: processes for per-session QC within a chunk.
        reference_equations: GLI equation(s) of the z-scores (:data:`biobank.cohort_qc.EquationChoice`;
            default GLI Global 2022), recorded in ``cohort.json`` as ``reference_equations``.

    Returns:
        :class:`ImportSummary`.

    Raises:
        SpirolmInputError: structural problems (see module docstring), naming file, field and eid.
    """
    path = Path(export_path)
    out = Path(out_dir)
    if not path.is_file():
        raise SpirolmInputError("export file does not exist", file=path)
    if chunksize < 1:
        raise SpirolmInputError(f"chunksize must be positive, got {chunksize}", field="chunksize")
    spec = phenotypes if isinstance(phenotypes, PhenotypeSpec) else load_phenotypes(phenotypes)
    equations = zscore_equations(reference_equations)  # resolve (and reject bad names) before reading
    columns = _read_header(path)
    plan = _make_plan(columns, path)
    summary = ImportSummary(source=str(path), out_dir=str(out))
    summary.warnings = _absent_warnings(plan, spec, columns)
    for w in summary.warnings:
        log.warning("%s: %s", path.name, w)

    out.mkdir(parents=True, exist_ok=True)
    partial = {name: out / (name + ".partial") for name in (
        cohort_io.PARTICIPANTS_FILE, cohort_io.BLOWS_FILE, cohort_io.EXCLUSIONS_FILE)}
    try:
        _stream(path, plan, spec, summary, partial, qc_config, split_seed, chunksize, progress, qc_instance,
                workers, equations)
        if summary.participants == 0:
            raise SpirolmInputError("the export holds no participants (header only?)", file=path)
        for name, tmp in partial.items():
            os.replace(tmp, out / name)
    finally:
        for tmp in partial.values():
            tmp.unlink(missing_ok=True)
    _finish_summary(summary)
    _write_info(out, path, summary, spec, qc_config, qc_instance, split_seed, equations)
    return summary


# --------------------------------------------------------------------------------------------------
# Reading.

def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in _PARQUET_SUFFIXES


def _delimiter(path: Path, header_line: str) -> str:
    if path.suffix.lower() in _TAB_SUFFIXES:
        return "\t"
    if path.suffix.lower() == ".csv":
        return ","
    return "\t" if "\t" in header_line else ","


def _read_header(path: Path) -> list[str]:
    """Column names, without reading the data."""
    if _is_parquet(path):
        try:
            return list(pq.ParquetFile(path).schema_arrow.names)
        except (pyarrow.ArrowException, OSError) as exc:
            raise SpirolmInputError(f"unreadable Parquet file (truncated or corrupt?): {exc}", file=path) from None
    line = _first_line(path)
    if not line.strip():
        raise SpirolmInputError("empty export file (no header line)", file=path)
    return next(csv.reader([line], delimiter=_delimiter(path, line)))


def _first_line(path: Path) -> str:
    """The header line (BOM dropped), decoding nothing beyond it: a stray byte in a data row is that
    row's problem, not the header's."""
    with open(path, "rb") as fh:
        line = fh.readline()
    try:
        return line.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpirolmInputError(f"the header line is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                                "re-save the export as UTF-8", file=path) from None


def _check_csv_complete(path: Path) -> None:
    """A file cut mid-row lacks the final newline every CSV writer emits; name the broken line."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        fh.seek(max(0, size - 1))
        last = fh.read(1)
        if last in (b"\n", b""):
            return
        fh.seek(0)
        lines = sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 24), b"")) + 1
    raise SpirolmInputError(
        f"line {lines} is incomplete: the file does not end with a newline (truncated mid-row?)", file=path)


def _iter_chunks(path: Path, columns: list[str], chunksize: int,
                 binary: frozenset[str] = frozenset()) -> Iterator[pd.DataFrame]:
    """Yield DataFrame chunks of at most ``chunksize`` rows; CSV values stay strings (``bytes`` for the
    ``binary`` columns, decoded per cell later)."""
    if _is_parquet(path):
        yield from _iter_parquet(path, chunksize)
    else:
        yield from _iter_csv(path, columns, chunksize, binary)


def _iter_parquet(path: Path, chunksize: int) -> Iterator[pd.DataFrame]:
    try:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=chunksize):
            yield batch.to_pandas()
    except (pyarrow.ArrowException, OSError) as exc:
        raise SpirolmInputError(f"unreadable Parquet file (truncated or corrupt?): {exc}", file=path) from None


def _iter_csv(path: Path, columns: list[str], chunksize: int, binary: frozenset[str]) -> Iterator[pd.DataFrame]:
    if path.suffix.lower() not in (".gz", ".bz2", ".zst"):
        _check_csv_complete(path)
    delimiter = _delimiter(path, _first_line(path))
    bad_rows: list = []

    def on_bad_row(row: object) -> str:
        bad_rows.append(row)
        return "error"

    # use_threads=False: row numbers in parse errors (pyarrow only numbers rows when single-threaded).
    reader_opts = pacsv.ReadOptions(block_size=1 << 22, use_threads=False, encoding="utf8")
    convert = pacsv.ConvertOptions(
        column_types={c: pyarrow.binary() if c in binary else pyarrow.string() for c in columns},
        strings_can_be_null=True)
    # newlines_in_values: a quoted cell may hold a line break (pyarrow: slower only when multi-threaded).
    parse = pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_bad_row, newlines_in_values=True)
    try:
        reader = pacsv.open_csv(path, read_options=reader_opts, parse_options=parse, convert_options=convert)
        pending: list[pyarrow.RecordBatch] = []
        n_pending = 0
        for batch in reader:
            pending.append(batch)
            n_pending += batch.num_rows
            while n_pending >= chunksize:
                table = pyarrow.Table.from_batches(pending)
                yield table.slice(0, chunksize).to_pandas()
                rest = table.slice(chunksize)
                pending, n_pending = rest.to_batches(), rest.num_rows
        if n_pending:
            yield pyarrow.Table.from_batches(pending).to_pandas()
    except pyarrow.ArrowInvalid as exc:
        if bad_rows:
            r = bad_rows[0]
            where = f"line {r.number}" if r.number is not None else "a row"
            raise SpirolmInputError(
                f"{where} has {r.actual_columns} fields but the header has {r.expected_columns} "
                "(file truncated, or a value with an unquoted delimiter)", file=path) from None
        m = re.search(r"CSV column #(\d+)", str(exc))
        if "invalid UTF8" in str(exc) and m and int(m.group(1)) < len(columns):
            raise SpirolmInputError(f"not UTF-8 text ({str(exc)[:200]}); re-save the export as UTF-8",
                                    file=path, field=columns[int(m.group(1))]) from None
        raise SpirolmInputError(f"malformed CSV: {str(exc)[:300]}", file=path) from None


# --------------------------------------------------------------------------------------------------
# Planning from the header.

def _make_plan(columns: list[str], path: Path) -> _Plan:
    eid = ukb_fields.find_eid_column(columns, file=path)
    refs = ukb_fields.map_columns(columns)
    seen: dict[FieldRef, str] = {}
    for col, ref in refs.items():
        if ref in seen:
            raise SpirolmInputError(f"columns {seen[ref]!r} and {col!r} hold the same field/instance/array",
                                    file=path, field=col)
        seen[ref] = col
    covariates = {name: _baseline_column(refs, f) for name, f in COVARIATE_FIELDS.items()}
    for name in REQUIRED_COVARIATES:
        if covariates[name] is None:
            f = COVARIATE_FIELDS[name]
            raise SpirolmInputError(
                f"required field {f} ({name}) is missing: expected a column like '{f}-0.0' or 'p{f}_i0'",
                file=path, field=str(f))
    blow_cols = ukb_fields.columns_for_field(refs, ukb_fields.FIELD_BLOW)
    if not blow_cols:
        raise SpirolmInputError(
            "required field 3066 (spirometry blow data) is missing: expected columns like '3066-0.0' or "
            "'p3066_i0_a0'", file=path, field="3066")
    blows = tuple((c, refs[c].instance or 0, refs[c].array) for c in blow_cols)
    litre = tuple(c for f in LITRE_FIELDS for c in ukb_fields.columns_for_field(refs, f))
    passthrough = {name: col for name, f in PASS_THROUGH_FIELDS.items()
                   if (col := _baseline_column(refs, f)) is not None}
    true_risk = tuple(c for c in columns if str(c).startswith(schema.TRUE_RISK_PREFIX))
    return _Plan(eid, covariates, blows, litre, passthrough, true_risk)


def _baseline_column(refs: dict[str, FieldRef], f: int) -> str | None:
    """The instance-0, array-0 column of a single-valued field (covariates are baseline values)."""
    cols = [c for c in ukb_fields.columns_for_field(refs, f, instance=0) if refs[c].array in (None, 0)]
    return cols[0] if cols else None


def _absent_warnings(plan: _Plan, spec: PhenotypeSpec, columns: list[str]) -> list[str]:
    out = [f"optional field {COVARIATE_FIELDS[n]} ({n}) absent; set to missing"
           for n, c in plan.covariates.items() if c is None]
    out += [f"history flag {n}: none of fields {list(f)} present; set to missing"
            for n, f in absent_sources(spec.history, columns).items()]
    out += [f"trait {n}: none of fields {list(f)} present; label missing for everyone"
            for n, f in absent_sources(spec.traits, columns).items()]
    return out


# --------------------------------------------------------------------------------------------------
# One chunk.

def _stream(path: Path, plan: _Plan, spec: PhenotypeSpec, summary: ImportSummary, partial: dict[str, Path],
            qc_config: QCConfig, split_seed: int, chunksize: int, progress: bool, qc_instance: int,
            workers: int, equations: dict[str, str]) -> None:
    extra = list(plan.pass_through) + list(plan.true_risk)
    p_schema = schema.participants_arrow_schema(spec.trait_names, extra)
    b_schema = schema.blows_arrow_schema()
    seen: set[int] = set()
    p_writer = pq.ParquetWriter(partial[cohort_io.PARTICIPANTS_FILE], p_schema)
    b_writer = pq.ParquetWriter(partial[cohort_io.BLOWS_FILE], b_schema)
    excl_path = partial[cohort_io.EXCLUSIONS_FILE]
    pd.DataFrame(columns=list(cohort_io.EXCLUSION_COLUMNS)).to_csv(excl_path, index=False)
    bar = tqdm(desc=f"importing {path.name}", unit="participant", disable=not progress)
    failures = schema.SchemaFailures()
    binary = frozenset(c for c, _, _ in plan.blow_columns)
    try:
        row_offset = 0
        for chunk in _iter_chunks(path, _read_header(path), chunksize, binary):
            chunk = chunk.reset_index(drop=True)
            eids = _parse_eids(chunk[plan.eid], plan.eid, path, row_offset, seen)
            participants = _participants(chunk, eids, plan, spec, path)
            participants["split"] = assign_split(eids, seed=split_seed, fractions=SPLIT_FRACTIONS)
            blows = _blows(chunk, eids, plan)
            participants, blows, excl = run_qc(participants, blows, qc_config, instance=qc_instance,
                                               workers=workers, progress=False, reference_equations=equations)
            # The schema guards our own output. A failure is a bug, but report it for the whole file:
            # keep validating later chunks (writing nothing more) and raise once at the end.
            schema.validate_participants(participants, path, spec.trait_names, failures=failures)
            schema.validate_blows(blows, path, failures=failures)
            row_offset += len(chunk)
            bar.update(len(chunk))
            if failures:
                continue
            p_writer.write_table(pyarrow.Table.from_pandas(participants[p_schema.names], schema=p_schema,
                                                           preserve_index=False))
            b_writer.write_table(pyarrow.Table.from_pandas(blows[b_schema.names], schema=b_schema,
                                                           preserve_index=False))
            excl.to_csv(excl_path, mode="a", header=False, index=False)
            _accumulate(summary, participants, blows, spec)
        if failures:
            raise failures.error(path)
    finally:
        bar.close()
        p_writer.close()
        b_writer.close()


def _parse_eids(raw: pd.Series, col: str, path: Path, row_offset: int, seen: set[int]) -> np.ndarray:
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() | (values % 1 != 0)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise SpirolmInputError(f"participant id {raw.iloc[i]!r} on data row {row_offset + i + 1} is not an "
                                "integer", file=path, field=col)
    eids = values.to_numpy().astype(np.int64)
    dup = pd.Series(eids).duplicated().to_numpy() | np.isin(eids, np.fromiter(seen, np.int64, len(seen)))
    if dup.any():
        eid = int(eids[np.flatnonzero(dup)[0]])
        raise SpirolmInputError("duplicate participant id: each participant must appear once", file=path,
                                eid=eid, field=col)
    seen.update(eids.tolist())
    return eids


def _participants(chunk: pd.DataFrame, eids: np.ndarray, plan: _Plan, spec: PhenotypeSpec,
                  path: Path) -> pd.DataFrame:
    n = len(chunk)
    cov = plan.covariates

    def num(name: str) -> np.ndarray:
        col = cov[name]
        return np.full(n, np.nan) if col is None else _numeric(chunk[col], eids, col, path)

    out = pd.DataFrame({"eid": eids})
    out["age"] = _in_range(num("age"), eids, cov["age"], path, "age")
    out["sex"] = _coded(chunk, cov["sex"], eids, path, ukb_fields.SEX_CODES, frozenset())
    out["height_cm"] = _in_range(num("height_cm"), eids, cov["height_cm"], path, "height_cm")
    out["bmi"] = _in_range(num("bmi"), eids, cov["bmi"], path, "bmi")
    out["smoking_status"] = _coded(chunk, cov["smoking_status"], eids, path, ukb_fields.SMOKING_CODES,
                                   ukb_fields.SMOKING_MISSING_CODES)
    pack = num("pack_years")
    _non_negative(pack, eids, cov["pack_years"], path)
    # UKB leaves 20161 empty for never smokers: their exposure is 0 pack-years, not unknown.
    out["pack_years"] = np.where(np.isnan(pack) & (out["smoking_status"] == "never").to_numpy(), 0.0, pack)
    eth = _coded(chunk, cov["ethnicity"], eids, path, ukb_fields.ETHNICITY_CODES,
                 ukb_fields.ETHNICITY_MISSING_CODES)
    out["ethnicity"] = eth
    out["gli_ethnicity"] = [ukb_fields.GLI_ETHNICITY.get(e, ukb_fields.GLI_ETHNICITY_MISSING) if e else
                            ukb_fields.GLI_ETHNICITY_MISSING for e in eth]
    out["townsend"] = num("townsend")
    pm25 = num("pm25")
    _non_negative(pm25, eids, cov["pm25"], path)
    out["pm25"] = pm25
    with_eid = chunk.assign(**{plan.eid: eids})
    history = derive_history(with_eid, spec)
    traits = derive_traits(with_eid, spec)
    for name in history.columns.drop("eid"):
        out[name] = history[name].array
    for name in traits.columns.drop("eid"):
        out[name] = traits[name].array
    for name, col in plan.pass_through.items():
        out[name] = _numeric(chunk[col], eids, col, path)
    for col in plan.true_risk:
        risk = _numeric(chunk[col], eids, col, path)
        bad = np.isfinite(risk) & ((risk < 0) | (risk > 1))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise SpirolmInputError(f"true risk {risk[i]} is not a probability in [0, 1]", file=path,
                                    eid=int(eids[i]), field=col)
        out[col] = risk
    for col in plan.litre_columns:
        _check_litres(chunk[col], eids, col, path)
    return out


def _numeric(raw: pd.Series, eids: np.ndarray, col: str, path: Path) -> np.ndarray:
    """Float values of a column; a non-numeric, non-empty cell is an error naming the participant."""
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    present = ~raw.map(is_missing).to_numpy(dtype=bool)
    bad = present & ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise SpirolmInputError(f"non-numeric value {raw.iloc[i]!r}", file=path, eid=int(eids[i]), field=col)
    return values


def _in_range(values: np.ndarray, eids: np.ndarray, col: str | None, path: Path, name: str) -> np.ndarray:
    """Range/unit check: most of a column out of range is a unit error; one value is a data error."""
    lo, hi = schema.RANGES[name]
    known = np.isfinite(values)
    out = known & ((values < lo) | (values > hi))
    if not out.any():
        return values
    hint = schema.UNIT_HINTS[name]
    if out.sum() * 2 > known.sum():
        raise SpirolmInputError(
            f"{int(out.sum())} of {int(known.sum())} values outside the plausible {name} range {lo:g}-{hi:g}: "
            f"wrong unit for the whole column? {hint}", file=path, field=col)
    i = int(np.flatnonzero(out)[0])
    raise SpirolmInputError(f"{name} {values[i]:g} outside the plausible range {lo:g}-{hi:g} ({hint})",
                            file=path, eid=int(eids[i]), field=col)


def _non_negative(values: np.ndarray, eids: np.ndarray, col: str | None, path: Path) -> None:
    bad = np.isfinite(values) & (values < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise SpirolmInputError(f"negative value {values[i]:g}", file=path, eid=int(eids[i]), field=col)


def _check_litres(raw: pd.Series, eids: np.ndarray, col: str, path: Path) -> None:
    values = _numeric(raw, eids, col, path)
    known = values[np.isfinite(values)]
    if known.size and np.median(known) > schema.RANGES["fev1_l"][1]:
        raise SpirolmInputError(
            f"median {np.median(known):g} looks like mL; UKB records this field in litres (e.g. 2.8, not 2800)",
            file=path, field=col)


def _coded(chunk: pd.DataFrame, col: str | None, eids: np.ndarray, path: Path, table: dict[int, str],
           missing: frozenset[int]) -> pd.Series:
    """Map a UKB integer coding to labels; documented negative codes → missing; anything else → error."""
    if col is None:
        return pd.Series([None] * len(chunk), dtype=object)
    values = _numeric(chunk[col], eids, col, path)
    out = np.full(len(values), None, dtype=object)
    for v in np.unique(values[np.isfinite(values)]):
        rows = values == v
        if v.is_integer() and int(v) in table:
            out[rows] = table[int(v)]
        elif not (v.is_integer() and int(v) in missing):
            i = int(np.flatnonzero(rows)[0])
            raise SpirolmInputError(
                f"unknown code {v:g}; expected one of {sorted(table)}"
                + (f" or {sorted(missing)} (missing)" if missing else ""),
                file=path, eid=int(eids[i]), field=col)
    return pd.Series(out, dtype=object)


def _blows(chunk: pd.DataFrame, eids: np.ndarray, plan: _Plan) -> pd.DataFrame:
    """One row per recorded blow; an unparseable blow is kept with ``volume_ml = None`` and its reason."""
    rows: list[dict] = []
    for col, instance, array in plan.blow_columns:
        cells = chunk[col].map(lambda v: as_text(v) if isinstance(v, (bytes, bytearray, memoryview)) else v)
        values = cells.to_numpy(dtype=object)
        for i in np.flatnonzero(~cells.map(is_missing).to_numpy(dtype=bool)):
            cells = [values[i]] if array is not None else ukb_fields.split_multi(values[i])
            for k, cell in enumerate(cells):
                index = array if array is not None else k
                rows.append(_one_blow(cell, int(eids[i]), col, instance, index))
    columns = ["eid", "instance", "blow_index", "blow_order", "volume_ml", "qc_reason"]
    df = pd.DataFrame(rows, columns=columns)
    df = df.sort_values(["eid", "instance", "blow_index"], kind="stable").reset_index(drop=True)
    for c in ("eid", "instance", "blow_index"):
        df[c] = df[c].astype("int64")
    df["blow_order"] = df["blow_order"].astype("Int32")
    return df


def _one_blow(cell: object, eid: int, col: str, instance: int, index: int) -> dict:
    try:
        blow = parse_3066(cell, eid=eid, field=col)
    except SpirolmInputError as exc:
        return {"eid": eid, "instance": instance, "blow_index": index, "blow_order": None,
                "volume_ml": None, "qc_reason": rejection_reason(exc)}
    return {"eid": eid, "instance": instance, "blow_index": index, "blow_order": blow.order,
            "volume_ml": blow.volume_ml, "qc_reason": ""}


# --------------------------------------------------------------------------------------------------
# Summary and provenance.

def _accumulate(summary: ImportSummary, participants: pd.DataFrame, blows: pd.DataFrame,
                spec: PhenotypeSpec) -> None:
    summary.participants += len(participants)
    summary.blows += len(blows)
    reasons = blows.loc[blows["qc_status"] == "reject", "qc_reason"].tolist()
    for k, v in reason_counts(reasons).items():
        summary.rejected_blows[k] = summary.rejected_blows.get(k, 0) + v
    summary.parse_errors = summary.rejected_blows.get("parse_error", 0)
    implausible = (IMPLAUSIBLE_FLOW, IMPLAUSIBLE_VOLUME)
    summary.implausible_blows += sum(1 for r in reasons if any(c in implausible for c in reason_counts([r])))
    for k, v in participants["qc_status"].value_counts().items():
        summary.qc_status[str(k)] = summary.qc_status.get(str(k), 0) + int(v)
    for k, v in participants["split"].value_counts().items():
        summary.splits[str(k)] = summary.splits.get(str(k), 0) + int(v)
    for t in spec.trait_names:
        y = participants[t]
        c = summary.labels.setdefault(t, {"cases": 0, "controls": 0, "missing": 0})
        c["cases"] += int((y == 1).sum())
        c["controls"] += int((y == 0).sum())
        c["missing"] += int(y.isna().sum())


def _finish_summary(summary: ImportSummary) -> None:
    for c in summary.labels.values():
        labelled = c["cases"] + c["controls"]
        c["prevalence"] = c["cases"] / labelled if labelled else float("nan")
    summary.rejected_blows = dict(sorted(summary.rejected_blows.items()))
    summary.qc_status = dict(sorted(summary.qc_status.items()))
    summary.splits = dict(sorted(summary.splits.items()))


def _file_hash(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def _write_info(out: Path, source: Path, summary: ImportSummary, spec: PhenotypeSpec, qc_config: QCConfig,
                qc_instance: int, split_seed: int, equations: dict[str, str]) -> None:
    """``cohort.json``: provenance without timestamps, so the same input gives the same file."""
    content = hashlib.blake2b(digest_size=16)
    for name in (cohort_io.PARTICIPANTS_FILE, cohort_io.BLOWS_FILE, cohort_io.EXCLUSIONS_FILE):
        content.update(_file_hash(out / name).encode())
    info = {
        "importer_version": IMPORTER_VERSION,
        "source": {"name": source.name, "size_bytes": source.stat().st_size, "blake2b": _file_hash(source)},
        "qc_config": dataclasses.asdict(qc_config),
        "qc_instance": qc_instance,
        "reference_equations": equations,
        "split_seed": split_seed,
        "split_fractions": list(SPLIT_FRACTIONS),
        "traits": list(spec.trait_names),
        "phenotypes": spec.to_dict(),
        "summary": {k: v for k, v in summary.to_dict().items() if k not in ("source", "out_dir")},
        "content_hash": content.hexdigest(),
    }
    (out / cohort_io.COHORT_JSON).write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
