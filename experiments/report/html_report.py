"""The main job's HTML report: one self-contained file a reader opens in any browser.

Why one file with everything inlined (images as base64 ``data:`` URIs, CSS in a ``<style>``
element, no JavaScript, no fonts or scripts fetched from anywhere): the report is mailed, attached to
tickets and archived next to a run; it must show the same thing offline, years later, and it must not
leak that someone opened it. Why Jinja2 with autoescaping: every string in the report comes from files
a user can edit (config values, method names, captions, CSV cells), so escaping is the default and
nothing is glued together by hand.

The report reads only the run directory written by :func:`experiments.pipeline.run.run_main` (layout in
``docs/design.md``) and renders a "not run" note for every part that is absent, because stages can be
disabled. Manifests written by explanation stages (``explanations/**/index.json``) are rendered
generically, so a new explanation stage needs no change here.

Usage::

    write_html_report(Path("runs/default"))            # -> runs/default/report/report.html
    python -m experiments.report.html_report runs/default      # same, from a shell
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import math
import platform
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from biobank.cohort_io import read_blows, read_cohort
from biobank.describe import describe_cohort
from biobank.splits import SPLITS
from experiments.baselines.fit import DATA_NOTES_FILE
from experiments.helm.config import ALL_ROWS
from signals.errors import SpirolmInputError

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
#: ``id`` of every top-level section; the browser check looks for them in the rendered DOM.
SECTION_IDS = ("cohort", "comparison", "plots", "helm", "explanations", "examples", "stages", "config", "versions")
RESULTS_COLUMNS = ("method", "trait", "n", "prevalence", "auroc", "auroc_ci_lo", "auroc_ci_hi", "auprc",
                   "auprc_ci_lo", "auprc_ci_hi")
MAX_TABLE_ROWS = 40
#: Columns never rendered from manifest tables: participant identifiers (see :func:`_csv_table`).
ID_COLUMNS = frozenset({"eid", "participant_id"})
_IMAGE_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".svg": "image/svg+xml", ".webp": "image/webp"}
#: Row order of the comparison tables: reference first, then classic models, then the LLM rows.
_HELM_ROW_ORDER = ALL_ROWS
#: (label, distribution names tried in order) for the versions table.
_PACKAGES = (("spirolm", ("spirolm",)), ("torch", ("torch",)), ("transformers", ("transformers",)),
             ("lightning", ("lightning",)), ("mlflow", ("mlflow",)), ("xgboost", ("xgboost", "xgboost-cpu")),
             ("shap", ("shap",)), ("scikit-learn", ("scikit-learn",)), ("numpy", ("numpy",)),
             ("pandas", ("pandas",)))


# ----------------------------------------------------------------------------- small data holders


@dataclass(frozen=True)
class Table:
    """A table ready to render: every cell already a string (the template escapes it).

    ``strong`` holds ``(row, column)`` cells rendered bold (best model per column).
    """

    header: list[str]
    rows: list[list[str]]
    note: str = ""
    strong: frozenset[tuple[int, int]] = frozenset()
    numeric_from: int = 1  # columns from this index on are right-aligned
    groups: tuple[tuple[str, int], ...] = ()  # optional header row above ``header``: (label, colspan)
    collapsed: bool = False  # inside a closed <details> (long reference tables)
    numeric: frozenset[int] | None = None  # right-aligned columns; None: every column from ``numeric_from``

    def is_num(self, column: int) -> bool:
        """Whether ``column`` holds numbers (right-aligned, tabular digits)."""
        return column in self.numeric if self.numeric is not None else column >= self.numeric_from
    wide: bool = False  # rendered on its own line rather than beside other small tables


@dataclass(frozen=True)
class Figure:
    """An inlined image: ``src`` is a ``data:`` URI."""

    title: str
    src: str
    caption: str = ""


@dataclass(frozen=True)
class Item:
    """One entry of an explanation manifest, resolved: an image or a table."""

    title: str
    caption: str
    kind: str
    figure: Figure | None = None
    table: Table | None = None


@dataclass
class Section:
    """An optional report part: ``present`` False renders the "not run" note."""

    present: bool
    title: str = ""
    note: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    facts: list[tuple[str, str]] = field(default_factory=list)
    anchor: str = ""
    blocks: list[tuple[str, list[Item]]] = field(default_factory=list)


# ----------------------------------------------------------------------------- formatting helpers


def fmt_num(x: object, digits: int = 3) -> str:
    """A number as text with ``digits`` decimals; missing/NaN as ``n/a``."""
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "n/a" if x is None else str(x)
    return "n/a" if not math.isfinite(v) else f"{v:.{digits}f}"


def fmt_ci(value: object, low: object, high: object, digits: int = 3) -> str:
    """``0.913 [0.897, 0.928]``; without a finite CI only the value."""
    text = fmt_num(value, digits)
    if fmt_num(low) == "n/a" or fmt_num(high) == "n/a":
        return text
    return f"{text} [{fmt_num(low, digits)}, {fmt_num(high, digits)}]"


def _fmt_cell(x: object) -> str:
    """A CSV cell for display: integers as integers (no separators: they may be codes), other floats
    with 4 significant digits, missing as empty."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if isinstance(x, float):
        return str(int(x)) if x.is_integer() and abs(x) < 1e15 else f"{x:.4g}"
    return str(x)


def data_uri(path: Path) -> str:
    """The file as a base64 ``data:`` URI (so the HTML needs nothing beside it)."""
    mime = _IMAGE_MIME.get(path.suffix.lower())
    if mime is None:
        raise SpirolmInputError(f"cannot inline image of type {path.suffix!r}; use one of {', '.join(_IMAGE_MIME)}",
                                file=path)
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpirolmInputError(f"not valid JSON ({exc})", file=path) from None


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SpirolmInputError(f"not a readable CSV table ({exc})", file=path) from None


def _counts_table(counts: dict[str, int], label: str, total: int | None = None, note: str = "") -> Table:
    rows = [[k, f"{v:,}"] + ([f"{v / total:.1%}"] if total else []) for k, v in counts.items()]
    return Table([label, "count"] + (["share"] if total else []), rows, note=note)


# ----------------------------------------------------------------------------- cohort


def _describe_source(source: object) -> str:
    """``cohort.json``'s source (a file fingerprint dict or a string) as one readable line."""
    if not isinstance(source, dict):
        return str(source)
    parts = [str(source.get("name") or source.get("path") or "?")]
    if isinstance(source.get("size_bytes"), (int, float)):
        parts.append(f"{source['size_bytes'] / 1e6:.1f} MB")
    parts += [f"{k} {str(v)[:16]}…" for k, v in source.items() if k in ("blake2b", "sha256", "md5")]
    return ", ".join(parts)


def cohort_section(run_dir: Path) -> Section:
    """Counts, QC outcome and exclusion reasons, prevalence per trait and split, example curves."""
    cohort_dir = run_dir / "cohort"
    if not (cohort_dir / "participants.parquet").exists():
        return Section(present=False, title="Cohort")
    cohort = read_cohort(cohort_dir, blows=False, validate=False)
    p = cohort.participants
    blows = None
    if (cohort_dir / "blows.parquet").exists():
        blows = read_blows(cohort_dir, columns=["qc_status", "qc_reason"], validate=False)
    traits = list(cohort.traits)
    desc = describe_cohort(p, traits, blows)
    sec = Section(present=True, title="Cohort")
    sec.facts = [("participants", f"{desc.n_participants:,}")]
    if desc.n_blows is not None:
        sec.facts.append(("blows", f"{desc.n_blows:,}"))
    sec.facts.append(("traits", ", ".join(traits) or "none"))
    source = cohort.info.get("source") or cohort.info.get("source_file")
    if source:
        sec.facts.append(("source", _describe_source(source)))
    synthetic = cohort.info.get("synthetic")
    if isinstance(synthetic, dict) and synthetic.get("variant"):
        sec.facts.append(("synthetic cohort variant", str(synthetic["variant"])))
    equations = cohort.info.get("reference_equations")
    if isinstance(equations, dict) and equations:
        sec.facts.append(("GLI z-score equations", ", ".join(f"{k}: {v}" for k, v in equations.items())))
    if desc.synthetic:
        sec.note = ("Synthetic cohort: labels were drawn from known true risks (the oracle row). "
                    "Results show what a method can recover from simulated data, not clinical evidence.")

    # participants per split and QC status
    statuses = [s for s in ("pass", "warn", "fail") if s in desc.qc_status_counts] + sorted(
        s for s in desc.qc_status_counts if s not in ("pass", "warn", "fail"))
    split_rows = []
    if "split" in p:
        cross = pd.crosstab(p["split"], p["qc_status"])
        for s in [*SPLITS, *sorted(set(cross.index) - set(SPLITS))]:
            if s not in cross.index:
                continue
            row = cross.loc[s]
            split_rows.append([s, f"{int(row.sum()):,}", *[f"{int(row.get(q, 0)):,}" for q in statuses]])
    split_rows.append(["all", f"{len(p):,}", *[f"{desc.qc_status_counts.get(q, 0):,}" for q in statuses]])
    sec.tables.append(Table(["split", "participants", *[f"QC {q}" for q in statuses]], split_rows,
                            note="Participants per split and participant-level QC status."))

    # prevalence per trait and split
    trait_rows = []
    for t in desc.traits:
        trait_rows.append([t.trait, f"{t.n_labelled:,}", f"{t.n_missing:,}", f"{t.n_cases:,}", fmt_num(t.prevalence),
                           *[fmt_num(t.prevalence_by_split.get(s)) for s in SPLITS],
                           fmt_num(t.oracle_auroc), fmt_num(t.oracle_auroc_test)])
    sec.tables.append(Table(["trait", "labelled", "missing label", "cases", "prevalence",
                             *[f"prev. {s}" for s in SPLITS], "oracle AUROC (all)", "oracle AUROC (test)"],
                            trait_rows, note="Prevalence among labelled participants, overall and per split."))

    # QC exclusions with reasons
    for status, label in (("fail", "failed participants (no acceptable blow; excluded from the comparison)"),
                          ("warn", "participants with a QC warning (kept)")):
        subset = p[p["qc_status"] == status]
        if len(subset):
            reasons = describe_cohort(subset, [], None).participant_qc_reasons
            sec.tables.append(_counts_table(reasons, "reason", len(subset),
                                            note=f"Reasons of the {len(subset):,} {label}."))
    if desc.blow_qc_reasons:
        n_rejected = int((blows["qc_status"] != "accept").sum()) if blows is not None else 0
        sec.tables.append(_counts_table(
            desc.blow_qc_reasons, "blow rejection reason",
            note=f"{n_rejected:,} rejected blows; a blow can have several reasons, so counts add up to more."))
    warnings = (cohort.info.get("summary") or {}).get("warnings") or []
    if warnings:
        sec.tables.append(Table(["import warning"], [[str(w)] for w in warnings], numeric=frozenset(), wide=True,
                                note="Fields the export does not carry (cohort.json): missing for every participant. "
                                     "The baselines drop such covariates; the LLM record prints them as unknown."))
    exclusions = cohort_dir / "qc_exclusions.csv"
    if exclusions.exists():
        levels = _read_csv(exclusions)
        if "level" not in levels:
            raise SpirolmInputError("qc_exclusions.csv has no 'level' column", file=exclusions, field="level")
        counts = {str(k): int(v) for k, v in levels["level"].value_counts().sort_index().items()}
        sec.facts.append(("qc_exclusions.csv", ", ".join(f"{v:,} {k} rows" for k, v in counts.items()) or "empty"))
    return sec


def examples_section(run_dir: Path) -> Section:
    """Example spirograms per phenotype (written by the main job next to the cohort summary)."""
    png = run_dir / "report" / "example_curves.png"
    if not png.exists():
        return Section(present=False, title="Example spirograms")
    return Section(present=True, title="Example spirograms", figures=[Figure(
        "Example spirograms by phenotype", data_uri(png),
        "Flow-volume and volume-time curves of randomly drawn participants per phenotype (best blow). "
        "Attributions on curves, where an explanation stage produced them, are under Explanations.")])


# ----------------------------------------------------------------------------- comparison tables


def _method_rank(method: str) -> int:
    if method == "oracle":
        return 0
    if method.startswith("encoder"):
        return 2
    if method.startswith("helm:") or method.startswith("llm"):
        return 3
    return 1


def order_methods(methods: Iterable[str]) -> list[str]:
    """Oracle first, then tabular baselines, the encoder, the LLM rows (text before spirogram rows).

    Within a group the first-appearance order of the results file is kept (it follows the config's
    feature-set order), so the table reads like the HeLM paper's.
    """
    seen = list(dict.fromkeys(methods))

    def key(m: str) -> tuple[int, int, int]:
        helm_pos = _HELM_ROW_ORDER.index(m) if m in _HELM_ROW_ORDER else len(_HELM_ROW_ORDER)
        return _method_rank(m), helm_pos, seen.index(m)

    return sorted(seen, key=key)


def comparison_table(results_csv: Path) -> Table:
    """The comparison table from ``results.csv``: methods × traits, AUROC and AUPRC with 95% CIs.

    The best non-oracle AUROC and AUPRC of each trait are marked (bold) so the reader finds them
    without comparing every cell; ``% of oracle`` is AUROC relative to the oracle's.
    """
    df = _read_csv(results_csv)
    missing = [c for c in RESULTS_COLUMNS if c not in df.columns]
    if missing:
        raise SpirolmInputError(f"results table lacks column {missing[0]!r}", file=results_csv, field=missing[0])
    traits = list(dict.fromkeys(df["trait"].astype(str)))
    methods = order_methods(df["method"].astype(str))
    by = {(str(r.method), str(r.trait)): r for r in df.itertuples(index=False)}
    has_ratio = "auroc_vs_oracle" in df.columns and "oracle" in methods
    per_trait = 3 if has_ratio else 2
    header, groups = ["method"], [("", 1)]
    for t in traits:
        first = next(r for (m, tt), r in by.items() if tt == t)
        groups.append((f"{t} (n={int(first.n):,}, prevalence {fmt_num(first.prevalence)})", per_trait))
        header += ["AUROC [95% CI]", "AUPRC [95% CI]"] + (["AUROC % of oracle"] if has_ratio else [])
    rows, strong = [], set()
    for m in methods:
        row = [m]
        for t in traits:
            r = by.get((m, t))
            if r is None:
                row += ["—"] * per_trait
                continue
            row += [fmt_ci(r.auroc, r.auroc_ci_lo, r.auroc_ci_hi), fmt_ci(r.auprc, r.auprc_ci_lo, r.auprc_ci_hi)]
            if has_ratio:
                ratio = float(getattr(r, "auroc_vs_oracle", float("nan")))
                row.append("" if m == "oracle" else ("n/a" if not math.isfinite(ratio) else f"{ratio:.0%}"))
        rows.append(row)
    for j, t in enumerate(traits):
        for k, metric in enumerate(("auroc", "auprc")):
            cands = [(float(getattr(by[(m, t)], metric)), i) for i, m in enumerate(methods)
                     if m != "oracle" and (m, t) in by and math.isfinite(float(getattr(by[(m, t)], metric)))]
            if len(cands) > 1:
                best = max(v for v, _ in cands)
                strong.update((i, 1 + j * per_trait + k) for v, i in cands if v == best)
    return Table(header, rows, strong=frozenset(strong), groups=tuple(groups), wide=True)


def _note_from_markdown(md: Path) -> str:
    """The prose before the first table of a comparison note (``comparison.md``)."""
    if not md.exists():
        return ""
    lines = []
    for line in md.read_text().splitlines():
        if line.lstrip().startswith("|"):
            break
        lines.append(line.strip())
    return " ".join(x for x in lines if x)


def _plots(plot_dir: Path, traits: Sequence[str]) -> list[Figure]:
    figs = []
    names = {"roc": "ROC", "pr": "precision-recall", "calibration": "calibration"}
    for t in traits:
        for kind, label in names.items():
            png = plot_dir / f"{t}_{kind}.png"
            if png.exists():
                figs.append(Figure(f"{t}: {label}", data_uri(png)))
    return figs


def dropped_features_note(run_dir: Path) -> str:
    """One sentence naming the covariates the baselines dropped as missing for everyone ("" if none)."""
    path = run_dir / "baselines" / DATA_NOTES_FILE
    if not path.exists():
        return ""
    notes = _read_json(path)
    dropped = notes.get("dropped_features") if isinstance(notes, dict) else None
    if not isinstance(dropped, list):
        raise SpirolmInputError("no 'dropped_features' list", file=path, field="dropped_features")
    if not dropped:
        return ""
    return (f"Baselines fitted without {', '.join(map(str, dropped))}: missing for every participant of the cohort "
            f"or of one split (baselines/{DATA_NOTES_FILE}).")


def evaluation_section(eval_dir: Path, title: str) -> tuple[Section, Section]:
    """(table section, plots section) of one evaluation directory (``evaluation`` / ``evaluation_helm``)."""
    results = eval_dir / "results.csv"
    if not results.exists():
        return Section(present=False, title=title), Section(present=False, title=title)
    tables = [comparison_table(results)]
    diffs = eval_dir / "differences.csv"
    if diffs.exists() and not _read_csv(diffs).empty:
        tables.append(differences_table(diffs))
    tables.append(calibration_table(results))
    note = _note_from_markdown(eval_dir / "comparison.md")
    note = (note + " " if note else "") + (
        "Bold: best AUROC / AUPRC of each trait apart from the oracle (true risk, the ceiling on these labels). "
        "CIs overlapping the best one mean the difference is not resolved on this test set.")
    traits = list(dict.fromkeys(_read_csv(results)["trait"].astype(str)))
    figs = _plots(eval_dir / "plots", traits)
    plots = Section(present=bool(figs), title=title, figures=figs)
    return Section(present=True, title=title, note=note, tables=tables), plots


def differences_table(differences_csv: Path) -> Table:
    """Paired bootstrap AUROC differences (focal row minus each other row, same participants)."""
    df = _read_csv(differences_csv)
    traits = list(dict.fromkeys(df["trait"].astype(str)))
    rows = []
    for (focal, other), block in df.groupby(["focal", "other"], sort=False):
        cell = {str(r.trait): f"{r.auroc_diff:+.3f} [{r.ci_lo:+.3f}, {r.ci_hi:+.3f}]" for r in block.itertuples()}
        rows.append([str(focal), str(other), *[cell.get(t, "—") for t in traits]])
    return Table(["row", "minus", *[f"{t}: ΔAUROC [95% CI]" for t in traits]], rows, numeric_from=2,
                 note="Paired bootstrap differences of AUROC on the same participants and resamples: a CI that "
                      "excludes 0 is a resolved difference.")


def calibration_table(results_csv: Path) -> Table:
    """Brier score, calibration slope / intercept and ECE of every row (trained HeLM rows before and after)."""
    df = _read_csv(results_csv)
    traits = list(dict.fromkeys(df["trait"].astype(str)))
    by = {(str(r.method), str(r.trait)): r for r in df.itertuples(index=False)}
    rows = []
    for m in order_methods(df["method"].astype(str)):
        row = [m]
        for t in traits:
            r = by.get((m, t))
            row.append("—" if r is None else " / ".join(
                fmt_num(getattr(r, c, float("nan"))) for c in ("brier", "calibration_slope", "calibration_intercept",
                                                             "ece")))
        rows.append(row)
    return Table(["method", *[f"{t}: Brier / slope / intercept / ECE" for t in traits]], rows, collapsed=True,
                 note="Calibration on the same people (ideal: low / 1 / 0 / 0). Trained HeLM rows are calibrated on "
                      "validation; their '-uncalibrated' rows are the risks before.")


# ----------------------------------------------------------------------------- HeLM stage


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _flatten(v, f"{prefix}{k}.")
        elif isinstance(v, float):
            out.append((f"{prefix}{k}", f"{v:.4g}"))
        elif isinstance(v, (list, tuple)):
            out.append((f"{prefix}{k}", ", ".join(map(str, v))))
        else:
            out.append((f"{prefix}{k}", "null" if v is None else str(v)))
    return out


def helm_info(run_dir: Path) -> dict[str, Any] | None:
    """``helm/helm_stage.json`` if the HeLM stage ran."""
    path = run_dir / "helm" / "helm_stage.json"
    if not path.exists():
        return None
    info = _read_json(path)
    if not isinstance(info, dict):
        raise SpirolmInputError("expected a JSON object", file=path)
    return info


def helm_section(run_dir: Path) -> tuple[Section, Section]:
    """HeLM stage settings, counts and timings plus its comparison table on the HeLM test subsample."""
    info = helm_info(run_dir)
    table_sec, plots_sec = evaluation_section(run_dir / "evaluation_helm",
                                              "Comparison on the HeLM test subsample")
    if info is None and not table_sec.present:
        return Section(present=False, title="HeLM (LLM) rows"), plots_sec
    sec = Section(present=True, title="HeLM (LLM) rows")
    sec.note = ("Every HeLM row scores the same seeded subsample of the QC-passing test split; all other methods "
                "are re-scored on that subsample here, because AUROCs on different people are not comparable.")
    if info is not None:
        llm = info.get("llm") or {}
        sec.facts = [(f"LLM {k}", str(v)) for k, v in llm.items()]
        if "traits" in info:
            sec.facts.append(("traits", ", ".join(map(str, info["traits"]))))
        counts = info.get("counts") or {}
        if counts:
            sec.tables.append(Table(["participants", "count"], [[k, _fmt_cell(v)] for k, v in counts.items()],
                                    note="Participants used by the HeLM stage."))
        seconds = info.get("seconds") or {}
        if seconds:
            sec.tables.append(Table(["step", "seconds"], [[k, fmt_num(v, 1)] for k, v in seconds.items()],
                                    note="Wall seconds per HeLM row (training + scoring)."))
        settings = dict(info.get("settings") or {})
        if "seed" in info:
            settings["seed"] = info["seed"]
        if settings:
            sec.tables.append(Table(["setting", "value"], [list(kv) for kv in _flatten(settings)],
                                    note="HeLM stage settings.", collapsed=True))
    if table_sec.present:
        sec.tables = table_sec.tables + sec.tables
        sec.note = table_sec.note + " " + sec.note
    return sec, plots_sec


# ----------------------------------------------------------------------------- explanations


#: Section titles of the main job's explanation folders; other folders are titled from their path.
KNOWN_EXPLANATION_TITLES = {"tabular": "Tabular SHAP (baselines)", "helm": "HeLM explanations"}


def _manifest_title(manifest: Path, explanations_dir: Path, declared: str | None) -> str:
    if declared:
        return declared
    rel = manifest.parent.relative_to(explanations_dir)
    if rel.as_posix() in KNOWN_EXPLANATION_TITLES:
        return KNOWN_EXPLANATION_TITLES[rel.as_posix()]
    parts = [str(p).replace("_", " ").replace("-", " ") for p in rel.parts] or ["explanations"]
    return " / ".join(parts).capitalize()


def _csv_table(path: Path, caption: str) -> Table:
    """A manifest's CSV as a table: first rows only, participant-id columns left out (with a note).

    Why drop ``eid``: the report is the file that gets mailed and attached; participant identifiers
    stay in the run directory's CSVs, where access is controlled like the cohort's.
    """
    df = _read_csv(path)
    hidden = [c for c in df.columns if str(c).lower() in ID_COLUMNS]
    df = df.drop(columns=hidden)
    shown = df.head(MAX_TABLE_ROWS)
    rows = [[_fmt_cell(v.item() if hasattr(v, "item") else v) for v in rec] for rec in shown.itertuples(index=False)]
    notes = [caption] if caption else []
    if len(df) > MAX_TABLE_ROWS:
        notes.append(f"(first {MAX_TABLE_ROWS} of {len(df):,} rows; full table: {path.name})")
    if hidden:
        notes.append(f"(participant id column {', '.join(map(str, hidden))} not shown; it is in {path.name})")
    numeric = frozenset(j for j, c in enumerate(df.columns) if pd.api.types.is_numeric_dtype(df[c]))
    return Table([str(c) for c in df.columns], rows, note=" ".join(notes), numeric=numeric)


def explanation_sections(run_dir: Path) -> list[Section]:
    """One section per ``explanations/**/index.json`` manifest, in path order.

    A manifest is a JSON list of ``{"title", "file", "caption", "kind": "image"|"table"}`` (``file``
    relative to the manifest's folder; tables are CSV), or an object ``{"title": ..., "items": [...]}``
    naming the section. A malformed manifest or a file it names that is missing is an error: the
    report must not silently drop an explanation.
    """
    root = run_dir / "explanations"
    sections = []
    base = run_dir.resolve()
    known = list(KNOWN_EXPLANATION_TITLES)

    def order(m: Path) -> tuple[int, str]:
        rel = m.parent.relative_to(root).as_posix()
        return (known.index(rel) if rel in known else len(known)), rel

    for manifest in sorted(root.glob("**/index.json"), key=order):
        data = _read_json(manifest)
        declared = None
        if isinstance(data, dict):
            declared = data.get("title")
            data = data.get("items")
        if not isinstance(data, list):
            raise SpirolmInputError("manifest must be a JSON list of items (or an object with 'items')", file=manifest)
        sec = Section(present=True, title=_manifest_title(manifest, root, declared))
        sec.anchor = "expl-" + "-".join(manifest.parent.relative_to(root).parts or ("root",))
        for i, entry in enumerate(data):
            if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
                raise SpirolmInputError(f"item {i} must be an object with a 'file' string", file=manifest,
                                        field=f"[{i}].file")
            kind = entry.get("kind", "image")
            target = (manifest.parent / entry["file"]).resolve()
            if not target.is_relative_to(base):
                raise SpirolmInputError(f"item {i} points outside the run directory: {entry['file']!r}",
                                        file=manifest, field=f"[{i}].file")
            if not target.is_file():
                raise SpirolmInputError(f"item {i} names a missing file {entry['file']!r}", file=manifest,
                                        field=f"[{i}].file")
            title, caption = str(entry.get("title", target.stem)), str(entry.get("caption", ""))
            if kind == "image":
                sec.items.append(Item(title, caption, kind, figure=Figure(title, data_uri(target), caption)))
            elif kind == "table":
                sec.items.append(Item(title, caption, kind, table=_csv_table(target, caption)))
            else:
                raise SpirolmInputError(f"item {i} has kind {kind!r}; expected 'image' or 'table'", file=manifest,
                                        field=f"[{i}].kind")
        sec.blocks = _blocks(sec.items)
        sections.append(sec)
    return sections


def _blocks(items: list[Item]) -> list[tuple[str, list[Item]]]:
    """Consecutive images side by side (one ``("images", [...])`` block), each table on its own."""
    blocks: list[tuple[str, list[Item]]] = []
    for it in items:
        if it.kind == "image" and blocks and blocks[-1][0] == "images":
            blocks[-1][1].append(it)
        else:
            blocks.append(("images" if it.kind == "image" else "table", [it]))
    return blocks


# ----------------------------------------------------------------------------- provenance


def stages_section(run_dir: Path) -> Section:
    """``stages.json``: each stage's cache key, seconds and whether it came from the cache."""
    path = run_dir / "stages.json"
    if not path.exists():
        return Section(present=False, title="Stages")
    data = _read_json(path)
    if not isinstance(data, dict):
        raise SpirolmInputError("expected a JSON object {stage: {key, seconds, cached}}", file=path)
    rows = []
    for stage, v in data.items():
        v = v if isinstance(v, dict) else {}
        cached = v.get("cached")
        rows.append([str(stage), str(v.get("key", "")), fmt_num(v.get("seconds"), 1),
                     "yes" if cached is True else "no" if cached is False else str(cached or "")])
    return Section(present=True, title="Stages", tables=[Table(["stage", "cache key", "seconds", "cached"], rows,
                                                               numeric_from=2)])


def _dist_version(names: Sequence[str]) -> str:
    for n in names:
        try:
            return metadata.version(n)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def git_commit(repo: Path | None = None) -> str:
    """The source tree's git commit (``+dirty`` when modified), or ``unavailable`` — never raises."""
    repo = repo or Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=20, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unavailable"
    return head + ("+dirty" if dirty else "") if head else "unavailable"


def versions(run_dir: Path) -> list[tuple[str, str]]:
    """Software versions of the environment rendering the report (the run's, when run by ``run_main``)."""
    rows = [("python", platform.python_version()), *[(label, _dist_version(d)) for label, d in _PACKAGES]]
    info = helm_info(run_dir)
    if info and isinstance(info.get("llm"), dict):
        llm = info["llm"]
        rows.append(("LLM", f"{llm.get('name', '?')} (weights {str(llm.get('weights_hash', '?'))[:16]}…)"))
        if "precision" in info:
            rows.append(("LLM precision", f"trained rows {info['precision']}, untrained text rows "
                                          f"{info.get('untrained_precision', info['precision'])}"))
    rows += [("git commit", git_commit()), ("platform", platform.platform())]
    return rows


# ----------------------------------------------------------------------------- rendering

_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>spirolm report — {{ run_name }}</title>
<style>
:root { --fg:#1d2430; --muted:#5b6573; --line:#d9dee5; --band:#f5f7fa; --accent:#1f5fa8; --warn:#fff6dd; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Helvetica, Arial, sans-serif;
       color:var(--fg); background:#fff; }
header { background:var(--accent); color:#fff; padding:22px 40px 18px; }
header h1 { margin:0 0 4px; font-size:26px; font-weight:600; }
header p { margin:0; opacity:.9; }
nav { padding:10px 40px; border-bottom:1px solid var(--line); background:var(--band); font-size:14px; }
nav a { color:var(--accent); text-decoration:none; margin-right:18px; }
main { max-width:1280px; padding:8px 40px 40px; }
section { margin-top:28px; }
h2 { font-size:21px; border-bottom:2px solid var(--line); padding-bottom:4px; margin:0 0 12px; }
h3 { font-size:16px; margin:20px 0 8px; }
p.note { color:var(--muted); margin:6px 0 10px; max-width:1000px; }
p.banner { background:var(--warn); border-left:4px solid #d19a00; padding:8px 12px; max-width:1000px; }
p.notrun { color:var(--muted); font-style:italic; background:var(--band); padding:8px 12px; display:inline-block; }
table { border-collapse:collapse; margin:4px 0 14px; font-size:13.5px; }
th, td { border:1px solid var(--line); padding:4px 9px; text-align:left; vertical-align:top; }
th { background:var(--band); font-weight:600; }
td.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
tr:nth-child(even) td { background:#fbfcfd; }
td strong { color:#0b3d7a; }
tr.groups th { text-align:center; border-bottom:2px solid var(--line); }
.tables { display:flex; flex-wrap:wrap; gap:4px 28px; align-items:flex-start; }
.tbl { max-width:100%; overflow-x:auto; }
.tbl.wide { flex-basis:100%; }
p.cap { color:var(--muted); margin:8px 0 3px; font-size:13.5px; max-width:520px; }
.tbl.wide p.cap { max-width:1000px; }
dl.facts { display:grid; grid-template-columns:max-content auto; gap:2px 18px; margin:6px 0 14px; }
dl.facts dt { color:var(--muted); } dl.facts dd { margin:0; word-break:break-all; }
.figs { display:flex; flex-wrap:wrap; gap:16px; }
.figs.third { display:grid; grid-template-columns:repeat(3, minmax(0, 1fr)); gap:12px; }
figure { margin:0; border:1px solid var(--line); padding:8px; background:#fff; max-width:100%; }
figure img { display:block; max-width:100%; height:auto; }
.figs.half { display:grid; grid-template-columns:repeat(2, minmax(0, 1fr)); gap:12px; }
.figs.third img, .figs.half img { width:100%; }
details { margin:8px 0 14px; } summary { color:var(--muted); cursor:pointer; font-size:13.5px; }
figcaption { font-size:13px; color:var(--muted); margin-top:4px; max-width:900px; }
pre { background:var(--band); border:1px solid var(--line); padding:12px; overflow:auto; font-size:13px; max-width:1000px; }
footer { color:var(--muted); font-size:12.5px; padding:16px 40px 30px; border-top:1px solid var(--line); }
</style>
</head>
<body>
{%- macro table(t) %}
<div class="tbl{% if t.wide %} wide{% endif %}">
{%- if t.collapsed %}<details><summary>{{ t.note or "table" }}</summary>{% elif t.note %}<p class="cap">{{ t.note }}</p>{% endif %}
<table>
<thead>
{%- if t.groups %}<tr class="groups">{% for label, span in t.groups %}<th colspan="{{ span }}">{{ label }}</th>{% endfor %}</tr>{% endif %}
<tr>{% for h in t.header %}<th>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>
{%- for row in t.rows %}{% set i = loop.index0 %}
<tr>{% for c in row %}{% set j = loop.index0 %}<td{% if t.is_num(j) %} class="num"{% endif %}>
{%- if (i, j) in t.strong %}<strong>{{ c }}</strong>{% else %}{{ c }}{% endif %}</td>{% endfor %}</tr>
{%- endfor %}
</tbody>
</table>
{%- if t.collapsed %}</details>{% endif %}
</div>
{%- endmacro %}
{%- macro tables(ts) %}<div class="tables">{% for t in ts %}{{ table(t) }}{% endfor %}</div>{% endmacro %}
{%- macro facts(items) %}{% if items %}<dl class="facts">{% for k, v in items %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}</dl>{% endif %}{% endmacro %}
{%- macro figures(figs, cls="") %}<div class="figs{% if cls %} {{ cls }}{% endif %}">{% for f in figs %}
<figure><img src="{{ f.src }}" alt="{{ f.title }}"><figcaption><b>{{ f.title }}</b>{% if f.caption %} — {{ f.caption }}{% endif %}</figcaption></figure>
{%- endfor %}</div>{% endmacro %}
{%- macro notrun(what) %}<p class="notrun">{{ what }}: not run (stage disabled or not reached; no output in the run directory).</p>{% endmacro %}
<header>
<h1>spirolm run report</h1>
<p>Run directory <code>{{ run_name }}</code> · {{ headline }}</p>
</header>
<nav>{% for id, label in toc %}<a href="#{{ id }}">{{ label }}</a>{% endfor %}</nav>
<main>

<section id="cohort">
<h2>Cohort</h2>
{%- if cohort.present %}
{%- if cohort.note %}<p class="banner">{{ cohort.note }}</p>{% endif %}
{{ facts(cohort.facts) }}
{{ tables(cohort.tables) }}
{%- else %}{{ notrun("Cohort stage") }}{% endif %}
</section>

<section id="comparison">
<h2>Model comparison (test split)</h2>
{%- if comparison.present %}
<p class="note">{{ comparison.note }}</p>
{{ tables(comparison.tables) }}
{%- else %}{{ notrun("Evaluation stage") }}{% endif %}
</section>

<section id="plots">
<h2>ROC, precision-recall and calibration</h2>
{%- if plots.present %}
<p class="note">All methods overlaid per trait, on the participants of the comparison table.</p>
{{ figures(plots.figures, "third") }}
{%- else %}{{ notrun("Evaluation plots") }}{% endif %}
</section>

<section id="helm">
<h2>{{ helm.title }}</h2>
{%- if helm.present %}
<p class="note">{{ helm.note }}</p>
{{ facts(helm.facts) }}
{{ tables(helm.tables) }}
{%- if helm_plots.present %}<h3>Plots on the HeLM test subsample</h3>{{ figures(helm_plots.figures, "third") }}{% endif %}
{%- else %}{{ notrun("HeLM stage") }}{% endif %}
</section>

<section id="explanations">
<h2>Explanations</h2>
{%- if explanations %}
<p class="note">Rendered from the explanation stages' manifests (explanations/**/index.json).</p>
{%- for s in explanations %}
<section id="{{ s.anchor }}">
<h3>{{ s.title }}</h3>
{%- for kind, its in s.blocks %}
{%- if kind == "images" %}{{ figures(its | map(attribute="figure") | list, "half") }}{% else %}<h4>{{ its[0].title }}</h4>{{ table(its[0].table) }}{% endif %}
{%- else %}<p class="note">(the manifest lists no items)</p>
{%- endfor %}
</section>
{%- endfor %}
{%- else %}{{ notrun("Explanation stages (tabular SHAP summary, HeLM attributions)") }}{% endif %}
</section>

<section id="examples">
<h2>Example spirograms</h2>
{%- if examples.present %}{{ figures(examples.figures) }}{% else %}{{ notrun("Example spirogram figure") }}{% endif %}
</section>

<section id="stages">
<h2>Stages</h2>
{%- if stages.present %}{{ tables(stages.tables) }}{% else %}<p class="notrun">Stage timings: not recorded (no stages.json in the run directory).</p>{% endif %}
</section>

<section id="config">
<h2>Exact configuration</h2>
{%- if config_text is not none %}
<p class="note">config.yaml as the run wrote it: every setting, profile defaults included.</p>
<pre>{{ config_text }}</pre>
{%- else %}<p class="notrun">config.yaml: missing from the run directory.</p>{% endif %}
</section>

<section id="versions">
<h2>Versions</h2>
<p class="note">Environment that rendered this report (the run's own when written by the main job).</p>
{{ facts(versions) }}
</section>
</main>
<footer>Written by spirolm (experiments/report/html_report.py). Self-contained: no scripts, no network requests.</footer>
</body>
</html>
"""


def _environment() -> jinja2.Environment:
    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False,
                              lstrip_blocks=False)


def render_html_report(run_dir: Path) -> str:
    """The report's HTML text for ``run_dir`` (see :func:`write_html_report`)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SpirolmInputError("run directory not found", file=run_dir)
    cohort = cohort_section(run_dir)
    comparison, plots = evaluation_section(run_dir / "evaluation", "Model comparison")
    dropped = dropped_features_note(run_dir)
    if comparison.present and dropped:
        comparison.note = f"{dropped} {comparison.note}"
    helm, helm_plots = helm_section(run_dir)
    config = run_dir / "config.yaml"
    headline = []
    if cohort.present:
        headline.append(next(v for k, v in cohort.facts if k == "participants") + " participants")
    if comparison.present:
        headline.append(f"{len(comparison.tables[0].rows)} methods compared")
    toc = [("cohort", "Cohort"), ("comparison", "Comparison"), ("plots", "Plots"), ("helm", "HeLM"),
           ("explanations", "Explanations"), ("examples", "Spirograms"), ("stages", "Stages"),
           ("config", "Config"), ("versions", "Versions")]
    return _environment().from_string(_TEMPLATE).render(
        run_name=run_dir.resolve().name, headline=" · ".join(headline) or "no stage output yet", toc=toc,
        cohort=cohort, comparison=comparison, plots=plots, helm=helm, helm_plots=helm_plots,
        explanations=explanation_sections(run_dir), examples=examples_section(run_dir),
        stages=stages_section(run_dir), config_text=config.read_text() if config.exists() else None,
        versions=versions(run_dir))


def write_html_report(run_dir: Path, out_file: Path | None = None) -> Path:
    """Write the run's self-contained HTML report and return its path.

    Args:
        run_dir: a main-job run directory (``spirolm run --out``); parts of it may be missing.
        out_file: where to write; default ``run_dir/report/report.html``.

    Raises:
        SpirolmInputError: a malformed file in the run directory (named in the message).
    """
    run_dir = Path(run_dir)
    html = render_html_report(run_dir)
    out = Path(out_file) if out_file is not None else run_dir / "report" / REPORT_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    log.info("HTML report written to %s (%.1f MB)", out, len(html) / 1e6)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m experiments.report.html_report RUN_DIR [--out FILE]``."""
    parser = argparse.ArgumentParser(description="Write a spirolm run directory's self-contained HTML report.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    print(write_html_report(args.run_dir, args.out))


if __name__ == "__main__":
    main()
