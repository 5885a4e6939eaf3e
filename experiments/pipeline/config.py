"""The run config tree of ``spirolm run`` and of every ``spirolm train`` command.

One tree, one loader, one default per setting: the sections nest the real component configs
(:class:`~experiments.encoder.config.EncoderTrainConfig` with :class:`signals.encoder.EncoderConfig`,
:class:`llm_bridge.model.HeLMConfig`, :class:`~experiments.helm.config.HeLMTrainConfig`,
:class:`~experiments.explain.helm_run.HeLMExplainSettings`), whose dataclass defaults are the defaults.
``configs/run_default.yaml`` lists what the default profile changes from them; ``run_smoke.yaml`` and
``run_full.yaml`` list what they change from the default profile; a user's ``--config`` file and
``--set key.path=value`` overrides list only their own changes. Everything is validated when the
config loads, before any stage runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from biobank.synth import DEFAULT_VARIANT, SYNTH_VARIANTS
from experiments.baselines.controls import STACKING
from experiments.baselines.features import FEATURE_SETS
from experiments.baselines.models import registered_models
from experiments.common.config_io import (
    STRICT,
    apply_overrides,
    check_choices,
    deep_merge,
    parse_yaml_mapping,
    read_yaml_file,
    reject_keys,
    validate,
)
from experiments.encoder.config import EncoderTrainConfig
from experiments.explain.helm_run import HeLMExplainSettings
from experiments.helm.config import ALL_ROWS, ROW_TEXT_SPIRO, ROW_ZERO_SHOT, HeLMTrainConfig
from llm_bridge.model import HeLMConfig
from signals.errors import SpirolmInputError

PROFILES = ("default", "smoke", "full")
BASE_PROFILE = "default"

#: Keys set in one place of the tree only: the run's ``seed`` and ``traits``, and the rows' variants.
_ONE_HOME = {
    "encoder.model.traits": "set the run's traits at the top level (traits: [...])",
    "helm.model.traits": "set the run's traits at the top level (traits: [...])",
    "helm.model.seed": "set the run's seed at the top level (seed: N)",
    "helm.model.variant": "the HeLM rows choose the variants (helm.rows)",
}


@dataclass(frozen=True)
class CohortConfig:
    """Where the cohort comes from."""

    __pydantic_config__ = STRICT
    source: str = "synthetic"  # "synthetic" or a path to a UKB field-ID export
    n: int = 20000  # synthetic cohort size; ignored for a real export
    variant: str = DEFAULT_VARIANT  # synthetic cohort model (biobank.synth.SYNTH_VARIANTS)

    def __post_init__(self) -> None:
        check_choices((self.variant,), tuple(SYNTH_VARIANTS), "synthetic cohort variant", "cohort.variant")
        # A real export has its own labels: a variant there would be silently meaningless, so refuse it.
        if self.source != "synthetic" and self.variant != DEFAULT_VARIANT:
            raise SpirolmInputError(f"variant {self.variant!r} applies to the synthetic cohort only; remove it "
                                    f"(or set cohort.source: synthetic) to use the export {self.source!r}",
                                    field="cohort.variant")


@dataclass(frozen=True)
class QCConfig:
    """ATS/ERS QC standard (2005 is the UKB-era rule: BEV floor 150 mL; 2019 uses 100 mL) and the GLI
    equation of the FEV1, FVC and FEV1/FVC z-scores (recorded in ``cohort.json``).

    GLI Global 2022 is race-neutral and what ATS 2023 and the UK ARTP recommend; GLI-2012 (ethnicity-specific)
    on request, e.g. to compare with earlier UK Biobank work.
    """

    __pydantic_config__ = STRICT
    standard: Literal["ats2005", "ats2019"] = "ats2005"
    reference_equations: Literal["gli_global2022", "gli2012"] = "gli_global2022"


@dataclass(frozen=True)
class SplitConfig:
    """Participant-level split assignment (hash of seed and eid)."""

    __pydantic_config__ = STRICT
    seed: int = 0


@dataclass(frozen=True)
class BaselinesConfig:
    """Tabular baselines run by the main job."""

    __pydantic_config__ = STRICT
    enabled: bool = True
    models: tuple[str, ...] = ("logreg", "xgboost")
    feature_sets: tuple[str, ...] = FEATURE_SETS
    n_bootstrap: int = 1000

    def __post_init__(self) -> None:
        check_choices(self.models, registered_models(), "baseline model", "baselines.models")
        check_choices(self.feature_sets, FEATURE_SETS, "feature set", "baselines.feature_sets")


@dataclass(frozen=True)
class EvaluationConfig:
    """The main job's comparison of every model on the test split.

    ``controls``: add the stacking (record + encoder logit, fitted on validation) and probe (HeLM's
    teacher) rows. ``focal``: rows compared with every other row by paired bootstrap AUROC differences.
    """

    __pydantic_config__ = STRICT
    n_bootstrap: int = 1000
    controls: bool = True
    focal: tuple[str, ...] = (ROW_TEXT_SPIRO, STACKING)


@dataclass(frozen=True)
class HeLMStageConfig:
    """The HeLM rows: which, with which LLM, architecture (``model``) and training (``train``)."""

    __pydantic_config__ = STRICT
    enabled: bool = True
    llm: str | None = None  # None: the embedded SmolLM2-135M-Instruct; else a local HF directory
    rows: tuple[str, ...] = (ROW_ZERO_SHOT, ROW_TEXT_SPIRO)  # few-shot's prompts are ~5x longer on CPU
    model: HeLMConfig = field(default_factory=HeLMConfig)
    train: HeLMTrainConfig = field(default_factory=HeLMTrainConfig)

    def __post_init__(self) -> None:
        check_choices(self.rows, ALL_ROWS, "HeLM row", "helm.rows")


@dataclass(frozen=True)
class ExplanationsConfig:
    """Tabular SHAP (computed with the baselines) and HeLM explanations of the text+spiro row."""

    __pydantic_config__ = STRICT
    enabled: bool = True
    max_participants: int = 64  # HeLM test participants explained
    helm: HeLMExplainSettings = field(default_factory=HeLMExplainSettings)


@dataclass(frozen=True)
class ReportConfig:
    """The self-contained HTML report (``report/report.html``)."""

    __pydantic_config__ = STRICT
    html: bool = True
    screenshot: bool = False  # also render it in headless Chromium to report/report.png (needs chromium)


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow: where, under which experiment, and the registered name of the HeLM pyfunc.

    ``tracking_uri`` null: ``MLFLOW_TRACKING_URI`` or ``./mlflow.db``. ``experiment`` null: each command's
    own (``spirolm-run/<run directory name>`` for the main job). ``register_model`` null: log the pyfunc
    in the run without registering it.
    """

    __pydantic_config__ = STRICT
    tracking_uri: str | None = None
    experiment: str | None = None
    register_model: str | None = "spirolm-helm"


@dataclass(frozen=True)
class RunConfig:
    """The whole main job, one section per stage."""

    __pydantic_config__ = STRICT
    seed: int = 0  # every draw: splits aside (splits.seed), initialisation, shuffling, subsamples, bootstrap
    traits: tuple[str, ...] | None = None  # None: every trait of the cohort (cohort.json)
    cohort: CohortConfig = field(default_factory=CohortConfig)
    qc: QCConfig = field(default_factory=QCConfig)
    splits: SplitConfig = field(default_factory=SplitConfig)
    encoder: EncoderTrainConfig = field(default_factory=EncoderTrainConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    helm: HeLMStageConfig = field(default_factory=HeLMStageConfig)
    explanations: ExplanationsConfig = field(default_factory=ExplanationsConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (``config.yaml`` of a run, MLflow params, stage keys)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def section_hash(self, *sections: str) -> str:
        """Content hash of some config sections: the cache key of a pipeline stage."""
        d = self.to_dict()
        payload = json.dumps({s: d[s] for s in sections}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _profile_data(profile: str) -> dict[str, Any]:
    res = resources.files("experiments") / "configs" / f"run_{profile}.yaml"
    return _checked(parse_yaml_mapping(res.read_text(), f"profile {profile}"), f"profile {profile}")


def _checked(data: dict[str, Any], label: str) -> dict[str, Any]:
    for path, why in _ONE_HOME.items():
        reject_keys(data, [path], why, label)
    return data


def load_run_config(profile: str = BASE_PROFILE, config_file: str | Path | None = None,
                    overrides: tuple[str, ...] | list[str] = ()) -> RunConfig:
    """Defaults <- the default profile <- ``profile`` <- a user's file <- ``key.path=value`` overrides.

    Raises:
        SpirolmInputError: unknown profile, unreadable file, unknown key, wrong type or a key set in
            the wrong place, naming the file and the key path (e.g. ``cohort.n``).
    """
    if profile not in PROFILES:
        raise SpirolmInputError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}", field="profile")
    data = _profile_data(BASE_PROFILE)
    if profile != BASE_PROFILE:
        data = deep_merge(data, _profile_data(profile))
    label = f"profile {profile}"
    if config_file is not None:
        data = deep_merge(data, _checked(read_yaml_file(config_file), str(config_file)))
        label = str(config_file)
    if overrides:
        data = deep_merge(data, _checked(apply_overrides({}, overrides), "--set"))
        label = f"{label} with --set {' '.join(overrides)}"
    return validate(RunConfig, data, label)
