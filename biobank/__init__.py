"""Cohorts: UK Biobank field-ID export import, cohort schema and validation, phenotype rules, QC
orchestration, splits, and the embedded synthetic default cohort (``biobank.synth``)."""
