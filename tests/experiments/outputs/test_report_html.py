"""The main job's self-contained HTML report, and its render in a real browser (headless Chromium).

The fast tests build a run directory by hand in the layout ``run_main`` writes (docs/design.md), with
the evaluation tables made by the real harness (``compare_methods``) so the CSV columns are the real
ones. The slow test renders the report of a real smoke run. The browser tests open the report with
Playwright driving the system Chromium (every image decoded, no console error, every navigation anchor
resolves) and check the library's own screenshot render (``report.screenshot``).
"""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image, ImageDraw

from experiments.evaluate.harness import compare_methods
from experiments.report import browser_check
from experiments.report.html_report import SECTION_IDS, order_methods, render_html_report, write_html_report
from signals.errors import SpirolmInputError
from tests.browser_fixtures import assert_report_opens, browser_missing

CHROMIUM = browser_check.DEFAULT_CHROMIUM
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} absent: run `bash scripts/install_browser.sh` (CI does)")
TRAITS = ["asthma", "copd"]


# ----------------------------------------------------------------------------- fixture run directory


def _png(path: Path, colour: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (90, 60), "white")
    ImageDraw.Draw(img).rectangle((10, 10, 70, 45), fill=colour)
    img.save(path)
    return path


def _participants(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    split = np.array(["train"] * 36 + ["val"] * 12 + ["test"] * 12)
    status = np.array(["pass"] * n, dtype=object)
    status[[1, 40]] = "fail"
    status[[2, 3, 50]] = "warn"
    reason = np.where(status == "fail", "no_acceptable_blow (blow0: bev_high; blow1: cough)",
                      np.where(status == "warn", "not_repeatable", ""))
    p = pd.DataFrame({"eid": np.arange(1_000_001, 1_000_001 + n), "split": split, "qc_status": status,
                      "qc_reason": reason, "sex": rng.choice(["female", "male"], n), "age": rng.uniform(40, 70, n),
                      "smoking_status": rng.choice(["never", "previous", "current"], n)})
    for t in TRAITS:
        risk = rng.uniform(0.05, 0.6, n)
        y = (rng.uniform(size=n) < risk).astype(int)
        y[:4] = [0, 1, 0, 1]
        p[t] = pd.array(y, dtype="Int8")
        p[f"true_risk_{t}"] = risk
    p.loc[5, "asthma"] = pd.NA  # one missing label
    return p


def _evaluation(out: Path, p: pd.DataFrame, methods: list[str], plot_traits: list[str]) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    ev = p[p["asthma"].notna()].reset_index(drop=True)
    scores = {}
    for m in methods:
        s = ev[["eid"]].copy()
        for t in TRAITS:
            s[f"risk_{t}"] = np.clip(ev[f"true_risk_{t}"] + rng.normal(0, 0.15, len(ev)), 0.01, 0.99)
        scores[m] = s
    result = compare_methods(ev, scores, TRAITS, n_bootstrap=20, seed=0, subgroups=False)
    result.save_tables(out)
    (out / "comparison.md").write_text(f"Compared on {len(ev)} participants.\n\n" + result.to_markdown())
    for t in plot_traits:
        for kind in ("roc", "pr", "calibration"):
            _png(out / "plots" / f"{t}_{kind}.png", "steelblue")
    return pd.read_csv(out / "results.csv")


def make_run_dir(root: Path, *, evaluation: bool = True, helm: bool = True, explanations: bool = True) -> Path:
    """A run directory in ``run_main``'s layout; stages can be left out."""
    run = root / "run"
    cohort = run / "cohort"
    cohort.mkdir(parents=True)
    config = {"seed": 0, "cohort": {"source": "synthetic", "n": 60},
              "baselines": {"models": ["logreg", "<script>alert('x')</script>"]}}
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    p = _participants()
    p.to_parquet(cohort / "participants.parquet", index=False)
    (cohort / "cohort.json").write_text(json.dumps({"traits": TRAITS}))
    pd.DataFrame({"eid": [1_000_002, 1_000_002, 1_000_003], "qc_status": ["reject", "accept", "reject"],
                  "qc_reason": ["bev_high;cough", "", "cough"]}).to_parquet(cohort / "blows.parquet", index=False)
    pd.DataFrame({"eid": [1_000_002, 1_000_002, 1_000_041], "instance": 0, "blow_index": [0, 2, -1],
                  "level": ["blow", "blow", "participant"],
                  "reason": ["bev_high;cough", "cough", "no_acceptable_blow"]}).to_csv(cohort / "qc_exclusions.csv",
                                                                                       index=False)
    _png(run / "report" / "example_curves.png", "seagreen")
    if evaluation:
        # deliberately unsorted: the report puts oracle, baselines, encoder, LLM rows in that order
        methods = ["helm:text+spiro", "encoder (spirogram only)", "logreg:tabular", "helm:text-zero-shot",
                   "xgboost:<i>tab</i>"]
        _evaluation(run / "evaluation", p, methods, TRAITS)
        (run / "stages.json").write_text(json.dumps({"cohort": {"key": "abc123", "seconds": 1.5, "cached": True},
                                                     "evaluation": {"key": "def456", "seconds": 3.25,
                                                                    "cached": False}}))
    if helm:
        _evaluation(run / "evaluation_helm", p, ["logreg:tabular", "helm:text-zero-shot", "helm:text+spiro"],
                    ["copd"])
        (run / "helm").mkdir()
        (run / "helm" / "helm_stage.json").write_text(json.dumps({
            "settings": {"rows": ["helm:text-zero-shot", "helm:text+spiro"], "max_eval": 32, "lr": 0.003},
            "seed": 0,
            "llm": {"name": "smollm2-135m-instruct", "config_hash": "c0ffee", "weights_hash": "feedbeef" * 4},
            "traits": TRAITS, "counts": {"train": 24, "test": 32},
            "seconds": {"helm:text+spiro": 12.5, "total": 20.0}}))
    if explanations:
        tab = run / "explanations" / "tabular"
        _png(run / "baselines" / "shap" / "logreg_asthma" / "shap_summary.png", "darkorange")
        tab.mkdir(parents=True)
        (tab / "index.json").write_text(json.dumps([
            {"title": "logreg:tabular, asthma: SHAP summary", "kind": "image",
             "file": "../../baselines/shap/logreg_asthma/shap_summary.png",
             "caption": "caption with <img src=x onerror=alert(1)>"}]))
        hl = run / "explanations" / "helm"
        _png(hl / "ig_curves.png", "crimson")
        pd.DataFrame({"eid": [1_000_007, 1_000_009], "modality": ["text", "spirogram"],
                      "delta_auroc": [0.0123456, -0.2]}).to_csv(
            hl / "ablation.csv", index=False)
        (hl / "index.json").write_text(json.dumps([
            {"title": "Integrated gradients on curves", "kind": "image", "file": "ig_curves.png", "caption": "IG"},
            {"title": "Modality ablation", "kind": "table", "file": "ablation.csv", "caption": "AUROC change"}]))
    return run


# ----------------------------------------------------------------------------- HTML parsing helpers


class _Parsed(HTMLParser):
    """Tables (rows of cell text) and text per top-level ``<section id>``; also every tag seen."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tables: dict[str, list[list[list[str]]]] = {}
        self.text: dict[str, list[str]] = {}
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "section":
            self.stack.append(str(a.get("id")))
        elif tag == "table" and self.stack:
            self.tables.setdefault(self.stack[0], []).append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self.stack.pop()
        elif tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self.stack:
            self.tables[self.stack[0]][-1].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self.stack:
            self.text.setdefault(self.stack[0], []).append(data)

    def section_text(self, sid: str) -> str:
        return " ".join(" ".join(self.text.get(sid, [])).split())


def parse(html: str) -> _Parsed:
    parsed = _Parsed()
    parsed.feed(html)
    return parsed


def _ci(value: float, lo: float, hi: float) -> str:
    return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def assert_table_matches_csv(table: list[list[str]], results: pd.DataFrame) -> None:
    """Every (method, trait) AUROC/AUPRC cell equals the CSV's value with its CI, and the oracle is first."""
    groups, header, *rows = table
    traits = list(dict.fromkeys(results["trait"]))
    assert [g.split(" ")[0] for g in groups[1:]] == traits
    assert header[:3] == ["method", "AUROC [95% CI]", "AUPRC [95% CI]"]
    per_trait = (len(header) - 1) // len(traits)
    by_method = {r[0]: r for r in rows}
    assert rows[0][0] == "oracle"
    assert set(by_method) == set(results["method"])
    for r in results.itertuples():
        cells = by_method[r.method]
        j = 1 + traits.index(r.trait) * per_trait
        assert cells[j] == _ci(r.auroc, r.auroc_ci_lo, r.auroc_ci_hi)
        assert cells[j + 1] == _ci(r.auprc, r.auprc_ci_lo, r.auprc_ci_hi)


# ----------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def full_html(full_run: Path) -> str:
    return write_html_report(full_run).read_text()


def test_report_is_one_self_contained_file(full_run: Path, full_html: str) -> None:
    assert (full_run / "report" / "report.html").exists()
    parsed = parse(full_html)
    for tag, attrs in parsed.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed"), tag
        for attr in ("src", "href"):
            value = attrs.get(attr) or ""
            assert not re.match(r"^\s*(https?:|//|file:)", value, re.I), (tag, attr, value)
        if tag == "img":
            assert str(attrs["src"]).startswith("data:image/png;base64,")
    assert 'src="http' not in full_html and "url(" not in full_html
    # every PNG of the run is inlined: example curves, 6 + 3 evaluation plots, 2 explanation images
    assert full_html.count("data:image/png;base64,") == 1 + 6 + 3 + 2
    example = (full_run / "report" / "example_curves.png").read_bytes()
    assert base64.b64encode(example).decode() in full_html


def test_every_section_present_with_content(full_html: str) -> None:
    parsed = parse(full_html)
    ids = {a.get("id") for _, a in parsed.tags}
    assert set(SECTION_IDS) <= ids
    assert {"expl-tabular", "expl-helm"} <= ids
    assert full_html.index('id="expl-tabular"') < full_html.index('id="expl-helm"')  # main job's order
    for sid in SECTION_IDS:
        assert "not run" not in parsed.section_text(sid), sid
    cohort = parsed.section_text("cohort")
    assert "Synthetic cohort" in cohort
    assert "no_acceptable_blow" in cohort and "not_repeatable" in cohort and "bev_high" in cohort
    assert "2 blow rows, 1 participant rows" in cohort  # qc_exclusions.csv by level
    split_table = parsed.tables["cohort"][0]
    assert split_table[0] == ["split", "participants", "QC pass", "QC warn", "QC fail"]
    assert split_table[1:] == [["train", "36", "33", "2", "1"], ["val", "12", "11", "0", "1"],
                               ["test", "12", "11", "1", "0"], ["all", "60", "55", "3", "2"]]
    p = _participants()
    prevalence = {r[0]: r for r in parsed.tables["cohort"][1][1:]}
    for t in TRAITS:
        y = p[t].dropna().astype(float)
        assert prevalence[t][1] == f"{len(y):,}" and prevalence[t][4] == f"{y.mean():.3f}"
        test = p.loc[p["split"] == "test", t].dropna().astype(float)
        assert prevalence[t][7] == f"{test.mean():.3f}"
    assert prevalence["asthma"][2] == "1"  # one missing label
    helm = parsed.section_text("helm")
    assert "smollm2-135m-instruct" in helm and "max_eval" in helm and "12.5" in helm
    expl = parsed.section_text("explanations")
    assert "Tabular SHAP (baselines)" in expl and "HeLM explanations" in expl and "Modality ablation" in expl
    ablation = parsed.tables["explanations"][0]
    assert ablation == [["modality", "delta_auroc"], ["text", "0.01235"], ["spirogram", "-0.2"]]
    assert "participant id column eid not shown" in expl and "1000007" not in full_html  # ids stay out
    assert "abc123" in parsed.section_text("stages")
    versions = parsed.section_text("versions")
    for name in ("python", "torch", "transformers", "lightning", "mlflow", "xgboost", "shap", "git commit"):
        assert name in versions
    assert "smollm2-135m-instruct (weights feedbeeffeedbeef" in versions


def test_comparison_tables_match_results_csv(full_run: Path, full_html: str) -> None:
    parsed = parse(full_html)
    main = parsed.tables["comparison"][0]
    results = pd.read_csv(full_run / "evaluation" / "results.csv")
    assert_table_matches_csv(main, results)
    assert [r[0] for r in main[2:]] == ["oracle", "logreg:tabular", "xgboost:<i>tab</i>",
                                        "encoder (spirogram only)", "helm:text-zero-shot", "helm:text+spiro"]
    helm_table = parsed.tables["helm"][0]
    assert_table_matches_csv(helm_table, pd.read_csv(full_run / "evaluation_helm" / "results.csv"))


def test_order_methods() -> None:
    got = order_methods(["helm:tabmlp+spiro", "xgboost:tabular", "encoder (spirogram only)", "helm:text+spiro",
                         "oracle", "logreg:tabular", "helm:text-few-shot"])
    assert got == ["oracle", "xgboost:tabular", "logreg:tabular", "encoder (spirogram only)", "helm:text-few-shot",
                   "helm:text+spiro", "helm:tabmlp+spiro"]


def test_text_from_files_is_escaped(full_html: str) -> None:
    assert "<script>" not in full_html and "<i>tab</i>" not in full_html
    assert "&lt;script&gt;alert(" in full_html  # the config value, shown as text
    assert "&lt;i&gt;tab&lt;/i&gt;" in full_html  # a method name
    assert "<img src=x" not in full_html and "&lt;img src=x onerror=alert(1)&gt;" in full_html  # a caption
    config = parse(full_html).section_text("config")
    assert "<script>alert('x')</script>" in config  # exact config text survives, as text


def test_missing_stages_render_not_run(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path, evaluation=False, helm=False, explanations=False)
    parsed = parse(render_html_report(run))
    for sid in ("comparison", "plots", "helm", "explanations"):
        assert "not run" in parsed.section_text(sid), sid
    assert "not run" not in parsed.section_text("cohort")
    assert "not recorded" in parsed.section_text("stages")
    empty = tmp_path / "empty"
    empty.mkdir()
    bare = parse(render_html_report(empty))
    for sid in ("cohort", "comparison", "plots", "helm", "explanations", "examples"):
        assert "not run" in bare.section_text(sid), sid
    assert "missing" in bare.section_text("config")


def test_report_is_deterministic(full_run: Path, full_html: str) -> None:
    assert render_html_report(full_run) == full_html


@pytest.mark.parametrize(("entry", "problem"), [
    ({"title": "x", "kind": "image", "file": "nope.png"}, "missing file"),
    ({"title": "x", "kind": "image", "file": "../../../../etc/hostname"}, "outside the run directory"),
    ({"title": "x", "kind": "video", "file": "a.png"}, "kind 'video'"),
    ({"title": "x", "kind": "image"}, "'file' string"),
])
def test_bad_manifest_is_an_input_error(tmp_path: Path, entry: dict, problem: str) -> None:
    run = make_run_dir(tmp_path, evaluation=False, helm=False, explanations=False)
    d = run / "explanations" / "odd"
    _png(d / "a.png", "black")
    (d / "index.json").write_text(json.dumps([entry]))
    with pytest.raises(SpirolmInputError, match=problem) as err:
        render_html_report(run)
    assert "index.json" in str(err.value)


def test_malformed_results_csv_names_file_and_column(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path, helm=False, explanations=False)
    pd.read_csv(run / "evaluation" / "results.csv").drop(columns="auprc_ci_hi").to_csv(
        run / "evaluation" / "results.csv", index=False)
    with pytest.raises(SpirolmInputError, match="results.csv.*auprc_ci_hi"):
        render_html_report(run)


def test_missing_browser_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(browser_check.BrowserNotFoundError, match="install_browser.sh"):
        browser_check.find_chromium(tmp_path / "no-chromium")


def test_blank_screenshot_is_rejected(tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 100), "white").save(blank)
    with pytest.raises(RuntimeError, match="blank"):
        browser_check.check_png(blank, width=200, height=100)
    with pytest.raises(RuntimeError, match="expected 300x100"):
        browser_check.check_png(blank, width=300, height=100)
    drawn = _png(tmp_path / "drawn.png", "navy")
    check = browser_check.check_png(drawn, width=90, height=60, min_colours=2)
    assert 0.3 < check.ink_fraction < 0.5


@needs_chromium
def test_report_renders_in_headless_chromium(full_run: Path, tmp_path: Path) -> None:
    html = full_run / "report" / "report.html"
    if not html.exists():
        write_html_report(full_run)
    check = browser_check.screenshot_html(html, tmp_path / "shot.png", width=1100, height=1600,
                                          required_ids=SECTION_IDS)
    assert (check.width, check.height) == (1100, 1600)
    assert check.n_colours > 20 and check.ink_fraction > 0.02
    assert {"expl-tabular", "expl-helm"} <= check.ids


def test_report_opens_in_playwright_driven_chromium(full_run: Path, full_html: str) -> None:
    html = full_run / "report" / "report.html"
    view = assert_report_opens(html, n_images=1 + 6 + 3 + 2)
    assert view.nav == [f"#{sid}" for sid in SECTION_IDS]
    assert set(SECTION_IDS) | {"expl-tabular", "expl-helm"} <= view.ids


def test_dropped_features_and_import_warnings_are_reported(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path, helm=False, explanations=False)
    info = {"traits": TRAITS, "summary": {"warnings": ["optional field 189 (townsend) absent; set to missing"]},
            "reference_equations": {"fev1_z": "gli_global2022", "fvc_z": "gli_global2022",
                                    "fev1_fvc_z": "gli_global2022"}}
    (run / "cohort" / "cohort.json").write_text(json.dumps(info))
    (run / "baselines").mkdir()
    (run / "baselines" / "data_notes.json").write_text(json.dumps({"dropped_features": ["townsend", "pm25"],
                                                                   "skipped": [], "notes": []}))
    parsed = parse(render_html_report(run))
    cohort = parsed.section_text("cohort")
    assert "optional field 189 (townsend) absent" in cohort and "fev1_z: gli_global2022" in cohort
    assert "Baselines fitted without townsend, pm25" in parsed.section_text("comparison")
    (run / "baselines" / "data_notes.json").write_text(json.dumps({"dropped_features": []}))
    assert "fitted without" not in parse(render_html_report(run)).section_text("comparison")


@pytest.mark.slow
def test_report_of_a_real_smoke_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The smoke profile without its HeLM stage (which alone takes ~15 min with its explanations on a busy
    2-core machine): real cohort, encoder, baselines, comparison and tabular SHAP manifest; HeLM "not run"."""
    from experiments.pipeline.config import load_run_config
    from experiments.pipeline.run import run_main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    override = tmp_path / "no_helm.yaml"
    override.write_text("helm:\n  enabled: false\n")
    run = tmp_path / "run"
    run_main(load_run_config("smoke", override), run)
    out = write_html_report(run, tmp_path / "report.html")
    html = out.read_text()
    parsed = parse(html)
    assert set(SECTION_IDS) <= {a.get("id") for _, a in parsed.tags}
    for sid in ("cohort", "comparison", "plots", "explanations", "examples"):
        assert "not run" not in parsed.section_text(sid), sid
    assert "not run" in parsed.section_text("helm")
    assert "Tabular SHAP (baselines)" in parsed.section_text("explanations")
    assert_table_matches_csv(parsed.tables["comparison"][0], pd.read_csv(run / "evaluation" / "results.csv"))
    if browser_missing() is None:
        assert_report_opens(out)
    config_pre = html.split("<pre>", 1)[1].split("</pre>", 1)[0]
    assert parse(f"<section id='c'>{config_pre}</section>").section_text("c") == " ".join(
        (run / "config.yaml").read_text().split())
    if CHROMIUM.exists():
        browser_check.screenshot_html(out, tmp_path / "report.png", required_ids=SECTION_IDS)
