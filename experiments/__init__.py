"""Runnable pipelines and the ``spirolm`` CLI: encoder training, tabular baselines, HeLM,
evaluation, batch scoring, MLflow tracking and SHAP explanations."""
