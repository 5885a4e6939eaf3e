"""Run config validation and content-hash stage caching."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.pipeline.config import PROFILES, load_run_config
from experiments.pipeline.run import synthetic_cohort_key
from experiments.pipeline.stages import file_fingerprint, is_cached, run_stage, stage_key, stage_seconds
from signals.errors import SpirolmInputError


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_loads(profile: str) -> None:
    cfg = load_run_config(profile)
    assert cfg.cohort.n > 0


def test_override_file_changes_only_what_it_lists(tmp_path: Path) -> None:
    f = tmp_path / "o.yaml"
    f.write_text("cohort:\n  n: 123\n")
    cfg = load_run_config("smoke", f)
    base = load_run_config("smoke")
    assert cfg.cohort.n == 123
    assert cfg.qc == base.qc and cfg.cohort.source == base.cohort.source


@pytest.mark.parametrize(
    "text, needle",
    [("cohort:\n  nn: 3\n", "cohort.nn"), ("cohort:\n  n: many\n", "cohort.n"), ("qc:\n  standard: ats1999\n", "qc.standard"),
     ("qc:\n  reference_equations: gli2099\n", "qc.reference_equations"), ("- a\n- b\n", "mapping")],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(SpirolmInputError) as exc:
        load_run_config("smoke", f)
    assert needle in str(exc.value) and str(f) in str(exc.value)


def test_unknown_profile() -> None:
    with pytest.raises(SpirolmInputError, match="unknown profile"):
        load_run_config("huge")


def test_section_hash_tracks_content() -> None:
    a = load_run_config("smoke")
    b = load_run_config("default")
    assert a.section_hash("qc") == b.section_hash("qc")
    assert a.section_hash("cohort") != b.section_hash("cohort")


def test_stage_runs_once_per_key_and_never_leaves_partial(tmp_path: Path) -> None:
    calls: list[Path] = []

    def build(d: Path) -> None:
        calls.append(d)
        (d / "out.txt").write_text("x")

    stage = tmp_path / "s"
    run_stage("s", stage, "k1", build)
    run_stage("s", stage, "k1", build)
    assert len(calls) == 1 and (stage / "out.txt").exists() and is_cached(stage, "k1")
    run_stage("s", stage, "k2", build)
    assert len(calls) == 2

    def crash(d: Path) -> None:
        (d / "half.txt").write_text("x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        run_stage("s", stage, "k3", crash)
    # The finished k2 build is untouched, and nothing claims to be k3.
    assert is_cached(stage, "k2") and not is_cached(stage, "k3")
    assert not (stage / "half.txt").exists()


def test_fingerprint_and_key(tmp_path: Path) -> None:
    f = tmp_path / "a.csv"
    f.write_text("eid\n1\n")
    fp1 = file_fingerprint(f)
    f.write_text("eid\n1\n2\n")
    assert file_fingerprint(f) != fp1
    assert stage_key(1, {"a": 1}) == stage_key(1, {"a": 1}) != stage_key(2, {"a": 1})


def test_resume_keeps_partial_work_of_the_same_key_only(tmp_path: Path) -> None:
    seen: list[bool] = []

    def crash(d: Path) -> None:
        (d / "epoch1.ckpt").write_text("x")
        raise RuntimeError("killed")

    def build(d: Path) -> None:
        seen.append((d / "epoch1.ckpt").exists())
        (d / "out.txt").write_text("done")

    stage = tmp_path / "s"
    with pytest.raises(RuntimeError):
        run_stage("s", stage, "k1", crash)
    run_stage("s", stage, "k1", build, resume=True)  # same key: the checkpoint is still there
    with pytest.raises(RuntimeError):
        run_stage("s", tmp_path / "t", "k1", crash)
    run_stage("s", tmp_path / "t", "k2", build, resume=True)  # other inputs: partial work discarded
    with pytest.raises(RuntimeError):
        run_stage("s", tmp_path / "u", "k1", crash)
    run_stage("s", tmp_path / "u", "k1", build)  # no --resume: start clean
    assert seen == [True, False, False]
    assert is_cached(stage, "k1") and not (stage / ".partial-key").exists()
    assert stage_seconds(stage) is not None


def test_cohort_variant_loads_validates_and_keys_the_cohort_stage(tmp_path: Path) -> None:
    default = load_run_config("smoke")
    fusion = load_run_config("smoke", overrides=["cohort.variant=fusion"])
    assert default.cohort.variant == "default" and fusion.cohort.variant == "fusion"
    assert synthetic_cohort_key(fusion) != synthetic_cohort_key(default)
    assert synthetic_cohort_key(fusion) == synthetic_cohort_key(load_run_config("smoke", overrides=["cohort.variant=fusion"]))
    with pytest.raises(SpirolmInputError, match="cohort.variant") as exc:
        load_run_config("smoke", overrides=["cohort.variant=nope"])
    assert "'nope'" in str(exc.value) and "fusion" in str(exc.value)
    # A real export has its own labels: a synthetic variant there is refused, not silently ignored.
    export = tmp_path / "ukb.csv"
    export.write_text("eid\n1\n")
    assert load_run_config("smoke", overrides=[f"cohort.source={export}"]).cohort.variant == "default"
    with pytest.raises(SpirolmInputError, match="cohort.variant"):
        load_run_config("smoke", overrides=[f"cohort.source={export}", "cohort.variant=fusion"])
