"""Typed configuration for the main job (``spirolm run``).

Why dataclasses validated by pydantic: configs stay plain, importable, typed Python objects (no
framework magic at call sites), while YAML input is checked strictly — an unknown or misspelt key is an
error naming the key, never a silent fallback to a default (the failure mode ``getattr(cfg, k, default)``
invites). A profile YAML lists the defaults; a user ``--config`` file lists only its differences.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError

from experiments.helm_stage import HeLMStageSettings
from signals.errors import SpirolmInputError

_STRICT = ConfigDict(extra="forbid")

PROFILES = ("default", "smoke", "full")


@dataclass(frozen=True)
class CohortConfig:
    """Where the cohort comes from."""

    __pydantic_config__ = _STRICT
    source: str = "synthetic"  # "synthetic" or a path to a UKB field-ID export
    n: int = 20000  # synthetic cohort size; ignored for a real export


@dataclass(frozen=True)
class QCSettings:
    """ATS/ERS QC standard (2005 is the UKB-era rule: BEV floor 150 mL; 2019 uses 100 mL)."""

    __pydantic_config__ = _STRICT
    standard: Literal["ats2005", "ats2019"] = "ats2005"


@dataclass(frozen=True)
class SplitConfig:
    """Participant-level split assignment (hash of seed and eid)."""

    __pydantic_config__ = _STRICT
    seed: int = 0


@dataclass(frozen=True)
class EncoderSettings:
    """Spirogram encoder training (``experiments/configs/encoder.yaml`` profile + ``key.path=value`` overrides)."""

    __pydantic_config__ = _STRICT
    enabled: bool = True
    profile: str = "default"
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class EvaluationSettings:
    """The main job's comparison of every model on the test split."""

    __pydantic_config__ = _STRICT
    n_bootstrap: int = 1000


@dataclass(frozen=True)
class BaselinesSettings:
    """Tabular baselines (``experiments.baselines``) run by the main job."""

    __pydantic_config__ = _STRICT
    enabled: bool = True
    models: tuple[str, ...] = ("logreg", "xgboost")
    feature_sets: tuple[str, ...] = ("tabular", "tabular+spirometry", "tabular+embedding")
    n_bootstrap: int = 1000


@dataclass(frozen=True)
class ExplanationSettings:
    """The explanations stage: tabular SHAP (baselines, computed with them) and HeLM explanations.

    ``helm`` holds overrides of :class:`experiments.explain_helm.HeLMExplainSettings` (validated
    there, errors name the key); ``max_participants`` caps the HeLM test participants explained.
    """

    __pydantic_config__ = _STRICT
    enabled: bool = True
    max_participants: int = 96
    helm: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportSettings:
    """The self-contained HTML report (``report/report.html``)."""

    __pydantic_config__ = _STRICT
    html: bool = True
    screenshot: bool = False  # also render it in headless Chromium to report/report.png (needs chromium)


@dataclass(frozen=True)
class TrackingSettings:
    """MLflow: one parent run for the job, child runs for its stages.

    ``tracking_uri`` null: ``MLFLOW_TRACKING_URI`` or ``./mlflow.db``. ``experiment`` null:
    ``spirolm-run/<run directory name>``. ``register_model``: registered-model name of the HeLM pyfunc
    (null: log it in the run without registering).
    """

    __pydantic_config__ = _STRICT
    tracking_uri: str | None = None
    experiment: str | None = None
    register_model: str | None = "spirolm-helm"


@dataclass(frozen=True)
class RunConfig:
    """The whole main job, one section per stage (see ``experiments/configs/run_default.yaml``)."""

    __pydantic_config__ = _STRICT
    seed: int = 0
    cohort: CohortConfig = field(default_factory=CohortConfig)
    qc: QCSettings = field(default_factory=QCSettings)
    splits: SplitConfig = field(default_factory=SplitConfig)
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    baselines: BaselinesSettings = field(default_factory=BaselinesSettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    helm: HeLMStageSettings = field(default_factory=HeLMStageSettings)
    explanations: ExplanationSettings = field(default_factory=ExplanationSettings)
    report: ReportSettings = field(default_factory=ReportSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section_hash(self, *sections: str) -> str:
        """Content hash of some config sections: the cache key of a pipeline stage."""
        d = self.to_dict()
        payload = json.dumps({s: d[s] for s in sections}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` laid over ``base``, recursively for nested mappings (neither is modified)."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_yaml_mapping(text: str, label: str) -> dict[str, Any]:
    """Parse YAML text that must be a mapping; errors name ``label`` (a file or profile)."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise SpirolmInputError(f"cannot parse config: {exc}", file=label) from None
    if not isinstance(data, dict):
        raise SpirolmInputError("config must be a YAML mapping", file=label)
    return data


def _read_yaml_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpirolmInputError(f"cannot read config: {exc.strerror}", file=path) from None
    return parse_yaml_mapping(text, str(path))


def load_run_config(profile: str = "default", config_file: Path | None = None) -> RunConfig:
    """Load a profile's YAML, apply a user's override file, and validate strictly.

    Raises:
        SpirolmInputError: unknown profile, unreadable file, unknown key, or wrong type — naming the file
            and the key path (e.g. ``cohort.n``).
    """
    if profile not in PROFILES:
        raise SpirolmInputError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    res = resources.files("experiments") / "configs" / f"run_{profile}.yaml"
    data = parse_yaml_mapping(res.read_text(), f"profile {profile}")
    label = f"profile {profile}"
    if config_file is not None:
        data = deep_merge(data, _read_yaml_file(Path(config_file)))
        label = str(config_file)
    try:
        return TypeAdapter(RunConfig).validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise SpirolmInputError(f"invalid config: {problems}", file=label) from None
