"""Explanations: SHAP of the baselines; modality ablation, record SHAP and curve attributions of HeLM."""
