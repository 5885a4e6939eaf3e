"""Tabular baselines: feature sets, the model registry (logistic regression, XGBoost), fitting, MLflow models."""
