"""Every number of the synthetic cohort model, in one frozen config with a reason per value.

The equations that use these numbers are written out in ``docs/synthetic_cohort.md``. Defaults are
calibrated (``benchmarks/synth_calibration.py``) to the targets of the cohort issue: COPD prevalence
4-8 %, asthma 12-15 %; asthma barely predictable from tabular data (AUROC 0.55-0.65) but well from the
latents (oracle >= 0.80); COPD 0.70-0.80 tabular-only, oracle >= 0.90.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PopulationConfig:
    """Demographics and exposures (UK Biobank baseline, Sudlow 2015 / showcase summaries)."""

    p_female: float = 0.545  # UKB is 54.4 % female
    age_min: int = 40  # UKB recruited ages 40-69
    age_max: int = 69
    age_beta_a: float = 1.25  # Beta(1.25, 1) on [40, 70): mean ~56.7 y, SD ~8.2 y like UKB (56.5 / 8.1)
    height_mean_cm: tuple[float, float] = (162.7, 175.9)  # (female, male) UKB standing height means
    height_sd_cm: tuple[float, float] = (6.2, 6.8)  # (female, male) UKB SDs
    height_per_decade_cm: float = -0.8  # older birth cohorts are shorter (secular trend + shrinkage)
    bmi_median: tuple[float, float] = (26.2, 27.4)  # (female, male) UKB medians
    bmi_log_sd: float = 0.165  # lognormal spread gives SD ~4.5 and the UKB right tail
    p_smoking: tuple[float, float, float] = (0.548, 0.345, 0.107)  # never/previous/current, UKB baseline
    male_ever_smoker_logit: float = 0.35  # men were more often ever-smokers in UKB
    pack_years_log_mean: tuple[float, float] = (2.75, 3.05)  # (previous, current): medians ~16 and ~21 py
    pack_years_log_sd: float = 0.75  # wide lognormal: 5-80 py range of UKB smokers
    townsend_shift: float = -6.0  # Townsend = shift + Gamma(k, theta): UKB mean -1.3, SD ~3, right-skewed
    townsend_gamma: tuple[float, float] = (3.0, 1.6)
    pm25_mean: float = 10.0  # UKB 24006 (2010 land-use model) mean 9.99 ug/m3
    pm25_sd: float = 0.9  # UKB SD ~1.06, part of which comes from the Townsend link below
    pm25_per_townsend: float = 0.12  # deprived areas are more urban and more polluted
    # UKB 21000 codes and frequencies (approximate baseline shares).
    ethnicity_codes: tuple[int, ...] = (1001, 1002, 1003, 2001, 2003, 2004, 3001, 3002, 3004, 4001, 4002, 5, 6, -1, -3)
    ethnicity_p: tuple[float, ...] = (
        0.882, 0.026, 0.034, 0.0015, 0.0020, 0.0025, 0.011, 0.0035, 0.0045, 0.0080, 0.0070, 0.0030, 0.0087,
        0.0004, 0.0049,
    )
    p_parent_copd: tuple[float, float] = (0.085, 0.055)  # (father, mother) chronic bronchitis/emphysema
    parent_copd_per_smoker: float = 0.5  # log-odds: smoking runs in families, so parental COPD ~ own smoking


@dataclass(frozen=True)
class PhysiologyConfig:
    """Latent traits and how they shift lung function (all latents are on a z-like scale)."""

    # Atopy: drives hay fever/eczema (observed) and, partly, airway hyper-reactivity (hidden).
    hay_fever_intercept: float = -1.45  # ~23 % report hay fever/allergic rhinitis/eczema (6152 code 9)
    hay_fever_per_atopy: float = 1.4  # atopy is the main, but not the only, cause of hay fever
    # Hyper-reactivity h = weights . tabular + w_atopy*atopy + noise (SD 1 before scaling).
    hr_atopy: float = 0.45  # atopy links hay fever to asthma: the main tabular signal for asthma
    hr_female: float = 0.15  # adult-onset asthma is more common in women
    hr_per_decade: float = -0.10  # younger participants have more asthma (child-onset cohort effect)
    hr_per_bmi: float = 0.02  # obesity-associated asthma
    hr_current_smoker: float = 0.1  # smoking is a weak asthma trigger
    hr_noise_sd: float = 1.0  # the part no questionnaire sees: this keeps tabular AUROC low
    # Obstruction o (small airways, COPD) >= 0: softplus of a smoking/age/exposure score + noise.
    obs_intercept: float = -3.0  # most never-smokers have o ~ 0.05
    obs_per_log_pack_year: float = 0.45  # dose-response on log(1 + pack-years)
    obs_current_smoker: float = 0.45  # ongoing smoking adds inflammation on top of dose
    obs_per_decade: float = 0.45  # ageing lung
    obs_parental: float = 0.55  # familial susceptibility (and shared exposure)
    obs_per_pm25: float = 0.18  # per ug/m3 above 10: air pollution
    obs_per_townsend: float = 0.04  # deprivation: occupational exposures, biomass, poorer care
    obs_noise_sd: float = 1.5  # susceptibility not captured by exposure (genetics, childhood infections)
    # Emphysema e >= 0, mostly smoking-driven and partly shared with obstruction.
    emph_intercept: float = -4.5  # emphysema is rarer than obstruction
    emph_per_log_pack_year: float = 0.55  # dose-response, weaker than for obstruction
    emph_per_decade: float = 0.35
    emph_from_obstruction: float = 0.6  # the two share susceptibility
    emph_noise_sd: float = 1.2  # large non-exposure part keeps COPD tabular-only AUROC near 0.75
    # Restriction r: obesity and noise (not a label driver: a realistic distractor that lowers FVC).
    restr_per_bmi: float = 0.06  # per kg/m2 above 27
    restr_noise_sd: float = 0.5
    # How latents move GLI z-scores (healthy z ~ N(0,1) per GLI-2012 definition).
    ratio_z_per_obstruction: float = -2.2  # obstruction is seen first in FEV1/FVC
    ratio_z_per_emphysema: float = -1.2
    ratio_z_per_hr: float = -0.25  # asthma lowers the ratio only a little between attacks
    fvc_z_per_restriction: float = -0.8
    fvc_z_per_obstruction: float = -0.25  # air trapping reduces FVC in obstruction
    fvc_z_current_smoker: float = -0.15
    healthy_ratio_z_sd: float = 0.7  # healthy FEV1/FVC spread, below 1 so obstruction stays readable
    # PEF (no GLI equation): PEF = pef_per_fev1 * FEV1_pred * exp(N(0, sd)) * exp(-pef_per_obstruction*o)
    pef_per_fev1_pred: float = 2.55  # healthy PEF ~9.4 L/s for a 55 y 176 cm man, ~6.7 for a woman
    pef_log_sd: float = 0.10
    pef_per_obstruction: float = 0.3  # COPD PEF is often 50-70 % predicted
    pef_limits_l_s: tuple[float, float] = (3.0, 13.0)  # the physiological PEF range we allow


@dataclass(frozen=True)
class CurveConfig:
    """Parametric flow-volume model (docs/synthetic_cohort.md, 'Curves')."""

    rise_time_s: tuple[float, float] = (0.06, 0.13)  # uniform range of time to PEF: ATS good starts
    knee_scale: float = 0.06  # volume fraction over which the emphysema 'collapse' happens after PEF
    knee_max: float = 0.65  # deepest collapse (fraction of PEF lost right after the peak)
    knee_per_emphysema: float = 0.8  # d = knee_max * tanh(knee_per_emphysema * e / knee_max)
    late_start: float = 0.45  # the asthma late-limb concavity acts beyond 45 % of the post-PEF volume
    late_per_hr: float = 0.9  # c = late_per_hr * softplus(h): strength of the low-volume flow reduction
    k_bounds: tuple[float, float] = (0.25, 8.0)  # search range of the global limb exponent k
    grid_points: int = 384  # volume grid per blow for the time integral (non-uniform, dense near FVC)
    fet_mean_s: float = 8.5  # mean forced expiratory time (UKB demo 12.2 s; 6 s minimum protocol)
    fet_sd_s: float = 2.0
    fet_per_obstruction_s: float = 1.5  # COPD patients blow longer
    fet_limits_s: tuple[float, float] = (6.3, 15.0)  # protocol minimum 6 s, ATS 2019 maximum 15 s
    lead_in_samples: tuple[int, int] = (0, 4)  # zero samples before the blow starts (device trigger)
    blows_p3: float = 0.667  # 66.7 % of UKB participants have 3 blows (Spiro-CLF)
    # Within-person (blow-to-blow) variability: kept small on shape, as the MEFV limb is effort-independent.
    blow_fvc_log_sd: float = 0.018  # ~85 mL at 4.7 L: two good blows usually within 150 mL
    blow_pef_log_sd: float = 0.05  # PEF is effort-dependent
    blow_k_log_sd: float = 0.025
    blow_late_log_sd: float = 0.04
    blow_knee_sd: float = 0.01
    noise_ml: float = 1.5  # sensor noise SD before rounding to integer mL


@dataclass(frozen=True)
class FaultConfig:
    """Per-blow artefact rates and sizes (UKB: 24 % of efforts failed QC, 37.5 % submaximal)."""

    p_slow_start: float = 0.07  # hesitant start: rise over 0.35-0.8 s -> BEV above max(5 % FVC, 150 mL)
    slow_rise_s: tuple[float, float] = (0.35, 0.8)
    p_cough: float = 0.07  # cough in the first second: a flow reversal/dip
    cough_time_s: tuple[float, float] = (0.25, 0.9)
    cough_dip_ml: tuple[float, float] = (180.0, 400.0)
    cough_width_s: float = 0.035
    p_early_termination: float = 0.08  # stops blowing at 1-3.5 s: no plateau and FET < 6 s
    early_stop_s: tuple[float, float] = (1.0, 3.5)
    p_submaximal: float = 0.2  # acceptable-looking but weaker blow; QC's best-blow choice drops it
    submax_pef_factor: tuple[float, float] = (0.6, 0.85)
    submax_fvc_factor: tuple[float, float] = (0.9, 0.97)


@dataclass(frozen=True)
class LabelConfig:
    """Risk model: logit(P) = intercept + weights . latents + weights . record (docs, 'Labels')."""

    copd_intercept: float = -5.2  # sets COPD prevalence ~6 %
    copd_per_obstruction: float = 3.8  # steep: the oracle reaches AUROC >= 0.90
    copd_per_emphysema: float = 3.0
    copd_per_decade: float = 0.0  # age acts through the latents only (keeps tabular AUROC in band)
    copd_current_smoker: float = 0.0  # smoking acts through the latents only
    asthma_intercept: float = -3.26  # sets asthma prevalence ~13.5 %
    asthma_per_hr: float = 2.0  # hyper-reactivity carries most of the asthma signal
    asthma_hay_fever: float = 0.1  # allergic symptoms raise the chance of an asthma diagnosis
    # Record-only terms: they enter the label logit and nothing else (no latent, no curve), so the risk
    # they carry is invisible in the spirogram. 0 by default; the 'fusion' variant
    # (biobank/synth/variants.py) sets them so that the record adds to a perfect spirogram reader.
    asthma_female: float = 0.0  # women are diagnosed with adult asthma more often
    copd_per_log_pack_year: float = 0.0  # on log(1 + pack-years): dose beyond what the lungs show
    copd_parental: float = 0.0  # father or mother with chronic bronchitis/emphysema
    # How a case shows up in the export (each source drawn independently; at least one is forced).
    p_copd_icd10: float = 0.65
    p_copd_icd9: float = 0.06
    p_copd_selfreport_20002: float = 0.35
    p_copd_6152: float = 0.4
    p_asthma_icd10: float = 0.45
    p_asthma_icd9: float = 0.05
    p_asthma_selfreport_20002: float = 0.5
    p_asthma_6152: float = 0.7
    distractor_rate: float = 0.8  # mean number of unrelated codes per participant (hypertension, T2D, ...)


@dataclass(frozen=True)
class MissingConfig:
    """Realistic missingness; the physiology uses the true values, only the export loses them."""

    p_bmi: float = 0.006  # UKB 21001 missing ~0.6 %
    p_pack_years: float = 0.08  # among ever-smokers (UKB 20161 missing is larger; kept modest)
    p_townsend: float = 0.0013
    p_smoking_prefer_not: float = 0.004  # 20116 = -3
    p_pm25: float = 0.07  # UKB 24006 is missing outside the modelled area


@dataclass(frozen=True)
class SynthConfig:
    """The whole synthetic cohort model. ``SynthConfig()`` is the calibrated default."""

    population: PopulationConfig = field(default_factory=PopulationConfig)
    physiology: PhysiologyConfig = field(default_factory=PhysiologyConfig)
    curves: CurveConfig = field(default_factory=CurveConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    missing: MissingConfig = field(default_factory=MissingConfig)
    icd10_slots: int = 8  # 41270-0.0 .. 0.7
    icd9_slots: int = 4  # 41271-0.0 .. 0.3
    selfreport_slots: int = 6  # 20002-0.0 .. 0.5
    touchscreen_slots: int = 4  # 6152 and 20107/20110 arrays 0.0 .. 0.3
    blow_slots: int = 3  # 3066-0.0 .. 0.2
